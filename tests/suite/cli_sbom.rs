//! `strata sbom` and the SBOM and provenance `export` writes, through the real binary, on real
//! layers committed as a build commits them, with records made up here (a base stage with
//! three packages, a final stage that purged one). The documents are judged by the
//! ecosystem's own validators: `pyspdxtools` (spdx-tools) and cyclonedx-python-lib's strict
//! JSON validator, from the test venv (`scripts/install-test-venv.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;

use common::judges::{assert_valid_cyclonedx, assert_valid_spdx};
use common::project::{Project, commit_layers_with, sha256_of, strata};
use predicates::prelude::*;
use serde_json::Value;
use strata::drift::{Package, SourcePackage};

fn package(name: &str, version: &str, source: Option<(&str, &str)>, licenses: &[&str]) -> Package {
    Package {
        name: name.into(),
        arch: "amd64".into(),
        version: version.into(),
        source: source
            .map(|(name, version)| SourcePackage { name: name.into(), version: version.into() }),
        licenses: licenses.iter().map(|l| (*l).to_owned()).collect(),
    }
}

/// The records: base holds three packages, final purged `libstdc++6`.
fn project() -> Project {
    let project = Project::new();
    strata(&project.store()).arg("fetch").arg(project.definition()).assert().success();
    commit_layers_with(&project, |metadata| {
        let mut packages = vec![
            package(
                "bash",
                "5.2.15-2+b2",
                Some(("bash", "5.2.15-2")),
                &["GPL-3+", "BSD-4-clause-UC"],
            ),
            package(
                "libssl3",
                "3.0.15-1~deb12u1",
                Some(("openssl", "3.0.15-1~deb12u1")),
                &["Apache-2.0"],
            ),
            package(
                "libstdc++6",
                "12.2.0-14",
                Some(("gcc-12", "12.2.0-14")),
                &["GPL-3+ with GCC-exception-3.1", "Artistic"],
            ),
            package(
                "openssh-server",
                "1:9.2p1-2+deb12u3",
                Some(("openssh", "1:9.2p1-2+deb12u3")),
                &[],
            ),
        ];
        if metadata.stage == "final" {
            packages.retain(|p| p.name != "libstdc++6");
        }
        metadata.packages = packages;
    });
    project
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn sboms_of_recorded_layers_pass_the_judges_and_drop_a_purged_package() {
    let project = project();
    let out = |name: &str| project.dir.path().join(name);
    for (stage, format, file) in [
        ("base", "spdx-json", "base.spdx.json"),
        ("base", "cyclonedx-json", "base.cdx.json"),
        ("final", "spdx-json", "final.spdx.json"),
        ("final", "cyclonedx-json", "final.cdx.json"),
    ] {
        strata(&project.store())
            .arg("sbom")
            .arg(project.definition())
            .args(["--stage", stage, "--format", format, "-o"])
            .arg(out(file))
            .assert()
            .success()
            .stderr(predicate::str::contains(format!("packages of tiny stage {stage}")));
    }
    assert_valid_spdx(&out("base.spdx.json"));
    assert_valid_spdx(&out("final.spdx.json"));
    assert_valid_cyclonedx(&out("base.cdx.json"));
    assert_valid_cyclonedx(&out("final.cdx.json"));

    let source_sha = sha256_of(&project.dir.path().join("src.qcow2"));
    let spdx = read_json(&out("base.spdx.json"));
    let root_id = spdx["relationships"][0]["relatedSpdxElement"].clone();
    let root =
        spdx["packages"].as_array().unwrap().iter().find(|p| p["SPDXID"] == root_id).unwrap();
    assert_eq!(
        root["checksums"][0]["checksumValue"],
        source_sha.as_str(),
        "the root is the source"
    );
    let cdx = read_json(&out("base.cdx.json"));
    assert_eq!(cdx["metadata"]["component"]["hashes"][0]["content"], source_sha.as_str());

    let names = |doc: &Value, key: &str| -> Vec<String> {
        doc[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(names(&spdx, "packages").contains(&"libstdc++6".to_owned()));
    let final_spdx = read_json(&out("final.spdx.json"));
    let final_cdx = read_json(&out("final.cdx.json"));
    assert!(!names(&final_spdx, "packages").contains(&"libstdc++6".to_owned()), "purged in final");
    assert!(!names(&final_cdx, "components").contains(&"libstdc++6".to_owned()), "purged in final");
    assert!(names(&final_cdx, "components").contains(&"libssl3".to_owned()));

    // Each package at its exact version, with its purl.
    let ssh = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "openssh-server")
        .unwrap();
    assert_eq!(ssh["version"], "1:9.2p1-2+deb12u3");
    assert_eq!(
        ssh["purl"],
        "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u3?arch=amd64&distro=debian-12"
    );

    // The same record, the same bytes, on stdout too.
    let stdout = strata(&project.store())
        .arg("sbom")
        .arg(project.definition())
        .args(["--stage", "base"])
        .output()
        .unwrap();
    assert!(stdout.status.success());
    assert_eq!(stdout.stdout, std::fs::read(out("base.spdx.json")).unwrap());
}

#[test]
fn which_stages_hold_a_package_by_its_name_or_its_source() {
    let project = project();
    let output = strata(&project.store())
        .args(["--log-format", "json", "sbom", "--package", "gcc-12"])
        .arg(project.definition())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<Value> = output
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["stage"], "base");
    assert_eq!(rows[0]["state"], "holds");
    assert_eq!(rows[0]["package"]["name"], "libstdc++6");
    assert_eq!(rows[0]["package"]["version"], "12.2.0-14");
    assert_eq!(rows[1]["stage"], "final");
    assert_eq!(rows[1]["state"], "lacks");
    strata(&project.store())
        .args(["sbom", "--package", "libssl3"])
        .arg(project.definition())
        .assert()
        .success()
        .stdout(predicate::str::contains("3.0.15-1~deb12u1").count(2));
}

#[test]
fn a_stage_not_built_exits_one_and_an_unknown_stage_two() {
    let project = Project::new();
    strata(&project.store())
        .arg("sbom")
        .arg(project.definition())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("first"));
    strata(&project.store()).arg("fetch").arg(project.definition()).assert().success();
    strata(&project.store())
        .arg("sbom")
        .arg(project.definition())
        .args(["--stage", "nope"])
        .assert()
        .code(2);
    strata(&project.store())
        .arg("sbom")
        .arg(project.definition())
        .arg(project.definition())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--package"));
}

#[test]
fn export_writes_the_sbom_and_provenance_naming_the_image_s_digest() {
    let project = project();
    let out = project.dir.path().join("out");
    strata(&project.store())
        .arg("export")
        .arg(project.definition())
        .args(["--format", "raw", "-o"])
        .arg(&out)
        .assert()
        .success();
    assert_valid_spdx(&out.join("tiny-final.spdx.json"));
    let line = std::fs::read_to_string(out.join("tiny-final.intoto.jsonl")).unwrap();
    let statement: Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(statement["subject"][0]["name"], "tiny-final.raw");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        sha256_of(&out.join("tiny-final.raw")).as_str()
    );
    let definition = &statement["predicate"]["buildDefinition"]["externalParameters"]["definition"];
    assert_eq!(definition["digest"]["sha256"], sha256_of(&project.definition()).as_str());
}

/// `openssl genpkey` for a key (0600), its public half with `openssl pkey -pubout`.
fn openssl_key(dir: &Path, algorithm: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let private = dir.join(format!("{algorithm}.pem"));
    let public = dir.join(format!("{algorithm}.pub"));
    let args: &[&str] = match algorithm {
        "ed25519" => &["genpkey", "-algorithm", "ed25519", "-out"],
        _ => &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"],
    };
    common::project::run("openssl", &[args, &[private.to_str().unwrap()]].concat());
    common::project::run(
        "openssl",
        &["pkey", "-pubout", "-in", private.to_str().unwrap(), "-out", public.to_str().unwrap()],
    );
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    (private, public)
}

#[test]
fn a_signed_provenance_is_a_dsse_envelope_openssl_verifies_over_the_pae() {
    use base64::Engine as _;
    let project = project();
    for algorithm in ["ed25519", "ecdsa-p256"] {
        let (private, public) = openssl_key(project.dir.path(), algorithm);
        let out = project.dir.path().join(format!("out-{algorithm}"));
        strata(&project.store())
            .arg("--sign-key")
            .arg(&private)
            .arg("export")
            .arg(project.definition())
            .args(["--format", "raw", "--target", "generic", "-o"])
            .arg(&out)
            .assert()
            .success();
        let line = std::fs::read_to_string(out.join("tiny-final.intoto.jsonl")).unwrap();
        assert_eq!(line.lines().count(), 1);
        let envelope: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
        let statement: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            sha256_of(&out.join("tiny-final.raw")).as_str()
        );
        // PAE as the DSSE spec writes it, built here, and the signature over it.
        let mut pae =
            format!("DSSEv1 28 application/vnd.in-toto+json {} ", payload.len()).into_bytes();
        pae.extend_from_slice(&payload);
        std::fs::write(out.join("pae.bin"), &pae).unwrap();
        let signature = b64.decode(envelope["signatures"][0]["sig"].as_str().unwrap()).unwrap();
        std::fs::write(out.join("sig.bin"), &signature).unwrap();
        let verify = |pae_file: &str| {
            let mut command = std::process::Command::new("openssl");
            match algorithm {
                "ed25519" => command
                    .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
                    .arg(&public)
                    .arg("-in"),
                _ => command
                    .args(["dgst", "-sha256", "-verify"])
                    .arg(&public)
                    .arg("-signature")
                    .arg(out.join("sig.bin")),
            };
            command.arg(out.join(pae_file));
            if algorithm == "ed25519" {
                command.arg("-sigfile").arg(out.join("sig.bin"));
            }
            command.output().unwrap()
        };
        let good = verify("pae.bin");
        assert!(
            good.status.success(),
            "{algorithm}: {}{}",
            String::from_utf8_lossy(&good.stdout),
            String::from_utf8_lossy(&good.stderr)
        );
        // A changed payload does not verify.
        let mut tampered = pae.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        std::fs::write(out.join("tampered.bin"), &tampered).unwrap();
        assert!(
            !verify("tampered.bin").status.success(),
            "{algorithm}: a tampered payload verified"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn push_attaches_each_layer_s_signed_sbom_and_a_pull_verifies_it() {
    use strata::cache::{Cache, Credentials, CredentialsFrom};
    use strata::events::Events;
    use strata::trust::{Accept, Policy, PublicKey, SigningKey, TrustedKeys};
    let project = project();
    let registry = common::registry::Registry::start(project.dir.path(), None);
    let (private, public) = openssl_key(project.dir.path(), "ed25519");
    strata(&project.store())
        .arg("--cache")
        .arg(registry.url().to_string())
        .arg("--sign-key")
        .arg(&private)
        .arg("push")
        .arg(project.definition())
        .assert()
        .success();
    let definition = strata::definition::load(&project.definition()).unwrap();
    let layers =
        strata::layer::LayerStore::new(strata::store::Store::open(&project.store()).unwrap());
    let built = strata::layer::built_stage(&definition, &layers, None).unwrap();
    let connect = |trusted: PublicKey| async {
        let mut keys = TrustedKeys::new();
        keys.add(trusted);
        let policy = Policy { sign_with: None, accept: Accept::Signed(keys) };
        Cache::connect(
            &registry.url(),
            &Credentials::Anonymous,
            &CredentialsFrom::Nowhere,
            &Events::none(),
        )
        .await
        .unwrap()
        .with_policy(policy)
    };
    let cache = connect(PublicKey::load(&public).unwrap()).await;
    for (stage, layer) in &built.chain {
        let key = strata::layer::LayerKey::parse(&layer.metadata.key).unwrap();
        let sbom =
            strata::cache::pull_layer_sbom(&cache, &key).await.unwrap().expect("an attached SBOM");
        let file = project.dir.path().join(format!("pulled-{stage}.spdx.json"));
        std::fs::write(&file, &sbom).unwrap();
        assert_valid_spdx(&file);
        let document: Value = serde_json::from_slice(&sbom).unwrap();
        let names: Vec<&str> = document["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names.contains(&"libstdc++6"), stage == "base", "{stage}: {names:?}");
        assert!(names.contains(&"libssl3"));
    }
    // Signed by a key this runner does not trust: refused, not used.
    let other = SigningKey::random(strata::trust::Algorithm::Ed25519).unwrap();
    let untrusting = connect(other.public_key().clone()).await;
    let key = strata::layer::LayerKey::parse(&built.layer.metadata.key).unwrap();
    let refused = strata::cache::pull_layer_sbom(&untrusting, &key).await;
    assert!(matches!(refused, Err(strata::cache::CacheError::Refused { .. })), "{refused:?}");
}
