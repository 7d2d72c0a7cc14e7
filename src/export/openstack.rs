//! The OpenStack target: `NAME-STAGE.openstack.json`, the Glance image properties Nova reads
//! (disk bus, firmware, guest agent, OS) and the `openstack image create` command that uploads
//! the image with them. Pure rendering: no I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ImageFacts;
use crate::definition::Firmware;
use crate::process::shell_quote;

/// How Nova attaches the root disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk (`hw_disk_bus=virtio`): what strata's guests boot from while building.
    Virtio,
    /// virtio-scsi (`hw_disk_bus=scsi`, `hw_scsi_model=virtio-scsi`): for discard and many disks.
    Scsi,
}

/// What the `.openstack.json` file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlanceImage {
    pub name: String,
    /// The image file, relative to this file's folder.
    pub file: String,
    pub disk_format: String,
    pub container_format: String,
    /// GiB, rounded up from the virtual size.
    pub min_disk: u64,
    pub sha256: String,
    pub properties: BTreeMap<String, String>,
    /// Run in this file's folder, it uploads the image with its properties.
    pub command: String,
}

/// `os-release` IDs whose Glance `os_distro` value is spelled differently.
fn os_distro(id: &str) -> &str {
    match id {
        "opensuse-leap" | "opensuse-tumbleweed" => "opensuse",
        other => other,
    }
}

/// The Glance properties of the image.
#[must_use]
pub fn properties(facts: &ImageFacts, bus: DiskBus) -> BTreeMap<String, String> {
    let mut properties = BTreeMap::new();
    let mut set = |key: &str, value: &str| {
        properties.insert(key.to_owned(), value.to_owned());
    };
    match bus {
        DiskBus::Virtio => set("hw_disk_bus", "virtio"),
        DiskBus::Scsi => {
            set("hw_disk_bus", "scsi");
            set("hw_scsi_model", "virtio-scsi");
        }
    }
    set("hw_firmware_type", facts.firmware.name());
    if facts.firmware == Firmware::Uefi {
        set("hw_machine_type", "q35");
    }
    set("hw_qemu_guest_agent", if facts.guest_agent { "yes" } else { "no" });
    set("os_type", "linux");
    if let Some(id) = &facts.os_id {
        set("os_distro", os_distro(id));
    }
    if let Some(version) = &facts.os_version {
        set("os_version", version);
    }
    set("strata_layer", &facts.layer_key);
    properties
}

/// The `openstack image create` command line, one option per line.
#[must_use]
pub fn command(image: &GlanceImage) -> String {
    let mut words = vec![
        "openstack image create".to_owned(),
        format!("--disk-format {}", image.disk_format),
        format!("--container-format {}", image.container_format),
        format!("--min-disk {}", image.min_disk),
        format!("--file {}", shell_quote(&image.file)),
    ];
    for (key, value) in &image.properties {
        words.push(format!("--property {}", shell_quote(&format!("{key}={value}"))));
    }
    words.push(shell_quote(&image.name));
    words.join(" \\\n  ")
}

/// The whole `.openstack.json` description.
#[must_use]
pub fn glance_image(facts: &ImageFacts, bus: DiskBus) -> GlanceImage {
    let mut image = GlanceImage {
        name: facts.name.clone(),
        file: facts.file.clone(),
        disk_format: facts.format.name().to_owned(),
        container_format: "bare".to_owned(),
        min_disk: facts.virtual_bytes.div_ceil(1 << 30),
        sha256: facts.sha256.clone(),
        properties: properties(facts, bus),
        command: String::new(),
    };
    image.command = command(&image);
    image
}

/// The file's bytes: pretty JSON and a newline.
pub fn render(facts: &ImageFacts) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = serde_json::to_vec_pretty(&glance_image(facts, DiskBus::Virtio))?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::export::tests::facts;

    #[test]
    fn properties_follow_the_layer_facts() {
        let facts = facts(Firmware::Bios);
        let properties = properties(&facts, DiskBus::Virtio);
        let expected: BTreeMap<String, String> = [
            ("hw_disk_bus", "virtio"),
            ("hw_firmware_type", "bios"),
            ("hw_qemu_guest_agent", "yes"),
            ("os_distro", "debian"),
            ("os_type", "linux"),
            ("os_version", "12"),
            ("strata_layer", "ab12"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        assert_eq!(properties, expected);
    }

    #[test]
    fn uefi_scsi_no_agent_unknown_os() {
        let mut facts = facts(Firmware::Uefi);
        facts.guest_agent = false;
        facts.os_id = Some("opensuse-leap".into());
        facts.os_version = None;
        let properties = properties(&facts, DiskBus::Scsi);
        assert_eq!(properties["hw_disk_bus"], "scsi");
        assert_eq!(properties["hw_scsi_model"], "virtio-scsi");
        assert_eq!(properties["hw_firmware_type"], "uefi");
        assert_eq!(properties["hw_machine_type"], "q35");
        assert_eq!(properties["hw_qemu_guest_agent"], "no");
        assert_eq!(properties["os_distro"], "opensuse");
        assert!(!properties.contains_key("os_version"));
        facts.os_id = None;
        assert!(!super::properties(&facts, DiskBus::Virtio).contains_key("os_distro"));
        assert!(!super::properties(&facts, DiskBus::Virtio).contains_key("hw_scsi_model"));
    }

    #[test]
    fn the_file_holds_the_upload_command() {
        let bytes = render(&facts(Firmware::Bios)).unwrap();
        let image: GlanceImage = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(image.file, "demo-final.qcow2");
        assert_eq!(image.disk_format, "qcow2");
        assert_eq!(image.container_format, "bare");
        assert_eq!(image.min_disk, 4);
        assert_eq!(
            image.command,
            "openstack image create \\\n  --disk-format qcow2 \\\n  --container-format bare \\\n  \
             --min-disk 4 \\\n  --file demo-final.qcow2 \\\n  --property hw_disk_bus=virtio \\\n  \
             --property hw_firmware_type=bios \\\n  --property hw_qemu_guest_agent=yes \\\n  \
             --property os_distro=debian \\\n  --property os_type=linux \\\n  \
             --property os_version=12 \\\n  --property strata_layer=ab12 \\\n  demo-final"
        );
    }

    #[test]
    fn odd_values_are_quoted_for_the_shell() {
        let mut facts = facts(Firmware::Bios);
        facts.os_version = Some("12 (bookworm)".into());
        let image = glance_image(&facts, DiskBus::Virtio);
        assert!(
            image.command.contains("--property 'os_version=12 (bookworm)'"),
            "{}",
            image.command
        );
    }
}
