//! The main job end to end, with the real binaries: pack a tree built in code, start
//! the packed bootstrap cold and warm, as root and as an unprivileged user, and check
//! that the runtime it execs sees exactly the tree that was packed.

mod util;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use util::*;

/// Packs the awkward fixture tree with nothing kept in the deployment, so that every
/// entry goes through extraction; returns (sandbox, source dir, bootstrap path).
fn packed_fixture(extra: &[&str]) -> (Sandbox, std::path::PathBuf, std::path::PathBuf) {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    let out = sandbox.path("out");
    pack(
        &src,
        "bin/entry",
        &out,
        &[&["--task-budget", "0"], extra].concat(),
    );
    let bootstrap = out.join("bootstrap");
    (sandbox, src, bootstrap)
}

#[test]
fn cold_start_extracts_the_tree_exactly_and_execs_the_entrypoint() {
    let (sandbox, src, bootstrap) = packed_fixture(&[]);
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        let output = start(&bootstrap, &cache, who, &[], &[]);
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        assert_eq!(decision(&output), "extract", "{who:?}");
        let root = extracted_root(&cache);
        let differences = compare_trees(&src, &root);
        assert!(
            differences.is_empty(),
            "{who:?}: extracted tree differs:\n{}",
            differences.join("\n")
        );
        assert!(text(&output.stdout).contains(&format!(
            "cwd={}",
            std::env::current_dir().unwrap().display()
        )));
    }
}

#[test]
fn warm_start_reuses_intact_copy() {
    let (sandbox, _src, bootstrap) = packed_fixture(&[]);
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        assert_eq!(
            decision(&start(&bootstrap, &cache, who, &[], &[])),
            "extract"
        );
        let root = extracted_root(&cache);
        let inode = fs::metadata(&root).unwrap().ino();
        for level in ["marker", "stat", "full"] {
            let output = start(&bootstrap, &cache, who, &[("COLDPACK_VERIFY", level)], &[]);
            assert!(
                output.status.success(),
                "{who:?} {level}: {}",
                text(&output.stderr)
            );
            assert_eq!(
                decision(&output),
                "reuse",
                "{who:?} {level}: {}",
                text(&output.stderr)
            );
            assert_eq!(log_field(&output.stderr, "verify").as_deref(), Some(level));
        }
        assert_eq!(
            fs::metadata(&root).unwrap().ino(),
            inode,
            "the same tree was reused"
        );
    }
}

#[test]
fn damaged_copy_is_extracted_again() {
    let (sandbox, src, bootstrap) = packed_fixture(&[]);
    let cache = sandbox.cache_dir("cache", Who::Me);
    assert_eq!(
        decision(&start(&bootstrap, &cache, Who::Me, &[], &[])),
        "extract"
    );
    let root = extracted_root(&cache);
    fs::remove_file(root.join("data/with space")).unwrap();

    let output = start(&bootstrap, &cache, Who::Me, &[], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(decision(&output), "extract");
    // Either the file or its directory, whose mtime changed, is named.
    let reason = log_field(&output.stderr, "reason").unwrap();
    assert!(reason.contains("\"data"), "{reason}");
    let differences = compare_trees(&src, &extracted_root(&cache));
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    let leftovers: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("trash") || n.contains("staging"))
        .collect();
    assert!(leftovers.is_empty(), "leftovers: {leftovers:?}");
}

/// Changes made after the tree was published, with every bit of metadata the `stat`
/// check compares put back as it was: only the ctime watermark sees them. `marker`
/// reuses the changed copy; `stat` and `full` extract again.
#[test]
fn changes_that_put_metadata_back_are_caught_by_the_ctime_watermark() {
    let (sandbox, _src, bootstrap) = packed_fixture(&[]);
    let restore = |path: &Path, mtime| {
        let file = fs::File::open(path).unwrap();
        file.set_modified(mtime).unwrap();
    };
    type Change = fn(&Path, &dyn Fn(&Path, std::time::SystemTime));
    let changes: [(&str, Change); 4] = [
        ("a same-size rewrite", |root, restore| {
            let file = root.join("data/shared");
            let mtime = fs::metadata(&file).unwrap().modified().unwrap();
            fs::write(&file, b"SHARED BY TWO NAMES\n").unwrap();
            restore(&file, mtime);
        }),
        (
            "a file added under a restored directory mtime",
            |root, restore| {
                let dir = root.join("data");
                let mtime = fs::metadata(&dir).unwrap().modified().unwrap();
                fs::write(dir.join("planted"), b"x").unwrap();
                restore(&dir, mtime);
            },
        ),
        (
            "a file removed under a restored directory mtime",
            |root, restore| {
                let dir = root.join("data");
                let mtime = fs::metadata(&dir).unwrap().modified().unwrap();
                fs::remove_file(dir.join("empty")).unwrap();
                restore(&dir, mtime);
            },
        ),
        ("a chmod back and forth", |root, _| {
            let file = root.join("data/shared");
            let mode = fs::metadata(&file).unwrap().permissions();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
            fs::set_permissions(&file, mode).unwrap();
        }),
    ];
    for who in users() {
        for (what, change) in changes {
            let cache = sandbox.cache_dir(&format!("cache-{who:?}-{}", what.len()), who);
            assert_eq!(
                decision(&start(&bootstrap, &cache, who, &[], &[])),
                "extract"
            );
            // Past the coarse clock's tick: a change within the publication's own
            // tick is what the watermark cannot see (docs/design.md).
            std::thread::sleep(std::time::Duration::from_millis(20));
            let root = extracted_root(&cache);
            change(&root, &restore);
            let marker = start(
                &bootstrap,
                &cache,
                who,
                &[("COLDPACK_VERIFY", "marker")],
                &[],
            );
            assert_eq!(decision(&marker), "reuse", "{who:?} {what}");
            let stat = start(&bootstrap, &cache, who, &[("COLDPACK_VERIFY", "stat")], &[]);
            assert_eq!(
                decision(&stat),
                "extract",
                "{who:?} {what}: {}",
                text(&stat.stderr)
            );
            assert!(
                log_field(&stat.stderr, "reason").is_some_and(|r| r.contains("changed after")),
                "{who:?} {what}: {}",
                text(&stat.stderr)
            );
            assert_eq!(decision(&start(&bootstrap, &cache, who, &[], &[])), "reuse");
        }
    }
    // `full` reads contents back, whatever the metadata says.
    let cache = sandbox.cache_dir("cache-full", Who::Me);
    assert_eq!(
        decision(&start(&bootstrap, &cache, Who::Me, &[], &[])),
        "extract"
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    (changes[0].1)(&extracted_root(&cache), &restore);
    let full = start(
        &bootstrap,
        &cache,
        Who::Me,
        &[("COLDPACK_VERIFY", "full")],
        &[],
    );
    assert_eq!(decision(&full), "extract", "{}", text(&full.stderr));
    assert_eq!(
        fs::read(extracted_root(&cache).join("data/shared")).unwrap(),
        b"shared by two names\n"
    );
}

#[test]
fn arguments_and_environment_reach_the_entrypoint() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    let out = sandbox.path("out");
    pack(
        &src,
        "./bin/entry",
        &out,
        &[
            "--arg",
            "-m",
            "--arg",
            "--flag",
            "--arg",
            "at={root}/lib",
            "--env",
            "FIXTURE_VAR=plain value",
            "--env",
            "ROOTED={root}/x:{root}/y",
        ],
    );
    let cache = sandbox.cache_dir("cache", Who::Me);
    let output = start(
        &out.join("bootstrap"),
        &cache,
        Who::Me,
        &[("COLDPACK_LOG", "quiet")],
        &["given", "-x"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        output.stderr.is_empty(),
        "quiet start wrote: {}",
        text(&output.stderr)
    );
    let root = extracted_root(&cache);
    let root = root.display();
    let stdout = text(&output.stdout);
    let expected = format!(
        "arg=-m\narg=--flag\narg=at={root}/lib\narg=given\narg=-x\ncwd={}\nFIXTURE_VAR=plain value\nROOTED={root}/x:{root}/y\n",
        std::env::current_dir().unwrap().display()
    );
    assert_eq!(stdout, expected);
}

#[test]
fn tampered_payload_is_refused_and_nothing_runs() {
    let (sandbox, _src, bootstrap) = packed_fixture(&[]);
    let bytes = fs::read(&bootstrap).unwrap();
    let stock = coldpack_inspect_json(&bootstrap)["bootstrap_bytes"]
        .as_u64()
        .unwrap() as usize;
    // One flipped bit in the header, the manifest, and deep inside the chunks.
    for at in [stock + 20, stock + 200, bytes.len() - 4096] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        let path = sandbox.path(&format!("damaged-{at}"));
        write_program(&path, &damaged);
        let cache = sandbox.cache_dir(&format!("cache-{at}"), Who::Me);
        let output = start(&path, &cache, Who::Me, &[], &[]);
        assert!(
            !output.status.success(),
            "byte {at}: damaged payload started"
        );
        assert!(output.stdout.is_empty(), "byte {at}: the entrypoint ran");
        assert_eq!(decision(&output), "error");
        assert_eq!(
            log_field(&output.stderr, "error_type").as_deref(),
            Some("Runtime.PayloadCorrupt")
        );
        let left: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "byte {at}: left in the cache: {left:?}");
    }
}

fn coldpack_inspect_json(target: &Path) -> serde_json::Value {
    let output = coldpack()
        .arg("inspect")
        .arg(target)
        .arg("--json")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn inspect_and_verify_report_the_payload() {
    let (_sandbox, _src, bootstrap) =
        packed_fixture(&["--name", "fixture", "--arg", "-v", "--env", "A=b"]);
    let summary = coldpack_inspect_json(bootstrap.parent().unwrap());
    assert_eq!(summary["name"], "fixture");
    assert_eq!(summary["entrypoint"], "bin/entry");
    assert_eq!(summary["args"], serde_json::json!(["-v"]));
    assert_eq!(summary["env"], serde_json::json!(["A=b"]));
    assert_eq!(summary["entries"]["hardlinks"], 1);
    assert_eq!(summary["entries"]["symlinks"], 3);
    assert!(
        summary["chunks"].as_u64().unwrap() >= 2,
        "the 9 MiB file spans chunks"
    );
    let verified = coldpack().arg("verify").arg(&bootstrap).output().unwrap();
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    assert!(text(&verified.stdout).starts_with("ok:"));
}

/// Trees at the format's edges: one file of just over 3 MiB cut into four chunks
/// (boundaries inside it), and a tree of directories, links and an empty file, with
/// no contents at all (no chunks; its entrypoint is an empty script). Each is started
/// cold as every user, compared entry by entry, then started warm.
#[test]
fn edge_trees_extract_exactly() {
    let sandbox = Sandbox::new();
    let one_file = sandbox.path("one-file");
    fs::create_dir(&one_file).unwrap();
    let mut script = b"#!/bin/sh\necho one-file-ran\nexit 0\n".to_vec();
    script.extend(realistic_bytes(3 << 20, 7));
    write(&one_file.join("entry"), &script, 0o755);

    let no_contents = sandbox.path("no-contents");
    for dir in ["a/b/c", "empty", "bin"] {
        fs::create_dir_all(no_contents.join(dir)).unwrap();
    }
    write(&no_contents.join("bin/entry"), b"", 0o755);
    std::os::unix::fs::symlink("/bin/true", no_contents.join("bin/true")).unwrap();
    std::os::unix::fs::symlink("../../empty", no_contents.join("a/b/up")).unwrap();
    fs::set_permissions(no_contents.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();

    for (src, entrypoint, chunks) in [(&one_file, "entry", 4), (&no_contents, "bin/entry", 0)] {
        set_mtimes(src);
        let out = sandbox.path(&format!(
            "out-{}",
            src.file_name().unwrap().to_string_lossy()
        ));
        pack(src, entrypoint, &out, &["--task-budget", "0"]);
        let bootstrap = out.join("bootstrap");
        assert_eq!(coldpack_inspect_json(&out)["chunks"], chunks, "{src:?}");
        for who in users() {
            let cache = sandbox.cache_dir(&format!("cache-{}-{who:?}", chunks), who);
            for expected in ["extract", "reuse"] {
                let output = start(&bootstrap, &cache, who, &[], &[]);
                let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
                assert!(output.status.success(), "{src:?} {who:?}: {stderr}");
                assert_eq!(
                    stdout.contains("one-file-ran"),
                    chunks > 0,
                    "{src:?} {who:?}"
                );
                assert_eq!(decision(&output), expected, "{src:?} {who:?}");
            }
            let differences = compare_trees(src, &extracted_root(&cache));
            assert!(
                differences.is_empty(),
                "{src:?} {who:?}:\n{}",
                differences.join("\n")
            );
        }
    }
}

#[test]
fn packing_twice_gives_identical_bytes() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    pack(&src, "bin/entry", &sandbox.path("one"), &[]);
    pack(&src, "bin/entry", &sandbox.path("two"), &[]);
    assert!(
        fs::read(sandbox.path("one/bootstrap")).unwrap()
            == fs::read(sandbox.path("two/bootstrap")).unwrap()
    );
}

#[test]
fn setuid_bits_are_dropped_with_a_warning() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    fs::set_permissions(
        src.join("libexec/entry-v1"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let output = pack(&src, "bin/entry", &sandbox.path("out"), &[]);
    assert!(
        text(&output.stderr).contains("setuid/setgid bits dropped"),
        "{}",
        text(&output.stderr)
    );
    let cache = sandbox.cache_dir("cache", Who::Me);
    assert!(
        start(&sandbox.path("out/bootstrap"), &cache, Who::Me, &[], &[])
            .status
            .success()
    );
    let mode = fs::metadata(extracted_root(&cache).join("libexec/entry-v1"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

/// Runs `coldpack pack` expecting a refusal: non-zero, one line naming `needle`, and
/// no OUT-DIR left behind.
fn refused(src: &Path, args: &[&str], needle: &str) {
    let out = src.parent().unwrap().join("refused-out");
    let output = coldpack()
        .arg("pack")
        .arg(src)
        .args(args)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{args:?} was accepted");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} does not mention {needle:?}"
    );
    assert!(!out.exists(), "{args:?}: OUT-DIR was created");
}

#[test]
fn bad_input_is_refused_with_one_line() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    fs::write(src.join("data/not-exec"), b"x").unwrap();
    std::os::unix::fs::symlink("/bin/sh", src.join("bin/outside")).unwrap();
    refused(
        &sandbox.path("missing"),
        &["--entrypoint", "x"],
        "cannot read runtime directory",
    );
    refused(&src, &["--entrypoint", "bin/none"], "does not exist");
    refused(&src, &["--entrypoint", "data"], "not a regular file");
    refused(&src, &["--entrypoint", "data/not-exec"], "not executable");
    refused(&src, &["--entrypoint", "bin/outside"], "outside");
    refused(
        &src,
        &["--entrypoint", "../runtime/bin/entry"],
        "must be a path inside DIR",
    );
    refused(
        &src,
        &["--entrypoint", "/bin/sh"],
        "must be a path inside DIR",
    );
    refused(
        &src,
        &["--entrypoint", "bin/entry", "--env", "NOEQUALS"],
        "KEY=VALUE",
    );
    refused(
        &src,
        &["--entrypoint", "bin/entry", "--env", "=v"],
        "KEY=VALUE",
    );
    refused(
        &src,
        &["--entrypoint", "bin/entry", "--name", "has.dot"],
        "--name",
    );
    let fifo = src.join("data/fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    refused(&src, &["--entrypoint", "bin/entry"], "is a FIFO");
    fs::remove_file(&fifo).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(src.join("data/socket")).unwrap();
    refused(&src, &["--entrypoint", "bin/entry"], "is a socket");
}

#[test]
fn unreadable_file_is_refused() {
    if !is_root() {
        // As a normal user a mode-000 file is unreadable to us directly.
        let sandbox = Sandbox::new();
        let src = sandbox.path("runtime");
        awkward_tree(&src);
        fs::set_permissions(src.join("data/shared"), fs::Permissions::from_mode(0o000)).unwrap();
        refused(&src, &["--entrypoint", "bin/entry"], "cannot read");
        return;
    }
    // Root reads everything: pack as nobody, from a tree nobody can walk but not read.
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    fs::set_permissions(src.join("data/shared"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = sandbox.path("refused-out");
    let output = as_user(Who::Nobody, env!("CARGO_BIN_EXE_coldpack"))
        .arg("pack")
        .arg(&src)
        .args(["--entrypoint", "bin/entry", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot read") && stderr.contains("data/"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn bootstrap_without_payload_says_so() {
    let sandbox = Sandbox::new();
    let stock = sandbox.path("stock");
    write_program(&stock, coldpack::STOCK_BOOTSTRAP);
    let cache = sandbox.cache_dir("cache", Who::Me);
    let output = start(&stock, &cache, Who::Me, &[], &[]);
    assert!(!output.status.success());
    assert_eq!(
        log_field(&output.stderr, "error_type").as_deref(),
        Some("Runtime.PayloadMissing")
    );
    assert!(text(&output.stderr).contains("carries no coldpack payload"));
}

#[test]
fn stock_bootstrap_is_static() {
    let sandbox = Sandbox::new();
    let stock = sandbox.path("stock");
    fs::write(&stock, coldpack::STOCK_BOOTSTRAP).unwrap();
    let output = std::process::Command::new("file")
        .arg(&stock)
        .output()
        .expect("`file` is installed");
    let description = text(&output.stdout);
    assert!(
        description.contains("static-pie linked") || description.contains("statically linked"),
        "{description}"
    );
}

/// Peak memory of a cold start of the packed bootstrap at `bootstrap`, in KiB, and
/// what it printed (through GNU time's `%M`).
fn peak_rss_kib(bootstrap: &Path, cache: &Path) -> (u64, String) {
    let output = std::process::Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kib=%M"])
        .arg(bootstrap)
        .env("COLDPACK_CACHE_DIR", cache)
        .output()
        .expect("GNU time is installed by scripts/test");
    let stderr = text(&output.stderr);
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in {stderr}"));
    (peak, stderr)
}

/// The largest manifest the bootstrap accepts, and chunks that each ask for the
/// largest window, decoded on every thread: a cold start stays within 32 MiB however
/// the payload is made (the limits in docs/design.md), and a manifest one entry over
/// the limit is refused before it is inflated.
#[test]
fn the_largest_payloads_keep_a_cold_start_within_32_mib() {
    use coldpack_bootstrap::manifest::{self, Chunk, Entry, EntryKind, Mtime, MAX_MANIFEST};
    use coldpack_bootstrap::payload::{deflate_section, sha256, Assembly, Sections};
    let sandbox = Sandbox::new();
    let mtime = Mtime {
        sec: 1_600_000_000,
        nsec: 0,
    };
    let entry = |path: String, kind| Entry {
        path: path.into_bytes(),
        parent: 0,
        mode: 0o755,
        mtime,
        kind,
    };
    // Files of 32 MiB of zeros, one per chunk, each frame with an 8 MiB window; then
    // empty files with long names until the manifest is just under its limit.
    let big = vec![0u8; 32 << 20];
    let frame = coldpack_bootstrap::chunk::encode(&big, 3).unwrap();
    let mut entries = vec![entry(String::new(), EntryKind::Dir)];
    entries.push(entry("run".into(), EntryKind::File { size: 0 }));
    let mut chunks = Vec::new();
    for i in 0..6 {
        entries.push(entry(
            format!("z{i}"),
            EntryKind::File {
                size: big.len() as u64,
            },
        ));
        chunks.push(Chunk {
            data_len: big.len() as u64,
            compressed_len: frame.len() as u64,
            sha256: sha256(&frame),
            data_sha256: sha256(&big),
        });
    }
    let frames = vec![frame; 6];
    let task = deflate_section(&[0; 4], 3).unwrap();
    let fill = |entries: &mut Vec<Entry>, limit: u64| {
        let base = manifest::encode(entries, &chunks, &sha256(&task)).len() as u64;
        // Each entry takes 28 bytes of columns and its 200-byte name.
        for n in 0..(limit - base) / 228 {
            entries.push(entry(format!("{n:0>200}"), EntryKind::File { size: 0 }));
        }
        while manifest::encode(entries, &chunks, &sha256(&task)).len() as u64 > limit {
            entries.pop();
        }
        entries[1..].sort_by(|a, b| a.path.cmp(&b.path));
    };
    for (label, limit, accepted) in [
        ("largest", MAX_MANIFEST, true),
        ("over", MAX_MANIFEST + 300, false),
    ] {
        let mut entries = entries.clone();
        fill(&mut entries, limit);
        let raw = manifest::encode(&entries, &chunks, &sha256(&task));
        let stored = deflate_section(&raw, 3).unwrap();
        let launch = coldpack_bootstrap::launch::Launch {
            name: "big".into(),
            entrypoint: b"run".to_vec(),
            args: vec![],
            env: vec![],
        }
        .encode();
        let sections = Sections {
            flags: 0,
            launch: &launch,
            manifest: &stored,
            task_index: &task,
            chunks: &frames,
        };
        let bytes = Assembly::new(coldpack::STOCK_BOOTSTRAP, sections).to_vec();
        let bootstrap = sandbox.path(&format!("{label}/bootstrap"));
        fs::create_dir_all(bootstrap.parent().unwrap()).unwrap();
        write(&bootstrap, &bytes, 0o755);
        let cache = sandbox.cache_dir(&format!("cache-{label}"), Who::Me);
        let (peak, stderr) = peak_rss_kib(&bootstrap, &cache);
        println!("{label}: {} bytes of manifest, peak {peak} KiB", raw.len());
        assert!(peak <= 32 << 10, "{label}: peak {peak} KiB: {stderr}");
        if accepted {
            assert_eq!(
                log_field(stderr.as_bytes(), "decision").as_deref(),
                Some("extract"),
                "{stderr}"
            );
        } else {
            assert!(stderr.contains("no usable size"), "{stderr}");
        }
    }
}
