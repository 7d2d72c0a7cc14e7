//! `strata --help` is the command reference: every subcommand, its flags, an example.

#![allow(clippy::unwrap_used)]

use assert_cmd::Command;

#[test]
fn help_lists_every_subcommand_with_flags_and_an_example() {
    let output = Command::cargo_bin("strata").unwrap().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (command, flags) in [
        ("validate", &[][..]),
        ("fetch", &["--offline"][..]),
        (
            "build",
            &[
                "--stage",
                "--rebuild",
                "--offline",
                "--keep-failed",
                "--verify",
                "--no-warm",
                "--max-restore-size",
                "--push",
                "--cache-required",
                "--cache-restore",
                "--test",
                "--junit",
            ][..],
        ),
        ("layers", &[][..]),
        ("export", &["--stage", "--format", "--target", "-o", "--force"][..]),
        ("run", &["--stage"][..]),
        ("gc", &["--dry-run"][..]),
        ("push", &["--stage", "--cache-restore"][..]),
        ("pull", &["--stage", "--cache-restore"][..]),
        ("test", &["--stage", "--junit"][..]),
        ("diff", &["--from", "--to"][..]),
    ] {
        let synopsis = help
            .lines()
            .skip_while(|line| !line.trim_start().starts_with(&format!("strata {command} ")))
            .take(4)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!synopsis.is_empty(), "`{command}` missing from --help:\n{help}");
        for flag in flags {
            assert!(synopsis.contains(flag), "`{command}` lacks {flag} in --help:\n{synopsis}");
        }
        assert!(synopsis.contains(&format!("e.g. strata {command}")), "no example for {command}");
    }
    for global in ["--store", "--log-format", "--verbose", "--quiet", "--cache"] {
        assert!(help.contains(global), "global option {global} missing");
    }
}

#[test]
fn a_bad_argument_exits_2() {
    Command::cargo_bin("strata").unwrap().args(["build"]).assert().code(2);
    Command::cargo_bin("strata").unwrap().args(["frobnicate"]).assert().code(2);
}
