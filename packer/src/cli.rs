//! The command line, as types: clap reads the doc comments as the help text.
//!
//! Every `pack` option is optional here because it may come from `coldpack.toml`
//! instead (see [`crate::config`]), which also holds the defaults.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Pack a runtime directory for AWS Lambda, with modes, symlinks, hardlinks and mtimes
/// intact, into a `bootstrap` that extracts it into /tmp (or reuses an earlier copy)
/// and execs it.
#[derive(Debug, Parser)]
#[command(name = "coldpack", version = crate::stock::VERSION, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack DIR into OUT-DIR/bootstrap (and, with --zip or --layer, a zip ready to
    /// upload), check it against Lambda's size limits and lint the tree.
    #[command(after_help = PACK_AFTER_HELP)]
    Pack(Box<PackArgs>),
    /// Start a packed bootstrap locally as Lambda would: a cold start into an empty
    /// cache directory, then a re-init that reuses the copy; prints what each start
    /// decided and how long it took.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Print what a packed bootstrap holds: entrypoint, arguments, environment, hash,
    /// counts and sizes.
    Inspect(InspectArgs),
    /// Check every hash in a packed bootstrap; exits non-zero on any mismatch.
    Verify(InspectArgs),
}

const PACK_AFTER_HELP: &str = "\
Every option can also be set in a coldpack.toml (see docs/configuration.md): the one
named by --config, else the one next to DIR (in DIR's parent directory), else
./coldpack.toml when DIR is not given. Options on the command line win.

Examples:
  coldpack pack runtime --entrypoint bin/python3 --arg -m --arg app -o out --zip
  coldpack pack runtime --entrypoint bin/node --arg app.js -o out --layer --arch arm64";

const RUN_AFTER_HELP: &str = "\
The task root and cache directory are temporary and removed afterwards unless --keep is
given. Without --event, the runtime gets no AWS_LAMBDA_RUNTIME_API and each start is
stopped after --timeout seconds; a Lambda runtime needs --event to do anything.

Examples:
  coldpack run out -- --verbose
  coldpack run out --event event.json --keep";

#[derive(Debug, Args, Default)]
pub struct PackArgs {
    /// The runtime directory to pack. Symlinks inside it are kept as links, never
    /// followed. May be given as `dir` in coldpack.toml instead.
    pub dir: Option<PathBuf>,

    /// The executable to start, as a path inside DIR (e.g. bin/python3). It may be a
    /// symlink to a file inside DIR.
    #[arg(long, value_name = "PATH-IN-DIR")]
    pub entrypoint: Option<PathBuf>,

    /// An argument for the entrypoint; repeat for several. May start with a dash
    /// (`--arg -m`). `{root}` is replaced by the extracted tree's path at start-up.
    /// Replaces the config file's `args`.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<OsString>,

    /// A variable added to the entrypoint's environment; repeatable. `{root}` in the
    /// value is replaced by the extracted tree's path (e.g. LD_LIBRARY_PATH={root}/lib).
    /// Overrides the config file's variable of the same name.
    #[arg(long = "env", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    pub env: Vec<OsString>,

    /// Names the copy in the cache directory ([A-Za-z0-9_-], up to 64 bytes). Copies
    /// of older payloads with the same name are removed when a new one starts.
    /// Defaults to DIR's name.
    #[arg(long)]
    pub name: Option<String>,

    /// zstd level, 1 to 22 [default: 19]. Higher packs smaller and slower; extraction
    /// speed barely changes.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: Option<i32>,

    /// Where to write `bootstrap` (and the zip). Created if missing; nothing else in it
    /// is touched.
    #[arg(short = 'o', long = "out", value_name = "OUT-DIR")]
    pub out: Option<PathBuf>,

    /// Use this stock bootstrap instead of the one built into coldpack (`coldpack
    /// --version` lists the machines it carries one for).
    #[arg(long, value_name = "PATH")]
    pub bootstrap: Option<PathBuf>,

    /// Also write OUT-DIR/function.zip for a function's code (/var/task): the
    /// bootstrap at the root with mode 0755, stored as is, byte-identical across runs.
    #[arg(long, conflicts_with = "layer")]
    pub zip: bool,

    /// Also write OUT-DIR/layer.zip for a layer: Lambda extracts it into /opt and runs
    /// /opt/bootstrap when the function's own code has no bootstrap.
    #[arg(long)]
    pub layer: bool,

    /// The function's architecture: ELF files of another machine are reported, and
    /// the bootstrap and entrypoint must match it [default: the machine the tree's ELF
    /// files are built for; x86_64 when it has none].
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,

    /// The function's ephemeral storage (/tmp) in MB, 512 to 10240, as configured on
    /// the function [default: 512]. The extracted tree must fit in it.
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(512..=10240))]
    pub ephemeral_storage: Option<u64>,

    /// Leave out entries matching GLOB; repeatable, added to the config file's. A
    /// GLOB without `/` matches a name at any depth (`__pycache__`, `*.pyc`); one
    /// with `/` matches the path from DIR (`lib/python3.*/test`, `**/tests`, `/include`
    /// for `include` at the top only). An excluded directory takes its contents with it.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// How much of Lambda's 250 MB of code storage coldpack may fill, counting all it
    /// puts there: the bootstrap with its payload, and the parts of the tree kept as
    /// plain files beside it (the task part), which a cold start then need not
    /// extract. Sizes like 200MB, 120MiB, 1GB (Lambda's MB are 2^20 bytes) or bytes;
    /// 0 keeps nothing in the deployment [default: 200MB].
    #[arg(long, value_name = "SIZE")]
    pub task_budget: Option<String>,

    /// Never keep entries matching GLOB in the deployment, always extract them into
    /// /tmp (what the runtime writes into, say); repeatable, added to the config
    /// file's. Globs as for --exclude.
    #[arg(long = "keep-in-tmp", value_name = "GLOB")]
    pub keep_in_tmp: Vec<String>,
    /// The Lambda runtime the function uses: the tree's ELF files are checked against
    /// that image's glibc, libstdc++ and libraries [default: provided.al2023].
    #[arg(long, value_enum)]
    pub runtime: Option<Runtime>,

    /// Pack even when the entrypoint or a library it loads at start cannot load on
    /// --runtime (a glibc too new, a library missing); the findings become warnings.
    #[arg(long)]
    pub allow_incompatible: bool,

    /// Write the output even when it exceeds a hard Lambda limit or its entrypoint is
    /// built for another architecture.
    #[arg(long)]
    pub force: bool,

    /// Read options from this file instead of looking for coldpack.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Ignore any coldpack.toml.
    #[arg(long, conflicts_with = "config")]
    pub no_config: bool,
}

/// The machine a function runs on, as Lambda names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    Arm64,
}

/// The OS-only Lambda runtime a function runs on, as Lambda names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
pub enum Runtime {
    #[value(name = "provided.al2023")]
    #[serde(rename = "provided.al2023")]
    ProvidedAl2023,
    #[value(name = "provided.al2")]
    #[serde(rename = "provided.al2")]
    ProvidedAl2,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::ProvidedAl2023 => "provided.al2023",
            Runtime::ProvidedAl2 => "provided.al2",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The directory that holds a packed `bootstrap` (pack's OUT-DIR), or the file.
    #[arg(value_name = "OUT-DIR")]
    pub target: PathBuf,

    /// Arguments given to the bootstrap, which passes them on to the entrypoint after
    /// the packed ones.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<OsString>,

    /// Send this event (a JSON file) to each start through a local Runtime API and
    /// print the answer. Needs python3.
    #[arg(long, value_name = "FILE")]
    pub event: Option<PathBuf>,

    /// Keep the task root and cache directory, and print where they are.
    #[arg(long)]
    pub keep: bool,

    /// Stop a start that has neither exited nor answered the event after this many
    /// seconds (Lambda's init limit is 10).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub timeout: u64,
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
