//! Restore points: a running guest saved right after a live cut (its memory and device state
//! through QMP `migrate`, the small overlay that took writes since the cut, its seed and the
//! keys to reach it), so that the next build of the stage above resumes it in seconds instead of
//! booting. They hold guest memory, which may hold secrets: 0600, never exported.
//! Must not decide when to save or resume: `build` does.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Link;
use super::{Session, StageError, StageJob, Vm, machine_spec};
use crate::communicator::{
    ClientKey, GuestAgentCommunicator, Held, HostKey, SshCommunicator, SshTarget,
};
use crate::events::Event;
use crate::qemu::machine::Machine;
use crate::qemu::spec::MachineSpec;

const STATE_FILE: &str = "state.zst";
const OVERLAY_FILE: &str = "overlay.qcow2";
const SEED_FILE: &str = "seed.img";
/// What zstd said while saving, removed once the save succeeded.
const ZSTD_STDERR_FILE: &str = "zstd.stderr";
use crate::layer::RESTORE_META_FILE as META_FILE;
/// Bumped when what a restore point holds changes. 2: machines have a vmgenid device. 3: the
/// fingerprint is the QEMU version, the accelerator and `layer::machine_shape`.
const FORMAT: u32 = 3;
/// Bytes per second: far above what zstd can take, so never the limit.
const UNLIMITED_BANDWIDTH: u64 = 1 << 40;
const MIGRATE_WITHIN: Duration = Duration::from_secs(300);
/// How often a save or a load is asked how far it got: a QMP query costs well under a
/// millisecond, and a save or load takes about half a second, so a coarser poll would be most
/// of the wait.
const POLL_EVERY: Duration = Duration::from_millis(25);
/// A resumed guest must answer this quickly, or strata boots instead.
const RECONNECT_WITHIN: Duration = Duration::from_secs(45);
const CLOCK_WITHIN: Duration = Duration::from_secs(30);

/// Why the guest's state could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveStateError {
    /// zstd, which writes the state file, failed and said why (a full disk: "No space left on
    /// device"); QEMU's own error follows.
    #[error("zstd could not write {}: {said}", path.display())]
    Writer {
        path: std::path::PathBuf,
        said: String,
        #[source]
        source: crate::qemu::QemuError,
    },
    #[error(transparent)]
    Qemu(crate::qemu::QemuError),
}

/// What `restore.json` records: what a resume needs, and what it must match.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreMeta {
    pub format: u32,
    /// The machine it was saved under: QEMU version, accelerator and the machine's shape
    /// (`layer::machine_shape`: cpus, memory, devices).
    pub machine: Value,
    pub user: String,
    pub client_key: String,
    pub host_key: String,
    pub created: u64,
    pub state_bytes: u64,
    pub save_seconds: f64,
}

/// What must be equal for a saved state to load: the QEMU that runs it (`qemu`, known once it
/// runs) and the machine (`accel` and the shape the definition gives it, the one definition in
/// [`crate::layer::machine_shape`]), which are known before it starts.
fn fingerprint(job: &StageJob<'_>, spec: &MachineSpec, qemu_version: &str) -> Value {
    let mut value = machine_fingerprint(job, spec);
    value["qemu"] = json!(qemu_version);
    value
}

/// The fingerprint but the QEMU version: what a resume checks before it starts QEMU.
fn machine_fingerprint(job: &StageJob<'_>, spec: &MachineSpec) -> Value {
    json!({
        "accel": spec.accel.name(),
        "machine": crate::layer::machine_shape(job.definition, job.stage),
    })
}

/// Why a state saved under the fingerprint `then` cannot load into a machine whose fingerprint
/// (the QEMU version aside, known only once it runs) is `now`; `None` when it can.
fn other_machine_settings(now: &Value, then: &Value) -> Option<String> {
    (now["accel"] != then["accel"] || now["machine"] != then["machine"])
        .then(|| format!("it was saved under other machine settings ({now} now, {then} then)"))
}

fn qemu_version(machine: &Machine) -> String {
    let version = &machine.qmp().greeting()["version"]["qemu"];
    format!("{}.{}.{}", version["major"], version["minor"], version["micro"])
}

fn private_file(path: &Path) -> std::io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

impl Session {
    /// Saves the running guest into `into` (a new folder, 0700), pausing it meanwhile.
    /// `next` is the stage that now writes to the top overlay.
    pub async fn save_restore_point(
        &self,
        next: &StageJob<'_>,
        into: &Path,
    ) -> Result<RestoreMeta, StageError> {
        let stage = next.stage.name.to_string();
        let started = Instant::now();
        let io = |path: &Path| {
            let (stage, path) = (stage.clone(), path.to_owned());
            move |source| StageError::Prepare { stage, path, source }
        };
        let qemu = |what| {
            let stage = stage.clone();
            move |source| StageError::Qemu { stage, what, source }
        };
        fs::create_dir_all(into).map_err(io(into))?;
        fs::set_permissions(into, fs::Permissions::from_mode(0o700)).map_err(io(into))?;
        let state = into.join(STATE_FILE);
        let qmp = self.vm.machine.qmp();
        qmp.execute("stop", None).await.map_err(qemu("failed to pause the guest"))?;
        // zstd's stderr goes to a file: when the save fails (a full disk), it says why. The
        // guest is paused, so its CPUs are free: zstd compresses on every core (`-T0`; 0.80 s
        // against 0.61 s for a 300 MB state on 2 cores), with the same output.
        let zstd_stderr = into.join(ZSTD_STDERR_FILE);
        let uri = format!(
            "exec:zstd -q -1 -T0 -o {} 2>{}",
            crate::process::shell_quote(&state.to_string_lossy()),
            crate::process::shell_quote(&zstd_stderr.to_string_lossy())
        );
        let saved = async {
            // QEMU caps migration at 128 MiB/s by default, meant for a network shared with
            // running guests; into a local pipe that cap is most of the save's time.
            let unlimited = json!({ "max-bandwidth": UNLIMITED_BANDWIDTH });
            qmp.execute("migrate-set-parameters", Some(unlimited)).await?;
            qmp.execute("migrate", Some(json!({ "uri": uri }))).await?;
            wait_migration(&self.vm.machine).await
        }
        .await;
        // Copy the overlay while the guest is paused, so it matches the saved state.
        let copied = saved.is_ok().then(|| {
            fs::copy(&next.disk, into.join(OVERLAY_FILE))
                .and_then(|_| fs::copy(self.seed_path(), into.join(SEED_FILE)))
        });
        qmp.execute("cont", None).await.map_err(qemu("failed to resume the guest"))?;
        if let Err(source) = saved {
            let said = fs::read_to_string(&zstd_stderr).unwrap_or_default().trim().to_owned();
            let source = if said.is_empty() {
                SaveStateError::Qemu(source)
            } else {
                SaveStateError::Writer { path: state.clone(), said, source }
            };
            return Err(StageError::SaveState { stage, source });
        }
        let _ = fs::remove_file(&zstd_stderr);
        copied.unwrap_or(Ok(0)).map_err(io(into))?;
        for file in [STATE_FILE, OVERLAY_FILE, SEED_FILE] {
            private_file(&into.join(file)).map_err(io(into))?;
        }
        let keys = |source| StageError::Keys { stage: stage.clone(), source };
        let meta = RestoreMeta {
            format: FORMAT,
            machine: fingerprint(next, self.vm.machine.spec(), &qemu_version(&self.vm.machine)),
            user: self.vm.target.user.clone(),
            client_key: self.vm.target.client_key.private_openssh().map_err(keys)?,
            host_key: self.vm.host_key.private_openssh().map_err(keys)?,
            created: crate::layer::now_secs(),
            state_bytes: fs::metadata(&state).map_or(0, |meta| meta.len()),
            save_seconds: started.elapsed().as_secs_f64(),
        };
        let text = serde_json::to_vec_pretty(&meta).map_err(|error| StageError::Prepare {
            stage: stage.clone(),
            path: into.to_owned(),
            source: std::io::Error::other(error),
        })?;
        let meta_path = into.join(META_FILE);
        crate::store::write_atomic(&meta_path, &text).map_err(io(&meta_path))?;
        private_file(&meta_path).map_err(io(&meta_path))?;
        Ok(meta)
    }

    /// Resumes the guest saved in `restore` (a layer's `restore/` folder) for `job`, the stage
    /// above that layer: `job.disk` gets a copy of the saved overlay. `Err` says in one line
    /// why not; the caller then boots as usual.
    pub async fn resume(job: &StageJob<'_>, restore: &Path) -> Result<Session, String> {
        let started = Instant::now();
        let meta = read_meta(restore)?;
        let run_dir = super::run_dir(job.stage.name.as_str()).map_err(|error| error.to_string())?;
        fs::copy(restore.join(OVERLAY_FILE), &job.disk)
            .map_err(|error| format!("copying its overlay failed: {error}"))?;
        let seed = run_dir.path().join("seed.img");
        fs::copy(restore.join(SEED_FILE), &seed)
            .map_err(|error| format!("copying its seed failed: {error}"))?;
        let port = crate::qemu::free_local_port().map_err(|error| error.to_string())?;
        let mut spec =
            machine_spec(job, run_dir.path(), &seed, port).map_err(|error| error.to_string())?;
        // The machine's shape is known before QEMU starts: a mismatch costs no start.
        if let Some(why) = other_machine_settings(&machine_fingerprint(job, &spec), &meta.machine) {
            return Err(why);
        }
        let state = restore.join(STATE_FILE);
        spec.incoming = Some(format!(
            "exec:zstd -dc {}",
            crate::process::shell_quote(&state.to_string_lossy())
        ));
        let stage = job.stage.name.to_string();
        let machine =
            Machine::start(spec, job.events, &stage).await.map_err(|error| error.to_string())?;
        tracing::debug!("resume: qemu answers after {:?}", started.elapsed());
        let now = fingerprint(job, machine.spec(), &qemu_version(&machine));
        if now != meta.machine {
            let _ = machine.kill().await;
            return Err(format!(
                "it was saved under another QEMU ({} now, {} then)",
                now["qemu"], meta.machine["qemu"]
            ));
        }
        let sysprep =
            super::guest::SysprepFor { user: &meta.user, ..super::guest::SysprepFor::of(job) };
        let (vm, standby) = continue_guest(machine, &meta, sysprep, port).await?;
        job.events.emit(Event::RestoreResumed {
            stage: stage.clone(),
            from: restore.display().to_string(),
            seconds: started.elapsed().as_secs_f64(),
        });
        let mut session = Session::from_parts(vm, run_dir);
        session.standby = standby;
        Ok(session)
    }
}

fn read_meta(restore: &Path) -> Result<RestoreMeta, String> {
    let text = fs::read(restore.join(META_FILE))
        .map_err(|error| format!("its restore.json is unreadable: {error}"))?;
    let meta: RestoreMeta = serde_json::from_slice(&text)
        .map_err(|error| format!("its restore.json is invalid: {error}"))?;
    if meta.format != FORMAT {
        return Err(format!("it has format {}, this strata writes {FORMAT}", meta.format));
    }
    Ok(meta)
}

/// Waits for the incoming state to load, continues the guest, reconnects, fixes its clock.
/// Over SSH the clock is set by the stage's seal command, started ahead (see
/// [`super::session::stand_by`]), which it returns.
async fn continue_guest(
    machine: Machine,
    meta: &RestoreMeta,
    sysprep: super::guest::SysprepFor<'_>,
    port: u16,
) -> Result<(Vm, Option<Held>), String> {
    let loaded = wait_incoming(&machine).await;
    let fail = |machine: Machine, why: String| async move {
        let stderr = machine.stderr_tail();
        let _ = machine.kill().await;
        let detail = stderr.lines().last().map(|line| format!(" ({line})")).unwrap_or_default();
        Err(format!("{why}{detail}"))
    };
    if let Err(why) = loaded {
        return fail(machine, why).await;
    }
    tracing::debug!("resume: state loaded after {:?}", machine.started().elapsed());
    if let Err(error) = machine.qmp().execute("cont", None).await {
        return fail(machine, format!("the guest did not continue: {error}")).await;
    }
    let client_key =
        ClientKey::from_openssh(&meta.client_key).map_err(|error| error.to_string())?;
    let host_key = HostKey::from_openssh(&meta.host_key).map_err(|error| error.to_string())?;
    let target = SshTarget {
        addr: std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
        user: meta.user.clone(),
        client_key,
        host_key: host_key.public_key().clone(),
    };
    let deadline = Instant::now() + RECONNECT_WITHIN;
    let mut on_wait = |_: &crate::communicator::ConnectWait| {};
    let connected = match &machine.spec().guest_agent_socket {
        Some(socket) => GuestAgentCommunicator::connect(socket, &meta.user, deadline, &mut on_wait)
            .await
            .map(Link::Agent),
        None => {
            SshCommunicator::connect(target.clone(), deadline, &mut on_wait).await.map(Link::Ssh)
        }
    };
    let link = match connected {
        Ok(link) => link,
        Err(error) => return fail(machine, format!("the guest did not answer: {error}")).await,
    };
    tracing::debug!("resume: reconnected after {:?}", machine.started().elapsed());
    // The guest's clock stood still while it was saved: set it to the host's. (`hwclock
    // --hctosys` would wait up to a second for the RTC's next tick.) A failure leaves the clock
    // late, as it would be without the fix, and the seal starts its own command.
    let clock = set_clock_command();
    let standby = match link.ssh() {
        Some(ssh) => super::session::stand_by(ssh, sysprep, &clock, CLOCK_WITHIN).await.ok(),
        None => {
            let _ = crate::communicator::capture(&link, &clock, CLOCK_WITHIN, true).await;
            None
        }
    };
    tracing::debug!("resume: clock set after {:?}", machine.started().elapsed());
    let started = machine.started();
    Ok((Vm { machine, link: Some(link), target, started, host_key }, standby))
}

/// `date -s @SECONDS.NANOS` with the host's time now; its error ignored (the build goes on with a
/// late clock, as it would have without the fix).
fn set_clock_command() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("date -u -s @{}.{:09} >/dev/null 2>&1 || true", now.as_secs(), now.subsec_nanos())
}

async fn wait_migration(machine: &Machine) -> Result<(), crate::qemu::QemuError> {
    let deadline = Instant::now() + MIGRATE_WITHIN;
    loop {
        let status = machine.qmp().execute("query-migrate", None).await?;
        match status["status"].as_str() {
            Some("completed") => return Ok(()),
            Some(state @ ("failed" | "cancelled")) => {
                let detail = status["error-desc"].as_str().unwrap_or(state).to_owned();
                return Err(crate::qemu::QemuError::QmpCommand {
                    command: "migrate".to_owned(),
                    class: state.to_owned(),
                    desc: detail,
                });
            }
            _ if Instant::now() > deadline => {
                return Err(crate::qemu::QemuError::QmpCommand {
                    command: "migrate".to_owned(),
                    class: "timeout".to_owned(),
                    desc: format!("not done after {}s", MIGRATE_WITHIN.as_secs()),
                });
            }
            _ => {}
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn wait_incoming(machine: &Machine) -> Result<(), String> {
    let deadline = Instant::now() + MIGRATE_WITHIN;
    loop {
        if !machine.is_alive() {
            return Err("qemu exited while loading the saved state".to_owned());
        }
        let status =
            machine.qmp().execute("query-status", None).await.map_err(|error| error.to_string())?;
        match status["status"].as_str() {
            Some("inmigrate") | None => {}
            Some("paused" | "postmigrate" | "running") => return Ok(()),
            Some(other) => return Err(format!("the saved state did not load (status {other})")),
        }
        if Instant::now() > deadline {
            return Err("the saved state did not load in time".to_owned());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(memory_mib: u64) -> Value {
        json!({
            "accel": "tcg",
            "machine": { "cpus": 2, "memory_mib": memory_mib, "firmware": "bios", "network": true,
                         "communicator": "Ssh", "extra_args": [] },
            "qemu": "7.2.19",
        })
    }

    /// Other memory (or cpus, firmware, accelerator...) refuses a restore point before QEMU
    /// starts, naming both; the same shape passes on to the QEMU version's check.
    #[test]
    fn a_restore_point_of_another_machine_shape_is_refused_before_qemu_starts() {
        let then = saved(1024);
        let mut now = saved(1280);
        now.as_object_mut().unwrap().remove("qemu");
        let why = other_machine_settings(&now, &then).unwrap();
        assert!(why.contains("other machine settings"), "{why}");
        assert!(why.contains("1280") && why.contains("1024"), "{why}");
        let mut same = saved(1024);
        same.as_object_mut().unwrap().remove("qemu");
        assert_eq!(other_machine_settings(&same, &then), None);
        let mut kvm = same.clone();
        kvm["accel"] = json!("kvm");
        assert!(other_machine_settings(&kvm, &then).is_some(), "another accelerator");
    }

    #[test]
    fn a_state_that_cannot_be_saved_names_its_cause() {
        let qemu = crate::qemu::QemuError::QmpCommand {
            command: "migrate".into(),
            class: "failed".into(),
            desc: "Unable to write to command: Broken pipe".into(),
        };
        let error = StageError::SaveState {
            stage: "app".into(),
            source: SaveStateError::Writer {
                path: "/store/tmp/k.restore/state.zst".into(),
                said: "zstd: error 70 : Write error : cannot write block : No space left on device"
                    .into(),
                source: qemu,
            },
        };
        let chain = crate::events::error_chain(&error);
        assert!(chain.starts_with("stage `app`: failed to save the guest's state"), "{chain}");
        assert!(chain.contains("No space left on device"), "{chain}");
        assert!(chain.contains("Broken pipe"), "{chain}");
    }
}
