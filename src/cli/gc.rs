//! `strata gc [--dry-run] [DEF...]`: deletes layers and sources that no given definition, nor
//! any kept layer, needs. Waits for running builds (they hold the gc lock shared).

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::Error;
use super::GlobalArgs;
use crate::layer::{LayerStore, PlanOptions, Status, gc, plan_from_store};
use crate::units::ByteSize;

pub fn run(definitions: &[PathBuf], dry_run: bool, global: &GlobalArgs) -> Result<(), Error> {
    let store = global.open_store()?;
    let layers = LayerStore::new(store.clone());
    let _exclusive = store.lock("gc")?;
    let mut keep_layers = BTreeSet::new();
    let mut keep_sources = BTreeSet::new();
    for path in definitions {
        let definition = crate::definition::load(path)?;
        let Some(plan) = plan_from_store(&definition, &layers, &PlanOptions::default())? else {
            continue;
        };
        keep_sources.insert(crate::layer::source_file_name(&plan.source));
        for planned in plan.stages {
            if let Status::Cached(layer) = planned.status {
                keep_layers.insert(layer.metadata.key);
            }
        }
    }
    let garbage = gc::find(&layers, &keep_layers, &keep_sources)?;
    let verb = if dry_run { "would delete" } else { "deleting" };
    let mut lines: Vec<String> =
        garbage.paths.iter().map(|path| format!("{verb} {}", path.display())).collect();
    lines.push(format!(
        "{} {} in {} entries",
        if dry_run { "would free" } else { "freed" },
        ByteSize(garbage.bytes),
        garbage.paths.len()
    ));
    if !dry_run {
        garbage.delete(&layers)?;
    }
    crate::report::note(global.log_format, global.quiet, &lines.join("\n"));
    Ok(())
}
