//! The stock bootstrap is reproducible: two copies of this checkout at different paths,
//! each with its own target directory, build the same bytes with the flags `build.rs`
//! uses (both take them from `packer/build/stock_build.rs`), the same bytes that
//! `coldpack` carries; and no bootstrap names the paths it was built at or CARGO_HOME.

#[allow(dead_code)] // the tests use the build's half of it
#[path = "../packer/build/stock_build.rs"]
mod stock_build;
mod util;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use stock_build::{cargo_home, MACHINES};
use util::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Copies what a commit of this checkout's working tree would hold (tracked files,
/// and untracked ones git does not ignore) to `to`: a clone, uncommitted edits included.
fn copy_checkout(to: &Path) {
    let listed = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .expect("run git ls-files");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    for rel in listed.stdout.split(|&b| b == 0).filter(|p| !p.is_empty()) {
        let rel = Path::new(std::ffi::OsStr::from_bytes(rel));
        let (from, into) = (repo().join(rel), to.join(rel));
        let Ok(meta) = fs::symlink_metadata(&from) else {
            continue; // deleted in the working tree
        };
        fs::create_dir_all(into.parent().unwrap()).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &into).unwrap();
        } else {
            fs::copy(&from, &into).unwrap();
        }
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first of `paths` that `bootstrap` carries, with where.
fn named_path(bootstrap: &[u8], paths: &[&Path]) -> Option<(String, usize)> {
    paths.iter().find_map(|path| {
        find(bootstrap, path.as_os_str().as_bytes()).map(|at| (path.display().to_string(), at))
    })
}

#[test]
fn carried_bootstraps_name_no_build_path() {
    let home = cargo_home();
    for (arch, bootstrap) in [
        ("x86_64", coldpack::STOCK_BOOTSTRAP),
        ("arm64", coldpack::STOCK_BOOTSTRAP_ARM64),
    ] {
        let named = named_path(bootstrap, &[repo(), &home]);
        assert_eq!(named, None, "the {arch} stock bootstrap names a build path");
    }
}

#[test]
fn two_clones_build_the_same_stock_bootstrap() {
    let sandbox = Sandbox::new();
    let machine = &MACHINES[0];
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let toolchain = machine
        .toolchain(&host, Path::new("rustc"))
        .unwrap_or_else(|missing| panic!("{missing}"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let clones = [
        sandbox.path("one/coldpack"),
        sandbox.path("another/place/further/down/coldpack"),
    ];
    let mut built = Vec::new();
    for clone in &clones {
        copy_checkout(clone);
        let target_dir = clone.join("target");
        let output = machine
            .build_command(&cargo, clone, &target_dir, &toolchain)
            .output()
            .expect("run cargo");
        assert!(output.status.success(), "{}", text(&output.stderr));
        built.push(machine.built(&target_dir));
    }
    let bytes: Vec<Vec<u8>> = built.iter().map(|path| fs::read(path).unwrap()).collect();
    let home = cargo_home();
    for (clone, bootstrap) in clones.iter().zip(&bytes) {
        let named = named_path(bootstrap, &[&clones[0], &clones[1], &home]);
        assert_eq!(named, None, "the bootstrap built in {}", clone.display());
    }
    assert!(
        bytes[0] == bytes[1],
        "two clones built different bootstraps: {} and {} bytes, first difference at {:?}",
        bytes[0].len(),
        bytes[1].len(),
        bytes[0].iter().zip(&bytes[1]).position(|(a, b)| a != b)
    );
    assert!(
        bytes[0] == coldpack::STOCK_BOOTSTRAP,
        "coldpack carries another x86_64 bootstrap than a clone builds"
    );

    // The same tree packed with either is the same file.
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    let packed: Vec<Vec<u8>> = built
        .iter()
        .enumerate()
        .map(|(i, bootstrap)| {
            let out = sandbox.path(&format!("out-{i}"));
            let given = bootstrap.to_str().expect("a UTF-8 path");
            pack(&src, "bin/entry", &out, &["--bootstrap", given]);
            fs::read(out.join("bootstrap")).unwrap()
        })
        .collect();
    assert!(packed[0] == packed[1], "the same tree packed differently");
}
