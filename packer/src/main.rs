//! `coldpack`: a thin shell over the library that turns a result into an exit code.

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
        Err(err) => {
            eprintln!("coldpack: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
