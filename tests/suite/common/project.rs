//! A small project for CLI tests without a guest: a definition whose source is a local 32 MiB
//! qcow2, the strata binary on its store, and real layers committed as a build commits them.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn strata(store: &Path) -> Command {
    let mut command = Command::cargo_bin("strata").unwrap_or_else(|error| panic!("{error}"));
    command.arg("--store").arg(store).env_remove("STRATA_STORE").env_remove("NO_COLOR");
    command
}

pub fn run(program: &str, args: &[&str]) {
    let output = std::process::Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A definition whose source is a small local qcow2, in a temp folder.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src.qcow2");
        run("qemu-img", &["create", "-q", "-f", "qcow2", source.to_str().unwrap(), "32M"]);
        let sha256 = sha256_of(&source);
        let text = format!(
            "name = \"tiny\"\n[source]\nurl = \"src.qcow2\"\nchecksum = \"sha256:{sha256}\"\n\
             [[stage]]\nname = \"base\"\nsteps = [{{ shell = \"true\" }}]\n\
             [[stage]]\nname = \"final\"\nsteps = [{{ shell = \"true\" }}]\n\
             [export]\ntargets = [\"openstack\"]\n"
        );
        std::fs::write(dir.path().join("tiny.toml"), text).unwrap();
        Project { dir }
    }

    pub fn definition(&self) -> PathBuf {
        self.dir.path().join("tiny.toml")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

pub fn sha256_of(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// Commits a real layer for each stage, as a build would leave them: a qcow2 overlay on the
/// one below (relative backing file), with layer.json, through the library's layer store.
pub fn commit_layers(project: &Project) {
    commit_layers_with(project, |_| {});
}

/// [`commit_layers`], with `edit` changing each layer's record before it is committed (e.g.
/// the inventory it records).
pub fn commit_layers_with(project: &Project, edit: impl Fn(&mut strata::layer::LayerMetadata)) {
    use strata::layer::{LayerMetadata, LayerStore, PlanOptions, plan_from_store};
    let definition = strata::definition::load(&project.definition()).unwrap();
    let layers = LayerStore::new(strata::store::Store::open(&project.store()).unwrap());
    for stage in ["base", "final"] {
        let options = PlanOptions { stop_at: Some(stage.to_owned()), ..PlanOptions::default() };
        let plan = plan_from_store(&definition, &layers, &options).unwrap().unwrap();
        let planned = plan.stages.last().unwrap();
        let backing = planned.backing(&plan.source);
        let work = layers.begin(&planned.key).unwrap();
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", &backing, "disk.qcow2"])
            .current_dir(&work.dir)
            .status()
            .unwrap();
        assert!(status.success());
        run("qemu-io", &["-c", "write -P 0x33 1M 1M", work.disk().to_str().unwrap()]);
        let mut metadata = LayerMetadata {
            created: 1_795_906_865,
            virtual_bytes: 32 << 20,
            build_seconds: 1.0,
            os_id: Some("debian".into()),
            os_version: Some("12".into()),
            ..planned.metadata("tiny", backing)
        };
        edit(&mut metadata);
        layers.commit(work, metadata).unwrap();
    }
}
