//! The plan: which stages a definition has, their cache keys, and whether the store holds a
//! layer for each. Owns "find a built stage in the store" for every command (build, export,
//! run, layers, gc). Must not build, boot nor delete anything; only `lookup` may set a corrupt
//! layer aside, as the store does.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{
    Foundation, Layer, LayerError, LayerKey, LayerMetadata, LayerStore, Lookup, compute_key,
};
use crate::definition::{ImageDefinition, Stage};
use crate::source::FetchedSource;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `--stage` or `--rebuild` named a stage the definition does not have: invalid input.
    #[error("{definition} has no stage `{name}`: its stages are {stages}")]
    UnknownStage { definition: String, name: String, stages: String },
    /// The stage asked for has no layer (or its source is not in the store).
    #[error("stage `{stage}` is not built ({reason})")]
    NotBuilt { stage: String, reason: String },
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// What selects and checks the stages of a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Stop after this stage (and consider only what it stands on).
    pub stop_at: Option<String>,
    /// Treat this stage and every stage above it as to be rebuilt, cached or not.
    pub rebuild: Option<String>,
    /// Rehash cached layers instead of trusting size and mtime.
    pub verify: bool,
    /// Move a corrupt layer out of `layers/` so it can be rebuilt: only a build does. A query
    /// (layers, export, run, gc's plan) leaves the store as it is and only reports it.
    pub set_aside_corrupt: bool,
}

/// One stage of a plan: its key, and whether a layer is there for it.
#[derive(Debug)]
pub struct PlannedStage {
    pub stage: Stage,
    pub key: LayerKey,
    pub inputs: serde_json::Value,
    pub parent: Option<LayerKey>,
    pub status: Status,
}

impl PlannedStage {
    /// The backing file of this stage's disk, as its qcow2 header names it: the parent's layer,
    /// or `source` for the first stage.
    #[must_use]
    pub fn backing(&self, source: &FetchedSource) -> String {
        let file_name = source_file_name(source);
        let foundation = match &self.parent {
            Some(parent) => Foundation::Layer(parent),
            None => Foundation::Source { sha256: source.digest.hex(), file_name: &file_name },
        };
        super::backing_for(&foundation)
    }

    /// The record of this stage's layer as far as the plan knows it (key, names, parent,
    /// inputs, time); the builder adds what the guest said, and `commit` the disk's size and
    /// digest.
    #[must_use]
    pub fn metadata(&self, image: &str, backing: String) -> LayerMetadata {
        LayerMetadata {
            key: self.key.to_string(),
            stage: self.stage.name.to_string(),
            image: image.to_owned(),
            parent: self.parent.as_ref().map(ToString::to_string),
            backing,
            inputs: self.inputs.clone(),
            created: super::now_secs(),
            strata_version: env!("CARGO_PKG_VERSION").to_owned(),
            ..LayerMetadata::default()
        }
    }
}

#[derive(Debug)]
pub enum Status {
    Cached(Box<Layer>),
    Missing,
    /// A layer was there but did not match its record; it was moved aside.
    Corrupt(String),
    /// `--rebuild` asked for it.
    Forced,
}

/// A plan and the source image its first stage stands on.
#[derive(Debug)]
pub struct Plan {
    pub source: FetchedSource,
    pub stages: Vec<PlannedStage>,
}

/// The seed template a stage boots with: its own `user_data`, or strata's built-in one.
pub fn seed_template(stage: &Stage) -> Result<String, LayerError> {
    match &stage.user_data {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| LayerError::ReadInput { path: path.clone(), source }),
        None => Ok(crate::seed::DEFAULT_TEMPLATE.to_owned()),
    }
}

/// The key of the source's saved first boot that the first stage `stage` would resume: its
/// [`super::boot_key`] on `source`, its template read as a build reads it. `None` when the
/// template cannot be read or rendered (the boot then says why). Builds and `strata layers`
/// both ask this.
#[must_use]
pub fn first_boot_key(
    definition: &ImageDefinition,
    stage: &Stage,
    source: &FetchedSource,
) -> Option<super::LayerKey> {
    let template = seed_template(stage).ok()?;
    super::boot_key(definition, stage, source.digest.hex(), &template)
}

/// The stages to consider, parents first: all of them, or the chain under `stop_at`.
pub fn selected_stages<'a>(
    definition: &'a ImageDefinition,
    stop_at: Option<&str>,
) -> Result<Vec<&'a Stage>, PlanError> {
    match stop_at {
        None => Ok(definition.stages.iter().collect()),
        Some(name) => {
            if definition.stage(name).is_none() {
                return Err(unknown_stage(definition, name));
            }
            Ok(definition.chain_to(name))
        }
    }
}

fn unknown_stage(definition: &ImageDefinition, name: &str) -> PlanError {
    let names: Vec<&str> = definition.stages.iter().map(|stage| stage.name.as_str()).collect();
    PlanError::UnknownStage {
        definition: definition.path.display().to_string(),
        name: name.to_owned(),
        stages: names.join(", "),
    }
}

/// The source's file name in `sources/`, part of the first stage's key.
#[must_use]
pub fn source_file_name(source: &FetchedSource) -> String {
    source.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Computes every selected stage's key and looks its layer up.
pub fn plan(
    definition: &ImageDefinition,
    layers: &LayerStore,
    source: FetchedSource,
    options: &PlanOptions,
    now: SystemTime,
) -> Result<Plan, PlanError> {
    if let Some(name) = &options.rebuild
        && definition.stage(name).is_none()
    {
        return Err(unknown_stage(definition, name));
    }
    let stages = selected_stages(definition, options.stop_at.as_deref())?;
    let file_name = source_file_name(&source);
    let mut keys: HashMap<&str, LayerKey> = HashMap::new();
    let mut forced: Vec<&str> = Vec::new();
    let mut planned = Vec::new();
    for stage in stages {
        let parent = stage.parent.as_ref().and_then(|name| keys.get(name.as_str())).cloned();
        let foundation = match &parent {
            Some(key) => Foundation::Layer(key),
            None => Foundation::Source { sha256: source.digest.hex(), file_name: &file_name },
        };
        let template = seed_template(stage)?;
        let inputs = compute_key(definition, stage, &foundation, &template, now)?;
        let parent_forced =
            stage.parent.as_ref().is_some_and(|name| forced.contains(&name.as_str()));
        let status = if options.rebuild.as_deref() == Some(stage.name.as_str()) || parent_forced {
            forced.push(stage.name.as_str());
            Status::Forced
        } else {
            let found = if options.set_aside_corrupt {
                layers.lookup(&inputs.key, options.verify)?
            } else {
                layers.inspect(&inputs.key, options.verify)?
            };
            match found {
                Lookup::Hit(layer) => Status::Cached(layer),
                Lookup::Missing => Status::Missing,
                Lookup::Corrupt { reason } => Status::Corrupt(reason),
            }
        };
        keys.insert(stage.name.as_str(), inputs.key.clone());
        planned.push(PlannedStage {
            stage: stage.clone(),
            key: inputs.key,
            inputs: inputs.document,
            parent,
            status,
        });
    }
    Ok(Plan { source, stages: planned })
}

/// The plan as the store has it now, without any network: `None` when the source has not
/// been fetched (then no key can be known).
pub fn plan_from_store(
    definition: &ImageDefinition,
    layers: &LayerStore,
    options: &PlanOptions,
) -> Result<Option<Plan>, PlanError> {
    let Some(source) = crate::source::lookup(layers.store(), &definition.source) else {
        return Ok(None);
    };
    plan(definition, layers, source, options, SystemTime::now()).map(Some)
}

/// A built stage: its layer, the layers under it (the first one on the source first), and the
/// source they stand on.
#[derive(Debug)]
pub struct BuiltStage {
    pub stage: Stage,
    pub layer: Layer,
    /// Each stage's name (the stage's own, which its layer's record may not share: a key does
    /// not depend on the name) and its layer.
    pub chain: Vec<(String, Layer)>,
    pub source: FetchedSource,
}

/// Finds `stage` (or the last stage) built in the store, with every layer under it.
pub fn built_stage(
    definition: &ImageDefinition,
    layers: &LayerStore,
    stage: Option<&str>,
) -> Result<BuiltStage, PlanError> {
    let name = match stage {
        Some(name) => name.to_owned(),
        None => definition.stages.last().map(|stage| stage.name.to_string()).unwrap_or_default(),
    };
    let not_built = |reason: String| PlanError::NotBuilt { stage: name.clone(), reason };
    let options = PlanOptions { stop_at: Some(name.clone()), ..PlanOptions::default() };
    let Some(plan) = plan_from_store(definition, layers, &options)? else {
        return Err(not_built("its source image is not in the store".to_owned()));
    };
    let mut chain = Vec::new();
    let mut top = None;
    for planned in plan.stages {
        let stage_name = planned.stage.name.to_string();
        match planned.status {
            Status::Cached(layer) => {
                chain.push((stage_name, (*layer).clone()));
                top = Some((planned.stage, *layer));
            }
            Status::Corrupt(reason) => {
                return Err(not_built(format!(
                    "the layer of stage `{stage_name}` was damaged: {reason}"
                )));
            }
            Status::Missing | Status::Forced => {
                return Err(not_built(format!(
                    "stage `{stage_name}` has no layer for its current inputs"
                )));
            }
        }
    }
    let (stage, layer) = top.ok_or_else(|| not_built("the definition has no stages".to_owned()))?;
    Ok(BuiltStage { stage, layer, chain, source: plan.source })
}
