//! Helpers shared by the guest-booting test binaries (`guest_*.rs`, `communicator_qga.rs`):
//! where the repository and the local base image are, a loopback
//! HTTP server for the base image, a copy of the demo pointed at it, the strata binary, files
//! with modes, reading strata's JSON events and output, and `ssh` runs that outlast cloud-init's
//! restart of sshd.

// Each test binary compiles this module on its own and uses a subset of it.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod demo;
pub mod instance;
pub mod judges;
pub mod openstack;
pub mod project;
pub mod registry;
pub mod sshd;

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder with the base image and its `SHA256SUMS`: `STRATA_BASE_IMAGE_DIR`, or
/// `.cache/base-image` (made by `scripts/build-base-image.sh`).
pub fn base_image_dir() -> PathBuf {
    std::env::var_os("STRATA_BASE_IMAGE_DIR")
        .map_or_else(|| repo().join(".cache/base-image"), PathBuf::from)
}

/// The strata binary: this build's, or `STRATA_BIN` (a copy that other builds in the same
/// target folder cannot replace halfway through a long run).
pub fn strata_bin() -> PathBuf {
    std::env::var_os("STRATA_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")), PathBuf::from)
}

/// The host tool `program` is on PATH, or the test fails with the line that installs it:
/// scripts/test.sh installs every tool the tests use, so a missing one is a broken environment,
/// never a test that passes without checking anything.
pub fn require_tool(program: &str, install: &str) {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    });
    assert!(found, "{program} is not installed: {install} (scripts/install-host-deps.sh does)");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Serves a folder (the base image's) over loopback HTTP, so builds download it as from a
/// mirror and the real download path is exercised. Stopped when dropped.
pub struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    pub fn start(dir: &Path) -> HttpServer {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 serves the base image");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the HTTP server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, port }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the demo (the repository's `images/` and `scripts/`) into `dir`; returns the path of
/// `images/demo.toml` there and its text with the `[source]` image and `SHA256SUMS` taken from
/// `url` (an [`HttpServer`] of the base image) instead of `.cache/base-image`. Nothing is
/// written back: callers change the text further, check it and write it.
pub fn copy_demo(dir: &Path, url: &str) -> (PathBuf, String) {
    copy_images_and_scripts(dir);
    let definition = dir.join("images/demo.toml");
    let text = source_from(&std::fs::read_to_string(&definition).unwrap(), url);
    (definition, text)
}

/// Copies the repository's `images/` and `scripts/` into `dir`.
pub fn copy_images_and_scripts(dir: &Path) {
    for folder in ["images", "scripts"] {
        let status =
            Command::new("cp").arg("-a").arg(repo().join(folder)).arg(dir).status().unwrap();
        assert!(status.success(), "cp -a {folder}");
    }
}

/// A definition's text with its `[source]` image and `SHA256SUMS` taken from `location` (a URL
/// or a folder, without a trailing slash) instead of `../.cache/base-image`.
pub fn source_from(text: &str, location: &str) -> String {
    text.replace(
        "\"../.cache/base-image/debian-12-strata-amd64.qcow2\"",
        &format!("\"{location}/debian-12-strata-amd64.qcow2\""),
    )
    .replace("\"../.cache/base-image/SHA256SUMS\"", &format!("\"{location}/SHA256SUMS\""))
}

/// strata's `--log-format json` output: one event a line, each line JSON.
pub fn parse_events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// The events named `name`, in order.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|event| event["event"] == name).collect()
}

/// The stages of the events named `name`, in order.
pub fn stages_of(events: &[Value], name: &str) -> Vec<String> {
    named(events, name).iter().map(|event| event["stage"].as_str().unwrap().to_owned()).collect()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes a file and sets its mode (the permission bits uploads must keep).
pub fn write_mode(path: &Path, content: impl AsRef<[u8]>, mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Asserts that `what` (a command's name, for the message) exited 0; shows its stderr if not.
pub fn assert_success(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed: {:?}\n{}", output.status, stderr(output));
}

/// How long an `ssh` run is tried again while it fails in SSH itself.
pub const SSH_RETRY_WINDOW: Duration = Duration::from_secs(60);

/// Runs the `ssh` command `make` builds, again (once a second, until `within` has passed) while
/// it fails in SSH itself: exit 255, as when the connection meets cloud-init restarting sshd
/// just after the first login ("kex_exchange_identification: Connection closed by remote
/// host"). Any other exit status is the remote command's and is returned at once.
pub fn ssh_retrying(make: impl Fn() -> Command, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    loop {
        let output = make().output().unwrap();
        if output.status.code() != Some(255) || Instant::now() >= deadline {
            return output;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A failure's text (`strata build`'s stderr, or its screen) for a stage that resumed a saved
/// guest: its console holds only what the guest printed since the resume. Usually nothing, and
/// then no console section is shown; under emulation the kernel may say something about the
/// pause (`hrtimer: interrupt took … ns`), which is shown. Never the boot before the save.
pub fn assert_no_console_from_before_the_resume(text: &str) {
    let Some(at) = text.find("the console's last lines:") else { return };
    let console = &text[at..text[at..].find("logs: ").map_or(text.len(), |end| at + end)];
    assert!(console.contains("| "), "an empty console section is shown:\n{text}");
    for booted in ["Cloud-init", "login:", "Linux version"] {
        assert!(!console.contains(booted), "the console before the resume is shown:\n{text}");
    }
}
