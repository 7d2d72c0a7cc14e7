//! The demo built with no network at all: `kind = "guest-agent"` and `network = false` in every
//! stage, steps over virtio-serial through the QEMU guest agent. Its layers must serve the app
//! when booted afterwards with a network. Gated by `STRATA_GUEST_TESTS=1` like the other guest
//! tests; it shares `guest_build`'s way of serving the base image over loopback HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn enabled() -> bool {
    if std::env::var("STRATA_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set STRATA_GUEST_TESTS=1 to boot real guests");
    false
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the HTTP server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child), port)
}

fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn stages_of(events: &[Value], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["event"] == name)
        .map(|event| event["stage"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn demo_builds_with_no_network_over_the_guest_agent() {
    if !enabled() {
        return;
    }
    let base = std::env::var_os("STRATA_BASE_IMAGE_DIR")
        .map_or_else(|| repo().join(".cache/base-image"), PathBuf::from);
    let (_server, port) = serve(&base);
    let dir = tempfile::tempdir().unwrap();
    for sub in ["images", "scripts"] {
        assert!(
            Command::new("cp")
                .arg("-a")
                .arg(repo().join(sub))
                .arg(dir.path())
                .status()
                .unwrap()
                .success()
        );
    }
    let definition = dir.path().join("images/demo.toml");
    let url = format!("http://127.0.0.1:{port}");
    let text = std::fs::read_to_string(&definition)
        .unwrap()
        .replace("\"../.cache/base-image/debian-12-strata-amd64.qcow2\"", &format!("\"{url}/debian-12-strata-amd64.qcow2\""))
        .replace("\"../.cache/base-image/SHA256SUMS\"", &format!("\"{url}/SHA256SUMS\""))
        .replace("kind = \"ssh\"", "kind = \"guest-agent\"")
        .replace("[[stage]]\n", "[[stage]]\nnetwork = false\n")
        // A reboot inside the build proves the agent comes back after one.
        .replace("{ run = \"../scripts/app-base.sh\" },", "{ run = \"../scripts/app-base.sh\" },\n  { reboot = true },\n  { shell = \"test -d /opt/app\" },");
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
    let first = events(&output.stdout);
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
    let events = events(&output.stdout);
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
