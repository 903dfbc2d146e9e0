//! `coldpack run`: a Lambda sandbox simulated on this machine, for people without AWS
//! at hand. The packed bootstrap is copied into a temporary task root and started
//! twice against one temporary cache directory, as Lambda does on a cold start and on
//! a re-init in the same sandbox (whose /tmp survives); each start's decision and time
//! come from the line the bootstrap writes on stderr.
//!
//! The task root holds what Lambda puts in `/var/task` (the bootstrap, and OUT-DIR's
//! `coldpack-*` entries beside it) and is read-only, as there; each start runs with
//! the directories the tree names outside itself hidden ([`host`]), so that a tree
//! that works only thanks to this machine fails here as it would on Lambda.
//!
//! With `--event`, each start gets a Runtime API: the test server of this repository
//! (`tests/support/runtime_api.py`, which behaves as AWS documents), carried inside
//! coldpack and run with python3. The event is sent once the runtime starts; after its
//! answer the runtime is killed, as Lambda kills a runtime it re-inits.

mod host;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use coldpack_bootstrap::cache::{remove_tree, Cache};
use coldpack_bootstrap::extract;
use coldpack_bootstrap::manifest::EntryKind;
use coldpack_bootstrap::payload::Payload;
use coldpack_bootstrap::staging::Staging;
use serde_json::Value;

use crate::cli::{Arch, RunArgs};
use crate::lint::Elf;
use crate::{compat, head};
use crate::{out, say};
use host::{Hidden, Isolation};

/// The Runtime API server of the end-to-end tests.
const RUNTIME_API_PY: &str = include_str!("../../tests/support/runtime_api.py");

/// What one start did.
#[derive(Debug)]
pub struct Start {
    /// The bootstrap's own line: `decision`, `reason`, `ms`.
    pub report: Option<Value>,
    /// How the process ended, or `None` when it was stopped (killed after the event,
    /// or past the timeout).
    pub status: Option<ExitStatus>,
    pub wall: Duration,
    /// The Runtime API's envelope for the event, with `--event`.
    pub answer: Option<Value>,
    pub timed_out: bool,
}

impl Start {
    pub fn decision(&self) -> &str {
        self.report
            .as_ref()
            .and_then(|r| r["decision"].as_str())
            .unwrap_or("none")
    }

    /// What went wrong with start `number`: a cold start that did not extract or a
    /// re-init that did not reuse, an event not answered, a runtime that failed.
    fn failures(&self, number: usize, label: &str, has_event: bool) -> Vec<String> {
        let mut failed = Vec::new();
        // A tree kept whole in the deployment runs from there at every start.
        let expected = ["extract", "reuse"][number - 1];
        if self.decision() != expected && self.decision() != "direct" {
            failed.push(format!(
                "start {number} ({label}) decided {}",
                self.decision()
            ));
        }
        match (&self.answer, self.status) {
            (Some(answer), _) if answer["outcome"] != "response" => {
                failed.push(format!("start {number} answered {}", answer["outcome"]))
            }
            (None, _) if has_event => {
                failed.push(format!("start {number} did not answer the event"))
            }
            (_, Some(status)) if !status.success() => {
                failed.push(format!("start {number}: the runtime exited ({status})"))
            }
            _ => {}
        }
        failed
    }
}

pub fn cmd_run(args: &RunArgs) -> Result<()> {
    let bootstrap = if args.target.is_dir() {
        args.target.join("bootstrap")
    } else {
        args.target.clone()
    };
    let payload = Payload::open(&bootstrap)?;
    let name = payload.launch()?.name;
    let event = match &args.event {
        Some(path) => Some(
            fs::read(path).with_context(|| format!("cannot read --event {}", path.display()))?,
        ),
        None => None,
    };
    drop(payload);

    let scratch = Scratch::new()?;
    let place = Place::prepare(&args.target, &bootstrap, &scratch.path)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let api = match &event {
        Some(_) => Some(RuntimeApi::start(&scratch.path, timeout)?),
        None => None,
    };

    let mut failed = Vec::new();
    for (number, label) in [(1, "cold start"), (2, "re-init")] {
        let start = start(
            &place,
            &name,
            &args.args,
            api.as_ref(),
            event.as_deref(),
            timeout,
        )?;
        say!(
            "coldpack run: start {number} ({label}): {}",
            describe(&start)
        );
        if let Some(answer) = &start.answer {
            out!("{}", serde_json::to_string(&answer["payload"])?);
        }
        failed.extend(start.failures(number, label, event.is_some()));
    }
    if args.keep {
        let tree = fs::read_dir(&place.cache)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.is_dir())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into());
        say!(
            "coldpack run: kept {} (extracted tree: {tree})",
            scratch.path.display()
        );
        scratch.keep();
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

fn describe(start: &Start) -> String {
    let mut text = match &start.report {
        Some(report) => format!(
            "{} in {} ms ({})",
            report["decision"].as_str().unwrap_or("?"),
            report["ms"],
            report["reason"].as_str().unwrap_or("")
        ),
        None => "the bootstrap wrote no report line".into(),
    };
    if let Some(answer) = &start.answer {
        text.push_str(&format!(", event answered: {}", answer["outcome"]));
        if let Some(kind) = answer["error_type"].as_str() {
            text.push_str(&format!(" ({kind})"));
        }
    }
    match (start.status, start.timed_out) {
        (_, true) => text.push_str(&format!(
            ", still running after {:.1} s: stopped (a Lambda runtime waits for events: try --event)",
            start.wall.as_secs_f64()
        )),
        (Some(status), _) => text.push_str(&format!(
            ", then the runtime exited ({status}) after {:.0} ms",
            start.wall.as_secs_f64() * 1000.0
        )),
        (None, _) => text.push_str(&format!(
            ", runtime stopped after {:.0} ms",
            start.wall.as_secs_f64() * 1000.0
        )),
    }
    text
}

/// Where starts happen: the task root and cache directory, and how this machine is
/// kept out of them.
struct Place {
    task: PathBuf,
    cache: PathBuf,
    isolation: Isolation,
    /// What of this machine each start covers.
    hidden: Hidden,
}

impl Place {
    /// Makes the task root and cache in `scratch`, deploys into the task root, finds
    /// what the tree would take from this machine, and says what will be hidden.
    fn prepare(target: &Path, bootstrap: &Path, scratch: &Path) -> Result<Place> {
        let task = scratch.join("task");
        let cache = scratch.join("tmp");
        fs::create_dir_all(&task).and_then(|()| fs::create_dir_all(&cache))?;
        deploy(target, bootstrap, &task)?;
        // A payload that cannot be read is still started: its start reports why.
        let used = match host_use(bootstrap, &scratch.join("scan")) {
            Ok(used) => used,
            Err(e) => {
                say!("coldpack run: this machine is not hidden from the tree: {e:#}");
                compat::HostUse::default()
            }
        };
        let (dirs, visible) = host::to_hide(&used.paths, &[&task, &cache]);
        let files = host::library_files(&used.libraries, host::LIBRARY_DIRS, &dirs);
        let empty = scratch.join("empty");
        File::create(&empty)
            .and_then(|_| host::make_read_only(&empty))
            .with_context(|| format!("cannot create {}", empty.display()))?;
        let isolation = Isolation::probe();
        host::make_read_only(&task)
            .with_context(|| format!("cannot make {} read-only", task.display()))?;
        say!(
            "coldpack run: task root {} (as /var/task), cache {} (as /tmp)",
            task.display(),
            cache.display()
        );
        let hidden = Hidden { dirs, files, empty };
        announce(&isolation, &hidden, &visible)?;
        Ok(Place {
            task,
            cache,
            isolation,
            hidden,
        })
    }

    fn bootstrap(&self) -> PathBuf {
        self.task.join("bootstrap")
    }
}

/// Says what each start hides, or that this machine is not hidden.
fn announce(isolation: &Isolation, hidden: &Hidden, visible: &[PathBuf]) -> Result<()> {
    let shown = |paths: &[PathBuf]| -> String {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        paths.join(", ")
    };
    let used = [hidden.dirs.as_slice(), hidden.files.as_slice()].concat();
    match isolation {
        Isolation::None(reason) => {
            say!("coldpack run: this machine is not hidden from the tree and the task root is read-only only by its mode bits, which root ignores ({reason})");
            if !used.is_empty() {
                say!("coldpack run: the tree would use {} of this machine: what it finds there here, it will not find on Lambda", shown(&used));
            }
        }
        _ => {
            if !hidden.dirs.is_empty() {
                say!(
                    "coldpack run: hidden, as Lambda has none of it: {} (the tree names it outside itself)",
                    shown(&hidden.dirs)
                );
            }
            if !hidden.files.is_empty() {
                say!(
                    "coldpack run: hidden, as no Lambda image has it: {} (a library the tree needs and does not reach in itself)",
                    shown(&hidden.files)
                );
            }
        }
    }
    if !visible.is_empty() {
        say!(
            "coldpack run: left visible, this machine needs it: {} (the tree names it outside itself)",
            shown(visible)
        );
    }
    Ok(())
}

/// What Lambda puts in /var/task: the bootstrap, and OUT-DIR's `coldpack-*` entries
/// (the part of the tree the deployment carries), with their modes and mtimes.
fn deploy(target: &Path, bootstrap: &Path, task: &Path) -> Result<()> {
    fs::copy(bootstrap, task.join("bootstrap"))
        .with_context(|| format!("cannot copy {} into the task root", bootstrap.display()))?;
    if !target.is_dir() {
        return Ok(());
    }
    let listed =
        fs::read_dir(target).with_context(|| format!("cannot list {}", target.display()))?;
    for item in listed {
        let item = item?;
        if item.file_name().as_bytes().starts_with(b"coldpack-") {
            copy_tree(&item.path(), &task.join(item.file_name())).with_context(|| {
                format!("cannot copy {} into the task root", item.path().display())
            })?;
        }
    }
    Ok(())
}

/// Copies a file, link or directory as it is: links as links, modes and mtimes kept.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        return std::os::unix::fs::symlink(fs::read_link(from)?, to);
    }
    if meta.is_dir() {
        fs::create_dir(to)?;
        for item in fs::read_dir(from)? {
            let item = item?;
            copy_tree(&item.path(), &to.join(item.file_name()))?;
        }
    } else {
        fs::copy(from, to)?;
    }
    File::open(to)?.set_modified(meta.modified()?)?;
    fs::set_permissions(to, meta.permissions())
}

/// What the packed tree would take from this machine, read from a copy that the
/// bootstrap's own code extracts into `scan` (removed afterwards), and from the task
/// part beside the bootstrap for what is kept there.
fn host_use(bootstrap: &Path, scan: &Path) -> Result<compat::HostUse> {
    let payload = Payload::open(bootstrap)?;
    let launch = payload.launch()?;
    let manifest = payload.manifest()?;
    let task = payload.task_index(&manifest)?;
    let task_dir = coldpack_bootstrap::task::locate(bootstrap, &launch.name, &payload.id);
    let read = || -> Result<compat::HostUse> {
        // A tree kept whole in the task part has nothing to extract.
        let root = if manifest.is_direct() {
            task_dir.clone()
        } else {
            fs::create_dir_all(scan)?;
            let cache = Cache::new(scan, &launch.name, &payload.id, &task_dir);
            let staging = Staging::open(&cache, &manifest)?;
            let task_bytes = task_dir.as_os_str().as_bytes();
            extract::extract(&payload, &manifest, &staging, task_bytes)?;
            staging.path.clone()
        };
        let at = |root: &Path, path: &[u8]| root.join(std::ffi::OsStr::from_bytes(path));
        let mut entries = Vec::new();
        let mut sources = Vec::new();
        for entry in manifest.entries() {
            sources.push(at(&root, &entry.path));
            entries.push(entry);
        }
        // The task part holds what the links in the tree lead to.
        let listed: std::collections::HashSet<Vec<u8>> =
            entries.iter().map(|e| e.path.clone()).collect();
        for kept in task.entries.iter().filter(|e| !listed.contains(&e.path)) {
            sources.push(at(&task_dir, &kept.path));
            entries.push(coldpack_bootstrap::manifest::Entry {
                path: kept.path.clone(),
                parent: 0,
                mode: kept.mode,
                mtime: kept.mtime,
                kind: if kept.dir {
                    EntryKind::Dir
                } else {
                    EntryKind::File { size: kept.size }
                },
            });
        }
        let elf: Vec<_> = head::read_heads(&entries, &sources)?
            .iter()
            .map(|h| h.elf)
            .collect();
        let tree = compat::tree_from_walk(&entries, &sources, &elf);
        // The payload's machine, which may be emulated here (an arm64 tree on x86_64).
        let arch = bootstrap_arch(bootstrap).unwrap_or(Arch::X86_64);
        compat::host_use(&tree, &launch.entrypoint, &launch.env, arch)
    };
    let used = read().context("cannot read the tree's RUNPATHs, links and libraries");
    remove_tree(scan).with_context(|| format!("cannot remove {}", scan.display()))?;
    used
}

/// Starts the bootstrap once, as Lambda would, and waits for it to exit, to answer
/// the event, or for the timeout.
fn start(
    place: &Place,
    name: &str,
    args: &[OsString],
    api: Option<&RuntimeApi>,
    event: Option<&[u8]>,
    timeout: Duration,
) -> Result<Start> {
    let started = Instant::now();
    let mut child = command(place, name, args, api)
        .spawn()
        .map_err(|e| cannot_start(&place.bootstrap(), e))?;
    let report = relay_stderr(&mut child);
    let answer = match (api, event) {
        (Some(api), Some(event)) => answer(&mut child, api.addr, event, started + timeout)?,
        _ => None,
    };
    let (status, timed_out) = if answer.is_some() {
        // Answered: Lambda would freeze it; stop it as a re-init would.
        let status = child.try_wait()?;
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (status, false)
    } else {
        exit(&mut child, started + timeout)?
    };
    let wall = started.elapsed();
    let report = report.recv_timeout(Duration::from_secs(1)).ok().flatten();
    Ok(Start {
        report,
        status,
        wall,
        answer,
        timed_out,
    })
}

/// The bootstrap's command line and environment in `place`: what Lambda sets, unless
/// the caller set it, and the Runtime API's address when there is one.
fn command(place: &Place, name: &str, args: &[OsString], api: Option<&RuntimeApi>) -> Command {
    let mut command = place
        .isolation
        .command(&place.bootstrap(), &place.task, &place.hidden);
    command
        .args(args)
        .current_dir(&place.task)
        .env("LAMBDA_TASK_ROOT", &place.task)
        .env("COLDPACK_CACHE_DIR", &place.cache)
        .env_remove("COLDPACK_LOG")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    // What Lambda sets and runtime libraries insist on, unless the caller set them.
    let defaults = [
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "coldpack-run".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("_HANDLER", "handler".into()),
    ];
    for (key, value) in defaults {
        if std::env::var_os(key).is_none() {
            command.env(key, value);
        }
    }
    if let Some(api) = api {
        command.env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string());
    }
    command
}

/// Invokes `event` through the Runtime API at `addr` and waits for the runtime's
/// answer, for its exit, or for `deadline`, whichever comes first.
fn answer(
    child: &mut Child,
    addr: SocketAddr,
    event: &[u8],
    deadline: Instant,
) -> Result<Option<Value>> {
    let (sender, receiver) = mpsc::channel();
    let body = event.to_vec();
    let wait = deadline.saturating_duration_since(Instant::now());
    thread::spawn(move || {
        let _ = sender.send(invoke(addr, &body, wait));
    });
    loop {
        if let Ok(answer) = receiver.recv_timeout(Duration::from_millis(20)) {
            return Ok(Some(answer?));
        }
        if child.try_wait()?.is_some() {
            // An init error is reported before the exit: give it a moment to land.
            return receiver
                .recv_timeout(Duration::from_secs(1))
                .ok()
                .transpose();
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
    }
}

/// Waits for the bootstrap to exit; at `deadline` kills it. Its status, and whether
/// it was killed.
fn exit(child: &mut Child, deadline: Instant) -> Result<(Option<ExitStatus>, bool)> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((Some(status), false));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, true));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Why `bootstrap` did not start, in one line. The kernel refuses an executable of
/// another machine with ENOEXEC unless binfmt_misc hands it to an emulator: say how to
/// register one.
fn cannot_start(bootstrap: &Path, err: std::io::Error) -> anyhow::Error {
    const ENOEXEC: i32 = 8;
    let qemu = |arch| match arch {
        Arch::Arm64 => "aarch64",
        Arch::X86_64 => "x86_64",
    };
    match bootstrap_arch(bootstrap) {
        Some(arch) if err.raw_os_error() == Some(ENOEXEC) => anyhow!(
            "cannot start {}: it is built for {} and this machine runs it only under emulation, \
             which is not registered: install qemu-user-static and binfmt-support, then as root \
             `update-binfmts --enable qemu-{qemu}` (after `mount -t binfmt_misc binfmt_misc \
             /proc/sys/fs/binfmt_misc` if that directory is empty)",
            bootstrap.display(),
            arch.as_str(),
            qemu = qemu(arch),
        ),
        _ => anyhow!("cannot start {}: {err}", bootstrap.display()),
    }
}

/// The machine `bootstrap` is built for, from its ELF header, if it is one coldpack
/// knows.
fn bootstrap_arch(bootstrap: &Path) -> Option<Arch> {
    let mut head = Vec::with_capacity(64);
    File::open(bootstrap)
        .and_then(|f| f.take(64).read_to_end(&mut head))
        .ok()?;
    let machine = Elf::parse(&head)?.machine;
    [Arch::Arm64, Arch::X86_64]
        .into_iter()
        .find(|arch| arch.elf_machine() == machine)
}

/// Echoes the child's stderr as it comes and hands back the bootstrap's report line.
fn relay_stderr(child: &mut Child) -> mpsc::Receiver<Option<Value>> {
    let (sender, receiver) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr is piped");
    thread::spawn(move || {
        let mut report = None;
        let mut sent = false;
        for line in BufReader::new(stderr).split(b'\n').map_while(|l| l.ok()) {
            let _ = std::io::stderr().write_all(&[&line[..], b"\n"].concat());
            if report.is_none() && line.starts_with(b"{\"coldpack\":\"bootstrap\"") {
                report = serde_json::from_slice::<Value>(&line).ok();
                // The runtime keeps stderr open while it serves events: report now.
                let _ = sender.send(report.clone());
                sent = true;
            }
        }
        if !sent {
            let _ = sender.send(report);
        }
    });
    receiver
}

/// Sends one event through the test endpoint and returns its envelope.
fn invoke(addr: SocketAddr, event: &[u8], timeout: Duration) -> Result<Value> {
    let path = format!("/_test/invoke?timeout={}", timeout.as_secs());
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout + Duration::from_secs(5)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        event.len()
    )?;
    stream.write_all(event)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("the Runtime API answered without headers"))?;
    let body = &response[split + 4..];
    serde_json::from_slice(body).context("the Runtime API's answer is not JSON")
}

/// The test Runtime API server, stopped on drop.
struct RuntimeApi {
    child: Child,
    addr: SocketAddr,
}

impl RuntimeApi {
    fn start(scratch: &Path, timeout: Duration) -> Result<RuntimeApi> {
        let script = scratch.join("runtime_api.py");
        fs::write(&script, RUNTIME_API_PY)?;
        let log = scratch.join("runtime_api.log");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--invoke-timeout", &timeout.as_secs().to_string()])
            .args(["--max-lifetime", &(4 * timeout.as_secs() + 30).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()
            .map_err(|e| anyhow!("--event needs python3 to run the local Runtime API: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let line = first_line(stdout, Duration::from_secs(10)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the local Runtime API did not start: {}",
                fs::read_to_string(&log).unwrap_or_default().trim()
            );
        };
        Ok(RuntimeApi {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private temporary directory, removed on drop unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("coldpack-run-{}-{nanos:08x}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch { path, keep: false })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            // The extracted tree may hold read-only directories.
            let _ = remove_tree(&self.path);
        }
    }
}

/// The first line a child prints, or `None` if it prints none within `timeout`: how
/// the local Runtime API announces its port, read without risking a hang.
pub fn first_line(stdout: std::process::ChildStdout, timeout: Duration) -> Option<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    receiver.recv_timeout(timeout).ok()
}
