//! Source URLs that may carry secrets: `https://user:token@host/…` (sent as Basic auth) or
//! signed query parameters (`?X-Amz-Signature=…`). Owns the redaction rule; must not fetch.
//!
//! [`SourceUrl`] holds the real URL, but its `Display`, `Debug` and `Serialize` give only the
//! redacted form (userinfo and secret-looking query values replaced by `***`), so whatever
//! prints, logs or stores one cannot leak the secret. The real text is reachable only through
//! [`SourceUrl::for_request`]: the HTTP client, and hashes that name files and locks.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::definition::Location;

/// What replaces a secret.
const HIDDEN: &str = "***";

/// Query parameters whose value is a secret, compared without regard to case.
const SECRET_PARAMS: &[&str] = &[
    "sig",
    "key",
    "auth",
    "apikey",
    "api_key",
    "access_key",
    "x-amz-credential",
    "x-goog-credential",
    "x-amz-security-token",
    "x-amz-signature",
    "x-goog-signature",
    "x-ms-signature",
];

/// Parts of a parameter's name that mark its value as a secret (`access_token`, `signature`,
/// `client_secret`, `password`, `X-Goog-Credential`, …).
const SECRET_PARTS: &[&str] = &["token", "signature", "secret", "password", "passwd", "credential"];

/// A source's URL (or local path): the real text for the request, the redacted text for
/// everything else.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceUrl {
    real: String,
    shown: String,
}

impl SourceUrl {
    #[must_use]
    pub fn new(text: &str) -> Self {
        SourceUrl { real: text.to_owned(), shown: redact(text) }
    }

    /// An HTTP location's URL, or a local path as it is displayed (paths hold no secrets).
    #[must_use]
    pub fn for_location(location: &Location) -> Self {
        match location {
            Location::Http(url) => SourceUrl::new(url),
            Location::File(path) => {
                let text = path.display().to_string();
                SourceUrl { real: text.clone(), shown: text }
            }
        }
    }

    /// The redacted text.
    #[must_use]
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// The real URL, for the HTTP client only.
    pub(super) fn for_request(&self) -> &str {
        &self.real
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceUrl({:?})", self.shown)
    }
}

impl Serialize for SourceUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.shown)
    }
}

/// `text` with its userinfo and secret query values replaced by `***`; text that is not a
/// `scheme://` URL is returned as it is.
#[must_use]
pub fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else { return text.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_userinfo, host)) => format!("{HIDDEN}@{host}"),
        None => authority.to_owned(),
    };
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    let tail = match before_fragment.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
        None => before_fragment.to_owned(),
    };
    let fragment = fragment.map(|fragment| format!("#{fragment}")).unwrap_or_default();
    format!("{scheme}://{authority}{tail}{fragment}")
}

fn redact_query(query: &str) -> String {
    let pairs = query.split('&').map(|pair| match pair.split_once('=') {
        Some((name, _value)) if is_secret(name) => format!("{name}={HIDDEN}"),
        _ => pair.to_owned(),
    });
    pairs.collect::<Vec<_>>().join("&")
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str()) || SECRET_PARTS.iter().any(|part| name.contains(part))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden() {
        assert_eq!(redact("https://user:tok3n@host:8443/a/b.img"), "https://***@host:8443/a/b.img");
        assert_eq!(redact("http://tok3n@host"), "http://***@host");
        assert_eq!(redact("http://host/a@b.img"), "http://host/a@b.img");
    }

    #[test]
    fn secret_parameters_are_hidden_whatever_their_case() {
        let url = "https://h/x.img?X-Amz-Signature=abc&x-amz-credential=AK%2F1&v=2&access_token=t\
                   &SIG=s&X-Goog-Signature=g&Token=t#frag";
        assert_eq!(
            redact(url),
            "https://h/x.img?X-Amz-Signature=***&x-amz-credential=***&v=2&access_token=***\
             &SIG=***&X-Goog-Signature=***&Token=***#frag"
        );
    }

    #[test]
    fn plain_urls_and_paths_are_unchanged() {
        for text in ["http://127.0.0.1:80/disk.qcow2?v=1", "/srv/images/x?y.img", "base.qcow2"] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn only_the_redacted_form_is_shown() {
        let url = SourceUrl::new("https://u:s3cret@h/x.img?signature=s3cret");
        assert_eq!(url.to_string(), "https://***@h/x.img?signature=***");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&url).unwrap().contains("s3cret"));
        assert!(url.for_request().contains("s3cret"));
    }
}
