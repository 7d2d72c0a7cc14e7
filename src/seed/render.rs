//! Rendering user-data (minijinja, strict undefined) and writing meta-data.
//! Owns the template context; knows nothing of keys' generation nor of the vfat image.

use std::collections::BTreeMap;
use std::fmt;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

use super::SeedError;

/// strata's built-in seed template, used when a stage names no `user_data`.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../seeds/default.yaml.j2");

/// The name render errors give the built-in template.
pub const DEFAULT_TEMPLATE_NAME: &str = "strata's built-in seeds/default.yaml.j2";

/// Everything a seed template may use. Field names are the template's variable names.
#[derive(Clone, Serialize)]
pub struct SeedInput {
    /// The account the seed creates and steps log in as.
    pub user: String,
    /// The per-build client public key, OpenSSH one-line format.
    pub ssh_authorized_key: String,
    /// The guest's host private key, OpenSSH PEM-like format (multi-line).
    pub host_key_private: String,
    /// The guest's host public key, OpenSSH one-line format.
    pub host_key_public: String,
    pub hostname: String,
    /// The image definition's name.
    pub image: String,
    /// The stage being built.
    pub stage: String,
    /// The definition's `[vars]`.
    pub vars: BTreeMap<String, String>,
}

impl SeedInput {
    /// The template context: one variable per field.
    #[must_use]
    pub fn context(&self) -> Value {
        Value::from_serialize(self)
    }

    /// An input with placeholder keys, for test-rendering a template (`strata validate`)
    /// without generating keys.
    #[must_use]
    pub fn placeholder(
        user: &str,
        image: &str,
        stage: &str,
        vars: BTreeMap<String, String>,
    ) -> SeedInput {
        SeedInput {
            user: user.to_owned(),
            ssh_authorized_key: "ssh-ed25519 AAAAplaceholder strata".to_owned(),
            host_key_private: "-----BEGIN OPENSSH PRIVATE KEY-----\nplaceholder\n-----END OPENSSH PRIVATE KEY-----\n".to_owned(),
            host_key_public: "ssh-ed25519 AAAAplaceholder strata-host".to_owned(),
            hostname: BUILD_HOSTNAME.to_owned(),
            image: image.to_owned(),
            stage: stage.to_owned(),
            vars,
        }
    }
}

impl fmt::Debug for SeedInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedInput")
            .field("user", &self.user)
            .field("ssh_authorized_key", &self.ssh_authorized_key)
            .field("host_key_private", &"<redacted>")
            .field("host_key_public", &self.host_key_public)
            .field("hostname", &self.hostname)
            .field("image", &self.image)
            .field("stage", &self.stage)
            .field("vars", &self.vars)
            .finish()
    }
}

/// Renders `template_text` (named `template_name` in errors: give the file's path) with
/// `input`. Undefined variables are errors, not empty strings. Besides minijinja's
/// built-in filters, `tojson` quotes a value as JSON, which YAML reads as a string.
pub fn render(
    template_text: &str,
    template_name: &str,
    input: &SeedInput,
) -> Result<String, SeedError> {
    let wrap = |source: minijinja::Error| SeedError::Render {
        template: template_name.to_owned(),
        line: source.line(),
        source,
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("tojson", to_json);
    let template = env.template_from_named_str(template_name, template_text).map_err(wrap)?;
    template.render(input.context()).map_err(wrap)
}

/// Renders the built-in template.
pub fn render_default(input: &SeedInput) -> Result<String, SeedError> {
    render(DEFAULT_TEMPLATE, DEFAULT_TEMPLATE_NAME, input)
}

fn to_json(value: &Value) -> Result<String, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "tojson got an undefined value",
        ));
    }
    serde_json::to_string(value).map_err(|error| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, "tojson failed")
            .with_source(error)
    })
}

/// A NoCloud instance id, new for every boot so cloud-init runs its per-instance modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId(String);

impl InstanceId {
    /// `strata-` and 16 random hex digits.
    pub fn random() -> Result<InstanceId, SeedError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(SeedError::Random)?;
        Ok(InstanceId(format!("strata-{}", hex::encode(bytes))))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The NoCloud meta-data file.
#[must_use]
pub fn meta_data(instance_id: &InstanceId, hostname: &str) -> String {
    let quote = |text: &str| serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
    format!("instance-id: {}\nlocal-hostname: {}\n", quote(instance_id.as_str()), quote(hostname))
}

/// The host name every build guest gets from strata's seed, whatever the image and stage.
/// One name for all builds on a source lets a later build resume the source's saved first boot
/// (`stage/restore.rs`) rather than boot under another name; and the name never reaches an
/// instance: cloud-init names each one from its own meta-data at its first boot.
pub const BUILD_HOSTNAME: &str = "strata-build";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input() -> SeedInput {
        let mut vars = BTreeMap::new();
        vars.insert("app_port".to_owned(), "8080".to_owned());
        SeedInput {
            user: "debian".into(),
            ssh_authorized_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClient strata-build".into(),
            host_key_private: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQUFB\n-----END OPENSSH PRIVATE KEY-----\n".into(),
            host_key_public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost strata-host".into(),
            hostname: BUILD_HOSTNAME.into(),
            image: "web".into(),
            stage: "base".into(),
            vars,
        }
    }

    #[test]
    fn default_template_has_user_keys_and_short_module_lists() {
        let text = render_default(&input()).unwrap();
        assert!(text.starts_with("#cloud-config\n"));
        assert!(text.contains("  - name: \"debian\"\n"));
        assert!(text.contains("sudo: \"ALL=(ALL) NOPASSWD:ALL\""));
        assert!(text.contains("lock_passwd: true"));
        assert!(text.contains("shell: /bin/bash"));
        assert!(
            text.contains("      - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClient strata-build\"\n")
        );
        assert!(text.contains(
            "  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    b3BlbnNzaC1rZXktdjEAAAAA\n    QUFB\n    -----END OPENSSH PRIVATE KEY-----\n"
        ));
        assert!(text.contains(
            "  ed25519_public: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost strata-host\"\n"
        ));
        assert!(text.contains("ssh_deletekeys: true"));
        assert!(text.contains("hostname: \"strata-build\""));
        assert!(text.contains("manage_etc_hosts: true"));
        for dropped in ["locale", "grub-dpkg", "apt-configure", "ntp", "keys-to-console"] {
            assert!(!text.contains(&format!("  - {dropped}\n")), "{dropped} is still listed");
        }
        assert!(!text.contains("cloud_init_modules:"), "the image's init modules must stay");
    }

    /// The built-in template must be YAML that says what we mean, checked by a real YAML parser
    /// (Python's, which is what cloud-init uses) when the machine has one.
    #[test]
    fn default_template_is_yaml_cloud_init_reads() {
        let text = render_default(&input()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        std::fs::write(&path, &text).unwrap();
        let script = r#"
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
u = d["users"][0]
assert u["name"] == "debian", u
assert u["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClient strata-build"]
assert d["ssh_keys"]["ed25519_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl")
assert d["ssh_keys"]["ed25519_private"].endswith("-----END OPENSSH PRIVATE KEY-----\n")
assert d["ssh_keys"]["ed25519_public"].endswith("strata-host")
assert "ssh_genkeytypes" not in d and d["ssh_deletekeys"] is True
assert d["disable_root"] is True and d["ssh_pwauth"] is False
assert "users-groups" not in d["cloud_config_modules"]
print("ok")
"#;
        crate::process::require_tool("python3", "apt-get install python3 python3-yaml");
        let output =
            std::process::Command::new("python3").args(["-c", script]).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("No module named 'yaml'"),
            "python3's yaml is not installed: apt-get install python3-yaml"
        );
        assert!(output.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
    }

    #[test]
    fn undefined_variable_names_template_and_line() {
        let error =
            render("#cloud-config\nfoo: 1\nbar: {{ nope }}\n", "seeds/mine.yaml.j2", &input())
                .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("seeds/mine.yaml.j2 at line 3"), "{message}");
        assert!(matches!(error, SeedError::Render { line: Some(3), .. }));
    }

    #[test]
    fn undefined_var_entry_is_an_error_too() {
        let error = render("x: {{ vars.missing }}\n", "t.j2", &input()).unwrap_err();
        assert!(matches!(error, SeedError::Render { line: Some(1), .. }), "{error}");
        let ok = render("x: {{ vars.app_port }}\n", "t.j2", &input()).unwrap();
        assert_eq!(ok, "x: 8080\n");
    }

    #[test]
    fn syntax_error_names_template_and_line() {
        let error = render("a: 1\nb: 2\nc: {% if %}\n", "seeds/bad.j2", &input()).unwrap_err();
        assert!(error.to_string().contains("seeds/bad.j2 at line 3"), "{error}");
    }

    #[test]
    fn no_html_escaping_even_for_html_names() {
        let mut seed = input();
        seed.vars.insert("cmd".into(), "a < b && 'c'".into());
        let text = render("{{ vars.cmd }}", "x.html", &seed).unwrap();
        assert_eq!(text, "a < b && 'c'");
    }

    #[test]
    fn meta_data_has_fresh_instance_id_and_hostname() {
        let first = InstanceId::random().unwrap();
        let second = InstanceId::random().unwrap();
        assert_ne!(first, second);
        assert!(first.as_str().starts_with("strata-") && first.as_str().len() == 23);
        let text = meta_data(&first, "web-base");
        assert_eq!(text, format!("instance-id: \"{first}\"\nlocal-hostname: \"web-base\"\n"));
    }

    #[test]
    fn debug_hides_the_private_key() {
        let text = format!("{:?}", input());
        assert!(!text.contains("b3BlbnNzaC1rZXktdjEAAAAA"));
    }
}
