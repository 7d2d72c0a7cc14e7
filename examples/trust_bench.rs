//! The cost of trust per artifact (issue 27), printed, never asserted: run by `bench/trust.sh`,
//! which starts a loopback registry and passes its URL.
//!
//! 1. The cryptography alone: signing and verifying one simple-signing payload, ECDSA P-256 and
//!    Ed25519, median of many.
//! 2. Per artifact against the registry: pushing a small layer signed vs unsigned, and pulling
//!    it verified vs `--cache-unsigned` (each into a fresh store), medians of `RUNS`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::cache::{Cache, CacheUrl, Credentials, CredentialsFrom};
use strata::events::Events;
use strata::layer::{Layer, LayerKey, LayerMetadata, LayerStore, sha256_hex};
use strata::store::Store;
use strata::trust::{Accept, Algorithm, Payload, Policy, SigningKey, TrustedKeys};

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

fn make_layer(layers: &LayerStore, name: &str) -> Layer {
    let store = layers.store();
    let source = store.sources_dir().join("sha256-0000.qcow2");
    if !source.exists() {
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&source)
            .arg("64M")
            .status()
            .unwrap();
        assert!(status.success());
    }
    let key = LayerKey::parse(&sha256_hex(name.as_bytes())).unwrap();
    let work = layers.begin(&key).unwrap();
    let backing = "../../sources/sha256-0000.qcow2";
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing])
        .arg(work.disk())
        .current_dir(&work.dir)
        .status()
        .unwrap()
        .success()
        && Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -q -P 7 1M 256K"])
            .arg(work.disk())
            .current_dir(&work.dir)
            .status()
            .unwrap()
            .success();
    assert!(ok);
    let metadata = LayerMetadata {
        key: key.to_string(),
        stage: name.to_owned(),
        image: "bench".to_owned(),
        backing: backing.to_owned(),
        inputs: serde_json::json!({ "stage": name }),
        created: strata::layer::now_secs(),
        strata_version: "bench".to_owned(),
        ..LayerMetadata::default()
    };
    layers.commit(work, metadata).unwrap()
}

async fn client(url: &CacheUrl, policy: Policy) -> Cache {
    Cache::connect(url, &Credentials::Anonymous, &CredentialsFrom::Nowhere, &Events::none())
        .await
        .unwrap()
        .with_policy(policy)
}

fn fresh_store(dir: &Path, source_from: &Path) -> LayerStore {
    let store = Store::open(dir).unwrap();
    std::fs::copy(source_from, store.sources_dir().join("sha256-0000.qcow2")).unwrap();
    LayerStore::new(store)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(9);
    let payload =
        Payload::new("127.0.0.1:5000/strata/cache", &format!("sha256:{}", sha256_hex(b"manifest")))
            .to_bytes();
    println!("cryptography, one payload of {} bytes (median of 200):", payload.len());
    for algorithm in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
        let key = SigningKey::random(algorithm).unwrap();
        let mut sign = Vec::new();
        let mut verify = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let signature = key.sign(&payload);
            sign.push(started.elapsed());
            let started = Instant::now();
            key.public_key().verify(&payload, &signature).unwrap();
            verify.push(started.elapsed());
        }
        println!("  {algorithm:<11} sign {:.3} ms  verify {:.3} ms", median(sign), median(verify));
    }

    let Some(url) = std::env::args().nth(1) else {
        println!("(no registry URL given: skipping the per-artifact figures)");
        return;
    };
    let url = CacheUrl::parse(&url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SigningKey::random(Algorithm::EcdsaP256).unwrap());
    let mut trusted = TrustedKeys::new();
    trusted.add(key.public_key().clone());
    let signing = Policy { sign_with: Some(key.clone()), accept: Accept::Signed(trusted.clone()) };
    let unsigned = Policy { sign_with: None, accept: Accept::Unsigned };
    let verifying = Policy { sign_with: None, accept: Accept::Signed(trusted) };

    let (mut push_signed, mut push_unsigned) = (Vec::new(), Vec::new());
    let (mut pull_verified, mut pull_unverified) = (Vec::new(), Vec::new());
    let origin = LayerStore::new(Store::open(&dir.path().join("origin")).unwrap());
    let source = origin.store().sources_dir().join("sha256-0000.qcow2");
    for run in 0..runs {
        for (signed, samples) in [(true, &mut push_signed), (false, &mut push_unsigned)] {
            let name = format!("bench-{}-{run}-{signed}", std::process::id());
            let layer = make_layer(&origin, &name);
            let cache = client(&url, if signed { signing.clone() } else { unsigned.clone() }).await;
            let started = Instant::now();
            cache.push_layer(&layer).await.unwrap();
            samples.push(started.elapsed());
            for (verified, samples) in [(true, &mut pull_verified), (false, &mut pull_unverified)] {
                if verified && !signed {
                    continue;
                }
                if !verified && signed {
                    continue;
                }
                let into = dir.path().join(format!("{name}-{verified}"));
                let layers = fresh_store(&into, &source);
                let cache =
                    client(&url, if verified { verifying.clone() } else { unsigned.clone() }).await;
                let key = LayerKey::parse(&layer.metadata.key).unwrap();
                let started = Instant::now();
                cache.pull_layer(&layers, &key, None, &name).await.unwrap();
                samples.push(started.elapsed());
            }
        }
    }
    println!("per artifact, a 256 KiB layer on {} (median of {runs}):", url.registry());
    println!(
        "  push  signed {:.1} ms  unsigned {:.1} ms  (signing costs {:.1} ms)",
        median(push_signed.clone()),
        median(push_unsigned.clone()),
        median(push_signed) - median(push_unsigned)
    );
    println!(
        "  pull  verified {:.1} ms  unverified {:.1} ms  (verifying costs {:.1} ms)",
        median(pull_verified.clone()),
        median(pull_unverified.clone()),
        median(pull_verified) - median(pull_unverified)
    );
}
