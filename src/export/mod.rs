//! Export: flatten a layer chain into standalone images with checksums, a manifest, and
//! what OpenStack and Proxmox need. Must not build layers.

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("`strata export` is not built yet")]
    NotBuiltYet,
}
