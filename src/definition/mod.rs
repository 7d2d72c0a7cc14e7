//! Image definitions: `images/*.toml` parsed with spans, validated completely, handed on as
//! a typed `ImageDefinition`. Owns every check that needs neither network nor QEMU;
//! must not download, boot, or touch the store.

mod types;

pub use types::*;

/// A definition that cannot be used, with where and why. Rendered by miette.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("failed to read definition {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
