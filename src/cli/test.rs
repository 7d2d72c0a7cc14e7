//! `strata test DEF [--stage S] [--junit FILE]`: the definition's `[[test]]` checks on a fresh
//! boot of a built stage (see `run::boot_fresh`: nothing left from the build can make a check
//! pass). Exit 0 when all pass, 1 when any fails; the result goes into the layer's checks
//! record and, if asked, a JUnit file.

use std::path::Path;
use std::time::Instant;

use super::{Error, GlobalArgs};
use crate::check::{Check, CheckRecord, CheckResult};
use crate::definition::ImageDefinition;
use crate::events::Event;
use crate::stage::TAIL_LINES;

pub async fn run(
    definition_path: &Path,
    stage: Option<&str>,
    junit: Option<&Path>,
    global: &GlobalArgs,
) -> Result<(), Error> {
    let definition = crate::definition::load(definition_path)?;
    let checks = checks_of(&definition)?;
    if checks.is_empty() {
        return Err(Error::Usage(format!(
            "{} has no [[test]] checks: add some (see DESIGN §8), e.g.\n  [[test]]\n  name = \"sshd\"\n  service = \"ssh\"",
            definition_path.display()
        )));
    }
    let fresh = super::run::boot_fresh(definition_path, stage, false, global).await?;
    let stage_name = fresh.stage.clone();
    let started = Instant::now();
    let link = fresh.vm.link.as_ref().ok_or_else(|| {
        Error::Runtime(format!("stage `{stage_name}`: the fresh guest is not connected"))
    })?;
    let events = &fresh.events;
    let outcome = super::interruptible(async {
        let mut results = Vec::with_capacity(checks.len());
        for check in &checks {
            events.emit(Event::CheckStarted {
                stage: stage_name.clone(),
                name: check.name().to_owned(),
                kind: check.kind().label().to_owned(),
            });
            let result = crate::check::run_check(link, check).await.map_err(check_error)?;
            emit_result(events, &stage_name, &result);
            results.push(result);
        }
        Ok(results)
    })
    .await;
    let console = fresh.vm.machine.console_tail(TAIL_LINES);
    let _ = fresh.vm.machine.kill().await;
    let results = outcome?;
    let failed: Vec<&CheckResult> = results.iter().filter(|result| !result.passed).collect();
    events.emit(Event::ChecksFinished {
        stage: stage_name.clone(),
        passed: results.len() - failed.len(),
        failed: failed.len(),
        seconds: started.elapsed().as_secs_f64(),
    });
    let record = CheckRecord::new(&checks, results.clone()).map_err(check_error)?;
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|error| Error::Runtime(format!("failed to encode the checks record: {error}")))?;
    fresh.layer.write_checks_record(&json)?;
    if let Some(path) = junit {
        let suite = format!("{}.{stage_name}", definition.name);
        let tail = (!failed.is_empty()).then(|| console.join("\n"));
        let xml =
            crate::check::junit_xml(&suite, &results, tail.as_deref()).map_err(check_error)?;
        crate::store::write_atomic(path, xml.as_bytes()).map_err(|error| {
            Error::Runtime(format!("failed to write the JUnit report {}: {error}", path.display()))
        })?;
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Runtime(failure_message(&definition, &stage_name, &failed, &console)))
}

/// The definition's `[[test]]` entries as checks (already validated with the definition).
pub(super) fn checks_of(definition: &ImageDefinition) -> Result<Vec<Check>, Error> {
    let checks = definition
        .tests
        .iter()
        .map(|spec| Check::new(spec.name.clone(), spec.kind.clone(), Some(spec.timeout)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(check_error)?;
    crate::check::validate_set(&checks).map_err(check_error)?;
    Ok(checks)
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(check_error)`
fn check_error(error: crate::check::CheckError) -> Error {
    Error::Runtime(crate::report::error_chain(&error))
}

fn emit_result(events: &crate::events::Events, stage: &str, result: &CheckResult) {
    events.emit(Event::CheckFinished {
        stage: stage.to_owned(),
        name: result.name.clone(),
        kind: result.kind.clone(),
        passed: result.passed,
        seconds: result.seconds,
        output: result.output.clone(),
    });
}

/// Which checks failed, each with its output's end, then the console's last lines.
fn failure_message(
    definition: &ImageDefinition,
    stage: &str,
    failed: &[&CheckResult],
    console: &[String],
) -> String {
    let names: Vec<String> = failed.iter().map(|result| format!("`{}`", result.name)).collect();
    let mut message = format!(
        "{} check(s) failed on a fresh boot of {}.{stage}: {}",
        failed.len(),
        definition.name,
        names.join(", ")
    );
    for result in failed {
        message.push_str(&format!("\n\ncheck `{}` ({}) output:", result.name, result.kind));
        let lines: Vec<&str> = result.output.lines().collect();
        for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
            message.push_str(&format!("\n  {}", crate::events::printable(line)));
        }
    }
    if !console.is_empty() {
        message.push_str("\n\nthe console's last lines:");
        for line in console {
            message.push_str(&format!("\n  {}", crate::events::printable(line)));
        }
    }
    message
}
