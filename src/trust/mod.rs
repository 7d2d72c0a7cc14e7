//! Trust in what the shared cache serves (DESIGN.md §9): signing keys and public keys, the
//! set of trusted keys, and the cosign-format signature of an artifact (the simple-signing
//! payload naming a manifest digest) with the reasons a pulled artifact is refused.
//! Owns nothing on the network and nothing in the store: `cache/` moves signatures to and from
//! the registry and asks this module whether to believe them.

mod keys;

pub use keys::{
    Algorithm, Generated, KeyError, KeyId, PublicKey, SigningKey, TrustedKeys, generate,
    public_path,
};
mod signature;

pub use signature::{
    PAYLOAD_MEDIA_TYPE, PAYLOAD_TYPE, Payload, Refusal, SIGNATURE_ANNOTATION, SIGNER_ANNOTATION,
    Signed, attachment_tag, signature_tag, verify,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a runner does about signatures: the key it signs pushes with, and what it accepts.
#[derive(Debug, Clone)]
pub struct Policy {
    pub sign_with: Option<Arc<SigningKey>>,
    pub accept: Accept,
}

/// What a pulled artifact needs to be used.
#[derive(Debug, Clone)]
pub enum Accept {
    /// A signature by one of these keys over its manifest digest.
    Signed(TrustedKeys),
    /// Nothing (`--cache-unsigned`).
    Unsigned,
}

impl Default for Policy {
    /// Signs nothing and accepts nothing: the safe default.
    fn default() -> Self {
        Policy { sign_with: None, accept: Accept::Signed(TrustedKeys::new()) }
    }
}

impl Policy {
    /// `--sign-key`, `--trust` and `--cache-unsigned`: loads the keys (the signing key's public
    /// half is trusted too).
    pub fn load(
        sign_key: Option<&Path>,
        trust: &[PathBuf],
        unsigned: bool,
    ) -> Result<Self, KeyError> {
        let sign_with = sign_key.map(SigningKey::load).transpose()?.map(Arc::new);
        let mut keys = TrustedKeys::load(trust)?;
        if let Some(key) = &sign_with {
            keys.add(key.public_key().clone());
        }
        let accept = if unsigned { Accept::Unsigned } else { Accept::Signed(keys) };
        Ok(Policy { sign_with, accept })
    }

    /// Before pulling: a runner that trusts no key and did not opt out cannot use anything the
    /// cache serves, so it stops before any work.
    pub fn check_can_pull(&self) -> Result<(), KeyError> {
        match &self.accept {
            Accept::Signed(keys) if keys.is_empty() => Err(KeyError::NoTrustedKey),
            _ => Ok(()),
        }
    }

    /// Before pushing: without a signing key what is pushed would be refused by every runner
    /// that checks signatures, unless the user opted out.
    pub fn check_can_push(&self) -> Result<(), KeyError> {
        match (&self.sign_with, &self.accept) {
            (None, Accept::Signed(_)) => Err(KeyError::NoSigningKey),
            _ => Ok(()),
        }
    }

    #[must_use]
    pub fn unsigned(&self) -> bool {
        matches!(self.accept, Accept::Unsigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_pulls_nothing_and_push_needs_a_key() {
        let none = Policy::load(None, &[], false).unwrap();
        assert!(matches!(none.check_can_pull(), Err(KeyError::NoTrustedKey)));
        assert!(matches!(none.check_can_push(), Err(KeyError::NoSigningKey)));
        let message = KeyError::NoTrustedKey.to_string();
        assert!(message.contains("--trust") && message.contains("--cache-unsigned"), "{message}");
        assert!(KeyError::NoTrustedKey.is_invalid_input());

        let unsigned = Policy::load(None, &[], true).unwrap();
        assert!(unsigned.check_can_pull().is_ok() && unsigned.check_can_push().is_ok());
        assert!(unsigned.unsigned());
    }

    #[test]
    fn the_signing_keys_public_half_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        generate(&path, Algorithm::EcdsaP256).unwrap();
        let policy = Policy::load(Some(&path), &[], false).unwrap();
        assert!(policy.check_can_pull().is_ok() && policy.check_can_push().is_ok());
        let Accept::Signed(keys) = &policy.accept else { panic!("signed") };
        let key = policy.sign_with.as_ref().unwrap();
        assert!(keys.get(key.public_key().id()).is_some());
        // trusting its .pub as well counts once
        let policy = Policy::load(Some(&path), &[public_path(&path)], false).unwrap();
        let Accept::Signed(keys) = &policy.accept else { panic!("signed") };
        assert_eq!(keys.len(), 1);
    }
}
