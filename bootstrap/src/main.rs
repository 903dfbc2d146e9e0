//! The file Lambda runs as `bootstrap`: every start either execs the runtime or ends
//! with an error line saying why not (then its JSON log line) and a non-zero exit.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let started = Instant::now();
    coldpack_bootstrap::report_panics(started);
    let err = match coldpack_bootstrap::Config::from_env() {
        Ok(config) => coldpack_bootstrap::boot(started, &config),
        Err(e) => e,
    };
    coldpack_bootstrap::fail(started, &err);
    ExitCode::FAILURE
}
