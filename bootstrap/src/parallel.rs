//! The one way the bootstrap spreads work over cores: numbered jobs taken in order by
//! a few scoped threads, stopping all of them at the first failure.
//!
//! Threads come from `available_parallelism`, which honours the cgroup CPU quota that
//! Lambda uses to size a function's share of the machine.

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

/// Runs `work(job, state)` for every job in `0..jobs` on `threads` threads, each with
/// its own `state` from `init` (a buffer, say); returns the first error.
pub fn run<S, E: Send>(
    jobs: usize,
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(usize, &mut S) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut state = init();
                while !failed.load(Ordering::Relaxed) {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    if job >= jobs {
                        break;
                    }
                    if let Err(e) = work(job, &mut state) {
                        failed.store(true, Ordering::Relaxed);
                        first
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    match first.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
