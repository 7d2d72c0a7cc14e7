//! The store's safety through the real binary, without a guest: queries never move a corrupt
//! layer, gc deletes nothing unless told what to keep (or `--all`), fetch waits for a gc, run
//! folders are 0700 under umask 000, a SIGTERM or SIGHUP cleans up and exits 143 or 129, and
//! the run folder of a SIGKILLed strata is swept. Every command's `--log-format json` output.
//! A stand-in `qemu-system-x86_64` (a script that waits) lets a build reach its run folder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::project::{Project, commit_layers, strata};
use predicates::prelude::*;

fn layer_dirs(project: &Project) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(project.store().join("layers"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

/// `strata --log-format json ARGS… DEF`, which must succeed: its JSON lines.
fn json_run(project: &Project, args: &[&str]) -> Vec<serde_json::Value> {
    let output = strata(&project.store())
        .args(["--log-format", "json"])
        .args(args)
        .arg(project.definition())
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    json_lines(&output.stdout)
}

fn built_project() -> Project {
    let project = Project::new();
    strata(&project.store()).arg("fetch").arg(project.definition()).assert().success();
    commit_layers(&project);
    project
}

#[test]
fn a_layer_record_that_is_not_utf8_is_corrupt_and_a_query_moves_nothing() {
    let project = built_project();
    let layers = layer_dirs(&project);
    assert_eq!(layers.len(), 2);
    for layer in &layers {
        std::fs::write(layer.join("layer.json"), b"\xff\xfe{not utf-8").unwrap();
    }
    strata(&project.store())
        .arg("layers")
        .arg(project.definition())
        .assert()
        .success()
        .stdout(predicate::str::contains("corrupt"));
    let table = &json_run(&project, &["layers"])[0];
    assert_eq!(table["stages"][0]["cached"], false);
    strata(&project.store())
        .args(["export", "--format", "raw"])
        .arg(project.definition())
        .arg("-o")
        .arg(project.dir.path().join("out"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("damaged"));
    assert_eq!(layer_dirs(&project), layers, "queries moved nothing");
    let tmp = std::fs::read_dir(project.store().join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "nothing moved into tmp/");
    // gc can still work on such a store: the corrupt layers are garbage.
    strata(&project.store()).arg("gc").arg(project.definition()).assert().success();
    assert!(layer_dirs(&project).is_empty());
}

#[test]
fn gc_without_a_definition_deletes_nothing_and_asks_for_all() {
    let project = built_project();
    let layers = layer_dirs(&project);
    strata(&project.store())
        .arg("gc")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("deletes nothing"))
        .stderr(predicate::str::contains("--all"));
    assert_eq!(layer_dirs(&project), layers);
    let output =
        strata(&project.store()).args(["--log-format", "json", "gc", "--all"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome = &json_lines(&output.stdout)[0];
    assert_eq!(outcome["event"], "gc_finished");
    assert_eq!(outcome["removed"].as_array().unwrap().len(), 3, "two layers and the source");
    assert!(layer_dirs(&project).is_empty());
}

#[test]
fn fetch_waits_for_a_running_gc() {
    let project = Project::new();
    let store = strata::store::Store::open(&project.store()).unwrap();
    let gc = store.lock("gc").unwrap();
    let mut fetch = std::process::Command::new(common::strata_bin())
        .arg("--store")
        .arg(project.store())
        .arg("fetch")
        .arg(project.definition())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(fetch.try_wait().unwrap().is_none(), "fetch did not wait for gc's lock");
    assert_eq!(std::fs::read_dir(store.sources_dir()).unwrap().count(), 0);
    drop(gc);
    assert!(fetch.wait().unwrap().success());
}

#[test]
fn every_command_writes_json_lines_and_errors_as_the_error_event() {
    let project = Project::new();
    let output = strata(&project.store())
        .args(["--log-format", "json", "layers"])
        .arg(project.definition())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error = &json_lines(&output.stdout)[0];
    assert_eq!(error["event"], "error");
    assert!(error["message"].as_str().unwrap().contains("strata fetch"), "{error}");

    let output = strata(&project.store())
        .args(["--log-format", "json", "fetch"])
        .arg(project.definition())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(!json_lines(&output.stdout).is_empty(), "fetch's events");

    let output = strata(&project.store())
        .args(["--log-format", "json", "run"])
        .arg(project.definition())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json_lines(&output.stdout)[0]["event"], "error");

    let bad = project.dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nbogus = 1\n").unwrap();
    let output = strata(&project.store())
        .args(["--log-format", "json", "validate"])
        .arg(project.definition())
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = json_lines(&output.stdout);
    assert_eq!(lines[0]["event"], "validated");
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[0]["stages"], 2);
    assert_eq!(lines[1]["ok"], false);
    assert!(!lines[1]["problems"].as_array().unwrap().is_empty(), "{}", lines[1]);
    assert_eq!(lines[2]["event"], "error");
}

/// A folder with a `qemu-system-x86_64` that only waits, first on PATH.
fn fake_qemu(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    common::write_mode(&bin.join("qemu-system-x86_64"), "#!/bin/sh\nexec sleep 300\n", 0o755);
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

/// Starts `strata build --no-warm` under umask 000 with its own temp folder, and waits until
/// its run folder holds the seed; returns the child and that folder.
// The caller signals the build and waits for it.
#[allow(clippy::zombie_processes)]
fn build_until_run_folder(project: &Project, temp: &Path) -> (std::process::Child, PathBuf) {
    let path = fake_qemu(project.dir.path());
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(common::strata_bin())
        .arg("--store")
        .arg(project.store())
        .args(["build", "--no-warm"])
        .arg(project.definition())
        .env("PATH", path)
        .env("TMPDIR", temp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found =
            std::fs::read_dir(temp).unwrap().flatten().map(|entry| entry.path()).find(|dir| {
                dir.file_name().unwrap().to_string_lossy().starts_with("strata-run-")
                    && dir.join("seed.img").exists()
            });
        if let Some(dir) = found {
            return (child, dir);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the build never made its run folder");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sigterm_and_sighup_clean_up_and_exit_143_and_129() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
        let project = Project::new();
        let temp = project.dir.path().join("tmp");
        std::fs::create_dir(&temp).unwrap();
        let (mut child, run_dir) = build_until_run_folder(&project, &temp);
        assert_eq!(mode(&run_dir), 0o700, "the run folder under umask 000");
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        kill(pid, signal).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{signal}");
        assert!(!run_dir.exists(), "the run folder (with the seed) is removed after {signal}");
        let work = std::fs::read_dir(project.store().join("tmp")).unwrap().count();
        assert_eq!(work, 0, "no work folder left after {signal}");
    }
}

#[test]
fn the_run_folder_of_a_killed_build_is_swept_by_gc() {
    let project = Project::new();
    let temp = project.dir.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let (mut child, run_dir) = build_until_run_folder(&project, &temp);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(run_dir.exists(), "SIGKILL leaves it");
    strata(&project.store())
        .args(["gc"])
        .arg(project.definition())
        .env("TMPDIR", &temp)
        .assert()
        .success();
    assert!(!run_dir.exists(), "gc swept the dead build's run folder");
}

/// A fake restore point (a record saved at `created` and `mib` MiB of state) beside `layer`.
fn fake_restore_point(layer: &Path, created: u64, mib: usize) {
    let restore = layer.join("restore");
    std::fs::create_dir_all(&restore).unwrap();
    let record = serde_json::json!({ "format": 1, "created": created });
    std::fs::write(restore.join("restore.json"), record.to_string()).unwrap();
    std::fs::write(restore.join("state.zst"), vec![7u8; mib << 20]).unwrap();
}

/// Each layer folder's stage, from its layer.json.
fn stage_of(layer: &Path) -> String {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layer.join("layer.json")).unwrap()).unwrap();
    record["stage"].as_str().unwrap().to_owned()
}

#[test]
fn max_restore_size_removes_the_oldest_restore_points_and_no_layer() {
    let project = built_project();
    let layers = layer_dirs(&project);
    let (base, last) = if stage_of(&layers[0]) == "base" {
        (&layers[0], &layers[1])
    } else {
        (&layers[1], &layers[0])
    };
    fake_restore_point(base, 1_795_900_000, 3);
    fake_restore_point(last, 1_795_900_100, 3);
    let table = |project: &Project| json_run(project, &["layers"])[0]["stages"].clone();
    let before = table(&project);
    assert!(before[0]["restore_bytes"].as_u64().unwrap() >= 3 << 20, "{before}");
    assert!(before[1]["restore_bytes"].as_u64().unwrap() >= 3 << 20, "{before}");

    for (size, said) in [("0", "--no-warm"), ("65T", "64T"), ("lots", "not a size")] {
        strata(&project.store())
            .args(["build", "--max-restore-size", size])
            .arg(project.definition())
            .assert()
            .code(2)
            .stderr(predicate::str::contains(said));
    }

    // Everything is cached: the build boots nothing, but the cap holds from its start.
    let output = strata(&project.store())
        .args(["--log-format", "json", "build"])
        .arg(project.definition())
        .env("STRATA_MAX_RESTORE_SIZE", "4M")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let removed: Vec<serde_json::Value> = json_lines(&output.stdout)
        .into_iter()
        .filter(|event| event["event"] == "restore_point_removed")
        .collect();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["stage"], "base", "the oldest goes first");
    assert_eq!(removed[0]["max_bytes"], 4 << 20);
    assert!(!base.join("restore").exists());
    assert!(last.join("restore/restore.json").exists());
    assert_eq!(layer_dirs(&project), layers, "no layer removed");
    let after = table(&project);
    assert!(after[0]["restore_bytes"].is_null() && after[0]["cached"] == true, "{after}");
    assert_eq!(after[1]["restore_bytes"], before[1]["restore_bytes"]);

    // A plain log says so too.
    fake_restore_point(base, 1_795_900_200, 3);
    strata(&project.store())
        .args(["build", "--max-restore-size", "4M"])
        .arg(project.definition())
        .env("NO_COLOR", "1")
        .assert()
        .success()
        .stderr(predicate::str::contains("removed the restore point of final's layer"));
    assert!(base.join("restore/restore.json").exists(), "the newest stays");
}

#[test]
fn gc_removes_restore_points_with_their_layers_and_keeps_those_of_kept_layers() {
    let project = built_project();
    let layers = layer_dirs(&project);
    for layer in &layers {
        fake_restore_point(layer, 1_795_900_000, 1);
    }
    let kept: Vec<&PathBuf> = layers.iter().filter(|layer| stage_of(layer) == "base").collect();
    strata(&project.store()).arg("gc").arg(project.definition()).assert().success();
    assert_eq!(layer_dirs(&project), layers);
    assert!(layers.iter().all(|layer| layer.join("restore/restore.json").exists()));

    // The final stage changes: its old layer goes with its restore point; base's stays.
    let text = std::fs::read_to_string(project.definition()).unwrap();
    let edited = text.replacen(
        "steps = [{ shell = \"true\" }]\n[export]",
        "steps = [{ shell = \"false\" }]\n[export]",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(project.definition(), edited).unwrap();
    let outcome = &json_run(&project, &["gc"])[0];
    assert_eq!(layer_dirs(&project).iter().collect::<Vec<_>>(), kept);
    assert!(kept[0].join("restore/restore.json").exists(), "a kept layer keeps its restore point");
    assert_eq!(outcome["removed"].as_array().unwrap().len(), 1, "{outcome}");
    assert!(outcome["bytes"].as_u64().unwrap() >= 1 << 20, "the restore point counts: {outcome}");

    strata(&project.store()).args(["gc", "--all"]).assert().success();
    assert!(layer_dirs(&project).is_empty());
    assert_eq!(std::fs::read_dir(project.store().join("tmp")).unwrap().count(), 0);
}
