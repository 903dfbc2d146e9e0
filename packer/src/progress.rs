//! Progress while packing: a bar on a terminal, one plain line a stage otherwise, so
//! that CI logs stay readable and free of escape codes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    terminal: bool,
}

impl Progress {
    /// Bars when stderr is a terminal.
    pub fn for_stderr() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// A stage of `total` units (bytes when `bytes`), or of unknown length when 0.
    pub fn stage(&self, what: &'static str, total: u64, bytes: bool) -> Stage {
        let bar = self.terminal.then(|| {
            let bar = ProgressBar::with_draw_target(
                (total > 0).then_some(total),
                ProgressDrawTarget::stderr(),
            );
            let template = match (total > 0, bytes) {
                (false, _) => "{spinner} {msg}",
                (true, true) => "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
                (true, false) => "{msg:>12} [{bar:40}] {pos}/{len}",
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(what);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Stage {
            bar,
            started: Instant::now(),
        }
    }
}

pub struct Stage {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Stage {
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Ends the stage with a line saying what it did.
    pub fn finish(self, done: String) {
        let line = format!(
            "coldpack: {done} ({:.2} s)",
            self.started.elapsed().as_secs_f64()
        );
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}
