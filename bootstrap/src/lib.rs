//! The `bootstrap` Lambda runs at every init, and the payload format it shares with
//! the packer.
//!
//! [`boot`] reads top to bottom like the invariants in docs/design.md: find the
//! payload and check its header against the hash the file carries; run straight from
//! the deployment when the whole tree is kept there; otherwise take the name's lock,
//! reuse the tree an earlier init left if it passes the chosen check, or else check
//! that the deployment has its task part, move every leftover aside, check the space,
//! extract into staging (continuing what a killed start finished), rename into place
//! and mark complete last; then hold the tree and exec the entrypoint.

pub mod cache;
pub mod chunk;
mod cursor;
pub mod error;
pub mod exec;
pub mod extract;
pub mod launch;
pub mod manifest;
pub mod parallel;
pub mod payload;
pub mod report;
pub mod runtime_api;
pub mod space;
pub mod staging;
mod sys;
pub mod task;
pub mod verify;
mod wire;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cache::Cache;
use error::{Error, ErrorKind, Result};
use launch::Launch;
use manifest::Manifest;
use payload::{hex, Payload};
use report::{Report, Value};
use space::Need;
use staging::Staging;
use verify::Level;

/// The `COLDPACK_*` variables, read once.
pub struct Config {
    pub cache_dir: PathBuf,
    pub verify: Level,
    pub quiet: bool,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        let var = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
        let invalid = |key: &str, value: &OsString, allowed: &str| {
            Error::new(
                ErrorKind::Config,
                format!("{key}={} is not one of {allowed}", value.to_string_lossy()),
            )
        };
        let cache_dir =
            var("COLDPACK_CACHE_DIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        // The tree's path is handed to the runtime as {root}, which must not depend on
        // the directory the runtime later changes into.
        let cache_dir = std::path::absolute(&cache_dir).map_err(|e| {
            Error::io(
                ErrorKind::CacheDir,
                "cannot resolve cache directory",
                &cache_dir,
                e,
            )
        })?;
        let verify = match var("COLDPACK_VERIFY") {
            None => Level::Stat,
            Some(value) => value
                .to_str()
                .and_then(Level::parse)
                .ok_or_else(|| invalid("COLDPACK_VERIFY", &value, "marker, stat, full"))?,
        };
        let quiet = match var("COLDPACK_LOG") {
            None => false,
            Some(value) if value == "quiet" => true,
            Some(value) if value == "json" => false,
            Some(value) => return Err(invalid("COLDPACK_LOG", &value, "quiet, json")),
        };
        Ok(Config {
            cache_dir,
            verify,
            quiet,
        })
    }
}

/// What a start hands to the exec.
struct Ready {
    root: PathBuf,
    launch: Launch,
    /// The shared lock on the tree that the runtime inherits (none when the tree is the
    /// deployment's own): dropped only if the exec fails.
    _hold: Option<sys::Lock>,
}

/// Runs one start to the exec of the entrypoint; returns only on failure.
pub fn boot(started: Instant, config: &Config) -> Error {
    match prepare(started, config) {
        Ok(ready) => exec::exec(&ready.root, &ready.launch, std::env::args_os().skip(1)),
        Err(e) => e,
    }
}

/// Everything before the exec.
fn prepare(started: Instant, config: &Config) -> Result<Ready> {
    let exe = std::env::current_exe().map_err(|e| {
        Error::new(
            ErrorKind::PayloadMissing,
            format!("cannot find own executable: {e}"),
        )
    })?;
    let payload = Payload::open(&exe)?;
    let launch = payload.launch()?;
    let task_dir = task::locate(&exe, &launch.name, &payload.id);
    let log = Log {
        started,
        config,
        name: &launch.name,
        id: hex(&payload.id),
    };
    if payload.is_direct() {
        // The whole tree is in the deployment: nothing to extract, check or lock.
        task::open(&task_dir)?;
        log.line("direct", "the whole tree is in the deployment", &[]);
        return Ok(Ready {
            root: task_dir,
            launch,
            _hold: None,
        });
    }
    let cache = Cache::new(&config.cache_dir, &launch.name, &payload.id, &task_dir);
    let _lock = cache.lock()?;
    reuse_or_extract(&payload, &cache, &task_dir, &log)?;
    Ok(Ready {
        _hold: Some(cache.hold()?),
        root: cache.root,
        launch,
    })
}

/// Under the lock: reuse the tree an earlier init left if its marker and the chosen
/// check say it is intact, otherwise extract it afresh.
fn reuse_or_extract(payload: &Payload, cache: &Cache, task_dir: &Path, log: &Log) -> Result<()> {
    let level = log.config.verify;
    let mut manifest = None;
    let verdict = cache.check_marker().and_then(|published| {
        if level == Level::Marker {
            return Ok(());
        }
        let m = manifest.insert(payload.manifest().map_err(|e| e.to_string())?);
        let cache_dir = cache.open_dir().map_err(|e| e.to_string())?;
        let tree = verify::Tree {
            cache_dir: &cache_dir,
            root_name: cache.root_name(),
            watermark: published,
        };
        verify::check_tree(&tree, m, level)
    });
    let why = match verdict {
        Ok(()) => {
            cache.remove_leftovers();
            log.line(
                "reuse",
                &format!("intact copy ({} check)", level.as_str()),
                &[],
            );
            return Ok(());
        }
        Err(why) => why,
    };
    let manifest = match manifest {
        Some(m) => m,
        None => payload.manifest()?,
    };
    let stats = extract_fresh(payload, &manifest, cache, task_dir)?;
    let fields = [
        ("threads", Value::Number(stats.threads as u64)),
        ("resumed", Value::Number(stats.resumed as u64)),
    ];
    log.line("extract", &why, &fields);
    Ok(())
}

/// The cold path, under the lock: check the task part, clear away leftovers, check
/// space, extract into staging, publish.
fn extract_fresh(
    payload: &Payload,
    manifest: &Manifest,
    cache: &Cache,
    task_dir: &Path,
) -> Result<extract::Stats> {
    task::check(task_dir, manifest)?;
    let mut trash = cache.sweep()?;
    if !trash.is_empty() {
        cache.cleanup_pending();
    }
    let staging = Staging::open(cache, manifest)?;
    let need = Need::remaining(manifest, &staging.done);
    if let Err(e) = cache.ensure_space(need, staging.footprint(), &mut trash) {
        // Refused before extracting: a fresh staging would only take space; what an
        // earlier start wrote is kept for a start with more room.
        if !staging.resumed {
            staging.discard();
        }
        return Err(e);
    }
    let extracted = extract::extract(payload, manifest, &staging, task_dir.as_os_str().as_bytes());
    let stats = match extracted {
        Ok(stats) => stats,
        Err(e) => {
            staging.discard();
            return Err(match e.kind {
                ErrorKind::NoSpace => Error::new(
                    ErrorKind::NoSpace,
                    format!(
                        "ran out of space ({e}); {}",
                        cache::no_space(&cache.dir, Need::of(manifest), Need::default())
                    ),
                ),
                _ => e,
            });
        }
    };
    cache.publish(staging)?;
    // Deleting an old tree is left until the new one is in place: on ext4, inodes
    // freed moments ago are skipped by the allocator, which slows the extraction.
    cache.clean_up(&mut trash)?;
    Ok(stats)
}

/// The start's one JSON line, unless `COLDPACK_LOG=quiet`.
struct Log<'a> {
    started: Instant,
    config: &'a Config,
    name: &'a str,
    id: String,
}

impl Log<'_> {
    fn line(&self, decision: &str, reason: &str, extra: &[(&str, Value)]) {
        if self.config.quiet {
            return;
        }
        let mut fields = vec![
            ("name", Value::Text(self.name)),
            ("payload", Value::Text(&self.id[..16])),
            ("verify", Value::Text(self.config.verify.as_str())),
        ];
        fields.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let report = Report {
            decision,
            reason,
            started: self.started,
            fields,
        };
        // A log line that cannot be written must not stop the start.
        let _ = writeln!(std::io::stderr(), "{}", report.line());
    }
}

/// The failure's log line and, under Lambda, its init-error report.
pub fn fail(started: Instant, err: &Error) {
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "coldpack: error: {err}");
    let report = Report {
        decision: "error",
        reason: &err.message,
        started,
        fields: vec![("error_type", Value::Text(err.kind.lambda_type()))],
    };
    let _ = writeln!(stderr, "{}", report.line());
    if let Some(api) = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .ok()
        .filter(|v| !v.is_empty())
    {
        if let Err(why) = runtime_api::report_init_error(&api, err.kind.lambda_type(), &err.message)
        {
            let _ = writeln!(stderr, "coldpack: init error not reported: {why}");
        }
    }
}

/// Reports a panic like any other failure (a line, the init-error report) before the
/// process aborts: a bug in the bootstrap must not end an init in silence.
pub fn report_panics(started: Instant) {
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let at = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let message = format!(
            "the bootstrap panicked ({what}{at}): this is a coldpack bug, please report it"
        );
        fail(started, &Error::new(ErrorKind::Panic, message));
    }));
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use crate::runtime_api::tests::fake_runtime_api;

    /// Set in the child process that `a_panic_is_reported_like_any_failure` starts.
    const CHILD: &str = "COLDPACK_TEST_PANICKING_CHILD";
    const WHAT: &str = "deliberate, to test the hook";

    /// The child half of the test below: installs the hook `main` installs, then
    /// panics. Without the variable (any ordinary test run) it does nothing.
    #[test]
    fn panicking_child() {
        if std::env::var_os(CHILD).is_some() {
            super::report_panics(Instant::now());
            panic!("{WHAT}");
        }
    }

    /// Issue 13.3: a panic ends like any other failure, in the JSON error line with
    /// `Runtime.BootstrapPanic` and an init-error report to the Runtime API. Nothing
    /// from outside makes the shipped bootstrap panic, so the test binary runs itself
    /// again as a child whose one test installs `report_panics` and panics, with a
    /// listener on 127.0.0.1 standing in for the Runtime API.
    #[test]
    fn a_panic_is_reported_like_any_failure() {
        let (api, request) = fake_runtime_api(Some("HTTP/1.1 202 Accepted"));
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "tests::panicking_child", "--nocapture"])
            .env(CHILD, "1")
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        let said = format!("coldpack: error: the bootstrap panicked ({WHAT} at ");
        assert!(stderr.contains(&said), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("{\"coldpack\":\"bootstrap\",\"decision\":\"error\""))
            .unwrap_or_else(|| panic!("no JSON line: {stderr}"));
        assert!(
            line.contains("\"error_type\":\"Runtime.BootstrapPanic\"") && line.contains(WHAT),
            "{line}"
        );
        let request = request
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no init error was posted: {stderr}"));
        assert!(
            request.starts_with("POST /2018-06-01/runtime/init/error HTTP/1.1\r\n")
                && request.contains("Lambda-Runtime-Function-Error-Type: Runtime.BootstrapPanic")
                && request.contains("\"errorType\":\"Runtime.BootstrapPanic\"")
                && request.contains(WHAT),
            "{request}"
        );
    }
}
