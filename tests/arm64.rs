//! arm64 end to end on an x86_64 machine: trees of aarch64 programs packed with the
//! arm64 stock bootstrap that `coldpack` carries, and started under qemu's user-mode
//! emulation, as root and as nobody. The emulator is registered with binfmt_misc, as
//! it must be for the aarch64 bootstrap to `execve` an aarch64 entrypoint.
//!
//! Most of these need what scripts/test installs and registers as root: the aarch64
//! cross toolchain (for coldpack's build and for the fixtures' programs) and
//! qemu-aarch64 in binfmt_misc. In CI (`CI=true`) a missing piece fails them; elsewhere
//! they print why they skip.

#[allow(dead_code)] // the tests use the toolchain's half of it
#[path = "../packer/build/stock_build.rs"]
mod stock_build;
mod util;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use coldpack::cli::Arch;
use util::*;

/// The C cross compiler of the fixtures' programs, from gcc-aarch64-linux-gnu.
const CROSS_GCC: &str = "aarch64-linux-gnu-gcc";

/// The fixtures' entrypoint, a static aarch64 program: prints its arguments, its
/// working directory and the machine it believes it runs on.
const ENTRY_C: &str = r#"#include <stdio.h>
#include <sys/utsname.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char cwd[4096];
    struct utsname name;
    for (int i = 1; i < argc; i++) printf("arg=%s\n", argv[i]);
    printf("cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
    printf("machine=%s\n", uname(&name) == 0 ? name.machine : "?");
    return 0;
}
"#;

/// Whether arm64 payloads can run here; if not, fails the test in CI and says why
/// elsewhere.
fn arm64_here(test: &str) -> bool {
    static WHY_NOT: OnceLock<Option<String>> = OnceLock::new();
    let Some(why) = WHY_NOT.get_or_init(why_not) else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why} (CI runs the arm64 tests: scripts/test, run as root, provides this)"
    );
    // Straight to stderr, past the test harness's capture: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
    false
}

fn why_not() -> Option<String> {
    if let Err(missing) = coldpack::stock::bootstrap(Arch::Arm64) {
        return Some(missing.to_string());
    }
    if Command::new(CROSS_GCC).arg("--version").output().is_err() {
        return Some(format!(
            "no {CROSS_GCC} for the fixtures' programs (apt-get install gcc-aarch64-linux-gnu)"
        ));
    }
    // The stock bootstrap carries no payload: when it starts, it says so and exits.
    let probe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arm64-probe");
    write_program(&probe, coldpack::STOCK_BOOTSTRAP_ARM64);
    match Command::new(&probe).output() {
        Ok(output) if text(&output.stderr).contains("carries no coldpack payload") => None,
        Ok(output) => Some(format!(
            "the arm64 stock bootstrap did not start as expected: {}",
            text(&output.stderr)
        )),
        Err(e) => Some(format!(
            "aarch64 programs do not start here ({e}): install qemu-user-static and \
             binfmt-support and run `update-binfmts --enable qemu-aarch64` as root"
        )),
    }
}

/// The fixtures' entrypoint, compiled once per run.
fn entry_program() -> &'static [u8] {
    static PROGRAM: OnceLock<Vec<u8>> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arm64-entry");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("entry.c"), ENTRY_C).unwrap();
        run_ok(
            Command::new(CROSS_GCC)
                .args(["-static", "-O2", "-o", "entry", "entry.c"])
                .current_dir(&dir),
        );
        fs::read(dir.join("entry")).unwrap()
    })
}

/// The awkward fixture tree with the aarch64 program as its entrypoint.
fn arm64_tree(root: &Path) {
    awkward_tree(root);
    write(&root.join("libexec/entry-v1"), entry_program(), 0o755);
    set_mtimes(root);
}

/// Packs the arm64 fixture tree, `--arch` left to the tree, with nothing kept in the
/// deployment, so every entry goes through the aarch64 bootstrap's extraction;
/// returns (sandbox, source dir, bootstrap path, pack's stderr).
fn packed_arm64(extra: &[&str]) -> (Sandbox, PathBuf, PathBuf, String) {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    arm64_tree(&src);
    let out = sandbox.path("out");
    let packed = pack(
        &src,
        "bin/entry",
        &out,
        &[&["--task-budget", "0"], extra].concat(),
    );
    (sandbox, src, out.join("bootstrap"), text(&packed.stderr))
}

#[test]
fn version_lists_the_stock_bootstraps() {
    let output = run_ok(coldpack().arg("--version"));
    let version = text(&output.stdout);
    assert!(version.contains("stock bootstraps: x86_64"), "{version}");
    let arm64 = coldpack::stock::bootstrap(Arch::Arm64).is_ok();
    assert_eq!(version.contains("arm64"), arm64, "{version}");
}

#[test]
fn arch_arm64_uses_the_carried_bootstrap_or_names_what_to_install() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    fs::create_dir_all(src.join("bin")).unwrap();
    write(&src.join("bin/entry"), ENTRYPOINT_SCRIPT.as_bytes(), 0o755);
    let output = coldpack()
        .arg("pack")
        .arg(&src)
        .args(["--entrypoint", "bin/entry", "--arch", "arm64", "-o"])
        .arg(sandbox.path("out"))
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    if coldpack::stock::carried().contains(&Arch::Arm64) {
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("stock bootstrap for arm64"), "{stderr}");
    } else {
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("apt-get install") && stderr.contains("--bootstrap"),
            "{stderr}"
        );
    }
}

#[test]
fn a_tree_with_elf_files_of_both_machines_needs_arch() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    fs::create_dir_all(src.join("bin")).unwrap();
    write(&src.join("bin/entry"), ENTRYPOINT_SCRIPT.as_bytes(), 0o755);
    let x86_64 = &coldpack::STOCK_BOOTSTRAP[..64];
    let mut arm64 = x86_64.to_vec();
    arm64[18..20].copy_from_slice(&Arch::Arm64.elf_machine().to_le_bytes());
    fs::create_dir_all(src.join("lib/arm")).unwrap();
    write(&src.join("lib/libx86.so"), x86_64, 0o755);
    write(&src.join("lib/arm/libarm.so"), &arm64, 0o755);
    let pack_as = |extra: &[&str]| {
        coldpack()
            .arg("pack")
            .arg(&src)
            .args(["--entrypoint", "bin/entry", "-o"])
            .arg(sandbox.path("out"))
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = pack_as(&[]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("x86_64 (lib/libx86.so)")
            && stderr.contains("arm64 (lib/arm/libarm.so)")
            && stderr.contains("--arch"),
        "{stderr}"
    );
    assert!(!sandbox.path("out").exists(), "nothing is written");
    let chosen = pack_as(&["--arch", "x86_64"]);
    assert!(chosen.status.success(), "{}", text(&chosen.stderr));
}

#[test]
fn arm64_tree_packs_to_a_static_aarch64_bootstrap_and_zips() {
    if !arm64_here("arm64_tree_packs_to_a_static_aarch64_bootstrap_and_zips") {
        return;
    }
    let (sandbox, _src, bootstrap, stderr) = packed_arm64(&["--zip"]);
    assert!(stderr.contains("stock bootstrap for arm64"), "{stderr}");
    let described = text(&run_ok(Command::new("file").arg("-b").arg(&bootstrap)).stdout);
    assert!(
        described.contains("ARM aarch64") && described.contains("statically linked"),
        "{described}"
    );
    let bytes = fs::read(&bootstrap).unwrap();
    let zipped = run_ok(
        Command::new("unzip")
            .arg("-p")
            .arg(bootstrap.with_file_name("function.zip"))
            .arg("bootstrap"),
    );
    assert!(zipped.stdout == bytes, "function.zip carries the bootstrap");

    let out = sandbox.path("out-layer");
    pack(
        &sandbox.path("runtime"),
        "bin/entry",
        &out,
        &["--layer", "--task-budget", "0"],
    );
    let layered = run_ok(
        Command::new("unzip")
            .arg("-p")
            .arg(out.join("layer.zip"))
            .arg("bootstrap"),
    );
    assert!(
        layered.stdout == bytes,
        "layer.zip carries the same bootstrap"
    );
}

#[test]
fn arm64_cold_start_extracts_the_tree_exactly_under_emulation() {
    if !arm64_here("arm64_cold_start_extracts_the_tree_exactly_under_emulation") {
        return;
    }
    let (sandbox, src, bootstrap, _) = packed_arm64(&["--arg", "-m"]);
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        let output = start(&bootstrap, &cache, who, &[], &["given"]);
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        assert_eq!(decision(&output), "extract", "{who:?}");
        let differences = compare_trees(&src, &extracted_root(&cache));
        assert!(
            differences.is_empty(),
            "{who:?}: extracted tree differs:\n{}",
            differences.join("\n")
        );
        let expected = format!(
            "arg=-m\narg=given\ncwd={}\nmachine=aarch64\n",
            std::env::current_dir().unwrap().display()
        );
        assert_eq!(text(&output.stdout), expected, "{who:?}");
    }
}

#[test]
fn arm64_warm_start_reuses_intact_copy() {
    if !arm64_here("arm64_warm_start_reuses_intact_copy") {
        return;
    }
    let (sandbox, _src, bootstrap, _) = packed_arm64(&[]);
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        let cold = start(&bootstrap, &cache, who, &[], &[]);
        assert_eq!(decision(&cold), "extract", "{who:?}");
        let inode = fs::metadata(extracted_root(&cache)).unwrap().ino();
        let warm: Vec<(String, String)> = ["marker", "stat", "full"]
            .into_iter()
            .map(|level| {
                let output = start(&bootstrap, &cache, who, &[("COLDPACK_VERIFY", level)], &[]);
                let ran = text(&output.stdout).lines().last().map(str::to_owned);
                (decision(&output), ran.unwrap_or_default())
            })
            .collect();
        let reused = ("reuse".to_owned(), "machine=aarch64".to_owned());
        assert_eq!(warm, vec![reused; 3], "{who:?}: marker, stat, full");
        let root = extracted_root(&cache);
        assert_eq!(fs::metadata(root).unwrap().ino(), inode, "{who:?}");
    }
}

/// Where `bootstrap`'s payload starts, and where the file ends.
fn payload_span(bootstrap: &Path) -> (usize, usize) {
    let end = fs::metadata(bootstrap).unwrap().len() as usize;
    (coldpack::STOCK_BOOTSTRAP_ARM64.len(), end)
}

/// A copy of `bootstrap` with one bit flipped at `at`.
fn damaged_copy(bootstrap: &Path, at: usize, into: &Path) -> PathBuf {
    let mut bytes = fs::read(bootstrap).unwrap();
    bytes[at] ^= 0x10;
    write_program(into, &bytes);
    into.to_owned()
}

#[test]
fn arm64_tampered_payload_is_refused_and_nothing_runs() {
    if !arm64_here("arm64_tampered_payload_is_refused_and_nothing_runs") {
        return;
    }
    let (sandbox, _src, bootstrap, _) = packed_arm64(&[]);
    let (payload, end) = payload_span(&bootstrap);
    // The payload's start, its middle (chunk data), and near its end.
    for at in [payload + 20, (payload + end) / 2, end - 4096] {
        let damaged = damaged_copy(&bootstrap, at, &sandbox.path(&format!("damaged-{at}")));
        for who in users() {
            let cache = sandbox.cache_dir(&format!("cache-{at}-{who:?}"), who);
            let output = start(&damaged, &cache, who, &[], &[]);
            assert!(!output.status.success(), "{who:?} byte {at}: it started");
            assert!(
                output.stdout.is_empty(),
                "{who:?} byte {at}: the entrypoint ran"
            );
            assert_eq!(decision(&output), "error", "{who:?} byte {at}");
            assert_eq!(
                log_field(&output.stderr, "error_type").as_deref(),
                Some("Runtime.PayloadCorrupt"),
                "{who:?} byte {at}"
            );
            let left: Vec<String> = names_in(&cache)
                .into_iter()
                .filter(|n| !n.ends_with(".lock"))
                .collect();
            assert!(left.is_empty(), "{who:?} byte {at}: left {left:?}");
        }
    }
}

/// `coldpack run OUT --event EVENT` as `who`: a cold start and a re-init against the
/// Runtime API server of this repository (`tests/support/runtime_api.py`).
fn run_with_event(who: Who, target: &Path, event: &Path) -> Output {
    as_user(who, env!("CARGO_BIN_EXE_coldpack"))
        .arg("run")
        .arg(target)
        .arg("--event")
        .arg(event)
        .output()
        .expect("run coldpack run")
}

#[test]
fn arm64_corrupt_payload_is_reported_to_the_runtime_api() {
    if !arm64_here("arm64_corrupt_payload_is_reported_to_the_runtime_api") {
        return;
    }
    let (sandbox, _src, bootstrap, _) = packed_arm64(&[]);
    let (payload, end) = payload_span(&bootstrap);
    let task = sandbox.path("corrupt");
    fs::create_dir(&task).unwrap();
    damaged_copy(&bootstrap, (payload + end) / 2, &task.join("bootstrap"));
    let event = sandbox.path("event.json");
    fs::write(&event, br#"{"name":"Ada"}"#).unwrap();
    for who in users() {
        let output = run_with_event(who, &task, &event);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{who:?}: {stderr}");
        // Both starts fail the init, and the API hands each report to the invoke.
        assert!(
            stderr.contains("start 1 (cold start) decided error"),
            "{who:?}: {stderr}"
        );
        assert_eq!(
            stderr
                .matches(r#"event answered: "init_error" (Runtime.PayloadCorrupt)"#)
                .count(),
            2,
            "{who:?}: {stderr}"
        );
        // What the invoke got, as `coldpack run` prints it: the document the
        // bootstrap posted, each time.
        let stdout = text(&output.stdout);
        let documents: Vec<serde_json::Value> = stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON document"))
            .collect();
        assert_eq!(documents.len(), 2, "{who:?}: {stdout}");
        for document in documents {
            assert_eq!(
                document["errorType"], "Runtime.PayloadCorrupt",
                "{document}"
            );
            let message = document["errorMessage"].as_str().unwrap_or_default();
            assert!(message.contains("damaged"), "{document}");
        }
    }
}

/// examples/hello built for aarch64 (static, by the cross toolchain) and assembled by
/// its own build-tree.sh, once per run.
fn hello_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arm64-hello");
        let tree = work.join("tree");
        let arm64 = &stock_build::MACHINES[1];
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let toolchain = arm64
            .toolchain(&host, Path::new("rustc"))
            .unwrap_or_else(|missing| panic!("{missing}"));
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut command = Command::new("bash");
        command
            .arg(repo.join("examples/hello/build-tree.sh"))
            .arg(&tree)
            .env("CARGO_TARGET_DIR", work.join("target"))
            .env("CARGO_BUILD_TARGET", arm64.triple)
            .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
            .env_remove("RUSTFLAGS");
        toolchain.apply(arm64, &mut command);
        run_ok(&mut command);
        tree
    })
}

#[test]
fn arm64_example_function_serves_through_the_runtime_api() {
    if !arm64_here("arm64_example_function_serves_through_the_runtime_api") {
        return;
    }
    let sandbox = Sandbox::new();
    let out = sandbox.path("out");
    let packed = pack(hello_tree(), "bin/handler", &out, &["--name", "hello"]);
    assert!(
        text(&packed.stderr).contains("stock bootstrap for arm64"),
        "{}",
        text(&packed.stderr)
    );
    let event = sandbox.path("event.json");
    fs::write(&event, br#"{"name":"Ada"}"#).unwrap();
    for who in users() {
        let output = run_with_event(who, &out, &event);
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{who:?}: {stderr}");
        assert!(stderr.contains("start 1 (cold start): extract"), "{stderr}");
        assert!(stderr.contains("start 2 (re-init): reuse"), "{stderr}");
        let answers: Vec<serde_json::Value> = text(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("an answer per start"))
            .collect();
        assert_eq!(answers.len(), 2, "{who:?}: {}", text(&output.stdout));
        for answer in answers {
            assert_eq!(
                answer["message"], "Hello from a coldpacked runtime, Ada!",
                "{answer}"
            );
            let executable = answer["executable"].as_str().unwrap_or_default();
            assert!(executable.ends_with("/libexec/handler-v1"), "{answer}");
        }
    }
}
