//! Builds real guests under QEMU (TCG here, KVM where it works): the demo's layered build from
//! cold in one boot (the build all guest tests share, `common/demo.rs`), the cache, partial
//! rebuilds resuming a saved guest, every layer a clean template (read offline from its disk),
//! and a layer cut from a running guest booting with a fresh seed from a moved store. (A
//! restore point saved under other machine settings is refused: `stage::restore`'s unit tests.)
//! Faults live in `guest_faults.rs`, screens in `guest_screen.rs`.
//!
//! Each boot costs about a minute under TCG, so the checks share boots. They are ignored
//! by default (scripts/test.sh runs them) and need the local base image that
//! `scripts/build-base-image.sh` makes (or `STRATA_BASE_IMAGE_DIR`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::demo::{BuiltDemo, built_demo};
use common::{assert_success, named, parse_events, stages_of, stderr};

/// A private copy of the demo built cold (the fixture all guest tests share).
struct Project {
    demo: BuiltDemo,
    store: PathBuf,
}

impl Project {
    fn demo() -> Project {
        let demo = built_demo();
        Project { store: demo.store(), demo }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.demo.path(relative)
    }

    fn strata(&self) -> Command {
        self.demo.strata()
    }

    /// Runs strata with JSON events; returns the output and the parsed events.
    fn run_json(&self, args: &[&str]) -> (Output, Vec<Value>) {
        let output = self.strata().arg("--log-format").arg("json").args(args).output().unwrap();
        let events = parse_events(&output.stdout);
        (output, events)
    }
}

fn layer_dirs(store: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(store.join("layers")).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs
}

/// `qemu-img info --backing-chain` of a disk, as JSON.
fn backing_chain(disk: &Path) -> Vec<Value> {
    let output = Command::new("qemu-img")
        .args(["info", "-U", "--backing-chain", "--output=json"])
        .arg(disk)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A `strata run` VM: started, waited for, and stopped with Ctrl-C.
struct RunningVm {
    child: Child,
    ready: Value,
}

impl RunningVm {
    fn start(project: &Project, store: &Path, stage: &str) -> RunningVm {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--store")
            .arg(store)
            .args(["--log-format", "json", "run"])
            .arg(project.path("images/demo.toml"))
            .args(["--stage", stage])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut ready = None;
        for line in BufReader::new(stdout).lines() {
            let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if event["event"] == "vm_ready" {
                ready = Some(event);
                break;
            }
        }
        let ready = ready.unwrap_or_else(|| {
            panic!("strata run ended before the VM was ready: {:?}", child.wait())
        });
        RunningVm { child, ready }
    }

    /// Runs a command in the VM with the host's own ssh client, as a user would.
    fn ssh(&self, command: &str) -> Output {
        let words: Vec<String> =
            self.ready["ssh_command"].as_str().unwrap().split(' ').map(String::from).collect();
        Command::new(&words[0])
            .args(&words[1..])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=30",
            ])
            .arg(command)
            .output()
            .unwrap()
    }

    fn ssh_ok(&self, command: &str) -> String {
        let output = self.ssh(command);
        assert!(output.status.success(), "`{command}` failed in the VM: {}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "strata run should stop cleanly on Ctrl-C: {status:?}");
    }
}

#[test]
#[ignore = "boots a guest under QEMU: scripts/test.sh runs it"]
fn demo_builds_in_layers_caches_and_rebuilds_only_what_changed() {
    let project = Project::demo();
    let definition = project.path("images/demo.toml");
    let definition = definition.to_str().unwrap();

    // Cold (the shared fixture's one build): three stages built, each a layer.
    let events = project.demo.cold_events.clone();
    assert_eq!(stages_of(&events, "layer_committed"), ["base", "app-base", "final"]);
    assert_eq!(named(&events, "qemu_started").len(), 1, "one boot for the whole cold build");
    // strata's built-in seed boots the image cleanly: cloud-init finished without recoverable
    // errors (they would be a warning), and nothing else was worth one.
    assert!(named(&events, "warning").is_empty(), "{:?}", named(&events, "warning"));
    for ready in named(&events, "communicator_ready") {
        eprintln!("{}: ssh ready after {:.1}s", ready["stage"], ready["seconds"].as_f64().unwrap());
    }
    let layers = layer_dirs(&project.store);
    assert_eq!(layers.len(), 3);
    // The source's first boot was saved before base's first step, for later first stages.
    let first_boot: Vec<&Value> =
        named(&events, "restore_saved").into_iter().filter(|e| e["first_boot"] == true).collect();
    assert_eq!(first_boot.len(), 1, "{first_boot:?}");
    assert_eq!(first_boot[0]["stage"], "base");
    assert_eq!(std::fs::read_dir(project.store.join("boots")).unwrap().count(), 1);
    let boots = project.demo.layers_json(Path::new(definition))["first_boots"].clone();
    assert_eq!(boots.as_array().map(Vec::len), Some(1), "strata layers shows it: {boots}");
    assert!(boots[0]["restore_bytes"].as_u64().unwrap() > 0);

    // The final layer's chain: final -> app-base -> base -> source, every link relative.
    let final_key = named(&events, "layer_committed")[2]["key"].as_str().unwrap().to_owned();
    let final_disk = project.store.join("layers").join(&final_key).join("disk.qcow2");
    let chain = backing_chain(&final_disk);
    assert_eq!(chain.len(), 4, "{chain:#?}");
    for link in &chain[..3] {
        let backing = link["backing-filename"].as_str().unwrap();
        assert!(backing.starts_with("../../"), "backing file {backing} is relative");
        assert_eq!(link["backing-filename-format"], "qcow2");
    }
    assert!(chain[3]["filename"].as_str().unwrap().contains("/sources/sha256-"));
    // Layers are sparse: what one takes on disk is reported, besides its file's length. Read in
    // the store the build wrote: a copy's allocation is the copying tool's.
    for committed in named(&events, "layer_committed") {
        let key = committed["key"].as_str().unwrap();
        let layer_dir = project.demo.fixture_store.join("layers").join(key);
        let disk = std::fs::metadata(layer_dir.join("disk.qcow2"));
        let disk = disk.unwrap();
        assert_eq!(committed["bytes"], disk.len());
        assert_eq!(committed["allocated_bytes"], disk.blocks() * 512);
        assert!(disk.blocks() * 512 < disk.len(), "{committed}");
    }
    for layer in &layers {
        let size = std::fs::metadata(layer.join("disk.qcow2")).unwrap().len();
        let metadata: Value =
            serde_json::from_slice(&std::fs::read(layer.join("layer.json")).unwrap()).unwrap();
        eprintln!(
            "layer {}: {size} bytes, {} packages",
            metadata["stage"],
            metadata["packages"].as_array().unwrap().len()
        );
        assert_eq!(metadata["os_id"], "debian");
    }

    // Warm: nothing to build, well under a second of work.
    let started = Instant::now();
    let (output, events) = project.run_json(&["build", definition]);
    let warm = started.elapsed();
    assert_success(&output, "strata");
    eprintln!("cached build: {:.3}s", warm.as_secs_f64());
    assert_eq!(stages_of(&events, "stage_cached"), ["base", "app-base", "final"]);
    assert!(named(&events, "stage_started").is_empty());
    assert!(warm < Duration::from_secs(3), "a fully cached build took {warm:?}");

    let original_toml = std::fs::read_to_string(project.path("images/demo.toml")).unwrap();

    // The app changed: only final is built again, resuming app-base's saved guest. The first
    // time, the step also ends the seal command the resume started ahead (as a reboot step
    // would): the seal starts a fresh one.
    let script = project.path("scripts/install-app.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let ends_standby = "pkill -f 'echo standing-by' || true";
    for change in
        [format!("{text}\n{ends_standby}\n"), format!("{text}\n# a change to the app's install\n")]
    {
        std::fs::write(&script, change).unwrap();
        let started = Instant::now();
        let (output, events) = project.run_json(&["build", definition]);
        assert_success(&output, "strata");
        eprintln!("app-only rebuild, warm: {:.1}s", started.elapsed().as_secs_f64());
        assert_eq!(stages_of(&events, "stage_cached"), ["base", "app-base"]);
        assert_eq!(stages_of(&events, "layer_committed"), ["final"]);
        // It resumed app-base's saved guest: no boot, no cloud-init run.
        assert_eq!(stages_of(&events, "restore_resumed"), ["final"], "{}", stderr(&output));
        assert!(named(&events, "cloud_init_done").is_empty(), "a resumed guest does not boot");
        let console =
            std::fs::read_to_string(log_dir(&events).join("final/console.log")).unwrap_or_default();
        assert!(!console.contains("Linux version"), "the kernel did not start again:\n{console}");
    }

    // The hardening changed: every stage's key changes, and all three are built again with no
    // boot, from the source's first boot the cold build saved (`boots/`).
    let harden = project.path("scripts/harden.sh");
    let original_harden = std::fs::read_to_string(&harden).unwrap();
    std::fs::write(&harden, format!("{original_harden}\n# stricter\n")).unwrap();
    assert_eq!(project.demo.cached_stages(Path::new(definition)), [false, false, false]);
    let started = Instant::now();
    let (output, events) = project.run_json(&["build", definition]);
    assert_success(&output, "strata");
    eprintln!(
        "base-change rebuild of all three stages, from the first boot: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(stages_of(&events, "layer_committed"), ["base", "app-base", "final"]);
    assert_resumed_first_boot(&events, "base", &output);
    let final_key = named(&events, "layer_committed")[2]["key"].as_str().unwrap().to_owned();

    // Another definition on the same source: its first layer is made with no boot either. Its
    // step draws random bytes; a second build of it (another key) resumes the same saved boot,
    // and must draw others (vmgenid makes the guest reseed at a resume).
    let (shared, _) = original_toml.split_once("[[stage]]").unwrap();
    let other_path = project.path("images/other.toml");
    let mut draws = Vec::new();
    for build in ["first", "second"] {
        let other = shared.replace("name = \"demo\"", "name = \"other\"")
            + "[[stage]]\nname = \"tools\"\nsteps = [ { shell = 'echo other > /etc/strata-other; \
               echo rng-$(od -An -N16 -tx1 /dev/urandom | tr -d \" \\n\")' } ]\n"
            + &format!("# {build} build\n");
        let other = other.replace("/etc/strata-other;", &format!("/etc/strata-other; : {build};"));
        std::fs::write(&other_path, other).unwrap();
        let started = Instant::now();
        let (output, events) = project.run_json(&["build", other_path.to_str().unwrap()]);
        assert_success(&output, "strata");
        eprintln!("another definition's first layer: {:.1}s", started.elapsed().as_secs_f64());
        assert_eq!(stages_of(&events, "layer_committed"), ["tools"]);
        assert_resumed_first_boot(&events, "tools", &output);
        let draw = named(&events, "step_output")
            .iter()
            .filter_map(|e| e["line"].as_str()?.strip_prefix("rng-").map(str::to_owned))
            .next()
            .unwrap();
        assert_eq!(draw.len(), 32, "16 bytes in hex: {draw}");
        draws.push(draw);
    }
    assert_ne!(draws[0], draws[1], "two resumes of one saved guest drew the same random bytes");

    // Move the whole store: relative backing files keep every layer usable.
    let moved = project.path("moved-store");
    std::fs::rename(&project.store, &moved).unwrap();

    // A layer cut from the running guest (app-base), booted as a fresh instance from the moved
    // store: a clean template, with its stage's work and not the next one's. (The last stage's
    // layer, sealed at power-off, boots as the exported image in guest_export, which proves
    // the app answers there; every layer's template state is checked offline below.)
    let vm = RunningVm::start(&project, &moved, "app-base");
    assert_clean_instance(&vm);
    assert_eq!(
        vm.ssh_ok("id -u app >/dev/null && echo yes"),
        "yes",
        "app-base's work is in its layer"
    );
    assert_eq!(
        vm.ssh_ok("test -e /opt/app/app.py && echo leaked || echo clean"),
        "clean",
        "final's work is not"
    );
    vm.stop();

    // Every layer's root filesystem is clean and a clean cloud template, checked offline.
    for layer in layer_dirs(&moved) {
        let root = RootFs::of(&layer.join("disk.qcow2"));
        root.assert_fsck_clean();
        root.assert_clean_template("builder");
    }

    // Nothing was written to the layer by `strata run`.
    let after = std::fs::read(moved.join("layers").join(&final_key).join("layer.json")).unwrap();
    let metadata: Value = serde_json::from_slice(&after).unwrap();
    let disk = moved.join("layers").join(&final_key).join("disk.qcow2");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), metadata["disk_bytes"].as_u64().unwrap());
}

/// The build resumed the source's saved first boot for `stage` (its first stage): no QEMU boot,
/// no cloud-init run, no kernel start on the console.
fn assert_resumed_first_boot(events: &[Value], stage: &str, output: &Output) {
    let resumed = named(events, "restore_resumed");
    assert_eq!(resumed.len(), 1, "{}", stderr(output));
    assert_eq!(resumed[0]["stage"], stage);
    assert!(resumed[0]["from"].as_str().unwrap().contains("/boots/"), "{:?}", resumed[0]);
    assert!(named(events, "cloud_init_done").is_empty(), "a resumed guest does not boot");
    let console = std::fs::read_to_string(log_dir(events).join(stage).join("console.log"))
        .unwrap_or_default();
    assert!(!console.contains("Linux version"), "the kernel did not start again:\n{console}");
}

/// What every layer must be when booted on its own with a fresh seed: only the new key
/// authorized (the build's is refused), a machine-id made at this boot, only the seed's host
/// key, cloud-init run again.
fn assert_clean_instance(vm: &RunningVm) {
    let keys = vm.ssh_ok("cat ~/.ssh/authorized_keys");
    assert_eq!(
        keys.lines().count(),
        1,
        "only this boot's key is authorized, the build's is gone: {keys}"
    );
    let machine_id = vm.ssh_ok("cat /etc/machine-id");
    assert_eq!(machine_id.len(), 32, "a new machine-id was made at boot: {machine_id:?}");
    let host_keys = vm.ssh_ok("ls /etc/ssh/ | grep -c '^ssh_host_.*_key$' || true");
    assert_eq!(host_keys, "1", "only the seed's host key, none from the build");
    let archived = vm.ssh_ok("sudo find /var/log/journal -name '*@*' | wc -l");
    assert_eq!(archived, "0", "the build's journal is gone");
    let status = vm.ssh_ok("cloud-init status --long | head -3");
    assert!(status.contains("done"), "cloud-init ran again: {status}");
}

/// A layer's root filesystem, read offline: a raw copy of its whole chain and the root
/// partition's offset in it (the largest partition), for e2fsprogs' `FILE?offset=N`.
struct RootFs {
    _dir: tempfile::TempDir,
    disk: PathBuf,
    device: String,
}

impl RootFs {
    fn of(disk: &Path) -> RootFs {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let status = Command::new("qemu-img")
            .args(["convert", "-U", "-O", "raw"])
            .arg(disk)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(status.success());
        let table = Command::new("sfdisk").arg("--json").arg(&raw).output().unwrap();
        let table: Value = serde_json::from_slice(&table.stdout).unwrap();
        let partitions = table["partitiontable"]["partitions"].as_array().unwrap();
        let sector = table["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
        let root = partitions.iter().max_by_key(|p| p["size"].as_u64().unwrap()).unwrap();
        let offset = root["start"].as_u64().unwrap() * sector;
        let device = format!("{}?offset={offset}", raw.display());
        RootFs { _dir: dir, disk: disk.to_owned(), device }
    }

    /// `debugfs -R REQUEST`'s output.
    fn debugfs(&self, request: &str) -> String {
        let output =
            Command::new("debugfs").arg("-R").arg(request).arg(&self.device).output().unwrap();
        assert!(output.status.success(), "debugfs -R {request}: {}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The names in a folder (`ls -p`: `/inode/mode/uid/gid/name/size/` a line); empty when
    /// the folder does not exist.
    fn names(&self, dir: &str) -> Vec<String> {
        self.debugfs(&format!("ls -p {dir}"))
            .lines()
            .filter_map(|line| line.split('/').nth(5).map(str::to_owned))
            .filter(|name| !name.is_empty() && name != "." && name != "..")
            .collect()
    }

    /// What every layer must be, read from its disk: an empty machine-id (present), no host
    /// keys, no key authorized for the build user, no journal files of the build, no
    /// cloud-init instance state.
    fn assert_clean_template(&self, build_user: &str) {
        let layer = self.disk.display();
        let machine_id = self.debugfs("stat /etc/machine-id");
        assert!(machine_id.contains("Size: 0"), "{layer}: /etc/machine-id is empty: {machine_id}");
        let ssh = self.names("/etc/ssh");
        assert!(ssh.iter().any(|name| name == "sshd_config"), "{layer}: /etc/ssh read: {ssh:?}");
        let host_keys: Vec<&String> =
            ssh.iter().filter(|name| name.starts_with("ssh_host_")).collect();
        assert!(host_keys.is_empty(), "{layer}: the build's host keys are gone: {host_keys:?}");
        let dot_ssh = self.names(&format!("/home/{build_user}/.ssh"));
        assert!(
            !dot_ssh.iter().any(|name| name == "authorized_keys"),
            "{layer}: the build key is gone: {dot_ssh:?}"
        );
        for machine in self.names("/var/log/journal") {
            let files = self.names(&format!("/var/log/journal/{machine}"));
            let journals: Vec<&String> =
                files.iter().filter(|name| name.contains(".journal")).collect();
            assert!(journals.is_empty(), "{layer}: the build's journal is gone: {journals:?}");
        }
        let cloud = self.names("/var/lib/cloud");
        assert!(
            !cloud.iter().any(|name| name == "instances" || name == "instance"),
            "{layer}: cloud-init's instance state is gone: {cloud:?}"
        );
    }

    /// `e2fsck -fn` of the root filesystem.
    fn assert_fsck_clean(&self) {
        let output = Command::new("e2fsck").arg("-fn").arg(&self.device).output().unwrap();
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        // A layer cut from a running guest is crash-consistent: files a process still held open
        // after deleting them sit on ext4's orphan list, which the kernel releases at mount. `-n`
        // shows those as deleted inodes with zero dtime and the bitmap bits they hold; anything
        // else is a real problem.
        let problems: Vec<&str> = report
            .lines()
            .filter(|line| {
                line.contains("? no")
                    || line.contains("differences:")
                    || line.contains("zero dtime")
            })
            .filter(|line| !is_orphan_trace(line))
            .collect();
        assert!(
            output.status.success() || problems.is_empty(),
            "fsck of {} found problems:\n{report}{}",
            self.disk.display(),
            stderr(&output)
        );
    }
}

/// What an orphan list looks like to `e2fsck -n`. With two or more orphans, `-n` (which does
/// not release them) also reads the list's links as "a corrupted orphan linked list"; a frozen
/// loop-mounted ext4 with two open deleted files shows the same.
fn is_orphan_trace(line: &str) -> bool {
    let line = line.trim();
    (line.starts_with("Deleted inode ") && line.contains("has zero dtime"))
        || line.starts_with("Inodes that were part of a corrupted orphan linked list found.")
        || line.starts_with("Block bitmap differences:")
        || line.starts_with("Inode bitmap differences:")
        || line.starts_with("Free blocks count wrong")
        || line.starts_with("Free inodes count wrong")
        || line == "Fix? no"
}

/// The build's log folder, from its `build_started` event.
fn log_dir(events: &[Value]) -> PathBuf {
    PathBuf::from(named(events, "build_started")[0]["log_dir"].as_str().unwrap())
}
