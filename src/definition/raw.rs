//! The definition exactly as written: serde types over TOML with a span on every value a
//! check may need to point at. Owns the shape of the file (which keys exist, which are
//! tables); must not judge values: that is `validate`'s job.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

/// The keys of each table, for "did you mean" suggestions and help texts.
pub(super) const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "source",
    "machine",
    "communicator",
    "vars",
    "stage",
    "export",
    "test",
    "drift",
];
pub(super) const SOURCE_KEYS: &[&str] = &["url", "checksum", "checksum_url"];
pub(super) const MACHINE_KEYS: &[&str] =
    &["cpus", "memory", "disk_size", "firmware", "accel", "extra_args"];
pub(super) const COMMUNICATOR_KEYS: &[&str] = &["kind", "user", "ready_timeout"];
pub(super) const STAGE_KEYS: &[&str] =
    &["name", "parent", "user_data", "refresh", "network", "keep_package_caches", "steps"];
pub(super) const STEP_KEYS: &[&str] =
    &["run", "shell", "upload", "to", "reboot", "ansible", "extra_vars", "tags", "env", "timeout"];
pub(super) const TEST_KEYS: &[&str] =
    &["name", "http", "shell", "service", "port", "status", "contains", "timeout"];
pub(super) const EXPORT_KEYS: &[&str] = &["formats", "compression", "targets"];
pub(super) const DRIFT_KEYS: &[&str] = &["roots", "ignore"];

pub(super) type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefinition {
    pub name: Option<Text>,
    pub description: Option<Text>,
    pub source: Option<Spanned<RawSource>>,
    pub machine: Option<RawMachine>,
    pub communicator: Option<RawCommunicator>,
    #[serde(default)]
    pub vars: BTreeMap<Text, Text>,
    #[serde(rename = "stage")]
    pub stages: Option<Spanned<Vec<Spanned<RawStage>>>>,
    pub export: Option<RawExport>,
    /// `[[test]]`: checks run on a fresh boot of a built stage; not layer inputs.
    #[serde(rename = "test", default)]
    pub tests: Vec<Spanned<RawTest>>,
    pub drift: Option<RawDrift>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub url: Option<Text>,
    pub checksum: Option<Text>,
    pub checksum_url: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMachine {
    /// Signed, so that a negative count gets our message rather than serde's.
    pub cpus: Option<Spanned<i64>>,
    pub memory: Option<Text>,
    pub disk_size: Option<Text>,
    pub firmware: Option<Text>,
    pub accel: Option<Text>,
    #[serde(default)]
    pub extra_args: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommunicator {
    pub kind: Option<Text>,
    pub user: Option<Text>,
    pub ready_timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStage {
    pub name: Option<Text>,
    pub parent: Option<Text>,
    pub user_data: Option<Text>,
    pub refresh: Option<Text>,
    pub network: Option<Spanned<bool>>,
    pub keep_package_caches: Option<bool>,
    pub steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
}

/// A step with every action optional: exactly one must be set, which `validate` checks so
/// that the error can say which ones were found.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub run: Option<Text>,
    pub shell: Option<Text>,
    pub upload: Option<Text>,
    pub to: Option<Text>,
    pub reboot: Option<Spanned<bool>>,
    pub ansible: Option<Text>,
    pub extra_vars: Option<Spanned<BTreeMap<String, toml::Value>>>,
    pub tags: Option<Spanned<Vec<Text>>>,
    #[serde(default)]
    pub env: BTreeMap<Text, Text>,
    pub timeout: Option<Text>,
}

/// A `[[test]]` with every kind optional: exactly one of `http`, `shell`, `service`, `port`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTest {
    pub name: Option<Text>,
    pub http: Option<Text>,
    pub shell: Option<Text>,
    pub service: Option<Text>,
    /// Signed, so that a negative port gets our message rather than serde's.
    pub port: Option<Spanned<i64>>,
    pub status: Option<Spanned<i64>>,
    pub contains: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExport {
    pub formats: Option<Spanned<Vec<Text>>>,
    pub compression: Option<Text>,
    pub targets: Option<Spanned<Vec<Text>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrift {
    pub roots: Option<Spanned<Vec<Text>>>,
    pub ignore: Option<Spanned<Vec<Text>>>,
}

/// The keys a table at `path` (as serde's error names the table's fields) accepts, found
/// from the list serde's unknown-field message gives.
pub(super) fn table_of_keys(expected: &[String]) -> &'static str {
    let tables: [(&str, &[&str]); 9] = [
        ("the top level", TOP_KEYS),
        ("[source]", SOURCE_KEYS),
        ("[machine]", MACHINE_KEYS),
        ("[communicator]", COMMUNICATOR_KEYS),
        ("[[stage]]", STAGE_KEYS),
        ("a step", STEP_KEYS),
        ("[export]", EXPORT_KEYS),
        ("[[test]]", TEST_KEYS),
        ("[drift]", DRIFT_KEYS),
    ];
    tables
        .iter()
        .find(|(_, keys)| {
            keys.len() == expected.len() && keys.iter().zip(expected).all(|(a, b)| a == b)
        })
        .map_or("this table", |(name, _)| name)
}
