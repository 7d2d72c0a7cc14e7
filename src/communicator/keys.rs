//! Per-build SSH keys: the client key strata logs in with (memory only) and the guest's host
//! key (its private half goes into the seed, so the host key is pinned before connecting).
//! Owns generation and OpenSSH encodings; never writes a key anywhere itself.

use std::fmt;
use std::sync::Arc;

use russh::keys::ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::CommunicatorError;

fn generate(comment: &str) -> Result<PrivateKey, CommunicatorError> {
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let mut key = PrivateKey::random(&mut rng, Algorithm::Ed25519)
        .map_err(|error| CommunicatorError::KeyGeneration(Box::new(error)))?;
    key.set_comment(comment);
    Ok(key)
}

/// A private key in OpenSSH format (multi-line, ends with a newline).
fn private_openssh(key: &PrivateKey) -> Result<String, CommunicatorError> {
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|error| CommunicatorError::KeyEncoding(Box::new(error)))?;
    Ok(text.as_str().to_owned())
}

fn public_openssh(key: &PublicKey) -> Result<String, CommunicatorError> {
    key.to_openssh().map_err(|error| CommunicatorError::KeyEncoding(Box::new(error)))
}

/// The SHA256 fingerprint as OpenSSH shows it: `SHA256:base64`.
#[must_use]
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The ed25519 key strata authenticates with. It lives in memory only and is cheap to clone.
#[derive(Clone)]
pub struct ClientKey(Arc<PrivateKey>);

impl ClientKey {
    pub fn generate() -> Result<ClientKey, CommunicatorError> {
        generate("strata-build").map(|key| ClientKey(Arc::new(key)))
    }

    /// A key saved with a restore point (OpenSSH private key format).
    pub fn from_openssh(text: &str) -> Result<ClientKey, CommunicatorError> {
        PrivateKey::from_openssh(text)
            .map(|key| ClientKey(Arc::new(key)))
            .map_err(|error| CommunicatorError::KeyEncoding(Box::new(error)))
    }

    /// The private key in OpenSSH format, for a restore point (stored 0600 beside guest
    /// memory, which holds it anyway) and for `strata run`'s login file.
    pub fn private_openssh(&self) -> Result<String, CommunicatorError> {
        private_openssh(&self.0)
    }

    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        self.0.public_key()
    }

    /// The public key as one `authorized_keys` line: what the seed's `ssh_authorized_key` gets.
    pub fn public_openssh(&self) -> Result<String, CommunicatorError> {
        public_openssh(self.0.public_key())
    }

    pub(crate) fn private(&self) -> Arc<PrivateKey> {
        Arc::clone(&self.0)
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({})", fingerprint(self.public_key()))
    }
}

/// The guest's ed25519 host key, made by strata so the guest's identity is known in advance.
pub struct HostKey(PrivateKey);

impl HostKey {
    pub fn generate() -> Result<HostKey, CommunicatorError> {
        generate("strata-host").map(HostKey)
    }

    /// A host key saved with a restore point.
    pub fn from_openssh(text: &str) -> Result<HostKey, CommunicatorError> {
        PrivateKey::from_openssh(text)
            .map(HostKey)
            .map_err(|error| CommunicatorError::KeyEncoding(Box::new(error)))
    }

    /// What [`super::SshCommunicator::connect`] pins.
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        self.0.public_key()
    }

    /// One line, `ssh-ed25519 AAAA… strata-host`: the seed's `host_key_public`.
    pub fn public_openssh(&self) -> Result<String, CommunicatorError> {
        public_openssh(self.0.public_key())
    }

    /// The private key in OpenSSH format (multi-line, ends with a newline): the seed's
    /// `host_key_private`. Whatever holds it must be private (mode 0600) and short-lived.
    pub fn private_openssh(&self) -> Result<String, CommunicatorError> {
        private_openssh(&self.0)
    }

    #[must_use]
    pub fn fingerprint(&self) -> String {
        fingerprint(self.public_key())
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostKey({})", self.fingerprint())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_ed25519_and_encode_for_openssh() {
        let client = ClientKey::generate().unwrap();
        let host = HostKey::generate().unwrap();
        let other = HostKey::generate().unwrap();
        assert_ne!(host.fingerprint(), other.fingerprint());
        assert_eq!(client.public_key().algorithm(), Algorithm::Ed25519);

        let line = client.public_openssh().unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA") && line.ends_with(" strata-build"), "{line}");
        let private = host.private_openssh().unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(private.ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
        let parsed = PrivateKey::from_openssh(&private).unwrap();
        assert_eq!(parsed.public_key().key_data(), host.public_key().key_data());
        assert!(host.fingerprint().starts_with("SHA256:"));
    }

    /// OpenSSH's own tool must accept both encodings (when it is installed).
    #[test]
    fn ssh_keygen_reads_the_keys() {
        use std::os::unix::fs::PermissionsExt;
        let host = HostKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host");
        std::fs::write(&path, host.private_openssh().unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        crate::process::require_tool("ssh-keygen", "apt-get install openssh-client");
        let output = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let derived = String::from_utf8_lossy(&output.stdout);
        let ours = host.public_openssh().unwrap();
        let key_part = |line: &str| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        assert_eq!(key_part(&derived), key_part(&ours));
    }
}
