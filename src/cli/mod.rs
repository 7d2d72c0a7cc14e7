//! The command line: clap types in `args`, and dispatch from a parsed command to the engine.
//! Owns exit codes (through `Error::exit_code`); must not print except through `report/`.

mod args;
mod build;
mod cache;
mod diff;
mod drift;
mod error;
mod export;
mod fetch;
mod gc;
mod key;
mod layers;
mod publish;
mod run;
mod sbom;
mod test;
mod validate;

use std::process::ExitCode;

use clap::Parser;

pub use args::*;
pub use error::{Error, StopSignal};

use crate::report;

/// Parses the command line, runs it, prints any error, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    report::init_debug_log(cli.global.verbose);
    let format = cli.global.log_format;
    let is_build = matches!(cli.command, Command::Build(_));
    let outcome = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => Err(Failure::from(Error::Runtime(format!(
            "failed to start the async runtime: {error}"
        )))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // Drift found: the findings and the summary said it all; only the exit code is left.
        Err(Failure { error: error @ Error::DriftFound(_), .. }) => {
            ExitCode::from(error.exit_code())
        }
        Err(Failure { error, hint }) => {
            match &error {
                Error::Definition(definition) => report::diagnostic::print(definition),
                other => report::print_error(other),
            }
            // `build` emitted its `error` event already; every other command's goes here.
            if format == report::LogFormat::Json && !is_build {
                report::json_error(&error);
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
        Command::Fetch { definition, offline } => {
            interruptible(fetch::run(&definition, offline, global)).await
        }
        // Reached only through `run`, which handles it first; kept for exhaustiveness.
        Command::Build(args) => build::run(&args, global).await.map_err(|failure| failure.error),
        Command::Layers { definition } => layers::run(&definition, global).await,
        Command::Push(args) => cache::push(&args, global).await,
        Command::Pull(args) => cache::pull(&args, global).await,
        Command::Key(command) => key::run(&command, global),
        Command::Export(args) => export::run(&args, global).await,
        Command::Run { definition, stage } => run::run(&definition, stage.as_deref(), global).await,
        Command::Gc { definitions, all, dry_run } => gc::run(&definitions, all, dry_run, global),
        Command::Test { definition, stage, junit } => {
            test::run(&definition, stage.as_deref(), junit.as_deref(), global).await
        }
        Command::Diff { definition, from, to } => {
            diff::run(&definition, from.as_deref(), to.as_deref(), global)
        }
        Command::Drift(args) => interruptible(drift::run(&args, global)).await,
        Command::Publish(args) => publish::run(&args, global).await,
        Command::Sbom(args) => sbom::run(&args, global),
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

/// Runs `work` until it finishes or strata is asked to stop (Ctrl-C, SIGTERM, SIGHUP). Then
/// the work is dropped: QEMU is killed with its process group and temporary folders (the run
/// folder with the seed, work folders) are removed by their guards, so the store is left as
/// it was; the exit code says which signal it was.
pub async fn interruptible<T>(
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let stop = stop_signal()?;
    tokio::select! {
        result = work => result,
        signal = stop => Err(Error::Interrupted(signal)),
    }
}

/// Listens for the signals that ask strata to stop, from now on; the future ends at the first.
pub fn stop_signal() -> Result<impl std::future::Future<Output = StopSignal>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|error| Error::Runtime(format!("failed to handle signals: {error}")))
    };
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let mut hang_up = listen(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => StopSignal::Interrupt,
            _ = terminate.recv() => StopSignal::Terminate,
            _ = hang_up.recv() => StopSignal::HangUp,
        }
    })
}

/// Takes the gc lock shared (gc takes it exclusively), waiting on a blocking thread.
pub async fn lock_gc_shared(store: &crate::store::Store) -> Result<std::fs::File, Error> {
    Ok(store.lock_async("gc", crate::store::LockMode::Shared).await?)
}
