//! Which cloud to publish to and how to log in, found the way every OpenStack tool finds it
//! (openstacksdk's rules): `--cloud` or `OS_CLOUD` names a cloud in the first `clouds.yaml`
//! found (`OS_CLIENT_CONFIG_FILE`, then `./`, `~/.config/openstack/`, `/etc/openstack/`; also
//! `.yml` and `.json`), merged with `secure.yaml` from the same places; `OS_*` variables
//! override its values, as `openstack --os-cloud` does; with no cloud named, the `OS_*`
//! variables alone are the cloud (`envvars`). Pure: reads files and the given environment,
//! no network. Secrets are [`Secret`]s: never shown, not even by `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// A password, an application credential's secret, or a token: shown nowhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one request that sends it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced: for messages that quote a
    /// service's answer.
    #[must_use]
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 { text.to_owned() } else { text.replace(&self.0, "***") }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A Keystone domain, by ID or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

/// A user or a project: by ID, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Id(String),
    Name { name: String, domain: DomainRef },
}

impl Named {
    fn shown(&self) -> String {
        match self {
            Named::Id(id) => format!("`{id}`"),
            Named::Name { name, domain: DomainRef::Name(domain) } => {
                format!("`{name}` (domain {domain})")
            }
            Named::Name { name, domain: DomainRef::Id(domain) } => {
                format!("`{name}` (domain ID {domain})")
            }
        }
    }
}

/// How to prove who we are to Keystone v3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `password` (`v3password`): a user, a password and a project to scope to.
    Password { user: Named, password: Secret, project: Option<Named> },
    /// `v3applicationcredential`: by ID, or by name with its user; scoped by the credential.
    ApplicationCredential { credential: AppCredRef, secret: Secret },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCredRef {
    Id(String),
    Name { name: String, user: Named },
}

/// A cloud, resolved: where Keystone is, who logs in, and which image endpoint to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloud {
    /// As `--cloud` or `OS_CLOUD` named it, or `envvars` for the `OS_*` variables alone.
    pub name: String,
    /// Where it was found: the clouds.yaml file, or "the OS_* variables".
    pub origin: String,
    /// Keystone v3, without a trailing slash (`…/v3`).
    pub auth_url: String,
    pub credential: Credential,
    pub region: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Verify TLS certificates (`verify: false` turns it off).
    pub verify: bool,
    /// A CA bundle to trust besides the system's (`cacert`, `OS_CACERT`).
    pub cacert: Option<PathBuf>,
}

impl Cloud {
    /// Who logs in, for messages: the user, or the application credential. Never the secret.
    #[must_use]
    pub fn who(&self) -> String {
        match &self.credential {
            Credential::Password { user, .. } => format!("user {}", user.shown()),
            Credential::ApplicationCredential { credential: AppCredRef::Id(id), .. } => {
                format!("application credential `{id}`")
            }
            Credential::ApplicationCredential {
                credential: AppCredRef::Name { name, user },
                ..
            } => format!("application credential `{name}` of user {}", user.shown()),
        }
    }

    /// The secret this cloud logs in with.
    #[must_use]
    pub fn secret(&self) -> &Secret {
        match &self.credential {
            Credential::Password { password, .. } => password,
            Credential::ApplicationCredential { secret, .. } => secret,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudsError {
    #[error(
        "no cloud given: pass --cloud NAME (a cloud in clouds.yaml), set OS_CLOUD, or set OS_AUTH_URL and the other OS_* variables (searched {searched})"
    )]
    NoCloud { searched: String },
    #[error(
        "cloud `{cloud}` is not in {file}: its clouds are {known}; fix --cloud/OS_CLOUD or the file"
    )]
    UnknownCloud { cloud: String, file: String, known: String },
    #[error(
        "cloud `{cloud}` was named but no clouds.yaml was found (searched {searched}): write one, or set OS_CLIENT_CONFIG_FILE"
    )]
    NoFile { cloud: String, searched: String },
    #[error("OS_CLIENT_CONFIG_FILE names {path}, which does not exist")]
    MissingOverride { path: PathBuf },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not valid YAML{where_}: fix it (the file is not quoted here: it may hold secrets)"
    )]
    Syntax { path: PathBuf, where_: String },
    #[error("cloud `{cloud}` ({origin}): {problem}")]
    Invalid { cloud: String, origin: String, problem: String },
}

/// What discovery reads besides the files: the variables and the usual folders.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: BTreeMap<String, String>,
    /// Searched first (`./clouds.yaml`).
    pub cwd: PathBuf,
    /// `$XDG_CONFIG_HOME/openstack` or `~/.config/openstack`.
    pub user_dir: Option<PathBuf>,
    /// `/etc/openstack`.
    pub system_dir: PathBuf,
}

impl Environment {
    /// The process's environment and folders.
    #[must_use]
    pub fn from_process() -> Self {
        let vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(name, _)| name.starts_with("OS_") || name == "XDG_CONFIG_HOME")
            .collect();
        let user_dir = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
            .map(|dir| dir.join("openstack"));
        Environment {
            vars,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            user_dir,
            system_dir: PathBuf::from("/etc/openstack"),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|value| !value.is_empty())
    }

    fn candidates(&self, stem: &str, override_var: &str) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(path) = self.var(override_var) {
            files.push(PathBuf::from(path));
        }
        let mut dirs = vec![self.cwd.clone()];
        dirs.extend(self.user_dir.clone());
        dirs.push(self.system_dir.clone());
        for dir in dirs {
            for suffix in ["yaml", "yml", "json"] {
                files.push(dir.join(format!("{stem}.{suffix}")));
            }
        }
        files
    }
}

/// `OS_*` variables and the `auth` keys they set.
const AUTH_VARS: &[(&str, &str)] = &[
    ("OS_AUTH_URL", "auth_url"),
    ("OS_USERNAME", "username"),
    ("OS_USER_ID", "user_id"),
    ("OS_PASSWORD", "password"),
    ("OS_TENANT_NAME", "project_name"),
    ("OS_PROJECT_NAME", "project_name"),
    ("OS_TENANT_ID", "project_id"),
    ("OS_PROJECT_ID", "project_id"),
    ("OS_USER_DOMAIN_NAME", "user_domain_name"),
    ("OS_USER_DOMAIN_ID", "user_domain_id"),
    ("OS_PROJECT_DOMAIN_NAME", "project_domain_name"),
    ("OS_PROJECT_DOMAIN_ID", "project_domain_id"),
    ("OS_DOMAIN_NAME", "domain_name"),
    ("OS_DOMAIN_ID", "domain_id"),
    ("OS_APPLICATION_CREDENTIAL_ID", "application_credential_id"),
    ("OS_APPLICATION_CREDENTIAL_NAME", "application_credential_name"),
    ("OS_APPLICATION_CREDENTIAL_SECRET", "application_credential_secret"),
];

/// `OS_*` variables and the cloud keys (outside `auth`) they set.
const CLOUD_VARS: &[(&str, &str)] = &[
    ("OS_REGION_NAME", "region_name"),
    ("OS_ENDPOINT_TYPE", "interface"),
    ("OS_INTERFACE", "interface"),
    ("OS_AUTH_TYPE", "auth_type"),
    ("OS_CACERT", "cacert"),
    ("OS_IDENTITY_API_VERSION", "identity_api_version"),
];

/// Finds the cloud `name` (or `OS_CLOUD`, or the `OS_*` variables) and resolves how to log in.
pub fn discover(name: Option<&str>, env: &Environment) -> Result<Cloud, CloudsError> {
    let name = name.or_else(|| env.var("OS_CLOUD")).map(str::to_owned);
    if let Some(path) = env.var("OS_CLIENT_CONFIG_FILE")
        && !Path::new(path).exists()
    {
        return Err(CloudsError::MissingOverride { path: PathBuf::from(path) });
    }
    let searched = |files: &[PathBuf]| {
        files.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
    };
    let Some(name) = name else {
        if env.var("OS_AUTH_URL").is_none() {
            let files = env.candidates("clouds", "OS_CLIENT_CONFIG_FILE");
            return Err(CloudsError::NoCloud { searched: searched(&files) });
        }
        let mut cloud = Map::new();
        apply_env(&mut cloud, env);
        return resolve("envvars", "the OS_* variables", &cloud);
    };
    let files = env.candidates("clouds", "OS_CLIENT_CONFIG_FILE");
    let Some(file) = files.iter().find(|path| path.is_file()) else {
        return Err(CloudsError::NoFile { cloud: name, searched: searched(&files) });
    };
    let clouds = read_clouds(file)?;
    let Some(found) = clouds.get(&name) else {
        let known: Vec<String> = clouds.keys().map(|key| format!("`{key}`")).collect();
        return Err(CloudsError::UnknownCloud {
            cloud: name,
            file: file.display().to_string(),
            known: if known.is_empty() { "none".to_owned() } else { known.join(", ") },
        });
    };
    let mut cloud = found.as_object().cloned().unwrap_or_default();
    let secure_files = env.candidates("secure", "OS_CLIENT_SECURE_FILE");
    if let Some(secure) = secure_files.iter().find(|path| path.is_file())
        && let Some(Value::Object(extra)) = read_clouds(secure)?.get(&name)
    {
        merge(&mut cloud, extra);
    }
    apply_env(&mut cloud, env);
    resolve(&name, &file.display().to_string(), &cloud)
}

/// The `clouds` map of a clouds.yaml or secure.yaml.
fn read_clouds(path: &Path) -> Result<Map<String, Value>, CloudsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| CloudsError::Read { path: path.to_owned(), source })?;
    parse_clouds(&text).map_err(|where_| CloudsError::Syntax { path: path.to_owned(), where_ })
}

/// Parses the text of a clouds.yaml; on an error, where it is (never the text: it may hold a
/// password).
fn parse_clouds(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value: Value = serde_saphyr::from_str(text).map_err(|error| {
        error.location().map_or_else(String::new, |location| {
            format!(" at line {}, column {}", location.line(), location.column())
        })
    })?;
    match value {
        Value::Object(mut top) => match top.remove("clouds") {
            Some(Value::Object(clouds)) => Ok(clouds),
            None | Some(Value::Null) => Ok(Map::new()),
            Some(_) => Err(": `clouds` is not a mapping of cloud names".to_owned()),
        },
        Value::Null => Ok(Map::new()),
        _ => Err(": the top level is not a mapping with `clouds`".to_owned()),
    }
}

/// Merges `extra` into `base`, mappings key by key (secure.yaml's `auth.password` into
/// clouds.yaml's `auth`).
fn merge(base: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (key, value) in extra {
        match (base.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(more)) => merge(inner, more),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

fn apply_env(cloud: &mut Map<String, Value>, env: &Environment) {
    for (var, key) in CLOUD_VARS {
        if let Some(value) = env.var(var) {
            cloud.insert((*key).to_owned(), Value::String(value.to_owned()));
        }
    }
    let auth = cloud.entry("auth").or_insert_with(|| Value::Object(Map::new()));
    if !auth.is_object() {
        *auth = Value::Object(Map::new());
    }
    if let Value::Object(auth) = auth {
        for (var, key) in AUTH_VARS {
            if let Some(value) = env.var(var) {
                auth.insert((*key).to_owned(), Value::String(value.to_owned()));
            }
        }
    }
}

/// A scalar as text: YAML may give `project_id: 1234` or `verify: false`.
fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn resolve(name: &str, origin: &str, cloud: &Map<String, Value>) -> Result<Cloud, CloudsError> {
    let invalid = |problem: String| CloudsError::Invalid {
        cloud: name.to_owned(),
        origin: origin.to_owned(),
        problem,
    };
    if let Some(profile) = text(cloud, "profile") {
        return Err(invalid(format!(
            "vendor profiles (`profile: {profile}`) are not supported: write the cloud's auth_url and region_name instead"
        )));
    }
    if let Some(version) = text(cloud, "identity_api_version")
        && !version.starts_with('3')
    {
        return Err(invalid(format!(
            "identity_api_version {version} is not supported: strata speaks Keystone v3"
        )));
    }
    let empty = Map::new();
    let auth = cloud.get("auth").and_then(Value::as_object).unwrap_or(&empty);
    let auth_url = text(auth, "auth_url").ok_or_else(|| {
        invalid(
            "no auth_url: set `auth: {auth_url: https://keystone.example:5000/v3}` or OS_AUTH_URL"
                .to_owned(),
        )
    })?;
    let auth_url = keystone_v3(&auth_url).map_err(invalid)?;
    let default_domain = || {
        text(auth, "domain_id")
            .map(DomainRef::Id)
            .or_else(|| text(auth, "domain_name").map(DomainRef::Name))
            // Keystone's own default domain, as DevStack's and most clouds' users live in.
            .unwrap_or_else(|| DomainRef::Id("default".to_owned()))
    };
    let domain = |id: &str, name_key: &str| {
        text(auth, id)
            .map(DomainRef::Id)
            .or_else(|| text(auth, name_key).map(DomainRef::Name))
            .unwrap_or_else(default_domain)
    };
    let user = || {
        text(auth, "user_id").map(Named::Id).or_else(|| {
            text(auth, "username").map(|name| Named::Name {
                name,
                domain: domain("user_domain_id", "user_domain_name"),
            })
        })
    };
    let auth_type = text(cloud, "auth_type").unwrap_or_else(|| {
        if auth.contains_key("application_credential_secret") {
            "v3applicationcredential".to_owned()
        } else {
            "password".to_owned()
        }
    });
    let credential = match auth_type.as_str() {
        "password" | "v3password" => {
            let user = user().ok_or_else(|| {
                invalid("no user: set auth.username (or user_id), or OS_USERNAME".to_owned())
            })?;
            let password = text(auth, "password").map(Secret::new).ok_or_else(|| {
                invalid(format!(
                    "no password for user {}: set auth.password (or in secure.yaml), or OS_PASSWORD",
                    user.shown()
                ))
            })?;
            let project = text(auth, "project_id").map(Named::Id).or_else(|| {
                text(auth, "project_name").map(|name| Named::Name {
                    name,
                    domain: domain("project_domain_id", "project_domain_name"),
                })
            });
            if project.is_none() {
                return Err(invalid(
                    "no project: set auth.project_name (or project_id), or OS_PROJECT_NAME: images belong to a project"
                        .to_owned(),
                ));
            }
            Credential::Password { user, password, project }
        }
        "v3applicationcredential" | "applicationcredential" | "application_credential" => {
            let secret = text(auth, "application_credential_secret").map(Secret::new).ok_or_else(
                || {
                    invalid(
                        "no application_credential_secret: set it in auth (or secure.yaml), or OS_APPLICATION_CREDENTIAL_SECRET"
                            .to_owned(),
                    )
                },
            )?;
            let credential = match text(auth, "application_credential_id") {
                Some(id) => AppCredRef::Id(id),
                None => {
                    let name = text(auth, "application_credential_name").ok_or_else(|| {
                        invalid(
                            "no application_credential_id (or _name with the user): set one in auth"
                                .to_owned(),
                        )
                    })?;
                    let user = user().ok_or_else(|| {
                        invalid(format!(
                            "application credential `{name}` is named by name: its user (auth.username or user_id) is needed too"
                        ))
                    })?;
                    AppCredRef::Name { name, user }
                }
            };
            Credential::ApplicationCredential { credential, secret }
        }
        other => {
            return Err(invalid(format!(
                "auth_type `{other}` is not supported: use `password` or `v3applicationcredential`"
            )));
        }
    };
    let region = text(cloud, "region_name").or_else(|| {
        cloud.get("regions").and_then(Value::as_array).and_then(|regions| {
            regions.first().and_then(|first| match first {
                Value::String(region) => Some(region.clone()),
                Value::Object(region) => text(region, "name"),
                _ => None,
            })
        })
    });
    let interface =
        normalize_interface(&text(cloud, "interface").unwrap_or_default()).map_err(invalid)?;
    let verify = !matches!(cloud.get("verify"), Some(Value::Bool(false)))
        && text(cloud, "verify").is_none_or(|value| !matches!(value.as_str(), "false" | "False"));
    let cacert = text(cloud, "cacert").map(PathBuf::from);
    Ok(Cloud {
        name: name.to_owned(),
        origin: origin.to_owned(),
        auth_url,
        credential,
        region,
        interface,
        verify,
        cacert,
    })
}

/// `public`, `internal` or `admin` from what clouds.yaml and the variables allow (`publicURL`
/// and friends from Keystone v2 days too); public when unset.
fn normalize_interface(value: &str) -> Result<String, String> {
    let value = value.trim().to_ascii_lowercase();
    let value = value.strip_suffix("url").unwrap_or(&value);
    match value {
        "" | "public" => Ok("public".to_owned()),
        "internal" | "admin" => Ok(value.to_owned()),
        other => Err(format!("interface `{other}` is not one of public, internal, admin")),
    }
}

/// The Keystone v3 root from an auth_url: `…/v3` kept, a bare root given `/v3`.
fn keystone_v3(url: &str) -> Result<String, String> {
    let parsed =
        url::Url::parse(url).map_err(|error| format!("auth_url `{url}` is not a URL ({error})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("auth_url `{url}` is not http(s)"));
    }
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/v3") {
        Ok(trimmed.to_owned())
    } else if trimmed.ends_with("/v2.0") {
        Err(format!("auth_url `{url}` is Keystone v2.0: strata speaks v3 (use …/v3)"))
    } else {
        Ok(format!("{trimmed}/v3"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Setup {
        dir: tempfile::TempDir,
        env: Environment,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["cwd", "user", "etc"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let env = Environment {
            vars: BTreeMap::new(),
            cwd: dir.path().join("cwd"),
            user_dir: Some(dir.path().join("user")),
            system_dir: dir.path().join("etc"),
        };
        Setup { dir, env }
    }

    const MEMBER: &str = "clouds:\n  member:\n    auth:\n      auth_url: http://127.0.0.1:5000\n      \
         username: member\n      password: s3cret-pw\n      project_name: strata\n      \
         user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    \
         interface: internal\n    identity_api_version: 3\n";

    #[test]
    fn a_named_cloud_in_the_user_folder_with_its_password() {
        let setup = setup();
        std::fs::write(setup.dir.path().join("user/clouds.yaml"), MEMBER).unwrap();
        let cloud = discover(Some("member"), &setup.env).unwrap();
        assert_eq!(cloud.auth_url, "http://127.0.0.1:5000/v3");
        assert_eq!(cloud.region.as_deref(), Some("RegionOne"));
        assert_eq!(cloud.interface, "internal");
        assert!(cloud.verify);
        assert_eq!(cloud.who(), "user `member` (domain Default)");
        assert_eq!(cloud.secret().expose(), "s3cret-pw");
        assert!(cloud.origin.ends_with("user/clouds.yaml"), "{}", cloud.origin);
        let Credential::Password { project, .. } = &cloud.credential else { panic!() };
        assert_eq!(
            project,
            &Some(Named::Name { name: "strata".into(), domain: DomainRef::Name("Default".into()) })
        );
        let shown = format!("{cloud:?}");
        assert!(!shown.contains("s3cret-pw"), "Debug shows no secret: {shown}");
    }

    #[test]
    fn the_first_file_found_wins_and_os_cloud_names_the_cloud() {
        let mut setup = setup();
        let other = MEMBER.replace("127.0.0.1:5000", "keystone.other:5000/v3/");
        std::fs::write(setup.dir.path().join("etc/clouds.yaml"), &other).unwrap();
        std::fs::write(setup.dir.path().join("user/clouds.yml"), MEMBER).unwrap();
        setup.env.vars.insert("OS_CLOUD".into(), "member".into());
        assert_eq!(discover(None, &setup.env).unwrap().auth_url, "http://127.0.0.1:5000/v3");
        std::fs::write(setup.dir.path().join("cwd/clouds.yaml"), &other).unwrap();
        assert_eq!(discover(None, &setup.env).unwrap().auth_url, "http://keystone.other:5000/v3");
        let named = setup.dir.path().join("named.yaml");
        std::fs::write(&named, MEMBER.replace("5000", "5555")).unwrap();
        setup.env.vars.insert("OS_CLIENT_CONFIG_FILE".into(), named.display().to_string());
        assert_eq!(discover(None, &setup.env).unwrap().auth_url, "http://127.0.0.1:5555/v3");
        setup.env.vars.insert("OS_CLIENT_CONFIG_FILE".into(), "/nonexistent/c.yaml".into());
        assert!(matches!(
            discover(None, &setup.env).unwrap_err(),
            CloudsError::MissingOverride { .. }
        ));
    }

    #[test]
    fn secure_yaml_and_os_variables_fill_in_and_override() {
        let mut setup = setup();
        let without = MEMBER.replace("      password: s3cret-pw\n", "");
        std::fs::write(setup.dir.path().join("cwd/clouds.yaml"), without).unwrap();
        let error = discover(Some("member"), &setup.env).unwrap_err().to_string();
        assert!(error.contains("no password for user `member`"), "{error}");
        std::fs::write(
            setup.dir.path().join("user/secure.yaml"),
            "clouds:\n  member:\n    auth:\n      password: from-secure\n",
        )
        .unwrap();
        let cloud = discover(Some("member"), &setup.env).unwrap();
        assert_eq!(cloud.secret().expose(), "from-secure");
        assert_eq!(cloud.auth_url, "http://127.0.0.1:5000/v3", "merged, not replaced");
        setup.env.vars.insert("OS_PASSWORD".into(), "from-env".into());
        setup.env.vars.insert("OS_REGION_NAME".into(), "RegionTwo".into());
        let cloud = discover(Some("member"), &setup.env).unwrap();
        assert_eq!(cloud.secret().expose(), "from-env");
        assert_eq!(cloud.region.as_deref(), Some("RegionTwo"));
    }

    #[test]
    fn os_variables_alone_and_application_credentials() {
        let mut setup = setup();
        let error = discover(None, &setup.env).unwrap_err().to_string();
        assert!(error.contains("pass --cloud NAME"), "{error}");
        for (name, value) in [
            ("OS_AUTH_URL", "https://keystone.example/identity/v3/"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_ID", "4f2c"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "app-secret"),
            ("OS_INTERFACE", "publicURL"),
        ] {
            setup.env.vars.insert(name.into(), value.into());
        }
        let cloud = discover(None, &setup.env).unwrap();
        assert_eq!(cloud.name, "envvars");
        assert_eq!(cloud.auth_url, "https://keystone.example/identity/v3");
        assert_eq!(cloud.interface, "public");
        assert_eq!(cloud.who(), "application credential `4f2c`");
        assert_eq!(
            cloud.credential,
            Credential::ApplicationCredential {
                credential: AppCredRef::Id("4f2c".into()),
                secret: Secret::new("app-secret")
            }
        );
    }

    #[test]
    fn application_credential_by_name_needs_its_user_and_yaml_scalars_are_text() {
        let setup = setup();
        std::fs::write(
            setup.dir.path().join("cwd/clouds.yaml"),
            "clouds:\n  ci:\n    auth_type: v3applicationcredential\n    verify: false\n    regions: [Two, Three]\n    auth:\n      auth_url: http://k:5000/v3\n      \
             application_credential_name: publisher\n      application_credential_secret: 12345\n      \
             user_id: 987\n",
        )
        .unwrap();
        let cloud = discover(Some("ci"), &setup.env).unwrap();
        assert!(!cloud.verify);
        assert_eq!(cloud.region.as_deref(), Some("Two"));
        assert_eq!(cloud.secret().expose(), "12345");
        assert_eq!(cloud.who(), "application credential `publisher` of user `987`");
    }

    #[test]
    fn mistakes_name_the_cloud_and_what_to_do() {
        let setup = setup();
        let error = discover(Some("member"), &setup.env).unwrap_err().to_string();
        assert!(error.contains("no clouds.yaml was found"), "{error}");
        std::fs::write(setup.dir.path().join("cwd/clouds.yaml"), MEMBER).unwrap();
        let error = discover(Some("prod"), &setup.env).unwrap_err().to_string();
        assert!(error.contains("cloud `prod` is not in") && error.contains("`member`"), "{error}");
        for (from, to, expected) in [
            ("identity_api_version: 3", "identity_api_version: 2", "Keystone v3"),
            ("interface: internal", "interface: private", "interface `private`"),
            ("127.0.0.1:5000", "127.0.0.1:5000/v2.0", "Keystone v2.0"),
            ("    region_name: RegionOne\n", "    auth_type: token\n", "auth_type `token`"),
            ("      project_name: strata\n", "", "no project"),
        ] {
            std::fs::write(setup.dir.path().join("cwd/clouds.yaml"), MEMBER.replace(from, to))
                .unwrap();
            let error = discover(Some("member"), &setup.env).unwrap_err().to_string();
            assert!(error.contains("cloud `member` (") && error.contains(expected), "{error}");
        }
        std::fs::write(
            setup.dir.path().join("cwd/clouds.yaml"),
            "clouds:\n  member:\n    auth: {password: s3cret-pw\n",
        )
        .unwrap();
        let error = discover(Some("member"), &setup.env).unwrap_err().to_string();
        assert!(error.contains("is not valid YAML"), "{error}");
        assert!(!error.contains("s3cret-pw"), "the text is not quoted: {error}");
    }

    #[test]
    fn redaction_hides_the_secret_in_quoted_answers() {
        let secret = Secret::new("hunter22");
        assert_eq!(secret.redact("bad value 'hunter22' here"), "bad value '***' here");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
