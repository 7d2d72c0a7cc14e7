//! The shared cache: layers, sources and restore points as artifacts on an OCI registry, so
//! runners that build the same images share their layers (DESIGN.md §6). Owns the cache URL,
//! registry credentials, the artifact format (media types, tags, annotations) and moving
//! artifacts between the registry and the store. A pulled layer enters the store only through
//! [`crate::layer::LayerStore`] (tmp/, verified, renamed under the layer's lock), and only
//! after its signature is checked against the runner's [`crate::trust::Policy`] (DESIGN.md §9);
//! what is pushed is signed in cosign's format.
//! Decides which artifacts a definition needs moved ([`sync`]), not when to push or pull nor
//! whether an unreachable registry is an error: the caller does (`--push`, `--cache-required`);
//! [`CacheError::is_unavailable`] and [`CacheError::is_refused`] tell it which.

mod artifact;
mod auth;
mod client;
mod sync;
mod transfer;
mod url;

use std::path::PathBuf;

pub use artifact::{
    LAYER_ARTIFACT_TYPE, LAYER_CONFIG_MEDIA_TYPE, LAYER_DISK_MEDIA_TYPE, RESTORE_ARTIFACT_TYPE,
    SOURCE_ARTIFACT_TYPE, layer_tag, restore_tag, source_tag,
};
pub use auth::{Credentials, CredentialsFrom, PASSWORD_ENV, USER_ENV, discover_with};
pub use client::{Cache, Pushed, parse_config, parse_manifest};
pub use sync::{
    SBOM_SUFFIX, pull_chains, pull_definition, pull_layer_sbom, pull_source, push_all,
    push_definition,
};
pub use url::CacheUrl;

use crate::layer::LayerError;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "{value:?} is not a cache URL ({reason}): use oci://HOST[:PORT]/REPOSITORY (HTTPS) or \
         oci+http://HOST[:PORT]/REPOSITORY (plain HTTP)"
    )]
    BadUrl { value: String, reason: &'static str },
    #[error(
        "the shared cache {registry} cannot be reached while {doing}: check that the registry \
         runs and this runner can reach it"
    )]
    Unavailable {
        registry: String,
        doing: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the shared cache {registry} refused access while {doing}: check {}", hint)]
    Auth {
        registry: String,
        doing: String,
        hint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the shared cache {registry} has no {what}")]
    NotFound { registry: String, what: String },
    #[error(
        "{what} from {registry} does not match its digest (expected {expected}, got {actual}): \
         nothing was stored"
    )]
    DigestMismatch { registry: String, what: String, expected: String, actual: String },
    #[error("{what} in {registry} is not what strata expects ({reason}): nothing was stored")]
    Invalid { registry: String, what: String, reason: String },
    #[error(
        "{what} from {registry} is refused: nothing of it was stored (its signature is checked \
         against the keys given with --trust and --sign-key)"
    )]
    Refused {
        registry: String,
        what: String,
        #[source]
        refusal: crate::trust::Refusal,
    },
    #[error(
        "{what} cannot be pulled before its parent layer {parent}: pull the chain from the bottom"
    )]
    ParentMissing { what: String, parent: String },
    #[error("the shared cache {registry} failed while {doing}")]
    Registry {
        registry: String,
        doing: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to use {path} for the shared cache")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{registry} has no layer for stage {} of {definition}: build it (`strata build DEF --push`)",
        stages.join(", ")
    )]
    NotInCache { registry: String, stages: Vec<String>, definition: String },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Plan(#[from] crate::layer::PlanError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
}

impl CacheError {
    /// The registry is down, unreachable or failing (5xx, a broken connection): a warning for a
    /// build that may go on locally, unless the user asked for the cache to be required.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CacheError::Unavailable { .. })
    }

    /// A pulled artifact was refused for its signature (already reported as an event): the
    /// stage is built locally instead, unless the cache is required.
    #[must_use]
    pub fn is_refused(&self) -> bool {
        matches!(self, CacheError::Refused { .. })
    }
}
