//! Cosign's signature format for an artifact's manifest, and the verdict on a pulled one.
//! A signature is a "simple signing" payload naming the manifest digest, signed by a key; cosign
//! stores it as a layer (media type [`PAYLOAD_MEDIA_TYPE`]) of an image tagged
//! `sha256-<manifest hex>.sig`, the signature base64 in the layer's annotation
//! [`SIGNATURE_ANNOTATION`]. strata adds [`SIGNER_ANNOTATION`] (the key's id) as a hint so a
//! refusal can tell an untrusted key from a bad signature; the hint never makes a signature
//! count: only a trusted key's verification does.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::keys::{KeyId, PublicKey, SigningKey, TrustedKeys};

pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// strata's hint: the id of the key that made the signature.
pub const SIGNER_ANNOTATION: &str = "dev.strata.signer";
/// `critical.type` of every cosign signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The simple-signing payload, exactly cosign's fields (`optional` may hold anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub critical: Critical,
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload for `manifest_digest` (`sha256:HEX`) in `docker_reference`
    /// (`HOST[:PORT]/REPOSITORY`, as cosign writes it).
    #[must_use]
    pub fn new(docker_reference: &str, manifest_digest: &str) -> Self {
        Payload {
            critical: Critical {
                identity: Identity { docker_reference: docker_reference.to_owned() },
                image: Image { docker_manifest_digest: manifest_digest.to_owned() },
                kind: PAYLOAD_TYPE.to_owned(),
            },
            optional: None,
        }
    }

    /// The payload's bytes, as signed and stored (compact JSON, cosign's field order).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The tag of an artifact's cosign attachment: `sha256-<hex>.<suffix>` (`sig`, `sbom`, …) for
/// the manifest digest `sha256:<hex>`.
#[must_use]
pub fn attachment_tag(manifest_digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", manifest_digest.replacen(':', "-", 1))
}

/// The tag of an artifact's signatures: `sha256-<hex>.sig`.
#[must_use]
pub fn signature_tag(manifest_digest: &str) -> String {
    attachment_tag(manifest_digest, "sig")
}

/// One signature as stored: the payload blob's bytes and the layer's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub payload: Vec<u8>,
    /// The signature, base64 (the annotation's value).
    pub signature: String,
    /// The signer's key id as the annotation claims it.
    pub signer: Option<String>,
}

impl Signed {
    /// Signs the payload for `manifest_digest`.
    #[must_use]
    pub fn sign(key: &SigningKey, docker_reference: &str, manifest_digest: &str) -> Self {
        let payload = Payload::new(docker_reference, manifest_digest).to_bytes();
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
        Signed { payload, signature, signer: Some(key.public_key().id().to_string()) }
    }

    /// The layer annotations that carry this signature.
    #[must_use]
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations =
            BTreeMap::from([(SIGNATURE_ANNOTATION.to_owned(), self.signature.clone())]);
        if let Some(signer) = &self.signer {
            annotations.insert(SIGNER_ANNOTATION.to_owned(), signer.clone());
        }
        annotations
    }
}

/// Why a pulled artifact is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it is unsigned")]
    Unsigned,
    #[error("it is signed by the untrusted key {key}")]
    UntrustedKey { key: String },
    #[error("its signature does not verify with the trusted key {key}")]
    BadSignature { key: String },
    #[error("no trusted key's signature verifies (an untrusted key or a bad signature)")]
    NoTrustedSignature,
    #[error("its signature covers another manifest ({signed})")]
    OtherManifest { signed: String },
    #[error("its signature is malformed ({reason})")]
    Malformed { reason: String },
}

impl Refusal {
    /// A short word for events: `unsigned`, `untrusted_key`, `bad_signature`,
    /// `other_manifest`, `malformed`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::UntrustedKey { .. } | Refusal::NoTrustedSignature => "untrusted_key",
            Refusal::BadSignature { .. } => "bad_signature",
            Refusal::OtherManifest { .. } => "other_manifest",
            Refusal::Malformed { .. } => "malformed",
        }
    }

    /// The key the refusal is about, when one is known.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            Refusal::UntrustedKey { key } | Refusal::BadSignature { key } => Some(key),
            _ => None,
        }
    }

    /// How telling a refusal is, to report the most telling of several signatures'.
    fn rank(&self) -> u8 {
        match self {
            Refusal::Unsigned => 0,
            Refusal::Malformed { .. } => 1,
            Refusal::NoTrustedSignature => 2,
            Refusal::UntrustedKey { .. } => 3,
            Refusal::BadSignature { .. } => 4,
            Refusal::OtherManifest { .. } => 5,
        }
    }
}

/// Accepts `manifest_digest` when one of `signatures` is a trusted key's signature over a
/// payload naming exactly that digest; returns that key. Otherwise the most telling refusal.
pub fn verify<'k>(
    signatures: &[Signed],
    manifest_digest: &str,
    trusted: &'k TrustedKeys,
) -> Result<&'k PublicKey, Refusal> {
    let mut refusal = Refusal::Unsigned;
    for signed in signatures {
        match verify_one(signed, manifest_digest, trusted) {
            Ok(key) => return Ok(key),
            Err(this) if this.rank() > refusal.rank() => refusal = this,
            Err(_) => {}
        }
    }
    Err(refusal)
}

fn verify_one<'k>(
    signed: &Signed,
    manifest_digest: &str,
    trusted: &'k TrustedKeys,
) -> Result<&'k PublicKey, Refusal> {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signed.signature.trim())
        .map_err(|error| Refusal::Malformed { reason: format!("signature not base64: {error}") })?;
    let hinted = signed.signer.as_deref().map(|hint| (hint, KeyId::parse(hint)));
    let key = match hinted {
        Some((_, Some(id))) if trusted.get(&id).is_some() => {
            let key = trusted.get(&id).ok_or(Refusal::NoTrustedSignature)?;
            key.verify(&signed.payload, &signature)
                .map_err(|_| Refusal::BadSignature { key: id.to_string() })?;
            key
        }
        // An unknown hint may still be a trusted key's (the hint is only a hint).
        Some((hint, _)) => trusted
            .verify(&signed.payload, &signature)
            .ok_or_else(|| Refusal::UntrustedKey { key: hint.to_owned() })?,
        None => trusted.verify(&signed.payload, &signature).ok_or(Refusal::NoTrustedSignature)?,
    };
    // Only a verified payload is parsed: its claims mean nothing before.
    let payload: Payload = serde_json::from_slice(&signed.payload)
        .map_err(|error| Refusal::Malformed { reason: format!("payload: {error}") })?;
    if payload.critical.kind != PAYLOAD_TYPE {
        return Err(Refusal::Malformed {
            reason: format!("payload type {:?}", payload.critical.kind),
        });
    }
    if payload.critical.image.docker_manifest_digest != manifest_digest {
        return Err(Refusal::OtherManifest {
            signed: payload.critical.image.docker_manifest_digest,
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Algorithm;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const OTHER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn trusted(keys: &[&SigningKey]) -> TrustedKeys {
        let mut set = TrustedKeys::new();
        for key in keys {
            set.add(key.public_key().clone());
        }
        set
    }

    #[test]
    fn the_payload_is_cosigns() {
        let bytes = Payload::new("127.0.0.1:5000/strata", DIGEST).to_bytes();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/strata"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        assert_eq!(
            signature_tag(DIGEST),
            "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
        );
        assert!(attachment_tag(DIGEST, "sbom").ends_with("cdef.sbom"));
    }

    #[test]
    fn a_trusted_signature_over_the_digest_is_accepted() {
        for algorithm in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
            let key = SigningKey::random(algorithm).unwrap();
            let signed = Signed::sign(&key, "r/x", DIGEST);
            let keys = trusted(&[&key]);
            assert_eq!(
                verify(std::slice::from_ref(&signed), DIGEST, &keys).unwrap().id(),
                key.public_key().id()
            );
            // without the hint too (cosign's own signatures carry none)
            let bare = Signed { signer: None, ..signed };
            assert!(verify(&[bare], DIGEST, &keys).is_ok());
        }
    }

    #[test]
    fn every_refusal_reason() {
        let ours = SigningKey::random(Algorithm::EcdsaP256).unwrap();
        let theirs = SigningKey::random(Algorithm::EcdsaP256).unwrap();
        let keys = trusted(&[&ours]);

        assert_eq!(verify(&[], DIGEST, &keys).unwrap_err(), Refusal::Unsigned);

        let untrusted = Signed::sign(&theirs, "r/x", DIGEST);
        let refusal = verify(std::slice::from_ref(&untrusted), DIGEST, &keys).unwrap_err();
        assert_eq!(refusal, Refusal::UntrustedKey { key: theirs.public_key().id().to_string() });
        assert_eq!(refusal.reason(), "untrusted_key");
        let unhinted = Signed { signer: None, ..untrusted.clone() };
        assert_eq!(verify(&[unhinted], DIGEST, &keys).unwrap_err(), Refusal::NoTrustedSignature);

        // a signature by another key claiming to be ours
        let forged = Signed { signer: Some(ours.public_key().id().to_string()), ..untrusted };
        assert_eq!(
            verify(&[forged], DIGEST, &keys).unwrap_err(),
            Refusal::BadSignature { key: ours.public_key().id().to_string() }
        );

        // a payload changed after signing
        let mut tampered = Signed::sign(&ours, "r/x", OTHER);
        tampered.payload = Payload::new("r/x", DIGEST).to_bytes();
        assert_eq!(verify(&[tampered], DIGEST, &keys).unwrap_err().reason(), "bad_signature");

        // a valid signature of another manifest
        let other = Signed::sign(&ours, "r/x", OTHER);
        assert_eq!(
            verify(std::slice::from_ref(&other), DIGEST, &keys).unwrap_err(),
            Refusal::OtherManifest { signed: OTHER.to_owned() }
        );

        let garbage = Signed { signature: "%%%".to_owned(), ..other.clone() };
        assert_eq!(verify(&[garbage], DIGEST, &keys).unwrap_err().reason(), "malformed");

        // a trusted signature over something that is not a payload
        let mut not_payload = Signed::sign(&ours, "r/x", DIGEST);
        not_payload.payload = br#"{"critical":{}}"#.to_vec();
        not_payload.signature =
            base64::engine::general_purpose::STANDARD.encode(ours.sign(&not_payload.payload));
        assert_eq!(verify(&[not_payload], DIGEST, &keys).unwrap_err().reason(), "malformed");

        // one good signature among bad ones is enough
        let good = Signed::sign(&ours, "r/x", DIGEST);
        assert!(verify(&[other, good], DIGEST, &keys).is_ok());
    }

    #[test]
    fn no_trusted_key_refuses_everything() {
        let key = SigningKey::random(Algorithm::Ed25519).unwrap();
        let signed = Signed::sign(&key, "r/x", DIGEST);
        assert!(verify(&[signed], DIGEST, &TrustedKeys::new()).is_err());
    }
}
