//! The command line: clap types in `args`, and dispatch from a parsed command to the engine.
//! Owns exit codes (through `Error::exit_code`); must not print except through `report/`.

mod args;
mod build;
mod export;
mod fetch;
mod gc;
mod layers;
mod run;
mod validate;

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
        Command::Validate { definitions } => validate::run(&definitions, &cli.global),
        Command::Fetch { definition, offline } => {
            fetch::run(&definition, offline, &cli.global).await
        }
        Command::Build(args) => build::run(&args, &cli.global).await,
        Command::Layers { definition } => layers::run(&definition, &cli.global),
        Command::Export(args) => export::run(&args, &cli.global).await,
        Command::Run { definition, stage } => run::run(&definition, stage.as_deref(), &cli.global).await,
        Command::Gc { definitions, dry_run } => gc::run(&definitions, dry_run, &cli.global),
    }
}

impl GlobalArgs {
    /// Opens the store named by `--store`/`STRATA_STORE`, or the default one.
    pub fn open_store(&self) -> Result<crate::store::Store, Error> {
        let root = match &self.store {
            Some(root) => root.clone(),
            None => crate::store::Store::default_root()?,
        };
        Ok(crate::store::Store::open(&root)?)
    }

    /// The observer that shows events to the user in the chosen format.
    #[must_use]
    pub fn events(&self) -> crate::events::Events {
        crate::events::Events::none().with(report::observer(
            self.log_format,
            self.verbose,
            self.quiet,
        ))
    }
}

/// Runs `work` until it finishes or the user presses Ctrl-C. On Ctrl-C the work is dropped:
/// QEMU is killed with its process group and temporary folders are removed by their guards,
/// so the store is left as it was.
pub async fn interruptible<T>(work: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    }
}
