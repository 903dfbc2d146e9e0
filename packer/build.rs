//! Builds the stock bootstraps that `coldpack` carries inside itself, so that a user
//! with only the `coldpack` binary can pack: one for each machine Lambda runs that this
//! machine can build for (its own always, the other when its cross toolchain is found;
//! how, in `build/stock_build.rs`).
//!
//! For each arch (`x86_64`, `arm64`) it leaves in OUT_DIR `bootstrap-ARCH` (empty when
//! not built) and `bootstrap-ARCH.missing` (why not, and what to install), and sets
//! `COLDPACK_STOCK_ARCHES` to the list of those built, for `coldpack --version`.

#[path = "build/stock_build.rs"]
mod stock_build;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use stock_build::{Machine, Toolchain, MACHINES};

fn main() {
    let var = |key: &str| env::var_os(key).unwrap_or_else(|| panic!("cargo sets {key}"));
    let out_dir = PathBuf::from(var("OUT_DIR"));
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("packer/ sits in the workspace");
    let host = var("HOST").into_string().expect("HOST is a target triple");
    let rustc = PathBuf::from(var("RUSTC"));
    println!("cargo:rerun-if-changed=../bootstrap");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    // The bootstrap profile and its per-package overrides.
    println!("cargo:rerun-if-changed=../Cargo.toml");

    let mut carried = Vec::new();
    for machine in &MACHINES {
        let (bootstrap, missing) = match machine.toolchain(&host, &rustc) {
            Ok(toolchain) => build(machine, &toolchain, workspace, &out_dir),
            Err(missing) => {
                watch_for_toolchain(&rustc);
                (Vec::new(), missing)
            }
        };
        if missing.is_empty() {
            carried.push(machine.arch);
        } else {
            println!(
                "cargo:warning=no {} stock bootstrap: {missing}",
                machine.arch
            );
        }
        let path = out_dir.join(format!("bootstrap-{}", machine.arch));
        fs::write(&path, bootstrap).expect("cannot write into OUT_DIR");
        fs::write(path.with_extension("missing"), missing).expect("cannot write into OUT_DIR");
    }
    println!(
        "cargo:rustc-env=COLDPACK_STOCK_ARCHES={}",
        if carried.is_empty() {
            "none".to_owned()
        } else {
            carried.join(", ")
        }
    );
}

/// The bootstrap for `machine`, or no bytes and why. A native build must succeed; a
/// cross build that fails leaves coldpack without that machine (and says why) rather
/// than unable to build at all.
fn build(
    machine: &Machine,
    toolchain: &Toolchain,
    workspace: &Path,
    out_dir: &Path,
) -> (Vec<u8>, String) {
    let target_dir = nested_target_dir(out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = machine
        .build_command(&cargo, workspace, &target_dir, toolchain)
        .output()
        .expect("cannot run cargo to build the bootstrap");
    let log = String::from_utf8_lossy(&output.stderr);
    match (output.status.success(), toolchain) {
        (true, _) => {
            let built = machine.built(&target_dir);
            let bytes =
                fs::read(&built).unwrap_or_else(|e| panic!("cannot read {}: {e}", built.display()));
            (bytes, String::new())
        }
        (false, Toolchain::Native) => {
            panic!(
                "building the static {} bootstrap failed:\n{log}",
                machine.arch
            )
        }
        (false, Toolchain::Cross { rustc, .. }) => {
            let last: Vec<&str> = log.lines().rev().take(5).collect();
            let reason = last.into_iter().rev().collect::<Vec<_>>().join(" | ");
            (
                Vec::new(),
                format!(
                    "coldpack was built without it: its cross build with {} failed ({reason}); \
                     fix the cross toolchain and rebuild coldpack, or give --bootstrap",
                    rustc.display()
                ),
            )
        }
    }
}

/// Where the nested builds go: beside the outer build's `build/` directory when OUT_DIR
/// has cargo's layout (`.../PROFILE/build/coldpack-HASH/out`), so that `cargo test` and
/// `cargo clippy`, whose runs of this script get different OUT_DIRs, share one nested
/// build instead of making two (the nested cargo locks it while it builds); inside
/// OUT_DIR otherwise.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    let build = out_dir.parent().and_then(Path::parent);
    match (build, out_dir.ancestors().nth(3)) {
        (Some(build), Some(profile)) if build.file_name() == Some("build".as_ref()) => {
            profile.join("coldpack-bootstrap")
        }
        _ => out_dir.join("bootstrap-build"),
    }
}

/// Installing the missing pieces (Debian packages into /usr/bin, `rustup target add`
/// into the sysroot) changes these directories: rebuild then.
fn watch_for_toolchain(rustc: &Path) {
    println!("cargo:rerun-if-changed=/usr/bin");
    let sysroot = std::process::Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(rustlib) = sysroot
        .map(|s| s.join("lib/rustlib"))
        .filter(|p| p.is_dir())
    {
        println!("cargo:rerun-if-changed={}", rustlib.display());
    }
}
