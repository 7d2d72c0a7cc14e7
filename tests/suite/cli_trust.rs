//! Keys and the trust settings from the command line, with no registry work: `strata key
//! generate` (openssl reads what it writes), and the refusals that stop a command before any
//! work (exit 2): a pull with no trusted key, a push with no signing key, a private key others
//! can read, a private key given as a public one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn strata(args: &[&std::ffi::OsStr]) -> Output {
    let mut command = Command::new(common::strata_bin());
    for variable in
        ["STRATA_CACHE", "STRATA_SIGN_KEY", "STRATA_CACHE_TRUST", "STRATA_CACHE_UNSIGNED"]
    {
        command.env_remove(variable);
    }
    command.current_dir(common::repo()).args(args).output().unwrap()
}

fn os(value: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(value)
}

fn generate(path: &Path, algorithm: &str) -> Output {
    strata(&[os("key"), os("generate"), path.as_os_str(), os("--algorithm"), os(algorithm)])
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_generate_writes_a_pair_openssl_reads_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in ["ecdsa-p256", "ed25519"] {
        let key = dir.path().join(format!("{algorithm}.key"));
        let output = generate(&key, algorithm);
        common::assert_success(&output, "strata key generate");
        let public = dir.path().join(format!("{algorithm}.key.pub"));
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&public), 0o644);
        let said = common::stderr(&output);
        assert!(said.contains("--trust") && !said.contains("PRIVATE"), "{said}");
        let private = Command::new("openssl")
            .args(["pkey", "-noout", "-text", "-in"])
            .arg(&key)
            .output()
            .expect("openssl runs (Debian package openssl)");
        common::assert_success(&private, "openssl pkey (private)");
        let text = String::from_utf8_lossy(&private.stdout);
        let expected = if algorithm == "ed25519" { "ED25519" } else { "NIST CURVE: P-256" };
        assert!(text.to_uppercase().contains(expected), "{text}");
        let derived =
            Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&key).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&derived.stdout),
            std::fs::read_to_string(&public).unwrap(),
            "PATH.pub is the private key's public half, as openssl writes it"
        );
        let before = std::fs::read(&key).unwrap();
        let again = generate(&key, algorithm);
        assert_eq!(again.status.code(), Some(2), "{}", common::stderr(&again));
        assert!(common::stderr(&again).contains("already exists"));
        assert_eq!(std::fs::read(&key).unwrap(), before);
    }
}

#[test]
fn pulling_with_no_trusted_key_stops_before_any_work_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Nothing listens on port 1: reaching for the registry would be exit 1, not 2.
    for command in ["pull", "build"] {
        let output = strata(&[
            os("--store"),
            store.as_os_str(),
            os("--cache"),
            os("oci+http://127.0.0.1:1/strata"),
            os(command),
            os("images/demo.toml"),
        ]);
        assert_eq!(output.status.code(), Some(2), "{command}: {}", common::stderr(&output));
        let text = common::stderr(&output);
        assert!(text.contains("--trust") && text.contains("--cache-unsigned"), "{text}");
        assert!(!text.contains("cannot be reached"), "{text}");
    }
}

#[test]
fn pushing_without_a_signing_key_and_unusable_keys_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let cache = os("oci+http://127.0.0.1:1/strata");
    let store = dir.path().join("store");
    let push = strata(&[
        os("--store"),
        store.as_os_str(),
        os("--cache"),
        cache,
        os("push"),
        os("images/demo.toml"),
    ]);
    assert_eq!(push.status.code(), Some(2), "{}", common::stderr(&push));
    assert!(common::stderr(&push).contains("--sign-key"), "{}", common::stderr(&push));

    let key = dir.path().join("ci.key");
    common::assert_success(&generate(&key, "ecdsa-p256"), "strata key generate");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let readable = strata(&[
        os("--store"),
        store.as_os_str(),
        os("--cache"),
        cache,
        os("--sign-key"),
        key.as_os_str(),
        os("push"),
        os("images/demo.toml"),
    ]);
    assert_eq!(readable.status.code(), Some(2), "{}", common::stderr(&readable));
    let text = common::stderr(&readable);
    assert!(text.contains(&format!("chmod 600 {}", key.display())), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let swapped = strata(&[
        os("--store"),
        store.as_os_str(),
        os("--cache"),
        cache,
        os("--trust"),
        key.as_os_str(),
        os("pull"),
        os("images/demo.toml"),
    ]);
    assert_eq!(swapped.status.code(), Some(2), "{}", common::stderr(&swapped));
    let text = common::stderr(&swapped);
    assert!(text.contains("private key") && text.contains(".pub"), "{text}");
    assert!(!text.contains("BEGIN"), "{text}");
}
