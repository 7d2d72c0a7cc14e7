//! `strata diff DEF [--from STAGE|KEY] [--to STAGE|KEY]`: the packages and files that changed
//! between two layers, from their records in the store alone (no network, no guest).
//!
//! By default each built stage against its parent; the first stage against an empty system
//! (the source image has no inventory without booting it), so it lists every package and file
//! its layer holds under the roots.

use std::path::Path;

use super::{Error, GlobalArgs};
use crate::drift::{Compare, Finding, Inventory, Manifest};
use crate::layer::{LayerKey, LayerMetadata, LayerStore, Lookup, PlanOptions, Status};

/// One side of a comparison: what the user named, and its layer's record.
pub(super) struct Side {
    pub(super) label: String,
    pub(super) inventory: Inventory,
}

pub fn run(
    definition_path: &Path,
    from: Option<&str>,
    to: Option<&str>,
    global: &GlobalArgs,
) -> Result<(), Error> {
    let definition = crate::definition::load(definition_path)?;
    let layers = LayerStore::new(global.open_store()?);
    let Some(plan) = crate::layer::plan_from_store(&definition, &layers, &PlanOptions::default())?
    else {
        return Err(Error::Runtime(format!(
            "the source of {0} is not in the store, so no layer can be found: run `strata build {0}`",
            definition_path.display()
        )));
    };
    let resolve = |name: &str| resolve(name, &plan.stages, &layers, definition_path);
    let pairs: Vec<(Side, Side)> = match (from, to) {
        (None, None) => {
            let mut pairs = Vec::new();
            for planned in &plan.stages {
                let after = resolve(planned.stage.name.as_str())?;
                let before = match &planned.stage.parent {
                    Some(parent) => resolve(parent.as_str())?,
                    None => empty_like(&after),
                };
                pairs.push((before, after));
            }
            pairs
        }
        (from, to) => {
            let last = plan.stages.last().map(|planned| planned.stage.name.to_string());
            let to_name = to.map(str::to_owned).or(last).unwrap_or_default();
            let after = resolve(&to_name)?;
            let before = match from {
                Some(from) => resolve(from)?,
                None => match definition.stage(&to_name).and_then(|stage| stage.parent.as_ref()) {
                    Some(parent) => resolve(parent.as_str())?,
                    None => empty_like(&after),
                },
            };
            vec![(before, after)]
        }
    };
    let how = Compare { ignore: &definition.drift.ignore, detect_different_system: false };
    let mut rows = vec![["from", "to", "change", "what"].map(String::from)];
    let mut objects = Vec::new();
    for (before, after) in &pairs {
        for finding in crate::drift::compare(&before.inventory, &after.inventory, &how) {
            rows.push(row(&before.label, &after.label, &finding));
            objects.push(object(&before.label, &after.label, &finding));
        }
    }
    crate::report::findings(global.log_format, &rows, &objects);
    Ok(())
}

/// A stage of the definition, or a layer key (whole, or the 12-character short form `strata
/// layers` shows), to its built layer's inventory. Not built: exit 1 with what to run.
fn resolve(
    name: &str,
    stages: &[crate::layer::PlannedStage],
    layers: &LayerStore,
    definition_path: &Path,
) -> Result<Side, Error> {
    let not_built = |what: String| {
        Error::Runtime(format!(
            "{what} is not built: run `strata build {}` first (`strata layers` shows what is)",
            definition_path.display()
        ))
    };
    if let Some(planned) = stages.iter().find(|planned| planned.stage.name.as_str() == name) {
        return match &planned.status {
            Status::Cached(layer) => Ok(side(name, &layer.metadata)),
            _ => Err(not_built(format!("stage `{name}`"))),
        };
    }
    let key = stages
        .iter()
        .find(|planned| planned.key.as_str().starts_with(name) && name.len() >= 12)
        .map(|planned| planned.key.clone())
        .or_else(|| LayerKey::parse(name));
    let Some(key) = key else {
        return Err(Error::Usage(format!(
            "`{name}` is neither a stage of {} nor a layer key (64 hex characters, or the 12 \
             `strata layers` shows)",
            definition_path.display()
        )));
    };
    match layers.lookup(&key, false)? {
        Lookup::Hit(layer) => Ok(side(key.short(), &layer.metadata)),
        _ => Err(not_built(format!("layer {}", key.short()))),
    }
}

/// The record of the layer of `stage` (default: the last), labelled with the stage's name,
/// for `strata drift`. Not in the store: exit 1 saying to build or pull it.
pub(super) fn side_of_stage(
    definition: &crate::definition::ImageDefinition,
    layers: &LayerStore,
    stage: Option<&str>,
    definition_path: &Path,
) -> Result<Side, Error> {
    let options = PlanOptions { stop_at: stage.map(str::to_owned), ..PlanOptions::default() };
    let not_in_store = |what: &str| {
        Error::Runtime(format!(
            "{what} of {0} is not in the store, so there is nothing to compare with: \
             run `strata build {0}` or `strata pull {0}` first",
            definition_path.display()
        ))
    };
    let Some(plan) = crate::layer::plan_from_store(definition, layers, &options)? else {
        return Err(not_in_store("the source"));
    };
    let Some(planned) = plan.stages.last() else {
        return Err(not_in_store("no stage"));
    };
    let name = planned.stage.name.as_str();
    match &planned.status {
        Status::Cached(layer) => Ok(side(name, &layer.metadata)),
        _ => Err(not_in_store(&format!("the layer of stage `{name}`"))),
    }
}

fn side(label: &str, metadata: &LayerMetadata) -> Side {
    let os = metadata
        .os_id
        .clone()
        .map(|id| crate::drift::OsRelease { id, version_id: metadata.os_version.clone() });
    Side {
        label: label.to_owned(),
        inventory: Inventory {
            os,
            packages: metadata.packages.clone(),
            files: metadata.files.clone(),
        },
    }
}

/// Nothing installed, nothing on disk, under the same roots as `after`: what the first stage
/// is compared with.
fn empty_like(after: &Side) -> Side {
    Side {
        label: "(nothing)".to_owned(),
        inventory: Inventory {
            os: after.inventory.os.clone(),
            packages: Vec::new(),
            files: Manifest { roots: after.inventory.files.roots.clone(), entries: Vec::new() },
        },
    }
}

fn row(from: &str, to: &str, finding: &Finding) -> [String; 4] {
    let [change, what] = change_and_what(finding);
    [from.to_owned(), to.to_owned(), change, what]
}

/// A finding's two table cells: what kind of change, and what changed.
pub(super) fn change_and_what(finding: &Finding) -> [String; 2] {
    let line = finding.to_string();
    let what = line.split_once(": ").map_or(line.as_str(), |(_, what)| what).to_owned();
    [finding.kind().replace('_', " "), what]
}

/// One finding as one JSON object, with the two layers it is between.
fn object(from: &str, to: &str, finding: &Finding) -> serde_json::Value {
    finding_object(finding, &[("from", from), ("to", to)])
}

/// A finding as a JSON object, with `fields` added (what it is between).
pub(super) fn finding_object(finding: &Finding, fields: &[(&str, &str)]) -> serde_json::Value {
    let mut object = serde_json::to_value(finding).unwrap_or_default();
    if let Some(map) = object.as_object_mut() {
        for (key, value) in fields {
            map.insert((*key).to_owned(), (*value).into());
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_becomes_a_row_and_an_object_naming_both_layers() {
        let finding = Finding::FileAdded {
            path: "/etc/app.conf".into(),
            file_type: crate::drift::FileType::File,
        };
        let row = row("base", "final", &finding);
        assert_eq!(row[2], "file added");
        assert_eq!(row[3], "/etc/app.conf");
        let object = object("base", "final", &finding);
        assert_eq!(object["kind"], "file_added");
        assert_eq!(object["from"], "base");
        assert_eq!(object["path"], "/etc/app.conf");
    }
}
