//! A real Keystone and Glance on loopback for the publish tests (`tests/openstack/cloud.sh`,
//! from the test venv that `scripts/install-test-venv.sh` makes): an admin, a `member` user in
//! its own project `strata`, the image service and its endpoints, and a `clouds.yaml` with the
//! clouds `admin` and `member`. The venv missing fails the test with the install line.
//! Optionally the image endpoint is a throttling proxy in front of Glance, so an upload can be
//! caught halfway. Everything stops when the fixture is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{assert_success, repo, strata_bin};

/// The test venv: `STRATA_TEST_VENV`, else `.cache/venv`.
pub fn venv() -> PathBuf {
    std::env::var_os("STRATA_TEST_VENV").map_or_else(|| repo().join(".cache/venv"), PathBuf::from)
}

pub struct OpenStack {
    pub dir: tempfile::TempDir,
    pub admin_password: String,
    pub member_password: String,
    /// Bytes per second the proxy lets through towards Glance (0: no limit); `None` without one.
    pub throttle: Option<Arc<AtomicU64>>,
    /// How long `cloud.sh start` took.
    pub start_seconds: f64,
}

impl OpenStack {
    /// Keystone and Glance, the image endpoint Glance itself.
    pub fn start() -> OpenStack {
        OpenStack::start_with(None)
    }

    /// The image endpoint a proxy that forwards uploads at `bytes_per_second` (changeable
    /// through [`OpenStack::throttle`]; 0 lifts it).
    pub fn start_throttled(bytes_per_second: u64) -> OpenStack {
        OpenStack::start_with(Some(bytes_per_second))
    }

    fn start_with(throttle: Option<u64>) -> OpenStack {
        let venv = venv();
        assert!(
            venv.join("bin/keystone-manage").is_file() && venv.join("bin/openstack").is_file(),
            "Keystone, Glance and the OpenStack client are not in {}: run scripts/install-test-venv.sh \
             (pip install -r tests/venv/openstack.txt into that venv)",
            venv.display()
        );
        let dir = tempfile::Builder::new().prefix("strata-openstack-").tempdir().unwrap();
        let mut command = Command::new(repo().join("tests/openstack/cloud.sh"));
        command.arg("start").arg(dir.path()).env("STRATA_TEST_VENV", &venv);
        let throttle = throttle.map(|rate| {
            let limit = Arc::new(AtomicU64::new(rate));
            let port = throttling_proxy(dir.path().join("cloud.env"), Arc::clone(&limit));
            command.env("GLANCE_ENDPOINT", format!("http://127.0.0.1:{port}"));
            limit
        });
        let output = command.output().unwrap();
        if !output.status.success() {
            let log = std::fs::read_to_string(dir.path().join("setup.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "cloud.sh start failed: {}\nsetup.log's end:\n{}",
                String::from_utf8_lossy(&output.stderr),
                tail.join("\n")
            );
        }
        let start_seconds =
            String::from_utf8_lossy(&output.stdout).trim().parse::<f64>().unwrap_or(f64::NAN);
        eprintln!("openstack: Keystone and Glance up in {start_seconds:.1}s");
        let env = read_env(&dir.path().join("cloud.env"));
        OpenStack {
            admin_password: env["ADMIN_PASSWORD"].clone(),
            member_password: env["MEMBER_PASSWORD"].clone(),
            dir,
            throttle,
            start_seconds,
        }
    }

    pub fn clouds_yaml(&self) -> PathBuf {
        self.dir.path().join("clouds.yaml")
    }

    /// `cmd` with this cloud's clouds.yaml and none of the caller's OS_* variables.
    pub fn configure(&self, command: &mut Command) {
        for (name, _) in std::env::vars() {
            if name.starts_with("OS_") {
                command.env_remove(name);
            }
        }
        command.env("OS_CLIENT_CONFIG_FILE", self.clouds_yaml());
    }

    /// strata on `store`, with this cloud's clouds.yaml.
    pub fn strata(&self, store: &Path) -> Command {
        let mut command = Command::new(strata_bin());
        command.arg("--store").arg(store).env_remove("STRATA_STORE");
        self.configure(&mut command);
        command
    }

    /// The venv's `openstack` as `cloud` (`admin` or `member`).
    pub fn openstack(&self, cloud: &str, args: &[&str]) -> Output {
        let mut command = Command::new(venv().join("bin/openstack"));
        self.configure(&mut command);
        command.args(["--os-cloud", cloud]).args(args).output().unwrap()
    }

    /// `openstack … -f json`, parsed; the command must succeed.
    pub fn openstack_json(&self, cloud: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let output = self.openstack(cloud, &all);
        assert_success(&output, &format!("openstack {all:?}"));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Every image in the cloud, as the admin sees them (all projects), with their status.
    pub fn all_images(&self) -> Vec<Value> {
        self.openstack_json("admin", &["image", "list", "--long"]).as_array().unwrap().clone()
    }
}

impl Drop for OpenStack {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tests/openstack/cloud.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn read_env(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// A loopback TCP proxy to Glance (whose port `cloud.env` names once it is written) that lets
/// client bytes through at most `limit` bytes a second (0: no limit). Returns its port.
fn throttling_proxy(env_file: PathBuf, limit: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Some(glance) = read_env_port(&env_file) else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", glance)) else { continue };
            let limit = Arc::clone(&limit);
            let (client_in, server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(client_in, server_out, Some(&limit)));
            std::thread::spawn(move || pump(server, client, None));
        }
    });
    port
}

fn read_env_port(env_file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(env_file).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("GLANCE_PORT="))
        .and_then(|port| port.parse().ok())
}

/// Copies `from` to `to` until either closes, at most `limit` bytes a second when given.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<&AtomicU64>) {
    let mut buffer = vec![0u8; 64 << 10];
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(rate) =
            limit.map(|limit| limit.load(Ordering::Relaxed)).filter(|rate| *rate > 0)
        {
            // Rate limiting, not waiting for a condition: hold the copy back to `rate`.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
