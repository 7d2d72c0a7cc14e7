//! Comparing layers by their records alone (no network, no guest): `strata diff` (the packages
//! and files that changed between two layers) and the baseline `strata drift` compares live
//! servers with. A side is a stage of the definition or a layer key, resolved to its built
//! layer's inventory. The comparison itself is `drift::compare`.

use std::path::{Path, PathBuf};

use super::{LayerError, LayerKey, LayerMetadata, LayerStore, Lookup, PlanError, PlanOptions};
use super::{PlannedStage, Status, plan_from_store};
use crate::definition::ImageDefinition;
use crate::drift::{Compare, Finding, Inventory, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(
        "the source of {0} is not in the store, so no layer can be found: run `strata build {0}`",
        definition.display()
    )]
    NoSource { definition: PathBuf },
    #[error(
        "{what} is not built: run `strata build {}` first (`strata layers` shows what is)",
        definition.display()
    )]
    NotBuilt { what: String, definition: PathBuf },
    /// Invalid input: exit 2.
    #[error(
        "`{name}` is neither a stage of {} nor a layer key (64 hex characters, or the 12 \
         `strata layers` shows)",
        definition.display()
    )]
    UnknownName { name: String, definition: PathBuf },
    #[error(
        "{what} of {0} is not in the store, so there is nothing to compare with: \
         run `strata build {0}` or `strata pull {0}` first",
        definition.display()
    )]
    NotInStore { what: String, definition: PathBuf },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// One side of a comparison: what the user named, and its layer's record.
#[derive(Debug, Clone)]
pub struct Side {
    pub label: String,
    pub inventory: Inventory,
}

/// What changed from one layer to another.
#[derive(Debug, Clone)]
pub struct LayerDiff {
    pub from: String,
    pub to: String,
    pub findings: Vec<Finding>,
}

/// `strata diff`: `from` against `to` (stages or layer keys). By default each built stage
/// against its parent; the first stage against an empty system (the source image has no
/// inventory without booting it), so it lists every package and file its layer holds.
pub fn diff(
    definition: &ImageDefinition,
    definition_path: &Path,
    layers: &LayerStore,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<LayerDiff>, DiffError> {
    let Some(plan) = plan_from_store(definition, layers, &PlanOptions::default())? else {
        return Err(DiffError::NoSource { definition: definition_path.to_owned() });
    };
    let resolve = |name: &str| resolve(name, &plan.stages, layers, definition_path);
    let pairs: Vec<(Side, Side)> = match (from, to) {
        (None, None) => {
            let mut pairs = Vec::new();
            for planned in &plan.stages {
                let after = resolve(planned.stage.name.as_str())?;
                let before = match &planned.stage.parent {
                    Some(parent) => resolve(parent.as_str())?,
                    None => empty_like(&after),
                };
                pairs.push((before, after));
            }
            pairs
        }
        (from, to) => {
            let last = plan.stages.last().map(|planned| planned.stage.name.to_string());
            let to_name = to.map(str::to_owned).or(last).unwrap_or_default();
            let after = resolve(&to_name)?;
            let before = match from {
                Some(from) => resolve(from)?,
                None => match definition.stage(&to_name).and_then(|stage| stage.parent.as_ref()) {
                    Some(parent) => resolve(parent.as_str())?,
                    None => empty_like(&after),
                },
            };
            vec![(before, after)]
        }
    };
    let how = Compare { ignore: &definition.drift.ignore, detect_different_system: false };
    Ok(pairs
        .iter()
        .map(|(before, after)| LayerDiff {
            from: before.label.clone(),
            to: after.label.clone(),
            findings: crate::drift::compare(&before.inventory, &after.inventory, &how),
        })
        .collect())
}

/// A stage of the definition, or a layer key (whole, or the 12-character short form `strata
/// layers` shows), to its built layer's inventory.
fn resolve(
    name: &str,
    stages: &[PlannedStage],
    layers: &LayerStore,
    definition_path: &Path,
) -> Result<Side, DiffError> {
    let not_built =
        |what: String| DiffError::NotBuilt { what, definition: definition_path.to_owned() };
    if let Some(planned) = stages.iter().find(|planned| planned.stage.name.as_str() == name) {
        return match &planned.status {
            Status::Cached(layer) => Ok(side(name, &layer.metadata)),
            _ => Err(not_built(format!("stage `{name}`"))),
        };
    }
    let key = stages
        .iter()
        .find(|planned| planned.key.as_str().starts_with(name) && name.len() >= 12)
        .map(|planned| planned.key.clone())
        .or_else(|| LayerKey::parse(name));
    let Some(key) = key else {
        return Err(DiffError::UnknownName {
            name: name.to_owned(),
            definition: definition_path.to_owned(),
        });
    };
    match layers.lookup(&key, false)? {
        Lookup::Hit(layer) => Ok(side(key.short(), &layer.metadata)),
        _ => Err(not_built(format!("layer {}", key.short()))),
    }
}

/// The record of the layer of `stage` (default: the last), labelled with the stage's name:
/// what `strata drift` compares servers with.
pub fn side_of_stage(
    definition: &ImageDefinition,
    layers: &LayerStore,
    stage: Option<&str>,
    definition_path: &Path,
) -> Result<Side, DiffError> {
    let options = PlanOptions { stop_at: stage.map(str::to_owned), ..PlanOptions::default() };
    let not_in_store = |what: &str| DiffError::NotInStore {
        what: what.to_owned(),
        definition: definition_path.to_owned(),
    };
    let Some(plan) = plan_from_store(definition, layers, &options)? else {
        return Err(not_in_store("the source"));
    };
    let Some(planned) = plan.stages.last() else {
        return Err(not_in_store("no stage"));
    };
    let name = planned.stage.name.as_str();
    match &planned.status {
        Status::Cached(layer) => Ok(side(name, &layer.metadata)),
        _ => Err(not_in_store(&format!("the layer of stage `{name}`"))),
    }
}

fn side(label: &str, metadata: &LayerMetadata) -> Side {
    let os = metadata
        .os_id
        .clone()
        .map(|id| crate::drift::OsRelease { id, version_id: metadata.os_version.clone() });
    Side {
        label: label.to_owned(),
        inventory: Inventory {
            os,
            packages: metadata.packages.clone(),
            files: metadata.files.clone(),
        },
    }
}

/// Nothing installed, nothing on disk, under the same roots as `after`: what the first stage
/// is compared with.
fn empty_like(after: &Side) -> Side {
    Side {
        label: "(nothing)".to_owned(),
        inventory: Inventory {
            os: after.inventory.os.clone(),
            packages: Vec::new(),
            files: Manifest { roots: after.inventory.files.roots.clone(), entries: Vec::new() },
        },
    }
}
