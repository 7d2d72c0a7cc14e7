//! Host keys as `ssh` checks them: the keys known_hosts files record for a host (plain,
//! hashed and `[host]:port` entries, through russh's reader), and what to say when the
//! server's key is not among them. Never trust on first use: an unknown key is refused.

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{Algorithm, PublicKey};

use super::{FleetError, HostSpec};

/// The files to read and what they record for one host.
#[derive(Debug, Clone)]
pub struct KnownKeys {
    /// The files read, in order (the first is the one to add a key to).
    pub files: Vec<PathBuf>,
    pub keys: Vec<PublicKey>,
}

/// How a server's key compares with what known_hosts records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// No key of this host is recorded.
    Unknown,
    /// Other keys are recorded for this host: it changed, or someone is in between.
    Changed,
}

impl KnownKeys {
    /// The keys `files` record for `host` (missing files record none).
    pub fn read(files: &[PathBuf], host: &HostSpec) -> Result<KnownKeys, FleetError> {
        let mut keys = Vec::new();
        for file in files {
            let found = russh::keys::known_hosts::known_host_keys_path(&host.host, host.port, file)
                .map_err(|source| FleetError::KnownHosts {
                    path: file.clone(),
                    host: host.to_string(),
                    source: Box::new(source),
                })?;
            keys.extend(found.into_iter().map(|(_, key)| key));
        }
        Ok(KnownKeys { files: files.to_vec(), keys })
    }

    #[must_use]
    pub fn verdict(&self, server_key: &PublicKey) -> Verdict {
        if self.keys.iter().any(|known| known.key_data() == server_key.key_data()) {
            Verdict::Known
        } else if self.keys.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Changed
        }
    }

    /// The host key algorithms to ask the server for: those of the recorded keys, in russh's
    /// order of preference (as `ssh` does, so that a server with several host keys presents
    /// the one we know); every algorithm when none is recorded.
    #[must_use]
    pub fn preferred_algorithms(&self) -> Vec<Algorithm> {
        let all = russh::Preferred::DEFAULT.key.iter();
        let wanted: Vec<Algorithm> = all
            .filter(|algorithm| {
                self.keys.iter().any(|key| same_family(&key.algorithm(), algorithm))
            })
            .cloned()
            .collect();
        if wanted.is_empty() { russh::Preferred::DEFAULT.key.to_vec() } else { wanted }
    }
}

/// RSA keys sign with any of the three RSA algorithms; other keys with their own.
fn same_family(key: &Algorithm, offered: &Algorithm) -> bool {
    match (key, offered) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => key == offered,
    }
}

/// What to run to trust `host`'s key once its fingerprint is checked, into `file`.
#[must_use]
pub fn how_to_trust(host: &HostSpec, file: &Path) -> String {
    let port = if host.port == super::host::SSH_PORT {
        String::new()
    } else {
        format!("-p {} ", host.port)
    };
    format!(
        "check the fingerprint with the server's owner, then add the key: \
         `ssh-keyscan {port}{} >> {}` (or log in once with `ssh`)",
        crate::process::shell_quote(&host.host),
        file.display()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC+vq85yX7u590cJemVdk4jH09z67xN+N05jBhJnKP7f";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8GpCc/GAbWLPbNWtXPZwFZaq0ywg1siDsf9/654Dpv";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    fn host(text: &str) -> HostSpec {
        HostSpec::parse(text).unwrap()
    }

    #[test]
    fn plain_port_and_hashed_entries_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        // `|1|salt|hmac` of "web3", as `ssh-keygen -H` writes it.
        let hashed = "|1|cyaJfBsc6f8N8RRjJI7XutxCdH8=|p+9baiEvffEUJjwjamwJO2JmtoI=";
        let text = format!(
            "# comment\nweb1 {ED25519}\n[web2]:2222 {ED25519}\n{hashed} {ED25519}\nweb4,web5 {ED25519}\n"
        );
        std::fs::write(&file, text).unwrap();
        let files = [dir.path().join("missing"), file];
        for name in ["web1", "web2:2222", "web3", "web5"] {
            let known = KnownKeys::read(&files, &host(name)).unwrap();
            assert_eq!(known.verdict(&key(ED25519)), Verdict::Known, "{name}");
            assert_eq!(known.verdict(&key(OTHER)), Verdict::Changed, "{name}");
        }
        for name in ["web2", "web1:2222", "web9"] {
            let known = KnownKeys::read(&files, &host(name)).unwrap();
            assert_eq!(known.verdict(&key(ED25519)), Verdict::Unknown, "{name}");
            assert_eq!(known.preferred_algorithms().len(), russh::Preferred::DEFAULT.key.len());
        }
        let known = KnownKeys::read(&files, &host("web1")).unwrap();
        assert_eq!(known.preferred_algorithms(), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn the_trust_hint_names_the_port_and_the_file() {
        let hint = how_to_trust(&host("admin@[::1]:2222"), Path::new("/k/known_hosts"));
        assert!(hint.contains("ssh-keyscan -p 2222 ::1 >> /k/known_hosts"), "{hint}");
        let hint = how_to_trust(&host("web1"), Path::new("/k/known_hosts"));
        assert!(hint.contains("ssh-keyscan web1 >>"), "{hint}");
    }
}
