//! The shared cache between runners (issue 17), with real layers and a real registry (Debian's
//! `docker-registry` on loopback). Runner A holds the demo built cold (the fixture the guest
//! tests share) and pushes it; runner B, a fresh store whose `[source]` URL cannot be reached,
//! builds the same definition without starting QEMU: the source and every layer come from the
//! registry, byte-identical. Then the app changes on both: B pulls app-base's restore point,
//! resumes it (no boot), rebuilds `final` and pushes only that layer; A pulls only that layer,
//! again without a guest.
//!
//! Ignored by default, run by scripts/test.sh (A's rebuild boots or resumes a guest); needs the
//! local base image (or `STRATA_BASE_IMAGE_DIR`). Timings go to stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::process::Output;
use std::time::Instant;

use serde_json::Value;

use common::demo::{BuiltDemo, built_demo};
use common::project::sha256_of;
use common::registry::Registry;
use common::{assert_success, base_image_dir, named, parse_events, stages_of, stderr};

/// `strata --cache URL --log-format json ARGS` on `runner`'s store; the output, its events and
/// the seconds it took.
/// Every runner signs with `key` and trusts it (as a fleet sharing one CI key does).
fn cached_run(
    runner: &BuiltDemo,
    cache: &str,
    key: &std::path::Path,
    args: &[&str],
) -> (Output, Vec<Value>, f64) {
    let started = Instant::now();
    let output = runner
        .strata()
        .env_remove("STRATA_CACHE_USER")
        .env_remove("STRATA_CACHE_PASSWORD")
        .env_remove("STRATA_CACHE_TRUST")
        .env_remove("STRATA_CACHE_UNSIGNED")
        .env("STRATA_SIGN_KEY", key)
        .args(["--cache", cache, "--log-format", "json"])
        .args(args)
        .output()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let events = parse_events(&output.stdout);
    (output, events, took)
}

/// The finished transfers of `direction` that moved bytes: (kind, stage or "", bytes).
fn moved(events: &[Value], direction: &str) -> Vec<(String, String, u64)> {
    named(events, "cache_transfer_finished")
        .iter()
        .filter(|event| event["direction"] == direction && event["bytes"].as_u64() > Some(0))
        .map(|event| {
            (
                event["kind"].as_str().unwrap().to_owned(),
                event["stage"].as_str().unwrap_or_default().to_owned(),
                event["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The sha256 of each stage's layer disk, bottom-up, as `strata layers` finds them.
fn layer_digests(runner: &BuiltDemo) -> Vec<String> {
    runner
        .layers_table(&runner.definition())
        .iter()
        .map(|stage| {
            let key = stage["key"].as_str().unwrap();
            assert_eq!(stage["cached"], true, "{stage}");
            sha256_of(&runner.store().join("layers").join(key).join("disk.qcow2"))
        })
        .collect()
}

/// Points runner B's `[source]` at a URL nothing answers, with the image's digest inline: a
/// runner without internet, whose only way to the base image is the registry.
fn cut_off_source(runner: &BuiltDemo) {
    let sums = std::fs::read_to_string(base_image_dir().join("SHA256SUMS")).unwrap();
    let sha256 = sums
        .lines()
        .find(|line| line.ends_with("debian-12-strata-amd64.qcow2"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let path = runner.definition();
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[source]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    let source = format!(
        "[source]\nurl = \"http://127.0.0.1:9/debian-12-strata-amd64.qcow2\"\nchecksum = \"sha256:{sha256}\""
    );
    std::fs::write(&path, format!("{}{source}{}", &text[..start], &text[end..])).unwrap();
}

fn change_the_app(runner: &BuiltDemo) {
    let script = runner.path("scripts/install-app.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, format!("{text}\n# a change to the app's install\n")).unwrap();
}

#[test]
#[ignore = "boots a guest under QEMU: scripts/test.sh runs it"]
fn runners_share_layers_through_a_registry() {
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(registry_dir.path(), None);
    let cache = registry.url().to_string();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("fleet.key");
    let a = built_demo();
    let generated = a.strata().arg("key").arg("generate").arg(&key).output().unwrap();
    assert_success(&generated, "strata key generate");
    let b = built_demo();
    std::fs::remove_dir_all(b.store()).unwrap();
    cut_off_source(&b);
    let definition_a = a.definition();
    let definition_b = b.definition();

    // Runner A pushes what it built: the source, the three layers and their restore points.
    let (output, events, took) = cached_run(
        &a,
        &cache,
        &key,
        &["build", definition_a.to_str().unwrap(), "--push", "--cache-restore"],
    );
    assert_success(&output, "runner A: build --push --cache-restore");
    assert_eq!(stages_of(&events, "stage_cached"), ["base", "app-base", "final"]);
    let pushed = moved(&events, "push");
    let count = |kind: &str| pushed.iter().filter(|(k, _, _)| k == kind).count();
    assert_eq!(count("layer"), 3, "{pushed:?}");
    assert_eq!(count("source"), 1, "{pushed:?}");
    assert!(count("restore") >= 1, "{pushed:?}");
    eprintln!("MEASURE runner A pushes source, 3 layers, restore points: {took:.1}s {pushed:?}");

    // Runner B: an empty store and no way to the source but the registry. Nothing boots.
    let (output, events, took) =
        cached_run(&b, &cache, &key, &["build", definition_b.to_str().unwrap()]);
    assert_success(&output, "runner B: build from the shared cache");
    assert!(named(&events, "qemu_started").is_empty(), "runner B started a guest");
    assert!(named(&events, "layer_committed").is_empty(), "{}", stderr(&output));
    let pulled = moved(&events, "pull");
    assert!(pulled.iter().any(|(kind, _, _)| kind == "source"), "{pulled:?}");
    eprintln!("MEASURE runner B, fresh store, nothing changed: {took:.1}s {pulled:?}");
    assert_eq!(layer_digests(&b), layer_digests(&a), "runner B's layers are A's, byte for byte");

    // The app changes on both runners. B, whose store came from the registry, pulls app-base's
    // restore point, resumes it instead of booting, and pushes only the final layer.
    change_the_app(&a);
    change_the_app(&b);
    let (output, events, took) = cached_run(
        &b,
        &cache,
        &key,
        &["build", definition_b.to_str().unwrap(), "--push", "--cache-restore"],
    );
    assert_success(&output, "runner B: build --push --cache-restore after an app change");
    assert_eq!(stages_of(&events, "layer_committed"), ["final"]);
    let resumed = stages_of(&events, "restore_resumed");
    eprintln!(
        "MEASURE runner B, app change, pulled restore point: {took:.1}s, resumed {resumed:?}, \
         pulled {:?}",
        moved(&events, "pull")
    );
    assert_eq!(resumed, ["final"], "the pulled restore point was resumed, not a boot");
    let pushed = moved(&events, "push");
    let pushed_layers: Vec<&(String, String, u64)> =
        pushed.iter().filter(|(kind, _, _)| kind == "layer").collect();
    let final_key = named(&events, "layer_committed")[0]["key"].as_str().unwrap().to_owned();
    let final_bytes =
        std::fs::metadata(b.store().join("layers").join(&final_key).join("disk.qcow2"))
            .unwrap()
            .len();
    assert_eq!(pushed_layers.len(), 1, "only the final layer goes up: {pushed:?}");
    assert_eq!(pushed_layers[0].1, "final");
    let bytes = pushed_layers[0].2;
    assert!(bytes * 10 <= final_bytes * 12, "pushed {bytes} bytes for a {final_bytes}-byte layer");
    eprintln!("MEASURE app change pushes {bytes} bytes for a {final_bytes}-byte final layer");

    // A gets B's new final layer without a guest.
    let (output, events, took) =
        cached_run(&a, &cache, &key, &["build", definition_a.to_str().unwrap()]);
    assert_success(&output, "runner A: build after B pushed the app change");
    assert!(named(&events, "qemu_started").is_empty(), "runner A started a guest");
    let pulled = moved(&events, "pull");
    let pulled: Vec<(&str, &str)> =
        pulled.iter().map(|(kind, stage, _)| (kind.as_str(), stage.as_str())).collect();
    assert_eq!(pulled, [("layer", "final")]);
    eprintln!("MEASURE runner A, app change from the registry: {took:.1}s");
    assert_eq!(layer_digests(&a), layer_digests(&b));
}
