//! The layer store: cache keys, layer folders, the lock, backing chains, and gc.
//! Must not boot anything.

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layers are not built yet")]
    NotBuiltYet,
}
