//! One stage, from overlay to layer: create the overlay, seed, boot, wait, run the steps,
//! sysprep, power off, hand the disk to `layer/`. Must not decide what is cached.

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("`strata build` is not built yet")]
    NotBuiltYet,
}
