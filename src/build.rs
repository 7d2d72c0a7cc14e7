//! A whole build: fetching the source, the plan (from `layer::plan`, which owns `--stage` and
//! `--rebuild`), building the stages that are not cached in order, as few boots as the guest
//! allows, each under its layer's lock, and committing each one; the warm-start policy
//! (`warm`) and the shared cache (`shared_cache`). What happens in the guest and to QEMU is
//! `stage/`'s: this module only hands it jobs.

// Stage errors carry console tails for the user; see `stage`.
#![allow(clippy::result_large_err)]

mod shared_cache;
mod warm;

pub use shared_cache::{CacheOptions, SharedCache, connect as connect_cache};

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::definition::ImageDefinition;
use crate::events::{Event, Events};
use crate::layer::{
    Foundation, Layer, LayerError, LayerKey, LayerStore, Lookup, PlanError, PlanOptions,
    PlannedStage, Status, WorkDir,
};
use crate::store::LockMode;

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--stage`, `--rebuild` and `--verify`: which stages, and how cached ones are checked.
    pub plan: PlanOptions,
    pub offline: bool,
    pub keep_failed: bool,
    /// Never save nor resume restore points: every stage boots.
    pub no_warm: bool,
    /// `--max-restore-size`: restore points in the store take at most this much; the oldest
    /// go first. `None`: no cap.
    pub max_restore_size: Option<crate::units::ByteSize>,
}

/// Why a build stopped. The crate-wide error (in `cli/`) wraps it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Failed(Box<BuildFailed>),
}

/// What a build did, stage by stage.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    pub stage: String,
    pub key: LayerKey,
    pub cached: bool,
    pub seconds: f64,
    /// What the layer takes on disk.
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
    /// The build's log folder: each stage's console and step logs go in `LOG_DIR/STAGE/`.
    pub log_dir: &'a Path,
    pub events: &'a Events,
    pub options: &'a BuildOptions,
    /// `--cache`: the shared cache, when one is given and could be reached.
    pub cache: Option<&'a SharedCache>,
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

impl BuildFailed {
    /// Whether the guest's disk can tell more (a step failed, the guest stopped answering or
    /// QEMU died): not when QEMU could not even start.
    #[must_use]
    pub fn in_guest(&self) -> bool {
        matches!(
            self.source,
            crate::stage::StageError::StepFailed { .. }
                | crate::stage::StageError::Communicator { .. }
                | crate::stage::StageError::QemuDied { .. }
        )
    }
}

fn kept_note(kept: &Option<PathBuf>) -> String {
    kept.as_ref().map_or_else(String::new, |dir| {
        format!("\n  the failed stage's disk is kept in {}", dir.display())
    })
}

/// Fetches the source, plans, and builds every stage that is not cached, in order.
/// Consecutive stages to build share one boot: each one's layer is cut from the running guest.
pub async fn run(context: &BuildContext<'_>) -> Result<Vec<StageOutcome>, BuildError> {
    let BuildContext { definition, layers, events, options, .. } = *context;
    if !options.no_warm {
        // QEMU runs zstd to save and to resume restore points (`exec:zstd`).
        crate::process::require_program("zstd")?;
    }
    let store = layers.store();
    let fetch_options =
        crate::source::FetchOptions { offline: options.offline, verify: options.plan.verify };
    if let Some(shared) = context.cache
        && !options.offline
    {
        shared.pull_source_if_missing(store, &definition.source, events).await?;
    }
    let source = crate::source::fetch(store, &definition.source, fetch_options, events).await?;
    // gc takes this lock exclusively: it never removes what a running build stands on.
    let _gc_guard = store.lock_async("gc", LockMode::Shared).await?;
    layers.clean_stale_tmp()?;
    // A cap lowered since the last build holds from now on.
    warm::cap_restore_points(context);
    // Run folders of builds and runs that were killed (their seeds hold private keys).
    let _ = crate::stage::sweep_stale_run_dirs(&std::env::temp_dir());
    let mut plan =
        crate::layer::plan(definition, layers, source.clone(), &options.plan, SystemTime::now())?;
    if let Some(shared) = context.cache
        && !options.offline
    {
        if shared.pull_for_plan(&plan.stages, layers, events).await? > 0 {
            plan = crate::layer::plan(
                definition,
                layers,
                source.clone(),
                &options.plan,
                SystemTime::now(),
            )?;
        }
        if !options.no_warm {
            shared.pull_restore_points(&plan.stages, layers, events).await?;
            warm::cap_restore_points(context);
        }
    }
    announce(&plan.stages, events);
    let mut builder =
        Builder { context, source: &plan.source, outcomes: Vec::new(), live_cuts: true };
    let plan = &plan.stages;
    let mut index = 0;
    while index < plan.len() {
        if let Status::Cached(layer) = &plan[index].status {
            events.emit(cached_event(&plan[index]));
            builder.outcomes.push(outcome(&plan[index], layer, true, Instant::now()));
            index += 1;
            continue;
        }
        let run = one_boot_run(&plan[index..]);
        builder.build_run(&plan[index..index + run]).await?;
        index += run;
    }
    if let Some(shared) = context.cache
        && shared.pushes()
        && !options.offline
    {
        let keys: Vec<LayerKey> =
            builder.outcomes.iter().map(|outcome| outcome.key.clone()).collect();
        shared.push(&source, &keys, layers, events).await?;
    }
    Ok(builder.outcomes)
}

/// How many stages from the start of `plan` one guest can build in a row: each to be built,
/// standing on the one before, booting with the same seed template and network.
fn one_boot_run(plan: &[PlannedStage]) -> usize {
    let mut run = 1;
    while let Some(next) = plan.get(run) {
        let previous = &plan[run - 1];
        let continues = !matches!(next.status, Status::Cached(_))
            && next.stage.parent.as_ref() == Some(&previous.stage.name)
            && next.stage.user_data == previous.stage.user_data
            && next.stage.network == previous.stage.network;
        if !continues {
            break;
        }
        run += 1;
    }
    run
}

fn outcome(planned: &PlannedStage, layer: &Layer, cached: bool, started: Instant) -> StageOutcome {
    StageOutcome {
        stage: planned.stage.name.to_string(),
        key: planned.key.clone(),
        cached,
        seconds: seconds_since(started),
        bytes: layer.allocated_bytes(),
        disk: layer.disk(),
    }
}

/// The state of a build between stages.
struct Builder<'a, 'b> {
    context: &'a BuildContext<'b>,
    source: &'a crate::source::FetchedSource,
    outcomes: Vec<StageOutcome>,
    /// False once a guest could not be frozen: from then on, one boot per stage.
    live_cuts: bool,
}

/// A stage being built ("in flight": its key locked, its work folder open, not committed yet):
/// its plan entry, work folder and start time.
struct InFlight<'p> {
    planned: &'p PlannedStage,
    work: WorkDir,
    started: Instant,
    _lock: std::fs::File,
}

impl<'a, 'b> Builder<'a, 'b> {
    /// Builds `run` (stages that stand on each other) in as few boots as the guest allows.
    async fn build_run(&mut self, run: &[PlannedStage]) -> Result<(), BuildError> {
        let mut index = 0;
        while index < run.len() {
            let Some(first) = self.begin(&run[index]).await? else {
                index += 1;
                continue;
            };
            let job = self.job(&first)?;
            let mut session = match self.resume(&first, &job).await {
                Some(session) => session,
                None => match crate::stage::Session::start(&job).await {
                    Ok(session) => {
                        if first.planned.parent.is_none() {
                            self.save_first_boot(&session, &first).await;
                        }
                        session
                    }
                    Err(error) => return Err(self.failed(first, error)),
                },
            };
            let mut current = first;
            loop {
                let job = self.job(&current)?;
                if let Err(error) = session.run_steps(&job).await {
                    session.kill().await;
                    return Err(self.failed(current, error));
                }
                index += 1;
                let next = match run.get(index) {
                    Some(planned) if self.live_cuts => self.begin(planned).await?,
                    _ => None,
                };
                let Some(next) = next else {
                    let facts = match session.power_off(&job).await {
                        Ok(facts) => facts,
                        Err(error) => return Err(self.failed(current, error)),
                    };
                    self.finish(current, facts, false).await?;
                    break;
                };
                let backing = crate::layer::backing_for(&Foundation::Layer(&current.planned.key));
                match session.cut(&job, &next.work.disk(), &backing).await {
                    Ok(crate::stage::Cut::Done { facts }) => {
                        let below = current.planned.key.clone();
                        self.finish(current, facts, true).await?;
                        self.save_restore_point(&session, &next, &below).await;
                        current = next;
                    }
                    Ok(crate::stage::Cut::Unsupported { facts, why }) => {
                        self.context.events.warn(format!(
                            "cannot freeze the guest to cut layers from it ({why}): \
                             building one boot per stage instead"
                        ));
                        self.live_cuts = false;
                        // The next stage gets a boot of its own, from the outer loop.
                        drop(next);
                        if let Err(error) = session.power_off_unfrozen(&job).await {
                            return Err(self.failed(current, error));
                        }
                        self.finish(current, facts, false).await?;
                        break;
                    }
                    Err(error) => {
                        session.kill().await;
                        return Err(self.failed(current, error));
                    }
                }
            }
        }
        Ok(())
    }

    /// Locks `planned`'s key and opens its work folder; `None` when another build committed it
    /// while this one waited for the lock.
    async fn begin<'p>(
        &mut self,
        planned: &'p PlannedStage,
    ) -> Result<Option<InFlight<'p>>, BuildError> {
        let layers = self.context.layers;
        let key_name = format!("layer-{}", planned.key);
        let lock = layers.store().lock_async(&key_name, LockMode::Exclusive).await?;
        if !matches!(planned.status, Status::Forced)
            && let Lookup::Hit(layer) = layers.lookup(&planned.key, false)?
        {
            self.context.events.emit(cached_event(planned));
            self.outcomes.push(outcome(planned, &layer, true, Instant::now()));
            return Ok(None);
        }
        self.context.events.emit(Event::StageStarted {
            stage: planned.stage.name.to_string(),
            key: planned.key.to_string(),
        });
        let work = layers.begin(&planned.key)?;
        Ok(Some(InFlight { planned, work, started: Instant::now(), _lock: lock }))
    }

    /// The stage job for a stage in flight: its overlay on its parent (the layer built or found
    /// below, or the source).
    fn job<'s>(&self, flight: &InFlight<'s>) -> Result<crate::stage::StageJob<'s>, BuildError>
    where
        'a: 's,
        'b: 's,
    {
        let BuildContext { definition, layers, log_dir, events, .. } = *self.context;
        let planned = flight.planned;
        let backing = planned.backing(self.source);
        let parent_disk = match &planned.parent {
            Some(parent) => {
                self.outcomes.iter().find(|outcome| &outcome.key == parent).map_or_else(
                    || layers.dir(parent).join(crate::layer::DISK_FILE),
                    |outcome| outcome.disk.clone(),
                )
            }
            None => self.source.path.clone(),
        };
        let stage_name = planned.stage.name.to_string();
        let log_dir = log_dir.join(&stage_name);
        std::fs::create_dir_all(&log_dir)
            .map_err(|source| LayerError::Write { path: log_dir.clone(), source })?;
        let first_layer = planned.parent.is_none();
        Ok(crate::stage::StageJob {
            definition,
            stage: &planned.stage,
            disk: flight.work.disk(),
            backing,
            parent_disk,
            grow_to: if first_layer {
                definition.machine.disk_size.map(crate::units::ByteSize::bytes)
            } else {
                None
            },
            log_dir,
            events,
            snapshot: false,
        })
    }

    /// Checks the stage's disk and commits it as its layer.
    async fn finish(
        &mut self,
        flight: InFlight<'_>,
        facts: crate::stage::GuestFacts,
        in_use: bool,
    ) -> Result<(), BuildError> {
        let BuildContext { definition, layers, events, .. } = *self.context;
        let output = {
            let job = self.job(&flight)?;
            match crate::stage::finish_disk(&job, facts, in_use).await {
                Ok(output) => output,
                Err(error) => return Err(self.failed(flight, error)),
            }
        };
        let planned = flight.planned;
        if matches!(planned.status, Status::Forced) {
            layers.retire(&planned.key)?;
        }
        let metadata = crate::layer::LayerMetadata {
            virtual_bytes: output.virtual_bytes,
            build_seconds: seconds_since(flight.started),
            packages: output.facts.inventory.packages,
            files: output.facts.inventory.files,
            os_id: output.facts.os_id,
            os_version: output.facts.os_version,
            guest_agent: output.facts.guest_agent,
            ..planned.metadata(&definition.name, planned.backing(self.source))
        };
        let started = flight.started;
        let layer = layers.commit(flight.work, metadata)?;
        events.emit(Event::LayerCommitted {
            stage: planned.stage.name.to_string(),
            key: planned.key.to_string(),
            bytes: layer.metadata.disk_bytes,
            allocated_bytes: layer.allocated_bytes(),
            seconds: seconds_since(started),
        });
        self.outcomes.push(outcome(planned, &layer, false, started));
        Ok(())
    }

    /// The error for a failed stage; with `--keep-failed` its work folder stays.
    fn failed(&self, flight: InFlight<'_>, error: crate::stage::StageError) -> BuildError {
        let kept = self.context.options.keep_failed.then(|| flight.work.keep());
        BuildError::Failed(Box::new(BuildFailed {
            stage: flight.planned.stage.name.to_string(),
            source: error,
            kept,
        }))
    }
}
