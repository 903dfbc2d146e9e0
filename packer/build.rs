//! Builds the stock bootstrap that `coldpack` carries inside itself, so that a user
//! with only the `coldpack` binary can pack: a static executable (Lambda's images have
//! glibc 2.26 and 2.34, older than most build machines), built by a nested cargo with
//! `+crt-static`. The target is given explicitly, which keeps that flag away from
//! build scripts and proc-macros, which cannot be static.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("packer/ sits in the workspace");
    let target = env::var("COLDPACK_BOOTSTRAP_TARGET")
        .unwrap_or_else(|_| env::var("TARGET").expect("cargo sets TARGET"));
    println!("cargo:rerun-if-changed=../bootstrap");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    println!("cargo:rerun-if-env-changed=COLDPACK_BOOTSTRAP_TARGET");

    let target_dir = out_dir.join("bootstrap-build");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--locked",
            "-p",
            "coldpack-bootstrap",
            "--bin",
            "bootstrap",
        ])
        .args(["--profile", "bootstrap", "--target", &target])
        .arg("--target-dir")
        .arg(&target_dir)
        // Nothing of the outer build's flags or wrappers (clippy's, a coverage tool's)
        // belongs in the shipped binary.
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .status()
        .expect("cannot run cargo to build the bootstrap");
    assert!(status.success(), "building the static bootstrap failed");

    let built = target_dir.join(&target).join("bootstrap").join("bootstrap");
    std::fs::copy(&built, out_dir.join("bootstrap")).expect("cannot copy the built bootstrap");
}
