//! `strata export` of the demo, proved by first boots: the demo is built (under TCG here, once
//! for all guest tests: `common/demo.rs`),
//! exported as qcow2 (zstd) for OpenStack and Proxmox, and as qcow2 zlib / uncompressed, raw and
//! vmdk for the numbers; every image passes `qemu-img check`, has no backing file and matches
//! its `.sha256`. Then the OpenStack image boots as Nova would start it (virtio disk, a vfat
//! config drive labelled `config-2` with `openstack/latest/meta_data.json` and `user_data`), and
//! the Proxmox image as a clone of the template the script makes (virtio-scsi disk, a NoCloud
//! drive labelled `cidata` on IDE, as Proxmox's cloudinit drive is). In each, cloud-init applies
//! the new hostname and key, the app answers on /health, no other key is authorized (the build's
//! is gone), the build user takes no key, the machine-id is new, and the guest agent answers.
//! The Proxmox instance then serves `strata drift`'s proofs (`guest_drift`): one boot for both.
//!
//! Ignored by default, run by scripts/test.sh; needs the local base image that
//! `scripts/build-base-image.sh` makes (or `STRATA_BASE_IMAGE_DIR`). Timings go to stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::demo::{BuiltDemo, built_demo};
use common::instance::{Instance, Platform, new_key, nocloud_drive, vfat_image};
use common::{assert_success, parse_events, stages_of};

/// A private copy of the demo built cold (the fixture all guest tests share).
struct Project {
    demo: BuiltDemo,
}

impl Project {
    fn demo() -> Project {
        let demo = built_demo();
        let text = std::fs::read_to_string(demo.definition()).unwrap();
        // The same image with other [export] settings (layer keys do not depend on them).
        for compression in ["zlib", "none"] {
            let variant =
                text.replace("compression = \"zstd\"", &format!("compression = \"{compression}\""));
            assert_ne!(variant, text, "the demo's [export] sets compression = \"zstd\"");
            std::fs::write(demo.path(&format!("images/demo-{compression}.toml")), variant).unwrap();
        }
        Project { demo }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.demo.path(relative)
    }

    fn strata(&self, args: &[&str]) -> Output {
        self.demo.strata().args(["--log-format", "json"]).args(args).output().unwrap()
    }

    /// `strata export`, timed; returns the manifest it wrote.
    fn export(&self, definition: &str, out: &str, args: &[&str]) -> (Value, Duration) {
        let definition = self.path(definition);
        let out = self.path(out);
        let mut all = vec!["export", definition.to_str().unwrap(), "-o", out.to_str().unwrap()];
        all.extend(args);
        let started = Instant::now();
        let output = self.strata(&all);
        let took = started.elapsed();
        assert_success(&output, &format!("strata {all:?}"));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        (manifest, took)
    }
}

/// `qemu-img check` passes (qcow2, vmdk), no backing file, and `sha256sum -c` agrees.
fn check_artifact(dir: &Path, artifact: &Value) {
    let name = artifact["path"].as_str().unwrap();
    let path = dir.join(name);
    let format = artifact["format"].as_str().unwrap();
    if format != "raw" {
        let output = Command::new("qemu-img").arg("check").arg(&path).output().unwrap();
        assert_success(&output, &format!("qemu-img check {name}"));
    }
    let output =
        Command::new("qemu-img").args(["info", "--output=json"]).arg(&path).output().unwrap();
    assert_success(&output, "qemu-img info");
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(info.get("backing-filename").is_none(), "{name} has a backing file: {info}");
    assert_eq!(info["format"], format);
    assert_eq!(info["virtual-size"], artifact["virtual_bytes"]);
    let output = Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.sha256"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert_success(&output, &format!("sha256sum -c {name}.sha256"));
    let line = std::fs::read_to_string(dir.join(format!("{name}.sha256"))).unwrap();
    assert_eq!(
        line.split_whitespace().next(),
        artifact["sha256"].as_str(),
        "the manifest's digest"
    );
}

/// The blkid view of an image: TYPE and LABEL, as cloud-init looks devices up.
fn blkid(path: &Path) -> String {
    let output = Command::new("blkid").args(["-o", "export"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What every first boot must show, whatever the platform.
struct Proof<'a> {
    platform: &'a str,
    hostname: &'a str,
    /// The account the platform put the key on.
    user: &'a str,
    public_key: &'a str,
    datasource: &'a str,
}

/// Checks a booted instance; returns its machine-id.
fn prove(instance: &Instance, proof: &Proof<'_>, build_user: &str, stranger: &Path) -> String {
    let Proof { platform, hostname, user, public_key, datasource } = proof;
    let result: Value =
        serde_json::from_str(&instance.ssh(user, "cat /run/cloud-init/result.json")).unwrap();
    let source = result["v1"]["datasource"].as_str().unwrap_or_default();
    assert!(source.contains(datasource), "{platform}: cloud-init's datasource: {result}");
    assert_eq!(result["v1"]["errors"], json!([]), "{platform}: cloud-init had errors");
    assert_eq!(instance.ssh(user, "hostname"), *hostname, "{platform}: the new hostname");
    let health = instance.ssh(
        user,
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/health', timeout=20).read().decode())\"",
    );
    assert!(health.contains("ok"), "{platform}: GET /health said {health}");
    // Every authorized key of every account is the instance's (root's, with cloud-init's
    // "log in as the default user" options in front); the user's own file holds just it.
    let keys = instance.ssh(
        user,
        "sudo sh -c 'cat /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys 2>/dev/null' || true",
    );
    let keys: Vec<&str> = keys.lines().filter(|line| !line.trim().is_empty()).collect();
    assert!(!keys.is_empty(), "{platform}: no authorized keys at all");
    for line in &keys {
        assert!(line.ends_with(public_key), "{platform}: a key that is not the instance's: {line}");
    }
    assert_eq!(
        instance.ssh(user, "cat ~/.ssh/authorized_keys"),
        *public_key,
        "{platform}: {user}'s keys"
    );
    let refused = instance.ssh_as(build_user, &instance.key, "true");
    assert!(
        !refused.status.success(),
        "{platform}: the build user `{build_user}` must take no key"
    );
    let refused = instance.ssh_as(user, stranger, "true");
    assert!(!refused.status.success(), "{platform}: another key must be refused");
    let machine_id = instance.ssh(user, "cat /etc/machine-id");
    assert!(
        machine_id.len() == 32 && machine_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{platform}: a new machine-id, not {machine_id:?}"
    );
    let host_keys = instance.ssh(user, "ls /etc/ssh/ | grep -c '^ssh_host_.*_key$' || true");
    assert_ne!(host_keys, "0", "{platform}: host keys were made at first boot");
    assert!(instance.agent_answers(), "{platform}: the guest agent answers guest-ping");
    machine_id
}

#[test]
#[ignore = "boots a guest under QEMU: scripts/test.sh runs it"]
fn demo_exports_boot_on_openstack_and_proxmox() {
    let project = Project::demo();
    let definition = project.path("images/demo.toml");

    // The shared fixture built the demo; in this copy of its store every stage is cached.
    let output = project.strata(&["build", definition.to_str().unwrap()]);
    assert_success(&output, "strata build");
    let events = parse_events(&output.stdout);
    assert_eq!(stages_of(&events, "stage_cached"), ["base", "app-base", "final"]);

    // The definition's own export: qcow2 (zstd) for OpenStack and Proxmox.
    let (manifest, took) = project.export("images/demo.toml", "out", &[]);
    let out = project.path("out");
    let artifact = &manifest["artifacts"][0];
    assert_eq!(artifact["compression"], "zstd");
    assert_eq!(manifest["stage"], "final");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);
    assert_eq!(manifest["os_id"], "debian");
    let targets: Vec<&str> = manifest["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["openstack", "proxmox"]);
    let glance: Value =
        serde_json::from_slice(&std::fs::read(out.join("demo-final.openstack.json")).unwrap())
            .unwrap();
    assert_eq!(
        glance["properties"]["hw_qemu_guest_agent"], "yes",
        "the base image has qemu-guest-agent"
    );
    assert_eq!(glance["properties"]["os_distro"], "debian");
    assert_eq!(glance["properties"]["os_version"], "12");
    let script = out.join("demo-final.proxmox.sh");
    assert_success(
        &Command::new("sh").arg("-n").arg(&script).output().unwrap(),
        "sh -n on the Proxmox script",
    );
    let mut numbers = vec![("qcow2 zstd", took, artifact["file_bytes"].as_u64().unwrap())];
    check_artifact(&out, artifact);

    // The other formats and compressions: converted, checked, measured.
    for (definition, dir, args, label) in [
        (
            "images/demo-zlib.toml",
            "out-zlib",
            &["--format", "qcow2", "--target", "generic"],
            "qcow2 zlib",
        ),
        (
            "images/demo-none.toml",
            "out-none",
            &["--format", "qcow2", "--target", "generic"],
            "qcow2 uncompressed",
        ),
        ("images/demo.toml", "out-raw", &["--format", "raw", "--target", "generic"], "raw"),
        ("images/demo.toml", "out-vmdk", &["--format", "vmdk", "--target", "generic"], "vmdk"),
    ] {
        let (manifest, took) = project.export(definition, dir, args);
        let artifact = &manifest["artifacts"][0];
        check_artifact(&project.path(dir), artifact);
        numbers.push((label, took, artifact["file_bytes"].as_u64().unwrap()));
    }
    let raw = project.path("out-raw/demo-final.raw");
    let status = Command::new("qemu-img")
        .args(["compare", "-F", "raw"])
        .arg(out.join("demo-final.qcow2"))
        .arg(&raw)
        .status()
        .unwrap();
    assert!(status.success(), "the zstd qcow2 and the raw image hold the same disk");
    for (label, took, bytes) in &numbers {
        eprintln!(
            "export {label:<18} {:>6.1}s  {:>6.1} MiB",
            took.as_secs_f64(),
            *bytes as f64 / 1048576.0
        );
    }

    boot_proofs(&project.demo, &out);
}

/// Boots `dir/demo-final.qcow2` as an OpenStack and as a Proxmox instance and proves both; the
/// Proxmox instance then serves `strata drift`'s proofs (guest_drift), sharing its boot.
fn boot_proofs(demo: &BuiltDemo, out: &Path) {
    let image = out.join("demo-final.qcow2");
    let work = tempfile::tempdir().unwrap();
    let (stranger, _) = new_key(work.path(), "stranger");

    // OpenStack: a config drive as Nova writes it (vfat, label config-2).
    let os_dir = work.path().join("openstack");
    std::fs::create_dir(&os_dir).unwrap();
    let (_, os_key) = new_key(&os_dir, "instance_key");
    let os_mac = "fa:16:3e:12:34:56";
    let meta_data = json!({
        "uuid": "8d3a6c2e-4b1f-4f5e-9a77-1c2d3e4f5a6b",
        "name": "strata-os-proof",
        "hostname": "strata-os-proof",
        "launch_index": 0,
        "availability_zone": "nova",
        "project_id": "6f1c0a6b2d7e4c4fa1b0a3b9c8d7e6f5",
        "public_keys": { "proof": os_key },
        "keys": [{ "name": "proof", "type": "ssh", "data": os_key }],
        "meta": {},
        "devices": [],
    });
    let network_data = json!({
        "links": [{ "id": "tap0", "vif_id": "0b7c1f7e-3d8a-4e6b-8c4d-2f1e0a9b8c7d", "type": "ovs",
                    "mtu": 1500, "ethernet_mac_address": os_mac }],
        "networks": [{ "id": "network0", "type": "ipv4_dhcp", "link": "tap0",
                       "network_id": "3c9a8b7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d" }],
        "services": [],
    });
    let user_data =
        "#cloud-config\nwrite_files:\n  - path: /etc/strata-proof\n    content: openstack\n";
    let config_drive = os_dir.join("config-drive.img");
    vfat_image(
        &config_drive,
        b"config-2   ",
        &[
            ("openstack/latest/meta_data.json", meta_data.to_string()),
            ("openstack/latest/network_data.json", network_data.to_string()),
            ("openstack/latest/user_data", user_data.to_owned()),
        ],
    );
    let label = blkid(&config_drive);
    assert!(label.contains("LABEL=config-2"), "{label}");
    let mut instance = Instance::boot(&Platform::OpenStack, &image, &config_drive, os_mac, &os_dir);
    let ssh_seconds = instance.wait_ready("debian");
    eprintln!(
        "openstack: ssh after {ssh_seconds:.1}s, cloud-init done after {:.1}s",
        instance.started.elapsed().as_secs_f64()
    );
    let proof = Proof {
        platform: "openstack",
        hostname: "strata-os-proof",
        user: "debian",
        public_key: &os_key,
        datasource: "ConfigDrive",
    };
    let os_machine_id = prove(&instance, &proof, "builder", &stranger);
    assert_eq!(
        instance.ssh("debian", "cat /etc/strata-proof"),
        "openstack",
        "user_data from the config drive ran"
    );
    drop(instance);
    let before = std::fs::read(image.with_extension("qcow2.sha256")).unwrap();
    let status = Command::new("sha256sum")
        .arg("-c")
        .arg("demo-final.qcow2.sha256")
        .current_dir(out)
        .status()
        .unwrap();
    assert!(status.success(), "the artifact is untouched by the boot");

    // Proxmox: the cloudinit drive as Proxmox writes it (NoCloud, label cidata).
    let pve_dir = work.path().join("proxmox");
    std::fs::create_dir(&pve_dir).unwrap();
    let (_, pve_key) = new_key(&pve_dir, "instance_key");
    let pve_mac = "bc:24:11:12:34:57";
    let cidata = pve_dir.join("cloudinit.img");
    nocloud_drive(
        &cidata,
        "strata-pve-proof",
        &pve_key,
        pve_mac,
        "5a1f3e2d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a49",
    );
    let label = blkid(&cidata);
    assert!(label.contains("LABEL=cidata"), "{label}");
    let mut instance = Instance::boot(&Platform::Proxmox, &image, &cidata, pve_mac, &pve_dir);
    let ssh_seconds = instance.wait_ready("debian");
    eprintln!(
        "proxmox: ssh after {ssh_seconds:.1}s, cloud-init done after {:.1}s",
        instance.started.elapsed().as_secs_f64()
    );
    let proof = Proof {
        platform: "proxmox",
        hostname: "strata-pve-proof",
        user: "debian",
        public_key: &pve_key,
        datasource: "NoCloud",
    };
    let pve_machine_id = prove(&instance, &proof, "builder", &stranger);
    // The root file system's disk sits on the virtio-scsi controller, as scsi0 does.
    let root_disk = instance.ssh(
        "debian",
        "readlink -f /sys/block/$(lsblk -no PKNAME \"$(findmnt -no SOURCE /)\" | head -n1)",
    );
    assert!(
        root_disk.contains("/virtio") && root_disk.contains("/host"),
        "proxmox: the root disk is on virtio-scsi: {root_disk}"
    );
    crate::guest_drift::drift_proofs(demo, &instance, &pve_dir);
    drop(instance);
    assert_ne!(os_machine_id, pve_machine_id, "every instance makes its own machine-id");
    assert_eq!(std::fs::read(image.with_extension("qcow2.sha256")).unwrap(), before);
    let status = Command::new("sha256sum")
        .arg("-c")
        .arg("demo-final.qcow2.sha256")
        .current_dir(out)
        .status()
        .unwrap();
    assert!(status.success(), "the artifact is untouched by the boots");
}
