//! Layer cache keys: the sha256 of a canonical encoding of everything that changes a stage's
//! disk, and nothing that does not (cpus, memory, timeouts, names).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::LayerError;
use crate::definition::{ImageDefinition, Stage, StepAction};

/// Bumped whenever the encoding below changes, or what a stage's layer holds for the same
/// inputs, so old layers are never mistaken for new ones. 2: sysprep removes package caches
/// by default (`keep_package_caches`). 3: every build guest is named `strata-build`, which its
/// layer's /etc/hostname and /etc/hosts keep until an instance's first boot renames them.
const KEY_FORMAT: u32 = 3;

/// A layer's content address: 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct LayerKey(String);

impl LayerKey {
    /// Accepts only what `compute` produces, so a key is always safe as a folder name.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let valid =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| LayerKey(text.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters: enough to tell layers apart in a table.
    #[must_use]
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for LayerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a stage stands on: the parent layer, or the source image for the first stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foundation<'a> {
    /// The source image: its content digest, and its file name in `sources/`.
    Source {
        sha256: &'a str,
        file_name: &'a str,
    },
    Layer(&'a LayerKey),
}

/// The inputs a key is computed from, kept in layer.json so a user can see why a key changed.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInputs {
    pub document: Value,
    pub key: LayerKey,
}

/// Computes `stage`'s key. `now` picks the refresh window, so a test can move time.
pub fn compute(
    definition: &ImageDefinition,
    stage: &Stage,
    foundation: &Foundation<'_>,
    seed_template: &str,
    now: SystemTime,
) -> Result<KeyInputs, LayerError> {
    let foundation = match foundation {
        Foundation::Source { sha256, .. } => json!({ "source_sha256": sha256 }),
        Foundation::Layer(parent) => json!({ "parent": parent.as_str() }),
    };
    let first_layer = stage.parent.is_none();
    let steps = stage.steps.iter().map(step_document).collect::<Result<Vec<_>, _>>()?;
    let document = json!({
        "format": KEY_FORMAT,
        "foundation": foundation,
        "disk_size": if first_layer { definition.machine.disk_size.map(crate::units::ByteSize::bytes) } else { None },
        "firmware": definition.machine.firmware.name(),
        "user": definition.communicator.user,
        "network": stage.network,
        "keep_package_caches": stage.keep_package_caches,
        "steps": steps,
        "seed_template_sha256": sha256_hex(seed_template.as_bytes()),
        "vars": definition.vars,
        "refresh_window": stage.refresh.map(|period| refresh_window(period, now)),
    });
    // serde_json's Map is a BTreeMap (no preserve_order feature), so keys are sorted:
    // the text below is canonical.
    let canonical = serde_json::to_vec(&document).map_err(LayerError::Encode)?;
    let key = LayerKey(sha256_hex(&canonical));
    Ok(KeyInputs { document, key })
}

/// Bumped when what a source's saved first boot holds changes for the same inputs.
/// 2: the machine's shape ([`machine_shape`]: cpus, memory, extra args) is part of the key.
const BOOT_KEY_FORMAT: u32 = 2;

/// The shape of the machine a guest is saved from and resumed into: what the definition and
/// the stage decide of it (cpus, memory, firmware, network, communicator, extra QEMU
/// arguments). The one definition of a saved guest's identity besides its disk: part of a
/// saved first boot's key ([`boot_key`]) and of every restore point's fingerprint
/// (`stage/restore.rs`), which is checked before QEMU starts. What only the host decides (the
/// QEMU version, the accelerator) is in the fingerprint alone.
#[must_use]
pub fn machine_shape(definition: &ImageDefinition, stage: &Stage) -> Value {
    let machine = &definition.machine;
    json!({
        "cpus": machine.cpus,
        "memory_mib": machine.memory.mebibytes(),
        "firmware": machine.firmware.name(),
        "network": stage.network,
        "communicator": format!("{:?}", definition.communicator.kind),
        "extra_args": machine.extra_args,
    })
}

/// The key of a source's saved first boot (`boots/KEY/`, see `restore_points.rs`), resumed by a
/// later build of a first stage `stage` instead of booting: the source, and everything that
/// shaped that boot up to the first step. That is the seed as rendered for `stage` (with
/// placeholder keys, as the real ones are made per build; any use of the image's or the
/// stage's name in a template changes it), the user, the disk size and the machine's shape
/// ([`machine_shape`]: a saved state loads only into the same cpus and memory, so another
/// shape gets a first boot of its own rather than one that cannot load).
/// `seed_template` is the stage's template text ([`super::seed_template`]). `None` when it cannot
/// be rendered: the boot then says why.
#[must_use]
pub fn boot_key(
    definition: &ImageDefinition,
    stage: &Stage,
    source_sha256: &str,
    seed_template: &str,
) -> Option<LayerKey> {
    let input = crate::seed::SeedInput::placeholder(
        &definition.communicator.user,
        &definition.name,
        stage.name.as_str(),
        definition.vars.clone(),
    );
    // The template's name only appears in render errors, which give no key here.
    let user_data = crate::seed::render(seed_template, "the seed template", &input).ok()?;
    let document = json!({
        "format": BOOT_KEY_FORMAT,
        "key_format": KEY_FORMAT,
        "source_sha256": source_sha256,
        "disk_size": definition.machine.disk_size.map(crate::units::ByteSize::bytes),
        "user": definition.communicator.user,
        "machine": machine_shape(definition, stage),
        "user_data_sha256": sha256_hex(user_data.as_bytes()),
        "hostname": input.hostname,
    });
    let canonical = serde_json::to_vec(&document).ok()?;
    Some(LayerKey(sha256_hex(&canonical)))
}

/// The index of the refresh period `now` falls in; it changes when the period has passed.
fn refresh_window(period: Duration, now: SystemTime) -> u64 {
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    since_epoch.as_secs() / period.as_secs().max(1)
}

fn step_document(step: &crate::definition::Step) -> Result<Value, LayerError> {
    let action = match &step.action {
        StepAction::Run { script } => json!({ "run": file_document(script)? }),
        StepAction::Shell { command } => json!({ "shell": command }),
        StepAction::Upload { from, to } => json!({ "upload": tree_document(from)?, "to": to }),
        StepAction::Reboot => json!({ "reboot": true }),
        StepAction::Ansible { playbook, extra_vars, tags } => {
            ansible_document(playbook, extra_vars, tags)?
        }
    };
    // The timeout is deliberately left out: it changes how long we wait, not the disk.
    Ok(json!({ "action": action, "env": step.env }))
}

/// A file's content and mode; its name and times do not matter.
fn file_document(path: &Path) -> Result<Value, LayerError> {
    let read = |source| LayerError::ReadInput { path: path.to_owned(), source };
    let bytes = fs::read(path).map_err(read)?;
    let mode = fs::metadata(path).map_err(read)?.permissions().mode() & 0o7777;
    Ok(json!({ "sha256": sha256_hex(&bytes), "mode": mode }))
}

/// An Ansible step's part of the key: everything under the playbook's folder (roles,
/// templates, group_vars, ansible.cfg; `.git` left out, which changes without the playbook
/// changing), which playbook in it, the extra vars and the tags. Symlinks count by their
/// target's name, as in an upload: a role linked from outside the folder is not followed.
pub fn ansible_document(
    playbook: &Path,
    extra_vars: &BTreeMap<String, Value>,
    tags: &[String],
) -> Result<Value, LayerError> {
    let folder =
        playbook.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = playbook.file_name().map(|name| name.to_string_lossy().into_owned());
    let tree = tree_document_skipping(folder, &[".git"])?;
    Ok(json!({ "ansible": name, "folder": tree, "extra_vars": extra_vars, "tags": tags }))
}

/// Every entry below `root` (sorted), with content, mode and symlink targets.
fn tree_document(root: &Path) -> Result<Value, LayerError> {
    tree_document_skipping(root, &[])
}

/// [`tree_document`] without the entries (and what is below them) named one of `skip`.
fn tree_document_skipping(root: &Path, skip: &[&str]) -> Result<Value, LayerError> {
    let read = |path: &Path| {
        let path = path.to_owned();
        move |source| LayerError::ReadInput { path, source }
    };
    let meta = fs::symlink_metadata(root).map_err(read(root))?;
    if !meta.is_dir() {
        return file_document(root);
    }
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(read(&dir))? {
            let entry = entry.map_err(read(&dir))?;
            if skip.iter().any(|name| entry.file_name() == *name) {
                continue;
            }
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(read(&path))?;
            let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            let mode = meta.permissions().mode() & 0o7777;
            let value = if meta.is_dir() {
                pending.push(path.clone());
                json!({ "dir": true, "mode": mode })
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).map_err(read(&path))?;
                json!({ "symlink": target.to_string_lossy() })
            } else {
                file_document(&path)?
            };
            entries.insert(relative, value);
        }
    }
    let mode = meta.permissions().mode() & 0o7777;
    Ok(json!({ "mode": mode, "entries": entries }))
}

#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::definition::{
        AccelChoice, Checksum, Communicator, CommunicatorKind, Compression, Digest, Export,
        ExportFormat, ExportTarget, Firmware, HashAlgo, Location, Machine, Source, StageName, Step,
    };
    use crate::units::ByteSize;

    const TEMPLATE: &str = "#cloud-config\n";

    struct Fixture {
        dir: tempfile::TempDir,
        definition: ImageDefinition,
    }

    fn step(action: StepAction) -> Step {
        Step { action, env: BTreeMap::new(), timeout: Duration::from_secs(60) }
    }

    fn stage(name: &str, parent: Option<&str>, steps: Vec<Step>) -> Stage {
        Stage {
            name: StageName::new(name).unwrap(),
            parent: parent.map(|p| StageName::new(p).unwrap()),
            user_data: None,
            refresh: None,
            network: true,
            keep_package_caches: false,
            steps,
        }
    }

    fn write_under(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| write_under(dir.path(), name, text);
        let harden = write("harden.sh", "#!/bin/sh\necho harden\n");
        let install = write("install.sh", "#!/bin/sh\necho install\n");
        write("app/app.py", "print('hi')\n");
        write("app/static/index.html", "<p>hi</p>\n");
        let definition = ImageDefinition {
            path: dir.path().join("demo.toml"),
            name: "demo".into(),
            description: None,
            source: Source {
                location: Location::File(dir.path().join("base.qcow2")),
                checksum: Checksum::Inline(Digest::new(HashAlgo::Sha256, &"a".repeat(64)).unwrap()),
            },
            machine: Machine {
                cpus: 2,
                memory: ByteSize(2 * ByteSize::GIB),
                disk_size: Some(ByteSize(4 * ByteSize::GIB)),
                firmware: Firmware::Bios,
                accel: AccelChoice::Auto,
                extra_args: vec![],
            },
            communicator: Communicator {
                kind: CommunicatorKind::Ssh,
                user: "builder".into(),
                ready_timeout: Duration::from_secs(600),
            },
            vars: BTreeMap::from([("app_port".to_owned(), "8080".to_owned())]),
            stages: vec![
                stage("base", None, vec![step(StepAction::Run { script: harden })]),
                stage(
                    "app-base",
                    Some("base"),
                    vec![step(StepAction::Shell { command: "useradd app".into() })],
                ),
                stage(
                    "final",
                    Some("app-base"),
                    vec![
                        step(StepAction::Upload {
                            from: dir.path().join("app"),
                            to: "/opt/app/".into(),
                        }),
                        step(StepAction::Run { script: install }),
                    ],
                ),
            ],
            export: Export {
                formats: vec![ExportFormat::Qcow2],
                compression: Compression::Zstd,
                targets: vec![ExportTarget::Generic],
            },
            tests: Vec::new(),
            drift: crate::definition::Drift {
                roots: crate::drift::Roots::default(),
                ignore: crate::drift::IgnoreRules::new::<&str>(&[]).unwrap(),
            },
        };
        Fixture { dir, definition }
    }

    /// Each stage's key, computed up the chain as a build does.
    fn keys(definition: &ImageDefinition, now: SystemTime) -> Vec<LayerKey> {
        let mut keys: Vec<LayerKey> = Vec::new();
        for stage in &definition.stages {
            let foundation = match keys.last() {
                None => Foundation::Source { sha256: "s", file_name: "sha256-s.qcow2" },
                Some(parent) => Foundation::Layer(parent),
            };
            keys.push(compute(definition, stage, &foundation, TEMPLATE, now).unwrap().key);
        }
        keys
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn changed(before: &[LayerKey], after: &[LayerKey]) -> Vec<bool> {
        before.iter().zip(after).map(|(a, b)| a != b).collect()
    }

    #[test]
    fn editing_the_final_script_changes_only_final() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        std::fs::write(fx.dir.path().join("install.sh"), "#!/bin/sh\necho v2\n").unwrap();
        assert_eq!(changed(&before, &keys(&fx.definition, now())), [false, false, true]);
    }

    #[test]
    fn editing_the_base_script_changes_all_three() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        std::fs::write(fx.dir.path().join("harden.sh"), "#!/bin/sh\necho v2\n").unwrap();
        assert_eq!(changed(&before, &keys(&fx.definition, now())), [true, true, true]);
    }

    #[test]
    fn cpus_memory_and_timeouts_change_nothing() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        let mut other = fx.definition.clone();
        other.machine.cpus = 8;
        other.machine.memory = ByteSize(8 * ByteSize::GIB);
        other.communicator.ready_timeout = Duration::from_secs(5);
        other.stages[2].steps[1].timeout = Duration::from_secs(1);
        assert_eq!(keys(&other, now()), before);
    }

    #[test]
    fn touching_a_file_without_changing_it_changes_nothing() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        let path = fx.dir.path().join("app/app.py");
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(3600)).unwrap();
        std::fs::write(fx.dir.path().join("harden.sh"), "#!/bin/sh\necho harden\n").unwrap();
        assert_eq!(keys(&fx.definition, now()), before);
    }

    #[test]
    fn changing_an_uploaded_files_mode_changes_its_stage() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        let path = fx.dir.path().join("app/app.py");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(changed(&before, &keys(&fx.definition, now())), [false, false, true]);
    }

    #[test]
    fn adding_a_file_to_an_uploaded_tree_changes_its_stage() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        std::fs::write(fx.dir.path().join("app/static/new.css"), "p{}").unwrap();
        assert_eq!(changed(&before, &keys(&fx.definition, now())), [false, false, true]);
    }

    #[test]
    fn vars_and_seed_template_change_every_stage() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        let mut other = fx.definition.clone();
        other.vars.insert("app_port".into(), "9090".into());
        assert_eq!(changed(&before, &keys(&other, now())), [true, true, true]);
        let foundation = Foundation::Source { sha256: "s", file_name: "x" };
        let a = compute(&fx.definition, &fx.definition.stages[0], &foundation, "a", now()).unwrap();
        let b = compute(&fx.definition, &fx.definition.stages[0], &foundation, "b", now()).unwrap();
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn keeping_package_caches_changes_the_stage_and_those_above() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        let mut other = fx.definition.clone();
        other.stages[1].keep_package_caches = true;
        assert_eq!(changed(&before, &keys(&other, now())), [false, true, true]);
    }

    #[test]
    fn refresh_expires_a_layer_and_its_dependents_after_its_period() {
        let fx = fixture();
        let mut definition = fx.definition.clone();
        definition.stages[0].refresh = Some(Duration::from_secs(7 * 86_400));
        let start = keys(&definition, now());
        let next_day = keys(&definition, now() + Duration::from_secs(86_400));
        assert_eq!(start, next_day, "within the period nothing expires");
        let next_week = keys(&definition, now() + Duration::from_secs(7 * 86_400));
        assert_eq!(changed(&start, &next_week), [true, true, true]);
    }

    #[test]
    fn disk_size_counts_for_the_first_layer_only() {
        let fx = fixture();
        let before = keys(&fx.definition, now());
        let mut other = fx.definition.clone();
        other.machine.disk_size = Some(ByteSize(8 * ByteSize::GIB));
        // The base key changes, and through it every key above; but the size is not
        // an input of the upper stages themselves.
        assert_eq!(changed(&before, &keys(&other, now())), [true, true, true]);
        let parent = LayerKey::parse(&"b".repeat(64)).unwrap();
        let upper = |d: &ImageDefinition| {
            compute(d, &d.stages[1], &Foundation::Layer(&parent), TEMPLATE, now()).unwrap().key
        };
        assert_eq!(upper(&fx.definition), upper(&other));
    }

    #[test]
    fn a_playbooks_folder_counts_but_not_its_git_or_its_times() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| write_under(dir.path(), name, text);
        let playbook = write("site.yml", "- hosts: all\n");
        write("roles/app/templates/app.conf.j2", "port={{ port }}\n");
        write(".git/index", "one");
        let vars = BTreeMap::from([("port".to_owned(), serde_json::json!(8080))]);
        let tags = vec!["app".to_owned()];
        let document = || ansible_document(&playbook, &vars, &tags).unwrap();
        let first = document();
        assert_eq!(first["ansible"], "site.yml");
        assert!(
            first["folder"]["entries"]["roles/app/templates/app.conf.j2"]["sha256"].is_string()
        );
        write(".git/index", "two");
        let file = std::fs::File::options().write(true).open(&playbook).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(3600)).unwrap();
        assert_eq!(document(), first, "git's files and times changed the key");
        write("roles/app/templates/app.conf.j2", "port={{ port }}\nworkers=2\n");
        let edited = document();
        assert_ne!(edited, first, "editing a template did not change the key");
        write("group_vars/all.yml", "x: 1\n");
        assert_ne!(document(), edited, "adding a file did not change the key");
        let other_tags = ansible_document(&playbook, &vars, &[]).unwrap();
        assert_ne!(other_tags["tags"], first["tags"]);
    }

    fn boot(definition: &ImageDefinition) -> LayerKey {
        boot_with(definition, "s").unwrap()
    }

    /// The boot key of `definition`'s first stage on source `sha256`, its template read as a
    /// build reads it.
    fn boot_with(definition: &ImageDefinition, sha256: &str) -> Option<LayerKey> {
        let stage = &definition.stages[0];
        let template = crate::layer::seed_template(stage).ok()?;
        boot_key(definition, stage, sha256, &template)
    }

    #[test]
    fn another_definition_or_a_changed_first_stage_resumes_the_same_first_boot() {
        let fx = fixture();
        let before = boot(&fx.definition);
        let mut other = fx.definition.clone();
        other.name = "another-image".into();
        other.stages[0].name = StageName::new("hardened").unwrap();
        other.stages[0].steps = vec![step(StepAction::Shell { command: "true".into() })];
        assert_eq!(boot(&other), before, "steps and names do not shape the boot");
    }

    #[test]
    fn what_shapes_the_first_boot_changes_its_key() {
        let fx = fixture();
        let before = boot(&fx.definition);
        let mut changes: Vec<ImageDefinition> = Vec::new();
        let mut user = fx.definition.clone();
        user.communicator.user = "someone".into();
        changes.push(user);
        let mut disk = fx.definition.clone();
        disk.machine.disk_size = Some(ByteSize(8 * ByteSize::GIB));
        changes.push(disk);
        let mut firmware = fx.definition.clone();
        firmware.machine.firmware = Firmware::Uefi;
        changes.push(firmware);
        let mut agent = fx.definition.clone();
        agent.communicator.kind = CommunicatorKind::GuestAgent;
        changes.push(agent);
        let mut network = fx.definition.clone();
        network.stages[0].network = false;
        changes.push(network);
        // A saved state loads only into the machine it was saved from.
        let mut cpus = fx.definition.clone();
        cpus.machine.cpus = 4;
        changes.push(cpus);
        let mut memory = fx.definition.clone();
        memory.machine.memory = ByteSize(ByteSize::GIB);
        changes.push(memory);
        // A template that names the image renders differently for each image.
        let mut named = fx.definition.clone();
        let template = write_under(fx.dir.path(), "seed.j2", "#cloud-config\n# {{ image }}\n");
        named.stages[0].user_data = Some(template);
        let named_key = boot(&named);
        named.name = "another-image".into();
        assert_ne!(boot(&named), named_key);
        changes.push(named);
        for changed in &changes {
            assert_ne!(boot(changed), before);
        }
        assert_ne!(boot_with(&fx.definition, "t").unwrap(), before);
        let mut unreadable = fx.definition.clone();
        unreadable.stages[0].user_data = Some(fx.dir.path().join("missing.j2"));
        assert!(boot_with(&unreadable, "s").is_none());
        let broken = "#cloud-config\n{{ no_such_variable }}\n";
        assert!(boot_key(&fx.definition, &fx.definition.stages[0], "s", broken).is_none());
    }

    #[test]
    fn keys_are_stable_hex() {
        let fx = fixture();
        let first = keys(&fx.definition, now());
        assert_eq!(first, keys(&fx.definition, now()));
        for key in &first {
            assert!(LayerKey::parse(key.as_str()).is_some());
        }
        // Pinned: a silent change of the key encoding would invalidate every cached layer. If
        // this fails on purpose, say so in the release notes (every layer is rebuilt once).
        let pinned: Vec<&str> = first.iter().map(LayerKey::as_str).collect();
        assert_eq!(
            pinned,
            [
                "d0059f7cde3fe7a4a48aabd3886040ae838b6b799eff0fbfede2e7eed845d679",
                "6c49ec12be6b419759de8e495bd53e806e0c66688562cb269fc5fdf60b7c82ca",
                "2b4084ac5f1f473d001b044dc8d5b2ed1e9b088f9331f3354ef8f5d09e8ad4f9",
            ]
        );
    }
}
