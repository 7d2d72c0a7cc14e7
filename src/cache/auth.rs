//! Registry credentials: `STRATA_CACHE_USER` + `STRATA_CACHE_PASSWORD`, else a login in the
//! docker or podman auth file, else anonymous. Read when connecting, kept in memory only, never
//! printed (`Debug` redacts the password). Credential helpers (`credsStore`, `credHelpers`) are
//! not run: a login kept only in a helper is not found, and strata goes anonymous.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;

use super::CacheUrl;

pub const USER_ENV: &str = "STRATA_CACHE_USER";
pub const PASSWORD_ENV: &str = "STRATA_CACHE_PASSWORD";

/// Who the client says it is to the registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
}

/// Where credentials came from, for messages ("check …"): never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsFrom {
    Environment,
    AuthFile(PathBuf),
    Nowhere,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl Credentials {
    /// The credentials for `url` from the process environment and the usual auth files.
    #[must_use]
    pub fn discover(url: &CacheUrl) -> (Credentials, CredentialsFrom) {
        discover_with(url, |name| std::env::var(name).ok().filter(|value| !value.is_empty()))
    }

    pub(super) fn to_registry_auth(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Credentials::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            Credentials::Basic { user, password } => {
                oci_client::secrets::RegistryAuth::Basic(user.clone(), password.clone())
            }
        }
    }
}

/// [`Credentials::discover`] with the environment given, for tests.
pub fn discover_with(
    url: &CacheUrl,
    env: impl Fn(&str) -> Option<String>,
) -> (Credentials, CredentialsFrom) {
    if let (Some(user), Some(password)) = (env(USER_ENV), env(PASSWORD_ENV)) {
        return (Credentials::Basic { user, password }, CredentialsFrom::Environment);
    }
    for file in auth_files(&env) {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        if let Some(credentials) = login_in(&text, url) {
            return (credentials, CredentialsFrom::AuthFile(file));
        }
    }
    (Credentials::Anonymous, CredentialsFrom::Nowhere)
}

/// The auth files in the order podman reads them, docker's included.
fn auth_files(env: &impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let home = env("HOME").map(PathBuf::from);
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE").map(PathBuf::from));
    files.extend(env("XDG_RUNTIME_DIR").map(|dir| PathBuf::from(dir).join("containers/auth.json")));
    files.extend(home.as_ref().map(|home| home.join(".config/containers/auth.json")));
    match env("DOCKER_CONFIG") {
        Some(dir) => files.push(PathBuf::from(dir).join("config.json")),
        None => files.extend(home.as_ref().map(|home| home.join(".docker/config.json"))),
    }
    files
}

/// The login for `url`'s registry in an auth file's `auths` table: keyed by `HOST:PORT` or
/// `HOST`, with or without `https://` and a path; `auth` is base64 of `user:password`.
fn login_in(text: &str, url: &CacheUrl) -> Option<Credentials> {
    let document: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = document.get("auths")?.as_object()?;
    let wanted = [url.registry(), url.host()];
    wanted.iter().find_map(|want| {
        auths.iter().find_map(|(key, entry)| {
            (registry_of(key) == *want).then(|| decode_login(entry)).flatten()
        })
    })
}

/// `https://HOST:PORT/v1/` → `HOST:PORT`.
fn registry_of(key: &str) -> String {
    let without_scheme = key.split_once("://").map_or(key, |(_, rest)| rest);
    without_scheme.split('/').next().unwrap_or_default().to_ascii_lowercase()
}

fn decode_login(entry: &serde_json::Value) -> Option<Credentials> {
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty())
        .then(|| Credentials::Basic { user: user.to_owned(), password: password.to_owned() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        move |name| map.get(name).cloned()
    }

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic { user: user.into(), password: password.into() }
    }

    fn auth_file(dir: &std::path::Path, name: &str, key: &str, login: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(login);
        let text = serde_json::json!({ "auths": { key: { "auth": encoded } } });
        std::fs::write(&path, text.to_string()).unwrap();
        path
    }

    #[test]
    fn the_environment_comes_first() {
        let url = CacheUrl::parse("oci://reg.example:5000/cache").unwrap();
        let env = env_of(&[(USER_ENV, "ci".into()), (PASSWORD_ENV, "s3cret".into())]);
        assert_eq!(discover_with(&url, env), (basic("ci", "s3cret"), CredentialsFrom::Environment));
        // A user without a password is not a login.
        let env = env_of(&[(USER_ENV, "ci".into())]);
        assert_eq!(discover_with(&url, env).0, Credentials::Anonymous);
    }

    #[test]
    fn docker_and_podman_auth_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = CacheUrl::parse("oci://reg.example:5000/cache").unwrap();
        let home = dir.path().join("home");

        let docker =
            auth_file(&home, ".docker/config.json", "https://reg.example:5000/v1/", "d:pw1");
        let env = env_of(&[("HOME", home.display().to_string())]);
        assert_eq!(
            discover_with(&url, &env),
            (basic("d", "pw1"), CredentialsFrom::AuthFile(docker))
        );

        // podman's file is read before docker's.
        let podman = auth_file(&home, ".config/containers/auth.json", "reg.example:5000", "p:pw2");
        assert_eq!(
            discover_with(&url, &env),
            (basic("p", "pw2"), CredentialsFrom::AuthFile(podman))
        );

        // $REGISTRY_AUTH_FILE before both; an entry for the bare host matches too.
        let explicit = auth_file(dir.path(), "explicit.json", "reg.example", "e:pw:with:colons");
        let env = env_of(&[
            ("HOME", home.display().to_string()),
            ("REGISTRY_AUTH_FILE", explicit.display().to_string()),
        ]);
        assert_eq!(
            discover_with(&url, &env),
            (basic("e", "pw:with:colons"), CredentialsFrom::AuthFile(explicit))
        );
    }

    #[test]
    fn other_registries_and_broken_files_mean_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let url = CacheUrl::parse("oci+http://127.0.0.1:5000/cache").unwrap();
        auth_file(dir.path(), "docker/config.json", "other.example", "o:pw");
        std::fs::write(dir.path().join("broken.json"), "{not json").unwrap();
        let env = env_of(&[
            ("DOCKER_CONFIG", dir.path().join("docker").display().to_string()),
            ("REGISTRY_AUTH_FILE", dir.path().join("broken.json").display().to_string()),
        ]);
        assert_eq!(discover_with(&url, env), (Credentials::Anonymous, CredentialsFrom::Nowhere));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let text = format!("{:?}", basic("ci", "hunter2"));
        assert!(text.contains("ci") && !text.contains("hunter2"), "{text}");
    }
}
