//! `strata build DEF [--stage NAME] [--rebuild NAME] [--offline] [--keep-failed] [--verify]
//! [--no-warm] [--max-restore-size SIZE] [--push] [--cache-required] [--cache-restore]`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::Error;
use super::{BuildArgs, Failure, GlobalArgs};
use crate::build::{BuildContext, BuildError, BuildOptions, CacheOptions, SharedCache};
use crate::events::Event;
use crate::layer::{LayerError, LayerStore, PlanOptions};
use crate::report::{self, SummaryRow, buildlog::BuildLog};

pub async fn run(args: &BuildArgs, global: &GlobalArgs) -> Result<(), Failure> {
    let definition = crate::definition::load(&args.definition).map_err(Error::from)?;
    let store = global.open_store()?;
    let log = Arc::new(
        BuildLog::create(&store.logs_dir())
            .map_err(|source| Error::from(LayerError::Write { path: store.logs_dir(), source }))?,
    );
    let events = global.events().with(log.clone());
    let options = BuildOptions {
        plan: PlanOptions {
            stop_at: args.stage.clone(),
            rebuild: args.rebuild.clone(),
            verify: args.verify,
            set_aside_corrupt: true,
        },
        offline: args.offline,
        keep_failed: args.keep_failed,
        no_warm: args.no_warm,
        max_restore_size: args.max_restore_size,
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
    let cache = match build_cache(args, global, &events).await {
        Ok(cache) => cache,
        Err(error) => {
            events.emit(Event::Error { message: report::error_chain(&error) });
            return Err(Failure::from(error));
        }
    };
    let context = BuildContext {
        definition: &definition,
        layers: &layers,
        log_dir: log.dir(),
        events: &events,
        options: &options,
        cache: cache.as_ref(),
    };
    let outcome = super::interruptible(async { Ok(crate::build::run(&context).await?) }).await;
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
                report::note(
                    global.log_format,
                    global.quiet,
                    &format!("logs: {}", log.dir().display()),
                );
            }
            if args.test {
                let stage = args.stage.as_deref();
                super::test::run(&args.definition, stage, args.junit.as_deref(), global).await?;
            }
            Ok(())
        }
        Err(error) => {
            events.emit(Event::Error { message: report::error_chain(&error) });
            let hint = next_step_hint(&error, args, &definition, log.dir());
            Err(Failure { error, hint: Some(hint) })
        }
    }
}

/// The shared cache for this build: `None` without `--cache`, or when the registry cannot be
/// used and `--cache-required` is not given (a warning says so).
async fn build_cache(
    args: &BuildArgs,
    global: &GlobalArgs,
    events: &crate::events::Events,
) -> Result<Option<SharedCache>, Error> {
    let Some(url) = &global.cache else {
        if args.push || args.cache_required || args.cache_restore {
            return Err(Error::Usage(
                "--push, --cache-required and --cache-restore need a shared cache: give \
                 --cache URL or set STRATA_CACHE"
                    .to_owned(),
            ));
        }
        return Ok(None);
    };
    if args.offline {
        return Ok(None);
    }
    let policy = super::cache::policy(global, true, args.push)?;
    let options = CacheOptions {
        required: args.cache_required,
        push: args.push,
        restore: args.cache_restore,
        policy,
    };
    Ok(crate::build::connect_cache(url, options, events).await?)
}

/// What to try after a failure, printed after the error: where the logs are, and how to look
/// closer (keep the failed disk, or boot the one that was kept).
fn next_step_hint(
    error: &Error,
    args: &BuildArgs,
    definition: &crate::definition::ImageDefinition,
    log_dir: &Path,
) -> String {
    let mut hint = format!("logs: {}", log_dir.display());
    let Error::Build(BuildError::Failed(failed)) = error else { return hint };
    let in_guest = failed.in_guest();
    match &failed.kept {
        Some(dir) => {
            let machine = &definition.machine;
            hint.push_str(&format!(
                "\nboot the kept disk (changes discarded; Ctrl-A X quits): qemu-system-x86_64 \
                 -machine q35 -accel kvm -accel tcg -cpu max -smp {} -m {}M -nographic -snapshot \
                 -drive file={},if=virtio,format=qcow2 -nic user,model=virtio-net-pci\n\
                 or inspect it: qemu-img info --backing-chain {}; remove it when done: rm -r {}",
                machine.cpus,
                machine.memory.mebibytes(),
                dir.join(crate::layer::DISK_FILE).display(),
                dir.join(crate::layer::DISK_FILE).display(),
                dir.display(),
            ));
        }
        None if in_guest => {
            let def = args.definition.display();
            hint.push_str(&format!(
                "\nto look closer: `strata build {def} --keep-failed` keeps the failed stage's disk; \
                 `strata run {def} --stage NAME` boots a built layer"
            ));
        }
        None => {}
    }
    hint
}
