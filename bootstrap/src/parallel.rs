//! The one way the bootstrap spreads work over cores: numbered jobs taken in order by
//! a few scoped threads, stopping all of them at the first failure.
//!
//! Threads come from `available_parallelism`, which honours the cgroup CPU quota that
//! Lambda uses to size a function's share of the machine. The calling thread is one of
//! the workers, and a thread the system refuses to start (a process limit) just means
//! fewer workers: the jobs still all run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Threads worth starting for `jobs` jobs, at most `max`.
pub fn threads_for(jobs: usize, max: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(max)
        .min(jobs)
        .max(1)
}

/// Runs `work(job, state)` for every job in `0..jobs` on up to `threads` threads, each
/// with its own `state` from `init` (a buffer, say); returns the first error.
pub fn run<S, E: Send>(
    jobs: usize,
    threads: usize,
    init: impl Fn() -> Result<S, E> + Sync,
    work: impl Fn(usize, &mut S) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first: Mutex<Option<E>> = Mutex::new(None);
    let fail = |e: E| {
        failed.store(true, Ordering::Relaxed);
        first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    };
    let worker = || {
        let mut state = match init() {
            Ok(state) => state,
            Err(e) => return fail(e),
        };
        while !failed.load(Ordering::Relaxed) {
            let job = next.fetch_add(1, Ordering::Relaxed);
            if job >= jobs {
                break;
            }
            if let Err(e) = work(job, &mut state) {
                fail(e);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            if std::thread::Builder::new()
                .spawn_scoped(scope, worker)
                .is_err()
            {
                break;
            }
        }
        worker();
    });
    match first.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
