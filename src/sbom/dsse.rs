//! DSSE envelopes (<https://github.com/secure-systems-lab/dsse/blob/master/envelope.md>): the
//! signature covers the pre-authentication encoding (PAE) of the payload type and the payload,
//! so a verifier checks it with any tool over those bytes (`openssl pkeyutl -verify -rawin`
//! for Ed25519, `openssl dgst -sha256 -verify` for ECDSA P-256).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The payload type of an in-toto Statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// What signs an envelope: a key of `trust`'s, never one of this module's making.
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// What the envelope names the key by (its public key's fingerprint).
    fn key_id(&self) -> String;
    /// A signature over `message`.
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 (standard, padded).
    pub payload: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    /// Base64 (standard, padded).
    pub sig: String,
}

impl Signer for crate::trust::SigningKey {
    fn key_id(&self) -> String {
        self.public_key().id().as_str().to_owned()
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        crate::trust::SigningKey::sign(self, message)
    }
}

/// `DSSEv1 LEN(type) type LEN(body) body`, lengths in ASCII decimal, single spaces.
#[must_use]
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out =
        format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// `payload` signed by `signer` in an envelope.
#[must_use]
pub fn sign(payload_type: &str, payload: &[u8], signer: &dyn Signer) -> Envelope {
    let signature = signer.sign(&pae(payload_type, payload));
    Envelope {
        payload_type: payload_type.to_owned(),
        payload: STANDARD.encode(payload),
        signatures: vec![Signature { keyid: signer.key_id(), sig: STANDARD.encode(signature) }],
    }
}

impl Envelope {
    /// The payload's bytes; `None` when it is not base64.
    #[must_use]
    pub fn payload_bytes(&self) -> Option<Vec<u8>> {
        STANDARD.decode(&self.payload).ok()
    }

    /// The bytes the signatures cover.
    #[must_use]
    pub fn signed_bytes(&self) -> Option<Vec<u8>> {
        Some(pae(&self.payload_type, &self.payload_bytes()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_the_spec_s_example() {
        // The DSSE spec's test vector.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[derive(Debug)]
    struct Reversed;

    impl Signer for Reversed {
        fn key_id(&self) -> String {
            "k1".to_owned()
        }
        fn sign(&self, message: &[u8]) -> Vec<u8> {
            message.iter().rev().copied().collect()
        }
    }

    #[test]
    fn the_signature_covers_the_pae_and_the_envelope_round_trips() {
        let envelope = sign(IN_TOTO, b"{\"a\":1}", &Reversed);
        let signed = envelope.signed_bytes().unwrap_or_default();
        assert_eq!(signed, pae(IN_TOTO, b"{\"a\":1}"));
        let sig = STANDARD.decode(&envelope.signatures[0].sig).unwrap_or_default();
        assert_eq!(sig, signed.iter().rev().copied().collect::<Vec<u8>>());
        let json = serde_json::to_string(&envelope).unwrap_or_default();
        assert!(json.contains("\"payloadType\":\"application/vnd.in-toto+json\""), "{json}");
        assert_eq!(serde_json::from_str::<Envelope>(&json).ok(), Some(envelope));
    }
}
