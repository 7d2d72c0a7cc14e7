//! The shared cache in a build: pulling before building and pushing afterwards. Owns when a
//! cache failure or a refused artifact is a warning (the build goes on locally) and when an
//! error (`--cache-required`); which artifacts to move, and moving them, is `cache/`'s.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::{Cache, CacheError, CacheUrl, Credentials, pull_chains, pull_source, push_all};
use crate::definition::Source;
use crate::events::{Event, Events};
use crate::layer::{LayerKey, LayerStore, PlannedStage, Status};
use crate::source::FetchedSource;
use crate::store::Store;

/// A connected shared cache and how a build uses it.
#[derive(Debug)]
pub struct SharedCache {
    cache: Cache,
    /// `--cache-required`: any cache failure fails the build.
    required: bool,
    /// `--push`: push what the build made or used that the registry lacks.
    push: bool,
    /// `--cache-restore`: restore points go along with layers.
    restore: bool,
    /// Set at the first failure of an optional cache: the build goes on without it.
    given_up: AtomicBool,
}

/// How a build uses the shared cache.
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    pub required: bool,
    pub push: bool,
    pub restore: bool,
    /// How pushes are signed and pulls verified (the default accepts nothing).
    pub policy: crate::trust::Policy,
}

/// Connects to `url` with the credentials found for it. When the registry cannot be used and
/// the cache is optional, says so (a [`Event::CacheUnavailable`]) and returns `None`.
pub async fn connect(
    url: &CacheUrl,
    options: CacheOptions,
    events: &Events,
) -> Result<Option<SharedCache>, CacheError> {
    let (credentials, from) = Credentials::discover(url);
    match Cache::connect(url, &credentials, &from, events).await {
        Ok(cache) => Ok(Some(SharedCache {
            cache: cache.with_policy(options.policy),
            required: options.required,
            push: options.push,
            restore: options.restore,
            given_up: AtomicBool::new(false),
        })),
        Err(error) if !options.required => {
            unavailable(url.registry(), &error, events);
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

fn unavailable(registry: &str, error: &CacheError, events: &Events) {
    events.emit(Event::CacheUnavailable {
        registry: registry.to_owned(),
        message: crate::events::error_chain(error),
    });
}

impl SharedCache {
    /// The client, unless an earlier failure made the build give up on it.
    fn active(&self) -> Option<&Cache> {
        (!self.given_up.load(Ordering::Relaxed)).then_some(&self.cache)
    }

    #[must_use]
    pub fn pushes(&self) -> bool {
        self.push
    }

    /// A failure: the error when the cache is required, else a warning and no more cache.
    /// A refused artifact (reported already) is an error only when the cache is required: the
    /// work goes on locally, and the cache stays in use for the rest.
    fn failed(&self, error: CacheError, events: &Events) -> Result<(), CacheError> {
        if self.required {
            return Err(error);
        }
        if error.is_refused() {
            return Ok(());
        }
        unavailable(self.cache.url().registry(), &error, events);
        self.given_up.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the registry has `key`'s layer; `None` once the cache failed (said once).
    pub async fn has_layer(&self, key: &LayerKey, events: &Events) -> Option<bool> {
        let cache = self.active()?;
        match cache.has_layer(key).await {
            Ok(found) => Some(found),
            Err(error) => {
                // Never required here: only `strata layers` asks, and it shows what it knows.
                unavailable(self.cache.url().registry(), &error, events);
                self.given_up.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// Pulls the source into the store when it is not there and the definition's digest names
    /// it without the network. A local file that exists is copied by the fetch instead.
    pub async fn pull_source_if_missing(
        &self,
        store: &Store,
        source: &Source,
        events: &Events,
    ) -> Result<(), CacheError> {
        let Some(cache) = self.active() else { return Ok(()) };
        if let Err(error) = pull_source(cache, store, source).await {
            self.failed(error, events)?;
        }
        Ok(())
    }

    /// Pulls, for the stages of `plan` the store lacks, the highest layer of each chain the
    /// registry has and what it stands on; with `--cache-restore` also the restore point of
    /// the layer the first stage to build stands on. Returns how many layers came.
    pub async fn pull_for_plan(
        &self,
        plan: &[PlannedStage],
        layers: &LayerStore,
        events: &Events,
    ) -> Result<usize, CacheError> {
        let Some(cache) = self.active() else { return Ok(0) };
        match pull_chains(cache, plan, layers, self.required).await {
            Ok(pulled) => Ok(pulled),
            Err(error) => self.failed(error, events).map(|()| 0),
        }
    }

    /// With `--cache-restore`: pulls the restore point of the layer each stage to build
    /// stands on, so that the build may resume it instead of booting.
    pub async fn pull_restore_points(
        &self,
        plan: &[PlannedStage],
        layers: &LayerStore,
        events: &Events,
    ) -> Result<(), CacheError> {
        if !self.restore {
            return Ok(());
        }
        let Some(cache) = self.active() else { return Ok(()) };
        let in_store = |key: &LayerKey| {
            plan.iter().any(|other| &other.key == key && matches!(other.status, Status::Cached(_)))
        };
        let mut parents: Vec<&LayerKey> = plan
            .iter()
            .filter(|planned| !matches!(planned.status, Status::Cached(_)))
            .filter_map(|planned| planned.parent.as_ref())
            .filter(|parent| in_store(parent))
            .collect();
        parents.dedup();
        for parent in parents {
            match cache.pull_restore(layers, parent).await {
                Ok(_) => {}
                // Refused: never resumed; the stage boots instead.
                Err(error) if error.is_refused() && !self.required => {}
                Err(error) => return self.failed(error, events),
            }
        }
        Ok(())
    }

    /// Pushes the source and the layers of `keys` (bottom-up) that the registry lacks, with
    /// their restore points under `--cache-restore`.
    pub async fn push(
        &self,
        source: &FetchedSource,
        keys: &[LayerKey],
        layers: &LayerStore,
        events: &Events,
    ) -> Result<u64, CacheError> {
        let Some(cache) = self.active() else { return Ok(0) };
        match push_all(cache, source, keys, layers, self.restore).await {
            Ok(bytes) => Ok(bytes),
            Err(error) => self.failed(error, events).map(|()| 0),
        }
    }
}
