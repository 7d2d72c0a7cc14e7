//! The demo built with no network at all: `kind = "guest-agent"` and `network = false` in every
//! stage, steps over virtio-serial through the QEMU guest agent. Its layers must serve the app
//! when booted afterwards with a network. Ignored by default like the other guest tests (scripts/test.sh
//! runs them); like them it serves the base image over loopback HTTP (`tests/common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use common::{HttpServer, base_image_dir, copy_demo, parse_events, stages_of};

#[test]
#[ignore = "boots a guest under QEMU: scripts/test.sh runs it"]
fn demo_builds_with_no_network_over_the_guest_agent() {
    let server = HttpServer::start(&base_image_dir());
    let dir = tempfile::tempdir().unwrap();
    let (definition, text) = copy_demo(dir.path(), &server.url());
    let text = text
        .replace("kind = \"ssh\"", "kind = \"guest-agent\"")
        // No reboot step: the agent coming back after a reboot is communicator_qga's (the same
        // `reboot` a stage's step calls), and a reboot step in a stage is guest_faults'.
        .replace("[[stage]]\n", "[[stage]]\nnetwork = false\n");
    assert!(text.contains("guest-agent") && text.matches("network = false").count() == 3, "{text}");
    let store = dir.path().join("store");
    let strata = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
        command.arg("--store").arg(&store).args(["--log-format", "json"]);
        command
    };

    // A failure injected in the last stage of a one-boot build: the layers cut below it stay.
    let failing = text.replace(
        "env = { APP_PORT = \"{{ vars.app_port }}\" } },",
        "env = { APP_PORT = \"{{ vars.app_port }}\" } },\n  { shell = \"echo injected >&2; exit 7\" },",
    );
    assert_ne!(failing, text, "the failure was injected");
    std::fs::write(&definition, &failing).unwrap();
    let started = Instant::now();
    let output = strata().arg("build").arg(&definition).output().unwrap();
    eprintln!(
        "guest-agent build, no network, failing final: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let first = parse_events(&output.stdout);
    assert_eq!(stages_of(&first, "layer_committed"), ["base", "app-base"]);
    assert_eq!(stages_of(&first, "qemu_started").len(), 1, "one boot for all three stages");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("final") && error.contains("exited with code 7"), "{error}");

    // Fixed: the next build starts from app-base, resuming its saved guest.
    std::fs::write(&definition, &text).unwrap();
    let started = Instant::now();
    let output = strata().arg("build").arg(&definition).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("guest-agent rebuild of final: {:.1}s", started.elapsed().as_secs_f64());
    let events = parse_events(&output.stdout);
    assert_eq!(stages_of(&events, "stage_cached"), ["base", "app-base"]);
    assert_eq!(stages_of(&events, "layer_committed"), ["final"]);
    assert_eq!(
        stages_of(&events, "restore_resumed"),
        ["final"],
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Booted afterwards with a network (strata run always gives SSH), the app answers.
    let mut run = strata()
        .arg("run")
        .arg(&definition)
        .args(["--stage", "final"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = run.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(&line.unwrap()).unwrap())
        .find(|event| event["event"] == "vm_ready")
        .expect("the VM came up");
    let words: Vec<String> =
        ready["ssh_command"].as_str().unwrap().split(' ').map(String::from).collect();
    let health = Command::new(&words[0])
        .args(&words[1..])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/health').read().decode())\"")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&health.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(run.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(run.wait().unwrap().success());
}
