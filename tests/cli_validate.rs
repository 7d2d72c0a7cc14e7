//! `strata validate` through the real binary: exit codes, the "ok" lines, and the miette
//! rendering with FILE:LINE:COL on stderr (no colour: stderr is a pipe here).

use assert_cmd::Command;
use predicates::prelude::*;

const DIR: &str = "tests/fixtures/definitions/design/images";

fn strata() -> Command {
    let mut command = Command::cargo_bin("strata").unwrap_or_else(|error| panic!("{error}"));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("NO_COLOR");
    command
}

#[test]
fn valid_definitions_say_ok_and_exit_zero() {
    strata()
        .args(["validate", &format!("{DIR}/web.toml"), &format!("{DIR}/minimal.toml")])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("ok: {DIR}/web.toml (3 stages)")))
        .stdout(predicate::str::contains(format!("ok: {DIR}/minimal.toml (1 stage)")));
}

#[test]
fn quiet_prints_nothing_for_valid_definitions() {
    strata()
        .args(["validate", "-q", &format!("{DIR}/web.toml")])
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
}

#[test]
fn unknown_parent_exits_two_with_location() {
    strata()
        .args(["validate", &format!("{DIR}/bad-parent.toml")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{DIR}/bad-parent.toml:13:10")))
        .stderr(predicate::str::contains("unknown parent stage \"bsae\": did you mean `base`?"))
        .stderr(predicate::str::contains("parent = \"bsae\""))
        .stderr(predicate::str::contains("help:"))
        .stderr(predicate::str::contains("\u{1b}[").not());
}

#[test]
fn two_actions_exit_two_with_location() {
    strata()
        .args(["validate", &format!("{DIR}/bad-step.toml")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{DIR}/bad-step.toml:11:3")))
        .stderr(predicate::str::contains("step has 2 actions: `run`, `shell`"));
}

#[test]
fn toml_syntax_error_exits_two_with_location() {
    strata()
        .args(["validate", &format!("{DIR}/bad-syntax.toml")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{DIR}/bad-syntax.toml:3:")))
        .stderr(predicate::str::contains("invalid TOML"));
}

#[test]
fn stops_at_the_first_invalid_definition() {
    strata()
        .args([
            "validate",
            &format!("{DIR}/web.toml"),
            &format!("{DIR}/bad-step.toml"),
            &format!("{DIR}/bad-parent.toml"),
        ])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("ok: "))
        .stderr(predicate::str::contains("bad-step.toml"))
        .stderr(predicate::str::contains("bad-parent.toml").not());
}

#[test]
fn missing_file_exits_two() {
    strata()
        .args(["validate", &format!("{DIR}/nope.toml")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("failed to read definition {DIR}/nope.toml")))
        .stderr(predicate::str::contains("No such file or directory"));
}

#[test]
fn no_color_env_gives_plain_text() {
    strata()
        .env("NO_COLOR", "1")
        .args(["validate", &format!("{DIR}/bad-parent.toml")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("\u{1b}[").not());
}
