//! The cloud-init NoCloud seed: rendering `seeds/` templates with minijinja (strict) and
//! writing the CIDATA vfat image. Must not start QEMU or talk to a guest.
//!
//! `render` turns a template and a [`SeedInput`] into user-data; [`meta_data`] writes the
//! meta-data with a fresh instance id; [`write_cidata`] puts the files on a vfat image
//! labelled CIDATA, mode 0600 because user-data holds the guest's private host key.

mod cidata;
mod render;

use std::path::PathBuf;

pub use cidata::{SeedFiles, write_cidata};
pub use render::{
    BUILD_HOSTNAME, DEFAULT_TEMPLATE, DEFAULT_TEMPLATE_NAME, InstanceId, SeedInput, meta_data,
    render, render_default,
};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "failed to render the seed template {template}{}: fix the template; it gets user, ssh_authorized_key, host_key_private, host_key_public, hostname, image, stage and vars",
        line.map(|line| format!(" at line {line}")).unwrap_or_default()
    )]
    Render {
        template: String,
        line: Option<usize>,
        #[source]
        source: minijinja::Error,
    },
    #[error("failed to draw random bytes for the seed's instance id")]
    Random(#[source] getrandom::Error),
    #[error("failed to write the seed image {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
