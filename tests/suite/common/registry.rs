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
                 storage:\n  delete:\n    enabled: true\n  filesystem:\n    rootdirectory: {}\n\
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

/// The registry's HTTP API through `curl`, for tests that play the attacker (or an independent
/// reader): raw manifests, blobs, tags moved between repositories.
impl Registry {
    fn api(&self, repository: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}/v2/{repository}/{path}", self.port)
    }

    /// `curl` with `args`; the body and the HTTP status.
    fn curl(args: &[&str]) -> (Vec<u8>, u16) {
        let output = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs (Debian package curl)");
        assert!(
            output.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut body = output.stdout;
        let split = body.iter().rposition(|byte| *byte == b'\n').unwrap();
        let status = String::from_utf8_lossy(&body[split + 1..]).trim().parse().unwrap();
        body.truncate(split);
        (body, status)
    }

    /// The manifest `reference` (a tag or a digest) of `repository` as served, and its digest;
    /// `None` when there is none.
    pub fn manifest_in(&self, repository: &str, reference: &str) -> Option<(Vec<u8>, String)> {
        let url = self.api(repository, &format!("manifests/{reference}"));
        let (body, status) = Self::curl(&["-H", &format!("Accept: {OCI_MANIFEST}"), &url]);
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
        let digest = format!("sha256:{}", strata::layer::sha256_hex(&body));
        Some((body, digest))
    }

    pub fn manifest(&self, reference: &str) -> Option<(Vec<u8>, String)> {
        self.manifest_in(REPOSITORY, reference)
    }

    pub fn put_manifest(&self, tag: &str, bytes: &[u8]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let url = self.api(REPOSITORY, &format!("manifests/{tag}"));
        let data = format!("@{}", file.path().display());
        let (body, status) = Self::curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {OCI_MANIFEST}"),
            "--data-binary",
            &data,
            &url,
        ]);
        assert_eq!(status, 201, "PUT {url}: {}", String::from_utf8_lossy(&body));
    }

    pub fn delete_manifest(&self, digest: &str) {
        let url = self.api(REPOSITORY, &format!("manifests/{digest}"));
        let (body, status) = Self::curl(&["-X", "DELETE", &url]);
        assert_eq!(status, 202, "DELETE {url}: {}", String::from_utf8_lossy(&body));
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let url = self.api(REPOSITORY, &format!("blobs/{digest}"));
        let (body, status) = Self::curl(&["-L", &url]);
        assert_eq!(status, 200, "GET {url}");
        body
    }

    /// Copies `tag` of `from` (another repository of this registry) over the same tag of the
    /// cache's repository: its blobs mounted across, then its manifest as it is.
    pub fn copy_tag(&self, from: &str, tag: &str) {
        let (bytes, _) =
            self.manifest_in(from, tag).unwrap_or_else(|| panic!("{from} has no {tag}"));
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
        for layer in manifest["layers"].as_array().unwrap() {
            digests.push(layer["digest"].as_str().unwrap().to_owned());
        }
        for digest in digests {
            let url = self.api(REPOSITORY, &format!("blobs/uploads/?mount={digest}&from={from}"));
            let (body, status) = Self::curl(&["-X", "POST", "-d", "", &url]);
            assert_eq!(status, 201, "mount {digest}: {}", String::from_utf8_lossy(&body));
        }
        self.put_manifest(tag, &bytes);
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The cosign signature tag of a manifest digest.
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
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
