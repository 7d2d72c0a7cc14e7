//! `strata gc [--dry-run] [DEF...]`: deletes layers and sources that no given definition, nor
//! any kept layer, needs. Waits for running builds (they hold the gc lock shared).

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::GlobalArgs;
use crate::build::{BuildOptions, Status, plan_from_store};
use crate::error::Error;
use crate::layer::{LayerStore, gc};
use crate::units::ByteSize;

pub fn run(definitions: &[PathBuf], dry_run: bool, global: &GlobalArgs) -> Result<(), Error> {
    let store = global.open_store()?;
    let layers = LayerStore::new(store.clone());
    let _exclusive = store.lock("gc")?;
    let mut keep_layers = BTreeSet::new();
    let mut keep_sources = BTreeSet::new();
    for path in definitions {
        let definition = crate::definition::load(path)?;
        if let Some(source) = crate::source::lookup(&store, &definition.source) {
            keep_sources
                .extend(source.path.file_name().map(|name| name.to_string_lossy().into_owned()));
        }
        for planned in
            plan_from_store(&definition, &layers, &BuildOptions::default())?.unwrap_or_default()
        {
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
