//! `strata gc [--dry-run] (DEF... | --all)`: deletes layers and sources that no given
//! definition, nor any kept layer, needs, and what dead processes left (stale downloads, run
//! folders). Without a definition it deletes nothing unless told `--all`. Waits for running
//! builds (they hold the gc lock shared). The work is `gc::run`'s.

use std::path::PathBuf;

use super::Error;
use super::GlobalArgs;
use crate::gc::GcOutcome;
use crate::layer::LayerStore;
use crate::units::ByteSize;

pub fn run(
    definitions: &[PathBuf],
    all: bool,
    dry_run: bool,
    global: &GlobalArgs,
) -> Result<(), Error> {
    if definitions.is_empty() && !all {
        return Err(Error::Usage(
            "gc without a definition deletes nothing: name the definitions whose layers and \
             sources to keep (strata gc images/*.toml), or pass --all to delete every layer and \
             source in the store"
                .to_owned(),
        ));
    }
    let layers = LayerStore::new(global.open_store()?);
    let keep = definitions
        .iter()
        .map(|path| crate::definition::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let GcOutcome { garbage, stale_downloads, stale_run_dirs } =
        crate::gc::run(&layers, &keep, dry_run)?;
    let removed: Vec<String> =
        garbage.paths.iter().map(|path| path.display().to_string()).collect();
    let verb = if dry_run { "would delete" } else { "deleting" };
    let mut lines: Vec<String> = removed.iter().map(|path| format!("{verb} {path}")).collect();
    lines.push(format!(
        "{} {} in {} entries",
        if dry_run { "would free" } else { "freed" },
        ByteSize(garbage.bytes),
        garbage.paths.len()
    ));
    if stale_downloads + stale_run_dirs > 0 {
        lines.push(format!(
            "removed {stale_downloads} stale downloads and {stale_run_dirs} run folders of processes that died"
        ));
    }
    let json = serde_json::json!({
        "event": "gc_finished",
        "dry_run": dry_run,
        "removed": removed,
        "bytes": garbage.bytes,
        "stale_downloads": stale_downloads,
        "stale_run_dirs": stale_run_dirs,
    });
    crate::report::outcome(global.log_format, global.quiet, &lines.join("\n"), &json);
    Ok(())
}
