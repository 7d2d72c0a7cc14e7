//! Drift: what a system holds (packages, and a manifest of the files under some roots), how to
//! collect that inside a guest or on a live server with one shell command, and how two such
//! inventories differ (DESIGN §7).
//!
//! Owns the inventory model (serialized into layer.json), the collection script and the parser
//! of its output, the ignore rules and the comparison. It must not run anything, talk to a guest,
//! read definitions or layers, or print: callers hand it plain values (roots, patterns, the bytes
//! a guest printed) and get typed values back. So `layer` (which records an inventory) and
//! `stage` (which runs the script) may both import it; it imports nothing of the crate but `process::shell_quote`, a leaf.

mod collect;
mod compare;
mod ignore;
mod model;
mod parse;

pub use collect::collect_script;
pub use compare::{Change, Compare, Finding, compare};
pub use ignore::{DEFAULT_IGNORE, DEFAULT_ROOTS, IgnoreRules, Roots};
pub use model::{
    FileEntry, FileType, Inventory, Manifest, Mode, OsRelease, Package, SourcePackage,
};
pub use parse::{INVENTORY_MAGIC, parse_inventory};

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("[drift] roots: `{root}` {why}")]
    InvalidRoot { root: String, why: &'static str },
    #[error(
        "[drift] ignore: `{pattern}` is not a glob pattern (write one like \"/etc/ssh/ssh_host_*\")"
    )]
    InvalidPattern {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("[drift] ignore: `{pattern}` {why}")]
    UnusablePattern { pattern: String, why: &'static str },
    /// The collection script's output could not be read (cut short, or not its output at all).
    #[error("the inventory the system printed is unreadable at byte {offset}: {what}")]
    Malformed { offset: usize, what: String },
}
