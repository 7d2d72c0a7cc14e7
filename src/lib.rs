//! strata builds VM images locally with QEMU, one content-addressed qcow2 layer per stage.
//!
//! The modules are named after the domain. Imports go one way, from the command line down:
//! - `cli`: parses the command line, calls one engine function, hands the result to `report`;
//!   the only code that knows the crate-wide error and exit codes.
//! - the commands' engines: `build` (a whole build and its warm starts),
//!   `instance` (a throwaway guest on a layer: `strata run`, `strata test`), `export` (images
//!   that leave the machine), `gc` (what the store can let go), `fleet` (live servers against
//!   a layer: `strata drift`), `cache` (the shared cache in an OCI registry: push, pull, and
//!   verification before anything pulled enters the store), `sbom` (what a built stage
//!   contains, and an export's provenance), `publish` (an exported stage into a cloud's
//!   image service: Keystone and Glance).
//! - `trust`: signing keys, trusted keys, and cosign-format signatures (§9).
//! - `stage`: stages in a guest, from overlay to a disk ready to commit.
//! - what a stage uses: `qemu` (the machine), `communicator` (talking to the guest), `check`
//!   (what a `[[test]]` runs and its results), `layer` (the store of layers, the plan, saved
//!   guests), `source` (the base image), `seed` (cloud-init).
//! - leaves: `definition` (what to build, parsed and validated), `drift` (inventories and
//!   their comparison), `store` (the store's folders and locks), `process` (every child
//!   process, and shell text), `tls` (the TLS crypto provider), `units` (sizes and
//!   durations), `events` (the only way the engine tells the outside world anything),
//!   `report` (the only code that prints).

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
pub mod gc;
pub mod instance;
pub mod layer;
pub mod process;
pub mod publish;
pub mod qemu;
pub mod report;
pub mod sbom;
pub mod seed;
pub mod source;
pub mod stage;
pub mod store;
pub mod tls;
pub mod trust;
pub mod units;

pub use cli::Error;
