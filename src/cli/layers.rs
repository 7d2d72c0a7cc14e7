//! `strata layers DEF`: each stage's key, whether its layer is cached, sizes, age, parent, and
//! with `--cache` whether the shared cache has it.

use std::path::Path;

use super::Error;
use super::GlobalArgs;
use crate::layer::{LayerStore, PlanOptions, PlannedStage, Status, plan_from_store};
use crate::units::{ByteSize, format_duration};

pub async fn run(definition_path: &Path, global: &GlobalArgs) -> Result<(), Error> {
    let definition = crate::definition::load(definition_path)?;
    let layers = LayerStore::new(global.open_store()?);
    let Some(plan) = plan_from_store(&definition, &layers, &PlanOptions::default())? else {
        return Err(Error::Runtime(format!(
            "the source of {} is not in the store, so no key can be computed: run `strata fetch {}`",
            definition_path.display(),
            definition_path.display()
        )));
    };
    let now = crate::layer::now_secs();
    let remote = in_cache(&plan.stages, global).await?;
    let mut rows = vec![
        [
            "stage", "key", "state", "layer", "virtual", "restore", "age", "tested", "parent",
            "shared",
        ]
        .map(String::from),
    ];
    let digest = crate::instance::checks_of(&definition)
        .ok()
        .and_then(|checks| crate::check::ChecksDigest::of(&checks).ok());
    let tested: Vec<String> =
        plan.stages.iter().map(|planned| tested(planned, digest.as_ref())).collect();
    let restore: Vec<Option<u64>> = plan.stages.iter().map(restore_size).collect();
    let first_boots = layers.first_boots(&definition, &plan);
    for (stage, boot) in &first_boots {
        rows.push([
            format!("{stage} (first boot)"),
            boot.key.short().to_owned(),
            "saved".to_owned(),
            "-".into(),
            "-".into(),
            ByteSize(boot.bytes).to_string(),
            format_duration(std::time::Duration::from_secs(now.saturating_sub(boot.created))),
            "-".into(),
            "source".into(),
            "-".into(),
        ]);
    }
    let plan = plan.stages;
    for (((planned, restore), tested), remote) in
        plan.iter().zip(&restore).zip(&tested).zip(&remote)
    {
        let parent =
            planned.stage.parent.as_ref().map_or_else(|| "source".to_owned(), ToString::to_string);
        let (state, size, virtual_size, age) = match &planned.status {
            Status::Cached(layer) => (
                "cached".to_owned(),
                ByteSize(layer.allocated_bytes()).to_string(),
                ByteSize(layer.metadata.virtual_bytes).to_string(),
                format_duration(std::time::Duration::from_secs(
                    now.saturating_sub(layer.metadata.created),
                )),
            ),
            Status::Corrupt(_) => ("corrupt".to_owned(), "-".into(), "-".into(), "-".into()),
            Status::Missing | Status::Forced => {
                ("missing".to_owned(), "-".into(), "-".into(), "-".into())
            }
        };
        rows.push([
            planned.stage.name.to_string(),
            planned.key.short().to_owned(),
            state,
            size,
            virtual_size,
            restore.map_or_else(|| "-".to_owned(), |bytes| ByteSize(bytes).to_string()),
            age,
            tested.clone(),
            parent,
            match remote {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
            .to_owned(),
        ]);
    }
    let mut json = plan_json(&plan, &restore, &tested, &remote);
    json["first_boots"] = first_boots
        .iter()
        .map(|(stage, boot)| {
            serde_json::json!({
                "stage": stage,
                "key": boot.key.as_str(),
                "restore_bytes": boot.bytes,
                "created": boot.created,
            })
        })
        .collect();
    crate::report::table(global.log_format, &rows, &json);
    Ok(())
}

/// For each stage, whether the shared cache has its layer: `None` without `--cache`, or when
/// the registry cannot be used (a warning says so; the local columns are still shown).
async fn in_cache(plan: &[PlannedStage], global: &GlobalArgs) -> Result<Vec<Option<bool>>, Error> {
    let unknown = vec![None; plan.len()];
    let Some(url) = &global.cache else { return Ok(unknown) };
    let events = global.events();
    let options = crate::build::CacheOptions::default();
    let Some(shared) = crate::build::connect_cache(url, options, &events).await? else {
        return Ok(unknown);
    };
    let mut found = Vec::with_capacity(plan.len());
    for planned in plan {
        found.push(shared.has_layer(&planned.key, &events).await);
    }
    Ok(found)
}

fn plan_json(
    plan: &[PlannedStage],
    restore: &[Option<u64>],
    tested: &[String],
    remote: &[Option<bool>],
) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = plan
        .iter()
        .zip(restore)
        .zip(tested)
        .zip(remote)
        .map(|(((planned, restore), tested), remote)| {
            let layer = match &planned.status {
                Status::Cached(layer) => Some(layer),
                _ => None,
            };
            serde_json::json!({
                "stage": planned.stage.name.as_str(),
                "key": planned.key.as_str(),
                "cached": layer.is_some(),
                "parent": planned.stage.parent.as_ref().map(crate::definition::StageName::as_str),
                "layer_bytes": layer.map(|layer| layer.metadata.disk_bytes),
                "allocated_bytes": layer.map(|layer| layer.allocated_bytes()),
                "virtual_bytes": layer.map(|layer| layer.metadata.virtual_bytes),
                "created": layer.map(|layer| layer.metadata.created),
                "restore_bytes": restore,
                "tested": tested,
                "in_shared_cache": remote,
            })
        })
        .collect();
    serde_json::json!({ "stages": stages })
}

/// Disk use of a cached layer's restore point (saved guest state and overlay), if it has one.
fn restore_size(planned: &PlannedStage) -> Option<u64> {
    let Status::Cached(layer) = &planned.status else { return None };
    layer.restore_point().map(|_| layer.restore_bytes())
}

/// The last `strata test` against a cached layer: `passed`, `failed`, or `none`; with
/// `(stale)` when the definition's checks changed since (their digest differs).
fn tested(planned: &PlannedStage, digest: Option<&crate::check::ChecksDigest>) -> String {
    let Status::Cached(layer) = &planned.status else {
        return "-".to_owned();
    };
    let record = layer
        .checks_record()
        .and_then(|json| serde_json::from_slice::<crate::check::CheckRecord>(&json).ok());
    let Some(record) = record else {
        return "none".to_owned();
    };
    let verdict = if record.passed { "passed" } else { "failed" };
    if digest == Some(&record.checks_sha256) {
        verdict.to_owned()
    } else {
        format!("{verdict} (stale)")
    }
}
