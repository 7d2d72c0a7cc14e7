//! strata's integration tests, as one test binary: the crate is linked once instead of once per
//! file. Each module is what a `tests/NAME.rs` file was; `common` and `fetch_support` are their
//! shared helpers.
//!
//! Tests that boot a guest live in modules whose names start with `guest_` (and the guest part of
//! `communicator_qga`); they are `#[ignore]`d, so `cargo test` alone stays quick without QEMU, and
//! `scripts/test.sh` runs them (`--run-ignored all`), one at a time (`.config/nextest.toml`).

mod common;
mod fetch_support;

mod cache_fuzz;
mod cache_redirect;
mod cache_registry;
mod cache_trust;
mod cli_cache;
mod cli_drift;
mod cli_export;
mod cli_help;
mod cli_sbom;
mod cli_store;
mod cli_trust;
mod cli_validate;
mod communicator_qga;
mod communicator_ssh;
mod definition_errors;
mod definition_fuzz;
mod fetch;
mod guest_agent_build;
mod guest_build;
mod guest_cache;
mod guest_check;
mod guest_drift;
mod guest_export;
mod guest_faults;
mod guest_publish;
mod guest_sbom;
mod guest_screen;
mod guest_trust;
mod qemu_process;
