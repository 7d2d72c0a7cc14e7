//! The layer store: cache keys (`key`, with the identity of saved guests: `boot_key`,
//! `machine_shape`), the plan (which stages are cached, `--stage`, `--rebuild`, `plan`), layer
//! folders (`layers/KEY/disk.qcow2` + `layer.json`, `store`), the per-key lock, commit by
//! rename from `tmp/`, cheap verification, backing chains, saved guests on disk (restore
//! points and sources' first boots, and their cap: `restore_points`), comparing layers'
//! records (`diff`) and gc. Must not boot anything; it only reads and moves files.

pub mod diff;
pub mod gc;
mod key;
pub mod plan;
mod restore_points;
mod store;

pub use key::{
    Foundation, KeyInputs, LayerKey, ansible_document, boot_key, compute as compute_key,
    machine_shape, sha256_hex,
};
pub use plan::{
    BuiltStage, Plan, PlanError, PlanOptions, PlannedStage, Status, built_stage, first_boot_key,
    plan, plan_from_store, seed_template, selected_stages, source_file_name,
};
pub use restore_points::{BOOT_RECORD_FILE, BootRecord, RestorePoint, SavedBoot};
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
