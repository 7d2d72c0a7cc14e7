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

const HEAD: &str = "name = \"t\"\n[source]\nurl = \"https://example.org/base.qcow2\"\nchecksum = \
                    \"sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\"\n";

fn write_definition(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("t.toml");
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("{error}"));
    path.display().to_string()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"))
}

// Issue 16, item 1: miette panicked (exit 101) underlining past column 65,535.
#[test]
fn error_past_column_65535_exits_two_without_panic() {
    let dir = temp_dir();
    let text = format!(
        "{HEAD}[[stage]]\nname = \"a\"\nsteps = [{}{{ shell = \"\" }} ]\n",
        " ".repeat(70_000)
    );
    let path = write_definition(&dir, &text);
    strata()
        .args(["validate", &path])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{path}:7:70020: `shell` is empty")))
        .stderr(predicate::str::contains("help: give `shell` a value"))
        .stderr(predicate::str::contains("panicked").not());
}

// Issue 16, item 4: 20,000 problems took over 10 s and printed 2 MB.
#[test]
fn thousands_of_problems_are_quick_and_counted() {
    let dir = temp_dir();
    let text = format!("{HEAD}[[stage]]\nname = \"a\"\nsteps = [\n{}]\n", "{},\n".repeat(20_000));
    let path = write_definition(&dir, &text);
    let started = std::time::Instant::now();
    let output = strata().args(["validate", &path]).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("step has no action").count(), 50, "{stderr}");
    assert!(stderr.contains("... and 19950 more problems in this file"), "{stderr}");
    assert!(stderr.len() < 64 * 1024, "{} bytes", stderr.len());
}
