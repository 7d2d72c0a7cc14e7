//! The shared cache from the command line, with no guest: a real registry (Debian's
//! `docker-registry`) with basic auth, a wrong password, and the registry down. A tiny local
//! source stands in for the base image so that `strata layers` can compute keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::registry::{REPOSITORY, Registry};

/// The demo with a tiny local file as its source (inline sha256), fetched into `store`.
fn project(dir: &Path, store: &Path) -> std::path::PathBuf {
    let (definition, text) = common::copy_demo(dir, "http://127.0.0.1:1");
    let source = dir.join("images/tiny.img");
    std::fs::write(&source, b"not really a disk, only a source").unwrap();
    let hex = strata::layer::sha256_hex(&std::fs::read(&source).unwrap());
    let start = text.find("[source]").unwrap();
    let end = text.find("[machine]").unwrap();
    let text = format!(
        "{}[source]\nurl = \"tiny.img\"\nchecksum = \"sha256:{hex}\"\n\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&definition, text).unwrap();
    let fetched = strata(store, None, &["fetch", definition.to_str().unwrap()]);
    common::assert_success(&fetched, "strata fetch");
    definition
}

fn strata(store: &Path, cache: Option<(&Registry, &str)>, args: &[&str]) -> Output {
    let mut command = Command::new(common::strata_bin());
    command.arg("--store").arg(store).env_remove("STRATA_CACHE").env_remove("STRATA_CACHE_PUSH");
    for variable in ["STRATA_SIGN_KEY", "STRATA_CACHE_TRUST", "STRATA_CACHE_UNSIGNED"] {
        command.env_remove(variable);
    }
    if let Some((registry, password)) = cache {
        command
            .arg("--cache")
            .arg(format!("oci+http://127.0.0.1:{}/{REPOSITORY}", registry.port))
            .env("STRATA_CACHE_USER", "alice")
            .env("STRATA_CACHE_PASSWORD", password)
            // Signatures are cache_trust's and cli_trust's; these tests are about the registry.
            .env("STRATA_CACHE_UNSIGNED", "1");
    }
    command.args(args).output().unwrap()
}

#[test]
fn a_wrong_password_or_a_registry_down_is_a_warning_unless_the_cache_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let definition = project(dir.path(), &store);
    let definition = definition.to_str().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let made = Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(&htpasswd)
        .args(["alice", "right-password"])
        .output()
        .expect("htpasswd runs (Debian package apache2-utils)");
    assert!(made.status.success());
    let mut registry = Registry::start(dir.path(), Some(&htpasswd));
    let named = format!("127.0.0.1:{}", registry.port);

    // Required: one error line naming the registry, before anything is built; exit 1.
    let required = strata(
        &store,
        Some((&registry, "wrong-password")),
        &["build", definition, "--cache-required"],
    );
    assert_eq!(required.status.code(), Some(1), "{}", common::stderr(&required));
    let text = common::stderr(&required);
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: the shared cache") && first.contains(&named), "{text}");
    assert!(!text.contains("wrong-password"), "the password is never shown: {text}");

    // Not required: a warning, and the local answer; exit 0.
    let layers = strata(&store, Some((&registry, "wrong-password")), &["layers", definition]);
    assert_eq!(layers.status.code(), Some(0), "{}", common::stderr(&layers));
    let text = common::stderr(&layers);
    assert!(text.contains("warning: the shared cache") && text.contains(&named), "{text}");

    // The right password: the shared column says the registry has none of them.
    let layers = strata(&store, Some((&registry, "right-password")), &["layers", definition]);
    assert_eq!(layers.status.code(), Some(0), "{}", common::stderr(&layers));
    let table = String::from_utf8_lossy(&layers.stdout);
    assert!(table.lines().next().unwrap().contains("shared"), "{table}");
    assert!(table.lines().skip(1).all(|line| line.trim_end().ends_with("no")), "{table}");

    // Down: a warning and exit 0 without --cache-required; exit 1 with it.
    registry.kill();
    let layers = strata(&store, Some((&registry, "right-password")), &["layers", definition]);
    assert_eq!(layers.status.code(), Some(0), "{}", common::stderr(&layers));
    assert!(common::stderr(&layers).contains("cannot be reached"), "{}", common::stderr(&layers));
    let required = strata(
        &store,
        Some((&registry, "right-password")),
        &["build", definition, "--cache-required"],
    );
    assert_eq!(required.status.code(), Some(1), "{}", common::stderr(&required));
    assert!(common::stderr(&required).contains(&named));
    let pushed = strata(&store, Some((&registry, "right-password")), &["push", definition]);
    assert_eq!(pushed.status.code(), Some(1), "{}", common::stderr(&pushed));
}

#[test]
fn a_malformed_cache_url_is_invalid_input() {
    let output = Command::new(common::strata_bin())
        .args(["--cache", "https://registry.example/x", "layers", "images/demo.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", common::stderr(&output));
    let pushed = Command::new(common::strata_bin())
        .env_remove("STRATA_CACHE")
        .args(["build", "images/demo.toml", "--push"])
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert_eq!(
        pushed.status.code(),
        Some(2),
        "--push without a cache: {}",
        common::stderr(&pushed)
    );
}
