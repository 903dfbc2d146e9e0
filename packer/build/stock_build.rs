//! How a stock bootstrap is built: which toolchain builds it for each machine Lambda
//! runs, and the nested `cargo build` with its flags. Shared by `packer/build.rs`, which
//! builds the bootstraps `coldpack` carries, and by `tests/build.rs`, which builds one
//! in each of two clones and compares the bytes, so that the flags the test checks are
//! the flags that ship.
//!
//! A stock bootstrap is a static executable (Lambda's images have glibc 2.26 and 2.34,
//! older than most build machines) and not position-independent (nothing to relocate
//! at start-up, and 55 KB smaller). The target is always given explicitly, which keeps
//! these flags away from build scripts and proc-macros, which cannot be static. Paths
//! of the build machine (the workspace, CARGO_HOME, the target directory) are remapped,
//! so that panic locations name none of them and two machines build the same bytes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A machine Lambda runs functions on.
pub struct Machine {
    /// Lambda's name for it, as `--arch` takes it.
    pub arch: &'static str,
    pub triple: &'static str,
    /// Debian's name for it, and the prefix of its cross C tools.
    pub debian: &'static str,
    pub gcc_prefix: &'static str,
}

pub const MACHINES: [Machine; 2] = [
    Machine {
        arch: "x86_64",
        triple: "x86_64-unknown-linux-gnu",
        debian: "amd64",
        gcc_prefix: "x86_64-linux-gnu",
    },
    Machine {
        arch: "arm64",
        triple: "aarch64-unknown-linux-gnu",
        debian: "arm64",
        gcc_prefix: "aarch64-linux-gnu",
    },
];

/// Where Debian's `rustc-web` (or `rustc`) puts its compiler; its standard libraries
/// for other machines come as `libstd-rust-web-dev:ARCH`.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// What builds a bootstrap for a machine on this one.
pub enum Toolchain {
    /// The machine cargo builds for anyway: cargo's own compilers.
    Native,
    /// Another machine: a rustc that has its standard library, and its C cross tools
    /// (zstd's decoder is C) for compiling and linking.
    Cross { rustc: PathBuf, gcc_prefix: String },
}

impl Machine {
    /// How to build for this machine on `host` (a target triple), trying `rustc`
    /// (cargo's own) then Debian's; or, when something is missing, a sentence naming
    /// what to install.
    pub fn toolchain(&self, host: &str, rustc: &Path) -> Result<Toolchain, String> {
        if self.triple == host {
            return Ok(Toolchain::Native);
        }
        let found_rustc = [rustc, Path::new(DEBIAN_RUSTC)]
            .into_iter()
            .find(|r| has_std(r, self.triple) && has_std(r, host));
        let gcc = format!("{}-gcc", self.gcc_prefix);
        // A cross gcc without the machine's C library cannot link a static program.
        let libc = Command::new(&gcc)
            .arg("-print-file-name=libc.a")
            .output()
            .ok()
            .map(|out| Path::new(String::from_utf8_lossy(&out.stdout).trim()).is_absolute());
        match (found_rustc, libc) {
            (Some(rustc), Some(true)) => Ok(Toolchain::Cross {
                rustc: rustc.to_owned(),
                gcc_prefix: self.gcc_prefix.to_owned(),
            }),
            (found_rustc, libc) => Err(self.missing(found_rustc.is_none(), libc, &gcc)),
        }
    }

    /// What to install, as Debian 12 names it, for what was not found.
    fn missing(&self, no_rustc: bool, libc: Option<bool>, gcc: &str) -> String {
        let mut lacking = Vec::new();
        let mut packages = Vec::new();
        if no_rustc {
            lacking.push(format!("a rustc with the {} standard library", self.triple));
            packages.extend([
                "rustc-web".to_owned(),
                "libstd-rust-web-dev".to_owned(),
                format!("libstd-rust-web-dev:{}", self.debian),
            ]);
        }
        if libc.is_none() {
            lacking.push(gcc.to_owned());
            packages.push(format!("gcc-{}", self.gcc_prefix.replace('_', "-")));
        }
        if libc != Some(true) {
            lacking.push(format!("the {} C library", self.debian));
            packages.push(format!("libc6-dev-{}-cross", self.debian));
        }
        let rustup = if no_rustc {
            format!(
                " (or `rustup target add {}` instead of the rustc packages)",
                self.triple
            )
        } else {
            String::new()
        };
        format!(
            "coldpack was built without the {} cross toolchain ({} missing): install it, \
             on Debian 12 `dpkg --add-architecture {} && apt-get update && apt-get install {}`{rustup}, \
             then rebuild coldpack; or give --bootstrap",
            self.arch,
            lacking.join(", "),
            self.debian,
            packages.join(" ")
        )
    }

    /// Where [`build_command`] leaves the bootstrap, under its target directory.
    pub fn built(&self, target_dir: &Path) -> PathBuf {
        target_dir
            .join(self.triple)
            .join("bootstrap")
            .join("bootstrap")
    }

    /// The nested `cargo build` of the bootstrap for this machine, from the workspace
    /// at `workspace` into `target_dir`.
    pub fn build_command(
        &self,
        cargo: &OsStr,
        workspace: &Path,
        target_dir: &Path,
        toolchain: &Toolchain,
    ) -> Command {
        let mut command = Command::new(cargo);
        command
            .current_dir(workspace)
            .args(["build", "--locked", "-p", "coldpack-bootstrap"])
            .args(["--bin", "bootstrap", "--profile", "bootstrap"])
            .args(["--target", self.triple])
            .arg("--target-dir")
            .arg(target_dir)
            // Nothing of the outer build's flags or wrappers (clippy's, a coverage
            // tool's) belongs in the shipped binary.
            .env_remove("RUSTFLAGS")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                rustflags(workspace, target_dir).join("\x1f"),
            );
        toolchain.apply(self, &mut command);
        command
    }
}

impl Toolchain {
    /// Points `cargo` (or a script that runs it) at this toolchain for `machine`.
    pub fn apply(&self, machine: &Machine, cargo: &mut Command) {
        if let Toolchain::Cross { rustc, gcc_prefix } = self {
            let upper = machine.triple.to_uppercase().replace('-', "_");
            let lower = machine.triple.replace('-', "_");
            cargo
                .env("RUSTC", rustc)
                .env(
                    format!("CARGO_TARGET_{upper}_LINKER"),
                    format!("{gcc_prefix}-gcc"),
                )
                .env(format!("CC_{lower}"), format!("{gcc_prefix}-gcc"))
                .env(format!("AR_{lower}"), format!("{gcc_prefix}-ar"));
        }
    }
}

/// The flags every stock bootstrap is built with. Of several matching remaps rustc
/// applies the last, so the target directory (often inside the workspace) comes last.
fn rustflags(workspace: &Path, target_dir: &Path) -> Vec<String> {
    let remap = |from: &Path, to: &str| format!("--remap-path-prefix={}={to}", from.display());
    vec![
        "-Ctarget-feature=+crt-static".to_owned(),
        "-Crelocation-model=static".to_owned(),
        remap(&cargo_home(), "/cargo"),
        remap(workspace, "/coldpack"),
        remap(target_dir, "/target"),
    ]
}

/// Where cargo keeps the registry's sources, whose paths rustc sees for dependencies.
pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

/// Whether `rustc` has the standard library for `triple`.
fn has_std(rustc: &Path, triple: &str) -> bool {
    let Ok(out) = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", triple])
        .output()
    else {
        return false;
    };
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success()
        && std::fs::read_dir(libdir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libstd-") && name.ends_with(".rlib")
            })
        })
}
