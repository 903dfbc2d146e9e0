//! The `coldpack` command as a user meets it: the zip Lambda is given (checked with
//! readers that are not ours: Python's zipfile and Info-ZIP's unzip), the size budgets,
//! the lints, `--exclude`, `coldpack.toml`, progress and summary, `coldpack run`, the
//! help text, and the commands in docs/.

mod util;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coldpack::budget::{self, Verdict, DIRECT_UPLOAD_LIMIT, MB, UNZIPPED_LIMIT};
use util::*;

/// A small runtime: `bin/entry` (the fixture script), some data, a link inside.
fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("lib")).unwrap();
    write_file(&root.join("bin/entry"), ENTRYPOINT_SCRIPT.as_bytes(), 0o755);
    write_file(
        &root.join("lib/data.txt"),
        &realistic_bytes(50_000, 1),
        0o644,
    );
    symlink("data.txt", root.join("lib/current")).unwrap();
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The first bytes of an ELF executable (`kind` 2) or shared object (3) for `machine`.
fn elf_header(kind: u16, machine: u16) -> Vec<u8> {
    let mut head = vec![0u8; 64];
    head[..4].copy_from_slice(b"\x7fELF");
    head[4] = 2; // 64-bit
    head[5] = 1; // little-endian
    head[6] = 1;
    head[16..18].copy_from_slice(&kind.to_le_bytes());
    head[18..20].copy_from_slice(&machine.to_le_bytes());
    head
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// `coldpack ARGS...`, whatever its outcome.
fn coldpack_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut command = coldpack();
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command.args(args).output().expect("run coldpack")
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// `coldpack pack SRC --entrypoint bin/entry -o OUT --level 3 EXTRA...`, whatever its outcome.
fn try_pack(src: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "pack",
        path_arg(src),
        "--entrypoint",
        "bin/entry",
        "--level",
        "3",
        "-o",
        path_arg(out),
    ];
    args.extend_from_slice(extra);
    coldpack_in(None, &args)
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "coldpack failed:\n{}",
        text(&output.stderr)
    );
    text(&output.stderr)
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "coldpack should have failed:\n{}",
        text(&output.stderr)
    );
    text(&output.stderr)
}

fn inspect_json(out: &Path) -> serde_json::Value {
    let output = coldpack_in(None, &["inspect", "--json", path_arg(out)]);
    succeeded(&output);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Python's zipfile on the zip: (name, unix mode, compress_type, create_system) of each member.
fn python_zip_members(zip: &Path) -> Vec<(String, u32, u32, u32)> {
    let script = "import sys, zipfile\n\
                  for i in zipfile.ZipFile(sys.argv[1]).infolist():\n\
                  \x20   print(i.filename, i.external_attr >> 16, i.compress_type, i.create_system)\n";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(zip)
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (
                fields[0].to_string(),
                fields[1].parse().unwrap(),
                fields[2].parse().unwrap(),
                fields[3].parse().unwrap(),
            )
        })
        .collect()
}

fn unzip_z(zip: &Path) -> String {
    let output = Command::new("unzip")
        .arg("-Z")
        .arg(zip)
        .output()
        .expect("unzip runs (Debian package `unzip`)");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn zip_records_bootstrap_mode_0755_stored_as_python_zipfile_reads_it() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    let out = sandbox.path("out");
    succeeded(&try_pack(&src, &out, &["--zip"]));
    let members = python_zip_members(&out.join("function.zip"));
    // Mode 0o100755 (regular file, rwxr-xr-x), ZIP_STORED (0), made on Unix (3).
    assert_eq!(members, vec![("bootstrap".to_string(), 0o100755, 0, 3)]);
}

#[test]
fn zip_records_bootstrap_mode_0755_stored_as_info_zip_reads_it() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    let out = sandbox.path("out");
    succeeded(&try_pack(&src, &out, &["--zip"]));
    let listing = unzip_z(&out.join("function.zip"));
    let line = listing
        .lines()
        .find(|l| l.ends_with(" bootstrap"))
        .unwrap_or_else(|| panic!("no bootstrap in:\n{listing}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "-rwxr-xr-x", "{line}");
    assert_eq!(fields[2], "unx", "{line}");
    assert_eq!(fields[5], "stor", "{line}");
    let size = fs::metadata(out.join("bootstrap")).unwrap().len();
    assert_eq!(fields[3], size.to_string(), "{line}");
    assert!(listing.contains("number of entries: 1"), "{listing}");
}

#[test]
fn zip_is_byte_identical_across_packs() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    succeeded(&try_pack(&src, &sandbox.path("one"), &["--zip"]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    succeeded(&try_pack(&src, &sandbox.path("two"), &["--zip"]));
    let one = fs::read(sandbox.path("one/function.zip")).unwrap();
    let two = fs::read(sandbox.path("two/function.zip")).unwrap();
    assert!(one == two, "two packs of one tree gave different zips");
}

#[test]
fn unzipped_bootstrap_starts_the_runtime() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    let out = sandbox.path("out");
    succeeded(&try_pack(&src, &out, &["--zip", "--arg", "zipped"]));
    let task = sandbox.path("task");
    let unzipped = Command::new("unzip")
        .arg("-q")
        .arg(out.join("function.zip"))
        .arg("-d")
        .arg(&task)
        .status()
        .expect("unzip runs");
    assert!(unzipped.success());
    let cache = sandbox.cache_dir("cache", Who::Me);
    let output = start(&task.join("bootstrap"), &cache, Who::Me, &[], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(decision(&output), "extract");
    assert!(text(&output.stdout).contains("arg=zipped"));
}

#[test]
fn layer_zip_holds_the_bootstrap_at_its_root_for_opt() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    let out = sandbox.path("out");
    let stderr = succeeded(&try_pack(&src, &out, &["--layer"]));
    assert!(!out.join("function.zip").exists());
    let members = python_zip_members(&out.join("layer.zip"));
    assert_eq!(members[0], ("bootstrap".to_string(), 0o100755, 0, 3));
    // Whatever else it holds is the task part, beside the bootstrap.
    assert!(
        members[1..]
            .iter()
            .all(|(name, ..)| name.starts_with("coldpack-runtime.")),
        "{members:?}"
    );
    assert!(stderr.contains("for /opt"), "{stderr}");
    failed(&try_pack(&src, &out, &["--layer", "--zip"]));
}

/// A file of `len` zeros that takes no disk space.
fn sparse_file(path: &Path, len: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

#[test]
fn tree_larger_than_tmp_is_refused_until_storage_is_raised_or_forced() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    sparse_file(&src.join("data/huge.bin"), 600 * MB);
    let out = sandbox.path("out");
    let stderr = failed(&try_pack(&src, &out, &[]));
    assert!(stderr.contains("/tmp"), "{stderr}");
    assert!(stderr.contains("ephemeral storage to 1024 MB"), "{stderr}");
    assert!(!out.join("bootstrap").exists(), "nothing is written");

    let stderr = succeeded(&try_pack(&src, &out, &["--ephemeral-storage", "1024"]));
    assert!(warnings(&stderr).is_empty(), "{stderr}");
    assert!(stderr.contains("of 1024 MiB"), "{stderr}");

    let stderr = succeeded(&try_pack(&src, &sandbox.path("forced"), &["--force"]));
    assert!(
        warnings(&stderr).iter().any(|w| w.contains("/tmp")),
        "{stderr}"
    );
}

#[test]
fn bootstrap_over_250_mb_unzipped_is_refused_unless_forced() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    // A stock bootstrap padded past the limit: the budget counts the whole file.
    let stock = sandbox.path("big-stock-bootstrap");
    fs::write(&stock, coldpack::STOCK_BOOTSTRAP).unwrap();
    fs::File::options()
        .write(true)
        .open(&stock)
        .unwrap()
        .set_len(UNZIPPED_LIMIT + 1)
        .unwrap();
    let out = sandbox.path("out");
    let stderr = failed(&try_pack(&src, &out, &["--bootstrap", path_arg(&stock)]));
    assert!(stderr.contains("250 MB"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(!out.join("bootstrap").exists(), "nothing is written");

    let stderr = succeeded(&try_pack(
        &src,
        &out,
        &["--bootstrap", path_arg(&stock), "--zip", "--force"],
    ));
    let warned = warnings(&stderr);
    assert!(warned.iter().any(|w| w.contains("unzipped")), "{stderr}");
    // Past 50 MB the zip must go through S3; that is advice, not a refusal.
    assert!(warned.iter().any(|w| w.contains("S3")), "{stderr}");
}

#[test]
fn budgets_turn_at_lambdas_limits() {
    let sizes = |unzipped, zip, extracted, storage, task| budget::Sizes {
        unzipped,
        zip,
        extracted,
        ephemeral_storage_mb: storage,
        task_budget: task,
    };
    let verdicts = |sizes: budget::Sizes| -> Vec<Verdict> {
        budget::budgets(&sizes).iter().map(|b| b.verdict).collect()
    };
    assert_eq!(
        verdicts(sizes(
            UNZIPPED_LIMIT,
            DIRECT_UPLOAD_LIMIT,
            512 * MB * 8 / 10,
            512,
            0
        )),
        vec![Verdict::Fits, Verdict::Fits, Verdict::Fits]
    );
    assert_eq!(
        verdicts(sizes(
            UNZIPPED_LIMIT + 1,
            DIRECT_UPLOAD_LIMIT + 1,
            512 * MB + 1,
            512,
            0
        )),
        vec![Verdict::OverHard, Verdict::Over, Verdict::OverHard]
    );
    assert_eq!(verdicts(sizes(1, 1, 450 * MB, 512, 0))[2], Verdict::Tight);
    assert_eq!(verdicts(sizes(1, 1, 600 * MB, 1024, 0))[2], Verdict::Fits);
    // A task budget adds its own line, after the unzipped one.
    assert_eq!(
        verdicts(sizes(200 * MB + 1, 1, 1, 512, 200 * MB)),
        vec![Verdict::Fits, Verdict::Over, Verdict::Fits, Verdict::Fits]
    );
    let too_big = budget::budgets(&sizes(1, 1, 20_000 * MB, 10240, 0));
    assert!(too_big[2].advice.as_ref().unwrap().contains("10240 MB"));
}

#[test]
fn elf_files_of_another_machine_are_reported() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    write_file(
        &src.join("lib/libarm.so"),
        &elf_header(3, EM_AARCH64),
        0o755,
    );
    write_file(&src.join("lib/libx86.so"), &elf_header(3, EM_X86_64), 0o755);
    // A tree of both machines says which it is with --arch (tests/arm64.rs).
    let stderr = succeeded(&try_pack(&src, &sandbox.path("out"), &["--arch", "x86_64"]));
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(warned[0].contains("arm64 (aarch64)"), "{stderr}");
    assert!(warned[0].contains("lib/libarm.so"), "{stderr}");

    // The same tree for arm64, with a bootstrap that says it is one.
    let mut arm_stock = coldpack::STOCK_BOOTSTRAP.to_vec();
    arm_stock[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
    let stock = sandbox.path("bootstrap-aarch64");
    fs::write(&stock, arm_stock).unwrap();
    let stderr = succeeded(&try_pack(
        &src,
        &sandbox.path("out-arm"),
        &["--arch", "arm64", "--bootstrap", path_arg(&stock)],
    ));
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(
        warned[0].contains("x86_64") && warned[0].contains("lib/libx86.so"),
        "{stderr}"
    );
}

#[test]
fn entrypoint_built_for_another_machine_is_refused_unless_forced() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    write_file(&src.join("bin/entry"), &elf_header(2, EM_AARCH64), 0o755);
    let out = sandbox.path("out");
    let stderr = failed(&try_pack(&src, &out, &["--arch", "x86_64"]));
    assert!(
        stderr.contains("entrypoint") && stderr.contains("cannot start"),
        "{stderr}"
    );
    assert!(!out.join("bootstrap").exists());
    succeeded(&try_pack(&src, &out, &["--arch", "x86_64", "--force"]));
}

#[test]
fn absolute_and_escaping_symlinks_are_reported_inner_ones_are_not() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    symlink("/usr/lib/libssl.so.3", src.join("lib/libssl.so")).unwrap();
    symlink("../../outside", src.join("lib/escape")).unwrap();
    symlink("../lib/./data.txt", src.join("bin/inner")).unwrap();
    let stderr = succeeded(&try_pack(&src, &sandbox.path("out"), &[]));
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 2, "{stderr}");
    assert!(
        warned[0].contains("absolute")
            && warned[0].contains("lib/libssl.so -> /usr/lib/libssl.so.3")
    );
    assert!(
        warned[1].contains("outside the tree") && warned[1].contains("lib/escape -> ../../outside")
    );
    assert!(!stderr.contains("bin/inner"), "{stderr}");
}

#[test]
fn setuid_bits_are_dropped_with_a_warning() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    write_file(&src.join("bin/helper"), b"#!/bin/sh\n", 0o4755);
    let out = sandbox.path("out");
    let stderr = succeeded(&try_pack(&src, &out, &[]));
    assert!(
        warnings(&stderr)
            .iter()
            .any(|w| w.contains("bin/helper") && w.contains("setuid")),
        "{stderr}"
    );
    let cache = sandbox.cache_dir("cache", Who::Me);
    let output = start(&out.join("bootstrap"), &cache, Who::Me, &[], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let tree = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let mode = fs::metadata(tree.join("bin/helper"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

/// The bootstrap checks and removes what it extracts, and could do neither in a tree
/// its owner cannot read or search: such a tree is refused, with what to change.
#[test]
fn entries_their_owner_cannot_read_or_search_are_refused() {
    if !is_root() {
        return; // the packer itself could not read them: see the next test
    }
    let sandbox = Sandbox::new();
    for (path, mode) in [("lib/write-only", 0o200), ("lib/closed", 0o311)] {
        let src = sandbox.path(&format!("runtime-{mode:o}"));
        small_tree(&src);
        if path.ends_with("closed") {
            fs::create_dir_all(src.join(path)).unwrap();
            fs::set_permissions(src.join(path), fs::Permissions::from_mode(mode)).unwrap();
        } else {
            write_file(&src.join(path), b"secret\n", mode);
        }
        let out = sandbox.path(&format!("out-{mode:o}"));
        let stderr = failed(&try_pack(&src, &out, &["--force"]));
        assert!(
            stderr.contains(&format!("{path} (mode {mode:o})")) && stderr.contains("chmod u+r"),
            "{stderr}"
        );
        assert!(!out.join("bootstrap").exists());
    }
}

#[test]
fn unreadable_files_are_refused_all_named_at_once() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    write_file(&src.join("lib/locked-a"), b"a\n", 0o600);
    write_file(&src.join("lib/locked-b"), b"b\n", 0o600);
    let out = sandbox.path("out");
    let mut command = if is_root() {
        // Root reads everything: pack as `nobody`, who cannot read these two.
        fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).unwrap();
        as_user(Who::Nobody, env!("CARGO_BIN_EXE_coldpack"))
    } else {
        for name in ["lib/locked-a", "lib/locked-b"] {
            fs::set_permissions(src.join(name), fs::Permissions::from_mode(0o000)).unwrap();
        }
        coldpack()
    };
    let output = command
        .args([
            "pack",
            path_arg(&src),
            "--entrypoint",
            "bin/entry",
            "-o",
            path_arg(&out),
        ])
        .output()
        .unwrap();
    let stderr = failed(&output);
    assert!(stderr.contains("cannot read 2 files"), "{stderr}");
    assert!(
        stderr.contains("lib/locked-a") && stderr.contains("lib/locked-b"),
        "{stderr}"
    );
    assert!(stderr.contains("--exclude"), "{stderr}");
}

#[test]
fn junk_is_reported_with_what_it_costs() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    write_file(&src.join("lib/mod.py"), b"x = 1\n", 0o644);
    write_file(
        &src.join("lib/__pycache__/mod.cpython-311.pyc"),
        &realistic_bytes(2 * MB as usize, 2),
        0o644,
    );
    write_file(
        &src.join("lib/__pycache__/gone.cpython-311.pyc"),
        &realistic_bytes(MB as usize, 3),
        0o644,
    );
    write_file(
        &src.join("lib/pkg/tests/test_x.py"),
        &realistic_bytes(MB as usize, 4),
        0o644,
    );
    write_file(
        &src.join("lib/pkg/tests/data/d.bin"),
        &realistic_bytes(MB as usize, 5),
        0o644,
    );
    let stderr = succeeded(&try_pack(&src, &sandbox.path("out"), &[]));
    let warned = warnings(&stderr);
    assert!(
        warned
            .iter()
            .any(|w| w.contains("1 __pycache__ directory costs 3.0 MiB")),
        "{stderr}"
    );
    assert!(
        warned.iter().any(|w| w.contains("1 .pyc file (1.0 MiB)")
            && w.contains("lib/__pycache__/gone.cpython-311.pyc")
            && !w.contains("mod.cpython")),
        "{stderr}"
    );
    assert!(
        warned
            .iter()
            .any(|w| w.contains("1 test directory costs 2.0 MiB") && w.contains("lib/pkg/tests")),
        "{stderr}"
    );
}

/// The extracted tree of a packed OUT-DIR, started once into a fresh cache.
fn extracted(sandbox: &Sandbox, out: &Path, label: &str) -> PathBuf {
    let cache = sandbox.cache_dir(label, Who::Me);
    let output = start(&out.join("bootstrap"), &cache, Who::Me, &[], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap()
}

#[test]
fn exclude_leaves_out_names_at_any_depth_and_paths_from_the_root() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    write_file(&src.join("lib/__pycache__/a.pyc"), b"pyc", 0o644);
    write_file(&src.join("lib/deep/__pycache__/b.pyc"), b"pyc", 0o644);
    write_file(&src.join("lib/deep/keep.py"), b"keep", 0o644);
    write_file(&src.join("logs/today.log"), b"log", 0o644);
    write_file(
        &src.join("lib/deep/nested.log"),
        b"kept: the glob has a /",
        0o644,
    );
    let out = sandbox.path("out");
    let stderr = succeeded(&try_pack(
        &src,
        &out,
        &["--exclude", "__pycache__", "--exclude", "logs/*.log"],
    ));
    assert!(!stderr.contains("__pycache__"), "{stderr}");
    let tree = extracted(&sandbox, &out, "cache");
    for gone in ["lib/__pycache__", "lib/deep/__pycache__", "logs/today.log"] {
        assert!(!tree.join(gone).exists(), "{gone} should be left out");
    }
    for kept in [
        "lib/deep/keep.py",
        "lib/deep/nested.log",
        "logs",
        "bin/entry",
        "lib/current",
    ] {
        assert!(
            fs::symlink_metadata(tree.join(kept)).is_ok(),
            "{kept} should be kept"
        );
    }
}

#[test]
fn excluding_the_entrypoint_is_refused() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    let stderr = failed(&try_pack(&src, &sandbox.path("out"), &["--exclude", "bin"]));
    assert!(stderr.contains("--exclude"), "{stderr}");
    symlink("entry", src.join("bin/start")).unwrap();
    let output = coldpack_in(
        None,
        &[
            "pack",
            path_arg(&src),
            "--entrypoint",
            "bin/start",
            "--exclude",
            "entry",
            "-o",
            path_arg(&sandbox.path("out")),
        ],
    );
    assert!(failed(&output).contains("--exclude leaves out"));
}

/// A project directory: `runtime/` and a `coldpack.toml` next to it.
fn project(sandbox: &Sandbox, config: &str) -> PathBuf {
    let project = sandbox.path("project");
    small_tree(&project.join("runtime"));
    write_file(
        &project.join("runtime/lib/__pycache__/x.pyc"),
        b"pyc",
        0o644,
    );
    fs::write(project.join("coldpack.toml"), config).unwrap();
    project
}

const CONFIG: &str = r#"
dir = "runtime"
entrypoint = "bin/entry"
args = ["--from-config", "{root}/lib"]
name = "configured"
level = 5
out = "build"
exclude = ["__pycache__"]

[env]
A = "from-config"
B = "from-config"
"#;

#[test]
fn config_next_to_the_runtime_gives_every_option() {
    let sandbox = Sandbox::new();
    let project = project(&sandbox, CONFIG);
    let stderr = succeeded(&coldpack_in(
        None,
        &["pack", path_arg(&project.join("runtime"))],
    ));
    assert!(stderr.contains("options from"), "{stderr}");
    assert!(stderr.contains("zstd level 5"), "{stderr}");
    let out = project.join("build");
    let summary = inspect_json(&out);
    assert_eq!(summary["name"], "configured");
    assert_eq!(
        summary["args"],
        serde_json::json!(["--from-config", "{root}/lib"])
    );
    assert_eq!(
        summary["env"],
        serde_json::json!(["A=from-config", "B=from-config"])
    );
    let tree = extracted(&sandbox, &out, "cache");
    assert!(!tree.join("lib/__pycache__").exists());

    // With no DIR, ./coldpack.toml is read.
    fs::remove_dir_all(&out).unwrap();
    succeeded(&coldpack_in(Some(&project), &["pack"]));
    assert!(out.join("bootstrap").exists());
}

#[test]
fn command_line_flags_win_over_the_config_file() {
    let sandbox = Sandbox::new();
    let project = project(&sandbox, CONFIG);
    let out = sandbox.path("elsewhere");
    let stderr = succeeded(&coldpack_in(
        Some(&project),
        &[
            "pack",
            "--name",
            "flagged",
            "--arg",
            "--from-flag",
            "--env",
            "B=from-flag",
            "--env",
            "C=from-flag",
            "--level",
            "2",
            "-o",
            path_arg(&out),
        ],
    ));
    assert!(stderr.contains("zstd level 2"), "{stderr}");
    let summary = inspect_json(&out);
    assert_eq!(summary["name"], "flagged");
    assert_eq!(summary["args"], serde_json::json!(["--from-flag"]));
    assert_eq!(
        summary["env"],
        serde_json::json!(["A=from-config", "B=from-flag", "C=from-flag"])
    );
    assert!(!project.join("build").exists());
}

#[test]
fn config_for_a_sibling_runtime_is_not_applied() {
    let sandbox = Sandbox::new();
    let project = project(&sandbox, CONFIG);
    small_tree(&project.join("other"));
    let stderr = failed(&coldpack_in(
        None,
        &["pack", path_arg(&project.join("other"))],
    ));
    assert!(stderr.contains("no entrypoint"), "{stderr}");
}

#[test]
fn unknown_config_keys_are_refused() {
    let sandbox = Sandbox::new();
    let project = project(&sandbox, "entrypiont = \"bin/entry\"\n");
    let stderr = failed(&coldpack_in(
        Some(&project),
        &["pack", "runtime", "-o", "out"],
    ));
    assert!(stderr.contains("entrypiont"), "{stderr}");
}

#[test]
fn progress_is_plain_lines_when_stderr_is_not_a_terminal() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    let stderr = succeeded(&try_pack(&src, &sandbox.path("out"), &[]));
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
    for stage in ["coldpack: walked ", "coldpack: compressed "] {
        assert!(stderr.contains(stage), "{stage} missing from {stderr}");
    }
}

#[test]
fn summary_gives_entries_by_kind_the_split_bytes_budgets_and_hash() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    let out = sandbox.path("out");
    let stderr = text(&pack(&src, "bin/entry", &out, &["--zip"]).stderr);
    let summary = inspect_json(&out);
    let (task, extract) = (&summary["task_part"], &summary["extract"]);
    for line in [
        "entries   ".to_string(),
        format!("kept      {} entries (", task["entries"]),
        format!("extracted {} entries (", extract["entries"]),
        format!(
            "{} chunk{} at zstd level 3",
            summary["chunks"],
            if summary["chunks"] == 1 { "" } else { "s" }
        ),
        format!(
            "payload   sha256 {}",
            summary["payload_sha256"].as_str().unwrap()
        ),
    ] {
        assert!(stderr.contains(&line), "{line:?} missing from {stderr}");
    }
    for budget in ["unzipped ", "task ", "zip ", "/tmp "] {
        assert!(stderr.contains(budget), "{budget} missing from {stderr}");
    }
}

/// The task root `coldpack run` announced on stderr.
fn announced_scratch(stderr: &str) -> PathBuf {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("coldpack run: task root "))
        .unwrap_or_else(|| panic!("no task root in {stderr}"));
    let task = line["coldpack run: task root ".len()..]
        .split(" (as /var/task)")
        .next()
        .unwrap();
    Path::new(task).parent().unwrap().to_owned()
}

#[test]
fn run_starts_cold_then_reuses_the_copy_on_reinit() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    let out = sandbox.path("out");
    succeeded(&try_pack(&src, &out, &["--arg", "packed"]));
    let output = coldpack_in(None, &["run", path_arg(&out), "--", "given"]);
    let stderr = succeeded(&output);
    assert!(
        stderr.contains("start 1 (cold start): extract in "),
        "{stderr}"
    );
    assert!(stderr.contains("start 2 (re-init): reuse in "), "{stderr}");
    let stdout = text(&output.stdout);
    assert_eq!(
        stdout.matches("arg=packed\narg=given\n").count(),
        2,
        "{stdout}"
    );
    assert!(
        !announced_scratch(&stderr).exists(),
        "removed without --keep"
    );
}

#[test]
fn run_keep_leaves_the_extracted_tree_to_look_at() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    let out = sandbox.path("out");
    pack(&src, "bin/entry", &out, &["--task-budget", "0"]);
    let stderr = succeeded(&coldpack_in(None, &["run", "--keep", path_arg(&out)]));
    let scratch = announced_scratch(&stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("coldpack run: kept "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let tree = PathBuf::from(
        line.split("(extracted tree: ")
            .nth(1)
            .unwrap()
            .trim_end_matches(')'),
    );
    let differences = compare_trees(&src, &tree);
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+rwX")
        .arg(&scratch)
        .status();
    let _ = fs::remove_dir_all(&scratch);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// A Lambda runtime in Python, stdlib only: answers each event with the event and the
/// tree it runs from.
const PYTHON_RUNTIME: &str = r#"#!/usr/bin/env python3
import json, os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
while True:
    with urllib.request.urlopen(api + "/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    answer = json.dumps({"echo": event, "root": root}).encode()
    urllib.request.urlopen(urllib.request.Request(
        api + "/invocation/" + request_id + "/response", data=answer, method="POST")).read()
"#;

#[test]
fn run_event_is_answered_through_the_runtime_api_on_each_start() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    write_file(&src.join("bin/entry"), PYTHON_RUNTIME.as_bytes(), 0o755);
    let out = sandbox.path("out");
    succeeded(&try_pack(&src, &out, &[]));
    let event = sandbox.path("event.json");
    fs::write(&event, r#"{"hello": "world"}"#).unwrap();
    let output = coldpack_in(None, &["run", path_arg(&out), "--event", path_arg(&event)]);
    let stderr = succeeded(&output);
    assert!(stderr.contains("start 1 (cold start): extract"), "{stderr}");
    assert!(stderr.contains("start 2 (re-init): reuse"), "{stderr}");
    let answers: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    for answer in answers {
        assert_eq!(answer["echo"], serde_json::json!({"hello": "world"}));
        assert!(answer["root"].as_str().unwrap().contains("/tmp/"));
    }
}

#[test]
fn every_subcommand_help_reads_well() {
    for sub in ["pack", "run", "inspect", "verify"] {
        let output = coldpack_in(None, &[sub, "--help"]);
        let help = text(&output.stdout);
        assert!(output.status.success(), "{sub}: {}", text(&output.stderr));
        assert!(help.contains(&format!("Usage: coldpack {sub}")), "{help}");
        for line in help.lines() {
            assert!(
                line.chars().count() <= 100,
                "{sub}: line too long: {line:?}"
            );
        }
    }
    let top = text(&coldpack_in(None, &["--help"]).stdout);
    for sub in ["pack", "run", "inspect", "verify"] {
        assert!(top.contains(&format!("  {sub} ")), "{top}");
    }
}

/// A fenced block of a page in docs/: its language, its text, and the reason given in a
/// `<!-- not run: ... -->` comment just before it, if any.
struct Block {
    lang: String,
    text: String,
    not_run: Option<String>,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut lines = markdown.lines();
    let mut previous = "";
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let not_run = previous
                .strip_prefix("<!-- not run:")
                .map(|r| r.trim_end_matches("-->").trim().to_string());
            let text: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            found.push(Block {
                lang: lang.trim().to_string(),
                text: text.join("\n") + "\n",
                not_run,
            });
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    found
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What the pages start from, standing in for what they download or build: a runtime
/// whose `bin/start` prints and exits, a Python and a Node tree whose interpreter is
/// this machine's, and a bootstrap that says it is built for aarch64.
fn docs_stand_ins(dir: &Path) {
    write_file(
        &dir.join("runtime/bin/start"),
        b"#!/bin/sh\necho \"started with $* GREETING=$GREETING\"\n",
        0o755,
    );
    write_file(&dir.join("runtime/lib/data.txt"), b"data\n", 0o644);
    write_file(
        &dir.join("python/bin/python3.12"),
        b"#!/bin/sh\nexec python3 \"$@\"\n",
        0o755,
    );
    symlink("python3.12", dir.join("python/bin/python3")).unwrap();
    write_file(&dir.join("python/lib/python3.12/os.py"), b"# os\n", 0o644);
    write_file(
        &dir.join("python/lib/python3.12/__pycache__/os.cpython-312.pyc"),
        &realistic_bytes(4096, 9),
        0o644,
    );
    write_file(
        &dir.join("python/lib/python3.12/test/test_os.py"),
        b"# test\n",
        0o644,
    );
    write_file(
        &dir.join("node/bin/node"),
        b"#!/bin/sh\nexec node \"$@\"\n",
        0o755,
    );
    write_file(
        &dir.join("node/include/node/node.h"),
        b"/* header */\n",
        0o644,
    );
    write_file(
        &dir.join("node/share/doc/node/README.md"),
        b"# node\n",
        0o644,
    );
    let mut arm_stock = coldpack::STOCK_BOOTSTRAP.to_vec();
    arm_stock[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
    write_file(&dir.join("bootstrap-aarch64"), &arm_stock, 0o755);
}

/// A local AWS mock (moto) for the pages' `aws` commands, stopped on drop.
struct Moto(std::process::Child, u16);

impl Moto {
    fn start(log: &Path) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-p", &port.to_string()])
            // AWSLambdaBasicExecutionRole and the other AWS-managed policies.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdout(fs::File::create(log).unwrap())
            .stderr(fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .expect("start moto_server");
        let moto = Moto(child, port);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("moto_server did not listen on {port}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every `sh` block of every page in docs/ runs, in order, page by page, in a fresh
/// directory with `coldpack` on PATH; the `aws` commands run against moto, and a SAM
/// template is checked with cfn-lint. A block that cannot run here (a download, a cross
/// toolchain) must say why in a `<!-- not run: ... -->` comment.
#[test]
fn docs_commands_run() {
    let mut pages: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_coldpack")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for page in pages {
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let blocks = blocks(&fs::read_to_string(&page).unwrap());
        let mut script = String::from("set -euxo pipefail\n");
        let mut templates = Vec::new();
        for block in &blocks {
            match (block.lang.as_str(), &block.not_run) {
                ("sh", None) => script.push_str(&block.text),
                ("sh", Some(reason)) => assert!(!reason.is_empty(), "{name}: not run, but why?"),
                ("yaml", _) if block.text.contains("AWSTemplateFormatVersion") => {
                    templates.push(block.text.clone())
                }
                _ => {}
            }
        }
        let sandbox = Sandbox::new();
        let dir = sandbox.path("");
        docs_stand_ins(&dir);
        let needs_aws = script.contains("aws ");
        if needs_aws && !(on_path("aws") && on_path("moto_server")) {
            eprintln!("docs/{name}: skipped, its aws commands need `aws` and `moto_server` (pip: awscli, moto[server])");
            continue;
        }
        let _moto = needs_aws.then(|| Moto::start(&sandbox.path("moto.log")));
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(&script)
            .current_dir(&dir)
            .env("PATH", &path)
            .env_remove("COLDPACK_CACHE_DIR")
            .env_remove("COLDPACK_VERIFY")
            .env_remove("COLDPACK_LOG");
        if let Some(moto) = &_moto {
            command
                .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", moto.1))
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        }
        let output = command.output().expect("run bash");
        assert!(
            output.status.success(),
            "docs/{name}: a command failed\n--- stdout\n{}\n--- stderr\n{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        for template in templates {
            let file = dir.join("template.yaml");
            fs::write(&file, template).unwrap();
            if !on_path("cfn-lint") {
                eprintln!(
                    "docs/{name}: SAM template not checked, `cfn-lint` is missing (pip: cfn-lint)"
                );
                continue;
            }
            let lint = Command::new("cfn-lint")
                .arg(&file)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                lint.status.success(),
                "docs/{name}: cfn-lint: {}{}",
                text(&lint.stdout),
                text(&lint.stderr)
            );
        }
    }
}

/// A reader that goes away (`coldpack inspect OUT | head -1`) ends the command quietly:
/// no panic, no error line, exit 0.
#[test]
fn a_closed_stdout_ends_inspect_quietly() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src);
    let out = sandbox.path("out");
    succeeded(&try_pack(&src, &out, &[]));
    // The reading end is gone before the command starts: its first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = coldpack()
        .arg("inspect")
        .arg(&out)
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("panicked") && stderr.is_empty(),
        "{stderr}"
    );
}
