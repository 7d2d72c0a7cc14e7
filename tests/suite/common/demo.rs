//! The demo built cold once per test run, shared by every guest test that needs built layers
//! (guest_build, guest_export, guest_check, guest_cache, guest_drift). A cold build costs about
//! four minutes under TCG; paying it once instead of once per test binary keeps CI under its
//! hour. The first caller builds it (holding a lock, so callers in other processes wait) into
//! `CARGO_TARGET_TMPDIR/guest-demo`; every caller gets its own full copy of the project and its
//! store, so no test can spoil another's. The fixture is built again when the strata binary,
//! the demo's files or the base image change.
//!
//! The copy's `[source]` is the base image by absolute path (not over HTTP, whose port changes
//! from test to test): the fetch tests cover downloads.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    assert_success, base_image_dir, copy_images_and_scripts, parse_events, repo, source_from,
    strata_bin,
};

/// A private copy of the built demo: `images/`, `scripts/` and `store/` in a temp folder.
pub struct BuiltDemo {
    pub dir: tempfile::TempDir,
    /// The events of the one cold build every copy comes from.
    pub cold_events: Vec<Value>,
    /// The store that cold build wrote, shared by every test: read it, never write to it.
    pub fixture_store: PathBuf,
}

impl BuiltDemo {
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    pub fn definition(&self) -> PathBuf {
        self.path("images/demo.toml")
    }

    /// strata on this copy's store.
    pub fn strata(&self) -> Command {
        let mut command = Command::new(strata_bin());
        command.arg("--store").arg(self.store()).env_remove("STRATA_STORE");
        command
    }

    /// `strata layers DEFINITION` in JSON on this copy's store: each stage's row, bottom-up.
    pub fn layers_table(&self, definition: &Path) -> Vec<Value> {
        self.layers_json(definition)["stages"].as_array().unwrap().clone()
    }

    /// `strata layers DEFINITION` as JSON: `stages` and the source's saved `first_boots`.
    pub fn layers_json(&self, definition: &Path) -> Value {
        let output = self
            .strata()
            .args(["--log-format", "json", "layers"])
            .arg(definition)
            .output()
            .unwrap();
        assert_success(&output, "strata layers");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Whether each stage of `definition` is cached, bottom-up (from `strata layers`).
    pub fn cached_stages(&self, definition: &Path) -> Vec<bool> {
        let rows = self.layers_table(definition);
        rows.iter().map(|row| row["cached"].as_bool().unwrap()).collect()
    }
}

/// The folder of the demo built cold once per test run (by this call, or by an earlier one), with
/// its lock held: `built/` holds the project, its `store/` and `cold-events.jsonl`.
fn built_fixture() -> (PathBuf, File) {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-demo");
    std::fs::create_dir_all(&root).unwrap();
    let lock = File::create(root.join("lock")).unwrap();
    lock.lock().unwrap();
    let built = root.join("built");
    let key = fixture_key();
    let current = std::fs::read_to_string(root.join("key")).unwrap_or_default();
    if current != key || !built.join("cold-events.jsonl").is_file() {
        let _ = std::fs::remove_file(root.join("key"));
        build_fixture(&built);
        std::fs::write(root.join("key"), &key).unwrap();
    }
    (built, lock)
}

/// The store of the demo built cold (see [`built_fixture`]), shared by every test: read it,
/// never write to it.
pub fn fixture_store() -> PathBuf {
    let (built, _lock) = built_fixture();
    built.join("store")
}

/// A fresh copy of the demo, built cold (by this call, or by an earlier one of this test run).
pub fn built_demo() -> BuiltDemo {
    let (built, lock) = built_fixture();
    let dir = tempfile::Builder::new().prefix("strata-demo-").tempdir().unwrap();
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(built.join("."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "copying the built demo");
    let cold_events = parse_events(&std::fs::read(built.join("cold-events.jsonl")).unwrap());
    drop(lock);
    BuiltDemo { dir, cold_events, fixture_store: built.join("store") }
}

/// The repository's `images/` and `scripts/` copied into `dir`, every definition's `[source]`
/// on the base image by absolute path. Returns the path of `images/demo.toml`.
pub fn demo_project(dir: &Path) -> PathBuf {
    copy_images_and_scripts(dir);
    let base = base_image_dir();
    let location = base.to_string_lossy();
    for entry in std::fs::read_dir(dir.join("images")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, source_from(&text, &location)).unwrap();
    }
    let definition = dir.join("images/demo.toml");
    let text = std::fs::read_to_string(&definition).unwrap();
    assert!(text.contains(&*location), "the demo's [source] is the base image");
    definition
}

fn build_fixture(built: &Path) {
    if built.exists() {
        std::fs::remove_dir_all(built).unwrap();
    }
    std::fs::create_dir_all(built).unwrap();
    let definition = demo_project(built);
    let started = std::time::Instant::now();
    let output = Command::new(strata_bin())
        .arg("--store")
        .arg(built.join("store"))
        .env_remove("STRATA_STORE")
        .args(["--log-format", "json", "build"])
        .arg(&definition)
        .output()
        .unwrap();
    assert_success(&output, "the demo's cold build (the shared fixture)");
    eprintln!("shared fixture: the demo's cold build took {:.1}s", started.elapsed().as_secs_f64());
    std::fs::write(built.join("cold-events.jsonl"), &output.stdout).unwrap();
}

/// What the fixture depends on: the strata binary (size and time), every file of the demo, and
/// the base image's checksums.
fn fixture_key() -> String {
    let mut hasher = Sha256::new();
    let binary = std::fs::metadata(strata_bin()).unwrap();
    hasher.update(format!("{} {:?}\n", binary.len(), binary.modified().unwrap()));
    let mut files = Vec::new();
    for folder in ["images", "scripts"] {
        collect_files(&repo().join(folder), &mut files);
    }
    files.push(base_image_dir().join("SHA256SUMS"));
    files.sort();
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&file).unwrap_or_default());
    }
    hex::encode(hasher.finalize())
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}
