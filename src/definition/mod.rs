//! Image definitions: `images/*.toml` parsed with spans, validated completely, handed on as
//! a typed `ImageDefinition`. Owns every check that needs neither network nor QEMU;
//! must not download, boot, or touch the store.
//!
//! `raw` is the file's shape (serde), `validate` turns it into `types`, `error` words the
//! problems and points at them (file:line:col, for miette).

mod error;
mod raw;
mod types;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Invalid, Problem};
pub use types::*;

/// A definition that cannot be used, with where and why. Rendered by miette.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DefinitionError {
    #[error("failed to read definition {}", path.display())]
    #[diagnostic(help(
        "check the path: strata takes the definition file itself, like images/demo.toml"
    ))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One or more problems in the file; the first is the one shown first. Displayed as
    /// "FILE:LINE:COL: message" (for logs); miette renders the `Invalid` inside.
    #[error("{}: {}", .0.location(), .0.problem())]
    #[diagnostic(transparent)]
    Invalid(Box<Invalid>),
}

impl DefinitionError {
    /// The problems in the file, first one first; empty for a file that could not be read.
    pub fn problems(&self) -> impl Iterator<Item = &Invalid> {
        let first = match self {
            DefinitionError::Invalid(invalid) => Some(invalid.as_ref()),
            DefinitionError::Read { .. } => None,
        };
        first.into_iter().flat_map(Invalid::all)
    }
}

/// Reads the definition at `path`, parses it and checks it completely: syntax, keys, values,
/// stage order, and that every local file it names exists. Nothing is downloaded.
pub fn load(path: &Path) -> Result<ImageDefinition, DefinitionError> {
    let read_error = |source| DefinitionError::Read { path: path.to_owned(), source };
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    load_str(path, &text)
}

/// Like `load`, with the file's content given; relative paths in it start at `path`'s folder.
pub fn load_str(path: &Path, text: &str) -> Result<ImageDefinition, DefinitionError> {
    let absolute = std::path::absolute(path)
        .map(|absolute| validate::normalize(&absolute))
        .map_err(|source| DefinitionError::Read { path: path.to_owned(), source })?;
    validate::definition(path, &absolute, Arc::new(text.to_owned()))
        .map_err(DefinitionError::Invalid)
}
