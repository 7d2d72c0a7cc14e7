//! A real registry for tests: Debian's `docker-registry` (distribution v2) on 127.0.0.1, its
//! own folder and a free port, optionally with htpasswd basic auth; killed when dropped.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata::cache::CacheUrl;

pub const REPOSITORY: &str = "strata/cache";

/// A registry serving `root` on `port`; killed when dropped.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    root: PathBuf,
    config: PathBuf,
}

impl Registry {
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let root = dir.join("registry-data");
        let auth = htpasswd.map_or_else(String::new, |file| {
            format!("auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n", file.display())
        });
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth}",
                root.display()
            ),
        )
        .unwrap();
        let mut registry = Registry { child: None, port, root, config };
        registry.restart();
        registry
    }

    /// (Re)starts it on the same port and storage; returns when `GET /v2/` answers.
    pub fn restart(&mut self) {
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (Debian package docker-registry)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers(self.port) {
            assert!(Instant::now() < deadline, "the registry did not answer GET /v2/");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> CacheUrl {
        CacheUrl::parse(&format!("oci+http://127.0.0.1:{}/{REPOSITORY}", self.port)).unwrap()
    }

    /// Every blob's data file in its storage.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![self.root.join("docker/registry/v2/blobs")];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if entry.file_name() == "data" {
                    found.push(path);
                }
            }
        }
        found
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
