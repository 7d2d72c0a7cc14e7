//! Trust in the shared cache (issue 27) with the demo built cold (the shared fixture) and a real
//! registry (Debian's `docker-registry` on loopback). Runner A pushes signed; `openssl` verifies
//! every layer's signature on its own. Fresh runners B: without `--trust` one stops before any
//! work (exit 2); with `--cache-unsigned` one pulls and is warned; with `--trust` one pulls all
//! three layers verified without a guest. Then the attacker, who can push to the registry but
//! holds no trusted key, replaces the final layer (64 KiB of its disk changed, its record
//! rewritten to match) and app-base's restore point. B, holding base and app-base, refuses the
//! layer and builds `final` itself from its own saved guest, exit 0, and its final layer is not
//! the poisoned one. `--cache-required` makes a refusal fail a build before any guest: the
//! layer's, and (with final gone from the registry) the restore point's, which is then not
//! stored (that a build without it passes the refused restore point over, as if there were
//! none, is `cache_trust::a_build_passes_over_a_refused_restore_point_unless_the_cache_is_required`;
//! a stage with no restore point boots, as in every cold build). The other moves (the poisoned layer signed by the attacker's key, a valid signature
//! of another manifest, the signature deleted) are each refused by `strata pull` (exit 1,
//! nothing stored).
//!
//! Needs QEMU and the local base image; timings go to stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use base64::Engine as _;
use serde_json::Value;

use common::demo::{BuiltDemo, built_demo};
use common::project::sha256_of;
use common::registry::{Registry, sig_tag};
use common::{assert_success, named, parse_events, stages_of, stderr};

/// `strata --cache URL --log-format json ARGS` on `runner`'s store, with no trust settings from
/// the environment; the output, its events and the seconds it took.
fn cached_run(runner: &BuiltDemo, cache: &str, args: &[&str]) -> (Output, Vec<Value>, f64) {
    let started = Instant::now();
    let mut command = runner.strata();
    for variable in [
        "STRATA_CACHE_USER",
        "STRATA_CACHE_PASSWORD",
        "STRATA_SIGN_KEY",
        "STRATA_CACHE_TRUST",
        "STRATA_CACHE_UNSIGNED",
        "STRATA_CACHE_PUSH",
    ] {
        command.env_remove(variable);
    }
    let output =
        command.args(["--cache", cache, "--log-format", "json"]).args(args).output().unwrap();
    let took = started.elapsed().as_secs_f64();
    let events = parse_events(&output.stdout);
    (output, events, took)
}

fn refused(events: &[Value]) -> Vec<(String, String, String)> {
    named(events, "cache_refused")
        .iter()
        .map(|event| {
            (
                event["kind"].as_str().unwrap().to_owned(),
                event["stage"].as_str().unwrap_or_default().to_owned(),
                event["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A fresh runner: the built demo's project with an empty store.
fn fresh_runner() -> BuiltDemo {
    let runner = built_demo();
    std::fs::remove_dir_all(runner.store()).unwrap();
    runner
}

fn generate_key(runner: &BuiltDemo, path: &Path) {
    let output = runner.strata().arg("key").arg("generate").arg(path).output().unwrap();
    assert_success(&output, "strata key generate");
}

/// Each stage's key, bottom-up, from A's `strata layers`.
fn stage_keys(runner: &BuiltDemo) -> Vec<(String, String)> {
    runner
        .layers_table(&runner.definition())
        .iter()
        .map(|row| {
            (row["stage"].as_str().unwrap().to_owned(), row["key"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// `openssl dgst -sha256 -verify` over every signature A's key made for `digest`.
fn openssl_verifies(registry: &Registry, digest: &str, public: &Path, scratch: &Path) {
    let (bytes, _) = registry.manifest(&sig_tag(digest)).expect("a .sig tag");
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for layer in layers {
        assert_eq!(layer["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
        let payload = registry.blob(layer["digest"].as_str().unwrap());
        let parsed: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(parsed["critical"]["image"]["docker-manifest-digest"], digest);
        let signature = base64::engine::general_purpose::STANDARD
            .decode(layer["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap())
            .unwrap();
        std::fs::write(scratch.join("payload"), &payload).unwrap();
        std::fs::write(scratch.join("signature"), &signature).unwrap();
        let output = Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(public)
            .arg("-signature")
            .arg(scratch.join("signature"))
            .arg(scratch.join("payload"))
            .output()
            .expect("openssl runs (Debian package openssl)");
        assert_success(&output, "openssl dgst -verify");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Verified OK"));
    }
}

/// The attacker's copy of a layer folder of `store` (disk, record, restore point if any) into
/// `into/layers/KEY`, with `into/tmp` beside it as a store has.
fn steal_layer(store: &Path, key: &str, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into.join("layers")).unwrap();
    std::fs::create_dir_all(into.join("tmp")).unwrap();
    let dir = into.join("layers").join(key);
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(store.join("layers").join(key))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// 64 KiB of the disk changed (its backing left alone), and its record rewritten to match.
fn poison(dir: &Path) -> strata::layer::Layer {
    let output = Command::new("qemu-io")
        .args(["-c", "write -q -P 0x66 8M 64K"])
        .arg(r#"json:{"driver":"qcow2","file":{"driver":"file","filename":"disk.qcow2"},"backing":null}"#)
        .current_dir(dir)
        .output()
        .expect("qemu-io runs (Debian package qemu-utils)");
    assert_success(&output, "qemu-io write");
    let record_path = dir.join("layer.json");
    let mut record: strata::layer::LayerMetadata =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record.disk_sha256 = sha256_of(&dir.join("disk.qcow2"));
    record.disk_bytes = std::fs::metadata(dir.join("disk.qcow2")).unwrap().len();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    strata::layer::Layer { dir: dir.to_owned(), metadata: record }
}

#[test]
#[ignore = "boots a guest: run by scripts/test.sh"]
fn guest_trust_a_poisoned_cache_is_refused_and_built_locally() {
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(registry_dir.path(), None);
    let cache = registry.url().to_string();
    let attacker_cache = format!("oci+http://127.0.0.1:{}/evil/cache", registry.port);
    let keys = tempfile::tempdir().unwrap();
    let a = built_demo();
    let a_key = keys.path().join("a.key");
    let a_pub = keys.path().join("a.key.pub");
    let evil_key = keys.path().join("evil.key");
    generate_key(&a, &a_key);
    generate_key(&a, &evil_key);
    let definition_a = a.definition();
    let sign = a_key.to_str().unwrap();
    let trust = a_pub.to_str().unwrap();

    // A pushes signed: the source, three layers, their restore points.
    let (output, _, took) = cached_run(
        &a,
        &cache,
        &["--sign-key", sign, "build", definition_a.to_str().unwrap(), "--push", "--cache-restore"],
    );
    assert_success(&output, "runner A: build --push --cache-restore --sign-key");
    eprintln!("MEASURE runner A pushes signed: {took:.1}s");
    let stages = stage_keys(&a);
    let scratch = tempfile::tempdir().unwrap();
    for (stage, key) in &stages {
        let (_, digest) = registry.manifest(key).unwrap_or_else(|| panic!("{stage} pushed"));
        openssl_verifies(&registry, &digest, &a_pub, scratch.path());
        if let Some((_, restore)) = registry.manifest(&format!("{key}.restore")) {
            openssl_verifies(&registry, &restore, &a_pub, scratch.path());
        }
    }
    let (final_key, app_base_key) = (stages[2].1.clone(), stages[1].1.clone());
    let (honest_final, honest_digest) = registry.manifest(&final_key).unwrap();

    // B without a trusted key: exit 2 before any work, naming both ways out.
    let b = fresh_runner();
    let definition_b = b.definition();
    let definition = definition_b.to_str().unwrap();
    let (output, events, _) = cached_run(&b, &cache, &["build", definition]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("--trust") && text.contains("--cache-unsigned"), "{text}");
    assert!(
        named(&events, "stage_started").is_empty()
            && named(&events, "cache_transfer_started").is_empty()
    );

    // B with --cache-unsigned: pulls everything, warned once.
    let (output, events, took) = cached_run(&b, &cache, &["--cache-unsigned", "build", definition]);
    assert_success(&output, "runner B: --cache-unsigned");
    assert_eq!(named(&events, "cache_unsigned").len(), 1);
    assert!(named(&events, "qemu_started").is_empty());
    eprintln!("MEASURE runner B, --cache-unsigned, fresh store: {took:.1}s");
    let plain = b
        .strata()
        .env_remove("STRATA_CACHE_TRUST")
        .args(["--cache", &cache, "--cache-unsigned", "build", definition])
        .output()
        .unwrap();
    assert_success(&plain, "runner B: a no-change build, --cache-unsigned");
    let said = stderr(&plain);
    let warnings: Vec<&str> =
        said.lines().filter(|line| line.contains("--cache-unsigned")).collect();
    assert_eq!(warnings.len(), 1, "{}", stderr(&plain));
    assert!(warnings[0].contains("warning"), "{warnings:?}");

    // B with --trust: every layer verified, no guest.
    let b = fresh_runner();
    let (output, events, took) = cached_run(&b, &cache, &["--trust", trust, "build", definition]);
    assert_success(&output, "runner B: --trust");
    assert!(named(&events, "qemu_started").is_empty(), "runner B started a guest");
    assert!(refused(&events).is_empty(), "{:?}", refused(&events));
    eprintln!("MEASURE runner B, verified, fresh store, nothing changed: {took:.1}s");

    // The attacker replaces the final layer and app-base's restore point, unsigned.
    let loot = tempfile::tempdir().unwrap();
    let poisoned = poison(&steal_layer(&a.store(), &final_key, loot.path()));
    let poisoned_sha = poisoned.metadata.disk_sha256.clone();
    let app_base = steal_layer(&a.store(), &app_base_key, loot.path());
    let restore_dir = app_base.join("restore");
    let state = std::fs::read_dir(&restore_dir)
        .unwrap()
        .flatten()
        .max_by_key(|entry| entry.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 16].fill(0xcc);
    std::fs::write(&state, bytes).unwrap();
    let app_base_record: strata::layer::LayerMetadata =
        serde_json::from_slice(&std::fs::read(app_base.join("layer.json")).unwrap()).unwrap();
    let app_base_layer = strata::layer::Layer { dir: app_base.clone(), metadata: app_base_record };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let attacker = |sign_with: Option<&Path>| {
        let policy = strata::trust::Policy {
            sign_with: sign_with
                .map(|path| std::sync::Arc::new(strata::trust::SigningKey::load(path).unwrap())),
            accept: strata::trust::Accept::Unsigned,
        };
        let url = strata::cache::CacheUrl::parse(&attacker_cache).unwrap();
        runtime.block_on(async {
            strata::cache::Cache::connect(
                &url,
                &strata::cache::Credentials::Anonymous,
                &strata::cache::CredentialsFrom::Nowhere,
                &strata::events::Events::none(),
            )
            .await
            .unwrap()
            .with_policy(policy)
        })
    };
    let unsigned = attacker(None);
    runtime.block_on(unsigned.push_layer(&poisoned)).unwrap();
    runtime.block_on(unsigned.push_restore(&app_base_layer)).unwrap();
    registry.copy_tag("evil/cache", &final_key);
    registry.copy_tag("evil/cache", &format!("{app_base_key}.restore"));

    // B (trusting A, holding base and app-base with its own restore point, but not final)
    // refuses the poisoned final layer and builds final itself from its own saved guest.
    let b = built_demo();
    std::fs::remove_dir_all(b.store().join("layers").join(&final_key)).unwrap();
    let definition_b = b.definition();
    let definition = definition_b.to_str().unwrap();
    let (output, events, took) =
        cached_run(&b, &cache, &["--trust", trust, "build", definition, "--cache-restore"]);
    assert_success(&output, "runner B against the poisoned cache");
    assert_eq!(
        refused(&events),
        [("layer".to_owned(), "final".to_owned(), "unsigned".to_owned())],
        "{}",
        stderr(&output)
    );
    assert_eq!(stages_of(&events, "layer_committed"), ["final"]);
    assert_eq!(stages_of(&events, "restore_resumed"), ["final"], "B resumed its own app-base");
    let built = sha256_of(&b.store().join("layers").join(&final_key).join("disk.qcow2"));
    assert_ne!(built, poisoned_sha, "B's final layer is the poisoned disk");
    eprintln!("MEASURE runner B, final refused and built locally: {took:.1}s");

    // --cache-required: the refusal fails the build, exit 1, before any guest.
    let c = fresh_runner();
    let definition_c = c.definition();
    let (output, events, _) = cached_run(
        &c,
        &cache,
        &["--trust", trust, "build", definition_c.to_str().unwrap(), "--cache-required"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(named(&events, "qemu_started").is_empty());
    assert_eq!(refused(&events).len(), 1);

    // The poisoned restore point, in a build: with final gone from the registry, a fresh runner
    // pulls base and app-base verified, then refuses app-base's restore point; under
    // --cache-required that fails the build before any guest (without it the stage boots, the
    // path of every cold build), and nothing of it is stored.
    let (_, poisoned_final) = registry.manifest(&final_key).unwrap();
    registry.delete_manifest(&poisoned_final);
    let e = fresh_runner();
    let definition_e = e.definition();
    let (output, events, _) = cached_run(
        &e,
        &cache,
        &[
            "--trust",
            trust,
            "build",
            definition_e.to_str().unwrap(),
            "--cache-restore",
            "--cache-required",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(named(&events, "qemu_started").is_empty(), "a guest started");
    assert_eq!(
        refused(&events),
        [("restore".to_owned(), "app-base".to_owned(), "unsigned".to_owned())],
        "{}",
        stderr(&output)
    );
    let app_base_in_e = e.store().join("layers").join(&app_base_key);
    assert!(app_base_in_e.join("layer.json").is_file(), "app-base was pulled");
    assert!(!app_base_in_e.join("restore").exists(), "the refused restore point was stored");

    // The other moves, each against a fresh `strata pull` (which needs every layer): refused,
    // exit 1, the final layer not stored.
    let pull_refuses = |reason: &str| {
        let runner = fresh_runner();
        let definition = runner.definition();
        let (output, events, _) =
            cached_run(&runner, &cache, &["--trust", trust, "pull", definition.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{reason}: {}", stderr(&output));
        let seen = refused(&events);
        assert_eq!(seen, [("layer".to_owned(), "final".to_owned(), reason.to_owned())], "{reason}");
        assert!(!runner.store().join("layers").join(&final_key).exists(), "{reason}: stored");
        let warning = stderr(&output);
        assert!(warning.contains("final"), "{warning}");
        named(&events, "cache_refused")[0].clone()
    };
    // Signed by the attacker's own key.
    let signed = attacker(Some(&evil_key));
    runtime.block_on(signed.push_layer(&poisoned)).unwrap();
    let (_, poisoned_digest) = registry.manifest_in("evil/cache", &final_key).unwrap();
    registry.copy_tag("evil/cache", &final_key);
    registry.copy_tag("evil/cache", &sig_tag(&poisoned_digest));
    let event = pull_refuses("untrusted_key");
    let evil_id = strata::trust::SigningKey::load(&evil_key).unwrap().public_key().id().to_string();
    assert_eq!(event["signer"], evil_id.as_str());
    // A valid signature of another manifest (app-base's) over the poisoned one's.
    let (_, app_base_digest) = registry.manifest(&app_base_key).unwrap();
    let (app_base_sig, _) = registry.manifest(&sig_tag(&app_base_digest)).unwrap();
    registry.put_manifest(&sig_tag(&poisoned_digest), &app_base_sig);
    pull_refuses("other_manifest");
    // A's honest final layer back, but its signature deleted.
    registry.put_manifest(&final_key, &honest_final);
    let (_, honest_sig) = registry.manifest(&sig_tag(&honest_digest)).expect("A signed it");
    registry.delete_manifest(&honest_sig);
    pull_refuses("unsigned");
}
