//! Exit codes through the real binary, without a guest: 2 is for invalid arguments and
//! definitions only; what is not there yet (a source not fetched, a stage not built) is a
//! failed piece of work, 1, whichever command meets it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn strata(store: &Path) -> Command {
    let mut command = Command::cargo_bin("strata").unwrap_or_else(|error| panic!("{error}"));
    command.arg("--store").arg(store).env_remove("STRATA_STORE").env_remove("NO_COLOR");
    command
}

/// A definition of two stages whose source is a small local qcow2, in a temp folder.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src.qcow2");
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", source.to_str().unwrap(), "16M"])
            .status()
            .unwrap();
        assert!(status.success());
        let output = std::process::Command::new("sha256sum").arg(&source).output().unwrap();
        let sha256 = String::from_utf8(output.stdout).unwrap();
        let sha256 = sha256.split_whitespace().next().unwrap();
        let text = format!(
            "name = \"tiny\"\n[source]\nurl = \"src.qcow2\"\nchecksum = \"sha256:{sha256}\"\n\
             [[stage]]\nname = \"base\"\nsteps = [{{ shell = \"true\" }}]\n\
             [[stage]]\nname = \"final\"\nsteps = [{{ shell = \"true\" }}]\n"
        );
        std::fs::write(dir.path().join("tiny.toml"), text).unwrap();
        Project { dir }
    }

    fn definition(&self) -> PathBuf {
        self.dir.path().join("tiny.toml")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = strata(&self.store());
        command.arg(args[0]).arg(self.definition()).args(&args[1..]);
        command
    }

    fn fetch(&self) {
        self.command(&["fetch"]).assert().success();
    }
}

#[test]
fn layers_without_the_source_in_the_store_fails_with_1() {
    let project = Project::new();
    project.command(&["layers"]).assert().code(1).stderr(
        predicate::str::contains("is not in the store")
            .and(predicate::str::contains("strata fetch")),
    );
}

#[test]
fn run_of_a_stage_not_built_fails_with_1_before_and_after_fetch() {
    let project = Project::new();
    project.command(&["run"]).assert().code(1).stderr(
        predicate::str::contains("not built").and(predicate::str::contains("strata build")),
    );
    project.fetch();
    project.command(&["run", "--stage", "base"]).assert().code(1).stderr(
        predicate::str::contains("stage `base`").and(predicate::str::contains("not built")),
    );
}

#[test]
fn export_of_a_stage_not_built_fails_with_1_like_run() {
    let project = Project::new();
    project.fetch();
    let out = project.dir.path().join("out");
    project
        .command(&["export", "-o", out.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not built"));
}

#[test]
fn an_unknown_stage_is_invalid_input_for_every_command() {
    let project = Project::new();
    project.fetch();
    for command in ["build", "run", "export"] {
        project
            .command(&[command, "--stage", "nope"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("has no stage `nope`"));
    }
    project
        .command(&["build", "--rebuild", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has no stage `nope`"));
}

#[test]
fn an_invalid_argument_exits_2() {
    let project = Project::new();
    project.command(&["layers", "--no-such-flag"]).assert().code(2);
}
