//! `strata build DEF [--stage NAME] [--rebuild NAME] [--offline] [--keep-failed] [--verify]`

use std::sync::Arc;
use std::time::Instant;

use super::{BuildArgs, GlobalArgs};
use crate::build::{BuildContext, BuildOptions};
use crate::error::Error;
use crate::events::Event;
use crate::layer::{LayerError, LayerStore};
use crate::report::{self, SummaryRow, buildlog::BuildLog};

pub async fn run(args: &BuildArgs, global: &GlobalArgs) -> Result<(), Error> {
    let definition = crate::definition::load(&args.definition)?;
    let store = global.open_store()?;
    let log = Arc::new(BuildLog::create(&store.logs_dir()).map_err(|source| LayerError::Write {
        path: store.logs_dir(),
        source,
    })?);
    let events = global.events().with(log.clone());
    let options = BuildOptions {
        stop_at: args.stage.clone(),
        rebuild: args.rebuild.clone(),
        offline: args.offline,
        keep_failed: args.keep_failed,
        verify: args.verify,
    };
    let layers = LayerStore::new(store);
    let stages = definition.stages.iter().map(|stage| stage.name.to_string()).collect();
    events.emit(Event::BuildStarted {
        build_id: log.id().to_owned(),
        image: definition.name.clone(),
        stages,
        log_dir: log.dir().to_owned(),
    });
    let started = Instant::now();
    let context = BuildContext { definition: &definition, layers: &layers, log: &log, events: &events, options: &options };
    let outcome = super::interruptible(crate::build::run(&context)).await;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(outcomes) => {
            events.emit(Event::BuildFinished { seconds, log_dir: Some(log.dir().to_owned()) });
            let rows: Vec<SummaryRow> = outcomes
                .iter()
                .map(|outcome| SummaryRow {
                    stage: outcome.stage.clone(),
                    cached: outcome.cached,
                    seconds: outcome.seconds,
                    bytes: outcome.bytes,
                })
                .collect();
            report::print_summary(global.log_format, global.quiet, &rows, seconds);
            if outcomes.iter().any(|outcome| !outcome.cached) {
                report::note(global.log_format, global.quiet, &format!("logs: {}", log.dir().display()));
            }
            Ok(())
        }
        Err(error) => {
            events.emit(Event::Error { message: report::error_chain(&error) });
            let hint = next_step_hint(&error, args, log.dir());
            report::note(global.log_format, false, &hint);
            Err(error)
        }
    }
}

/// What to try after a failure: where the logs are, and how to look closer.
fn next_step_hint(error: &Error, args: &BuildArgs, log_dir: &std::path::Path) -> String {
    let mut hint = format!("logs: {}", log_dir.display());
    if matches!(error, Error::Build(_) | Error::Stage(_)) && !args.keep_failed {
        hint.push_str(&format!(
            "\nto look closer: `strata build {} --keep-failed` keeps the failed stage's disk; \
             `strata run {} --stage NAME` boots a built layer",
            args.definition.display(),
            args.definition.display()
        ));
    }
    hint
}
