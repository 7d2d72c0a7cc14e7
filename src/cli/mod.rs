//! The command line: clap types in `args`, and dispatch from a parsed command to the engine.
//! Owns exit codes (through `Error::exit_code`); must not print except through `report/`.

mod args;
mod build;
mod diff;
mod error;
mod export;
mod fetch;
mod gc;
mod layers;
mod run;
mod validate;

use std::process::ExitCode;

use clap::Parser;

pub use args::*;
pub use error::Error;

use crate::report;

/// Parses the command line, runs it, prints any error, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    report::init_debug_log(cli.global.verbose);
    let format = cli.global.log_format;
    let outcome = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => Err(Failure::from(Error::Runtime(format!(
            "failed to start the async runtime: {error}"
        )))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { error, hint }) => {
            match &error {
                Error::Definition(definition) => report::diagnostic::print(definition),
                other => report::print_error(other),
            }
            // After the error, so that the last lines on screen say where to look next.
            if let Some(hint) = hint {
                report::note(format, false, &hint);
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// A failed command: its error, and what to tell the user after it (where the logs are,
/// what to try next).
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub hint: Option<String>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure { error, hint: None }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Build(args) => build::run(&args, &cli.global).await,
        command => Ok(run_other(command, &cli.global).await?),
    }
}

/// The commands whose failures carry no hint.
async fn run_other(command: Command, global: &GlobalArgs) -> Result<(), Error> {
    match command {
        Command::Validate { definitions } => validate::run(&definitions, global),
        Command::Fetch { definition, offline } => fetch::run(&definition, offline, global).await,
        // Reached only through `run`, which handles it first; kept for exhaustiveness.
        Command::Build(args) => build::run(&args, global).await.map_err(|failure| failure.error),
        Command::Layers { definition } => layers::run(&definition, global),
        Command::Export(args) => export::run(&args, global).await,
        Command::Run { definition, stage } => run::run(&definition, stage.as_deref(), global).await,
        Command::Gc { definitions, dry_run } => gc::run(&definitions, dry_run, global),
        Command::Diff { definition, from, to } => {
            diff::run(&definition, from.as_deref(), to.as_deref(), global)
        }
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
pub async fn interruptible<T>(
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    }
}
