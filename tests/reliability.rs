//! Trust nothing in /tmp: the bootstrap against everything a reused Lambda sandbox and
//! a hostile file can throw at it. SIGKILLs at random instants of a cold start, and the
//! start after them continuing the killed one's work; a copy tampered with in every way
//! the function's own code could; payloads corrupted at random; payloads laid out by
//! hand, every hash correct, to escape the cache directory; an upgrade; a full disk and
//! the exact boundary of the space check; eight starts at once; a stopped holder of the
//! lock; two payloads of one name sharing a cache directory; a tree swapped for one
//! with the same inode number; a cache directory that is missing, a file, read-only or
//! full of planted links. Each runs as the user running the tests and, when that is
//! root, as `nobody`, the kind of user Lambda runs the bootstrap as. The last tests
//! are the packer's share of issue 13: the entrypoint's links, `-o` inside the packed
//! directory, and trees their owner cannot read.
//!
//! Every random choice comes from one seed, printed at the start of the test that uses
//! it: `COLDPACK_SEED=<seed> cargo test -p coldpack --test reliability <test>` replays it.
//! `COLDPACK_KILLS` and `COLDPACK_CORRUPTIONS` raise the counts for a longer soak.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use coldpack_bootstrap::chunk;
use coldpack_bootstrap::launch::Launch;
use coldpack_bootstrap::manifest::{self, Chunk, Entry, EntryKind, Manifest, Mtime};
use coldpack_bootstrap::payload::{
    deflate_section, hex, sha256, Assembly, Payload, Sections, FLAG_DIRECT, HEADER_LEN,
};
use coldpack_bootstrap::space::{Need, BLOCK};
use coldpack_bootstrap::task::{self, TaskEntry, TaskIndex};
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

/// `pack` with nothing kept in the deployment: every test here is about the cache
/// directory, which a tree kept whole in the deployment never touches.
fn pack_for_tmp(src: &Path, out: &Path, name: &str) -> Output {
    pack(
        src,
        "bin/entry",
        out,
        &["--name", name, "--task-budget", "0"],
    )
}

/// The first 16 hex digits of a packed bootstrap's identity: what names its tree.
fn id16(bootstrap: &Path) -> String {
    hex(&Payload::open(bootstrap).unwrap().id)[..16].to_owned()
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

/// Sends `signal` (`STOP`, `CONT`, ...) to `pid`.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A start running in the background, continued and killed when dropped, so that a
/// failed assertion leaves nothing stopped or running.
struct Background(Option<Child>);

impl Background {
    fn spawn(mut command: Command) -> Background {
        Background(Some(command.spawn().expect("start bootstrap")))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("still running")
    }

    fn pid(&mut self) -> u32 {
        self.child().id()
    }

    fn finished(&mut self) -> bool {
        self.child().try_wait().unwrap().is_some()
    }

    /// SIGKILLs it; how it ended.
    fn kill(mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("still running");
        let _ = child.kill();
        child.wait().unwrap()
    }

    /// Waits for the end, at most `limit`; `None` if it had to be killed.
    fn output_within(mut self, limit: Duration) -> Option<Output> {
        let started = Instant::now();
        while !self.finished() {
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(self.0.take()?.wait_with_output().unwrap())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// Payloads laid out here, by the format's own encoders
// ---------------------------------------------------------------------------------

/// A chunk as a payload stores it: the bytes of the data stream the manifest says it
/// carries, its frame, and the SHA-256 of those contents the manifest records.
struct Stored {
    data_len: u64,
    frame: Vec<u8>,
    data_sha256: [u8; 32],
}

fn stored(data: &[u8], frame: Vec<u8>) -> Stored {
    Stored {
        data_len: data.len() as u64,
        frame,
        data_sha256: sha256(data),
    }
}

/// `data` cut into `count` chunks of about equal length, each encoded by the format's
/// own `chunk::encode`.
fn stored_chunks(data: &[u8], count: usize, level: i32) -> Vec<Stored> {
    (0..count)
        .map(|i| &data[data.len() * i / count..data.len() * (i + 1) / count])
        .filter(|piece| !piece.is_empty())
        .map(|piece| stored(piece, chunk::encode(piece, level).unwrap()))
        .collect()
}

/// The parts of a payload, before `Assembly` lays them out.
struct Parts<'a> {
    launch: &'a Launch,
    entries: &'a [Entry],
    chunks: &'a [Stored],
    flags: u32,
    task: &'a TaskIndex,
}

/// A packed bootstrap (the stock bootstrap, then a payload with every hash correct,
/// laid out by `Assembly`) and its identity. The manifest is encoded by
/// `manifest::encode` and stored as its section by `store`: `deflate_section`, as the
/// packer does, or a frame that lies.
fn assemble(parts: &Parts, store: &dyn Fn(Vec<u8>) -> Vec<u8>) -> (Vec<u8>, [u8; 32]) {
    let task_z = deflate_section(&parts.task.encode(), 3).unwrap();
    let table: Vec<Chunk> = parts
        .chunks
        .iter()
        .map(|c| Chunk {
            data_len: c.data_len,
            compressed_len: c.frame.len() as u64,
            sha256: sha256(&c.frame),
            data_sha256: c.data_sha256,
        })
        .collect();
    let manifest = store(manifest::encode(parts.entries, &table, &sha256(&task_z)));
    let launch = parts.launch.encode();
    let frames: Vec<Vec<u8>> = parts.chunks.iter().map(|c| c.frame.clone()).collect();
    let assembly = Assembly::new(
        coldpack::STOCK_BOOTSTRAP,
        Sections {
            flags: parts.flags,
            launch: &launch,
            manifest: &manifest,
            task_index: &task_z,
            chunks: &frames,
        },
    );
    (assembly.to_vec(), assembly.id)
}

fn deflated(raw: Vec<u8>) -> Vec<u8> {
    deflate_section(&raw, 3).unwrap()
}

/// The packed bootstrap at `bootstrap` (packed from `src`) laid out again with its
/// data stream cut into `count` chunks: the packer cuts a tree under 192 MiB into at
/// most six, and a kill after half the chunks needs many more.
fn rechunked(bootstrap: &Path, src: &Path, count: usize) -> Vec<u8> {
    let payload = Payload::open(bootstrap).unwrap();
    let manifest = payload.manifest().unwrap();
    let entries = manifest.entries();
    let data: Vec<u8> = entries
        .iter()
        .filter(|e| e.file_size() > 0)
        .flat_map(|e| fs::read(src.join(OsStr::from_bytes(&e.path))).unwrap())
        .collect();
    let parts = Parts {
        launch: &payload.launch().unwrap(),
        entries: &entries,
        chunks: &stored_chunks(&data, count, 1),
        flags: 0,
        task: &payload.task_index(&manifest).unwrap(),
    };
    assemble(&parts, &deflated).0
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
    pack_for_tmp(&src, &out, "killed");
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
// Resuming a killed start (issue 13.1)
// ---------------------------------------------------------------------------------

/// Chunks of the resume fixture: many, so that a kill lands between any two.
const RESUME_CHUNKS: usize = 32;

/// A tree that takes a while to extract: 240 directories of 5 small files (whose
/// directories all get their final modes at closing), 8 MiB of larger files, and the
/// awkward cases (a read-only directory, links, a hardlink, an empty file).
fn many_files_tree(root: &Path) {
    for d in 0..240u64 {
        for f in 0..5u64 {
            let seed = d * 10 + f;
            let len = 300 + (seed * 7919 % 3000) as usize;
            write_file(
                &root.join(format!("lib/d{d:03}/f{f}")),
                &realistic_bytes(len, seed),
                0o644,
            );
        }
    }
    for i in 0..8 {
        write_file(
            &root.join(format!("share/big{i}")),
            &realistic_bytes(1 << 20, 1000 + i),
            0o644,
        );
    }
    write_file(&root.join("bin/entry"), ENTRYPOINT_SCRIPT.as_bytes(), 0o755);
    symlink("entry", root.join("bin/again")).unwrap();
    fs::hard_link(root.join("share/big0"), root.join("share/big0.hard")).unwrap();
    write_file(&root.join("share/empty"), b"", 0o600);
    write_file(&root.join("ro/file"), b"read only\n", 0o444);
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    set_mtimes(root);
}

/// `many_files_tree` packed and laid out again in [`RESUME_CHUNKS`] chunks at level 1.
struct ResumeFixture {
    src: PathBuf,
    bootstrap: PathBuf,
    manifest: Manifest,
    id16: String,
}

fn resume_fixture(sandbox: &Sandbox, name: &str) -> ResumeFixture {
    let src = sandbox.path("runtime");
    many_files_tree(&src);
    let out = sandbox.path("out");
    pack_for_tmp(&src, &out, name);
    let bootstrap = sandbox.path("bootstrap");
    write_program(
        &bootstrap,
        &rechunked(&out.join("bootstrap"), &src, RESUME_CHUNKS),
    );
    let manifest = Payload::open(&bootstrap).unwrap().manifest().unwrap();
    assert_eq!(manifest.chunks.len(), RESUME_CHUNKS);
    ResumeFixture {
        src,
        id16: id16(&bootstrap),
        bootstrap,
        manifest,
    }
}

/// What a progress record says: the chunks written, and whether closing had begun.
#[derive(Debug, Default)]
struct Record {
    chunks: BTreeSet<usize>,
    closing: bool,
}

fn read_record(path: &Path) -> Record {
    let text = fs::read_to_string(path).unwrap_or_default();
    Record {
        chunks: text
            .lines()
            .filter_map(|l| l.strip_prefix("chunk ")?.parse().ok())
            .collect(),
        closing: text.lines().any(|l| l == "closing"),
    }
}

/// Starts `command` (a cold start) and SIGKILLs it as soon as its progress record at
/// `record` satisfies `ready`, after `extra` more. What the record then says, or
/// `None` when the start got past its staging first (it finished, or was killed
/// after the rename, where nothing is left to continue).
fn kill_when(
    command: Command,
    record: &Path,
    staging: &Path,
    ready: impl Fn(&Record) -> bool,
    extra: Duration,
) -> Option<Record> {
    let mut start = Background::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&read_record(record)) {
        if start.finished() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "the start neither wrote nor ended"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    std::thread::sleep(extra);
    let status = start.kill();
    (status.signal() == Some(9) && staging.is_dir()).then(|| read_record(record))
}

/// The inode of every file that the recorded chunks wrote whole, by path in the tree:
/// a start that continues the work must leave them as they are.
fn written_files(manifest: &Manifest, record: &Record, staging: &Path) -> Vec<(PathBuf, u64)> {
    let plan = manifest.plan();
    record
        .chunks
        .iter()
        .flat_map(|&chunk| plan.chunk(chunk).iter().filter(|p| p.whole))
        .map(|piece| {
            let path = PathBuf::from(OsStr::from_bytes(&manifest.path(piece.entry)));
            let inode = fs::symlink_metadata(staging.join(&path)).unwrap().ino();
            (path, inode)
        })
        .collect()
}

/// Issue 13.1, resume: a cold start SIGKILLed after at least half its chunks (at a
/// random point from there on), or while it gives directories their final modes, is
/// continued by the next start, which keeps every chunk the killed one recorded (its
/// `"resumed"` count, and the recorded files' inodes, unchanged) and ends with the same
/// tree as a start that was never killed. Without resuming, the count is 0 and every
/// file is written again.
#[test]
fn killed_cold_starts_are_resumed_where_they_stopped() {
    let mut rng = Rng::from_env("killed_cold_starts_are_resumed_where_they_stopped");
    let sandbox = Sandbox::new();
    let fixture = resume_fixture(&sandbox, "resume");
    let want = walk(&fixture.src);
    let half = RESUME_CHUNKS / 2;
    for who in users() {
        let (mut after_half, mut while_closing, mut attempts) = (0, 0, 0);
        while after_half < 4 || (while_closing < 1 && attempts < 60) {
            attempts += 1;
            assert!(attempts < 80, "{who:?}: kills keep missing");
            // A fresh cache directory each time: deleting a tree costs more than
            // leaving it for the sandbox to remove at the end.
            let cache = sandbox.cache_dir(&format!("cache-{who:?}-{attempts}"), who);
            let named =
                |suffix: &str| cache.join(format!("coldpack-resume.{}{suffix}", fixture.id16));
            let (record_path, staging) = (named(".progress"), named(".staging"));
            let closing = after_half >= 4;
            let at = half + rng.below((RESUME_CHUNKS - half) as u64) as usize;
            let extra = Duration::from_micros(if closing { 0 } else { rng.below(3000) });
            let ready = |r: &Record| {
                if closing {
                    r.closing
                } else {
                    r.chunks.len() >= at
                }
            };
            let command = start_command(&fixture.bootstrap, &cache, who, &[]);
            let Some(record) = kill_when(command, &record_path, &staging, ready, extra) else {
                continue;
            };
            if closing && !record.closing {
                continue;
            }
            let context = format!(
                "{who:?}, killed with {} chunks recorded{}",
                record.chunks.len(),
                if record.closing { ", closing" } else { "" }
            );
            assert!(record.chunks.len() >= at, "{context}: fewer than {at}");
            let written = written_files(&fixture.manifest, &record, &staging);
            let output = start(&fixture.bootstrap, &cache, who, &[], &[]);
            assert!(
                output.status.success(),
                "{context}: {}",
                text(&output.stderr)
            );
            assert!(ran(&output), "{context}: the runtime did not run");
            let resumed: usize = log_field(&output.stderr, "resumed")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{context}: no resumed count: {}", text(&output.stderr)));
            assert_eq!(
                resumed,
                record.chunks.len(),
                "{context}: chunks kept: {}",
                text(&output.stderr)
            );
            let (tree, _) = tree_and_marker(&cache, "resume");
            for (path, inode) in &written {
                let now = fs::symlink_metadata(tree.join(path)).unwrap().ino();
                assert_eq!(now, *inode, "{context}: {path:?} was written again");
            }
            let differences = compare_walked(&want, &tree);
            assert!(
                differences.is_empty(),
                "{context}: the tree differs:\n{}",
                differences.join("\n")
            );
            assert_clean_cache(&cache, "resume", &context);
            if closing {
                while_closing += 1;
            } else {
                after_half += 1;
            }
        }
        println!(
            "{who:?}: {after_half} kills after half the chunks, {while_closing} while closing, {attempts} attempts"
        );
        assert!(
            while_closing > 0,
            "{who:?}: no kill landed while directories were closed"
        );
    }
}

/// A killed start's staging is continued, but not trusted: a file that several chunks
/// write, found replaced by a FIFO (whose open for writing would wait forever for a
/// reader) or by a second name of a file outside staging (which the start would write
/// through), makes the start fail at once with a line naming the file, writing nothing
/// outside staging, and leave nothing behind, so the next start extracts afresh.
#[test]
fn a_resumed_start_refuses_a_shared_file_replaced_in_staging() {
    let sandbox = Sandbox::new();
    let fixture = resume_fixture(&sandbox, "planted");
    let want = walk(&fixture.src);
    let plan = fixture.manifest.plan();
    let split = plan.split_files();
    for who in users() {
        for plant in ["fifo", "hardlink"] {
            let context = format!("{who:?}, {plant}");
            let cache = sandbox.cache_dir(&format!("cache-{who:?}-{plant}"), who);
            let named =
                |suffix: &str| cache.join(format!("coldpack-planted.{}{suffix}", fixture.id16));
            let (record_path, staging) = (named(".progress"), named(".staging"));
            let command = start_command(&fixture.bootstrap, &cache, who, &[]);
            let ready = |r: &Record| r.chunks.len() >= RESUME_CHUNKS / 2;
            let Some(record) = kill_when(command, &record_path, &staging, ready, Duration::ZERO)
            else {
                panic!("{context}: the start finished before it could be killed");
            };
            // A split file that a chunk still to be written has a piece of, already
            // created by the killed start.
            let target = (0..RESUME_CHUNKS)
                .filter(|chunk| !record.chunks.contains(chunk))
                .flat_map(|chunk| plan.chunk(chunk).iter())
                .map(|piece| piece.entry)
                .filter(|entry| split.contains(entry))
                .map(|entry| PathBuf::from(OsStr::from_bytes(&fixture.manifest.path(entry))))
                .find(|path| staging.join(path).is_file())
                .unwrap_or_else(|| panic!("{context}: no split file left half-written"));
            let file = staging.join(&target);
            // Outside staging, in the cache directory, where the user may write.
            let victim = cache.join("victim");
            let script = match plant {
                "fifo" => format!("rm {0} && mkfifo {0}", file.display()),
                _ => format!(
                    "printf 'not coldpack\\n' > {1} && rm {0} && ln {1} {0}",
                    file.display(),
                    victim.display()
                ),
            };
            shell_as(who, &script);

            let output = Background::spawn(start_command(&fixture.bootstrap, &cache, who, &[]))
                .output_within(Duration::from_secs(20))
                .unwrap_or_else(|| panic!("{context}: the start still waits after 20 s"));
            let line = one_error_line(&output, &context);
            assert!(
                line.contains("is not a plain file with one name"),
                "{context}: {line}"
            );
            assert!(
                line.contains(&target.display().to_string()),
                "{context}: {line}"
            );
            assert!(!ran(&output), "{context}: the runtime ran");
            if plant == "hardlink" {
                assert_eq!(fs::read(&victim).unwrap(), b"not coldpack\n", "{context}");
            }
            assert!(!staging.exists(), "{context}: staging is left");
            assert!(
                !record_path.exists(),
                "{context}: the progress record is left"
            );

            let output = start(&fixture.bootstrap, &cache, who, &[], &[]);
            assert!(
                output.status.success(),
                "{context}: {}",
                text(&output.stderr)
            );
            assert_eq!(
                log_field(&output.stderr, "resumed").as_deref(),
                Some("0"),
                "{context}"
            );
            let (tree, _) = tree_and_marker(&cache, "planted");
            let differences = compare_walked(&want, &tree);
            assert!(
                differences.is_empty(),
                "{context}: {}",
                differences.join("\n")
            );
            assert_clean_cache(&cache, "planted", &context);
        }
    }
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

/// `marker` sees what changes the root directory itself (its ctime is in the marker,
/// and adding, removing or renaming an entry of it, or restoring its mtime, sets that
/// ctime); `stat` sees every change to any entry through the same ctime watermark,
/// even when size and mtime are put back; `full` also reads the contents.
const TAMPERS: &[Tamper] = &[
    Tamper {
        name: "file deleted",
        script: "rm {root}/data/a.txt",
        restore: &["data"],
        caught: [false, true, true],
    },
    Tamper {
        name: "file added",
        script: "printf new > {root}/data/new.txt",
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
        name: "mode changed and put back",
        script: "chmod 600 {root}/data/a.txt && chmod 644 {root}/data/a.txt",
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
        caught: [true, true, true],
    },
    Tamper {
        name: "same-size content change",
        script: "printf ALPHA > {root}/data/a.txt",
        restore: &["data/a.txt"],
        caught: [false, true, true],
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
    pack_for_tmp(&src, &out, "tamper");
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
                // A change within the same tick of the kernel's clock as the
                // publication is not seen by the ctime watermark (docs/design.md):
                // the function's code runs well after it, and so does the tamper.
                std::thread::sleep(Duration::from_millis(20));
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

/// Every damage is refused before anything runs, with a `Runtime.Payload*` error and
/// nothing left in the cache, except one: the task index, which only the tools read
/// (a start never needs it), so damage there leaves the start alone and is what
/// `coldpack verify` reports.
#[test]
fn corrupted_payloads_are_all_refused() {
    let mut rng = Rng::from_env("corrupted_payloads_are_all_refused");
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    // Big enough that the payload has several chunks.
    small_tree(&src, "v1");
    write_file(&src.join("lib/big"), &realistic_bytes(9 << 20, 3), 0o644);
    let out = sandbox.path("out");
    pack_for_tmp(&src, &out, "corrupt");
    let original = fs::read(out.join("bootstrap")).unwrap();
    let header = Payload::open(&out.join("bootstrap")).unwrap();
    let stock = header.offset as usize;
    let manifest_end =
        stock + HEADER_LEN + (header.header.launch_len + header.header.manifest_len) as usize;
    let task_index = manifest_end..manifest_end + header.header.task_index_len as usize;
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
                8..=11 => flip(&mut rng, stock, manifest_end, "header, launch or manifest"),
                12 => flip(&mut rng, task_index.start, task_index.end, "task index"),
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
        write_program(&path, &damage.apply(&original));
        let cache = sandbox.cache_dir(&format!("caches/{i}"), who);
        let output = start(&path, &cache, who, &[], &[]);
        let in_task_index = matches!(damage, Damage::Flip { at, .. } if task_index.contains(at));
        let verified = in_task_index.then(|| coldpack().arg("verify").arg(&path).output().unwrap());
        fs::remove_file(&path).unwrap();
        let left: Vec<String> = names_in(&cache)
            .into_iter()
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        wipe(&cache);
        let kind = error_type(&output);
        let context = format!("{who:?}, {damage:?}");
        if let Some(verified) = verified {
            return if !output.status.success() || !ran(&output) {
                Err(format!(
                    "{context}: did not start: {}",
                    text(&output.stderr)
                ))
            } else if verified.status.success() {
                Err(format!("{context}: coldpack verify saw nothing"))
            } else {
                Ok("task index -> started, refused by coldpack verify".to_owned())
            };
        }
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
        "corrupted payloads: {} of {count} handled {refused:?}",
        count - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------
// Hostile payloads, laid out by hand with every hash correct
// ---------------------------------------------------------------------------------

const HOSTILE_ENTRY: &[u8] = b"#!/bin/sh\necho hostile-control-ran\n";
const HOSTILE_MTIME: Mtime = Mtime {
    sec: 1_600_000_000,
    nsec: 0,
};

/// A manifest's entries, added one at a time in manifest order, with each file's
/// contents appended to the data stream. Nothing is checked: that is the point.
#[derive(Clone, Default)]
struct Listing {
    entries: Vec<Entry>,
    data: Vec<u8>,
}

impl Listing {
    /// The root directory alone.
    fn root() -> Listing {
        Listing::default().dir(0, "")
    }

    /// An entry named `name` in directory `parent`: its path is the parent's path and
    /// the name, when the parent is listed before it.
    fn add(mut self, parent: u32, name: impl AsRef<[u8]>, mode: u32, kind: EntryKind) -> Self {
        let name = name.as_ref();
        let path = match self.entries.get(parent as usize) {
            Some(dir) if !dir.path.is_empty() => [&dir.path[..], b"/", name].concat(),
            _ => name.to_vec(),
        };
        self.entries.push(Entry {
            path,
            parent,
            mode,
            mtime: HOSTILE_MTIME,
            kind,
        });
        self
    }

    fn dir(self, parent: u32, name: impl AsRef<[u8]>) -> Self {
        self.add(parent, name, 0o755, EntryKind::Dir)
    }

    fn file(mut self, parent: u32, name: impl AsRef<[u8]>, contents: &[u8]) -> Self {
        self.data.extend_from_slice(contents);
        let size = contents.len() as u64;
        self.add(parent, name, 0o755, EntryKind::File { size })
    }

    /// `run` in the root, the entrypoint: where it goes among the root's entries
    /// depends on their names.
    fn run(self) -> Self {
        self.file(0, "run", HOSTILE_ENTRY)
    }

    fn link(self, parent: u32, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let target = target.as_ref().to_vec();
        self.add(parent, name, 0o777, EntryKind::Symlink { target })
    }

    fn hardlink(self, parent: u32, name: impl AsRef<[u8]>, target: u32) -> Self {
        self.add(parent, name, 0o755, EntryKind::Hardlink { target })
    }

    fn kept(self, parent: u32, name: impl AsRef<[u8]>, dir: bool) -> Self {
        self.add(parent, name, 0o755, EntryKind::Task { dir })
    }

    /// The last entry, with `change` applied.
    fn with(mut self, change: impl FnOnce(&mut Entry)) -> Self {
        change(self.entries.last_mut().unwrap());
        self
    }

    /// The last entry, with `mode`.
    fn mode(self, mode: u32) -> Self {
        self.with(|entry| entry.mode = mode)
    }
}

/// One hand-built payload and what the bootstrap must make of it.
struct Hostile {
    what: String,
    listing: Listing,
    /// The chunks, when not the listing's data stream in one.
    chunks: Option<Vec<Stored>>,
    flags: u32,
    store: Box<dyn Fn(Vec<u8>) -> Vec<u8>>,
    /// Files made in the task part beside the bootstrap (none: no task part).
    task_part: &'static [&'static str],
    /// `None`: it runs; otherwise the error type it is refused with, and what the
    /// error line says: the rule that refused it.
    refused: Option<(&'static str, &'static str)>,
}

fn refused(what: impl Into<String>, because: &'static str, listing: Listing) -> Hostile {
    Hostile {
        what: what.into(),
        listing,
        chunks: None,
        flags: 0,
        store: Box::new(deflated),
        task_part: &[],
        refused: Some(("Runtime.PayloadCorrupt", because)),
    }
}

fn runs(what: &str, listing: Listing) -> Hostile {
    Hostile {
        refused: None,
        ..refused(what, "", listing)
    }
}

impl Hostile {
    fn chunks(self, chunks: Vec<Stored>) -> Self {
        Hostile {
            chunks: Some(chunks),
            ..self
        }
    }

    fn flags(self, flags: u32) -> Self {
        Hostile { flags, ..self }
    }

    fn store(self, store: impl Fn(Vec<u8>) -> Vec<u8> + 'static) -> Self {
        Hostile {
            store: Box::new(store),
            ..self
        }
    }

    /// A name that `manifest::encode` cannot write, because it takes an entry's last
    /// component: the listing names it `from`, and the encoded manifest has `to`
    /// (of the same length) in its place.
    fn renamed(self, from: &str, to: &str) -> Self {
        assert_eq!(from.len(), to.len());
        let (from, to) = (from.as_bytes().to_vec(), to.as_bytes().to_vec());
        self.store(move |mut raw| {
            let at: Vec<usize> = (0..raw.len())
                .filter(|&i| raw[i..].starts_with(&from))
                .collect();
            assert_eq!(at.len(), 1, "{from:?} is in the manifest once");
            raw[at[0]..at[0] + to.len()].copy_from_slice(&to);
            deflated(raw)
        })
    }

    /// The root entry, changed after the listing is built.
    fn with_root(mut self, change: impl FnOnce(&mut Entry)) -> Self {
        change(&mut self.listing.entries[0]);
        self
    }

    fn task_part(self, files: &'static [&'static str]) -> Self {
        Hostile {
            task_part: files,
            ..self
        }
    }

    fn refused_as(self, error_type: &'static str, because: &'static str) -> Self {
        Hostile {
            refused: Some((error_type, because)),
            ..self
        }
    }

    /// The packed bootstrap, and the task part it expects to find beside it in `bin`.
    fn build(&self, bin: &Path) -> (Vec<u8>, PathBuf) {
        let launch = Launch {
            name: "hostile".into(),
            entrypoint: b"run".to_vec(),
            args: vec![],
            env: vec![],
        };
        let task = TaskIndex {
            entries: self
                .task_part
                .iter()
                .map(|name| TaskEntry {
                    path: name.as_bytes().to_vec(),
                    dir: false,
                    mode: 0o755,
                    mtime: HOSTILE_MTIME,
                    size: HOSTILE_ENTRY.len() as u64,
                    sha256: sha256(HOSTILE_ENTRY),
                })
                .collect(),
        };
        let one = stored_chunks(&self.listing.data, 1, 3);
        let parts = Parts {
            launch: &launch,
            entries: &self.listing.entries,
            chunks: self.chunks.as_deref().unwrap_or(&one),
            flags: self.flags,
            task: &task,
        };
        let (bytes, id) = assemble(&parts, &*self.store);
        (bytes, bin.join(task::dir_name("hostile", &id)))
    }
}

/// A zstd frame holding `content` in one raw block, whose header declares a window of
/// `2^window_log` bytes: what a decoder must allocate to read it.
fn frame_with_window(content: &[u8], window_log: u8) -> Vec<u8> {
    assert!(content.len() < 128 * 1024);
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (window_log - 10) << 3];
    frame.extend_from_slice(&raw_block(content));
    frame
}

/// A zstd frame holding `content` in one raw block, whose header claims `size` bytes.
fn frame_claiming(content: &[u8], size: u64) -> Vec<u8> {
    // Single segment, 8-byte content size.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
    frame.extend_from_slice(&size.to_le_bytes());
    frame.extend_from_slice(&raw_block(content));
    frame
}

/// The last block of a frame, raw.
fn raw_block(content: &[u8]) -> Vec<u8> {
    let header = ((content.len() as u32) << 3) | 1;
    [&header.to_le_bytes()[..3], content].concat()
}

/// A zstd skippable frame: decoders pass over it.
fn skippable(content: &[u8]) -> Vec<u8> {
    [
        &[0x50, 0x2a, 0x4d, 0x18][..],
        &(content.len() as u32).to_le_bytes(),
        content,
    ]
    .concat()
}

fn encoded(data: &[u8]) -> Vec<u8> {
    chunk::encode(data, 3).unwrap()
}

/// The controls that run: every kind of entry, a frame with a window the bootstrap
/// allows, a link into the task part, a tree kept whole in it.
fn controls() -> Vec<Hostile> {
    let run = HOSTILE_ENTRY;
    vec![
        runs(
            "control: every kind of entry, a 255-byte name",
            Listing::root()
                .run()
                .dir(0, "s")
                .file(2, "f", b"data")
                .link(2, "g", "f")
                .hardlink(2, "h", 3)
                .file(2, "l".repeat(255), b"long name"),
        ),
        runs(
            "control: a chunk with a 1 MiB window",
            Listing::root().run(),
        )
        .chunks(vec![stored(run, frame_with_window(run, 20))]),
        runs(
            "control: a kept file, linked into the task part",
            Listing::root().kept(0, "kept", false).run(),
        )
        .task_part(&["kept"]),
        runs(
            "control: the whole tree in the task part",
            Listing::default().kept(0, "", true),
        )
        .flags(FLAG_DIRECT)
        .task_part(&["run"]),
    ]
}

/// Names, where each entry sits, and the order of entries: every rule that keeps
/// extraction inside its directory. `outside` is a directory the payload aims at.
fn misplaced(outside: &Path) -> Vec<Hostile> {
    let pwned: &[u8] = b"pwned";
    let outside_bytes = outside.as_os_str().as_bytes();
    // `outside` with `%` for `/`: a name that is an absolute path once renamed.
    let absolute = outside.join("abs-pwned").display().to_string();
    let percents = absolute.replace('/', "%");
    let deep = (0..17).fold(Listing::root().dir(0, "p".repeat(250)).run(), |l, depth| {
        l.dir(if depth == 0 { 1 } else { depth + 2 }, "p".repeat(250))
    });
    let order = "is out of order or listed twice";
    let outside_dir = "is not inside a directory";
    let component = "has a `.` or `..` component";
    vec![
        refused(
            "a name `..`",
            component,
            Listing::root().file(0, "..", pwned).run(),
        ),
        refused("a name `.`", component, Listing::root().dir(0, ".").run()),
        refused(
            "a name with `/` climbing out",
            "has a `/` in a name",
            Listing::root().file(0, "..%..%..%escape", pwned).run(),
        )
        .renamed("..%..%..%escape", "../../../escape"),
        refused(
            "a name that is an absolute path",
            "has a `/` in a name",
            Listing::root().file(0, &percents, pwned).run(),
        )
        .renamed(&percents, &absolute),
        refused(
            "a name with a NUL",
            "contains a NUL byte",
            Listing::root().file(0, "a\0b", pwned).run(),
        ),
        refused(
            "an empty name",
            "has an empty component",
            Listing::root().file(0, "", pwned).run(),
        ),
        // A name's length is one byte in the format: the encoder writes 256 as 0.
        refused(
            "a name over 255 bytes",
            "has an empty component",
            Listing::root().file(0, "n".repeat(256), pwned).run(),
        ),
        refused(
            "a path over 4095 bytes",
            "has a path longer than 4095 bytes",
            deep,
        ),
        refused(
            "the root inside another entry",
            "does not start with the root directory",
            Listing::root().run().dir(0, "s"),
        )
        .with_root(|root| root.parent = 2),
        refused(
            "the root a file",
            "does not start with the root directory",
            Listing::default()
                .add(0, "", 0o755, EntryKind::File { size: 0 })
                .run(),
        ),
        refused(
            "a parent listed after its child",
            order,
            Listing::root().run().file(3, "f", pwned).dir(0, "s"),
        ),
        refused(
            "a parent that is a file",
            outside_dir,
            Listing::root().run().file(1, "f", pwned),
        ),
        refused(
            "a file written through a symlink to outside",
            outside_dir,
            Listing::root()
                .run()
                .link(0, "s", outside_bytes)
                .file(2, "pwned", pwned),
        ),
        refused(
            "a directory made through a symlink to outside",
            outside_dir,
            Listing::root()
                .run()
                .link(0, "s", outside_bytes)
                .dir(2, "made"),
        ),
        refused(
            "parents that decrease",
            order,
            Listing::root()
                .run()
                .dir(0, "s")
                .dir(0, "t")
                .file(3, "x", pwned)
                .file(2, "y", pwned),
        ),
        refused(
            "a duplicate name",
            order,
            Listing::root()
                .run()
                .file(0, "x", pwned)
                .file(0, "x", pwned),
        ),
        refused(
            "a directory and a symlink under one name",
            order,
            Listing::root()
                .run()
                .dir(0, "x")
                .link(0, "x", outside_bytes),
        ),
        refused(
            "names out of order",
            order,
            Listing::root()
                .run()
                .file(0, "z", pwned)
                .file(0, "s", pwned),
        ),
    ]
}

/// Links, modes and times the bootstrap must not create.
fn forbidden() -> Vec<Hostile> {
    let pwned: &[u8] = b"pwned";
    let hardlink = "is a hardlink to something other than an earlier file";
    let unreadable = "is a file its owner cannot read";
    let unsearchable = "is a directory its owner cannot search";
    vec![
        refused(
            "a hardlink to the root",
            hardlink,
            Listing::root().run().hardlink(0, "x", 0),
        ),
        refused(
            "a hardlink to a later entry",
            hardlink,
            Listing::root()
                .run()
                .hardlink(0, "x", 3)
                .file(0, "y", pwned),
        ),
        refused(
            "a hardlink to a symlink",
            hardlink,
            Listing::root()
                .run()
                .link(0, "s", "run")
                .hardlink(0, "x", 2),
        ),
        refused(
            "a hardlink to itself",
            hardlink,
            Listing::root().run().hardlink(0, "x", 2),
        ),
        refused(
            "an empty link target",
            "has an empty or overlong link target",
            Listing::root().run().link(0, "s", ""),
        ),
        refused(
            "a link target with a NUL",
            "has a link target with a NUL byte",
            Listing::root().run().link(0, "s", "a\0b"),
        ),
        refused(
            "a file its owner cannot read",
            unreadable,
            Listing::root().run().file(0, "x", pwned).mode(0o200),
        ),
        refused(
            "a file all but its owner can read",
            unreadable,
            Listing::root().run().file(0, "x", pwned).mode(0o044),
        ),
        refused(
            "a directory its owner cannot search",
            unsearchable,
            Listing::root().run().dir(0, "x").mode(0o600),
        ),
        refused(
            "a directory its owner cannot list",
            unsearchable,
            Listing::root().run().dir(0, "x").mode(0o300),
        ),
        refused(
            "a setuid file",
            "has mode 4755",
            Listing::root().run().file(0, "x", pwned).mode(0o4755),
        ),
        refused(
            "an mtime with over a second of nanoseconds",
            "has an mtime with over a second of nanoseconds",
            Listing::root()
                .run()
                .file(0, "x", pwned)
                .with(|e| e.mtime.nsec = 1_000_000_000),
        ),
    ]
}

/// Chunks whose frames do not hold what the manifest says, and manifest sections
/// whose frame lies about its size.
fn misframed() -> Vec<Hostile> {
    let run = HOSTILE_ENTRY;
    let damaged = "chunk 0 of the payload is damaged";
    let no_size = "payload manifest has no usable size";
    let plain = || Listing::root().run();
    let chunk = |frame: Vec<u8>| {
        vec![Stored {
            frame,
            ..stored(run, Vec::new())
        }]
    };
    vec![
        refused(
            "a chunk holding more than it says",
            "holds more than the manifest says",
            plain(),
        )
        .chunks(chunk(encoded(&[run, b"more"].concat()))),
        refused(
            "a chunk holding less than it says",
            "holds less than the manifest says",
            plain(),
        )
        .chunks(chunk(encoded(&run[..run.len() - 1]))),
        refused(
            "a chunk with bytes after its frame",
            "has bytes after its frame",
            plain(),
        )
        .chunks(chunk([encoded(run), b"trailing".to_vec()].concat())),
        refused(
            "a chunk of two frames",
            "holds less than the manifest says",
            plain(),
        )
        .chunks(chunk([encoded(&run[..10]), encoded(&run[10..])].concat())),
        refused(
            "a chunk that starts with a skippable frame",
            damaged,
            plain(),
        )
        .chunks(chunk([skippable(b"hidden"), encoded(run)].concat())),
        refused(
            "a chunk that ends with a skippable frame",
            "has bytes after its frame",
            plain(),
        )
        .chunks(chunk([encoded(run), skippable(b"hidden")].concat())),
        refused("a chunk asking for a 16 MiB window", damaged, plain())
            .chunks(chunk(frame_with_window(run, 24))),
        refused("a chunk asking for a 1 GiB window", damaged, plain())
            .chunks(chunk(frame_with_window(run, 30))),
        refused(
            "chunks that do not add up to the files",
            "manifest chunks do not add up to the files' sizes",
            plain(),
        )
        .chunks(vec![stored(
            &[run, b"x"].concat(),
            encoded(&[run, b"x"].concat()),
        )]),
        refused(
            "an empty chunk",
            "manifest lists a chunk of impossible size",
            plain(),
        )
        .chunks(vec![stored(run, encoded(run)), stored(b"", encoded(b""))]),
        refused("a manifest frame that states no size", no_size, plain()).store(|raw| {
            let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
            compressor
                .set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
                .unwrap();
            compressor.compress(&raw).unwrap()
        }),
        refused("a manifest frame that claims 1 TiB", no_size, plain())
            .store(|raw| frame_claiming(&raw, 1 << 40)),
        refused("a manifest frame over the 6 MiB limit", no_size, plain())
            .store(|raw| frame_claiming(&raw, 7 << 20)),
        refused(
            "a manifest frame holding less than it claims",
            "payload manifest",
            plain(),
        )
        .store(|raw| frame_claiming(&raw, raw.len() as u64 + 10)),
    ]
}

/// Links into the task part, and the direct flag, that do not fit the deployment.
fn misplaced_task_part() -> Vec<Hostile> {
    let missing = "the deployment lacks the task part";
    vec![
        refused(
            "a link into the task part named `..`",
            "has a `.` or `..` component",
            Listing::root().kept(0, "..", false).run(),
        ),
        refused(
            "a link into the task part named with `/`",
            "has a `/` in a name",
            Listing::root().kept(0, "..%..%etc", true).run(),
        )
        .renamed("..%..%etc", "../../etc"),
        refused(
            "kept entries, and no task part",
            "",
            Listing::root().kept(0, "kept", false).run(),
        )
        .refused_as("Runtime.TaskPartMissing", missing),
        // A direct start reads the header alone, so it looks for the task part and
        // never at the manifest.
        refused(
            "the direct flag, a tree to extract, no task part",
            "",
            Listing::root().run(),
        )
        .flags(FLAG_DIRECT)
        .refused_as("Runtime.TaskPartMissing", missing),
        refused(
            "a tree kept whole, without the direct flag",
            "disagree on where the tree is",
            Listing::default().kept(0, "", true),
        )
        .task_part(&["run"]),
    ]
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

/// Payloads laid out by the format's own encoders, every hash correct, breaking one
/// rule each: refused by the rules alone, with nothing written outside the cache
/// directory and nothing left in it but the lock, as root and as nobody. The controls
/// run, and `coldpack verify` passes them. The cases "a file its owner cannot read"
/// and "a directory its owner cannot search" are the bootstrap's half of issue 13.10.
#[test]
fn hostile_payloads_are_refused_and_write_nothing_outside() {
    let sandbox = Sandbox::new();
    let outside = sandbox.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o777)).unwrap();
    write_file(&outside.join("victim"), b"original\n", 0o666);
    let bin = sandbox.path("bin");
    fs::create_dir_all(&bin).unwrap();
    let caches = sandbox.path("caches");
    fs::create_dir_all(&caches).unwrap();
    let sandbox_root = sandbox.path("");
    let (mut refusals, mut ran_controls) = (0, 0);
    let cases = [
        controls(),
        misplaced(&outside),
        forbidden(),
        misframed(),
        misplaced_task_part(),
    ];
    for (index, case) in cases.into_iter().flatten().enumerate() {
        let (bytes, task_dir) = case.build(&bin);
        let bootstrap = bin.join(format!("hostile-{index}"));
        write_program(&bootstrap, &bytes);
        // Each case names its own task part, so one case's never serves another.
        for name in case.task_part {
            let entry = task_dir.join(name);
            fs::create_dir_all(entry.parent().unwrap()).unwrap();
            write_program(&entry, HOSTILE_ENTRY);
            let times = fs::FileTimes::new().set_modified(
                std::time::UNIX_EPOCH + Duration::from_secs(HOSTILE_MTIME.sec as u64),
            );
            fs::File::open(&entry).unwrap().set_times(times).unwrap();
        }
        for who in users() {
            let context = format!("{who:?}, {}", case.what);
            let cache = sandbox.cache_dir(&format!("caches/{index}-{who:?}"), who);
            let outside_cache = || -> Vec<_> {
                names_under(&sandbox_root)
                    .into_iter()
                    .filter(|(p, _, _)| !p.starts_with(&cache))
                    .collect()
            };
            let before = outside_cache();
            let output = start(&bootstrap, &cache, who, &[], &[]);
            assert_eq!(
                before,
                outside_cache(),
                "{context}: something changed outside the cache"
            );
            let stderr = text(&output.stderr);
            let Some((expected, because)) = case.refused else {
                assert!(output.status.success(), "{context}: {stderr}");
                assert_eq!(text(&output.stdout), "hostile-control-ran\n", "{context}");
                let verified = coldpack().arg("verify").arg(&bootstrap).output().unwrap();
                assert!(
                    verified.status.success(),
                    "{context}: coldpack verify: {}",
                    text(&verified.stderr)
                );
                ran_controls += 1;
                continue;
            };
            assert!(!output.status.success(), "{context}: accepted: {stderr}");
            assert!(output.stdout.is_empty(), "{context}: something ran");
            assert_eq!(error_type(&output), expected, "{context}: {stderr}");
            let line = one_error_line(&output, &context);
            assert!(
                line.contains(because),
                "{context}: not for {because:?}: {line}"
            );
            assert!(
                !stderr.contains("SHA-256: the file is damaged"),
                "{context}: refused by a hash, not by the rules: {stderr}"
            );
            let left: Vec<String> = names_in(&cache)
                .into_iter()
                .filter(|n| n != "coldpack-hostile.lock")
                .collect();
            assert!(left.is_empty(), "{context}: left in the cache: {left:?}");
            refusals += 1;
        }
    }
    println!("hostile payloads: {refusals} refusals, {ran_controls} controls ran, nothing written outside");
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
    pack_for_tmp(&src1, &sandbox.path("out1"), "stale");
    pack_for_tmp(&src2, &sandbox.path("out2"), "stale");
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
// A full disk, and the one rule for space (issue 13.6)
// ---------------------------------------------------------------------------------

/// Runs `body` in a private mount namespace where `$CACHE`, the cache directory, is a
/// fresh filesystem that the shell command `mount` mounts there and `who` then owns;
/// `$RUN` starts the bootstrap as `who`, `$AS` runs a command as `who`, `$OWNER` is
/// `who`'s `uid:gid`. `None` (with the reason printed) where it cannot be mounted.
fn in_private_mount(
    sandbox: &Sandbox,
    who: Who,
    bootstrap: &Path,
    mount: &str,
    body: &str,
) -> Option<Output> {
    let cache = sandbox.path(&format!("mount-{who:?}"));
    fs::create_dir_all(&cache).unwrap();
    let (owner, as_who) = match who {
        Who::Me => ("0:0", ""),
        Who::Nobody => (
            "65534:65534",
            "setpriv --reuid=65534 --regid=65534 --clear-groups --",
        ),
    };
    let chown = if who == Who::Nobody {
        "chown \"$OWNER\" \"$CACHE\" || exit 99"
    } else {
        ""
    };
    let script = format!("{mount} || exit 99\n{chown}\n{body}");
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
        .env("RUN", format!("{as_who} {}", bootstrap.display()))
        .env("AS", as_who)
        .env("OWNER", owner)
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
            "skipped: cannot mount here, as root or in a user namespace: {}",
            text(&output.stderr)
        );
        return None;
    }
    Some(output)
}

/// [`in_private_mount`] on a tmpfs of `size` bytes and `inodes` inodes.
fn in_tmpfs(
    sandbox: &Sandbox,
    who: Who,
    bootstrap: &Path,
    size: u64,
    inodes: u64,
    body: &str,
) -> Option<Output> {
    let mount =
        format!("mount -t tmpfs -o size={size},nr_inodes={inodes},mode=0755 tmpfs \"$CACHE\"");
    in_private_mount(sandbox, who, bootstrap, &mount, body)
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

fn assert_no_space_message(stderr: &str, context: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("coldpack: error:"))
        .unwrap_or_else(|| panic!("{context}: no error line: {stderr}"));
    for needle in ["not enough space in", "needs", "free"] {
        assert!(
            line.contains(needle),
            "{context}: {line:?} lacks {needle:?}"
        );
    }
    assert!(
        stderr.contains("\"error_type\":\"Runtime.NoSpace\""),
        "{context}: {stderr}"
    );
    line.to_owned()
}

/// Issue 13.6, one truth for space: the pack's `/tmp` figure is `space::Need` of the
/// payload's manifest, and the bootstrap accepts a filesystem with exactly that free
/// (plus the lock's inode and the filesystem's own root, which are not the tree's) and
/// refuses one block or one inode less, before anything is written, with a message
/// that names the numbers. The fixture has no hardlinks (tmpfs charges an inode for
/// each, Lambda's ext4 does not, and the rule follows ext4) and a symlink long enough
/// to take a block on both.
#[test]
fn the_space_check_agrees_with_the_pack_to_the_block_and_the_inode() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    write_file(&src.join("lib/big"), &realistic_bytes(3 << 20, 5), 0o644);
    for i in 0..60 {
        write_file(&src.join(format!("many/{i}")), b"x", 0o644);
    }
    symlink("t".repeat(200), src.join("lib/long-link")).unwrap();
    set_mtimes(&src);
    let packed = pack_for_tmp(&src, &sandbox.path("out"), "full");
    let bootstrap = sandbox.path("out/bootstrap");
    let need = Need::of(&Payload::open(&bootstrap).unwrap().manifest().unwrap());
    let summary = text(&packed.stderr);
    let tmp_line = summary
        .lines()
        .find(|l| l.contains("/tmp ") && l.contains(" of 512 MiB"))
        .unwrap_or_else(|| panic!("no /tmp budget in the summary: {summary}"));
    assert!(
        tmp_line.contains(&coldpack::budget::mebibytes(need.bytes)),
        "the pack's /tmp figure is not space::Need's {need:?}: {tmp_line}"
    );
    // The filesystem's root and the name's lock take an inode each and no block.
    let inodes = need.inodes + 2;
    for who in users() {
        for (size, inodes, what, fits) in [
            (need.bytes, inodes, "exactly what the tree needs", true),
            (need.bytes - BLOCK, inodes, "one block less", false),
            (need.bytes, inodes - 1, "one inode less", false),
            (1 << 20, 1000, "far too few bytes", false),
        ] {
            let context = format!("{who:?}, {what} ({size} bytes, {inodes} inodes)");
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
            let line = assert_no_space_message(&stderr, &context);
            // What is free, as the message says it, is the filesystem before the
            // start: the tmpfs's root and the lock take no block.
            let numbers = if inodes < need.inodes + 2 {
                format!(
                    "needs {} files and {} are free",
                    need.inodes,
                    need.inodes - 1
                )
            } else {
                format!(
                    "({} bytes) and {} MiB ({size} bytes) are free",
                    need.bytes,
                    size >> 20
                )
            };
            assert!(
                line.contains(&numbers),
                "{context}: {line} lacks {numbers:?}"
            );
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
    pack_for_tmp(&src, &sandbox.path("out"), "midway");
    let bootstrap = sandbox.path("out/bootstrap");
    // Once staging has something in it (the space check has passed and extraction has
    // begun), stop the bootstrap, fill the disk, and let it go on.
    let body = r#"
$RUN > "$CACHE.out" 2> "$CACHE.err" & pid=$!
while :; do
  for d in "$CACHE"/*.staging; do [ -n "$(ls -A "$d" 2>/dev/null)" ] && break 2; done
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
// Concurrent starts, a stopped one (issue 13.2), two payloads of one name (13.4)
// ---------------------------------------------------------------------------------

#[test]
fn eight_starts_at_once_extract_once() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    awkward_tree(&src);
    pack_for_tmp(&src, &sandbox.path("out"), "eight");
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

/// Issue 13.2: a start stopped (SIGSTOP) while it extracts holds the name's lock; the
/// next start gives up after 5 s, well within Lambda's 10 s init limit, with one line
/// naming the lock file, `Runtime.CacheLockTimeout`, a non-zero exit, and the same
/// report posted to the Runtime API's init-error endpoint. Without the deadline it
/// waits for as long as the holder is stopped. The stopped start, continued, finishes.
#[test]
fn a_start_gives_up_on_a_stopped_holder_of_the_lock_within_five_seconds() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    // Six chunks: the holder is stopped after the first, with more to write.
    write_file(&src.join("lib/big"), &realistic_bytes(9 << 20, 3), 0o644);
    pack_for_tmp(&src, &sandbox.path("out"), "stopped");
    let bootstrap = sandbox.path("out/bootstrap");
    let id = id16(&bootstrap);
    let users = users();
    run_parallel(&users, users.len(), |_, &who| {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        let record = cache.join(format!("coldpack-stopped.{}.progress", id));
        let lock = cache.join("coldpack-stopped.lock");
        let staging = cache.join(format!("coldpack-stopped.{}.staging", id));
        // Stopped once it has written a chunk, and still extracting (so still holding
        // the lock) once stopped.
        let mut holder = loop {
            wipe(&cache);
            let mut holder = Background::spawn(start_command(&bootstrap, &cache, who, &[]));
            while read_record(&record).chunks.is_empty() && !holder.finished() {
                std::thread::sleep(Duration::from_micros(200));
            }
            let pid = holder.pid();
            signal(pid, "STOP");
            if !holder.finished() && staging.is_dir() {
                break holder;
            }
        };
        let catcher = InitErrorCatcher::start();
        let env = [("AWS_LAMBDA_RUNTIME_API", catcher.address.as_str())];
        let started = Instant::now();
        let waiter = Background::spawn(start_command(&bootstrap, &cache, who, &env));
        let output = waiter
            .output_within(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{who:?}: the start still waits after 20 s"));
        let waited = started.elapsed();
        let context = format!("{who:?}, after {waited:?}");
        assert!(
            waited >= Duration::from_millis(4900) && waited < Duration::from_secs(8),
            "{context}: {}",
            text(&output.stderr)
        );
        let line = one_error_line(&output, &context);
        assert!(
            line.contains(&lock.display().to_string()),
            "{context}: {line}"
        );
        assert_eq!(error_type(&output), "Runtime.CacheLockTimeout", "{context}");
        let request = catcher
            .request()
            .unwrap_or_else(|| panic!("{context}: no init error was posted"));
        assert!(
            request.starts_with("POST /2018-06-01/runtime/init/error HTTP/1.1\r\n")
                && request.contains("Lambda-Runtime-Function-Error-Type: Runtime.CacheLockTimeout")
                && request.contains("\"errorType\":\"Runtime.CacheLockTimeout\"")
                && request.contains(&lock.display().to_string()),
            "{context}: {request}"
        );

        signal(holder.pid(), "CONT");
        let output = holder
            .output_within(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{context}: the continued start did not finish"));
        assert!(
            output.status.success(),
            "{context}: {}",
            text(&output.stderr)
        );
        assert!(ran(&output), "{context}: the continued start did not run");
        let (tree, _) = tree_and_marker(&cache, "stopped");
        assert!(compare_trees(&src, &tree).is_empty(), "{context}");
        assert_clean_cache(&cache, "stopped", &context);
    });
}

/// An entrypoint that, given `WAIT_FIFO`, says `waiting` and waits for a line on it,
/// then prints a file of its own tree: a runtime that keeps running from its tree.
const WAITING_ENTRY: &str = "#!/bin/sh\nif [ -n \"$WAIT_FIFO\" ]; then echo waiting; read go < \"$WAIT_FIFO\"; fi\ncat \"$(dirname \"$0\")/../data/version.txt\"\necho cwd=\n";

/// Issue 13.4: payload A's runtime runs from its tree while payload B, of the same
/// name and another content, starts in the same cache directory. B extracts and runs,
/// and leaves A's tree alone (A still reads from it afterwards); once A has exited, a
/// later start of B removes it. Without the shared lock a runtime holds on its tree,
/// B's sweep deletes A's tree from under it.
#[test]
fn two_payloads_of_one_name_never_remove_a_tree_in_use() {
    let sandbox = Sandbox::new();
    let mut bootstraps = Vec::new();
    for version in ["A", "B"] {
        let src = sandbox.path(&format!("runtime-{version}"));
        write_file(&src.join("bin/entry"), WAITING_ENTRY.as_bytes(), 0o755);
        write_file(
            &src.join("data/version.txt"),
            format!("version {version}\n").as_bytes(),
            0o644,
        );
        set_mtimes(&src);
        let out = sandbox.path(&format!("out-{version}"));
        pack_for_tmp(&src, &out, "shared");
        bootstraps.push((src, out.join("bootstrap")));
    }
    let [(src_a, a), (src_b, b)] = &bootstraps[..] else {
        unreachable!()
    };
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        let fifo = sandbox.path(&format!("fifo-{who:?}"));
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o666)).unwrap();
        let tree_a = cache.join(format!("coldpack-shared.{}", id16(a)));
        let tree_b = cache.join(format!("coldpack-shared.{}", id16(b)));

        let env = [("WAIT_FIFO", fifo.to_str().unwrap())];
        let mut runtime_a = Background::spawn(start_command(a, &cache, who, &env));
        let mut said_by_a = BufReader::new(runtime_a.child().stdout.take().unwrap());
        let mut said = String::new();
        said_by_a.read_line(&mut said).unwrap();
        assert_eq!(said, "waiting\n", "{who:?}: A did not start");

        let output = start(b, &cache, who, &[], &[]);
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        assert_eq!(decision(&output), "extract", "{who:?}");
        assert!(text(&output.stdout).contains("version B"), "{who:?}");
        assert!(
            compare_trees(src_b, &tree_b).is_empty(),
            "{who:?}: B's tree"
        );
        assert!(tree_a.is_dir(), "{who:?}: B removed A's tree while A ran");
        assert!(
            compare_trees(src_a, &tree_a).is_empty(),
            "{who:?}: A's tree changed while A ran"
        );

        fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .and_then(|mut f| f.write_all(b"go\n"))
            .unwrap();
        let output = runtime_a
            .output_within(Duration::from_secs(20))
            .expect("A ends");
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        said.clear();
        said_by_a.read_to_string(&mut said).unwrap();
        assert_eq!(
            said, "version A\ncwd=\n",
            "{who:?}: A could not read its own tree after B started"
        );

        let output = start(b, &cache, who, &[], &[]);
        assert!(output.status.success(), "{who:?}: {}", text(&output.stderr));
        assert_eq!(decision(&output), "reuse", "{who:?}");
        assert!(!tree_a.exists(), "{who:?}: A's tree outlived its runtime");
        assert_clean_cache(&cache, "shared", &format!("{who:?}"));
    }
}

/// Swaps the tree for a directory with the same inode number and the same contents,
/// modes and mtimes, keeps the marker, and starts again with `COLDPACK_VERIFY=marker`.
/// On a fresh ext4, alone on it, the freed number is the first one handed out again.
const SAME_INODE_SWAP: &str = r#"
set -e
$RUN > /dev/null 2>&1
tree=$(find "$CACHE" -maxdepth 1 -name 'coldpack-inode.????????????????')
listing() { find "$1" -printf '%P %y %m %s %T@ %l\n' | sort; }
listing "$tree" > "$CACHE.before"
old=$(stat -c %i "$tree"); mode=$(stat -c %a "$tree"); mtime=$(stat -c %y "$tree")
$AS cp -a "$tree" "$CACHE/copy"
rm -rf "$tree"
i=0
until mkdir "$CACHE/candidate-$i" && [ "$(stat -c %i "$CACHE/candidate-$i")" = "$old" ]; do
  i=$((i + 1)); [ $i -lt 1000 ] || { echo "no reuse of inode $old"; exit 0; }
done
mv "$CACHE/candidate-$i" "$tree"
rmdir "$CACHE"/candidate-* 2>/dev/null || true
mv "$CACHE/copy"/* "$tree"/
rmdir "$CACHE/copy"
chown "$OWNER" "$tree"; chmod "$mode" "$tree"; touch -d "$mtime" "$tree"
listing "$tree" | cmp -s - "$CACHE.before" && echo faithful
echo "swapped $(stat -c %d:%i "$tree"), was $old"
echo "marker $(tr '\n' ' ' < "$tree.complete")"
set +e
COLDPACK_VERIFY=marker $RUN
echo "exit=$?"
"#;

/// Issue 13.5: the tree is swapped for a directory that got the same inode number back,
/// with the same contents, modes and mtimes, and the marker kept. The marker's ctime
/// tells them apart, so even the `marker` check extracts again; with only `dev:ino` in
/// the marker it would run from the swapped tree. A freshly made ext4 image is where
/// the number comes back for sure: on a shared `/tmp`, other processes take it first,
/// and tmpfs never hands one out twice. Without root (to mount it) the test says so
/// and checks nothing.
#[test]
fn a_tree_swapped_for_one_with_the_same_inode_number_is_not_reused() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    pack_for_tmp(&src, &sandbox.path("out"), "inode");
    let bootstrap = sandbox.path("out/bootstrap");
    for who in users() {
        let image = sandbox.path(&format!("ext4-{who:?}.img"));
        let mount = format!(
            "truncate -s 16M '{0}' && mkfs.ext4 -q -F '{0}' && mount -o loop '{0}' \"$CACHE\"",
            image.display()
        );
        let Some(output) = in_private_mount(&sandbox, who, &bootstrap, &mount, SAME_INODE_SWAP)
        else {
            return;
        };
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        let context = format!("{who:?}: {stdout}{stderr}");
        assert!(!stdout.contains("no reuse"), "{context}");
        assert!(
            stdout.contains("faithful\n"),
            "{context}: not a faithful swap"
        );
        let swapped = stdout
            .lines()
            .find_map(|l| l.strip_prefix("swapped "))
            .and_then(|l| l.split_once(", was "))
            .unwrap_or_else(|| panic!("{context}: no swap"));
        assert!(
            swapped.0.ends_with(&format!(":{}", swapped.1)),
            "{context}: another inode number"
        );
        assert!(
            stdout.contains(&format!("{}:", swapped.0)),
            "{context}: the marker does not name the swapped tree's dev:ino"
        );
        assert_eq!(exit_code(&output), Some(0), "{context}");
        assert!(ran(&output), "{context}: the runtime did not run");
        assert_eq!(
            decision(&output),
            "extract",
            "{context}: the swapped tree was reused"
        );
    }
}

// ---------------------------------------------------------------------------------
// Cache directory problems
// ---------------------------------------------------------------------------------

#[test]
fn cache_dir_problems_give_a_clear_error_or_a_safe_recovery() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    pack_for_tmp(&src, &sandbox.path("out"), "cd");
    let bootstrap = sandbox.path("out/bootstrap");
    let full_id = hex(&Payload::open(&bootstrap).unwrap().id);
    let id = &full_id[..16];
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

        // Planted links where each of coldpack's files goes, each pointing at
        // something outside that must stay as it is; with a progress record for this
        // very payload where the staging link is planted, so that staging is taken up
        // again if the link is followed.
        let outside = sandbox.cache_dir(&format!("outside-{who:?}"), who);
        write_file(&outside.join("victim"), b"original\n", 0o666);
        fs::create_dir_all(outside.join("dir")).unwrap();
        write_file(&outside.join("dir/inside"), b"inside\n", 0o666);
        let record = format!("coldpack progress {full_id}\nchunk 0\n");
        for (planted, points_to, record) in [
            (format!("coldpack-cd.{id}"), "dir", None),
            (format!("coldpack-cd.{id}.complete"), "victim", None),
            (format!("coldpack-cd.{id}.complete.pending"), "victim", None),
            ("coldpack-cd.lock".to_string(), "victim", None),
            (format!("coldpack-cd.{id}.staging"), "dir", None),
            (format!("coldpack-cd.{id}.staging"), "dir", Some(&record)),
            (format!("coldpack-cd.{id}.progress"), "victim", None),
            ("coldpack-cd.cleanup".to_string(), "victim", None),
        ] {
            let context = format!(
                "{who:?}, a link planted at {planted}{}",
                if record.is_some() {
                    " beside a record"
                } else {
                    ""
                }
            );
            let cache = sandbox.cache_dir(&format!("planted-{who:?}"), who);
            wipe(&cache);
            symlink(outside.join(points_to), cache.join(&planted)).unwrap();
            if let Some(record) = record {
                let path = cache.join(format!("coldpack-cd.{id}.progress"));
                write_file(&path, record.as_bytes(), 0o600);
                if who == Who::Nobody {
                    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
                }
            }
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

        // A FIFO where the marker or the progress record goes must not hang the start.
        for planted in [
            format!("coldpack-cd.{id}.complete"),
            format!("coldpack-cd.{id}.progress"),
        ] {
            let context = format!("{who:?}, a FIFO at {planted}");
            let cache = sandbox.cache_dir(&format!("fifo-{who:?}"), who);
            wipe(&cache);
            let fifo = cache.join(&planted);
            assert!(Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success());
            if who == Who::Nobody {
                std::os::unix::fs::chown(&fifo, Some(NOBODY), Some(NOBODY)).unwrap();
            }
            let output = Background::spawn(start_command(&bootstrap, &cache, who, &[]))
                .output_within(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("{context}: the start hangs"));
            assert!(
                output.status.success(),
                "{context}: {}",
                text(&output.stderr)
            );
            assert_clean_cache(&cache, "cd", &context);
        }
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
/// as pid 1 of a new pid namespace, over leftovers named with pid 1: half-deleted trash
/// trees, a staging tree whose progress record names another payload, unmarked copies
/// of older versions.
#[test]
fn leftovers_named_with_the_same_pid_are_cleaned_up() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    pack_for_tmp(&src, &sandbox.path("out"), "pid");
    let bootstrap = sandbox.path("out/bootstrap");
    let id = id16(&bootstrap);
    for who in users() {
        for round in 0..4 {
            let context = format!("{who:?}, round {round}");
            let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
            wipe(&cache);
            let mut planted = vec![
                format!("coldpack-pid.{id}.staging"),
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
            write_file(
                &cache.join(format!("coldpack-pid.{id}.progress")),
                format!("coldpack progress {}\nchunk 0\n", "0".repeat(64)).as_bytes(),
                0o600,
            );
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
            assert_eq!(
                log_field(&output.stderr, "resumed").as_deref(),
                Some("0"),
                "{context}: another payload's record was taken up"
            );
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
    pack_for_tmp(&src, &sandbox.path("out"), "bin");
    let bootstrap = sandbox.path("out/bootstrap");
    for who in users() {
        let cache = sandbox.cache_dir(&format!("cache-{who:?}"), who);
        assert!(start(&bootstrap, &cache, who, &[], &[]).status.success());
        let trash = cache.join("coldpack-bin.trash-4242-0");
        write_file(&trash.join("ro/file"), b"old tree\n", 0o444);
        fs::set_permissions(trash.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        let flag = cache.join("coldpack-bin.cleanup");
        write_file(&flag, b"", 0o600);
        if who == Who::Nobody {
            // The trash and the flag only: a chown of the tree would change its ctime.
            assert!(Command::new("chown")
                .args(["-R", "65534:65534"])
                .args([&trash, &flag])
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

// ---------------------------------------------------------------------------------
// What the packer refuses (issue 13.7, 13.9, 13.10)
// ---------------------------------------------------------------------------------

/// Issue 13.7: an entrypoint reached through a link that leaves the tree, absolute or
/// climbing out, anywhere on its path, is refused with one line naming that link, and
/// nothing is written. Every link here resolves on the build machine (to `/bin/sh`),
/// so a check through the build machine's filesystem would let each one pass.
#[test]
fn an_entrypoint_reached_through_a_link_out_of_the_tree_is_refused() {
    let sandbox = Sandbox::new();
    let climb = "../".repeat(sandbox.path("runtime").components().count() + 4);
    let climbing = format!("{climb}bin/sh");
    let refused = |what: &str, links: &[(&str, &str)], entrypoint: &str, named: &str| {
        let src = sandbox.path(what);
        small_tree(&src, "v1");
        for (link, target) in links {
            symlink(target, src.join(link)).unwrap();
        }
        let out = sandbox.path(&format!("{what}-out"));
        let line = one_error_line(&try_pack(&src, entrypoint, &out, &[]), what);
        assert!(line.contains(named), "{what}: {line}");
        assert!(!out.join("bootstrap").exists(), "{what}: written");
    };
    refused(
        "absolute",
        &[("bin/python3", "/bin/sh")],
        "bin/python3",
        "bin/python3 -> /bin/sh",
    );
    refused(
        "absolute-second",
        &[("bin/python3", "python3.12"), ("bin/python3.12", "/bin/sh")],
        "bin/python3",
        "bin/python3.12 -> /bin/sh",
    );
    refused(
        "climbing",
        &[("bin/python3", &climbing)],
        "bin/python3",
        &format!("bin/python3 -> {climbing}"),
    );
    refused(
        "directory-on-the-path",
        &[("opt", "/bin")],
        "opt/sh",
        "opt -> /bin",
    );
}

/// Issue 13.9: `-o` inside the packed directory is left out of the walk, so packing
/// again into `DIR/out` gives the same payload as the pack before (whether the tree
/// goes to `/tmp` or stays whole in the deployment beside the bootstrap), and `-o DIR`
/// itself, however it is spelled, is refused.
#[test]
fn output_inside_the_packed_directory_is_never_packed() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    for extra in [&["--task-budget", "0"][..], &[]] {
        let out = src.join("out");
        // The first pack makes `out`, which changes DIR's own mtime, recorded in the
        // payload: the packs after it see the same tree.
        pack(&src, "bin/entry", &out, extra);
        pack(&src, "bin/entry", &out, extra);
        let first = fs::read(out.join("bootstrap")).unwrap();
        pack(&src, "bin/entry", &out, extra);
        let second = fs::read(out.join("bootstrap")).unwrap();
        assert!(
            first == second,
            "{extra:?}: the next pack packed the one before"
        );
        let manifest = Payload::open(&out.join("bootstrap"))
            .unwrap()
            .manifest()
            .unwrap();
        assert!(
            manifest
                .entries()
                .iter()
                .all(|e| !e.path.starts_with(b"out")),
            "{extra:?}: out/ is in the manifest"
        );
        fs::remove_dir_all(&out).unwrap();
    }
    for spelled in [src.clone(), src.join("."), src.join("bin/..")] {
        let output = try_pack(&src, "bin/entry", &spelled, &[]);
        let line = one_error_line(&output, &format!("-o {}", spelled.display()));
        assert!(line.contains("runtime directory itself"), "{line}");
        assert!(
            !src.join("bootstrap").exists(),
            "{}: written",
            spelled.display()
        );
    }
}

/// Issue 13.10, the packer's half: a file its owner cannot read and a directory its
/// owner cannot search are refused at pack time, whatever `--force` says, in one line
/// that names each with its mode, and nothing is written (the bootstrap's half is in
/// the hostile payloads above). Root packs such a tree without noticing anything,
/// which is why the refusal must not depend on whether the packer can read them.
#[test]
fn a_tree_its_owner_cannot_read_or_search_is_refused_at_pack_time() {
    if !is_root() {
        println!("skipped: only root can walk such a tree to pack it");
        return;
    }
    let sandbox = Sandbox::new();
    let src = sandbox.path("runtime");
    small_tree(&src, "v1");
    write_file(&src.join("lib/write-only"), b"secret\n", 0o200);
    write_file(&src.join("lib/locked/inside"), b"x\n", 0o644);
    fs::set_permissions(src.join("lib/locked"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = sandbox.path("out");
    for extra in [&[][..], &["--force"]] {
        let output = try_pack(&src, "bin/entry", &out, extra);
        let line = one_error_line(&output, &format!("{extra:?}"));
        for named in ["lib/write-only (mode 200)", "lib/locked (mode 600)"] {
            assert!(line.contains(named), "{extra:?}: {line} lacks {named}");
        }
        assert!(!out.join("bootstrap").exists(), "{extra:?}: written");
    }
}
