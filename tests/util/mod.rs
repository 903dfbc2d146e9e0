//! What every end-to-end test needs: a private directory, the real `coldpack` binary,
//! a packed bootstrap started as root or as an unprivileged user, fixture trees built
//! in code, and an entry-by-entry comparison of two trees.
#![allow(dead_code)] // each test binary uses its own share of these helpers

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// The user Lambda-like runs drop to: `nobody`, which owns nothing here.
pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A temporary directory that an unprivileged user can enter, removed on drop even
/// when it holds read-only directories.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("coldpack-test-")
            .tempdir()
            .expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        Sandbox { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A fresh cache directory that `who` may write into.
    pub fn cache_dir(&self, rel: &str, who: Who) -> PathBuf {
        let dir = self.path(rel);
        fs::create_dir_all(&dir).expect("create cache dir");
        if who == Who::Nobody {
            std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown cache dir");
        }
        dir
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Give every directory its write bit back so the temp dir can go.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+rwX")
            .arg(self.dir.path())
            .status();
    }
}

/// Who runs the bootstrap: whoever runs the tests, or `nobody` (needs root to switch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Me,
    Nobody,
}

/// The users a behaviour is tested as: the current user, and `nobody` when the tests
/// run as root (root ignores the permission bits that break extraction on Lambda).
pub fn users() -> Vec<Who> {
    if is_root() {
        vec![Who::Me, Who::Nobody]
    } else {
        vec![Who::Me]
    }
}

pub fn coldpack() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coldpack"))
}

/// `coldpack pack SRC --entrypoint ENTRY -o OUT --level 3 EXTRA...`, which must succeed.
pub fn pack(src: &Path, entrypoint: &str, out: &Path, extra: &[&str]) -> Output {
    let output = try_pack(src, entrypoint, out, extra);
    assert!(
        output.status.success(),
        "coldpack pack failed: {}",
        text(&output.stderr)
    );
    output
}

/// `program` run as `who`: directly, or through `setpriv` as `nobody`.
pub fn as_user(who: Who, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match who {
        Who::Me => Command::new(program),
        Who::Nobody => {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(program);
            command
        }
    }
}

/// Starts a packed bootstrap with `COLDPACK_CACHE_DIR=cache` as `who`.
pub fn start(
    bootstrap: &Path,
    cache: &Path,
    who: Who,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    start_command(bootstrap, cache, who, env)
        .args(args)
        .output()
        .expect("run bootstrap")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of `"key":"value"` in the bootstrap's JSON log line on stderr.
pub fn log_field(stderr: &[u8], key: &str) -> Option<String> {
    let stderr = text(stderr);
    let line = stderr.lines().find(|l| l.starts_with("{\"coldpack\""))?;
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    match &value[key] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

pub fn decision(output: &Output) -> String {
    log_field(&output.stderr, "decision")
        .unwrap_or_else(|| format!("(no log line: {})", text(&output.stderr)))
}

/// The entrypoint every fixture carries: prints its arguments, one per line, then
/// the variables the tests look at.
pub const ENTRYPOINT_SCRIPT: &str = "#!/bin/sh\nfor a in \"$@\"; do echo \"arg=$a\"; done\necho \"cwd=$(pwd)\"\necho \"FIXTURE_VAR=$FIXTURE_VAR\"\necho \"ROOTED=$ROOTED\"\n";

pub fn write(path: &Path, bytes: &[u8], mode: u32) {
    let mut file = fs::File::create(path).expect("create fixture file");
    file.write_all(bytes).expect("write fixture file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod fixture file");
}

/// Writes a program the tests then run, through a child process (`dd`), so that this
/// process never holds the file open for writing: a fork in any other test thread
/// while it did would give that child the descriptor too, and every exec of the file
/// would fail with ETXTBSY until the child had exec'd in turn.
pub fn write_program(path: &Path, bytes: &[u8]) {
    let mut of = std::ffi::OsString::from("of=");
    of.push(path);
    let mut dd = Command::new("dd")
        .args([of.as_os_str(), OsStr::new("status=none")])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("dd is installed");
    dd.stdin
        .take()
        .unwrap()
        .write_all(bytes)
        .expect("write to dd");
    assert!(dd.wait().unwrap().success(), "dd of={}", path.display());
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod program");
}

/// Bytes that compress like real data: words and binary runs from a seeded generator.
pub fn realistic_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let words = [
        "lambda", "runtime", "payload", "import", "return", "def ", "class ", "\n", "    ", "0x7f",
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if next() % 4 == 0 {
            let run = (next() % 64) as usize;
            out.extend((0..run).map(|_| next() as u8));
        } else {
            out.extend_from_slice(words[(next() as usize) % words.len()].as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A runtime tree with every awkward case the packer must carry: an executable
/// reached through a symlink, relative, absolute and dangling links, hardlinks, a
/// read-only directory with a read-only file, an empty directory and an empty file,
/// a path over 100 bytes and a 255-byte name, unicode, spaces and a newline in names,
/// a file larger than one chunk, and mtimes with nanoseconds.
pub fn awkward_tree(root: &Path) {
    let dir = |rel: &str| {
        let path = root.join(rel);
        fs::create_dir_all(&path).expect("create fixture dir");
        path
    };
    dir("");
    write(
        &dir("libexec").join("entry-v1"),
        ENTRYPOINT_SCRIPT.as_bytes(),
        0o755,
    );
    dir("bin");
    std::os::unix::fs::symlink("../libexec/entry-v1", root.join("bin/entry")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("bin/absolute-link")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", root.join("dangling")).unwrap();
    write(&dir("data").join("shared"), b"shared by two names\n", 0o644);
    fs::hard_link(root.join("data/shared"), root.join("data/hardlink")).unwrap();
    write(&root.join("data/empty"), b"", 0o600);
    write(
        &root.join("data/big.bin"),
        &realistic_bytes(9 << 20, 7),
        0o644,
    );
    write(&root.join("data/with space"), b"space\n", 0o640);
    write(&root.join("data/new\nline"), b"newline\n", 0o644);
    write(
        &root.join("data/ünïcødé-名前.txt"),
        "unicode\n".as_bytes(),
        0o644,
    );
    let long = dir(&format!("deep/{}/{}", "d".repeat(60), "e".repeat(60)));
    write(&long.join("f".repeat(255)), b"long path\n", 0o755);
    dir("empty-dir");
    write(&dir("ro").join("readonly.txt"), b"read only\n", 0o444);
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    set_mtimes(root);
}

/// Gives every entry a distinct mtime with nanoseconds, directories last (writing
/// into a directory changes its mtime).
pub fn set_mtimes(root: &Path) {
    let mut paths: Vec<PathBuf> = walk(root).into_keys().map(|rel| join(root, &rel)).collect();
    paths.reverse(); // children before their directories
    for (i, path) in paths.iter().enumerate() {
        let when =
            SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000 + i as u64 * 1000, 123_456_789);
        let times = fs::FileTimes::new().set_modified(when).set_accessed(when);
        let meta = fs::symlink_metadata(path).unwrap();
        if meta.file_type().is_symlink() {
            continue; // std cannot set a link's own time; the packer's mtime of it is checked anyway
        }
        let file = fs::File::open(path).expect("open for times");
        file.set_times(times).expect("set fixture mtime");
    }
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// What the comparison looks at for one entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub target: Option<Vec<u8>>,
    pub content: Option<Vec<u8>>,
    /// The first path (in sorted order) of the inode this entry shares with others.
    pub inode_group: Option<Vec<u8>>,
}

/// Every entry under `root` (root included, as the empty path), without following links.
pub fn walk(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut found = BTreeMap::new();
    let mut linked: Vec<(Vec<u8>, (u64, u64))> = Vec::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let path = join(root, &rel);
        let meta = fs::symlink_metadata(&path).expect("stat while walking");
        let kind = if meta.is_dir() {
            "dir"
        } else if meta.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        if kind == "dir" {
            for item in fs::read_dir(&path).expect("list while walking") {
                let name = item.unwrap().file_name();
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                stack.push(child);
            }
        }
        if kind == "file" && meta.nlink() > 1 {
            linked.push((rel.clone(), (meta.dev(), meta.ino())));
        }
        found.insert(
            rel.clone(),
            Seen {
                kind,
                mode: if kind == "symlink" {
                    0
                } else {
                    meta.mode() & 0o7777
                },
                size: if kind == "file" { meta.len() } else { 0 },
                mtime: (meta.mtime(), meta.mtime_nsec()),
                target: (kind == "symlink")
                    .then(|| fs::read_link(&path).unwrap().into_os_string().into_vec()),
                content: (kind == "file").then(|| fs::read(&path).unwrap()),
                inode_group: None,
            },
        );
    }
    // Name each inode group by its first path, so that trees compare by structure.
    for (rel, inode) in &linked {
        let first = linked
            .iter()
            .filter(|(_, i)| i == inode)
            .map(|(r, _)| r)
            .min();
        found.get_mut(rel).expect("walked").inode_group = first.cloned();
    }
    found
}

/// Differences between two trees, entry by entry; empty when they match. Symlinks'
/// own mtimes are compared too (the bootstrap sets them).
pub fn compare_trees(expected: &Path, actual: &Path) -> Vec<String> {
    compare_walked(&walk(expected), actual)
}

fn describe(seen: &Seen) -> String {
    format!(
        "{} mode {:o} size {} mtime {:?} target {:?} hardlinked {:?}",
        seen.kind,
        seen.mode,
        seen.size,
        seen.mtime,
        seen.target
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned()),
        seen.inode_group
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    )
}

/// The command that `start` runs, for a test that must spawn, time or kill it.
pub fn start_command(bootstrap: &Path, cache: &Path, who: Who, env: &[(&str, &str)]) -> Command {
    let mut command = as_user(who, bootstrap);
    command
        .env("COLDPACK_CACHE_DIR", cache)
        .env_remove("COLDPACK_VERIFY")
        .env_remove("COLDPACK_LOG")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs `sh -c script` as `who`, which must succeed (a tamper step, say).
pub fn shell_as(who: Who, script: &str) {
    let mut command = match who {
        Who::Me => Command::new("sh"),
        Who::Nobody => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "sh",
            ]);
            c
        }
    };
    let output = command.arg("-c").arg(script).output().expect("run sh");
    assert!(
        output.status.success(),
        "{who:?}: `{script}` failed: {}",
        text(&output.stderr)
    );
}

/// Runs `job` on every item with `threads` threads; results come back in item order.
pub fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    job: impl Fn(usize, &T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = job(i, item);
                *results[i].lock().unwrap() = Some(result);
            });
        }
    });
    results
        .into_iter()
        .map(|slot| slot.into_inner().unwrap().expect("every job ran"))
        .collect()
}

/// Like `compare_trees`, against a tree walked once beforehand (a big fixture that
/// many starts are compared with).
pub fn compare_walked(want: &BTreeMap<Vec<u8>, Seen>, actual: &Path) -> Vec<String> {
    let got = walk(actual);
    let mut differences = Vec::new();
    for (rel, seen) in want {
        let shown = String::from_utf8_lossy(rel);
        match got.get(rel) {
            None => differences.push(format!("{shown:?} is missing")),
            Some(other) if other != seen => differences.push(format!(
                "{shown:?} differs: expected {}, got {}",
                describe(seen),
                describe(other)
            )),
            Some(_) => {}
        }
    }
    for rel in got.keys().filter(|rel| !want.contains_key(*rel)) {
        differences.push(format!("{:?} is extra", String::from_utf8_lossy(rel)));
    }
    differences
}

/// The one extracted tree in `cache` (leftovers being moved aside do not count).
pub fn extracted_root(cache: &Path) -> PathBuf {
    let mut trees: Vec<_> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.to_string_lossy().contains(".trash-"))
        .collect();
    assert_eq!(trees.len(), 1, "exactly one tree in the cache: {trees:?}");
    trees.pop().unwrap()
}

/// Runs `command`, which must succeed; its output otherwise goes into the failure.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// The names in a directory, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A small seeded generator (splitmix64): every random choice a test makes comes from
/// one seed, printed so that a failure can be replayed with `COLDPACK_SEED=<seed>`.
pub struct Rng(u64);

impl Rng {
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("COLDPACK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{test}: seed {seed} (replay with COLDPACK_SEED={seed})");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A stand-in for the Runtime API's init-error endpoint: listens on 127.0.0.1, takes
/// one request, answers `202 Accepted` as Lambda does, and hands back the request as
/// it arrived (request line, headers, body). Every wait has a deadline.
pub struct InitErrorCatcher {
    /// `host:port`, the form Lambda gives in `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    received: std::thread::JoinHandle<Option<String>>,
}

impl InitErrorCatcher {
    pub fn start() -> InitErrorCatcher {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
        let address = listener.local_addr().expect("bound address").to_string();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let received = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return None,
                }
            };
            stream.set_nonblocking(false).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let request = read_request(&mut stream)?;
            let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
            Some(request)
        });
        InitErrorCatcher { address, received }
    }

    /// The request received, or `None` if none came within 30 s of the start.
    pub fn request(self) -> Option<String> {
        self.received.join().expect("catcher thread")
    }
}

/// One HTTP request: headers, then as many body bytes as `Content-Length` says.
fn read_request(stream: &mut impl std::io::Read) -> Option<String> {
    let mut bytes = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buffer[..n]);
        let request = text(&bytes);
        if let Some((head, body)) = request.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok)
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    Some(text(&bytes))
}

/// `coldpack pack SRC --entrypoint ENTRY -o OUT --level 3 EXTRA...`, whatever its
/// outcome: for the packs that must be refused.
pub fn try_pack(src: &Path, entrypoint: &str, out: &Path, extra: &[&str]) -> Output {
    coldpack()
        .arg("pack")
        .arg(src)
        .args(["--entrypoint", entrypoint, "--level", "3", "-o"])
        .arg(out)
        .args(extra)
        .output()
        .expect("run coldpack")
}

/// The `coldpack: warning:` lines of a run's stderr.
pub fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("coldpack: warning:"))
        .collect()
}

/// `command` run with `dir` read-only, as Lambda's deployment is: as root, inside a
/// private mount namespace where `dir` is a read-only bind mount (so writes fail with
/// `EROFS`, whoever `command` then runs as); otherwise with the write bits of
/// everything under `dir` taken away first (writes fail with `EACCES`; `Sandbox`
/// gives them back when it goes). Program, arguments, environment and working
/// directory are carried over; set stdio on the result.
pub fn with_read_only(dir: &Path, command: Command) -> Command {
    if !is_root() {
        let status = Command::new("chmod")
            .arg("-R")
            .arg("a-w")
            .arg(dir)
            .status()
            .expect("run chmod");
        assert!(status.success(), "chmod -R a-w {} failed", dir.display());
        return command;
    }
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(dir)
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(cwd) = command.get_current_dir() {
        wrapped.current_dir(cwd);
    }
    wrapped
}
