//! `strata publish` against a real Keystone and Glance (from PyPI, on loopback, started by the
//! test: `common/openstack.rs`), with the demo built once for all guest tests
//! (`common/demo.rs`). Proved as a user would: `openstack image show` (python-openstackclient)
//! shows the image active with every property; the image downloaded back matches Glance's
//! `os_hash_value` and boots as a new instance (a config drive as Nova writes it) that serves
//! the app; a second publish uploads nothing; a wrong password exits 1 naming the cloud and the
//! user, printing no secret, leaving no image; an upload stopped by SIGTERM deletes its image,
//! one killed by SIGKILL halfway is deleted by the next run, which succeeds; `--keep 1` after an
//! app change leaves exactly the new image, and never deletes a protected one.
//!
//! One test, so that Keystone and Glance start once (about 30 s under load): the interrupted
//! uploads come first, and the run that cleans up after them is the publish every later part
//! checks.
//!
//! Run with `--ignored` under the guest lock (the demo's build and the boot start QEMU), after
//! `scripts/install-test-venv.sh`. Timings go to stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use common::demo::{BuiltDemo, built_demo};
use common::instance::{Instance, Platform, new_key, vfat_image};
use common::openstack::OpenStack;
use common::{assert_success, named, parse_events, stderr};

const WRONG_PASSWORD: &str = "not-the-password-7f3a";

fn publish_args<'a>(demo: &'a BuiltDemo, out: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = ["--log-format", "json", "publish"].map(String::from).to_vec();
    args.push(demo.definition().display().to_string());
    args.extend(["--to", "openstack", "--cloud", "member", "-o"].map(String::from));
    args.push(out.display().to_string());
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

fn publish(cloud: &OpenStack, demo: &BuiltDemo, out: &Path, extra: &[&str]) -> Output {
    cloud.strata(&demo.store()).args(publish_args(demo, out, extra)).output().unwrap()
}

/// The one `published` event of a successful run.
fn published(output: &Output) -> Value {
    assert_success(output, "strata publish");
    let events = parse_events(&output.stdout);
    let published = named(&events, "published");
    assert_eq!(published.len(), 1, "one published event: {events:?}");
    published[0].clone()
}

fn file_sha512(path: &Path) -> String {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha512::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).unwrap();
        if n == 0 {
            return hex::encode(hasher.finalize());
        }
        hasher.update(&buffer[..n]);
    }
}

fn manifest(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

#[test]
#[ignore = "boots a guest: run by scripts/test.sh"]
fn publishes_the_demo_after_interrupted_uploads_and_it_boots_back_from_glance() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    // One Keystone and Glance for every part. Uploads go through a proxy at 2 MiB/s at first:
    // the upload of the demo (140+ MiB) takes over a minute, long enough to stop it halfway
    // even on a loaded machine.
    let cloud = OpenStack::start_throttled(2 << 20);
    let demo = built_demo();
    let out = demo.path("out");

    // A wrong password: exit 1, the cloud and the user named, no secret shown, no image.
    let output = cloud
        .strata(&demo.store())
        .args(publish_args(&demo, &out, &[]))
        .env("OS_PASSWORD", WRONG_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "a wrong password exits 1: {}", stderr(&output));
    let shown = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
    assert!(shown.contains("cloud `member`"), "the cloud is named: {shown}");
    assert!(shown.contains("user `member`"), "the user is named: {shown}");
    assert!(!shown.contains(WRONG_PASSWORD), "the password given is not shown: {shown}");
    assert!(!shown.contains(&cloud.member_password), "clouds.yaml's is not shown: {shown}");
    assert!(cloud.all_images().is_empty(), "no image is left: {:?}", cloud.all_images());

    // SIGTERM halfway: strata deletes the image it created, then exits 143.
    let (mut child, _) = publish_until_progress(&cloud, &demo, &out, 16 << 20);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "SIGTERM exits 143");
    assert!(cloud.all_images().is_empty(), "no image after SIGTERM: {:?}", cloud.all_images());

    // SIGKILL halfway: nothing can clean up; the image stays unfinished…
    let (mut child, _) = publish_until_progress(&cloud, &demo, &out, 16 << 20);
    child.kill().unwrap();
    child.wait().unwrap();
    let left = statuses(&cloud);
    assert_eq!(left.len(), 1, "the killed upload's image: {left:?}");
    assert_ne!(left[0], "active");

    // …and the next run, at full speed, deletes it and succeeds: the real publish.
    cloud.throttle.as_ref().unwrap().store(0, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let output = publish(&cloud, &demo, &out, &[]);
    let took = started.elapsed().as_secs_f64();
    let event = published(&output);
    let events = parse_events(&output.stdout);
    let deleted = named(&events, "publish_image_deleted");
    assert_eq!(deleted.len(), 1, "{events:?}");
    assert_eq!(deleted[0]["reason"], "leftover");
    let images = cloud.all_images();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["ID"], event["id"]);
    assert_eq!(images[0]["Status"], "active");
    assert_eq!(event["reused"], false);
    let exported = manifest(&out);
    let artifact = &exported["artifacts"][0];
    let file = out.join(artifact["path"].as_str().unwrap());
    assert_eq!(event["bytes"], artifact["file_bytes"], "the whole file was sent");
    assert_eq!(named(&events, "publish_started").len(), 1);
    let progress = named(&events, "publish_progress");
    assert!(!progress.is_empty(), "progress was reported");
    assert_eq!(progress.last().unwrap()["done_bytes"], artifact["file_bytes"]);
    let id = event["id"].as_str().unwrap().to_owned();
    eprintln!(
        "publish (export + upload of {:.1} MiB): {took:.1}s, of which the publish itself {:.1}s",
        artifact["file_bytes"].as_f64().unwrap() / 1048576.0,
        event["seconds"].as_f64().unwrap()
    );

    // As a user sees it: `openstack image show`.
    let show = cloud.openstack_json("member", &["image", "show", &id]);
    assert_eq!(show["status"], "active", "{show}");
    assert_eq!(show["name"], "demo-final");
    assert_eq!(show["disk_format"], "qcow2");
    assert_eq!(show["container_format"], "bare");
    let virtual_gib = artifact["virtual_bytes"].as_u64().unwrap().div_ceil(1 << 30);
    assert_eq!(show["min_disk"], virtual_gib, "{show}");
    let properties = &show["properties"];
    let layer_key = exported["layers"].as_array().unwrap().last().unwrap()["key"].clone();
    for (key, value) in [
        ("hw_disk_bus", json!("virtio")),
        ("hw_firmware_type", json!("bios")),
        ("hw_qemu_guest_agent", json!("yes")),
        ("os_distro", json!("debian")),
        ("os_version", json!("12")),
        ("os_type", json!("linux")),
        ("architecture", json!("x86_64")),
        ("strata_image", json!("demo")),
        ("strata_stage", json!("final")),
        ("strata_key", layer_key.clone()),
        ("strata_sha256", artifact["sha256"].clone()),
        ("os_hash_algo", json!("sha512")),
    ] {
        assert_eq!(properties[key], value, "property {key}: {show}");
    }
    let os_hash = properties["os_hash_value"].as_str().unwrap().to_owned();
    assert_eq!(os_hash, file_sha512(&file), "Glance's sha512 is the file's");

    // Again: nothing is uploaded, the same image is reported.
    let again = published(&publish(&cloud, &demo, &out, &[]));
    assert_eq!(again["reused"], true);
    assert_eq!(again["bytes"], 0);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(cloud.all_images().len(), 1, "still one image");

    // Downloaded back, it is the file, and it boots as a new instance that serves the app.
    let work = tempfile::tempdir().unwrap();
    let downloaded = work.path().join("downloaded.qcow2");
    let output =
        cloud.openstack("member", &["image", "save", "--file", downloaded.to_str().unwrap(), &id]);
    assert_success(&output, "openstack image save");
    assert_eq!(file_sha512(&downloaded), os_hash, "the download matches os_hash_value");
    boot_and_serve(&downloaded, work.path());

    // The app changes; the old image is protected: --keep 1 keeps it anyway, with a warning.
    let script = demo.path("scripts/install-app.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, format!("{text}\n# a change to the app's install\n")).unwrap();
    let started = Instant::now();
    let output = demo
        .strata()
        .args(["--log-format", "json", "build"])
        .arg(demo.definition())
        .output()
        .unwrap();
    assert_success(&output, "strata build after the app change");
    eprintln!("app-only rebuild: {:.1}s", started.elapsed().as_secs_f64());
    let output = cloud.openstack("admin", &["image", "set", "--protected", &id]);
    assert_success(&output, "openstack image set --protected");
    let output = publish(&cloud, &demo, &out, &["--keep", "1"]);
    let second = published(&output);
    assert_eq!(second["reused"], false, "a new layer is a new image");
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_ne!(second_id, id);
    let events = parse_events(&output.stdout);
    assert!(named(&events, "publish_image_deleted").is_empty(), "a protected image stays");
    let warnings: Vec<String> =
        named(&events, "warning").iter().map(|w| w["message"].to_string()).collect();
    assert!(warnings.iter().any(|w| w.contains(&id) && w.contains("protected")), "{warnings:?}");
    assert_eq!(cloud.all_images().len(), 2);

    // Unprotected, it goes: exactly the new image is left.
    let output = cloud.openstack("admin", &["image", "set", "--unprotected", &id]);
    assert_success(&output, "openstack image set --unprotected");
    let output = publish(&cloud, &demo, &out, &["--keep", "1"]);
    let third = published(&output);
    assert_eq!(third["reused"], true);
    assert_eq!(third["id"], second_id.as_str());
    let events = parse_events(&output.stdout);
    let deleted = named(&events, "publish_image_deleted");
    assert_eq!(deleted.len(), 1, "{events:?}");
    assert_eq!(
        (deleted[0]["id"].as_str(), deleted[0]["reason"].as_str()),
        (Some(id.as_str()), Some("rotation"))
    );
    let images = cloud.all_images();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["ID"], second_id.as_str());
    let show = cloud.openstack_json("member", &["image", "show", &second_id]);
    assert_ne!(show["properties"]["strata_key"], layer_key, "the new image is the new layer's");
    assert_eq!(
        show["properties"]["strata_key"],
        manifest(&out)["layers"].as_array().unwrap().last().unwrap()["key"]
    );
}

/// Boots `image` as Nova would (virtio disk, a config drive labelled config-2) and checks that
/// cloud-init took the instance's key and the app answers on /health.
fn boot_and_serve(image: &Path, work: &Path) {
    let dir = work.join("instance");
    std::fs::create_dir(&dir).unwrap();
    let (_, key) = new_key(&dir, "instance_key");
    let mac = "fa:16:3e:22:33:44";
    let meta_data = json!({
        "uuid": "5b0f7c1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b",
        "name": "strata-published", "hostname": "strata-published", "launch_index": 0,
        "availability_zone": "nova", "project_id": "strata",
        "public_keys": { "proof": key }, "keys": [{ "name": "proof", "type": "ssh", "data": key }],
        "meta": {}, "devices": [],
    });
    let network_data = json!({
        "links": [{ "id": "tap0", "vif_id": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "type": "ovs",
                    "mtu": 1500, "ethernet_mac_address": mac }],
        "networks": [{ "id": "network0", "type": "ipv4_dhcp", "link": "tap0",
                       "network_id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e" }],
        "services": [],
    });
    let drive = dir.join("config-drive.img");
    vfat_image(
        &drive,
        b"config-2   ",
        &[
            ("openstack/latest/meta_data.json", meta_data.to_string()),
            ("openstack/latest/network_data.json", network_data.to_string()),
            ("openstack/latest/user_data", "#cloud-config\n{}\n".to_owned()),
        ],
    );
    let mut instance = Instance::boot(&Platform::OpenStack, image, &drive, mac, &dir);
    let ssh_seconds = instance.wait_ready("debian");
    eprintln!("the image from Glance: ssh after {ssh_seconds:.1}s");
    assert_eq!(instance.ssh("debian", "hostname"), "strata-published");
    let health = instance.ssh(
        "debian",
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/health', timeout=20).read().decode())\"",
    );
    assert!(health.contains("ok"), "GET /health said {health}");
}

/// Starts `strata publish` with its events on a pipe, and reads them until an upload's
/// progress passes `bytes`; returns the child (still uploading) and the events read.
#[allow(clippy::zombie_processes)] // the caller signals and waits for the child it gets
fn publish_until_progress(
    cloud: &OpenStack,
    demo: &BuiltDemo,
    out: &Path,
    bytes: u64,
) -> (Child, Vec<Value>) {
    let mut child = cloud
        .strata(&demo.store())
        .args(publish_args(demo, out, &[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut events = Vec::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).unwrap();
        if read == 0 {
            let status = child.wait().unwrap();
            panic!("strata ended ({status}) before uploading {bytes} bytes: {events:?}");
        }
        let event: Value = serde_json::from_str(&line).unwrap();
        let done =
            event["event"] == "publish_progress" && event["done_bytes"].as_u64() >= Some(bytes);
        events.push(event);
        if done {
            // Keep draining stdout so strata never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return (child, events);
        }
    }
}

fn statuses(cloud: &OpenStack) -> Vec<String> {
    cloud.all_images().iter().map(|image| image["Status"].as_str().unwrap().to_owned()).collect()
}
