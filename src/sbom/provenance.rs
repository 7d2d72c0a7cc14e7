//! Provenance of an exported image: an in-toto Statement v1 (<https://in-toto.io/Statement/v1>)
//! whose predicate is SLSA Provenance v1 (<https://slsa.dev/provenance/v1>). Subject: the
//! exported files and their sha256. External parameters: the definition (path, sha256), the
//! image and the stage. Resolved dependencies: the source image (URI, sha256) and every local
//! file a step of the chain used (scripts, uploaded trees, Ansible folders, seed templates).
//! Run details: strata as the builder with its version, and when the layers were built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{Contents, SbomError};
use crate::definition::{ImageDefinition, StepAction};
use crate::layer::{BuiltStage, LayerMetadata};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What kind of build this is, for a verifier's policy: one stage of a strata definition,
/// as layers on a source image. A URI naming the parameters' schema (described in the README).
pub const BUILD_TYPE: &str = "https://strata.invalid/provenance/stage/v1";
/// The builder's id; strata's version is in `builder.version`.
pub const BUILDER_ID: &str = "https://strata.invalid/builder/strata";

/// A file the build used, by its path relative to the definition's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedFile {
    pub name: String,
    pub sha256: String,
    /// The stage whose step (or seed) used it.
    pub stage: String,
    /// `run`, `upload`, `ansible`, `user_data`.
    pub used_as: &'static str,
}

/// What a stage's build read on the host, collected when the export is resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildInputs {
    /// As the user gave it.
    pub definition_path: String,
    pub definition_sha256: String,
    pub files: Vec<UsedFile>,
    /// Each layer of the chain, the first one on the source first.
    pub layers: Vec<LayerMetadata>,
}

impl BuildInputs {
    /// Reads the definition file and every local file the chain's steps name, and hashes them.
    /// The layers were found by keys computed from these same files, so they are what built them.
    pub fn collect(
        definition: &ImageDefinition,
        shown: &Path,
        built: &BuiltStage,
    ) -> Result<BuildInputs, SbomError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|source| SbomError::ReadInput { path: path.to_owned(), source })
        };
        let definition_sha256 = crate::layer::sha256_hex(&read(&definition.path)?);
        let base = definition.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut files = Vec::new();
        for (stage_name, _) in &built.chain {
            let Some(stage) = definition.stage(stage_name) else { continue };
            let mut add = |path: &Path,
                           used_as: &'static str,
                           skip: &[&str]|
             -> Result<(), SbomError> {
                for file in tree_files(path, skip)? {
                    let sha256 = crate::layer::sha256_hex(&read(&file)?);
                    let name =
                        file.strip_prefix(&base).unwrap_or(&file).to_string_lossy().into_owned();
                    files.push(UsedFile { name, sha256, stage: stage_name.clone(), used_as });
                }
                Ok(())
            };
            if let Some(user_data) = &stage.user_data {
                add(user_data, "user_data", &[])?;
            }
            for step in &stage.steps {
                match &step.action {
                    StepAction::Run { script } => add(script, "run", &[])?,
                    StepAction::Upload { from, .. } => add(from, "upload", &[])?,
                    StepAction::Ansible { playbook, .. } => {
                        let folder = playbook.parent().filter(|dir| !dir.as_os_str().is_empty());
                        add(folder.unwrap_or(Path::new(".")), "ansible", &[".git"])?;
                    }
                    StepAction::Shell { .. } | StepAction::Reboot => {}
                }
            }
        }
        Ok(BuildInputs {
            definition_path: shown.display().to_string(),
            definition_sha256,
            files,
            layers: built.chain.iter().map(|(_, layer)| layer.metadata.clone()).collect(),
        })
    }
}

/// The regular files at or under `root`, sorted; symlinks are not followed (the layer key
/// counts them by their target's name).
fn tree_files(root: &Path, skip: &[&str]) -> Result<Vec<PathBuf>, SbomError> {
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| SbomError::ReadInput { path, source }
    };
    let meta = std::fs::symlink_metadata(root).map_err(error(root))?;
    if meta.is_file() {
        return Ok(vec![root.to_owned()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(error(&dir))? {
            let entry = entry.map_err(error(&dir))?;
            if skip.iter().any(|name| entry.file_name() == *name) {
                continue;
            }
            let kind = entry.file_type().map_err(error(&entry.path()))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// One exported file: its name beside the others and its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub sha256: String,
}

/// The Statement, as JSON.
#[must_use]
pub fn statement(
    contents: &Contents,
    inputs: &BuildInputs,
    subjects: &[Subject],
    byproducts: &[Subject],
) -> Value {
    let digest = |sha256: &str| json!({ "sha256": sha256 });
    let mut dependencies = vec![json!({
        "name": contents.source.file_name,
        "uri": contents.source.uri(),
        "digest": digest(&contents.source.sha256),
        "annotations": { "role": "source image" },
    })];
    for file in &inputs.files {
        dependencies.push(json!({
            "name": file.name,
            "digest": digest(&file.sha256),
            "annotations": { "stage": file.stage, "used_as": file.used_as },
        }));
    }
    let started = inputs
        .layers
        .iter()
        .map(|layer| layer.created.saturating_sub(layer.build_seconds.max(0.0) as u64))
        .min();
    let finished = inputs.layers.iter().map(|layer| layer.created).max();
    let time = |secs: u64| {
        crate::units::format_utc(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("invocationId".into(), json!(contents.layer_key));
    if let Some(started) = started {
        metadata.insert("startedOn".into(), json!(time(started)));
    }
    if let Some(finished) = finished {
        metadata.insert("finishedOn".into(), json!(time(finished)));
    }
    let layers: Vec<Value> = inputs
        .layers
        .iter()
        .zip(&contents.layers)
        .map(|(layer, (stage, _))| {
            json!({
                "stage": stage,
                "key": layer.key,
                "disk_sha256": layer.disk_sha256,
                "sealed_at": time(layer.created),
                "build_seconds": layer.build_seconds,
                "built_by": layer.strata_version,
            })
        })
        .collect();
    let mut builder_versions = BTreeMap::new();
    builder_versions.insert("strata".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects.iter().map(|s| json!({ "name": s.name, "digest": digest(&s.sha256) })).collect::<Vec<_>>(),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "definition": { "path": inputs.definition_path, "digest": digest(&inputs.definition_sha256) },
                    "image": contents.image,
                    "stage": contents.stage,
                },
                "internalParameters": { "layers": layers },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": { "id": BUILDER_ID, "version": builder_versions },
                "metadata": metadata,
                "byproducts": byproducts.iter().map(|s| json!({ "name": s.name, "digest": digest(&s.sha256) })).collect::<Vec<_>>(),
            },
        },
    })
}

/// The `.intoto.jsonl` line: the Statement in a DSSE envelope signed by `signer`, or the bare
/// Statement without one; one line of JSON, ending in a newline.
pub fn jsonl(
    statement: &Value,
    signer: Option<&dyn super::dsse::Signer>,
) -> Result<Vec<u8>, SbomError> {
    let encode = |value: &Value| {
        serde_json::to_vec(value).map_err(|source| SbomError::Encode { what: "provenance", source })
    };
    let payload = encode(statement)?;
    let mut line = match signer {
        Some(signer) => {
            let envelope = super::dsse::sign(super::dsse::IN_TOTO, &payload, signer);
            serde_json::to_vec(&envelope)
                .map_err(|source| SbomError::Encode { what: "provenance", source })?
        }
        None => payload,
    };
    line.push(b'\n');
    Ok(line)
}
