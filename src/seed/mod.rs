//! The cloud-init NoCloud seed: rendering `seeds/` templates with minijinja (strict) and
//! writing the CIDATA vfat image. Must not start QEMU or talk to a guest.

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seed rendering is not built yet")]
    NotBuiltYet,
}
