//! `strata export` through the real binary, without a guest: what it says and how it exits
//! when the stage is not built, and the JSON events of an export of a real layer chain made
//! with qemu-img (a stand-in for a built stage's layers, committed as strata commits them).
//! Also the exit codes `layers`, `run` and `build` share with it: 2 is for invalid arguments
//! and definitions only; a source not fetched or a stage not built is failed work, 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use assert_cmd::Command;
use common::project::{Project, commit_layers, sha256_of, strata};
use predicates::prelude::*;

#[test]
fn a_source_that_is_not_fetched_exits_one_with_the_build_command() {
    let project = Project::new();
    let definition = project.definition();
    let shown = definition.display().to_string();
    strata(&project.store())
        .arg("export")
        .arg(&definition)
        .arg("-o")
        .arg(project.dir.path().join("out"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("run `strata build {shown} --stage final` first")))
        .stderr(predicate::str::contains("source image is not in the store"));
    assert!(!project.dir.path().join("out").exists(), "nothing was written");
}

#[test]
fn a_stage_without_a_layer_exits_one_naming_it() {
    let project = Project::new();
    let definition = project.definition();
    strata(&project.store()).arg("fetch").arg(&definition).assert().success();
    strata(&project.store())
        .arg("export")
        .arg(&definition)
        .args(["--stage", "base", "--format", "raw"])
        .current_dir(project.dir.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--stage base` first"))
        .stderr(predicate::str::contains("stage `base` has no layer"));
    let entries = std::fs::read_dir(project.dir.path()).unwrap().count();
    assert_eq!(entries, 3, "only the definition, the source and the store are there");
}

#[test]
fn an_unknown_stage_is_a_usage_error() {
    let project = Project::new();
    strata(&project.store()).arg("fetch").arg(project.definition()).assert().success();
    strata(&project.store())
        .arg("export")
        .arg(project.definition())
        .args(["--stage", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no stage `nope`"));
}

#[test]
fn an_unknown_format_or_target_is_refused_by_the_parser() {
    let project = Project::new();
    strata(&project.store())
        .arg("export")
        .arg(project.definition())
        .args(["--format", "vdi"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("qcow2, raw, vmdk"));
    strata(&project.store())
        .arg("export")
        .arg(project.definition())
        .args(["--target", "aws"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("generic, openstack, proxmox"));
}

#[test]
fn an_export_reports_json_events_and_refuses_to_overwrite_without_force() {
    let project = Project::new();
    strata(&project.store()).arg("fetch").arg(project.definition()).assert().success();
    commit_layers(&project);
    let out = project.dir.path().join("out");
    let output = strata(&project.store())
        .args(["--log-format", "json", "export"])
        .arg(project.definition())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|event| event["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"export_started"), "{kinds:?}");
    assert!(kinds.contains(&"export_convert_progress"), "{kinds:?}");
    let exported: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "export_artifact")
        .map(|event| event["format"].as_str().unwrap())
        .collect();
    assert_eq!(exported, ["qcow2", "openstack", "spdx-json", "provenance", "manifest"]);
    let image = out.join("tiny-final.qcow2");
    assert_eq!(
        events.iter().find(|e| e["event"] == "export_artifact").unwrap()["sha256"],
        sha256_of(&image)
    );
    let glance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tiny-final.openstack.json")).unwrap())
            .unwrap();
    assert_eq!(glance["properties"]["hw_qemu_guest_agent"], "no");

    let before = std::fs::metadata(&image).unwrap().modified().unwrap();
    strata(&project.store())
        .arg("export")
        .arg(project.definition())
        .arg("-o")
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already exists: pass --force"));
    assert_eq!(std::fs::metadata(&image).unwrap().modified().unwrap(), before);
    strata(&project.store())
        .arg("export")
        .arg(project.definition())
        .args(["--force", "--target", "proxmox"])
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    assert!(out.join("tiny-final.proxmox.sh").exists());
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temporaries left: {names:?}");
}

/// `strata COMMAND DEF ARGS…` on the project's store.
fn command(project: &Project, command: &str, args: &[&str]) -> Command {
    let mut strata = strata(&project.store());
    strata.arg(command).arg(project.definition()).args(args);
    strata
}

#[test]
fn layers_without_the_source_in_the_store_exits_one() {
    let project = Project::new();
    command(&project, "layers", &[])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not in the store"))
        .stderr(predicate::str::contains("strata fetch"));
}

#[test]
fn run_of_a_stage_not_built_exits_one_before_and_after_fetch() {
    let project = Project::new();
    command(&project, "run", &[])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not built"))
        .stderr(predicate::str::contains("strata build"));
    strata(&project.store()).arg("fetch").arg(project.definition()).assert().success();
    command(&project, "run", &["--stage", "base"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("stage `base`"))
        .stderr(predicate::str::contains("not built"));
}

#[test]
fn an_unknown_stage_exits_two_in_build_and_run_too() {
    let project = Project::new();
    strata(&project.store()).arg("fetch").arg(project.definition()).assert().success();
    for args in [["build", "--stage"], ["build", "--rebuild"], ["run", "--stage"]] {
        command(&project, args[0], &[args[1], "nope"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("has no stage `nope`"));
    }
}
