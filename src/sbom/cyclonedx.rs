//! CycloneDX 1.6 JSON (<https://cyclonedx.org/docs/1.6/json/>). The metadata's component is the
//! source image (sha256, URL); it depends on the operating system, which depends on every
//! package (purl with the architecture, licenses, the source package as properties).

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Contents, id_safe};

const ROOT: &str = "source-image";

pub(super) fn document(contents: &Contents) -> Value {
    let source = &contents.source;
    let root = json!({
        "type": "file",
        "bom-ref": ROOT,
        "name": source.file_name,
        "description": format!(
            "The image stage {} of {} was built on (layers {}); the components are the packages installed when the stage's layer was sealed.",
            contents.stage,
            contents.image,
            contents.layers.iter().map(|(stage, key)| format!("{stage} {key}")).collect::<Vec<_>>().join(", ")
        ),
        "hashes": [{ "alg": "SHA-256", "content": source.sha256 }],
        "externalReferences": [{ "type": "distribution", "url": source.uri() }],
    });
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    let mut package_refs = Vec::new();
    for package in &contents.packages {
        let purl = contents.purl_of(package);
        let reference = purl.clone().unwrap_or_else(|| {
            format!(
                "package-{}-{}-{}",
                id_safe(&package.name),
                id_safe(&package.arch),
                id_safe(&package.version)
            )
        });
        let mut component = json!({
            "type": "library",
            "bom-ref": reference,
            "name": package.name,
            "version": package.version,
        });
        if let Some(purl) = purl {
            component["purl"] = json!(purl);
        }
        if let Some(declared) = super::declared(&package.licenses) {
            component["licenses"] = json!([{ "expression": declared.expression }]);
        }
        let mut properties = Vec::new();
        if !package.arch.is_empty() {
            properties.push(json!({ "name": "strata:arch", "value": package.arch }));
        }
        if let Some(source) = &package.source {
            // Trivy's names for the source package, which it matches advisories by.
            properties.push(json!({ "name": "aquasecurity:trivy:SrcName", "value": source.name }));
            properties
                .push(json!({ "name": "aquasecurity:trivy:SrcVersion", "value": source.version }));
        }
        if !properties.is_empty() {
            component["properties"] = json!(properties);
        }
        dependencies.push(json!({ "ref": reference, "dependsOn": [] }));
        package_refs.push(reference);
        components.push(component);
    }
    let mut top = Vec::new();
    if let Some(id) = &contents.os_id {
        let version = contents.os_version.clone().unwrap_or_default();
        let os_ref =
            format!("os-{}", id_safe(&super::distro(Some(id), Some(&version)).unwrap_or_default()));
        components.insert(0, json!({ "type": "operating-system", "bom-ref": os_ref, "name": id, "version": version }));
        dependencies.insert(0, json!({ "ref": os_ref, "dependsOn": package_refs }));
        top.push(os_ref);
    } else {
        top = package_refs;
    }
    dependencies.insert(0, json!({ "ref": ROOT, "dependsOn": top }));
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial_number(&contents.layer_key),
        "version": 1,
        "metadata": {
            "timestamp": contents.sealed_at(),
            "tools": { "components": [{
                "type": "application",
                "name": "strata",
                "version": env!("CARGO_PKG_VERSION"),
            }] },
            "component": root,
            "properties": [
                { "name": "strata:image", "value": contents.image },
                { "name": "strata:stage", "value": contents.stage },
                { "name": "strata:layer", "value": contents.layer_key },
                { "name": "strata:source_url", "value": source.url },
            ],
        },
        "components": components,
        "dependencies": dependencies,
    })
}

/// A name-based UUID (version 5 layout) from the layer key: the same layer, the same serial.
fn serial_number(layer_key: &str) -> String {
    let digest = Sha256::digest(format!("strata-cyclonedx:{layer_key}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
