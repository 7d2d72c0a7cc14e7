//! The Proxmox VE target: `NAME-STAGE.proxmox.sh`, a POSIX shell script that turns the exported
//! image into a cloud-init-ready template (`qm create`, `qm disk import`, `qm set`,
//! `qm template`), parameterised by VM id, storage and bridge. Pure rendering: no I/O here.

use super::ImageFacts;
use crate::definition::Firmware;
use crate::process::shell_quote;

/// The script's bytes.
#[must_use]
pub fn render(facts: &ImageFacts) -> String {
    let file = shell_quote(&facts.file);
    let name = shell_quote(&facts.name);
    let agent = if facts.guest_agent { "enabled=1,fstrim_cloned_disks=1" } else { "enabled=0" };
    let firmware = match facts.firmware {
        Firmware::Bios => String::new(),
        Firmware::Uefi => " \\\n  --bios ovmf --machine q35 \
                           --efidisk0 \"$STORAGE:1,efitype=4m,pre-enrolled-keys=0\""
            .to_owned(),
    };
    let os = match (&facts.os_id, &facts.os_version) {
        (Some(id), Some(version)) => format!("{id} {version}"),
        (Some(id), None) => id.clone(),
        _ => "Linux".to_owned(),
    };
    format!(
        r#"#!/bin/sh
# {name_plain}.proxmox.sh: makes a cloud-init-ready Proxmox VE template from {file_plain}
# ({os}, {firmware_name} firmware), stage `{stage}` of image `{image}`, layer {key},
# exported by strata {version}.
#
# Run it as root on a Proxmox VE node (7.2 or later), next to {file_plain}:
#   sh {name_plain}.proxmox.sh [VMID [STORAGE [BRIDGE]]]
# VMID defaults to 9000, STORAGE to local-lvm, BRIDGE to vmbr0 (or set them in the environment).
# Then make machines from the template, e.g.:
#   qm clone 9000 101 --name web1 --full
#   qm set 101 --sshkeys ~/.ssh/id_ed25519.pub --ciuser admin
#   qm start 101
set -eu
VMID="${{1:-${{VMID:-9000}}}}"
STORAGE="${{2:-${{STORAGE:-local-lvm}}}}"
BRIDGE="${{3:-${{BRIDGE:-vmbr0}}}}"
cd "$(dirname "$0")"
sha256sum -c {file}.sha256

qm create "$VMID" --name {name} --ostype l26 \
  --cores {cpus} --memory {memory} \
  --net0 "virtio,bridge=$BRIDGE" \
  --scsihw virtio-scsi-pci \
  --serial0 socket --vga serial0 \
  --agent {agent}{firmware}
qm disk import "$VMID" {file} "$STORAGE"
disk=$(qm config "$VMID" | sed -n 's/^unused0: *//p')
if [ -z "$disk" ]; then
  echo "{name_plain}.proxmox.sh: qm disk import left no unused0 disk on VM $VMID" >&2
  exit 1
fi
qm set "$VMID" --scsi0 "$disk,discard=on" --boot order=scsi0 \
  --ide2 "$STORAGE:cloudinit" --ipconfig0 ip=dhcp
qm template "$VMID"
echo "VM $VMID is a template now: qm clone $VMID NEWID --name NAME --full"
"#,
        name_plain = facts.name,
        file_plain = facts.file,
        firmware_name = facts.firmware.name(),
        stage = facts.stage,
        image = facts.image,
        key = facts.layer_key,
        version = facts.strata_version,
        cpus = facts.cpus,
        memory = facts.memory_mib,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;
    use crate::export::tests::facts;

    #[test]
    fn bios_script_builds_a_cloud_init_template() {
        let script = render(&facts(Firmware::Bios));
        for expected in [
            "qm create \"$VMID\" --name demo-final --ostype l26",
            "--cores 2 --memory 1024",
            "--scsihw virtio-scsi-pci",
            "--serial0 socket --vga serial0",
            "--agent enabled=1,fstrim_cloned_disks=1\n",
            "qm disk import \"$VMID\" demo-final.qcow2 \"$STORAGE\"",
            "--scsi0 \"$disk,discard=on\" --boot order=scsi0",
            "--ide2 \"$STORAGE:cloudinit\"",
            "qm template \"$VMID\"",
            "sha256sum -c demo-final.qcow2.sha256",
        ] {
            assert!(script.contains(expected), "missing {expected:?} in:\n{script}");
        }
        assert!(!script.contains("ovmf"), "{script}");
        assert!(!script.contains("efidisk0"), "{script}");
    }

    #[test]
    fn uefi_script_adds_ovmf_and_an_efi_disk() {
        let mut facts = facts(Firmware::Uefi);
        facts.guest_agent = false;
        let script = render(&facts);
        assert!(script.contains("--bios ovmf --machine q35"), "{script}");
        assert!(
            script.contains("--efidisk0 \"$STORAGE:1,efitype=4m,pre-enrolled-keys=0\""),
            "{script}"
        );
        assert!(script.contains("--agent enabled=0"), "{script}");
    }

    /// Runs the script for real with a stand-in `qm` that records its arguments and answers
    /// `qm config` as Proxmox does after an import: the script's flow, quoting and parameters.
    #[test]
    fn the_script_runs_with_its_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("qm.log");
        let qm = bin.join("qm");
        std::fs::write(
            &qm,
            format!(
                "#!/bin/sh\necho \"$*\" >>{}\n[ \"$1\" = config ] && echo 'unused0: tank:vm-123-disk-0'\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&qm, std::fs::Permissions::from_mode(0o755)).unwrap();
        let image = dir.path().join("demo-final.qcow2");
        std::fs::write(&image, b"not really an image").unwrap();
        let (sha256, _, _) = crate::layer::hash_file(&image).unwrap();
        std::fs::write(
            dir.path().join("demo-final.qcow2.sha256"),
            format!("{sha256}  demo-final.qcow2\n"),
        )
        .unwrap();
        let script = dir.path().join("demo-final.proxmox.sh");
        std::fs::write(&script, render(&facts(Firmware::Uefi))).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let output = Command::new("sh")
            .arg(&script)
            .args(["123", "tank"])
            .current_dir("/")
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let calls = std::fs::read_to_string(&log).unwrap();
        let calls: Vec<&str> = calls.lines().collect();
        assert_eq!(calls.len(), 5, "{calls:#?}");
        assert!(calls[0].starts_with("create 123 --name demo-final"), "{}", calls[0]);
        assert!(calls[0].contains("--net0 virtio,bridge=vmbr0"), "{}", calls[0]);
        assert!(calls[0].contains("--efidisk0 tank:1,efitype=4m"), "{}", calls[0]);
        assert_eq!(calls[1], "disk import 123 demo-final.qcow2 tank");
        assert_eq!(calls[2], "config 123");
        assert_eq!(
            calls[3],
            "set 123 --scsi0 tank:vm-123-disk-0,discard=on --boot order=scsi0 --ide2 tank:cloudinit --ipconfig0 ip=dhcp"
        );
        assert_eq!(calls[4], "template 123");

        // A damaged image stops the script before anything is created.
        std::fs::write(&image, b"changed").unwrap();
        std::fs::remove_file(&log).unwrap();
        let output = Command::new("sh")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(!log.exists(), "qm ran although the checksum failed");
    }
}
