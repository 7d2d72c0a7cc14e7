//! One SSH connection to a live server, made the way `ssh` makes it: the host key checked
//! against known_hosts (refused when unknown or changed), then the user's keys: `--identity`,
//! else the ssh-agent's, else `~/.ssh/id_ed25519`, `id_ecdsa` (RSA keys through the agent
//! only). Runs one command as root (through `sudo -n` for another user) and returns what it
//! printed. Keys and agent replies are never printed; errors name the host and what to do.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::{HashAlg, PublicKey};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, client};
use tokio::net::TcpStream;

use super::known_hosts::{KnownKeys, Verdict, how_to_trust};
use super::{FleetError, HostSpec};
use crate::communicator::StartStep;

/// How long name resolution and the TCP connection may take: an unreachable server is
/// reported within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Key exchange and authentication.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The collection itself: hashing a large /usr/local on a slow server takes a while.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(600);
/// The most stderr an error quotes.
const STDERR_TAIL: usize = 2000;

/// How to log in: what `ssh` would use.
#[derive(Debug, Clone)]
pub struct Login {
    /// Who logs in when a host names no user.
    pub local_user: String,
    /// `--identity FILE`: the only key tried.
    pub identity: Option<PathBuf>,
    /// known_hosts files to read; keys are added (by the user) to the first.
    pub known_hosts: Vec<PathBuf>,
    /// `~/.ssh`, for the default keys; `None` without a home.
    pub ssh_dir: Option<PathBuf>,
}

/// A logged-in connection.
pub struct Connection {
    handle: client::Handle<HostKeyCheck>,
    user: String,
    host: String,
}

/// Checks the server's key against known_hosts; keeps what it saw for the error.
struct HostKeyCheck {
    known: KnownKeys,
    refused: Arc<Mutex<Option<(Verdict, String)>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, russh::Error> {
        let key: PublicKey = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(certificate) => {
                PublicKey::from(certificate.public_key().clone())
            }
        };
        let verdict = self.known.verdict(&key);
        if verdict == Verdict::Known {
            return Ok(true);
        }
        let seen = format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256));
        if let Ok(mut refused) = self.refused.lock() {
            *refused = Some((verdict, seen));
        }
        Ok(false)
    }
}

impl Connection {
    /// Connects to `host` and logs in.
    pub async fn open(host: &HostSpec, login: &Login) -> Result<Connection, FleetError> {
        let name = host.to_string();
        let known = KnownKeys::read(&login.known_hosts, host)?;
        let mut config = client::Config::default();
        config.preferred.key = std::borrow::Cow::Owned(known.preferred_algorithms());
        let refused = Arc::new(Mutex::new(None));
        let handler = HostKeyCheck { known: known.clone(), refused: Arc::clone(&refused) };
        let stream = tcp_connect(host).await?;
        let _ = stream.set_nodelay(true);
        let handshake = client::connect_stream(Arc::new(config), stream, handler);
        let handle = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(handle)) => handle,
            Ok(Err(source)) => {
                let refused = refused.lock().ok().and_then(|mut refused| refused.take());
                return Err(match refused {
                    Some((verdict, seen)) => host_key_error(host, &known, verdict, seen),
                    None => FleetError::Handshake { host: name, source: Box::new(source) },
                });
            }
            Err(_) => {
                return Err(FleetError::HandshakeTimeout { host: name, waited: HANDSHAKE_TIMEOUT });
            }
        };
        let user = host.user_or(&login.local_user).to_owned();
        let mut connection = Connection { handle, user, host: name };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.authenticate(login)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(FleetError::HandshakeTimeout {
                    host: connection.host,
                    waited: HANDSHAKE_TIMEOUT,
                });
            }
        }
        Ok(connection)
    }

    /// Tries the keys `ssh` would, in its order; fails naming every key tried (by fingerprint
    /// or file, never its content).
    async fn authenticate(&mut self, login: &Login) -> Result<(), FleetError> {
        let mut tried = Vec::new();
        if let Some(identity) = &login.identity {
            let key = russh::keys::load_secret_key(identity, None).map_err(|source| {
                FleetError::Identity { path: identity.clone(), source: Box::new(source) }
            })?;
            if key.algorithm().is_rsa() {
                return Err(FleetError::RsaKeyFile { path: identity.clone() });
            }
            if self.try_key(key).await? {
                return Ok(());
            }
            tried.push(identity.display().to_string());
            return Err(self.refused(tried));
        }
        if self.try_agent(&mut tried).await? {
            return Ok(());
        }
        let defaults = ["id_ed25519", "id_ecdsa", "id_rsa"];
        for path in login.ssh_dir.iter().flat_map(|dir| defaults.map(|name| dir.join(name))) {
            if !path.is_file() {
                continue;
            }
            // An encrypted key needs its passphrase, which only the agent can hold for us.
            let Ok(key) = russh::keys::load_secret_key(&path, None) else {
                tried.push(format!(
                    "{} (unreadable or encrypted: add it to ssh-agent)",
                    path.display()
                ));
                continue;
            };
            if key.algorithm().is_rsa() {
                tried.push(format!("{} (an RSA key: add it to ssh-agent)", path.display()));
                continue;
            }
            if self.try_key(key).await? {
                return Ok(());
            }
            tried.push(path.display().to_string());
        }
        Err(self.refused(tried))
    }

    /// An ed25519 or ECDSA key (strata signs RSA only through the agent: russh's RSA support
    /// is not built in).
    async fn try_key(&mut self, key: russh::keys::PrivateKey) -> Result<bool, FleetError> {
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), None);
        let result = self.handle.authenticate_publickey(self.user.clone(), key).await;
        let result = result.map_err(|source| self.lost("log in", source))?;
        Ok(result.success())
    }

    /// Each identity the agent holds, until one is accepted. No agent: nothing tried.
    async fn try_agent(&mut self, tried: &mut Vec<String>) -> Result<bool, FleetError> {
        if std::env::var_os("SSH_AUTH_SOCK").is_none() {
            return Ok(false);
        }
        let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await else {
            tried.push("the ssh-agent (SSH_AUTH_SOCK does not answer)".to_owned());
            return Ok(false);
        };
        let identities = agent.request_identities().await.unwrap_or_default();
        for identity in identities {
            let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = identity else {
                continue;
            };
            let hash = self.rsa_hash(key.algorithm().is_rsa()).await?;
            let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
            let result = self
                .handle
                .authenticate_publickey_with(self.user.clone(), key, hash, &mut agent)
                .await;
            match result {
                Ok(result) if result.success() => return Ok(true),
                Ok(_) | Err(_) => tried.push(format!("agent key {fingerprint}")),
            }
        }
        Ok(false)
    }

    /// The RSA signature hash the server takes (SHA-512 or SHA-256), for an RSA key.
    async fn rsa_hash(&self, is_rsa: bool) -> Result<Option<HashAlg>, FleetError> {
        if !is_rsa {
            return Ok(None);
        }
        let best = self.handle.best_supported_rsa_hash().await;
        Ok(best.map_err(|source| self.lost("negotiate an RSA signature", source))?.flatten())
    }

    fn refused(&self, tried: Vec<String>) -> FleetError {
        FleetError::AuthRefused { host: self.host.clone(), user: self.user.clone(), tried }
    }

    fn lost(&self, action: &'static str, source: russh::Error) -> FleetError {
        FleetError::Connection { host: self.host.clone(), action, source: Box::new(source) }
    }

    /// Runs `script` with `sh` as root (directly when logged in as root, else through
    /// `sudo -n`) and returns its stdout; a failure says why, with its stderr's end.
    pub async fn run_as_root(&self, script: &str) -> Result<Vec<u8>, FleetError> {
        let command = crate::process::root_shell_command(self.user == "root", script);
        let mut channel = crate::communicator::start_command(&self.handle, command, true)
            .await
            .map_err(|(step, source)| {
                let action = match step {
                    StartStep::OpenChannel => "open a channel",
                    StartStep::Exec => "start the collection",
                    StartStep::CloseStdin => "close stdin",
                };
                self.lost(action, source)
            })?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut code = None;
        let read = async {
            while let Some(message) = channel.wait().await {
                match message {
                    ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
        };
        if tokio::time::timeout(COLLECT_TIMEOUT, read).await.is_err() {
            return Err(FleetError::CollectTimeout {
                host: self.host.clone(),
                waited: COLLECT_TIMEOUT,
            });
        }
        let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
        match code {
            Some(0) => Ok(stdout),
            _ if self.user != "root" && sudo_wants_a_password(&stderr) => {
                Err(FleetError::SudoPassword { host: self.host.clone(), user: self.user.clone() })
            }
            code => {
                let start = stderr.len().saturating_sub(STDERR_TAIL);
                let start =
                    (start..stderr.len()).find(|&i| stderr.is_char_boundary(i)).unwrap_or(0);
                Err(FleetError::CollectFailed {
                    host: self.host.clone(),
                    code: code
                        .map_or_else(|| "no exit status".to_owned(), |code| format!("exit {code}")),
                    stderr: stderr[start..].to_owned(),
                })
            }
        }
    }

    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

/// What `sudo -n` says when it would have asked for a password.
fn sudo_wants_a_password(stderr: &str) -> bool {
    stderr.contains("a password is required") || stderr.contains("a terminal is required")
}

async fn tcp_connect(host: &HostSpec) -> Result<TcpStream, FleetError> {
    let connect = TcpStream::connect((host.host.as_str(), host.port));
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(FleetError::Unreachable { host: host.to_string(), source }),
        Err(_) => {
            Err(FleetError::ConnectTimeout { host: host.to_string(), waited: CONNECT_TIMEOUT })
        }
    }
}

fn host_key_error(
    host: &HostSpec,
    known: &KnownKeys,
    verdict: Verdict,
    seen: String,
) -> FleetError {
    let file = known.files.first().cloned().unwrap_or_default();
    let files = known.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ");
    match verdict {
        Verdict::Changed => FleetError::HostKeyChanged {
            host: host.to_string(),
            seen,
            files,
            fix: format!(
                "if the server was reinstalled on purpose, remove its old key (`ssh-keygen -R {} -f {}`) and add the new one: {}",
                crate::process::shell_quote(&host.known_hosts_name()),
                file.display(),
                how_to_trust(host, &file)
            ),
        },
        Verdict::Unknown | Verdict::Known => FleetError::HostKeyUnknown {
            host: host.to_string(),
            seen,
            files,
            fix: how_to_trust(host, &file),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_asking_for_a_password_is_recognised() {
        assert!(sudo_wants_a_password("sudo: a password is required"));
        assert!(sudo_wants_a_password("sudo: a terminal is required to read the password"));
        assert!(!sudo_wants_a_password("sh: 1: find: not found"));
    }
}
