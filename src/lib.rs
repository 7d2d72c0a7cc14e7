//! strata builds VM images locally with QEMU, one content-addressed qcow2 layer per stage.
//!
//! The modules are named after the domain: `definition` (what to build), `source`
//! (the base image), `seed` (cloud-init), `qemu` (the machine), `communicator`
//! (talking to the guest), `stage` (one stage from overlay to layer), `layer` (the
//! store of layers), `export` (images that leave the machine), `publish` (into a cloud's image
//! service). `events` is the only
//! way the engine tells the outside world anything; `report` is the only code that prints.

pub mod build;
pub mod cache;
pub mod check;
pub mod cli;
pub mod communicator;
pub mod definition;
pub mod drift;
pub mod events;
pub mod export;
pub mod fleet;
pub mod layer;
pub mod process;
pub mod publish;
pub mod qemu;
pub mod report;
pub mod seed;
pub mod source;
pub mod stage;
pub mod store;
pub mod units;

pub use cli::Error;
