//! `strata run DEF [--stage NAME]`: boots a throwaway VM on a built layer (nothing is written
//! to it), prints how to ssh in, and stops the VM on Ctrl-C.

use std::path::Path;
use std::sync::Arc;

use super::Error;
use super::GlobalArgs;
use crate::events::Event;
use crate::layer::{LayerError, LayerStore, PlanError};
use crate::report::buildlog::BuildLog;
use crate::stage::{StageError, StageJob};

/// A throwaway guest on a built layer: a new overlay (discarded), a new instance-id and seed,
/// new host and user keys, booted and ready (communicator up, cloud-init done). What
/// `strata run` hands a person and what `strata test` checks.
pub(super) struct FreshVm {
    pub vm: crate::stage::Vm,
    pub stage: String,
    pub layer: crate::layer::Layer,
    pub events: crate::events::Events,
    /// 0700: the seed, the QMP socket, login files; removed when dropped.
    pub run_dir: crate::stage::RunDir,
}

/// Boots a fresh guest on `stage`'s layer (default the last). `for_login`: talk SSH with a
/// network whatever the build used (a person logs in); else boot as the build did.
pub(super) async fn boot_fresh(
    definition_path: &Path,
    stage: Option<&str>,
    for_login: bool,
    global: &GlobalArgs,
) -> Result<FreshVm, Error> {
    let definition = crate::definition::load(definition_path)?;
    let store = global.open_store()?;
    let layers = LayerStore::new(store.clone());
    // gc takes this lock exclusively: it never removes the layers a running VM stands on.
    let _gc_guard = super::lock_gc_shared(&store).await?;
    let built = crate::layer::built_stage(&definition, &layers, stage).map_err(|error| {
        match error {
            PlanError::NotBuilt { stage, reason } => Error::Runtime(format!(
                "stage `{stage}` of {} is not built ({reason}): run `strata build {} --stage {stage}` first",
                definition_path.display(),
                definition_path.display()
            )),
            other => Error::Plan(other),
        }
    })?;
    let stage_name = built.stage.name.to_string();
    let layer = built.layer.clone();
    let log = Arc::new(
        BuildLog::create(&store.logs_dir())
            .map_err(|source| LayerError::Write { path: store.logs_dir(), source })?,
    );
    let events = global.events().with(log.clone());
    let log_dir = log
        .stage_dir(&stage_name)
        .map_err(|source| LayerError::Write { path: log.dir().to_owned(), source })?;
    let accel = crate::qemu::accel::detect(definition.machine.accel);
    let mut login = definition.clone();
    let mut stage = built.stage.clone();
    if for_login {
        login.communicator.kind = crate::definition::CommunicatorKind::Ssh;
        stage.network = true;
    }
    let job = StageJob {
        definition: &login,
        stage: &stage,
        disk: layer.disk(),
        backing: String::new(),
        parent_disk: layer.disk(),
        grow_to: None,
        accel: accel.accel,
        log_dir,
        events: &events,
        snapshot: true,
    };
    let run_dir = crate::stage::RunDir::create(&stage_name)?;
    let vm =
        super::interruptible(async { Ok(crate::stage::boot(&job, run_dir.path()).await?) }).await?;
    Ok(FreshVm { vm, stage: stage_name, layer, events, run_dir })
}

pub async fn run(
    definition_path: &Path,
    stage: Option<&str>,
    global: &GlobalArgs,
) -> Result<(), Error> {
    let FreshVm { vm, stage: stage_name, events, run_dir, .. } =
        boot_fresh(definition_path, stage, true, global).await?;
    let key_path = run_dir.path().join("id_ed25519");
    let known_hosts = run_dir.path().join("known_hosts");
    crate::stage::write_login_files(&vm, &key_path, &known_hosts).map_err(|source| {
        StageError::Prepare { stage: stage_name.clone(), path: key_path.clone(), source }
    })?;
    let port = vm.target.addr.port();
    let user = vm.target.user.clone();
    let ssh_command = format!(
        "ssh -i {} -o UserKnownHostsFile={} -p {port} {user}@127.0.0.1",
        key_path.display(),
        known_hosts.display()
    );
    events.emit(Event::VmReady {
        stage: stage_name.clone(),
        user,
        port,
        key_path: key_path.clone(),
        ssh_command: ssh_command.clone(),
    });
    crate::report::note(
        global.log_format,
        global.quiet,
        &format!(
            "{stage_name} is running (changes are discarded):\n  {ssh_command}\nCtrl-C stops it."
        ),
    );
    let stop = super::stop_signal()?;
    let stopped = tokio::select! {
        signal = stop => Some(signal),
        _ = vm.machine.died() => None,
    };
    let _ = vm.machine.kill().await;
    drop(run_dir);
    match stopped {
        // Ctrl-C is how a person ends a run: success.
        None | Some(super::StopSignal::Interrupt) => Ok(()),
        Some(signal) => Err(Error::Interrupted(signal)),
    }
}
