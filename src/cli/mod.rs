//! The command line: clap types in `args`, and dispatch from a parsed command to the engine.
//! Owns exit codes (through `Error::exit_code`); must not print except through `report/`.

mod args;

use std::process::ExitCode;

use clap::Parser;

pub use args::*;

use crate::error::Error;
use crate::report;

/// Parses the command line, runs it, prints any error, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Usage(format!("failed to start the async runtime: {error}")))
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report::print_error(&error);
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Validate { definitions } => validate(&definitions),
        Command::Fetch { .. } => Err(Error::NotBuiltYet("fetch")),
        Command::Build(_) => Err(Error::NotBuiltYet("build")),
        Command::Layers { .. } => Err(Error::NotBuiltYet("layers")),
        Command::Export(_) => Err(Error::NotBuiltYet("export")),
        Command::Run { .. } => Err(Error::NotBuiltYet("run")),
        Command::Gc { .. } => Err(Error::NotBuiltYet("gc")),
    }
}

fn validate(_definitions: &[std::path::PathBuf]) -> Result<(), Error> {
    Err(Error::NotBuiltYet("validate"))
}
