//! The shared cache in a build and in `strata push`/`pull`: which layers to pull before
//! building (the highest cached one of each chain, and what it stands on, bottom-up), the
//! source when the store lacks it, and what to push afterwards. Owns when a cache failure is
//! a warning (the build goes on locally) and when an error (`--cache-required`); moving the
//! artifacts themselves is `cache/`'s.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::{Cache, CacheError, CacheUrl, Credentials, Pushed};
use crate::definition::{Location, Source};
use crate::events::{Event, Events};
use crate::layer::{LayerKey, LayerStore, Lookup, PlannedStage, Status};
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
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheOptions {
    pub required: bool,
    pub push: bool,
    pub restore: bool,
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
            cache,
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
    fn failed(&self, error: CacheError, events: &Events) -> Result<(), CacheError> {
        if self.required {
            return Err(error);
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
        match pull_chains(cache, plan, layers).await {
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
            if let Err(error) = cache.pull_restore(layers, parent).await {
                return self.failed(error, events);
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

/// The source from the registry into the store, recorded in the sources index.
pub async fn pull_source(cache: &Cache, store: &Store, source: &Source) -> Result<(), CacheError> {
    if let Location::File(path) = &source.location
        && path.is_file()
    {
        return Ok(());
    }
    if crate::source::lookup(store, source).is_some() {
        return Ok(());
    }
    let Some(digest) = crate::source::expected_sha256(store, source) else { return Ok(()) };
    if !cache.has_source(&digest).await? {
        return Ok(());
    }
    let fetched = cache.pull_source(store, &digest).await?;
    crate::source::record_pulled(store, source, &fetched).map_err(|error| CacheError::Io {
        path: fetched.path.clone(),
        source: std::io::Error::other(crate::events::error_chain(&error)),
    })
}

/// From the top of the plan down: each stage the store lacks that the registry has is pulled
/// with the stages below it the store lacks, bottom-up. A chain with a stage to rebuild or a
/// damaged layer in it is left to the build.
pub async fn pull_chains(
    cache: &Cache,
    plan: &[PlannedStage],
    layers: &LayerStore,
) -> Result<usize, CacheError> {
    let mut pulled = std::collections::HashSet::new();
    for (index, planned) in plan.iter().enumerate().rev() {
        if !matches!(planned.status, Status::Missing) || pulled.contains(&planned.key) {
            continue;
        }
        let Some(chain) = missing_chain(plan, index, &pulled) else { continue };
        if !cache.has_layer(&planned.key).await? {
            continue;
        }
        for below in chain {
            let below = &plan[below];
            cache.pull_layer(layers, &below.key, below.parent.as_ref()).await?;
            pulled.insert(below.key.clone());
        }
    }
    Ok(pulled.len())
}

/// The indices of `plan[top]` and the stages below it that are missing, bottom first; `None`
/// when one of them is to be rebuilt or is damaged (pulling would not help).
fn missing_chain(
    plan: &[PlannedStage],
    top: usize,
    pulled: &std::collections::HashSet<LayerKey>,
) -> Option<Vec<usize>> {
    let mut chain = Vec::new();
    let mut current = Some(top);
    while let Some(index) = current {
        let planned = &plan[index];
        if matches!(planned.status, Status::Cached(_)) || pulled.contains(&planned.key) {
            break;
        }
        if !matches!(planned.status, Status::Missing) {
            return None;
        }
        chain.push(index);
        current = match &planned.parent {
            Some(parent) => Some(plan.iter().position(|other| &other.key == parent)?),
            None => None,
        };
    }
    chain.reverse();
    Some(chain)
}

/// Pushes the source, then each layer bottom-up (a runner never finds a layer whose parent is
/// not there yet); returns the bytes uploaded.
pub async fn push_all(
    cache: &Cache,
    source: &FetchedSource,
    keys: &[LayerKey],
    layers: &LayerStore,
    restore: bool,
) -> Result<u64, CacheError> {
    let mut bytes = uploaded(cache.push_source(source).await?);
    for key in keys {
        let Lookup::Hit(layer) = layers.lookup(key, false)? else { continue };
        bytes = bytes.saturating_add(uploaded(cache.push_layer(&layer).await?));
        if restore && layer.restore_point().is_some() {
            bytes = bytes.saturating_add(uploaded(cache.push_restore(&layer).await?));
        }
    }
    Ok(bytes)
}

fn uploaded(pushed: Pushed) -> u64 {
    match pushed {
        Pushed::AlreadyThere => 0,
        Pushed::Uploaded { bytes } => bytes,
    }
}
