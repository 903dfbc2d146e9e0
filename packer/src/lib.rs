//! `coldpack`, the build-time half: walks a runtime directory and writes the packed
//! `bootstrap` that Lambda runs, the task part kept beside it, and the zip that carries
//! both; reads one back for `inspect` and `verify`; starts one locally for `run`.
//!
//! The payload format itself lives in the bootstrap crate (`coldpack_bootstrap::
//! payload`, `::manifest`, `::chunk`, `::task`), next to the reader that must never
//! misread it.

pub mod budget;
pub mod cli;
pub mod compat;
pub mod compress;
pub mod config;
pub mod elf;
pub mod head;
pub mod image;
pub mod inspect;
pub mod lambda_zip;
pub mod lint;
pub mod pack;
pub mod progress;
pub mod resolve;
pub mod run;
pub mod split;
pub mod stock;
pub mod task_part;
pub mod walk;
pub mod work;

use std::sync::Mutex;

/// `println!` that hands back a failed write instead of panicking: a reader that goes
/// away (`coldpack inspect OUT | head`) ends the command quietly (see `main`).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

/// `eprintln!` likewise, for what the commands say on stderr.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stderr(), $($arg)*)?
    }};
}

/// The static x86_64 bootstrap built by `build.rs`, carried inside `coldpack`.
pub const STOCK_BOOTSTRAP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bootstrap-x86_64"));
/// The static arm64 one: empty when `coldpack` was built without the aarch64 cross
/// toolchain ([`stock::bootstrap`] then says what to install).
pub const STOCK_BOOTSTRAP_ARM64: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bootstrap-arm64"));

/// Runs `job(i)` for `i` in `0..count` on all cores, keeping results in order.
pub fn parallel_map<T: Send>(
    count: usize,
    job: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let results: Vec<Mutex<Option<T>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let threads = coldpack_bootstrap::parallel::threads_for(count, usize::MAX);
    coldpack_bootstrap::parallel::run(
        count,
        threads,
        || Ok(()),
        |i, ()| {
            let value = job(i)?;
            *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
            anyhow::Ok(())
        },
    )?;
    Ok(results
        .into_iter()
        .filter_map(|slot| slot.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect())
}
