//! Trust nothing in /tmp: the bootstrap against everything a reused Lambda sandbox and
//! a hostile file can throw at it. SIGKILLs at random instants of a cold start, a copy
//! tampered with in every way the function's own code could, payloads corrupted at
//! random, payloads crafted by hand to escape the cache directory, an upgrade, a full
//! disk, eight starts at once, and a cache directory that is missing, a file, read-only
//! or full of planted links. Each runs as root and, when the tests run as root, as
//! `nobody`, the kind of user Lambda runs the bootstrap as.
//!
//! Every random choice comes from one seed, printed at the start of the test that uses
//! it: `COLDPACK_SEED=<seed> cargo test -p coldpack --test reliability <test>` replays it.
//! `COLDPACK_KILLS` and `COLDPACK_CORRUPTIONS` raise the counts for a longer soak.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use coldpack_bootstrap::manifest::{Chunk, Entry, EntryKind, Launch, Manifest, Mtime};
use coldpack_bootstrap::payload::{sha256, Header, Payload, Trailer, HEADER_LEN};
use util::*;

fn count_from_env(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn make_executable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A small runtime: the fixture entrypoint behind a link, two files, a link to one of
/// them, a subdirectory.
fn small_tree(root: &Path, version: &str) {
    write_file(
        &root.join("libexec/entry"),
        ENTRYPOINT_SCRIPT.as_bytes(),
        0o755,
    );
    fs::create_dir_all(root.join("bin")).unwrap();
    symlink("../libexec/entry", root.join("bin/entry")).unwrap();
    write_file(&root.join("data/a.txt"), b"alpha", 0o644);
    write_file(&root.join("data/b.txt"), version.as_bytes(), 0o644);
    symlink("a.txt", root.join("data/link")).unwrap();
    write_file(&root.join("sub/c.txt"), b"gamma\n", 0o640);
    set_mtimes(root);
}

/// The awkward fixture plus enough realistic files (about 30 MB in 130 files) that a
/// cold start takes well over 100 ms, so that a kill can land anywhere in it.
fn big_tree(root: &Path) {
    awkward_tree(root);
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    for d in 0..8u64 {
        for f in 0..16u64 {
            let seed = d * 100 + f;
            let len = 10_000 + (seed * 7919 % 40) as usize * 5_000;
            write_file(
                &root.join(format!("lib/d{d}/f{f}.so")),
                &realistic_bytes(len, seed),
                0o644,
            );
        }
    }
    write_file(
        &root.join("lib/large"),
        &realistic_bytes(6 << 20, 99),
        0o755,
    );
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    set_mtimes(root);
}

/// The extracted tree in `cache` for `name`, and its marker.
fn tree_and_marker(cache: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = format!("coldpack-{name}.");
    let trees: Vec<String> = names_in(cache)
        .into_iter()
        .filter(|n| n.starts_with(&prefix) && n.len() == prefix.len() + 16 && !n.contains("trash"))
        .collect();
    assert_eq!(
        trees.len(),
        1,
        "one tree for {name} in {cache:?}: {trees:?}"
    );
    let tree = cache.join(&trees[0]);
    let marker = cache.join(format!("{}.complete", trees[0]));
    (tree, marker)
}

/// What a successful start leaves in `cache` for `name`: lock, tree, marker, nothing else.
fn assert_clean_cache(cache: &Path, name: &str, context: &str) {
    let (tree, marker) = tree_and_marker(cache, name);
    let mut expected = vec![
        format!("coldpack-{name}.lock"),
        tree.file_name().unwrap().to_string_lossy().into_owned(),
        marker.file_name().unwrap().to_string_lossy().into_owned(),
    ];
    expected.sort();
    let found: Vec<String> = names_in(cache)
        .into_iter()
        .filter(|n| n.starts_with(&format!("coldpack-{name}.")))
        .collect();
    assert_eq!(found, expected, "{context}: what is left in the cache");
}

/// Empties `cache` as the test (root, or the owner), whatever modes are inside.
fn wipe(cache: &Path) {
    for name in names_in(cache) {
        coldpack_bootstrap::cache::remove_tree(&cache.join(name)).unwrap();
    }
}

fn ran(output: &Output) -> bool {
    text(&output.stdout).contains("cwd=")
}

fn error_type(output: &Output) -> String {
    log_field(&output.stderr, "error_type").unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// SIGKILL at random instants
// ---------------------------------------------------------------------------------

#[test]
fn killed_cold_starts_leave_nothing_that_is_reused() {
    let mut rng = Rng::from_env("killed_cold_starts_leave_nothing_that_is_reused");
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    big_tree(&src);
    let out = sandbox.path("out");
    pack(&src, "bin/entry", &out, &["--name", "killed"]);
    let bootstrap = out.join("bootstrap");
    let want = walk(&src);
    let users = users();
    let per_user = count_from_env("COLDPACK_KILLS", 50).div_ceil(users.len()) + 5;
    let mut survived = 0;
    for who in users {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        let started = Instant::now();
        let output = start(&bootstrap, &cache, who, &[], &[]);
        let cold = started.elapsed();
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        println!("{who:?}: a cold start takes {cold:?}");
        let mut landed = 0;
        let mut attempts = 0;
        while landed < per_user {
            attempts += 1;
            assert!(attempts < per_user * 4, "{who:?}: kills keep missing");
            // Make the next start cold, in one of the ways a sandbox gets there.
            let (tree, marker) = tree_and_marker(&cache, "killed");
            let how = match rng.below(4) {
                0 => {
                    wipe(&cache);
                    "empty cache"
                }
                1 => {
                    fs::remove_file(tree.join("data/with space")).unwrap();
                    "damaged copy"
                }
                _ => {
                    fs::remove_file(&marker).unwrap();
                    "unmarked copy"
                }
            };
            // One or two kills in a row, the second on the first one's leftovers.
            let row = 1 + rng.below(2);
            let mut instants = Vec::new();
            for _ in 0..row {
                let delay = Duration::from_micros(rng.below(cold.as_micros() as u64 * 11 / 10));
                let mut child = start_command(&bootstrap, &cache, who, &[]).spawn().unwrap();
                std::thread::sleep(delay);
                let finished = child.try_wait().unwrap().is_some();
                let _ = child.kill();
                let _ = child.wait();
                if !finished {
                    landed += 1;
                    instants.push(delay);
                }
            }
            let output = start(&bootstrap, &cache, who, &[], &[]);
            let context = format!("{who:?}, after killing a start from {how} at {instants:?}");
            assert!(
                output.status.success(),
                "{context}: {}",
                text(&output.stderr)
            );
            assert!(ran(&output), "{context}: the runtime did not run");
            let (tree, _) = tree_and_marker(&cache, "killed");
            let differences = compare_walked(&want, &tree);
            assert!(
                differences.is_empty(),
                "{context}: the tree differs:\n{}",
                differences.join("\n")
            );
            assert_clean_cache(&cache, "killed", &context);
            survived += instants.len();
        }
    }
    println!("killed_cold_starts: {survived} kills survived");
    assert!(survived >= count_from_env("COLDPACK_KILLS", 50));
}

// ---------------------------------------------------------------------------------
// The tamper matrix
// ---------------------------------------------------------------------------------

/// One way the function's code can change the copy; `caught` at marker, stat, full.
struct Tamper {
    name: &'static str,
    /// Shell, run as the user; `{root}`, `{marker}` and `{elsewhere}` are replaced.
    script: &'static str,
    /// Entries whose mtime is put back afterwards, as a careful tamperer would.
    restore: &'static [&'static str],
    caught: [bool; 3],
}

const LEVELS: [&str; 3] = ["marker", "stat", "full"];

const TAMPERS: &[Tamper] = &[
    Tamper {
        name: "file deleted",
        script: "rm {root}/data/a.txt",
        restore: &["data"],
        caught: [false, true, true],
    },
    Tamper {
        name: "file truncated",
        script: "truncate -s 2 {root}/data/a.txt",
        restore: &["data/a.txt"],
        caught: [false, true, true],
    },
    Tamper {
        name: "file grown",
        script: "printf more >> {root}/data/a.txt",
        restore: &["data/a.txt"],
        caught: [false, true, true],
    },
    Tamper {
        name: "mode changed",
        script: "chmod 600 {root}/data/a.txt",
        restore: &[],
        caught: [false, true, true],
    },
    Tamper {
        name: "file swapped for a symlink",
        script: "rm {root}/data/a.txt && ln -s b.txt {root}/data/a.txt",
        restore: &["data"],
        caught: [false, true, true],
    },
    Tamper {
        name: "symlink swapped for a file",
        script: "rm {root}/data/link && cp {root}/data/a.txt {root}/data/link",
        restore: &["data"],
        caught: [false, true, true],
    },
    Tamper {
        name: "directory swapped for a symlink to elsewhere",
        script: "mv {root}/sub {elsewhere}/sub && ln -s {elsewhere}/sub {root}/sub",
        restore: &[""],
        caught: [false, true, true],
    },
    Tamper {
        name: "same-size content change",
        script: "printf ALPHA > {root}/data/a.txt",
        restore: &["data/a.txt"],
        caught: [false, false, true],
    },
    Tamper {
        name: "marker lost",
        script: "rm {marker}",
        restore: &[],
        caught: [true, true, true],
    },
    Tamper {
        name: "tree replaced by a symlink to elsewhere",
        script: "mv {root} {elsewhere}/tree && ln -s {elsewhere}/tree {root}",
        restore: &[],
        caught: [true, true, true],
    },
    Tamper {
        name: "tree replaced by a copy of itself",
        script: "cp -a {root} {root}.x && rm -rf {root} && mv {root}.x {root}",
        restore: &[],
        caught: [true, true, true],
    },
];

fn mtime_of(path: &Path) -> std::time::SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

fn set_mtime(path: &Path, when: std::time::SystemTime) {
    fs::File::open(path).unwrap().set_modified(when).unwrap();
}

#[test]
fn tampered_copies_are_caught_at_each_verify_level() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    let out = sandbox.path("out");
    pack(&src, "bin/entry", &out, &["--name", "tamper"]);
    let bootstrap = out.join("bootstrap");
    let mut detected = [0usize; 3];
    let mut cases = 0;
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        let elsewhere = sandbox.cache_dir(&format!("elsewhere-{who:?}"), who);
        for tamper in TAMPERS {
            for (level_index, level) in LEVELS.iter().enumerate() {
                let context = format!("{who:?}, {}, COLDPACK_VERIFY={level}", tamper.name);
                wipe(&cache);
                wipe(&elsewhere);
                let output = start(&bootstrap, &cache, who, &[], &[]);
                assert!(
                    output.status.success(),
                    "{context}: {}",
                    text(&output.stderr)
                );
                let (root, marker) = tree_and_marker(&cache, "tamper");
                let saved: Vec<_> = tamper
                    .restore
                    .iter()
                    .map(|rel| (root.join(rel), mtime_of(&root.join(rel))))
                    .collect();
                let script = tamper
                    .script
                    .replace("{root}", &root.display().to_string())
                    .replace("{marker}", &marker.display().to_string())
                    .replace("{elsewhere}", &elsewhere.display().to_string());
                shell_as(who, &script);
                for (path, when) in &saved {
                    set_mtime(path, *when);
                }
                let before_elsewhere = walk(&elsewhere);

                let output = start(&bootstrap, &cache, who, &[("COLDPACK_VERIFY", level)], &[]);
                assert!(
                    output.status.success(),
                    "{context}: {}",
                    text(&output.stderr)
                );
                assert!(ran(&output), "{context}: the runtime did not run");
                let caught = decision(&output) == "extract";
                assert_eq!(
                    caught,
                    tamper.caught[level_index],
                    "{context}: expected {}, got {}",
                    if tamper.caught[level_index] {
                        "a fresh extraction"
                    } else {
                        "reuse"
                    },
                    text(&output.stderr)
                );
                if caught {
                    detected[level_index] += 1;
                    let (root, _) = tree_and_marker(&cache, "tamper");
                    let differences = compare_trees(&src, &root);
                    assert!(differences.is_empty(), "{context}: {differences:?}");
                    assert_clean_cache(&cache, "tamper", &context);
                }
                assert!(
                    walk(&elsewhere) == before_elsewhere,
                    "{context}: what the planted link pointed to was changed"
                );
            }
            cases += 1;
        }
    }
    for (level, found) in LEVELS.iter().zip(detected) {
        println!("tamper: {level}: {found} of {cases} cases detected");
    }
}

// ---------------------------------------------------------------------------------
// Corrupted payloads
// ---------------------------------------------------------------------------------

#[derive(Debug)]
enum Damage {
    Flip {
        at: usize,
        bit: u8,
        region: &'static str,
    },
    Truncate {
        to: usize,
    },
    Append {
        bytes: Vec<u8>,
    },
}

impl Damage {
    fn label(&self) -> &'static str {
        match self {
            Damage::Flip { region, .. } => region,
            Damage::Truncate { .. } => "truncation",
            Damage::Append { .. } => "appended bytes",
        }
    }

    fn apply(&self, original: &[u8]) -> Vec<u8> {
        let mut bytes = original.to_vec();
        match self {
            Damage::Flip { at, bit, .. } => bytes[*at] ^= 1 << bit,
            Damage::Truncate { to } => bytes.truncate(*to),
            Damage::Append { bytes: extra } => bytes.extend_from_slice(extra),
        }
        bytes
    }
}

/// `start` of a file this process has just written: a fork in any other test thread
/// while the file was open for writing gives that child the descriptor too, and an
/// exec of the file fails with ETXTBSY until the child has exec'd in turn. Retried.
fn start_fresh_file(bootstrap: &Path, cache: &Path, who: Who) -> Output {
    for _ in 0..100 {
        match start_command(bootstrap, cache, who, &[]).output() {
            Err(e) if e.raw_os_error() == Some(26) => {}
            // setpriv reports its own failed exec.
            Ok(output) if text(&output.stderr).contains("Text file busy") => {}
            other => return other.expect("run bootstrap"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{} stays busy", bootstrap.display());
}

#[test]
fn corrupted_payloads_are_all_refused() {
    let mut rng = Rng::from_env("corrupted_payloads_are_all_refused");
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    // Big enough that the payload has several chunks.
    small_tree(&src, "v1");
    write_file(&src.join("lib/big"), &realistic_bytes(9 << 20, 3), 0o644);
    let out = sandbox.path("out");
    pack(&src, "bin/entry", &out, &["--name", "corrupt"]);
    let original = fs::read(out.join("bootstrap")).unwrap();
    let payload = Payload::open(&out.join("bootstrap")).unwrap();
    let stock = payload.offset as usize;
    let sections_end =
        stock + HEADER_LEN + (payload.header.launch_len + payload.header.manifest_len) as usize;
    let len = original.len();
    let count = count_from_env("COLDPACK_CORRUPTIONS", 240);
    let damages: Vec<Damage> = (0..count)
        .map(|_| {
            let flip = |rng: &mut Rng, from: usize, to: usize, region| Damage::Flip {
                at: from + rng.below((to - from) as u64) as usize,
                bit: rng.below(8) as u8,
                region,
            };
            match rng.below(20) {
                0..=7 => flip(&mut rng, stock, len, "anywhere"),
                8..=12 => flip(&mut rng, stock, sections_end, "header, launch or manifest"),
                13 => flip(&mut rng, len - 56, len, "trailer"),
                14..=16 => Damage::Truncate {
                    to: stock + rng.below((len - stock) as u64) as usize,
                },
                _ => Damage::Append {
                    bytes: (0..1 + rng.below(4096)).map(|_| rng.next() as u8).collect(),
                },
            }
        })
        .collect();
    fs::create_dir_all(sandbox.path("bin")).unwrap();
    fs::create_dir_all(sandbox.path("caches")).unwrap();
    let users = users();
    let verdicts = run_parallel(&damages, 2, |i, damage| {
        let who = users[i % users.len()];
        let path = sandbox.path(&format!("bin/damaged-{i}"));
        fs::write(&path, damage.apply(&original)).unwrap();
        make_executable(&path);
        let cache = sandbox.cache_dir(&format!("caches/{i}"), who);
        let output = start_fresh_file(&path, &cache, who);
        fs::remove_file(&path).unwrap();
        let left: Vec<String> = names_in(&cache)
            .into_iter()
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        wipe(&cache);
        let kind = error_type(&output);
        let context = format!("{who:?}, {damage:?}");
        if output.status.success() || !output.stdout.is_empty() {
            Err(format!("{context}: started: {}", text(&output.stderr)))
        } else if !kind.starts_with("Runtime.Payload") {
            Err(format!(
                "{context}: refused as {kind:?}: {}",
                text(&output.stderr)
            ))
        } else if !left.is_empty() {
            Err(format!("{context}: left {left:?}"))
        } else {
            Ok(format!("{} -> {kind}", damage.label()))
        }
    });
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for verdict in verdicts {
        match verdict {
            Ok(what) => *refused.entry(what).or_default() += 1,
            Err(why) => failures.push(why),
        }
    }
    println!(
        "corrupted payloads: {} of {count} refused {refused:?}",
        count - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------
// Hostile payloads, crafted by hand
// ---------------------------------------------------------------------------------

const HOSTILE_ENTRY: &[u8] = b"#!/bin/sh\necho hostile-control-ran\n";

fn mtime() -> Mtime {
    Mtime {
        sec: 1_600_000_000,
        nsec: 0,
    }
}

fn dir_entry(path: &str) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        mode: 0o755,
        mtime: mtime(),
        kind: EntryKind::Dir,
    }
}

fn file_entry(path: &str, data: &[u8]) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        mode: 0o755,
        mtime: mtime(),
        kind: EntryKind::File {
            size: data.len() as u64,
        },
    }
}

fn link_entry(path: &str, target: &str) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        mode: 0o777,
        mtime: mtime(),
        kind: EntryKind::Symlink {
            target: target.as_bytes().to_vec(),
        },
    }
}

/// One tar member, written header by header so that any path and type can be given
/// (tar's own builder refuses the hostile ones).
struct Member<'a> {
    path: &'a str,
    kind: tar::EntryType,
    data: &'a [u8],
    link: &'a str,
}

fn regular<'a>(path: &'a str, data: &'a [u8]) -> Member<'a> {
    Member {
        path,
        kind: tar::EntryType::Regular,
        data,
        link: "",
    }
}

fn tar_of(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for member in members {
        let mut header = tar::Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..member.path.len()].copy_from_slice(member.path.as_bytes());
        old.linkname[..member.link.len()].copy_from_slice(member.link.as_bytes());
        header.set_entry_type(member.kind);
        header.set_size(member.data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(member.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A zstd frame holding `content` in one raw block, whose header declares a window of
/// `2^window_log` bytes: what a decoder must allocate to read it.
fn frame_with_window(content: &[u8], window_log: u8) -> Vec<u8> {
    assert!(content.len() < 128 * 1024);
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (window_log - 10) << 3];
    let block = ((content.len() as u32) << 3) | 1; // raw block, last
    frame.extend_from_slice(&block.to_le_bytes()[..3]);
    frame.extend_from_slice(content);
    frame
}

/// A packed bootstrap assembled here: the stock bootstrap, then a payload with every
/// hash correct, so that only the bootstrap's rules can refuse it.
fn hostile_bootstrap(entries: Vec<Entry>, chunks: Vec<DataChunk>) -> Vec<u8> {
    hostile_bootstrap_with(entries, chunks, |raw| raw)
}

/// `hostile_bootstrap` with the manifest section made from the encoded manifest by
/// `store` (compressed, or replaced by a lying zstd frame).
fn hostile_bootstrap_with(
    entries: Vec<Entry>,
    chunks: Vec<DataChunk>,
    store: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> Vec<u8> {
    let launch = Launch {
        name: "hostile".into(),
        entrypoint: b"run".to_vec(),
        args: vec![],
        env: vec![],
    }
    .encode();
    let manifest = Manifest {
        entries,
        chunks: chunks
            .iter()
            .map(|(data_len, frame)| Chunk {
                data_len: *data_len,
                compressed_len: frame.len() as u64,
                sha256: sha256(frame),
                // Extraction never reads it; only `full` and `coldpack verify` do.
                data_sha256: [0; 32],
            })
            .collect(),
    }
    .encode();
    let manifest = store(manifest);
    let chunk_bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, f)| f).collect();
    let header = Header {
        launch_len: launch.len() as u64,
        manifest_len: manifest.len() as u64,
        chunks_len: chunk_bytes.len() as u64,
        launch_sha256: sha256(&launch),
        manifest_sha256: sha256(&manifest),
    }
    .encode();
    let trailer = Trailer {
        offset: coldpack::STOCK_BOOTSTRAP.len() as u64,
        len: (header.len() + launch.len() + manifest.len() + chunk_bytes.len()) as u64,
        header_sha256: sha256(&header),
    }
    .encode();
    [
        coldpack::STOCK_BOOTSTRAP,
        &header,
        &launch,
        &manifest,
        &chunk_bytes,
        &trailer,
    ]
    .concat()
}

/// A chunk of the data stream: how many bytes of it, and its compressed frame.
type DataChunk = (u64, Vec<u8>);

/// `members` as one zstd chunk carrying `data_len` bytes of the data stream.
fn chunk(members: &[Member], data_len: u64) -> DataChunk {
    (data_len, zstd::bulk::compress(&tar_of(members), 3).unwrap())
}

/// Every path under `root`, without following links or reading contents.
fn names_under(root: &Path) -> Vec<(PathBuf, u64, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for item in fs::read_dir(&path).unwrap() {
                stack.push(item.unwrap().path());
            }
        }
        found.push((path, meta.len(), meta.mtime() as u64));
    }
    found.sort();
    found
}

#[test]
fn hostile_payloads_are_refused_and_write_nothing_outside() {
    let sandbox = Sandbox::new();
    let outside = sandbox.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o777)).unwrap();
    write_file(&outside.join("victim"), b"original\n", 0o666);
    let abs = |rel: &str| outside.join(rel).display().to_string();
    let outside_path = outside.display().to_string();
    let run = HOSTILE_ENTRY;
    let n = |parts: &[&[u8]]| parts.iter().map(|p| p.len() as u64).sum::<u64>();
    let pwned: &[u8] = b"pwned";
    let abs_pwned = abs("abs-pwned");
    let victim = abs("victim");

    // (name, entries, chunks, refused)
    let cases: Vec<(&str, Vec<Entry>, Vec<DataChunk>, bool)> = vec![
        (
            "control: a hand-built payload that follows the rules runs",
            vec![
                dir_entry(""),
                dir_entry("d"),
                file_entry("d/f", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular("d/f", pwned), regular("run", run)],
                n(&[pwned, run]),
            )],
            false,
        ),
        (
            "control: a frame with a 1 MiB window runs",
            vec![dir_entry(""), file_entry("run", run)],
            vec![(
                run.len() as u64,
                frame_with_window(&tar_of(&[regular("run", run)]), 20),
            )],
            false,
        ),
        (
            "`..` components",
            vec![
                dir_entry(""),
                file_entry("../../../escape", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular("../../../escape", pwned), regular("run", run)],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "`..` inside a path",
            vec![
                dir_entry(""),
                dir_entry("d"),
                file_entry("d/../../../../escape", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular("d/../../../../escape", pwned), regular("run", run)],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "an absolute path",
            vec![
                dir_entry(""),
                file_entry(&abs_pwned, pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular(&abs_pwned, pwned), regular("run", run)],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a symlink pointing outside, then a file written through it",
            vec![
                dir_entry(""),
                link_entry("evil", &outside_path),
                file_entry("evil/pwned", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular("evil/pwned", pwned), regular("run", run)],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a relative symlink climbing out, then a file written through it",
            vec![
                dir_entry(""),
                link_entry("evil", "../../outside"),
                file_entry("evil/pwned", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular("evil/pwned", pwned), regular("run", run)],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a symlink pointing outside, then a directory made through it",
            vec![
                dir_entry(""),
                link_entry("evil", &outside_path),
                dir_entry("evil/made"),
                file_entry("run", run),
            ],
            vec![chunk(&[regular("run", run)], n(&[run]))],
            true,
        ),
        (
            "a hardlink member to a file outside",
            vec![
                dir_entry(""),
                file_entry("linked", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[
                    Member {
                        path: "linked",
                        kind: tar::EntryType::Link,
                        data: b"",
                        link: &victim,
                    },
                    regular("run", run),
                ],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a symlink member where the manifest has a file",
            vec![
                dir_entry(""),
                file_entry("linked", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[
                    Member {
                        path: "linked",
                        kind: tar::EntryType::Symlink,
                        data: b"",
                        link: &victim,
                    },
                    regular("run", run),
                ],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a hardlink entry to the root directory",
            vec![
                dir_entry(""),
                Entry {
                    path: b"hard".to_vec(),
                    mode: 0o644,
                    mtime: mtime(),
                    kind: EntryKind::Hardlink { target: 0 },
                },
                file_entry("run", run),
            ],
            vec![chunk(&[regular("run", run)], n(&[run]))],
            true,
        ),
        (
            "a hardlink entry to a later entry",
            vec![
                dir_entry(""),
                Entry {
                    path: b"hard".to_vec(),
                    mode: 0o644,
                    mtime: mtime(),
                    kind: EntryKind::Hardlink { target: 2 },
                },
                file_entry("run", run),
            ],
            vec![chunk(&[regular("run", run)], n(&[run]))],
            true,
        ),
        (
            "a duplicate file entry",
            vec![
                dir_entry(""),
                file_entry("dup", pwned),
                file_entry("dup", run),
                file_entry("run", run),
            ],
            vec![chunk(
                &[
                    regular("dup", pwned),
                    regular("dup", run),
                    regular("run", run),
                ],
                n(&[pwned, run, run]),
            )],
            true,
        ),
        (
            "a directory and a symlink under one name",
            vec![
                dir_entry(""),
                dir_entry("dup"),
                link_entry("dup", &outside_path),
                file_entry("run", run),
            ],
            vec![chunk(&[regular("run", run)], n(&[run]))],
            true,
        ),
        (
            "a manifest path the archive does not have",
            vec![
                dir_entry(""),
                file_entry("a", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular("b", pwned), regular("run", run)],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a member shorter than the manifest says",
            vec![
                dir_entry(""),
                file_entry("a", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular("a", b"pwne"), regular("run", run)],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a member longer than the manifest says",
            vec![
                dir_entry(""),
                file_entry("a", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[regular("a", b"pwned!"), regular("run", run)],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a member the manifest does not list",
            vec![
                dir_entry(""),
                file_entry("a", pwned),
                file_entry("run", run),
            ],
            vec![chunk(
                &[
                    regular("a", pwned),
                    regular("run", run),
                    regular("extra", pwned),
                ],
                n(&[pwned, run]),
            )],
            true,
        ),
        (
            "a manifest entry the archive lacks",
            vec![
                dir_entry(""),
                file_entry("a", pwned),
                file_entry("run", run),
            ],
            vec![chunk(&[regular("a", pwned)], n(&[pwned, run]))],
            true,
        ),
        (
            "a zstd frame asking for a 1 GiB window",
            vec![dir_entry(""), file_entry("run", run)],
            vec![(
                run.len() as u64,
                frame_with_window(&tar_of(&[regular("run", run)]), 30),
            )],
            true,
        ),
        (
            "a zstd frame asking for a 16 MiB window",
            vec![dir_entry(""), file_entry("run", run)],
            vec![(
                run.len() as u64,
                frame_with_window(&tar_of(&[regular("run", run)]), 24),
            )],
            true,
        ),
    ];

    let bin = sandbox.path("bin");
    fs::create_dir_all(&bin).unwrap();
    let caches = sandbox.path("caches");
    fs::create_dir_all(&caches).unwrap();
    let sandbox_root = sandbox.path("");
    let mut refused = 0;
    let mut built: Vec<(&str, Vec<u8>, bool)> = cases
        .into_iter()
        .map(|(name, entries, chunks, refused)| (name, hostile_bootstrap(entries, chunks), refused))
        .collect();
    // The manifest section as the packer stores it, one zstd frame, and frames that lie
    // about what they inflate to.
    let small = || {
        (
            vec![dir_entry(""), file_entry("run", run)],
            vec![chunk(&[regular("run", run)], n(&[run]))],
        )
    };
    let (entries, chunks) = small();
    built.push((
        "control: a zstd-compressed manifest runs",
        hostile_bootstrap_with(entries, chunks, |raw| {
            zstd::bulk::compress(&raw, 3).unwrap()
        }),
        false,
    ));
    let (entries, chunks) = small();
    built.push((
        "a manifest frame that states no size",
        hostile_bootstrap_with(entries, chunks, |raw| frame_with_window(&raw, 20)),
        true,
    ));
    let (entries, chunks) = small();
    built.push((
        "a manifest frame that claims 1 TiB",
        hostile_bootstrap_with(entries, chunks, |raw| {
            // Single segment, 8-byte content size: 2^40.
            let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
            frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
            let block = ((raw.len() as u32) << 3) | 1;
            frame.extend_from_slice(&block.to_le_bytes()[..3]);
            frame.extend_from_slice(&raw);
            frame
        }),
        true,
    ));
    let (entries, chunks) = small();
    built.push((
        "a manifest frame shorter than it claims",
        hostile_bootstrap_with(entries, chunks, |raw| {
            let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20];
            frame.push(raw.len() as u8 + 10);
            let block = ((raw.len() as u32) << 3) | 1;
            frame.extend_from_slice(&block.to_le_bytes()[..3]);
            frame.extend_from_slice(&raw);
            frame
        }),
        true,
    ));
    for (index, (name, bytes, expect_refused)) in built.into_iter().enumerate() {
        let bootstrap = bin.join(format!("hostile-{index}"));
        fs::write(&bootstrap, bytes).unwrap();
        make_executable(&bootstrap);
        for who in users() {
            let context = format!("{who:?}, {name}");
            let cache = sandbox.cache_dir(&format!("caches/{index}-{who:?}"), who);
            let before_outside = walk(&outside);
            let before_all: Vec<_> = names_under(&sandbox_root)
                .into_iter()
                .filter(|(p, _, _)| !p.starts_with(&cache))
                .collect();
            let output = start_fresh_file(&bootstrap, &cache, who);
            let after_all: Vec<_> = names_under(&sandbox_root)
                .into_iter()
                .filter(|(p, _, _)| !p.starts_with(&cache))
                .collect();
            assert!(
                walk(&outside) == before_outside,
                "{context}: the outside directory changed"
            );
            assert_eq!(
                before_all, after_all,
                "{context}: something changed outside the cache"
            );
            if !expect_refused {
                assert!(
                    output.status.success(),
                    "{context}: {}",
                    text(&output.stderr)
                );
                assert_eq!(text(&output.stdout), "hostile-control-ran\n", "{context}");
                // Built without the SHA-256 of its contents, which only `full` and
                // `coldpack verify` read: verify must name the chunk.
                let verified = coldpack().arg("verify").arg(&bootstrap).output().unwrap();
                let said = text(&verified.stderr);
                assert!(
                    !verified.status.success() && said.contains("chunks: chunk 0 ("),
                    "{context}: {said}"
                );
                continue;
            }
            let stderr = text(&output.stderr);
            assert!(!output.status.success(), "{context}: accepted: {stderr}");
            assert!(output.stdout.is_empty(), "{context}: something ran");
            assert_eq!(
                error_type(&output),
                "Runtime.PayloadCorrupt",
                "{context}: {stderr}"
            );
            assert!(
                !stderr.contains("SHA-256: the file is damaged"),
                "{context}: refused by a hash, not by the rules: {stderr}"
            );
            assert_eq!(
                names_in(&cache),
                vec!["coldpack-hostile.lock".to_string()],
                "{context}: left in the cache"
            );
            refused += 1;
        }
    }
    println!("hostile payloads: {refused} refusals, nothing written outside");
}

// ---------------------------------------------------------------------------------
// Upgrades
// ---------------------------------------------------------------------------------

#[test]
fn a_new_version_removes_the_old_one_and_nothing_else() {
    let sandbox = Sandbox::new();
    let (src1, src2) = (sandbox.path("v1"), sandbox.path("v2"));
    small_tree(&src1, "version one");
    small_tree(&src2, "version two");
    pack(
        &src1,
        "bin/entry",
        &sandbox.path("out1"),
        &["--name", "stale"],
    );
    pack(
        &src2,
        "bin/entry",
        &sandbox.path("out2"),
        &["--name", "stale"],
    );
    let (v1, v2) = (
        sandbox.path("out1/bootstrap"),
        sandbox.path("out2/bootstrap"),
    );
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        // Things coldpack did not create, some with names close to its own.
        write_file(&cache.join("unrelated.txt"), b"keep\n", 0o644);
        write_file(
            &cache.join("coldpack-other.0123456789abcdef/file"),
            b"another payload's tree\n",
            0o644,
        );
        write_file(&cache.join("coldpack-other.lock"), b"", 0o600);
        write_file(&cache.join("coldpack-stale"), b"no dot\n", 0o644);
        write_file(
            &cache.join("coldpack-stale-2.0123456789abcdef/f"),
            b"x",
            0o644,
        );
        write_file(&cache.join("coldpack-stalex.abc"), b"x", 0o644);
        symlink("/etc", cache.join("coldpack-stal.link")).unwrap();
        let foreign = walk(&cache);

        let output = start(&v1, &cache, who, &[], &[]);
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        let (tree1, marker1) = tree_and_marker(&cache, "stale");

        let output = start(&v2, &cache, who, &[], &[]);
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        assert_eq!(decision(&output), "extract", "{who:?}");
        assert!(
            !tree1.exists() && !marker1.exists(),
            "{who:?}: v1 is still there"
        );
        let (tree2, _) = tree_and_marker(&cache, "stale");
        assert!(compare_trees(&src2, &tree2).is_empty(), "{who:?}: v2 tree");
        assert_clean_cache(&cache, "stale", &format!("{who:?} after the upgrade"));
        let now = walk(&cache);
        for (path, seen) in foreign.iter().filter(|(path, _)| !path.is_empty()) {
            assert_eq!(
                now.get(path),
                Some(seen),
                "{who:?}: {:?} was touched",
                String::from_utf8_lossy(path)
            );
        }

        // A rollback is an upgrade too.
        let output = start(&v1, &cache, who, &[], &[]);
        assert_eq!(decision(&output), "extract", "{who:?}");
        assert!(!tree2.exists(), "{who:?}: v2 is still there after rollback");
        assert_clean_cache(&cache, "stale", &format!("{who:?} after the rollback"));
    }
}

// ---------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------

/// Runs `body` in a private mount namespace where `$CACHE` is a fresh tmpfs of `size`
/// bytes and `inodes` inodes that `who` owns, with `$RUN` starting the bootstrap as
/// `who`. `None` (with the reason printed) where no tmpfs can be mounted.
fn in_tmpfs(
    sandbox: &Sandbox,
    who: Who,
    bootstrap: &Path,
    size: u64,
    inodes: u64,
    body: &str,
) -> Option<Output> {
    let cache = sandbox.path(&format!("tmpfs-{who:?}"));
    fs::create_dir_all(&cache).unwrap();
    let owner = if who == Who::Nobody {
        ",uid=65534,gid=65534"
    } else {
        ""
    };
    let run = match who {
        Who::Me => format!("{}", bootstrap.display()),
        Who::Nobody => format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups -- {}",
            bootstrap.display()
        ),
    };
    let script = format!(
        "mount -t tmpfs -o size={size},nr_inodes={inodes},mode=0755{owner} tmpfs \"$CACHE\" || exit 99\n{body}"
    );
    let mut command = Command::new("unshare");
    if is_root() {
        command.arg("-m");
    } else {
        command.arg("-rm");
    }
    let output = command
        .args(["--propagation", "private", "sh", "-c", &script])
        .env("CACHE", &cache)
        .env("COLDPACK_CACHE_DIR", &cache)
        .env("RUN", run)
        .env_remove("COLDPACK_VERIFY")
        .env_remove("COLDPACK_LOG")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if output.status.code() == Some(99)
        || (output.status.code() == Some(1)
            && output.stdout.is_empty()
            && text(&output.stderr).contains("unshare"))
    {
        println!(
            "skipped: cannot mount a tmpfs here, as root or in a user namespace: {}",
            text(&output.stderr)
        );
        return None;
    }
    Some(output)
}

/// The lines after `--- listing` in a script's output: what was left on the tmpfs.
fn listing(output: &Output) -> Vec<String> {
    let stdout = text(&output.stdout);
    stdout
        .split("--- listing\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter(|n| *n != "." && *n != "..")
        .map(str::to_owned)
        .collect()
}

fn exit_code(output: &Output) -> Option<i32> {
    text(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("exit=").map(|c| c.parse().unwrap()))
}

fn assert_no_space_message(stderr: &str, context: &str) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("coldpack: error:"))
        .unwrap_or_else(|| panic!("{context}: no error line: {stderr}"));
    for needle in ["not enough space in", "needs", "free", "EphemeralStorage"] {
        assert!(
            line.contains(needle),
            "{context}: {line:?} lacks {needle:?}"
        );
    }
    assert!(
        stderr.contains("\"error_type\":\"Runtime.NoSpace\""),
        "{context}: {stderr}"
    );
}

#[test]
fn a_tree_that_cannot_fit_is_refused_before_writing() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    write_file(&src.join("lib/big"), &realistic_bytes(3 << 20, 5), 0o644);
    for i in 0..60 {
        write_file(&src.join(format!("many/{i}")), b"x", 0o644);
    }
    set_mtimes(&src);
    pack(&src, "bin/entry", &sandbox.path("out"), &["--name", "full"]);
    let bootstrap = sandbox.path("out/bootstrap");
    for who in users() {
        // Too few bytes; too few inodes; exactly the tree's inodes (the completion
        // marker needs one more, and must be counted before anything is written);
        // one more than that, which fits. The tmpfs root and the lock take two.
        let entries = Payload::open(&bootstrap)
            .unwrap()
            .manifest()
            .unwrap()
            .entries
            .len() as u64;
        for (size, inodes, what, fits) in [
            (1 << 20, 1000, "too few bytes", false),
            (16 << 20, 40, "too few inodes", false),
            (
                16 << 20,
                entries + 2,
                "inodes for the tree but not its marker",
                false,
            ),
            (
                16 << 20,
                entries + 3,
                "inodes for the tree and its marker",
                true,
            ),
        ] {
            let context = format!("{who:?}, {what}");
            let Some(output) = in_tmpfs(
                &sandbox,
                who,
                &bootstrap,
                size,
                inodes,
                "$RUN; echo \"exit=$?\"; echo '--- listing'; ls -a \"$CACHE\"",
            ) else {
                return;
            };
            let stderr = text(&output.stderr);
            if fits {
                assert_eq!(exit_code(&output), Some(0), "{context}: {stderr}");
                assert!(ran(&output), "{context}: the runtime did not run");
                continue;
            }
            assert_ne!(exit_code(&output), Some(0), "{context}: {stderr}");
            assert!(!ran(&output), "{context}: the runtime ran");
            assert_no_space_message(&stderr, &context);
            assert!(
                !stderr.contains("ran out of space"),
                "{context}: refused only after writing: {stderr}"
            );
            assert_eq!(listing(&output), vec!["coldpack-full.lock"], "{context}");
        }
    }
}

#[test]
fn running_out_of_space_midway_removes_staging() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    for i in 0..6 {
        write_file(
            &src.join(format!("lib/big{i}")),
            &realistic_bytes(4 << 20, i),
            0o644,
        );
    }
    set_mtimes(&src);
    pack(
        &src,
        "bin/entry",
        &sandbox.path("out"),
        &["--name", "midway"],
    );
    let bootstrap = sandbox.path("out/bootstrap");
    // Once staging appears (the space check has passed), stop the bootstrap, fill the
    // disk, and let it go on.
    let body = r#"
$RUN > "$CACHE.out" 2> "$CACHE.err" & pid=$!
while :; do
  for d in "$CACHE"/*.staging-*; do [ -d "$d" ] && break 2; done
  kill -0 $pid 2>/dev/null || break
done
kill -STOP $pid 2>/dev/null && echo stopped
dd if=/dev/zero of="$CACHE/filler" bs=65536 2>/dev/null
kill -CONT $pid 2>/dev/null
wait $pid; echo "exit=$?"
cat "$CACHE.out"; cat "$CACHE.err" >&2
echo '--- listing'; ls -a "$CACHE"
"#;
    for who in users() {
        let mut tries = 0;
        loop {
            tries += 1;
            let context = format!("{who:?}, try {tries}");
            let Some(output) = in_tmpfs(&sandbox, who, &bootstrap, 40 << 20, 10_000, body) else {
                return;
            };
            let stderr = text(&output.stderr);
            if !text(&output.stdout).contains("stopped") || exit_code(&output) == Some(0) {
                assert!(
                    tries < 5,
                    "{context}: never caught the extraction: {stderr}"
                );
                continue;
            }
            assert!(!ran(&output), "{context}: the runtime ran");
            assert!(stderr.contains("ran out of space"), "{context}: {stderr}");
            assert_no_space_message(&stderr, &context);
            assert_eq!(
                listing(&output),
                vec!["coldpack-midway.lock", "filler"],
                "{context}: staging or a tree was left"
            );
            break;
        }
    }
}

// ---------------------------------------------------------------------------------
// Concurrent starts
// ---------------------------------------------------------------------------------

#[test]
fn eight_starts_at_once_extract_once() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    pack(
        &src,
        "bin/entry",
        &sandbox.path("out"),
        &["--name", "eight"],
    );
    let bootstrap = sandbox.path("out/bootstrap");
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        let children: Vec<_> = (0..8)
            .map(|_| start_command(&bootstrap, &cache, who, &[]).spawn().unwrap())
            .collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let mut decisions: Vec<String> = outputs.iter().map(decision).collect();
        decisions.sort();
        for output in &outputs {
            assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
            assert!(ran(output), "{who:?}: a runtime did not run");
        }
        let mut expected = vec!["reuse".to_string(); 7];
        expected.insert(0, "extract".into());
        assert_eq!(decisions, expected, "{who:?}");
        let (tree, _) = tree_and_marker(&cache, "eight");
        assert!(compare_trees(&src, &tree).is_empty(), "{who:?}");
        assert_clean_cache(&cache, "eight", &format!("{who:?}"));
    }
}

// ---------------------------------------------------------------------------------
// Cache directory problems
// ---------------------------------------------------------------------------------

fn one_error_line(output: &Output, context: &str) -> String {
    assert!(!output.status.success(), "{context}: started");
    assert!(output.stdout.is_empty(), "{context}: something ran");
    let stderr = text(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("coldpack: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{context}: {stderr}");
    errors[0].to_owned()
}

#[test]
fn cache_dir_problems_give_a_clear_error_or_a_safe_recovery() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    pack(&src, "bin/entry", &sandbox.path("out"), &["--name", "cd"]);
    let bootstrap = sandbox.path("out/bootstrap");
    let id = &coldpack_bootstrap::payload::hex(&Payload::open(&bootstrap).unwrap().id)[..16];
    for who in users() {
        // Missing: created, as `mkdir -p` would (a handler's `rm -rf /tmp/*` removes it).
        let missing = sandbox
            .cache_dir(&format!("parent-{who:?}"), who)
            .join("a/b");
        let output = start(&bootstrap, &missing, who, &[], &[]);
        assert!(
            output.status.success(),
            "{who:?} missing: {}",
            text(&output.stderr)
        );
        assert!(compare_trees(&src, &tree_and_marker(&missing, "cd").0).is_empty());

        // A file.
        let file = sandbox.path(&format!("file-{who:?}"));
        write_file(&file, b"not a dir\n", 0o644);
        let line = one_error_line(&start(&bootstrap, &file, who, &[], &[]), "a file");
        assert!(line.contains("is not a directory"), "{who:?}: {line}");
        assert_eq!(fs::read(&file).unwrap(), b"not a dir\n");

        // Planted links where the tree, the marker, the pending marker and the lock go,
        // each pointing at something outside that must stay as it is.
        let outside = sandbox.cache_dir(&format!("outside-{who:?}"), who);
        write_file(&outside.join("victim"), b"original\n", 0o666);
        fs::create_dir_all(outside.join("dir")).unwrap();
        write_file(&outside.join("dir/inside"), b"inside\n", 0o666);
        for (planted, points_to) in [
            (format!("coldpack-cd.{id}"), "dir"),
            (format!("coldpack-cd.{id}.complete"), "victim"),
            (format!("coldpack-cd.{id}.complete.pending"), "victim"),
            ("coldpack-cd.lock".to_string(), "victim"),
        ] {
            let context = format!("{who:?}, a link planted at {planted}");
            let cache = sandbox.cache_dir(&format!("planted-{who:?}"), who);
            wipe(&cache);
            symlink(outside.join(points_to), cache.join(&planted)).unwrap();
            let before = walk(&outside);
            let output = start(&bootstrap, &cache, who, &[], &[]);
            assert!(
                walk(&outside) == before,
                "{context}: written through the link"
            );
            if output.status.success() {
                assert!(ran(&output), "{context}");
                let (tree, _) = tree_and_marker(&cache, "cd");
                assert!(compare_trees(&src, &tree).is_empty(), "{context}");
                assert_clean_cache(&cache, "cd", &context);
            } else {
                let line = one_error_line(&output, &context);
                assert!(line.contains(&planted), "{context}: {line}");
            }
        }

        // The same links planted after a good extraction, against the warm path.
        for (planted, points_to) in [
            (format!("coldpack-cd.{id}.complete"), "victim"),
            (format!("coldpack-cd.{id}"), "dir"),
        ] {
            let context = format!("{who:?}, a link planted over a good {planted}");
            let cache = sandbox.cache_dir(&format!("planted-warm-{who:?}"), who);
            wipe(&cache);
            assert!(start(&bootstrap, &cache, who, &[], &[]).status.success());
            coldpack_bootstrap::cache::remove_tree(&cache.join(&planted)).unwrap();
            symlink(outside.join(points_to), cache.join(&planted)).unwrap();
            let before = walk(&outside);
            let output = start(&bootstrap, &cache, who, &[], &[]);
            assert!(
                walk(&outside) == before,
                "{context}: written through the link"
            );
            assert!(
                output.status.success(),
                "{context}: {}",
                text(&output.stderr)
            );
            assert_eq!(decision(&output), "extract", "{context}");
            assert_clean_cache(&cache, "cd", &context);
        }

        // A FIFO where the marker goes must not hang the start.
        let cache = sandbox.cache_dir(&format!("fifo-{who:?}"), who);
        let fifo = cache.join(format!("coldpack-cd.{id}.complete"));
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        if who == Who::Nobody {
            std::os::unix::fs::chown(&fifo, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let mut child = start_command(&bootstrap, &cache, who, &[]).spawn().unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let hung = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        assert!(!hung, "{who:?}: a FIFO at the marker hangs the start");
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        assert_clean_cache(&cache, "cd", &format!("{who:?}, FIFO marker"));
    }

    // Not writable: only an unprivileged user can be refused (root writes anywhere).
    if is_root() {
        let cache = sandbox.path("root-owned");
        fs::create_dir_all(&cache).unwrap();
        let output = start(&bootstrap, &cache, Who::Nobody, &[], &[]);
        let line = one_error_line(&output, "a read-only cache dir");
        assert!(line.contains("Permission denied"), "{line}");
        assert!(line.contains(&cache.display().to_string()), "{line}");
        assert!(
            text(&output.stderr).contains("Runtime.CacheDirUnusable"),
            "{}",
            text(&output.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------
// Leftovers of a start with the same pid
// ---------------------------------------------------------------------------------

/// Lambda starts the bootstrap with the same pid at every init of a sandbox, so the
/// leftovers of a killed start carry the pid of the next one. Here the bootstrap runs
/// as pid 1 of a new pid namespace, over leftovers named with pid 1: a half-deleted
/// trash tree, a staging tree, unmarked copies of older versions.
#[test]
fn leftovers_named_with_the_same_pid_are_cleaned_up() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    pack(&src, "bin/entry", &sandbox.path("out"), &["--name", "pid"]);
    let bootstrap = sandbox.path("out/bootstrap");
    let id = &coldpack_bootstrap::payload::hex(&Payload::open(&bootstrap).unwrap().id)[..16];
    for who in users() {
        for round in 0..4 {
            let context = format!("{who:?}, round {round}");
            let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
            wipe(&cache);
            let mut planted = vec![
                format!("coldpack-pid.{id}.staging-1"),
                format!("coldpack-pid.{id}"),
            ];
            for n in 0..3 {
                planted.push(format!("coldpack-pid.trash-1-{n}"));
                planted.push(format!("coldpack-pid.{:016x}", 0xfeed + n + round * 10));
            }
            for name in &planted {
                write_file(&cache.join(name).join("ro/file"), b"leftover\n", 0o444);
                fs::set_permissions(
                    cache.join(name).join("ro"),
                    fs::Permissions::from_mode(0o555),
                )
                .unwrap();
            }
            if who == Who::Nobody {
                assert!(Command::new("chown")
                    .args(["-R", "65534:65534"])
                    .arg(&cache)
                    .status()
                    .unwrap()
                    .success());
            }
            let mut command = Command::new("unshare");
            if !is_root() {
                command.arg("-r");
            }
            command.args(["--pid", "--fork"]);
            if who == Who::Nobody {
                command.args([
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--",
                ]);
            }
            let output = command
                .arg(&bootstrap)
                .env("COLDPACK_CACHE_DIR", &cache)
                .env_remove("COLDPACK_VERIFY")
                .env_remove("COLDPACK_LOG")
                .env_remove("AWS_LAMBDA_RUNTIME_API")
                .output()
                .unwrap();
            if !output.status.success() && text(&output.stderr).starts_with("unshare:") {
                println!("skipped: no pid namespace here: {}", text(&output.stderr));
                return;
            }
            assert!(
                output.status.success(),
                "{context}: {}",
                text(&output.stderr)
            );
            assert!(ran(&output), "{context}");
            let (tree, _) = tree_and_marker(&cache, "pid");
            assert!(compare_trees(&src, &tree).is_empty(), "{context}");
            assert_clean_cache(&cache, "pid", &context);
        }
    }
}

/// A start killed while deleting its trash leaves a marked tree beside that trash, and
/// the `.cleanup` flag it raised before; the next start reuses the tree and deletes
/// the trash (a kill landing there is rare, so the random kills above cannot be relied
/// on to show it every run).
#[test]
fn trash_left_by_a_killed_start_is_removed_by_the_next_warm_start() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    pack(&src, "bin/entry", &sandbox.path("out"), &["--name", "bin"]);
    let bootstrap = sandbox.path("out/bootstrap");
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        assert!(start(&bootstrap, &cache, who, &[], &[]).status.success());
        let trash = cache.join("coldpack-bin.trash-4242-0");
        write_file(&trash.join("ro/file"), b"old tree\n", 0o444);
        fs::set_permissions(trash.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        write_file(&cache.join("coldpack-bin.cleanup"), b"", 0o600);
        if who == Who::Nobody {
            assert!(Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(&cache)
                .status()
                .unwrap()
                .success());
        }
        let output = start(&bootstrap, &cache, who, &[], &[]);
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        assert_eq!(decision(&output), "reuse", "{who:?}");
        assert_clean_cache(&cache, "bin", &format!("{who:?}"));
    }
}
