//! The crate's top-level error: one variant per module, and the one place that maps an error
//! to an exit code (0 success, 1 the work failed, 2 the input is invalid, 130 interrupted).

use crate::{
    communicator::CommunicatorError, definition::DefinitionError, export::ExportError,
    layer::LayerError, process::ProcessError, qemu::QemuError, seed::SeedError,
    source::SourceError, stage::StageError, store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Definition(#[from] Box<DefinitionError>),
    #[error("{0}")]
    Usage(String),
    #[error("`strata {0}` is not built yet")]
    NotBuiltYet(&'static str),
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    Communicator(#[from] CommunicatorError),
    #[error(transparent)]
    Stage(#[from] Box<StageError>),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Build(Box<crate::build::BuildFailed>),
}

impl From<DefinitionError> for Error {
    fn from(error: DefinitionError) -> Self {
        Error::Definition(Box::new(error))
    }
}

impl Error {
    /// The process exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Definition(_) | Error::Usage(_) => 2,
            Error::Interrupted => 130,
            _ => 1,
        }
    }
}

impl From<StageError> for Error {
    fn from(error: StageError) -> Self {
        Error::Stage(Box::new(error))
    }
}
