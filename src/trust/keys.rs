//! Signing keys and public keys: ECDSA P-256 (cosign's default) or Ed25519, in PEM (PKCS#8
//! private, SPKI public), so keys made by `openssl genpkey` or `strata key generate` are the
//! same thing. A private key is read only from a file nobody but its owner can read, is never
//! printed (its `Debug` shows the public key's id) and never written anywhere but the file
//! `generate` makes.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to read the key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the private key {path} is readable by group or others (mode {mode:03o}): run \
         `chmod 600 {path}`",
        path = path.display()
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error(
        "{path} is not {what} ({reason}): strata reads ECDSA P-256 and Ed25519 keys in PEM \
         (PKCS#8 private, SPKI public), as made by `strata key generate PATH` or `openssl genpkey \
         -algorithm ed25519`",
        path = path.display()
    )]
    NotAKey { path: PathBuf, what: &'static str, reason: String },
    #[error("{path} already exists: choose another path or remove it first", path = path.display())]
    Exists { path: PathBuf },
    #[error("failed to write {path}", path = path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the system's random number generator failed: {reason}")]
    Random { reason: String },
    #[error("failed to encode the key as PEM: {reason}")]
    Encode { reason: String },
    #[error(
        "the shared cache is pulled from but no key is trusted: pass --trust FILE (a public key \
         whose signatures to accept; repeatable, or STRATA_CACHE_TRUST) or --sign-key FILE, or \
         --cache-unsigned to use unsigned artifacts from a registry whose push rights are the trust"
    )]
    NoTrustedKey,
    #[error(
        "pushing to the shared cache needs a key to sign with: pass --sign-key FILE (or \
         STRATA_SIGN_KEY; `strata key generate PATH` makes one), or --cache-unsigned to push \
         unsigned artifacts"
    )]
    NoSigningKey,
    #[error("the signature does not verify with the key {key}")]
    BadSignature { key: KeyId },
}

impl KeyError {
    /// The arguments name a key that cannot be used, or none where one is needed: exit 2.
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            KeyError::Read { .. }
                | KeyError::Readable { .. }
                | KeyError::NotAKey { .. }
                | KeyError::Exists { .. }
                | KeyError::NoTrustedKey
                | KeyError::NoSigningKey
        )
    }
}

/// Which kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Algorithm {
    /// ECDSA over NIST P-256 with SHA-256 (cosign's default); signatures DER-encoded.
    #[default]
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// Ed25519 (pure, over the whole message).
    #[value(name = "ed25519")]
    Ed25519,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::Ed25519 => "ed25519",
        })
    }
}

/// A public key's id: `sha256:` and the first 16 hex digits of the SHA-256 of its SPKI DER.
/// Short enough for a warning line, long enough to tell keys apart; not secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    fn of_spki(der: &[u8]) -> Self {
        let digest = hex::encode(Sha256::digest(der));
        KeyId(format!("sha256:{}", &digest[..16]))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads an id written by [`KeyId::as_str`]; `None` when it is not one.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let hex = value.strip_prefix("sha256:")?;
        (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| KeyId(value.to_owned()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

enum Secret {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// A private key that signs. Its bytes never leave this type except into the file
/// [`generate`] writes.
pub struct SigningKey {
    secret: Secret,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public.id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key. A file readable by group or others is refused with the
    /// `chmod 600` to run; so is anything but an ECDSA P-256 or Ed25519 key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read = |source| KeyError::Read { path: path.to_owned(), source };
        let meta = fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Readable { path: path.to_owned(), mode });
        }
        let pem = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(read)?);
        Self::from_pem(&pem).map_err(|reason| KeyError::NotAKey {
            path: path.to_owned(),
            what: "a private key",
            reason,
        })
    }

    /// Reads a PKCS#8 PEM private key from text; `Err` says why it is not one.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        if pem.contains("ENCRYPTED") {
            return Err("it is encrypted; strata reads unencrypted PKCS#8 keys kept in a 0600 \
                        file or a CI secret"
                .to_owned());
        }
        if !pem.contains("-----BEGIN PRIVATE KEY-----") {
            return Err("no `-----BEGIN PRIVATE KEY-----` block (PKCS#8)".to_owned());
        }
        if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::from_secret(Secret::P256(key)));
        }
        match ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            Ok(key) => Ok(Self::from_secret(Secret::Ed25519(key))),
            Err(_) => Err("it is neither an ECDSA P-256 nor an Ed25519 key".to_owned()),
        }
    }

    fn from_secret(secret: Secret) -> Self {
        let public = match &secret {
            Secret::P256(key) => PublicKey::from_inner(Public::P256(*key.verifying_key())),
            Secret::Ed25519(key) => PublicKey::from_inner(Public::Ed25519(key.verifying_key())),
        };
        SigningKey { secret, public }
    }

    /// A new random key.
    pub fn random(algorithm: Algorithm) -> Result<Self, KeyError> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        // A P-256 scalar must be non-zero and below the group order: a random 32 bytes are
        // with overwhelming probability; draw again otherwise.
        for _ in 0..16 {
            getrandom::fill(bytes.as_mut())
                .map_err(|error| KeyError::Random { reason: error.to_string() })?;
            let secret = match algorithm {
                Algorithm::EcdsaP256 => match p256::ecdsa::SigningKey::from_slice(bytes.as_ref()) {
                    Ok(key) => Secret::P256(key),
                    Err(_) => continue,
                },
                Algorithm::Ed25519 => {
                    Secret::Ed25519(ed25519_dalek::SigningKey::from_bytes(&bytes))
                }
            };
            return Ok(Self::from_secret(secret));
        }
        Err(KeyError::Random { reason: "no valid P-256 scalar in 16 draws".to_owned() })
    }

    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// Signs `msg`: ECDSA P-256 over SHA-256(msg), DER-encoded (as cosign and `openssl dgst
    /// -sha256 -sign` do); Ed25519 over msg itself (64 bytes, as `openssl pkeyutl -sign -rawin`).
    #[must_use]
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        match &self.secret {
            Secret::P256(key) => {
                let signature: p256::ecdsa::DerSignature = key.sign(msg);
                signature.as_bytes().to_vec()
            }
            Secret::Ed25519(key) => key.sign(msg).to_bytes().to_vec(),
        }
    }

    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn to_pkcs8_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        let encoded = match &self.secret {
            Secret::P256(key) => key.to_pkcs8_pem(LineEnding::LF),
            // PKCS#8 v1 (no public key inside), the form `openssl genpkey` writes and OpenSSL
            // 3.0 reads; v2 it refuses.
            Secret::Ed25519(key) => {
                ed25519_dalek::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None }
                    .to_pkcs8_pem(LineEnding::LF)
            }
        };
        encoded.map_err(|error| KeyError::Encode { reason: error.to_string() })
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Public {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A public key that verifies; `id` names it in messages and events.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: Public,
    id: KeyId,
    spki_der: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("id", &self.id)
            .finish()
    }
}

impl PublicKey {
    fn from_inner(inner: Public) -> Self {
        let der = match &inner {
            Public::P256(key) => key.to_public_key_der(),
            Public::Ed25519(key) => key.to_public_key_der(),
        };
        // Encoding a valid public key cannot fail; an empty DER still gives a stable id.
        let spki_der = der.map(|doc| doc.as_bytes().to_vec()).unwrap_or_default();
        PublicKey { id: KeyId::of_spki(&spki_der), inner, spki_der }
    }

    /// Reads an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = fs::read_to_string(path)
            .map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        Self::from_pem(&pem).map_err(|reason| KeyError::NotAKey {
            path: path.to_owned(),
            what: "a public key",
            reason,
        })
    }

    /// Reads an SPKI PEM public key from text; `Err` says why it is not one.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        if pem.contains("PRIVATE KEY") {
            return Err("it is a private key; trust its public half (`PATH.pub`, or \
                        `openssl pkey -in KEY -pubout`)"
                .to_owned());
        }
        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
            return Err("no `-----BEGIN PUBLIC KEY-----` block (SPKI)".to_owned());
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::from_inner(Public::P256(key)));
        }
        match ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            Ok(key) => Ok(Self::from_inner(Public::Ed25519(key))),
            Err(_) => Err("it is neither an ECDSA P-256 nor an Ed25519 key".to_owned()),
        }
    }

    /// The key as SPKI PEM, as `openssl pkey -pubout` writes it.
    pub fn to_pem(&self) -> String {
        // Re-encoding the DER we hold as a PEM document.
        let body =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &self.spki_der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    #[must_use]
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            Public::P256(_) => Algorithm::EcdsaP256,
            Public::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// Checks `signature` over `msg` as [`SigningKey::sign`] makes it (ECDSA: DER, or the raw
    /// 64-byte r‖s some tools write; Ed25519: 64 bytes).
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        use ed25519_dalek::Verifier as _;
        let bad = || KeyError::BadSignature { key: self.id.clone() };
        match &self.inner {
            Public::P256(key) => {
                let parsed = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature))
                    .map_err(|_| bad())?;
                key.verify(msg, &parsed).map_err(|_| bad())
            }
            Public::Ed25519(key) => {
                let parsed = ed25519_dalek::Signature::from_slice(signature).map_err(|_| bad())?;
                key.verify_strict(msg, &parsed).map_err(|_| bad())
            }
        }
    }
}

/// The keys whose signatures a runner accepts (`--trust`, and the signing key's public half).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; the same key twice is kept once.
    pub fn add(&mut self, key: PublicKey) {
        if !self.keys.iter().any(|known| known.id == key.id) {
            self.keys.push(key);
        }
    }

    /// Loads each public key file.
    pub fn load(paths: &[PathBuf]) -> Result<Self, KeyError> {
        let mut keys = Self::new();
        for path in paths {
            keys.add(PublicKey::load(path)?);
        }
        Ok(keys)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    #[must_use]
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|key| &key.id == id)
    }

    /// The trusted key whose signature `signature` over `msg` is; `None` when none verifies.
    #[must_use]
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Option<&PublicKey> {
        self.keys.iter().find(|key| key.verify(msg, signature).is_ok())
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generated {
    pub private: PathBuf,
    pub public: PathBuf,
    pub algorithm: String,
    pub key_id: KeyId,
}

/// The public key's path beside a private key: `PATH.pub`.
#[must_use]
pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// `strata key generate PATH`: a new key pair, `PATH` (0600) and `PATH.pub` (0644), each
/// written atomically; neither may exist already.
pub fn generate(path: &Path, algorithm: Algorithm) -> Result<Generated, KeyError> {
    let public_path = public_path(path);
    for existing in [path, public_path.as_path()] {
        if existing.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: existing.to_owned() });
        }
    }
    let key = SigningKey::random(algorithm)?;
    let private_pem = key.to_pkcs8_pem()?;
    write_new(path, private_pem.as_bytes(), 0o600)?;
    if let Err(error) = write_new(&public_path, key.public_key().to_pem().as_bytes(), 0o644) {
        // No half pair: a private key without its public half would be refused next time
        // anyway (Exists), so take it back.
        let _ = fs::remove_file(path);
        return Err(error);
    }
    Ok(Generated {
        private: path.to_owned(),
        public: public_path,
        algorithm: algorithm.to_string(),
        key_id: key.public_key().id().clone(),
    })
}

/// Writes a new file atomically (temp in the same folder, 0600 from its creation, fsync,
/// `mode`, rename without replacing anything).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let wrap = |source| KeyError::Write { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".strata-key-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(wrap)?;
    temp.write_all(bytes).map_err(wrap)?;
    temp.as_file().sync_all().map_err(wrap)?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode)).map_err(wrap)?;
    temp.persist_noclobber(path).map_err(|error| wrap(error.error))?;
    crate::store::sync_dir(dir).map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, algorithm: Algorithm) -> PathBuf {
        let path = dir.join(format!("{algorithm}.key"));
        generate(&path, algorithm).unwrap();
        path
    }

    #[test]
    fn generated_pairs_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
            let path = key_file(dir.path(), algorithm);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let key = SigningKey::load(&path).unwrap();
            assert_eq!(key.algorithm(), algorithm);
            let public = PublicKey::load(&public_path(&path)).unwrap();
            assert_eq!(public.id(), key.public_key().id());
            let signature = key.sign(b"payload");
            public.verify(b"payload", &signature).unwrap();
            assert!(public.verify(b"payloaD", &signature).is_err());
            let mut flipped = signature.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(public.verify(b"payload", &flipped).is_err());
            assert_eq!(PublicKey::from_pem(&public.to_pem()).unwrap(), public);
        }
    }

    #[test]
    fn a_readable_private_key_is_refused_with_the_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path(), Algorithm::Ed25519);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = SigningKey::load(&path).unwrap_err();
        assert!(matches!(error, KeyError::Readable { mode: 0o640, .. }), "{error:?}");
        assert!(error.to_string().contains(&format!("chmod 600 {}", path.display())), "{error}");
    }

    #[test]
    fn generate_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path(), Algorithm::EcdsaP256);
        let before = fs::read(&path).unwrap();
        assert!(matches!(generate(&path, Algorithm::Ed25519), Err(KeyError::Exists { .. })));
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = SigningKey::random(Algorithm::Ed25519).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&body[..20]), "{shown}");
        assert!(shown.contains(key.public_key().id().as_str()));
    }

    #[test]
    fn wrong_kinds_of_pem_are_refused_with_a_reason() {
        let key = SigningKey::random(Algorithm::EcdsaP256).unwrap();
        let public = key.public_key().to_pem();
        assert!(SigningKey::from_pem(&public).unwrap_err().contains("PRIVATE KEY"));
        let private = key.to_pkcs8_pem().unwrap();
        assert!(PublicKey::from_pem(&private).unwrap_err().contains("private key"));
        assert!(PublicKey::from_pem("hello").is_err());
    }

    #[test]
    fn trusted_keys_find_the_signer() {
        let a = SigningKey::random(Algorithm::EcdsaP256).unwrap();
        let b = SigningKey::random(Algorithm::Ed25519).unwrap();
        let c = SigningKey::random(Algorithm::Ed25519).unwrap();
        let mut trusted = TrustedKeys::new();
        trusted.add(a.public_key().clone());
        trusted.add(b.public_key().clone());
        trusted.add(b.public_key().clone());
        assert_eq!(trusted.len(), 2);
        let signed = b.sign(b"m");
        assert_eq!(trusted.verify(b"m", &signed).map(PublicKey::id), Some(b.public_key().id()));
        assert!(trusted.verify(b"m", &c.sign(b"m")).is_none());
        assert!(KeyId::parse(a.public_key().id().as_str()).is_some());
        assert!(KeyId::parse("sha256:xyz").is_none());
    }
}
