//! `oci://HOST[:PORT]/REPOSITORY` and `oci+http://HOST[:PORT]/REPOSITORY`: where the shared
//! cache lives. Parsed once, validated, then only this type reaches the client.

use std::fmt;

use super::CacheError;

/// A validated cache location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUrl {
    /// `HOST` or `HOST:PORT`, as the registry is addressed (and as auth files key it).
    registry: String,
    repository: String,
    plain_http: bool,
}

const HTTPS_SCHEME: &str = "oci://";
const HTTP_SCHEME: &str = "oci+http://";

impl CacheUrl {
    /// Parses `value`; an error names it and the accepted forms.
    pub fn parse(value: &str) -> Result<Self, CacheError> {
        let bad = |reason: &'static str| CacheError::BadUrl { value: redact(value), reason };
        let (rest, plain_http) = if let Some(rest) = value.strip_prefix(HTTP_SCHEME) {
            (rest, true)
        } else if let Some(rest) = value.strip_prefix(HTTPS_SCHEME) {
            (rest, false)
        } else {
            return Err(bad("it must start with oci:// or oci+http://"));
        };
        let (host_port, repository) =
            rest.split_once('/').ok_or_else(|| bad("it names no repository"))?;
        let repository = repository.trim_end_matches('/');
        validate_host_port(host_port).map_err(bad)?;
        validate_repository(repository).map_err(bad)?;
        Ok(CacheUrl {
            registry: host_port.to_ascii_lowercase(),
            repository: repository.to_owned(),
            plain_http,
        })
    }

    #[must_use]
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host without the port: what auth files may key an entry by, too.
    #[must_use]
    pub fn host(&self) -> &str {
        self.registry.rsplit_once(':').map_or(&self.registry, |(host, _)| host)
    }

    #[must_use]
    pub fn repository(&self) -> &str {
        &self.repository
    }

    #[must_use]
    pub fn plain_http(&self) -> bool {
        self.plain_http
    }
}

impl fmt::Display for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.plain_http { HTTP_SCHEME } else { HTTPS_SCHEME };
        write!(f, "{scheme}{}/{}", self.registry, self.repository)
    }
}

/// `value` with any `USER:PASSWORD@` cut out, so an error can name it.
fn redact(value: &str) -> String {
    let (scheme, rest) = value.split_once("://").unwrap_or(("", value));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if !scheme.is_empty() => format!("{scheme}://***@{}", &rest[at + 1..]),
        Some(at) => format!("***@{}", &rest[at + 1..]),
        None => value.to_owned(),
    }
}

fn validate_host_port(host_port: &str) -> Result<(), &'static str> {
    if host_port.contains('@') {
        return Err(
            "credentials do not belong in the URL: use STRATA_CACHE_USER and STRATA_CACHE_PASSWORD",
        );
    }
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !host_ok {
        return Err("its host is not a host name or IPv4 address");
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(1..))
    {
        return Err("its port is not a number from 1 to 65535");
    }
    Ok(())
}

/// The distribution spec's name grammar: lowercase components of `[a-z0-9]` joined by `.`, `_`,
/// `__` or `-` runs, separated by `/`.
fn validate_repository(repository: &str) -> Result<(), &'static str> {
    if repository.is_empty() {
        return Err("it names no repository");
    }
    if repository.len() > 255 {
        return Err("its repository is longer than 255 characters");
    }
    let component_ok = |component: &str| {
        let bytes = component.as_bytes();
        let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        edge(bytes.first())
            && edge(bytes.last())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
    };
    if repository.split('/').all(component_ok) {
        Ok(())
    } else {
        Err("its repository must be lowercase letters, digits and . _ - separated by /")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn https_and_plain_http_forms_parse() {
        let url = CacheUrl::parse("oci://registry.example.com/team/strata-cache").unwrap();
        assert_eq!(url.registry(), "registry.example.com");
        assert_eq!(url.host(), "registry.example.com");
        assert_eq!(url.repository(), "team/strata-cache");
        assert!(!url.plain_http());
        assert_eq!(url.to_string(), "oci://registry.example.com/team/strata-cache");

        let url = CacheUrl::parse("oci+http://127.0.0.1:5000/cache/").unwrap();
        assert_eq!(url.registry(), "127.0.0.1:5000");
        assert_eq!(url.host(), "127.0.0.1");
        assert_eq!(url.repository(), "cache");
        assert!(url.plain_http());
    }

    #[test]
    fn bad_urls_name_the_value_and_the_accepted_forms() {
        for value in [
            "https://registry/cache",
            "oci://registry",
            "oci://registry/",
            "oci://registry:0/cache",
            "oci://registry:99999/cache",
            "oci://registry:port/cache",
            "oci://user:secret@registry/cache",
            "oci://regi stry/cache",
            "oci://registry/Cache",
            "oci://registry/cache//x",
            "oci:///cache",
        ] {
            let message = CacheUrl::parse(value).unwrap_err().to_string();
            assert!(message.contains(&redact(value)), "{message}");
            assert!(message.contains("oci://HOST[:PORT]/REPOSITORY"), "{message}");
            assert!(message.contains("oci+http://"), "{message}");
            assert!(!message.contains("secret"), "a password leaked: {message}");
        }
    }
}
