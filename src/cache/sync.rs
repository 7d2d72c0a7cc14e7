//! What to move for a definition: the layers to pull before building (the highest cached one
//! of each chain, and what it stands on, bottom-up), the source when the store lacks it, what
//! to push afterwards; and `strata push` / `strata pull` as whole operations. Whether a failure
//! stops a build is the caller's: [`pull_chains`] only stops a chain at a refused layer.

use std::time::SystemTime;

use super::{Cache, CacheError, Pushed};
use crate::definition::{ImageDefinition, Location, Source};
use crate::events::Events;
use crate::layer::{LayerKey, LayerStore, Lookup, PlanOptions, PlannedStage, Status};
use crate::source::FetchedSource;
use crate::store::Store;

/// The cosign attachment suffix of a layer's SBOM (SPDX JSON).
pub const SBOM_SUFFIX: &str = "sbom";

/// The SBOM attached to the layer `key` in the registry, verified before it is returned: signed
/// by a trusted key over its exact manifest, attached to this layer's manifest (both checked by
/// [`Cache::pull_attachment`]), and an SPDX document of this very layer. `Ok(None)` when the
/// registry has none.
pub async fn pull_layer_sbom(cache: &Cache, key: &LayerKey) -> Result<Option<Vec<u8>>, CacheError> {
    const LIMIT: u64 = 64 << 20;
    let tag = super::artifact::layer_tag(key);
    let Some(bytes) = cache.pull_attachment(&tag, SBOM_SUFFIX, LIMIT).await? else {
        return Ok(None);
    };
    if !crate::sbom::describes_layer(&bytes, key.as_str()) {
        return Err(CacheError::Invalid {
            registry: cache.url().to_string(),
            what: format!("the SBOM of layer {}", key.short()),
            reason: "it is not an SPDX document of this layer".to_owned(),
        });
    }
    Ok(Some(bytes))
}

/// `strata push`: the source and the layers of `stage` (default the last) and below that the
/// registry lacks, bottom-up, with their restore points when `restore`; the bytes uploaded.
pub async fn push_definition(
    cache: &Cache,
    definition: &ImageDefinition,
    layers: &LayerStore,
    stage: Option<&str>,
    restore: bool,
) -> Result<u64, CacheError> {
    let built = crate::layer::built_stage(definition, layers, stage)?;
    let keys: Vec<LayerKey> =
        built.chain.iter().filter_map(|(_, layer)| LayerKey::parse(&layer.metadata.key)).collect();
    push_all(cache, &built.source, &keys, layers, restore).await
}

/// `strata pull`: the source and every layer up to `stage` (default the last) into the store,
/// with their restore points when `restore`; how many stages the store then holds. Unlike a
/// build, anything missing or refused is an error.
pub async fn pull_definition(
    cache: &Cache,
    definition: &ImageDefinition,
    layers: &LayerStore,
    stage: Option<&str>,
    restore: bool,
    events: &Events,
) -> Result<usize, CacheError> {
    let store = layers.store();
    pull_source(cache, store, &definition.source).await?;
    let options = crate::source::FetchOptions::default();
    let source = crate::source::fetch(store, &definition.source, options, events).await?;
    let options = PlanOptions { stop_at: stage.map(str::to_owned), ..PlanOptions::default() };
    let plan = crate::layer::plan(definition, layers, source.clone(), &options, SystemTime::now())?;
    pull_chains(cache, &plan.stages, layers, true).await?;
    let plan = crate::layer::plan(definition, layers, source, &options, SystemTime::now())?;
    let missing: Vec<String> = plan
        .stages
        .iter()
        .filter(|planned| !matches!(planned.status, Status::Cached(_)))
        .map(|planned| planned.stage.name.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(CacheError::NotInCache {
            registry: cache.url().to_string(),
            stages: missing,
            definition: definition.name.clone(),
        });
    }
    if restore {
        for planned in &plan.stages {
            cache.pull_restore(layers, &planned.key).await?;
        }
    }
    Ok(plan.stages.len())
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
/// damaged layer in it is left to the build. A refused layer (its signature) stops its chain
/// there: it and what stands on it are built locally, unless `required` makes it an error.
pub async fn pull_chains(
    cache: &Cache,
    plan: &[PlannedStage],
    layers: &LayerStore,
    required: bool,
) -> Result<usize, CacheError> {
    let mut pulled = std::collections::HashSet::new();
    let mut refused = std::collections::HashSet::new();
    for (index, planned) in plan.iter().enumerate().rev() {
        if !matches!(planned.status, Status::Missing) || pulled.contains(&planned.key) {
            continue;
        }
        let Some(chain) = missing_chain(plan, index, &pulled) else { continue };
        if chain.iter().any(|below| refused.contains(&plan[*below].key)) {
            continue;
        }
        if !cache.has_layer(&planned.key).await? {
            continue;
        }
        for below in chain {
            let below = &plan[below];
            let pull = cache.pull_layer(
                layers,
                &below.key,
                below.parent.as_ref(),
                below.stage.name.as_str(),
            );
            match pull.await {
                Ok(_) => {
                    pulled.insert(below.key.clone());
                }
                Err(error) if error.is_refused() && !required => {
                    refused.insert(below.key.clone());
                    break;
                }
                Err(error) => return Err(error),
            }
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
        let pushed = cache.push_layer(&layer).await?;
        if matches!(pushed, Pushed::Uploaded { .. })
            && let Some(sbom) = crate::sbom::layer_document(&layer.metadata, source)
        {
            // What is inside, attached to the layer (`sha256-<hex>.sbom`) and signed like it.
            let tag = super::artifact::layer_tag(key);
            bytes = bytes.saturating_add(uploaded(
                cache
                    .push_attachment(&tag, SBOM_SUFFIX, crate::sbom::SPDX_MEDIA_TYPE, sbom)
                    .await?,
            ));
        }
        bytes = bytes.saturating_add(uploaded(pushed));
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
