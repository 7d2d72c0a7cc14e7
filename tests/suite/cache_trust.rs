//! Signed artifacts in the shared cache against a real registry (Debian's `docker-registry` on
//! 127.0.0.1): what a signing runner pushes is cosign's format and `openssl` verifies it on its
//! own; what a verifying runner refuses (unsigned, an untrusted key, a signature of another
//! manifest, a deleted signature, a replaced restore point) leaves nothing in its store and
//! says why in a `cache_refused` event. Layers are real qcow2 overlays; no guest boots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use strata::cache::{Cache, CacheError, Credentials, CredentialsFrom};
use strata::events::{Event, Events, Recorder};
use strata::layer::{LayerKey, LayerMetadata, Layers, sha256_hex};
use strata::store::Store;
use strata::trust::{Accept, Algorithm, Policy, PublicKey, SigningKey, TrustedKeys};

use common::registry::{REPOSITORY, Registry, sig_tag};

fn run(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn key_of(name: &str) -> LayerKey {
    LayerKey::parse(&sha256_hex(name.as_bytes())).unwrap()
}

/// A layer on a tiny source, committed through the store; `fill` picks its content.
fn make_layer(layers: &Layers, stage: &str, parent: Option<&LayerKey>, fill: u8) {
    let store = layers.store();
    let source = store.sources_dir().join("sha256-0000.qcow2");
    if !source.exists() {
        run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&source).arg("64M"));
    }
    let backing = match parent {
        Some(parent) => format!("../../layers/{parent}/disk.qcow2"),
        None => "../../sources/sha256-0000.qcow2".to_owned(),
    };
    let key = key_of(stage);
    let work = layers.begin(&key).unwrap();
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", &backing])
        .arg(work.disk())
        .current_dir(&work.dir));
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", &format!("write -q -P {fill} 1M 64K")])
        .arg(work.disk())
        .current_dir(&work.dir));
    let metadata = LayerMetadata {
        key: key.to_string(),
        stage: stage.to_owned(),
        image: "test".to_owned(),
        parent: parent.map(ToString::to_string),
        backing,
        inputs: serde_json::json!({ "stage": stage }),
        created: strata::layer::now_secs(),
        strata_version: "test".to_owned(),
        ..LayerMetadata::default()
    };
    layers.commit(work, metadata).unwrap();
}

fn layer_store(dir: &Path) -> Layers {
    Layers::new(Store::open(dir).unwrap())
}

fn policy(sign_with: Option<&Arc<SigningKey>>, trust: &[&PublicKey]) -> Policy {
    let mut keys = TrustedKeys::new();
    for key in trust {
        keys.add((*key).clone());
    }
    Policy { sign_with: sign_with.cloned(), accept: Accept::Signed(keys) }
}

async fn client(registry: &Registry, policy: Policy, events: &Events) -> Cache {
    Cache::connect(&registry.url(), &Credentials::Anonymous, &CredentialsFrom::Nowhere, events)
        .await
        .unwrap()
        .with_policy(policy)
}

/// A client of another repository of the same registry: the attacker's.
async fn client_of(registry: &Registry, repository: &str, policy: Policy) -> Cache {
    let url = strata::cache::CacheUrl::parse(&format!(
        "oci+http://127.0.0.1:{}/{repository}",
        registry.port
    ))
    .unwrap();
    Cache::connect(&url, &Credentials::Anonymous, &CredentialsFrom::Nowhere, &Events::none())
        .await
        .unwrap()
        .with_policy(policy)
}

fn refusals(recorder: &Recorder) -> Vec<(String, String, Option<String>)> {
    recorder
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::CacheRefused { kind, reason, signer, .. } => Some((kind, reason, signer)),
            _ => None,
        })
        .collect()
}

fn assert_not_in_store(layers: &Layers, key: &LayerKey) {
    assert!(!layers.store().root().join("layers").join(key.as_str()).exists(), "{key} entered");
    let tmp: Vec<_> = std::fs::read_dir(layers.store().tmp_dir()).unwrap().flatten().collect();
    assert!(tmp.is_empty(), "tmp/ holds {tmp:?}");
}

/// `openssl genpkey` for a key, its public half with `openssl pkey -pubout`.
fn openssl_key(dir: &Path, algorithm: Algorithm) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("openssl-{algorithm}.pem"));
    let public = dir.join(format!("openssl-{algorithm}.pub"));
    let mut generate = Command::new("openssl");
    generate.arg("genpkey");
    match algorithm {
        Algorithm::EcdsaP256 => {
            generate.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
        }
        Algorithm::Ed25519 => generate.args(["-algorithm", "ed25519"]),
    };
    run(generate.arg("-out").arg(&private));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    (private, public)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_push_is_cosigns_format_and_openssl_verifies_every_signature() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let layers = layer_store(&dir.path().join("a"));
    make_layer(&layers, "base", None, 1);
    make_layer(&layers, "app", Some(&key_of("base")), 2);
    for algorithm in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
        // A key made by openssl signs; its public half, made by openssl too, verifies.
        let (private, public) = openssl_key(dir.path(), algorithm);
        let key = Arc::new(SigningKey::load(&private).unwrap());
        let cache = client(&registry, policy(Some(&key), &[]), &Events::none()).await;
        for stage in ["base", "app"] {
            let layer = match layers.lookup(&key_of(stage), false).unwrap() {
                strata::layer::Lookup::Hit(layer) => *layer,
                _ => panic!("no {stage}"),
            };
            cache.push_layer(&layer).await.unwrap();
        }
        for stage in ["base", "app"] {
            let (_, digest) = registry.manifest(key_of(stage).as_str()).unwrap();
            let (sig_bytes, _) = registry.manifest(&sig_tag(&digest)).expect("a .sig tag");
            let sig_manifest: serde_json::Value = serde_json::from_slice(&sig_bytes).unwrap();
            let layers_json = sig_manifest["layers"].as_array().unwrap();
            let ours = layers_json
                .iter()
                .find(|layer| {
                    layer["annotations"]["dev.strata.signer"] == key.public_key().id().as_str()
                })
                .expect("our signature among the .sig image's layers");
            assert_eq!(ours["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
            let payload = registry.blob(ours["digest"].as_str().unwrap());
            let parsed: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(parsed["critical"]["image"]["docker-manifest-digest"], &digest[..]);
            assert_eq!(parsed["critical"]["type"], "cosign container image signature");
            assert_eq!(
                parsed["critical"]["identity"]["docker-reference"],
                format!("127.0.0.1:{}/{REPOSITORY}", registry.port)
            );
            let signature = base64::engine::general_purpose::STANDARD
                .decode(ours["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap())
                .unwrap();
            let payload_file = dir.path().join("payload");
            let signature_file = dir.path().join("signature");
            std::fs::write(&payload_file, &payload).unwrap();
            std::fs::write(&signature_file, &signature).unwrap();
            // The independent reader: openssl, over the payload as stored.
            let mut verify = Command::new("openssl");
            match algorithm {
                Algorithm::EcdsaP256 => verify.args(["dgst", "-sha256", "-verify"]).arg(&public),
                Algorithm::Ed25519 => {
                    verify.args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"]).arg(&public)
                }
            };
            let flag = if algorithm == Algorithm::EcdsaP256 { "-signature" } else { "-sigfile" };
            if algorithm == Algorithm::EcdsaP256 {
                verify.arg(flag).arg(&signature_file).arg(&payload_file);
            } else {
                verify.arg(flag).arg(&signature_file).arg("-in").arg(&payload_file);
            }
            let output = run(&mut verify);
            let said = String::from_utf8_lossy(&output.stdout);
            assert!(said.contains("Verified") || said.contains("verified"), "{said}");
        }
    }
    // Two keys signed the same manifests: both signatures are kept side by side.
    let (_, digest) = registry.manifest(key_of("base").as_str()).unwrap();
    let (sig_bytes, _) = registry.manifest(&sig_tag(&digest)).unwrap();
    let sig_manifest: serde_json::Value = serde_json::from_slice(&sig_bytes).unwrap();
    assert_eq!(sig_manifest["layers"].as_array().unwrap().len(), 2, "{sig_manifest}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verifying_runner_pulls_what_a_trusted_key_signed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let a = layer_store(&dir.path().join("a"));
    make_layer(&a, "base", None, 1);
    let key = Arc::new(SigningKey::random(Algorithm::Ed25519).unwrap());
    let pusher = client(&registry, policy(Some(&key), &[]), &Events::none()).await;
    let strata::layer::Lookup::Hit(layer) = a.lookup(&key_of("base"), false).unwrap() else {
        panic!()
    };
    pusher.push_layer(&layer).await.unwrap();
    // Pushed again: signed already, nothing happens.
    assert_eq!(pusher.push_layer(&layer).await.unwrap(), strata::cache::Pushed::AlreadyThere);

    let b = layer_store(&dir.path().join("b"));
    std::fs::copy(
        a.store().sources_dir().join("sha256-0000.qcow2"),
        b.store().sources_dir().join("sha256-0000.qcow2"),
    )
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let events = Events::none().with(recorder.clone());
    let puller = client(&registry, policy(None, &[key.public_key()]), &events).await;
    let pulled = puller.pull_layer(&b, &key_of("base"), None, "base").await.unwrap();
    assert_eq!(
        std::fs::read(pulled.disk()).unwrap(),
        std::fs::read(layer.disk()).unwrap(),
        "byte-identical"
    );
    assert!(refusals(&recorder).is_empty());
}

/// Each attacker's move against a runner that trusts one key: refused with its reason, an
/// event, and nothing in the store.
#[tokio::test(flavor = "multi_thread")]
async fn every_attackers_move_is_refused_and_nothing_enters_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let ours = Arc::new(SigningKey::random(Algorithm::EcdsaP256).unwrap());
    let theirs = Arc::new(SigningKey::random(Algorithm::EcdsaP256).unwrap());

    // The attacker's store: layers with other content under the keys the victim will ask for.
    let evil = layer_store(&dir.path().join("evil"));
    make_layer(&evil, "unsigned", None, 0x66);
    make_layer(&evil, "untrusted", None, 0x67);
    // Ours, honestly signed: two layers whose signatures the attacker will swap.
    let honest = layer_store(&dir.path().join("honest"));
    make_layer(&honest, "one", None, 1);
    make_layer(&honest, "two", None, 2);
    make_layer(&honest, "gone", None, 3);

    let push = |store: &Layers, stage: &str| match store.lookup(&key_of(stage), false).unwrap() {
        strata::layer::Lookup::Hit(layer) => *layer,
        _ => panic!("no {stage}"),
    };
    let unsigned_pusher =
        client(&registry, Policy { sign_with: None, accept: Accept::Unsigned }, &Events::none())
            .await;
    unsigned_pusher.push_layer(&push(&evil, "unsigned")).await.unwrap();
    let their_pusher = client(&registry, policy(Some(&theirs), &[]), &Events::none()).await;
    their_pusher.push_layer(&push(&evil, "untrusted")).await.unwrap();
    let our_pusher = client(&registry, policy(Some(&ours), &[]), &Events::none()).await;
    for stage in ["one", "two", "gone"] {
        our_pusher.push_layer(&push(&honest, stage)).await.unwrap();
    }
    // A valid signature of another manifest: one's .sig copied onto two's .sig tag.
    let (_, one) = registry.manifest(key_of("one").as_str()).unwrap();
    let (_, two) = registry.manifest(key_of("two").as_str()).unwrap();
    let (one_sig, _) = registry.manifest(&sig_tag(&one)).unwrap();
    registry.put_manifest(&sig_tag(&two), &one_sig);
    // A deleted signature: gone's .sig manifest deleted.
    let (_, gone) = registry.manifest(key_of("gone").as_str()).unwrap();
    let (_, gone_sig_digest) = registry.manifest(&sig_tag(&gone)).unwrap();
    registry.delete_manifest(&gone_sig_digest);

    let victim = layer_store(&dir.path().join("victim"));
    let recorder = Arc::new(Recorder::default());
    let events = Events::none().with(recorder.clone());
    let cache = client(&registry, policy(None, &[ours.public_key()]), &events).await;
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(victim.store().sources_dir().join("sha256-0000.qcow2"))
        .arg("64M"));
    let cases = [
        ("unsigned", "unsigned", None),
        ("untrusted", "untrusted_key", Some(theirs.public_key().id().to_string())),
        ("two", "other_manifest", None),
        ("gone", "unsigned", None),
    ];
    let count = cases.len();
    for (stage, reason, signer) in cases {
        let error = cache.pull_layer(&victim, &key_of(stage), None, stage).await.unwrap_err();
        eprintln!("{stage}: {error}: {}", strata::events::error_chain(&error));
        assert!(matches!(error, CacheError::Refused { .. }), "{stage}: {error}");
        assert!(error.is_refused() && !error.is_unavailable());
        assert_not_in_store(&victim, &key_of(stage));
        let seen = refusals(&recorder);
        let last = seen.last().unwrap();
        assert_eq!((last.0.as_str(), last.1.as_str()), ("layer", reason), "{stage}: {seen:?}");
        assert_eq!(last.2, signer, "{stage}");
    }
    assert_eq!(refusals(&recorder).len(), count);
    // The honest, intact one still comes.
    cache.pull_layer(&victim, &key_of("one"), None, "one").await.unwrap();
}

/// A registry where runner A pushed the layer `base` and its restore point, signed by
/// `ours`, and the attacker then moved the restore point's tag onto an unsigned one of its own.
async fn registry_with_a_replaced_restore_point(dir: &Path) -> (Registry, Arc<SigningKey>) {
    let registry = Registry::start(dir, None);
    let ours = Arc::new(SigningKey::random(Algorithm::Ed25519).unwrap());
    let a = layer_store(&dir.join("a"));
    make_layer(&a, "base", None, 1);
    let strata::layer::Lookup::Hit(layer) = a.lookup(&key_of("base"), false).unwrap() else {
        panic!()
    };
    let restore = layer.dir.join("restore");
    std::fs::create_dir(&restore).unwrap();
    std::fs::write(restore.join("restore.json"), br#"{"format":1}"#).unwrap();
    std::fs::write(restore.join("state"), b"honest guest memory").unwrap();
    let pusher = client(&registry, policy(Some(&ours), &[]), &Events::none()).await;
    pusher.push_layer(&layer).await.unwrap();
    pusher.push_restore(&layer).await.unwrap();

    // The attacker swaps the restore point: a different tar under the same tag, unsigned.
    let evil = layer_store(&dir.join("evil"));
    make_layer(&evil, "base", None, 1);
    let strata::layer::Lookup::Hit(evil_layer) = evil.lookup(&key_of("base"), false).unwrap()
    else {
        panic!()
    };
    let evil_restore = evil_layer.dir.join("restore");
    std::fs::create_dir(&evil_restore).unwrap();
    std::fs::write(evil_restore.join("restore.json"), br#"{"format":1}"#).unwrap();
    std::fs::write(evil_restore.join("state"), b"a guest that runs the attacker's code").unwrap();
    let restore_tag = format!("{}.restore", key_of("base"));
    let (_, honest_digest) = registry.manifest(&restore_tag).unwrap();
    // The attacker pushes it to a repository of its own, then moves the tag over ours.
    let attacker =
        client_of(&registry, "evil/cache", Policy { sign_with: None, accept: Accept::Unsigned })
            .await;
    attacker.push_restore(&evil_layer).await.unwrap();
    registry.copy_tag("evil/cache", &restore_tag);
    let (_, evil_digest) = registry.manifest(&restore_tag).unwrap();
    assert_ne!(honest_digest, evil_digest);
    (registry, ours)
}

/// A fresh store for runner B, with the tiny source its layers stand on.
fn runner_b(dir: &Path) -> Layers {
    let b = layer_store(dir);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(b.store().sources_dir().join("sha256-0000.qcow2"))
        .arg("64M"));
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_restore_point_is_refused_and_never_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, ours) = registry_with_a_replaced_restore_point(dir.path()).await;
    let b = runner_b(&dir.path().join("b"));
    let recorder = Arc::new(Recorder::default());
    let events = Events::none().with(recorder.clone());
    let cache = client(&registry, policy(None, &[ours.public_key()]), &events).await;
    let pulled = cache.pull_layer(&b, &key_of("base"), None, "base").await.unwrap();
    let error = cache.pull_restore(&b, &key_of("base")).await.unwrap_err();
    assert!(error.is_refused(), "{error}");
    assert!(!pulled.dir.join("restore").exists(), "a refused restore point was installed");
    assert_eq!(refusals(&recorder), vec![("restore".to_owned(), "unsigned".to_owned(), None)]);
}

/// What a build does with that restore point (`--cache-restore`), for the stage `top` that
/// stands on `base`: passes it over, so the stage boots as with none (exit 0 in guest_trust's
/// terms), or, under `--cache-required`, fails. Never installed either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_passes_over_a_refused_restore_point_unless_the_cache_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, ours) = registry_with_a_replaced_restore_point(dir.path()).await;
    let b = runner_b(&dir.path().join("b"));
    let verifying = policy(None, &[ours.public_key()]);
    let base = client(&registry, verifying.clone(), &Events::none())
        .await
        .pull_layer(&b, &key_of("base"), None, "base")
        .await
        .unwrap();
    let stage = |name: &str, parent: Option<&str>| strata::definition::Stage {
        name: strata::definition::StageName::new(name).unwrap(),
        parent: parent.and_then(strata::definition::StageName::new),
        user_data: None,
        refresh: None,
        network: true,
        keep_package_caches: false,
        steps: Vec::new(),
    };
    let plan = [
        strata::layer::PlannedStage {
            stage: stage("base", None),
            key: key_of("base"),
            inputs: serde_json::json!({}),
            parent: None,
            status: strata::layer::Status::Cached(Box::new(base.clone())),
        },
        strata::layer::PlannedStage {
            stage: stage("top", Some("base")),
            key: key_of("top"),
            inputs: serde_json::json!({}),
            parent: Some(key_of("base")),
            status: strata::layer::Status::Missing,
        },
    ];
    for required in [false, true] {
        let recorder = Arc::new(Recorder::default());
        let events = Events::none().with(recorder.clone());
        let options = strata::build::CacheOptions {
            required,
            push: false,
            restore: true,
            policy: verifying.clone(),
        };
        let shared =
            strata::build::connect_cache(&registry.url(), options, &events).await.unwrap().unwrap();
        let result = shared.pull_restore_points(&plan, &b, &events).await;
        if required {
            assert!(result.unwrap_err().is_refused(), "--cache-required: the refusal fails it");
        } else {
            result.unwrap();
            let gave_up =
                recorder.events().iter().any(|e| matches!(e, Event::CacheUnavailable { .. }));
            assert!(!gave_up, "a refusal is not the registry failing: the cache stays in use");
        }
        assert_eq!(refusals(&recorder), vec![("restore".to_owned(), "unsigned".to_owned(), None)]);
        assert!(!base.dir.join("restore").exists(), "a refused restore point was installed");
    }
}
