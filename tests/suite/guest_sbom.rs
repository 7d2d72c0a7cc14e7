//! What is inside the demo, from the shared cold build (`common/demo.rs`; no boot of its own):
//! the base stage's SBOM lists every package the guest's `dpkg-query` reported at the seal, at
//! its exact version, and each of them is the `.deb` the base image was made from (its name,
//! version and architecture in the base image's package cache, its `Source` field the source
//! package, its copyright file's `License:` fields the licenses); the source image's sha256 is
//! the root's checksum; both formats pass the ecosystem's validators; the export's provenance
//! names the exported image's sha256.
//!
//! Runs only with `STRATA_GUEST_TESTS=1` and the local base image (`STRATA_BASE_IMAGE_DIR`,
//! whose `debs/` is the package cache `scripts/build-base-image.sh` keeps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use common::demo::built_demo;
use common::judges::{assert_valid_cyclonedx, assert_valid_spdx};
use common::{assert_success, base_image_dir};

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The record of the layer of `stage` (the guest's packages as `dpkg-query` printed them at
/// the seal), from `strata layers`' key.
fn record(demo: &common::demo::BuiltDemo, stage: &str) -> Value {
    let rows = demo.layers_table(&demo.definition());
    let row = rows.iter().find(|row| row["stage"] == stage).unwrap();
    let key = row["key"].as_str().unwrap();
    read_json(&demo.store().join("layers").join(key).join("layer.json"))
}

/// The base image's package cache: `NAME_VERSION_ARCH.deb` (the epoch's `:` as `%3a`).
fn deb_cache() -> BTreeMap<String, PathBuf> {
    let debs = base_image_dir().join("debs");
    assert!(
        debs.is_dir(),
        "{} is missing: scripts/build-base-image.sh keeps the packages it installed there",
        debs.display()
    );
    std::fs::read_dir(&debs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "deb"))
        .map(|path| (path.file_name().unwrap().to_string_lossy().replace("%3a", ":"), path))
        .collect()
}

fn dpkg_deb_field(deb: &Path, field: &str) -> String {
    let output = Command::new("dpkg-deb").args(["-f"]).arg(deb).arg(field).output().unwrap();
    assert_success(&output, "dpkg-deb -f (apt-get install dpkg)");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The `License:` fields of the copyright file in `deb`, if it is machine-readable.
fn deb_licenses(deb: &Path, name: &str) -> Vec<String> {
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xOf - ./usr/share/doc/{name}/copyright 2>/dev/null",
        deb.display()
    );
    let output = Command::new("sh").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !text
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("Format:") && l.contains("copyright-format"))
    {
        return vec![];
    }
    let mut licenses: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("License:"))
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    licenses.sort();
    licenses.dedup();
    licenses
}

#[test]
#[ignore = "boots a guest: run by scripts/test.sh"]
fn guest_sbom_of_the_demo_lists_the_base_image_s_packages_and_validates() {
    let demo = built_demo();
    let base = record(&demo, "base");
    let recorded = base["packages"].as_array().unwrap().clone();
    assert!(recorded.len() > 100, "the base image has its ~250 packages: {}", recorded.len());
    let mut seconds = Vec::new();
    for (stage, format, file) in [
        ("base", "spdx-json", "base.spdx.json"),
        ("base", "cyclonedx-json", "base.cdx.json"),
        ("app-base", "spdx-json", "app-base.spdx.json"),
        ("final", "spdx-json", "final.spdx.json"),
        ("final", "cyclonedx-json", "final.cdx.json"),
    ] {
        let started = Instant::now();
        let output = demo
            .strata()
            .arg("sbom")
            .arg(demo.definition())
            .args(["--stage", stage, "--format", format, "-o"])
            .arg(demo.path(file))
            .output()
            .unwrap();
        assert_success(&output, "strata sbom");
        seconds.push(format!("{stage} {format} {:.2}s", started.elapsed().as_secs_f64()));
    }
    eprintln!("strata sbom: {}", seconds.join(", "));
    for file in ["base.spdx.json", "app-base.spdx.json", "final.spdx.json"] {
        assert_valid_spdx(&demo.path(file));
    }
    assert_valid_cyclonedx(&demo.path("base.cdx.json"));
    assert_valid_cyclonedx(&demo.path("final.cdx.json"));

    // Every package dpkg-query reported at the seal, at its exact version, and nothing else.
    let spdx = read_json(&demo.path("base.spdx.json"));
    let cdx = read_json(&demo.path("base.cdx.json"));
    let in_spdx: BTreeMap<String, String> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Package-"))
        .map(|p| {
            (p["name"].as_str().unwrap().to_owned(), p["versionInfo"].as_str().unwrap().to_owned())
        })
        .collect();
    let components: Vec<&Value> =
        cdx["components"].as_array().unwrap().iter().filter(|c| c["type"] == "library").collect();
    assert_eq!(in_spdx.len(), recorded.len());
    assert_eq!(components.len(), recorded.len());
    let cache = deb_cache();
    let mut sources_checked = 0;
    let mut licenses_checked = 0;
    for package in &recorded {
        let name = package["name"].as_str().unwrap();
        let version = package["version"].as_str().unwrap();
        let arch = package["arch"].as_str().unwrap();
        assert_eq!(in_spdx.get(name).map(String::as_str), Some(version), "{name} in the SPDX");
        let component = components.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(component["version"], version);
        let purl = component["purl"].as_str().unwrap();
        assert!(
            purl.starts_with(&format!("pkg:deb/debian/{}@", name.replace('+', "%2B"))),
            "{purl}"
        );
        assert!(purl.ends_with(&format!("?arch={arch}&distro=debian-12")), "{purl}");
        // The .deb the base image was built from: same name, version and architecture.
        let Some(deb) = cache
            .get(&format!(
                "{name}_{}_{arch}.deb",
                version.split_once(':').map_or(version, |(_, v)| v)
            ))
            .or_else(|| cache.get(&format!("{name}_{version}_{arch}.deb")))
        else {
            panic!(
                "{name} {version} {arch} is in the SBOM but not in the base image's package cache"
            );
        };
        let source = dpkg_deb_field(deb, "Source");
        let source_name =
            source.split_whitespace().next().filter(|s| !s.is_empty()).unwrap_or(name);
        assert_eq!(package["source"]["name"], source_name, "{name}'s source package");
        sources_checked += 1;
        if licenses_checked < 25 {
            let expected = deb_licenses(deb, name);
            let recorded: Vec<String> = package["licenses"]
                .as_array()
                .map(|l| l.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            if !expected.is_empty() {
                assert_eq!(recorded, expected, "{name}'s licenses");
                licenses_checked += 1;
            }
        }
    }
    assert!(licenses_checked >= 10, "machine-readable copyright files checked: {licenses_checked}");
    eprintln!(
        "{sources_checked} packages: versions and sources match the .debs, {licenses_checked} packages' licenses"
    );

    // The root is the source image.
    let source_sha = std::fs::read_to_string(base_image_dir().join("SHA256SUMS")).unwrap();
    let source_sha = source_sha.split_whitespace().next().unwrap();
    let root = &spdx["packages"][0];
    assert_eq!(spdx["relationships"][0]["relatedSpdxElement"], root["SPDXID"]);
    assert_eq!(root["checksums"][0]["checksumValue"], source_sha);
    assert_eq!(cdx["metadata"]["component"]["hashes"][0]["content"], source_sha);

    // The export's provenance names the exported image by its digest.
    let out = demo.path("out");
    let output =
        demo.strata().arg("export").arg(demo.definition()).arg("-o").arg(&out).output().unwrap();
    assert_success(&output, "strata export");
    assert_valid_spdx(&out.join("demo-final.spdx.json"));
    let line = std::fs::read_to_string(out.join("demo-final.intoto.jsonl")).unwrap();
    let statement: Value = serde_json::from_str(line.trim_end()).unwrap();
    let image_sha = common::project::sha256_of(&out.join("demo-final.qcow2"));
    assert_eq!(statement["subject"][0]["name"], "demo-final.qcow2");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], image_sha.as_str());
    let dependencies =
        statement["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert_eq!(dependencies[0]["digest"]["sha256"], source_sha);
    let used: Vec<&str> =
        dependencies.iter().skip(1).map(|d| d["name"].as_str().unwrap()).collect();
    for script in [
        "../scripts/harden.sh",
        "../scripts/app-base.sh",
        "../scripts/install-app.sh",
        "demo/app/app.py",
    ] {
        assert!(
            used.iter().any(|name| name.ends_with(script.trim_start_matches("../"))),
            "{script} in {used:?}"
        );
    }
}
