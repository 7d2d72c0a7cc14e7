//! What a registry serves, fuzzed (issue 27): manifests, layer and source records and cosign
//! signature payloads, seeded from real ones and mutated (bytes flipped, cut, duplicated,
//! values swapped for other types, huge numbers, deep nesting, long strings), then given to the
//! parsers strata applies before trusting anything: `parse_manifest` (4 MiB bound, known media
//! type), `parse_config` (1 MiB bound) and `trust::verify` (signature, then payload). Every
//! case ends Ok or refused, never a panic. `STRATA_FUZZ_CASES` sets the cases (default 2000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use strata::cache::{parse_config, parse_manifest};
use strata::layer::LayerMetadata;
use strata::trust::{Algorithm, Signed, SigningKey, TrustedKeys};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn seeds() -> Vec<Vec<u8>> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.strata.layer.v1",
        "config": { "mediaType": "application/vnd.strata.layer.config.v1+json", "digest": DIGEST, "size": 812 },
        "layers": [{ "mediaType": "application/vnd.strata.layer.disk.v1.qcow2+zstd", "digest": DIGEST, "size": 4194304,
                     "annotations": { "org.opencontainers.image.title": "disk.qcow2" } }],
        "annotations": { "dev.strata.key": "ab", "dev.strata.stage": "base" }
    });
    let record = serde_json::to_value(LayerMetadata {
        key: "ab".repeat(32),
        stage: "base".to_owned(),
        image: "demo".to_owned(),
        backing: "../../sources/sha256-00.qcow2".to_owned(),
        ..LayerMetadata::default()
    })
    .unwrap();
    let payload = strata::trust::Payload::new("127.0.0.1:5000/strata/cache", DIGEST);
    vec![
        serde_json::to_vec(&manifest).unwrap(),
        serde_json::to_vec(&record).unwrap(),
        payload.to_bytes(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Duplicate(usize, usize),
    Insert(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let odd = prop_oneof![
        Just("null".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e999".to_owned()),
        Just("[".repeat(2000)),
        Just("{\"a\":".repeat(2000)),
        Just("\"\\u0000\\ud800\"".to_owned()),
        Just(format!("\"{}\"", "x".repeat(70_000))),
        Just("{}".to_owned()),
        Just("[]".to_owned()),
        Just("\"../../../etc/passwd\"".to_owned()),
        "[ -~]{0,40}",
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip(at, byte)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), 0usize..400).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
        (any::<usize>(), odd).prop_map(|(at, text)| Mutation::Insert(at, text)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match mutation {
            Mutation::Flip(at, byte) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = *byte;
                }
            }
            Mutation::Cut(at) => bytes.truncate(at % len),
            Mutation::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                let copy = bytes.get(at..end).unwrap_or_default().to_vec();
                bytes.splice(at.min(bytes.len())..at.min(bytes.len()), copy);
            }
            Mutation::Insert(at, text) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, text.bytes());
            }
        }
    }
    bytes
}

#[test]
fn registry_json_never_panics_the_parsers() {
    let cases =
        std::env::var("STRATA_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let key = SigningKey::random(Algorithm::EcdsaP256).unwrap();
    let mut trusted = TrustedKeys::new();
    trusted.add(key.public_key().clone());
    let seeds = seeds();
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let strategy = (0..seeds.len(), proptest::collection::vec(mutation(), 1..6));
    runner
        .run(&strategy, |(seed, mutations)| {
            let bytes = apply(seeds[seed].clone(), &mutations);
            let _ = parse_manifest(&bytes);
            let _ = parse_config::<LayerMetadata>(&bytes);
            // Signed by the trusted key (so the payload parser is reached) and not.
            let signature = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                key.sign(&bytes),
            );
            let signed = Signed { payload: bytes.clone(), signature, signer: None };
            let verdict = strata::trust::verify(&[signed], DIGEST, &trusted);
            if verdict.is_ok() {
                // Only a payload naming exactly DIGEST with cosign's type may pass.
                let parsed: strata::trust::Payload = serde_json::from_slice(&bytes).unwrap();
                prop_assert_eq!(parsed.critical.image.docker_manifest_digest, DIGEST);
            }
            let unsigned =
                Signed { payload: bytes, signature: "AAAA".to_owned(), signer: Some("x".into()) };
            prop_assert!(strata::trust::verify(&[unsigned], DIGEST, &trusted).is_err());
            Ok(())
        })
        .unwrap();
}

#[test]
fn oversized_manifests_and_records_are_refused_before_parsing() {
    let big = format!("{{\"schemaVersion\":2,\"x\":\"{}\"}}", "a".repeat((4 << 20) + 1));
    let refused = parse_manifest(big.as_bytes()).unwrap_err();
    assert!(refused.contains("more than"), "{refused}");
    let record = format!("{{\"key\":\"{}\"}}", "a".repeat((1 << 20) + 1));
    let refused = parse_config::<LayerMetadata>(record.as_bytes()).unwrap_err();
    assert!(refused.contains("more than"), "{refused}");
    let unknown = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","config":{"mediaType":"a","digest":"sha256:00","size":1},"layers":[]}"#;
    assert!(parse_manifest(unknown).unwrap_err().contains("unknown media type"));
}
