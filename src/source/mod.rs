//! Base images: download (resumable, verified while streaming), checksums, and the
//! content-addressed `sources/` cache. Must not know about stages, layers or QEMU.

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`strata fetch` is not built yet")]
    NotBuiltYet,
}
