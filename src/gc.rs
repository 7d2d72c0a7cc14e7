//! `strata gc`'s engine: what no given definition, nor any kept layer, needs (layers, saved
//! first boots, sources: `layer::gc` finds and deletes them), and what dead processes left
//! (stale downloads in `sources/`, run folders in the temp folder). Takes the gc lock
//! exclusively, so it waits for running builds (they hold it shared).
//! Must not print: it returns what it did.

use std::collections::BTreeSet;

use crate::definition::ImageDefinition;
use crate::layer::{LayerStore, PlanOptions, Status, plan_from_store};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error(transparent)]
    Plan(#[from] crate::layer::PlanError),
}

/// What gc deleted (or, on a dry run, would delete).
#[derive(Debug, Default)]
pub struct GcOutcome {
    pub garbage: crate::layer::gc::Garbage,
    pub stale_downloads: usize,
    pub stale_run_dirs: usize,
}

/// Deletes what `keep` (every layer of their current plans, and their sources) does not need;
/// with `dry_run`, only finds it.
pub fn run(
    layers: &LayerStore,
    keep: &[ImageDefinition],
    dry_run: bool,
) -> Result<GcOutcome, GcError> {
    let store = layers.store();
    let _exclusive = store.lock("gc")?;
    let mut keep_layers = BTreeSet::new();
    let mut keep_sources = BTreeSet::new();
    for definition in keep {
        let Some(plan) = plan_from_store(definition, layers, &PlanOptions::default())? else {
            continue;
        };
        keep_sources.insert(crate::layer::source_file_name(&plan.source));
        for planned in plan.stages {
            if let Status::Cached(layer) = planned.status {
                keep_layers.insert(layer.metadata.key);
            }
        }
    }
    let garbage = crate::layer::gc::find(layers, &keep_layers, &keep_sources)?;
    if dry_run {
        return Ok(GcOutcome { garbage, stale_downloads: 0, stale_run_dirs: 0 });
    }
    garbage.delete(layers)?;
    Ok(GcOutcome {
        garbage,
        stale_downloads: crate::source::clean_stale(store),
        stale_run_dirs: crate::stage::sweep_stale_run_dirs(&std::env::temp_dir()),
    })
}
