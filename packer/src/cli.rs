//! The command line, as types: clap reads the doc comments as the help text.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Pack a runtime directory for AWS Lambda, with modes, symlinks, hardlinks and mtimes
/// intact, into a `bootstrap` that extracts it into /tmp (or reuses an earlier copy)
/// and execs it.
#[derive(Debug, Parser)]
#[command(name = "coldpack", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack DIR into OUT-DIR/bootstrap, ready for /var/task or a layer's /opt.
    Pack(PackArgs),
    /// Print what a packed bootstrap holds: entrypoint, arguments, environment, hash,
    /// counts and sizes.
    Inspect(InspectArgs),
    /// Check every hash in a packed bootstrap; exits non-zero on any mismatch.
    Verify(InspectArgs),
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The runtime directory to pack. Symlinks inside it are kept as links, never followed.
    pub dir: PathBuf,

    /// The executable to start, as a path inside DIR (e.g. bin/python3). It may be a
    /// symlink to a file inside DIR.
    #[arg(long, value_name = "PATH-IN-DIR")]
    pub entrypoint: PathBuf,

    /// An argument for the entrypoint; repeat for several. May start with a dash
    /// (`--arg -m`). `{root}` is replaced by the extracted tree's path at start-up.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<OsString>,

    /// A variable added to the entrypoint's environment; repeatable. `{root}` in the
    /// value is replaced by the extracted tree's path (e.g. LD_LIBRARY_PATH={root}/lib).
    #[arg(long = "env", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    pub env: Vec<OsString>,

    /// Names the copy in the cache directory ([A-Za-z0-9_-], up to 64 bytes). Copies
    /// of older payloads with the same name are removed when a new one starts.
    /// Defaults to DIR's name.
    #[arg(long)]
    pub name: Option<String>,

    /// zstd level, 1 to 22. Higher packs smaller and slower; extraction speed barely
    /// changes.
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,

    /// Where to write `bootstrap`. Created if missing; nothing else in it is touched.
    #[arg(short = 'o', long = "out", value_name = "OUT-DIR")]
    pub out: PathBuf,

    /// Use this stock bootstrap instead of the one built into coldpack (e.g. one
    /// built for aarch64).
    #[arg(long, value_name = "PATH")]
    pub bootstrap: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A packed bootstrap, or the directory that holds one.
    #[arg(value_name = "OUT-DIR or BOOTSTRAP")]
    pub target: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
