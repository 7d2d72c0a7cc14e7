//! SPDX 2.3 JSON (<https://spdx.github.io/spdx-spec/v2.3/>). The document describes the source
//! image (URL, sha256), which contains the operating system, which contains every package
//! (name, version, purl with the architecture, source package, declared licenses).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Contents, id_safe};

const ROOT: &str = "SPDXRef-SourceImage";
const OS: &str = "SPDXRef-OperatingSystem";

pub(super) fn document(contents: &Contents) -> Value {
    let mut refs = BTreeMap::new();
    let mut packages = vec![root(contents)];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", ROOT)];
    let holder = match &contents.os_id {
        Some(id) => {
            packages.push(json!({
                "SPDXID": OS,
                "name": id,
                "versionInfo": contents.os_version.clone().unwrap_or_default(),
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "primaryPackagePurpose": "OPERATING-SYSTEM",
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            }));
            relationships.push(relationship(ROOT, "CONTAINS", OS));
            OS
        }
        None => ROOT,
    };
    for package in &contents.packages {
        let id = package_id(package);
        let declared = super::declared(&package.licenses);
        let mut object = json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared.as_ref().map_or("NOASSERTION", |d| d.expression.as_str()),
            "copyrightText": "NOASSERTION",
        });
        if let Some(declared) = declared {
            refs.extend(declared.refs);
        }
        if let Some(source) = &package.source {
            // The wording Trivy reads back as the source package.
            object["sourceInfo"] =
                json!(format!("built package from: {} {}", source.name, source.version));
        }
        if !package.arch.is_empty() {
            object["comment"] = json!(format!("architecture: {}", package.arch));
        }
        if let Some(purl) = contents.purl_of(package) {
            object["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }]);
        }
        relationships.push(relationship(holder, "CONTAINS", &id));
        packages.push(object);
    }
    let mut document = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": contents.name(),
        "documentNamespace": format!(
            "https://strata.invalid/spdx/{}/{}/{}", id_safe(&contents.image), id_safe(&contents.stage), contents.layer_key
        ),
        "creationInfo": {
            "created": contents.sealed_at(),
            "creators": [format!("Tool: strata-{}", env!("CARGO_PKG_VERSION"))],
            "comment": format!(
                "What stage {} of {} holds, from the record of its layer {} written when it was sealed.",
                contents.stage, contents.image, contents.layer_key
            ),
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !refs.is_empty() {
        document["hasExtractedLicensingInfos"] = refs
            .into_iter()
            .map(|(id, name)| {
                json!({
                    "licenseId": id,
                    "name": name,
                    "extractedText": format!(
                        "The license the package's metadata names `{name}` (a Debian copyright file's License field, or rpm's LICENSE tag); its text is in the package."
                    ),
                })
            })
            .collect();
    }
    document
}

/// The source image: its URL when it is a network one, its sha256, and what sits on it.
fn root(contents: &Contents) -> Value {
    let source = &contents.source;
    let layers: Vec<String> =
        contents.layers.iter().map(|(stage, key)| format!("{stage} {key}")).collect();
    json!({
        "SPDXID": ROOT,
        "name": source.file_name,
        "downloadLocation": source.download_location().unwrap_or("NOASSERTION"),
        "filesAnalyzed": false,
        "checksums": [{ "algorithm": "SHA256", "checksumValue": source.sha256 }],
        "primaryPackagePurpose": "FILE",
        "sourceInfo": format!("source image of {}: {}", contents.image, source.url),
        "comment": format!(
            "The image stage {} of {} was built on, with its layers on top ({}); the packages are those installed when the last of them was sealed.",
            contents.stage, contents.image, layers.join(", ")
        ),
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    })
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({ "spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to })
}

/// `SPDXRef-Package-NAME-ARCH-HASH`: readable, and unique (the hash covers what the cleaning
/// of the name may have merged).
fn package_id(package: &crate::drift::Package) -> String {
    let digest = Sha256::digest(format!("{}\0{}\0{}", package.name, package.arch, package.version));
    let hash = hex::encode(&digest[..4]);
    let arch = if package.arch.is_empty() {
        String::new()
    } else {
        format!("-{}", id_safe(&package.arch))
    };
    format!("SPDXRef-Package-{}{arch}-{hash}", id_safe(&package.name))
}
