//! A whole build: which stages are cached, which must be built, in which order, and handing
//! each one to `stage/` under the layer's lock. Owns `--stage`, `--rebuild` and the summary;
//! must not touch QEMU or the guest itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::definition::{ImageDefinition, Stage};
use crate::error::Error;
use crate::events::{Event, Events};
use crate::layer::{Foundation, Layer, LayerError, LayerKey, LayerStore, Lookup, compute_key};

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Stop after this stage (and build only what it stands on).
    pub stop_at: Option<String>,
    /// Rebuild this stage and every stage above it, cached or not.
    pub rebuild: Option<String>,
    pub offline: bool,
    pub keep_failed: bool,
    /// Rehash cached layers and sources instead of trusting size and mtime.
    pub verify: bool,
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

#[derive(Debug)]
pub enum Status {
    Cached(Layer),
    Missing,
    /// A layer was there but did not match its record; it was moved aside.
    Corrupt(String),
    /// `--rebuild` asked for it.
    Forced,
}

/// The seed template a stage boots with: its own `user_data`, or strata's built-in one.
pub fn seed_template(stage: &Stage) -> Result<String, LayerError> {
    match &stage.user_data {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| LayerError::ReadInput { path: path.clone(), source }),
        None => Ok(crate::seed::DEFAULT_TEMPLATE.to_owned()),
    }
}

/// The stages to consider, parents first: all of them, or the chain under `stop_at`.
pub fn selected_stages<'a>(
    definition: &'a ImageDefinition,
    stop_at: Option<&str>,
) -> Result<Vec<&'a Stage>, Error> {
    match stop_at {
        None => Ok(definition.stages.iter().collect()),
        Some(name) => {
            if definition.stage(name).is_none() {
                return Err(Error::Usage(unknown_stage(definition, name)));
            }
            Ok(definition.chain_to(name))
        }
    }
}

fn unknown_stage(definition: &ImageDefinition, name: &str) -> String {
    let names: Vec<&str> = definition.stages.iter().map(|stage| stage.name.as_str()).collect();
    format!(
        "{} has no stage `{name}`: its stages are {}",
        definition.path.display(),
        names.join(", ")
    )
}

/// Computes every selected stage's key and looks its layer up.
pub fn plan(
    definition: &ImageDefinition,
    layers: &LayerStore,
    source_sha256: &str,
    source_file_name: &str,
    options: &BuildOptions,
    now: SystemTime,
) -> Result<Vec<PlannedStage>, Error> {
    if let Some(name) = &options.rebuild
        && definition.stage(name).is_none()
    {
        return Err(Error::Usage(unknown_stage(definition, name)));
    }
    let stages = selected_stages(definition, options.stop_at.as_deref())?;
    let mut keys: HashMap<&str, LayerKey> = HashMap::new();
    let mut forced: Vec<&str> = Vec::new();
    let mut planned = Vec::new();
    for stage in stages {
        let parent = stage.parent.as_ref().and_then(|name| keys.get(name.as_str())).cloned();
        let foundation = match &parent {
            Some(key) => Foundation::Layer(key),
            None => Foundation::Source { sha256: source_sha256, file_name: source_file_name },
        };
        let template = seed_template(stage)?;
        let inputs = compute_key(definition, stage, &foundation, &template, now)?;
        let parent_forced =
            stage.parent.as_ref().is_some_and(|name| forced.contains(&name.as_str()));
        let status = if options.rebuild.as_deref() == Some(stage.name.as_str()) || parent_forced {
            forced.push(stage.name.as_str());
            Status::Forced
        } else {
            match layers.lookup(&inputs.key, options.verify)? {
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
    Ok(planned)
}

/// What a build did, stage by stage.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    pub stage: String,
    pub key: LayerKey,
    pub cached: bool,
    pub seconds: f64,
    pub bytes: u64,
    pub disk: PathBuf,
}

/// Emits what the plan found before anything is built, so a user sees it at once.
pub fn announce(plan: &[PlannedStage], events: &Events) {
    for planned in plan {
        if let Status::Corrupt(reason) = &planned.status {
            events.warn(format!(
                "layer {} of stage {} does not match its record ({reason}); it will be rebuilt",
                planned.key.short(),
                planned.stage.name
            ));
        }
    }
}

/// Wall time since `start`, for events.
#[must_use]
pub fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The event for a cached stage.
#[must_use]
pub fn cached_event(planned: &PlannedStage) -> Event {
    Event::StageCached { stage: planned.stage.name.to_string(), key: planned.key.to_string() }
}
