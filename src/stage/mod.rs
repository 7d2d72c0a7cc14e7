//! Stages in a guest, from overlay to a disk ready to commit: create the overlay on the parent,
//! seed, boot (or resume a saved guest, `restore`), wait for the communicator and cloud-init,
//! run the steps, collect facts, sysprep, then either power off or, when the next stage goes
//! on in the same guest, cut the layer from the running guest (`session`: one boot for many
//! stages), and check the disk. Also chooses the accelerator for every boot ([`machine_spec`])
//! and boots the throwaway guests `instance` hands out. Must not decide what is cached, nor
//! when to save or resume, nor write into `layers/` (that is `layer/`'s, through `build`).

// StageError carries the console's and the step's last lines so a failure explains itself; it
// only travels the failure path, where its size costs nothing worth boxing it for.
#![allow(clippy::result_large_err)]

mod guest;
mod link;
pub mod restore;
mod session;
mod steps;
mod workdir;

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::communicator::{
    ClientKey, CloudInitOutcome, Communicator, CommunicatorError, GuestAgentCommunicator, HostKey,
    SshCommunicator, SshTarget,
};
use crate::definition::{Firmware, ImageDefinition, Stage};
use crate::events::{Event, Events};
use crate::qemu::accel::{BOOT_WATCHDOG, start_with_fallback};
use crate::qemu::firmware::Ovmf;
use crate::qemu::machine::Machine;
use crate::qemu::spec::{CacheMode, MachineFirmware, MachineSpec, Network};
use crate::qemu::{self, QemuError, img};
use crate::seed::{self, SeedError, SeedFiles, SeedInput};

pub use guest::GuestFacts;
pub use link::Link;
pub use restore::RestoreMeta;
pub use session::{Cut, Session, finish_disk};
pub use workdir::{RUN_DIR_PREFIX, RunDir, sweep_stale_run_dirs};

/// How many lines of a failing step's output and of the console a failure shows.
pub const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("stage `{stage}`: failed to prepare the build folder {path}")]
    Prepare {
        stage: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "stage `{stage}`: disk_size {wanted} is smaller than the source image's virtual size \
         {actual}: raise [machine] disk_size or remove it"
    )]
    DiskTooSmall { stage: String, wanted: crate::units::ByteSize, actual: crate::units::ByteSize },
    #[error("stage `{stage}`: failed to write the cloud-init seed")]
    Seed {
        stage: String,
        #[source]
        source: SeedError,
    },
    /// A bug if it shows: a step ran while no session was open.
    #[error("stage `{stage}`: the guest is not connected")]
    NotConnected { stage: String },
    #[error("stage `{stage}`: failed to generate the build's SSH keys")]
    Keys {
        stage: String,
        #[source]
        source: CommunicatorError,
    },
    #[error("stage `{stage}`: failed to render the environment of step {step}")]
    StepEnv {
        stage: String,
        step: usize,
        #[source]
        source: minijinja::Error,
    },
    #[error("stage `{stage}`: {what}")]
    Qemu {
        stage: String,
        what: &'static str,
        #[source]
        source: QemuError,
    },
    #[error("stage `{stage}`: failed to save the guest's state")]
    SaveState {
        stage: String,
        #[source]
        source: restore::SaveStateError,
    },
    #[error("stage `{stage}`: {what}{}", console_section(console))]
    Communicator {
        stage: String,
        what: String,
        console: Vec<String>,
        #[source]
        source: CommunicatorError,
    },
    #[error("stage `{stage}`: qemu died {during}{}", console_section(console))]
    QemuDied {
        stage: String,
        during: String,
        console: Vec<String>,
        #[source]
        source: QemuError,
    },
    #[error(
        "stage `{stage}`: step {number}/{total} ({description}) {outcome}{}{}",
        output_section(output),
        console_section(console)
    )]
    StepFailed {
        stage: String,
        number: usize,
        total: usize,
        description: String,
        /// "exited with code 3", "timed out after 10m"
        outcome: String,
        output: Vec<String>,
        console: Vec<String>,
    },
}

fn output_section(lines: &[String]) -> String {
    section("its last output lines", lines)
}

fn console_section(lines: &[String]) -> String {
    section("the console's last lines", lines)
}

fn section(title: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut text = format!("\n  {title}:");
    for line in lines {
        text.push_str("\n  | ");
        text.push_str(line);
    }
    text
}

/// Everything one stage build needs.
pub struct StageJob<'a> {
    pub definition: &'a ImageDefinition,
    pub stage: &'a Stage,
    /// The overlay to create (`tmp/KEY.X/disk.qcow2`).
    pub disk: PathBuf,
    /// The overlay's backing file, relative to its folder.
    pub backing: String,
    /// The parent's disk, for its virtual size.
    pub parent_disk: PathBuf,
    /// `[machine] disk_size`, for the first layer only.
    pub grow_to: Option<u64>,
    /// `logs/BUILD/STAGE/`: console.log, qemu.stderr.
    pub log_dir: PathBuf,
    pub events: &'a Events,
    /// Boot `disk` without writing to it (`strata run`).
    pub snapshot: bool,
}

/// What a built stage leaves for its layer.json.
#[derive(Debug, Clone)]
pub struct StageOutput {
    pub facts: GuestFacts,
    pub virtual_bytes: u64,
}

/// `qemu-img create -f qcow2 -F qcow2 -b BACKING DISK [SIZE]`, refusing to shrink.
pub(crate) async fn create_overlay(job: &StageJob<'_>) -> Result<(), StageError> {
    let stage = job.stage.name.to_string();
    let qemu_err = |what| {
        let stage = stage.clone();
        move |source| StageError::Qemu { stage, what, source }
    };
    let size = match job.grow_to {
        None => None,
        Some(wanted) => {
            let parent = img::info(&job.parent_disk)
                .await
                .map_err(qemu_err("failed to read the source image"))?;
            if wanted < parent.virtual_size {
                return Err(StageError::DiskTooSmall {
                    stage,
                    wanted: crate::units::ByteSize(wanted),
                    actual: crate::units::ByteSize(parent.virtual_size),
                });
            }
            Some(wanted)
        }
    };
    img::create_overlay(&job.disk, &job.backing, "qcow2", size)
        .await
        .map_err(qemu_err("failed to create the stage's overlay"))
}

/// A 0700 folder for the seed (it holds the guest's host private key), the QMP socket and
/// the UEFI variables; removed when dropped.
pub(crate) fn run_dir(stage: &str) -> Result<RunDir, StageError> {
    RunDir::create(stage)
}

/// A booted guest and the means to talk to it.
pub struct Vm {
    pub machine: Machine,
    /// The open communicator (SSH or guest agent); `None` only while reconnecting.
    pub link: Option<Link>,
    pub target: SshTarget,
    pub started: Instant,
    /// The guest's host key, kept so a live cut can put it back after sysprep removed it.
    pub host_key: HostKey,
}

/// Writes a fresh seed, starts QEMU and waits until SSH works and cloud-init is done.
pub async fn boot(job: &StageJob<'_>, run_dir: &Path) -> Result<Vm, StageError> {
    let stage = job.stage.name.to_string();
    let keys = BootKeys::generate(&stage)?;
    let seed_path = run_dir.join("seed.img");
    write_seed(job, &keys, &seed_path)?;
    let port = qemu::free_local_port().map_err(|source| StageError::Prepare {
        stage: stage.clone(),
        path: run_dir.to_owned(),
        source,
    })?;
    let spec = machine_spec(job, run_dir, &seed_path, port)?;
    let machine =
        start_with_fallback(spec, job.events, &stage, BOOT_WATCHDOG).await.map_err(|source| {
            StageError::Qemu { stage: stage.clone(), what: "failed to start qemu", source }
        })?;
    let target = SshTarget {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        user: job.definition.communicator.user.clone(),
        client_key: keys.client,
        host_key: keys.host_public,
    };
    let started = machine.started();
    let mut vm = Vm { machine, link: None, target, started, host_key: keys.host };
    connect(job, &mut vm, "while booting").await?;
    Ok(vm)
}

/// Connects (again) and waits for cloud-init, racing QEMU's death.
async fn connect(job: &StageJob<'_>, vm: &mut Vm, during: &str) -> Result<(), StageError> {
    let stage = job.stage.name.to_string();
    let deadline = Instant::now() + job.definition.communicator.ready_timeout;
    let connected = {
        let mut on_wait = |_: &crate::communicator::ConnectWait| {};
        match &vm.machine.spec().guest_agent_socket {
            Some(socket) => {
                let user = &job.definition.communicator.user;
                let connecting =
                    GuestAgentCommunicator::connect(socket, user, deadline, &mut on_wait);
                race_death(&vm.machine, &stage, during, connecting).await?.map(Link::Agent)
            }
            None => {
                let connecting =
                    SshCommunicator::connect(vm.target.clone(), deadline, &mut on_wait);
                race_death(&vm.machine, &stage, during, connecting).await?.map(Link::Ssh)
            }
        }
    };
    let link = connected.map_err(|source| {
        communicator_error(vm, &stage, "the communicator did not become ready", source)
    })?;
    job.events.emit(Event::CommunicatorReady {
        stage: stage.clone(),
        seconds: vm.started.elapsed().as_secs_f64(),
    });
    let outcome =
        race_death(&vm.machine, &stage, "waiting for cloud-init", link.wait_cloud_init(deadline))
            .await?;
    match outcome.map_err(|source| communicator_error(vm, &stage, "cloud-init failed", source))? {
        CloudInitOutcome::Done => {}
        CloudInitOutcome::Degraded { detail } => job.events.warn(format!(
            "stage `{stage}`: cloud-init finished with recoverable errors:\n{detail}"
        )),
    }
    job.events.emit(Event::CloudInitDone { stage, seconds: vm.started.elapsed().as_secs_f64() });
    vm.link = Some(link);
    Ok(())
}

fn communicator_error(vm: &Vm, stage: &str, what: &str, source: CommunicatorError) -> StageError {
    StageError::Communicator {
        stage: stage.to_owned(),
        what: match &vm.link {
            Some(link) => format!("{what} ({})", link.describe()),
            None => match &vm.machine.spec().guest_agent_socket {
                Some(socket) => format!("{what} (guest agent at {})", socket.display()),
                None => format!("{what} ({})", vm.target.addr),
            },
        },
        console: vm.machine.console_tail(TAIL_LINES),
        source,
    }
}

/// Runs `work` unless QEMU dies first; then the error says so with the console's last lines.
pub async fn race_death<T>(
    machine: &Machine,
    stage: &str,
    during: &str,
    work: impl std::future::Future<Output = T>,
) -> Result<T, StageError> {
    tokio::select! {
        result = work => Ok(result),
        _ = machine.died() => Err(StageError::QemuDied {
            stage: stage.to_owned(),
            during: during.to_owned(),
            console: machine.console_tail(TAIL_LINES),
            source: machine.died_error(),
        }),
    }
}

/// The per-boot keys: the client's stays in memory; the host's goes into the seed.
struct BootKeys {
    client: ClientKey,
    host: HostKey,
    host_public: crate::communicator::PublicKey,
}

impl BootKeys {
    fn generate(stage: &str) -> Result<Self, StageError> {
        let wrap = |source| StageError::Keys { stage: stage.to_owned(), source };
        let client = ClientKey::generate().map_err(wrap)?;
        let host = HostKey::generate().map_err(wrap)?;
        let host_public = host.public_key().clone();
        Ok(BootKeys { client, host, host_public })
    }
}

fn write_seed(job: &StageJob<'_>, keys: &BootKeys, path: &Path) -> Result<(), StageError> {
    let stage = job.stage.name.to_string();
    let wrap = |source| StageError::Seed { stage: stage.clone(), source };
    let comm = |source: CommunicatorError| StageError::Keys { stage: stage.clone(), source };
    let hostname = seed::BUILD_HOSTNAME.to_owned();
    let input = SeedInput {
        user: job.definition.communicator.user.clone(),
        ssh_authorized_key: keys.client.public_openssh().map_err(comm)?,
        host_key_private: keys.host.private_openssh().map_err(comm)?,
        host_key_public: keys.host.public_openssh().map_err(comm)?,
        hostname: hostname.clone(),
        image: job.definition.name.clone(),
        stage: stage.clone(),
        vars: job.definition.vars.clone(),
    };
    let user_data =
        match &job.stage.user_data {
            Some(template) => {
                let text = std::fs::read_to_string(template).map_err(|source| {
                    StageError::Prepare { stage: stage.clone(), path: template.clone(), source }
                })?;
                seed::render(&text, &template.display().to_string(), &input).map_err(wrap)?
            }
            None => seed::render_default(&input).map_err(wrap)?,
        };
    let instance_id = seed::InstanceId::random().map_err(wrap)?;
    let files = SeedFiles {
        user_data,
        meta_data: seed::meta_data(&instance_id, &hostname),
        network_config: None,
    };
    seed::write_cidata(path, &files).map_err(wrap)
}

pub(crate) fn machine_spec(
    job: &StageJob<'_>,
    run_dir: &Path,
    seed: &Path,
    ssh_port: u16,
) -> Result<MachineSpec, StageError> {
    let stage = job.stage.name.to_string();
    let machine = &job.definition.machine;
    let mut spec =
        MachineSpec::new(&format!("strata-{}-{stage}", job.definition.name), &job.disk, run_dir);
    // The one place the accelerator is chosen: every boot and resume comes through here.
    spec.accel = qemu::accel::detect(machine.accel).accel;
    spec.cpus = machine.cpus;
    spec.memory_mib = machine.memory.mebibytes();
    spec.disk.cache = if job.snapshot { CacheMode::Writeback } else { CacheMode::Unsafe };
    spec.snapshot = job.snapshot;
    spec.seed = Some(seed.to_owned());
    spec.network = if job.stage.network { Network::User { ssh_port } } else { Network::None };
    if job.definition.communicator.kind == crate::definition::CommunicatorKind::GuestAgent {
        spec.guest_agent_socket = Some(run_dir.join("qga.sock"));
    }
    spec.serial_log = job.log_dir.join("console.log");
    spec.stderr_log = Some(job.log_dir.join("qemu.stderr"));
    spec.extra_args = machine.extra_args.clone();
    if machine.firmware == Firmware::Uefi {
        let qemu_err = |source| StageError::Qemu {
            stage: stage.clone(),
            what: "failed to set up UEFI",
            source,
        };
        spec.firmware = Ovmf::find().and_then(|ovmf| ovmf.for_boot(run_dir)).map_err(qemu_err)?;
    } else {
        spec.firmware = MachineFirmware::Bios;
    }
    Ok(spec)
}

/// Renders a step's `env` values (minijinja templates over `vars`).
pub fn render_env(
    env: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, minijinja::Error> {
    let mut environment = minijinja::Environment::new();
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let context = minijinja::context! { vars => vars };
    env.iter()
        .map(|(name, template)| Ok((name.clone(), environment.render_str(template, &context)?)))
        .collect()
}

/// The last `n` lines, kept as they come.
#[derive(Debug, Default)]
pub struct LastLines {
    lines: VecDeque<String>,
    limit: usize,
}

impl LastLines {
    #[must_use]
    pub fn new(limit: usize) -> Self {
        LastLines { lines: VecDeque::with_capacity(limit), limit }
    }

    /// Keeps `line` as a terminal would show it (see [`crate::events::printable`]): it ends up in messages.
    pub fn push(&mut self, line: &str) {
        if self.lines.len() == self.limit {
            self.lines.pop_front();
        }
        self.lines.push_back(crate::events::printable(line));
    }

    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// Writes the VM's client key (0600) and a known_hosts line pinning its host key, so a user
/// can `ssh` into a `strata run` VM with no trust on first use.
pub fn write_login_files(vm: &Vm, key_path: &Path, known_hosts: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let private = vm.target.client_key.private_openssh().map_err(std::io::Error::other)?;
    let mut file =
        std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(key_path)?;
    file.write_all(private.as_bytes())?;
    let host = vm.target.host_key.to_openssh().map_err(std::io::Error::other)?;
    std::fs::write(known_hosts, format!("[127.0.0.1]:{} {host}\n", vm.target.addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_lines_printable() {
        let mut tail = LastLines::new(2);
        for line in ["one", "\u{1b}[31mtwo\u{1b}[0m", "three"] {
            tail.push(line);
        }
        assert_eq!(tail.lines(), ["two", "three"]);
    }
}
