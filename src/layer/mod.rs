//! The layer store: cache keys, layer folders (`layers/KEY/disk.qcow2` + `layer.json`), the
//! per-key lock, commit by rename from `tmp/`, cheap verification, backing chains, and gc.
//! Must not boot anything; it only reads and moves files.

mod boot_restore;
pub mod gc;
mod key;
pub mod plan;
mod restore_cap;
mod store;

pub use boot_restore::{BOOT_RECORD_FILE, BootRecord, SavedBoot};
pub use key::{
    Foundation, KeyInputs, LayerKey, ansible_document, boot_key, compute as compute_key, sha256_hex,
};
pub use plan::{
    BuiltStage, Plan, PlanError, PlanOptions, PlannedStage, Status, built_stage, plan,
    plan_from_store, seed_template, selected_stages, source_file_name,
};
pub use restore_cap::RestorePoint;
pub use store::{
    CHECKS_FILE, DISK_FILE, Layer, LayerMetadata, LayerStore, Lookup, METADATA_FILE, RESTORE_DIR,
    RESTORE_META_FILE, WorkDir, backing_for, hash_file, now_secs,
};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("failed to read {path}, an input of the stage's cache key")]
    ReadInput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode a cache key")]
    Encode(#[source] serde_json::Error),
    #[error("failed to write the layer store at {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read layer metadata {path}: the layer will be rebuilt")]
    Metadata {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
