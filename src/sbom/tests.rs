//! The documents from records made up here; the judges (pyspdxtools, cyclonedx-python-lib)
//! run on real ones in tests/.

use super::*;
use crate::drift::SourcePackage;

pub(crate) fn package(
    name: &str,
    version: &str,
    source: Option<&str>,
    licenses: &[&str],
) -> Package {
    Package {
        name: name.to_owned(),
        arch: "amd64".to_owned(),
        version: version.to_owned(),
        source: source
            .map(|source| SourcePackage { name: source.to_owned(), version: version.to_owned() }),
        licenses: licenses.iter().map(|l| (*l).to_owned()).collect(),
    }
}

pub(crate) fn contents(packages: Vec<Package>) -> Contents {
    Contents {
        image: "demo".into(),
        stage: "base".into(),
        layer_key: "ab".repeat(32),
        layers: vec![("base".into(), "ab".repeat(32))],
        sealed: 1_795_906_865,
        source: SourceImage {
            url: "https://cloud.debian.org/images/debian-12-genericcloud-amd64.qcow2".into(),
            file_name: "debian-12-genericcloud-amd64.qcow2".into(),
            sha256: "cd".repeat(32),
        },
        os_id: Some("debian".into()),
        os_version: Some("12".into()),
        packages,
    }
}

fn sample() -> Contents {
    contents(vec![
        package("bash", "5.2.15-2+b2", Some("bash"), &["GPL-3+", "BSD-4-clause-UC", "permissive"]),
        package("libssl3", "3.0.15-1~deb12u1", Some("openssl"), &["Apache-2.0"]),
        package("libstdc++6", "12.2.0-14", None, &[]),
    ])
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn spdx_names_every_package_its_purl_source_and_license() {
    let bytes = render(&sample(), Format::SpdxJson).unwrap_or_else(|e| panic!("{e}"));
    let doc = json(&bytes);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "2026-11-28T23:01:05Z");
    let packages = doc["packages"].as_array().cloned().unwrap_or_default();
    assert_eq!(packages.len(), 5, "source image, OS, three packages");
    let root = &packages[0];
    assert_eq!(root["checksums"][0]["checksumValue"], "cd".repeat(32));
    assert_eq!(
        root["downloadLocation"],
        "https://cloud.debian.org/images/debian-12-genericcloud-amd64.qcow2"
    );
    let ssl = packages.iter().find(|p| p["name"] == "libssl3").cloned().unwrap_or_default();
    assert_eq!(ssl["versionInfo"], "3.0.15-1~deb12u1");
    assert_eq!(ssl["licenseDeclared"], "Apache-2.0");
    assert_eq!(ssl["sourceInfo"], "built package from: openssl 3.0.15-1~deb12u1");
    assert_eq!(
        ssl["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12"
    );
    let cxx = packages.iter().find(|p| p["name"] == "libstdc++6").cloned().unwrap_or_default();
    assert_eq!(cxx["licenseDeclared"], "NOASSERTION");
    let bash = packages.iter().find(|p| p["name"] == "bash").cloned().unwrap_or_default();
    assert_eq!(
        bash["licenseDeclared"],
        "GPL-3.0-or-later AND BSD-4-Clause-UC AND LicenseRef-permissive"
    );
    assert_eq!(doc["hasExtractedLicensingInfos"][0]["licenseId"], "LicenseRef-permissive");
    let relationships = doc["relationships"].as_array().cloned().unwrap_or_default();
    assert_eq!(relationships.len(), 5, "describes, contains the OS, contains each package");
    assert_eq!(relationships[0]["relationshipType"], "DESCRIBES");
    assert_eq!(relationships[0]["relatedSpdxElement"], root["SPDXID"]);
    // The same record, the same bytes.
    assert_eq!(render(&sample(), Format::SpdxJson).unwrap_or_default(), bytes);
}

#[test]
fn cyclonedx_has_the_root_the_os_and_the_packages() {
    let bytes = render(&sample(), Format::CycloneDxJson).unwrap_or_else(|e| panic!("{e}"));
    let doc = json(&bytes);
    assert_eq!(doc["specVersion"], "1.6");
    let serial = doc["serialNumber"].as_str().unwrap_or_default();
    assert_eq!(serial.len(), "urn:uuid:".len() + 36);
    assert_eq!(&serial[23..24], "5", "{serial}");
    let root = &doc["metadata"]["component"];
    assert_eq!(root["hashes"][0]["content"], "cd".repeat(32));
    let components = doc["components"].as_array().cloned().unwrap_or_default();
    assert_eq!(components[0]["type"], "operating-system");
    assert_eq!(components.len(), 4);
    let ssl = components.iter().find(|c| c["name"] == "libssl3").cloned().unwrap_or_default();
    assert_eq!(ssl["licenses"][0]["expression"], "Apache-2.0");
    assert_eq!(ssl["properties"][1]["value"], "openssl");
    let dependencies = doc["dependencies"].as_array().cloned().unwrap_or_default();
    assert_eq!(dependencies[0]["ref"], "source-image");
    assert_eq!(dependencies[1]["dependsOn"].as_array().map(Vec::len), Some(3));
    assert_eq!(render(&sample(), Format::CycloneDxJson).unwrap_or_default(), bytes);
}

#[test]
fn a_stage_that_purged_a_package_does_not_list_it() {
    // The records of a stage and of the stage above it that ran `apt-get purge libstdc++6`.
    let base = sample();
    let mut purged = sample();
    purged.stage = "app".into();
    purged.packages.retain(|p| p.name != "libstdc++6");
    for format in [Format::SpdxJson, Format::CycloneDxJson] {
        let before =
            String::from_utf8(render(&base, format).unwrap_or_default()).unwrap_or_default();
        let after =
            String::from_utf8(render(&purged, format).unwrap_or_default()).unwrap_or_default();
        assert!(before.contains("libstdc%2B%2B6@12.2.0-14"), "{before}");
        assert!(!after.contains("libstdc"), "{after}");
        assert!(after.contains("libssl3"));
    }
}

#[test]
fn a_local_source_is_a_file_uri_and_no_download_location() {
    let mut local = sample();
    local.source.url = "/work/base-image/debian-12.qcow2".into();
    assert_eq!(local.source.uri(), "file:///work/base-image/debian-12.qcow2");
    let doc = json(&render(&local, Format::SpdxJson).unwrap_or_default());
    assert_eq!(doc["packages"][0]["downloadLocation"], "NOASSERTION");
    assert!(
        doc["packages"][0]["sourceInfo"].as_str().unwrap_or_default().contains("/work/base-image")
    );
}
