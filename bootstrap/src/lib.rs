//! The `bootstrap` Lambda runs at every init, and the payload format it shares with
//! the packer.
//!
//! [`boot`] reads top to bottom like the invariants in DESIGN.md: find the payload and
//! check its header against the hash the file carries; take the name's lock; reuse the
//! tree an earlier init left if it passes the chosen check, otherwise move every
//! leftover aside, check the space, extract into staging, rename into place and mark
//! complete last; then exec the entrypoint.

pub mod cache;
pub mod chunk;
pub mod error;
pub mod extract;
pub mod launch;
pub mod manifest;
pub mod parallel;
pub mod payload;
pub mod report;
pub mod runtime_api;
mod sys;
pub mod verify;
mod wire;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use cache::Cache;
use error::{Error, ErrorKind, Result};
use payload::{hex, Payload};
use report::{Report, Value};
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

/// Runs one start to the exec of the entrypoint; returns only on failure.
pub fn boot(started: Instant, config: &Config) -> Error {
    match prepare(started, config) {
        Ok((root, launch)) => launch::exec(&root, &launch, std::env::args_os().skip(1)),
        Err(e) => e,
    }
}

/// Everything before the exec: returns the tree's root and how to launch it.
fn prepare(started: Instant, config: &Config) -> Result<(PathBuf, manifest::Launch)> {
    let exe = std::env::current_exe().map_err(|e| {
        Error::new(
            ErrorKind::PayloadMissing,
            format!("cannot find own executable: {e}"),
        )
    })?;
    let payload = Payload::open(&exe)?;
    let launch = payload.launch()?;
    let cache = Cache::new(&config.cache_dir, &launch.name, &payload.id);
    let _lock = cache.lock()?;

    let mut manifest = None;
    let verdict = cache.check_marker().and_then(|()| {
        if config.verify == Level::Marker {
            return Ok(());
        }
        let m = manifest.insert(payload.manifest().map_err(|e| e.to_string())?);
        verify::check_tree(&cache.root, m, config.verify)
    });
    let (decision, reason, threads) = match verdict {
        Ok(()) => {
            cache.remove_leftovers();
            (
                "reuse",
                format!("intact copy ({} check)", config.verify.as_str()),
                0,
            )
        }
        Err(why) => {
            let manifest = match manifest {
                Some(m) => m,
                None => payload.manifest()?,
            };
            let threads = extract_fresh(&payload, &manifest, &cache)?;
            ("extract", why, threads)
        }
    };
    if !config.quiet {
        let id = hex(&payload.id);
        let report = Report {
            decision,
            reason: &reason,
            started,
            fields: vec![
                ("name", Value::Text(&launch.name)),
                ("payload", Value::Text(&id[..16])),
                ("verify", Value::Text(config.verify.as_str())),
                ("threads", Value::Number(threads as u64)),
            ],
        };
        eprintln!("{}", report.line());
    }
    Ok((cache.root, launch))
}

/// The cold path, under the lock: clear away leftovers, check space, extract into
/// staging, publish. Returns the number of threads that decoded chunks.
fn extract_fresh(payload: &Payload, manifest: &manifest::Manifest, cache: &Cache) -> Result<usize> {
    let mut trash = cache.sweep()?;
    if !trash.is_empty() {
        cache.cleanup_pending();
    }
    cache.ensure_space(manifest, &mut trash)?;
    let staging = cache.staging();
    // Modes recorded in the payload are applied exactly; the runtime gets Lambda's
    // umask back before the exec.
    let umask = sys::set_umask(0);
    let extracted = extract::extract(payload, manifest, &staging);
    sys::set_umask(umask);
    let extracted = extracted.and_then(|stats| {
        cache.publish(&staging)?;
        Ok(stats.threads)
    });
    let threads = match extracted {
        Ok(threads) => threads,
        Err(e) => {
            let _ = cache::remove_tree(&staging);
            return Err(match e.kind {
                ErrorKind::NoSpace => Error::new(
                    ErrorKind::NoSpace,
                    format!(
                        "ran out of space ({e}); {}",
                        cache::no_space(&cache.dir, manifest)
                    ),
                ),
                _ => e,
            });
        }
    };
    // Deleting an old tree is left until the new one is in place: on ext4, inodes
    // freed moments ago are skipped by the allocator, which slows the extraction.
    cache.clean_up(&mut trash)?;
    Ok(threads)
}

/// The failure's log line and, under Lambda, its init-error report.
pub fn fail(started: Instant, err: &Error) {
    eprintln!("coldpack: error: {err}");
    let report = Report {
        decision: "error",
        reason: &err.message,
        started,
        fields: vec![("error_type", Value::Text(err.kind.lambda_type()))],
    };
    eprintln!("{}", report.line());
    if let Some(api) = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .ok()
        .filter(|v| !v.is_empty())
    {
        if let Err(why) = runtime_api::report_init_error(&api, err.kind.lambda_type(), &err.message)
        {
            eprintln!("coldpack: init error not reported: {why}");
        }
    }
}
