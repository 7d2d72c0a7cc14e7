//! Live servers: host specs and `--hosts` files, the SSH connection to a server (made the way
//! `ssh` makes it: known_hosts checked, the user's keys or agent), collecting a server's
//! inventory with drift's one command, comparing it with a layer's record, many servers at
//! once with bounded concurrency, and the summary (DESIGN §7, `strata drift`).
//!
//! Owns connections to servers strata did not build (`connection`) and auditing them
//! (`audit`); the build's own guest connection is `communicator`'s, of which it uses only how
//! a command is started over SSH (`communicator::start_command`). Sits above `drift` (it is
//! handed a layer's inventory, never the layer) and below `cli`; it must not print, read
//! definitions or open the store.

mod audit;
mod connection;
mod host;
mod known_hosts;

use std::path::PathBuf;
use std::time::Duration;

pub use audit::{
    Baseline, CONCURRENCY, HostOutcome, HostReport, Summary, Verdict, check_fleet, check_host,
};
pub use connection::{COLLECT_TIMEOUT, Login};
pub use host::{HostSpec, SSH_PORT, read_hosts_file};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("could not read the hosts file {}", path.display())]
    ReadHosts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}, line {line}: {why} (write one [USER@]HOST[:PORT] a line)", path.display())]
    BadHostsLine { path: PathBuf, line: usize, why: String },
    #[error("{} lists no hosts (one [USER@]HOST[:PORT] a line; `#` starts a comment)", path.display())]
    NoHosts { path: PathBuf },
    #[error("{host}: could not read known hosts from {} (fix or remove the line that names this host)", path.display())]
    KnownHosts {
        path: PathBuf,
        host: String,
        #[source]
        source: Box<russh::keys::Error>,
    },
    #[error("{host}: unreachable (is the address right, the server up and port open?)")]
    Unreachable {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}: unreachable: no TCP connection within {}s (is the address right, the server up and the port open?)", waited.as_secs())]
    ConnectTimeout { host: String, waited: Duration },
    #[error("{host}: the SSH handshake did not finish within {}s", waited.as_secs())]
    HandshakeTimeout { host: String, waited: Duration },
    #[error("{host}: the SSH handshake failed")]
    Handshake {
        host: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error(
        "{host}: the host key ({seen}) is not known: it is in none of {files}; refused, never trusted on first use. To trust it: {fix}"
    )]
    HostKeyUnknown { host: String, seen: String, files: String, fix: String },
    #[error(
        "{host}: the host key CHANGED: the server shows {seen}, which is not the key {files} records for it. Someone may be in between; refused. {fix}"
    )]
    HostKeyChanged { host: String, seen: String, files: String, fix: String },
    #[error("could not load the key {} given with --identity (an OpenSSH private key without a passphrase; use ssh-agent for one with a passphrase)", path.display())]
    Identity {
        path: PathBuf,
        #[source]
        source: Box<russh::keys::Error>,
    },
    #[error("{} is an RSA key, which strata uses only through ssh-agent: `ssh-add {}` (or use an ed25519 or ECDSA key)", path.display(), path.display())]
    RsaKeyFile { path: PathBuf },
    #[error("{host}: the server refused every key for user `{user}` (tried: {}); give the right one with --identity FILE or ssh-agent, or the user as USER@HOST", if tried.is_empty() { "none found: no --identity, no ssh-agent, no ~/.ssh/id_ed25519, id_ecdsa or id_rsa".to_owned() } else { tried.join(", ") })]
    AuthRefused { host: String, user: String, tried: Vec<String> },
    #[error("{host}: the connection failed while trying to {action}")]
    Connection {
        host: String,
        action: &'static str,
        #[source]
        source: Box<russh::Error>,
    },
    #[error(
        "{host}: sudo asks `{user}` for a password; the collection must run as root: allow `{user}` sudo without a password (NOPASSWD) or log in as root@HOST"
    )]
    SudoPassword { host: String, user: String },
    #[error("{host}: the collection command failed ({code}): {stderr}")]
    CollectFailed { host: String, code: String, stderr: String },
    #[error("{host}: the collection did not finish within {}s", waited.as_secs())]
    CollectTimeout { host: String, waited: Duration },
    #[error("{host}: the inventory the server printed is unreadable")]
    Unreadable {
        host: String,
        #[source]
        source: crate::drift::DriftError,
    },
}

impl FleetError {
    /// Whether the error is in what the user gave (a hosts file), not in checking a server.
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, FleetError::BadHostsLine { .. } | FleetError::NoHosts { .. })
    }
}
