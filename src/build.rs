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

/// Where a build's work goes.
pub struct BuildContext<'a> {
    pub definition: &'a ImageDefinition,
    pub layers: &'a LayerStore,
    pub log: &'a crate::report::buildlog::BuildLog,
    pub events: &'a Events,
    pub options: &'a BuildOptions,
}

/// A failed build, with what the user should know to go on.
#[derive(Debug, thiserror::Error)]
#[error("failed to build stage `{stage}`{}", kept_note(kept))]
pub struct BuildFailed {
    pub stage: String,
    #[source]
    pub source: crate::stage::StageError,
    /// `--keep-failed`: the failed stage's work folder.
    pub kept: Option<PathBuf>,
}

fn kept_note(kept: &Option<PathBuf>) -> String {
    kept.as_ref().map_or_else(String::new, |dir| {
        format!("\n  the failed stage's disk is kept in {}", dir.display())
    })
}

/// Fetches the source, plans, and builds every stage that is not cached, in order.
pub async fn run(context: &BuildContext<'_>) -> Result<Vec<StageOutcome>, Error> {
    let BuildContext { definition, layers, events, options, .. } = *context;
    let store = layers.store();
    let fetch_options =
        crate::source::FetchOptions { offline: options.offline, verify: options.verify };
    let source = crate::source::fetch(store, &definition.source, fetch_options, events).await?;
    // gc takes this lock exclusively: it never removes what a running build stands on.
    let _gc_guard = blocking_lock(store.clone(), "gc".to_owned(), true).await?;
    layers.clean_stale_tmp()?;
    let file_name = source
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plan = plan(definition, layers, source.digest.hex(), &file_name, options, SystemTime::now())?;
    announce(&plan, events);
    let accel = crate::qemu::accel::detect(definition.machine.accel);
    let mut outcomes: Vec<StageOutcome> = Vec::new();
    for planned in &plan {
        let started = Instant::now();
        if let Status::Cached(layer) = &planned.status {
            events.emit(cached_event(planned));
            outcomes.push(outcome(planned, layer, true, started));
            continue;
        }
        let layer = build_one(context, planned, &source, &outcomes, accel.accel).await?;
        let is_hit = layer.1;
        outcomes.push(outcome(planned, &layer.0, is_hit, started));
    }
    Ok(outcomes)
}

fn outcome(planned: &PlannedStage, layer: &Layer, cached: bool, started: Instant) -> StageOutcome {
    StageOutcome {
        stage: planned.stage.name.to_string(),
        key: planned.key.clone(),
        cached,
        seconds: seconds_since(started),
        bytes: layer.metadata.disk_bytes,
        disk: layer.disk(),
    }
}

/// Builds one stage under its key's lock. Returns the layer and whether someone else built it
/// while this build waited for the lock.
async fn build_one(
    context: &BuildContext<'_>,
    planned: &PlannedStage,
    source: &crate::source::FetchedSource,
    below: &[StageOutcome],
    accel: crate::qemu::spec::Accel,
) -> Result<(Layer, bool), Error> {
    let BuildContext { definition, layers, log, events, options } = *context;
    let key_name = format!("layer-{}", planned.key);
    let _lock = blocking_lock(layers.store().clone(), key_name, false).await?;
    let forced = matches!(planned.status, Status::Forced);
    if !forced && let Lookup::Hit(layer) = layers.lookup(&planned.key, false)? {
        events.emit(cached_event(planned));
        return Ok((layer, true));
    }
    let started = Instant::now();
    let stage_name = planned.stage.name.to_string();
    events.emit(Event::StageStarted { stage: stage_name.clone(), key: planned.key.to_string() });
    let work = layers.begin(&planned.key)?;
    let file_name =
        source.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let (foundation, parent_disk) = match &planned.parent {
        Some(parent) => {
            let disk = below
                .iter()
                .find(|outcome| &outcome.key == parent)
                .map_or_else(|| layers.dir(parent).join("disk.qcow2"), |outcome| outcome.disk.clone());
            (Foundation::Layer(parent), disk)
        }
        None => (
            Foundation::Source { sha256: source.digest.hex(), file_name: &file_name },
            source.path.clone(),
        ),
    };
    let backing = crate::layer::backing_for(&foundation);
    let log_dir = log.stage_dir(&stage_name).map_err(|source| LayerError::Write {
        path: log.dir().to_owned(),
        source,
    })?;
    let job = crate::stage::StageJob {
        definition,
        stage: &planned.stage,
        disk: work.disk(),
        backing: backing.clone(),
        parent_disk,
        grow_to: if planned.parent.is_none() {
            definition.machine.disk_size.map(crate::units::ByteSize::bytes)
        } else {
            None
        },
        accel,
        log_dir,
        events,
        snapshot: false,
    };
    let output = match crate::stage::build(job).await {
        Ok(output) => output,
        Err(error) => {
            let kept = options.keep_failed.then(|| work.keep());
            return Err(Error::Build(Box::new(BuildFailed { stage: stage_name, source: error, kept })));
        }
    };
    if forced {
        layers.retire(&planned.key)?;
    }
    let metadata = crate::layer::LayerMetadata {
        key: planned.key.to_string(),
        stage: stage_name.clone(),
        image: definition.name.clone(),
        parent: planned.parent.as_ref().map(ToString::to_string),
        backing,
        inputs: planned.inputs.clone(),
        created: crate::layer::now_secs(),
        strata_version: env!("CARGO_PKG_VERSION").to_owned(),
        disk_bytes: 0,
        virtual_bytes: output.virtual_bytes,
        disk_sha256: String::new(),
        disk_mtime_ns: 0,
        build_seconds: seconds_since(started),
        packages: output.facts.packages,
        os_id: output.facts.os_id,
        os_version: output.facts.os_version,
        guest_agent: output.facts.guest_agent,
    };
    let layer = layers.commit(work, metadata)?;
    events.emit(Event::LayerCommitted {
        stage: stage_name,
        key: planned.key.to_string(),
        bytes: layer.metadata.disk_bytes,
        seconds: seconds_since(started),
    });
    Ok((layer, false))
}

/// Takes a store lock on a blocking thread, so the runtime keeps running meanwhile.
async fn blocking_lock(
    store: crate::store::Store,
    name: String,
    shared: bool,
) -> Result<std::fs::File, Error> {
    let locked = tokio::task::spawn_blocking(move || {
        if shared { store.lock_shared(&name) } else { store.lock(&name) }
    })
    .await
    .map_err(|error| Error::Usage(format!("failed to wait for a store lock: {error}")))?;
    Ok(locked?)
}

/// The plan as the store has it now, without any network: `None` when the source has not
/// been fetched (then no key can be known).
pub fn plan_from_store(
    definition: &ImageDefinition,
    layers: &LayerStore,
    options: &BuildOptions,
) -> Result<Option<Vec<PlannedStage>>, Error> {
    let Some(source) = crate::source::lookup(layers.store(), &definition.source) else {
        return Ok(None);
    };
    let file_name =
        source.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    plan(definition, layers, source.digest.hex(), &file_name, options, SystemTime::now()).map(Some)
}
