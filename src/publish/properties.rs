//! The image Glance is asked to create: its attributes (`disk_format`, `container_format`,
//! `min_disk`, `visibility`…) and properties (what the export's `.openstack.json` says Nova
//! needs, `architecture`, and strata's own `strata_image`, `strata_stage`, `strata_key`,
//! `strata_sha256`), with `--property K=V` overrides checked here. Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::export::openstack::GlanceImage;

/// The properties strata sets and reads back (idempotence, `--keep`): not to be overridden.
pub const STRATA_IMAGE: &str = "strata_image";
pub const STRATA_STAGE: &str = "strata_stage";
pub const STRATA_KEY: &str = "strata_key";
pub const STRATA_SHA256: &str = "strata_sha256";

/// Glance's longest property value (and key).
const MAX_LENGTH: usize = 255;

/// Who may see the image (`--visibility`); Glance's default (`shared`) when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Visibility {
    Private,
    Shared,
    Community,
    Public,
}

impl Visibility {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Shared => "shared",
            Visibility::Community => "community",
            Visibility::Public => "public",
        }
    }
}

/// The disk format uploaded (`--format`): qcow2, or raw for Ceph-backed clouds, whose
/// copy-on-write clones need raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DiskFormat {
    #[default]
    Qcow2,
    Raw,
}

impl DiskFormat {
    #[must_use]
    pub fn export_format(self) -> crate::definition::ExportFormat {
        match self {
            DiskFormat::Qcow2 => crate::definition::ExportFormat::Qcow2,
            DiskFormat::Raw => crate::definition::ExportFormat::Raw,
        }
    }
}

/// One `--property K=V`, checked: a key Glance takes and strata does not own, a value that
/// fits, and the right type for the attributes that are not text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyOverride {
    pub key: String,
    pub value: Value,
}

impl PropertyOverride {
    /// Parses `K=V`; the error says what to do instead.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("`{text}` is not KEY=VALUE"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`{text}` has no key before `=`"));
        }
        if key.len() > MAX_LENGTH || value.len() > MAX_LENGTH {
            return Err(format!(
                "`{key}`: Glance takes keys and values of at most {MAX_LENGTH} bytes"
            ));
        }
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')) {
            return Err(format!("`{key}` is not a property name (letters, digits, _ - . :)"));
        }
        let value = match key {
            STRATA_IMAGE | STRATA_STAGE | STRATA_KEY | STRATA_SHA256 => {
                return Err(format!(
                    "`{key}` is strata's own: a second publish and --keep find images by it"
                ));
            }
            "name" => return Err("the name is --name, not a property".to_owned()),
            "visibility" => return Err("visibility is --visibility, not a property".to_owned()),
            "disk_format" => return Err("the disk format is --format (qcow2 or raw)".to_owned()),
            "container_format" => {
                return Err("container_format is always `bare` for a disk image".to_owned());
            }
            "id" | "status" | "owner" | "checksum" | "size" | "virtual_size" | "os_hash_algo"
            | "os_hash_value" | "created_at" | "updated_at" | "file" | "schema" | "self"
            | "locations" | "direct_url" | "tags" | "stores" => {
                return Err(format!("`{key}` is Glance's to set"));
            }
            "min_disk" | "min_ram" => Value::from(value.trim().parse::<u64>().map_err(|_| {
                format!(
                    "{key} is a whole number (GiB for min_disk, MiB for min_ram), not `{value}`"
                )
            })?),
            "protected" | "os_hidden" => Value::Bool(match value.trim() {
                "true" | "True" | "yes" => true,
                "false" | "False" | "no" => false,
                other => return Err(format!("{key} is true or false, not `{other}`")),
            }),
            _ => Value::String(value.to_owned()),
        };
        Ok(PropertyOverride { key: key.to_owned(), value })
    }
}

/// What strata records about where the image came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub image: String,
    pub stage: String,
    /// The stage's layer key.
    pub key: String,
    /// The uploaded file's sha256.
    pub sha256: String,
}

/// Glance's `architecture` from a Debian or RPM architecture name; `None` when unknown.
#[must_use]
pub fn architecture(package_arch: &str) -> Option<&'static str> {
    match package_arch {
        "amd64" | "x86_64" => Some("x86_64"),
        "arm64" | "aarch64" => Some("aarch64"),
        "i386" | "i686" => Some("i686"),
        "ppc64el" | "ppc64le" => Some("ppc64le"),
        "s390x" => Some("s390x"),
        "riscv64" => Some("riscv64"),
        _ => None,
    }
}

/// The body of `POST /v2/images`: the export's description, strata's properties, the
/// architecture, then the overrides (last wins).
#[must_use]
pub fn create_body(
    export: &GlanceImage,
    origin: &Origin,
    architecture: Option<&str>,
    name: &str,
    visibility: Option<Visibility>,
    overrides: &[PropertyOverride],
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("name".into(), Value::from(name));
    body.insert("disk_format".into(), Value::from(export.disk_format.clone()));
    body.insert("container_format".into(), Value::from(export.container_format.clone()));
    body.insert("min_disk".into(), Value::from(export.min_disk));
    if let Some(visibility) = visibility {
        body.insert("visibility".into(), Value::from(visibility.name()));
    }
    for (key, value) in &export.properties {
        body.insert(key.clone(), Value::from(value.clone()));
    }
    if let Some(architecture) = architecture {
        body.insert("architecture".into(), Value::from(architecture));
    }
    let strata: BTreeMap<&str, &str> = [
        (STRATA_IMAGE, origin.image.as_str()),
        (STRATA_STAGE, origin.stage.as_str()),
        (STRATA_KEY, origin.key.as_str()),
        (STRATA_SHA256, origin.sha256.as_str()),
    ]
    .into();
    for (key, value) in strata {
        body.insert(key.to_owned(), Value::from(value));
    }
    for property in overrides {
        body.insert(property.key.clone(), property.value.clone());
    }
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::definition::Firmware;
    use crate::export::openstack::{DiskBus, glance_image};
    use crate::export::tests::facts;

    fn origin() -> Origin {
        Origin {
            image: "demo".into(),
            stage: "final".into(),
            key: "ab12".into(),
            sha256: "cd".repeat(32),
        }
    }

    #[test]
    fn the_body_has_every_property_the_issue_lists() {
        let export = glance_image(&facts(Firmware::Uefi), DiskBus::Virtio);
        let body = create_body(&export, &origin(), Some("x86_64"), "demo-final", None, &[]);
        let expected = serde_json::json!({
            "name": "demo-final", "disk_format": "qcow2", "container_format": "bare",
            "min_disk": 4, "hw_disk_bus": "virtio", "hw_firmware_type": "uefi",
            "hw_machine_type": "q35", "hw_qemu_guest_agent": "yes", "os_type": "linux",
            "os_distro": "debian", "os_version": "12", "architecture": "x86_64",
            "strata_layer": "ab12", "strata_image": "demo", "strata_stage": "final",
            "strata_key": "ab12", "strata_sha256": "cd".repeat(32),
        });
        assert_eq!(Value::Object(body), expected);
    }

    #[test]
    fn overrides_win_and_typed_attributes_are_typed() {
        let export = glance_image(&facts(Firmware::Bios), DiskBus::Virtio);
        let overrides: Vec<PropertyOverride> = [
            "hw_disk_bus=scsi",
            "hw_scsi_model=virtio-scsi",
            "min_disk=20",
            "protected=true",
            "note=a=b",
        ]
        .iter()
        .map(|text| PropertyOverride::parse(text).unwrap())
        .collect();
        let body =
            create_body(&export, &origin(), None, "web", Some(Visibility::Community), &overrides);
        assert_eq!(body["hw_disk_bus"], "scsi");
        assert_eq!(body["hw_scsi_model"], "virtio-scsi");
        assert_eq!(body["min_disk"], 20);
        assert_eq!(body["protected"], true);
        assert_eq!(body["note"], "a=b");
        assert_eq!(body["visibility"], "community");
        assert_eq!(body["hw_firmware_type"], "bios");
        assert!(!body.contains_key("architecture"));
    }

    #[test]
    fn overrides_that_would_break_publishing_are_refused() {
        for (text, expected) in [
            ("strata_key=x", "strata's own"),
            ("name=x", "--name"),
            ("disk_format=raw", "--format"),
            ("visibility=public", "--visibility"),
            ("os_hash_value=00", "Glance's to set"),
            ("min_disk=big", "whole number"),
            ("protected=maybe", "true or false"),
            ("noequals", "not KEY=VALUE"),
            ("=v", "no key"),
            ("bad key=v", "not a property name"),
        ] {
            let error = PropertyOverride::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let long = format!("k={}", "v".repeat(256));
        assert!(PropertyOverride::parse(&long).unwrap_err().contains("at most 255"));
    }

    #[test]
    fn architectures_are_glance_s_names() {
        assert_eq!(architecture("amd64"), Some("x86_64"));
        assert_eq!(architecture("arm64"), Some("aarch64"));
        assert_eq!(architecture("all"), None);
    }
}
