//! `coldpack`: a thin shell over the library that turns a result into an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use coldpack::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pack(args) => coldpack::pack::cmd_pack(&args),
        Command::Run(args) => coldpack::run::cmd_run(&args),
        Command::Inspect(args) => coldpack::inspect::cmd_inspect(&args),
        Command::Verify(args) => coldpack::inspect::cmd_verify(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing is wrong, as ripgrep treats it.
        Err(err) if broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "coldpack: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
