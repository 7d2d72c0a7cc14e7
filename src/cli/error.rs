//! The crate-wide error: one variant per module the commands call, and the one place that maps
//! an error to an exit code (0 success, 1 the work failed, 2 the input is invalid, 3 drift
//! found, 130 interrupted). Only `cli/` knows it; every other module returns its own error.

use crate::{
    build::BuildError, cache::CacheError, definition::DefinitionError, export::ExportError,
    fleet::FleetError, gc::GcError, instance::InstanceError, layer::LayerError, layer::PlanError,
    layer::diff::DiffError, process::ProcessError, publish::PublishError, sbom::SbomError,
    source::SourceError, store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Definition(#[from] Box<DefinitionError>),
    /// Invalid arguments: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The machine or the store would not let the work happen (the async runtime did not
    /// start, a lock could not be waited for, what a command needs is not there yet): exit 1.
    #[error("{0}")]
    Runtime(String),
    /// Stopped by a signal, after cleaning up: exit 128 + the signal's number.
    #[error("interrupted by {}", .0.name())]
    Interrupted(StopSignal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Instance(#[from] Box<InstanceError>),
    #[error(transparent)]
    Gc(#[from] GcError),
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Key(#[from] crate::trust::KeyError),
    #[error(transparent)]
    Fleet(#[from] Box<FleetError>),
    #[error(transparent)]
    Publish(#[from] Box<PublishError>),
    #[error(transparent)]
    Sbom(#[from] SbomError),
    /// `strata drift` found drift on every server it could check (and checked them all): exit 3.
    /// Not an error to print: the findings and the summary were shown already.
    #[error("{0}")]
    DriftFound(String),
}

/// A signal that asks strata to stop: Ctrl-C, a CI job's cancel (SIGTERM), a closed terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
    HangUp,
}

impl StopSignal {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT (Ctrl-C)",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::HangUp => "SIGHUP",
        }
    }

    /// 128 + the signal's number, as a shell reports a process the signal killed.
    #[must_use]
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
            StopSignal::HangUp => 129,
        }
    }
}

impl From<DefinitionError> for Error {
    fn from(error: DefinitionError) -> Self {
        Error::Definition(Box::new(error))
    }
}

impl From<PublishError> for Error {
    fn from(error: PublishError) -> Self {
        Error::Publish(Box::new(error))
    }
}

impl From<FleetError> for Error {
    fn from(error: FleetError) -> Self {
        Error::Fleet(Box::new(error))
    }
}

impl From<InstanceError> for Error {
    fn from(error: InstanceError) -> Self {
        Error::Instance(Box::new(error))
    }
}

impl Error {
    /// The process exit code for this error: 2 only for invalid arguments and definitions.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Definition(_)
            | Error::Usage(_)
            | Error::Plan(PlanError::UnknownStage { .. })
            | Error::Export(ExportError::Plan(PlanError::UnknownStage { .. }))
            | Error::Build(BuildError::Plan(PlanError::UnknownStage { .. }))
            | Error::Diff(
                DiffError::UnknownName { .. } | DiffError::Plan(PlanError::UnknownStage { .. }),
            )
            | Error::Cache(
                CacheError::BadUrl { .. } | CacheError::Plan(PlanError::UnknownStage { .. }),
            ) => 2,
            Error::Instance(error)
                if matches!(
                    **error,
                    InstanceError::NoChecks { .. }
                        | InstanceError::Plan(PlanError::UnknownStage { .. })
                ) =>
            {
                2
            }
            Error::Fleet(error) if error.is_invalid_input() => 2,
            Error::Publish(error) if error.is_invalid_input() => 2,
            Error::Sbom(error) if error.is_invalid_input() => 2,
            Error::Export(ExportError::Sbom(error)) if error.is_invalid_input() => 2,
            Error::Key(error) if error.is_invalid_input() => 2,
            Error::DriftFound(_) => 3,
            Error::Interrupted(signal) => signal.exit_code(),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invalid_input_exits_2() {
        let unknown = || PlanError::UnknownStage {
            definition: "d.toml".into(),
            name: "x".into(),
            stages: "base".into(),
        };
        assert_eq!(Error::Usage("bad".into()).exit_code(), 2);
        assert_eq!(Error::Plan(unknown()).exit_code(), 2);
        assert_eq!(Error::Build(BuildError::Plan(unknown())).exit_code(), 2);
        assert_eq!(Error::from(InstanceError::Plan(unknown())).exit_code(), 2);
        assert_eq!(Error::Diff(DiffError::Plan(unknown())).exit_code(), 2);
        let no_checks = InstanceError::NoChecks { definition: "d.toml".into() };
        assert_eq!(Error::from(no_checks).exit_code(), 2);
        let not_built = || InstanceError::NotBuilt {
            definition: "d.toml".into(),
            stage: "base".into(),
            reason: "missing".into(),
        };
        assert_eq!(Error::from(not_built()).exit_code(), 1);
        assert_eq!(Error::Runtime("no runtime".into()).exit_code(), 1);
        let not_built = PlanError::NotBuilt { stage: "base".into(), reason: "missing".into() };
        assert_eq!(Error::Plan(not_built).exit_code(), 1);
        assert_eq!(Error::DriftFound("1 drifted".into()).exit_code(), 3);
        let bad_line = FleetError::BadHostsLine { path: "f".into(), line: 2, why: "x".into() };
        assert_eq!(Error::from(bad_line).exit_code(), 2);
        let refused = FleetError::SudoPassword { host: "web1".into(), user: "admin".into() };
        assert_eq!(Error::from(refused).exit_code(), 1);
        assert_eq!(Error::Interrupted(StopSignal::Interrupt).exit_code(), 130);
        assert_eq!(Error::Interrupted(StopSignal::Terminate).exit_code(), 143);
        assert_eq!(Error::Interrupted(StopSignal::HangUp).exit_code(), 129);
    }
}
