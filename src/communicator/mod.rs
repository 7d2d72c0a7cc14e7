//! Talking to a running guest: SSH (russh, pinned host key) and the QEMU guest agent.
//! Waiting until ready, running commands with streamed output, uploading files; Ansible steps
//! over the same SSH target.
//! Must not start or stop QEMU.
//!
//! [`Communicator`] is what the stage engine uses; [`SshCommunicator`] and
//! [`GuestAgentCommunicator`] implement it. Six methods are required (`describe`, `run`,
//! `upload`, `upload_bytes`, `reboot`, `close`); the provided ones (`exec`, `exec_as_root`,
//! `run_script`, `boot_id`, `wait_cloud_init`) are built on them. Uploads are written once
//! (`tar::send_path`, `tar::send_bytes`) over each communicator's `tar -x`; an SSH command is
//! started in one place ([`start_command`]), which `fleet` uses too.

mod ansible;
mod held;
mod keys;
mod lines;
mod qga;
pub mod shell;
mod ssh;
mod tar;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use ansible::{ANSIBLE_PLAYBOOK, AnsibleError, AnsibleStep, INVENTORY_HOST};
pub use held::{Held, NotHeld};
pub use keys::{ClientKey, HostKey, fingerprint};
pub use qga::{GuestAgentCommunicator, QgaError};
pub use russh::keys::ssh_key::PublicKey;
pub use ssh::{AttemptError, SshCommunicator, SshTarget, StartStep, start_command};

use crate::events::Stream;
use crate::units::format_duration;

/// How long a command may go on after its timeout's TERM before it gets KILL.
pub const KILL_AFTER: Duration = Duration::from_secs(10);

/// One command to run in the guest.
#[derive(Debug, Clone, Copy)]
pub struct ExecSpec<'a> {
    /// Shell text, run by `/bin/sh -c`.
    pub command: &'a str,
    /// Set for the command; names must be shell identifiers.
    pub env: &'a BTreeMap<String, String>,
    /// Past this the command (and what it started) is killed in the guest.
    pub timeout: Duration,
    /// Run as root (`sudo -n` unless the login user is root).
    pub as_root: bool,
    /// Also end it in the guest when `timeout` passes, with timeout(1), which kills what it
    /// started too. Steps need that. strata's own short commands go without: they start nothing
    /// that outlives them, the host still stops waiting at `timeout` (and a stage that fails
    /// kills its guest), and `timeout` is one process more, 50-100 ms under emulation.
    pub guest_timeout: bool,
}

impl ExecSpec<'_> {
    /// How long the host waits for the command: its timeout, and with a `timeout` in the
    /// guest, the time that takes to end it (TERM, then KILL) and report back.
    #[must_use]
    pub fn host_wait(&self) -> Duration {
        /// Past the guest's KILL, for the exit status to come back.
        const EXIT_GRACE: Duration = Duration::from_secs(5);
        if self.guest_timeout { self.timeout + KILL_AFTER + EXIT_GRACE } else { self.timeout }
    }
}

/// How a command ended. A non-zero code is not an error at this level: the caller decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit status; 128 + N when the command died of signal N and no status came.
    pub code: i32,
    /// The signal's name when the remote side reported one.
    pub signal: Option<String>,
    pub duration: Duration,
}

impl ExitInfo {
    #[must_use]
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Waiting for the communicator: what the progress callback hears after each failed attempt.
#[derive(Debug, Clone)]
pub struct ConnectWait {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Since waiting began.
    pub elapsed: Duration,
    /// Why the last attempt failed, in words.
    pub reason: String,
}

/// How cloud-init ended in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudInitOutcome {
    Done,
    /// Finished with recoverable errors (exit status 2): worth a warning, not a failure.
    /// `detail` is `cloud-init status --long`.
    Degraded {
        detail: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CommunicatorError {
    /// An Ansible step that could not run to an exit status (no ansible-playbook, …).
    #[error("the Ansible step could not run")]
    Ansible(#[source] Box<AnsibleError>),
    /// Asked of a transport that cannot do it (a bug in strata's choice of transport).
    #[error("{guest}: {what} is not possible over this connection")]
    Unsupported { guest: String, what: String },
    #[error("failed to generate an ed25519 key")]
    KeyGeneration(#[source] Box<russh::keys::ssh_key::Error>),
    #[error("failed to encode a key in OpenSSH format")]
    KeyEncoding(#[source] Box<russh::keys::ssh_key::Error>),
    #[error(
        "host key mismatch: expected {expected}, got {got} from {addr}: the guest there is not the one strata seeded (did its cloud-init read the seed? see the console log)"
    )]
    HostKeyMismatch { addr: SocketAddr, expected: String, got: String },
    #[error(
        "gave up after {} waiting for SSH on {user}@{addr} ({attempts} attempts): see the console log; raise [communicator] ready_timeout if the guest is just slow",
        format_duration(*waited)
    )]
    ConnectTimeout {
        addr: SocketAddr,
        user: String,
        waited: Duration,
        attempts: u32,
        #[source]
        last: Box<AttemptError>,
    },
    #[error("failed to {action} on {user}@{addr}")]
    Session {
        addr: SocketAddr,
        user: String,
        action: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error(
        "`{command}` on {guest} ran past its timeout of {} and was killed: raise the step's timeout if it is just slow",
        format_duration(*timeout)
    )]
    Timeout { guest: String, command: String, timeout: Duration },
    #[error(
        "`{name}` is not a valid environment variable name: use letters, digits and `_`, not starting with a digit"
    )]
    EnvName { name: String },
    #[error("{what} contains a NUL byte, which cannot be passed to a command")]
    Nul { what: String },
    #[error("failed to read {path} for upload")]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to upload {local} to {remote} on {guest}: `tar` in the guest exited with {code}: {stderr}"
    )]
    Upload { guest: String, local: String, remote: String, code: i32, stderr: String },
    #[error("`{command}` on {guest} failed with exit status {code}: {stderr}")]
    Command { guest: String, command: String, code: i32, stderr: String },
    #[error("cloud-init on {guest} ended with an error; see the stage's console log:\n{detail}")]
    CloudInit { guest: String, detail: String },
    #[error(
        "{guest} still ran the same boot (boot id {boot_id}) when the deadline came, after being told to reboot"
    )]
    NoReboot { guest: String, boot_id: String },
    #[error(
        "gave up after {} waiting for the QEMU guest agent on {} ({attempts} attempts): the image may have no qemu-guest-agent (the console log shows what booted); use kind = \"ssh\" in [communicator] for an image with an SSH server, or raise ready_timeout if the guest is just slow",
        format_duration(*waited),
        socket.display()
    )]
    AgentTimeout {
        socket: PathBuf,
        waited: Duration,
        attempts: u32,
        #[source]
        last: Box<QgaError>,
    },
    #[error("failed to {action} through the guest agent on {}", socket.display())]
    Agent {
        socket: PathBuf,
        action: String,
        #[source]
        source: Box<QgaError>,
    },
}

/// Talking to one running guest.
pub trait Communicator: Send + Sync {
    /// Who and where, for messages: `debian@127.0.0.1:2222`.
    fn describe(&self) -> String;

    /// Runs one command, streaming its output line by line, stdout and stderr apart.
    /// Past `spec.timeout` the command is killed in the guest and the result is
    /// [`CommunicatorError::Timeout`].
    fn run(
        &self,
        spec: ExecSpec<'_>,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> impl Future<Output = Result<ExitInfo, CommunicatorError>> + Send;

    /// Copies a file or a directory tree to the guest as root, modes kept, owned by root.
    /// A directory's contents go into `remote` (created if missing): `app/` to `/opt/app/`
    /// gives `/opt/app/…`. A file goes to `remote`, or into it when `remote` ends with `/`.
    fn upload(
        &self,
        local: &Path,
        remote: &str,
    ) -> impl Future<Output = Result<(), CommunicatorError>> + Send;

    /// Writes `bytes` to the file `remote` with `mode`, as root; parent folders are created.
    fn upload_bytes(
        &self,
        bytes: &[u8],
        remote: &str,
        mode: u32,
    ) -> impl Future<Output = Result<(), CommunicatorError>> + Send;

    /// Reboots the guest and returns once it answers again from a new boot (a different
    /// `boot_id`), or fails at `deadline`. `on_wait` hears about each failed attempt.
    fn reboot(
        &mut self,
        deadline: Instant,
        on_wait: &mut (dyn FnMut(&ConnectWait) + Send),
    ) -> impl Future<Output = Result<(), CommunicatorError>> + Send;

    /// Ends the session politely.
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized;

    /// Runs `command` as the login user.
    fn exec(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        mut on_output: impl FnMut(Stream, &str) + Send,
    ) -> impl Future<Output = Result<ExitInfo, CommunicatorError>> + Send {
        async move {
            let spec = ExecSpec { command, env, timeout, as_root: false, guest_timeout: true };
            self.run(spec, &mut on_output).await
        }
    }

    /// Runs `command` as root.
    fn exec_as_root(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        mut on_output: impl FnMut(Stream, &str) + Send,
    ) -> impl Future<Output = Result<ExitInfo, CommunicatorError>> + Send {
        async move {
            let spec = ExecSpec { command, env, timeout, as_root: true, guest_timeout: true };
            self.run(spec, &mut on_output).await
        }
    }

    /// Uploads a local script to `/tmp/strata-step-RANDOM` (0755), runs it as root with `env`,
    /// and removes it again (also when it failed).
    fn run_script(
        &self,
        local: &Path,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        mut on_output: impl FnMut(Stream, &str) + Send,
    ) -> impl Future<Output = Result<ExitInfo, CommunicatorError>> + Send {
        async move {
            let bytes = std::fs::read(local).map_err(|source| CommunicatorError::ReadLocal {
                path: local.to_owned(),
                source,
            })?;
            let mut suffix = [0u8; 6];
            // A clash is harmless (the name is only a temp name), so fall back to the pid.
            if getrandom::fill(&mut suffix).is_err() {
                suffix[..4].copy_from_slice(&std::process::id().to_le_bytes());
            }
            let remote = format!("/tmp/strata-step-{}", hex::encode(suffix));
            self.upload_bytes(&bytes, &remote, 0o755).await?;
            let spec = ExecSpec {
                command: &crate::process::shell_quote(&remote),
                env,
                timeout,
                as_root: true,
                guest_timeout: true,
            };
            let result = self.run(spec, &mut on_output).await;
            let cleanup = format!("rm -f -- {}", crate::process::shell_quote(&remote));
            let no_env = BTreeMap::new();
            let cleanup = ExecSpec {
                command: &cleanup,
                env: &no_env,
                timeout: Duration::from_secs(60),
                as_root: true,
                guest_timeout: false,
            };
            let removed = self.run(cleanup, &mut |_, _| {}).await;
            let exit = result?;
            removed?;
            Ok(exit)
        }
    }

    /// The guest kernel's boot id: it changes with every boot.
    fn boot_id(&self) -> impl Future<Output = Result<String, CommunicatorError>> + Send {
        async move {
            let command = "cat /proc/sys/kernel/random/boot_id";
            let (exit, stdout, stderr) =
                capture(self, command, Duration::from_secs(60), false).await?;
            match stdout.trim() {
                id if exit.success() && !id.is_empty() => Ok(id.to_owned()),
                _ => Err(command_failed(self, command, &exit, &stderr)),
            }
        }
    }

    /// Waits for cloud-init to finish (`cloud-init status --wait`) until `deadline`, as the
    /// login user; see [`wait_cloud_init_as`].
    fn wait_cloud_init(
        &self,
        deadline: Instant,
    ) -> impl Future<Output = Result<CloudInitOutcome, CommunicatorError>> + Send {
        wait_cloud_init_as(self, deadline, false)
    }
}

/// Waits for cloud-init to finish until `deadline` ([`WAIT_CLOUD_INIT`]), as root or as the
/// login user. Exit status 2 (recoverable errors) is [`CloudInitOutcome::Degraded`]; 1 is an
/// error carrying `cloud-init status --long`.
pub(crate) async fn wait_cloud_init_as<C: Communicator + ?Sized>(
    communicator: &C,
    deadline: Instant,
    as_root: bool,
) -> Result<CloudInitOutcome, CommunicatorError> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    let (exit, _, stderr) = capture(communicator, WAIT_CLOUD_INIT, left, as_root).await?;
    match exit.code {
        0 => Ok(CloudInitOutcome::Done),
        1 | 2 => {
            let long = "cloud-init status --long";
            let (_, detail, more) =
                capture(communicator, long, Duration::from_secs(60), as_root).await?;
            let detail = format!("{}{}", detail.trim_end(), more.trim_end());
            if exit.code == 2 {
                Ok(CloudInitOutcome::Degraded { detail })
            } else {
                Err(CommunicatorError::CloudInit { guest: communicator.describe(), detail })
            }
        }
        _ => Err(command_failed(communicator, "cloud-init status --wait", &exit, &stderr)),
    }
}

/// `cloud-init status --wait`, with a fast path: cloud-init links `/run/cloud-init/result.json`
/// to the file it writes as its last act, listing the errors of every stage. Polling for it from
/// the shell answers within 0.2 s of the end, where cloud-init's own Python start alone costs
/// about 3 s under emulation. Anything but a clean finish (errors, cloud-init disabled or
/// missing, cloud-final failed) is left to `cloud-init status --wait` to judge and explain.
pub(crate) const WAIT_CLOUD_INIT: &str = r#"if [ -e /run/cloud-init/enabled ]; then
  until [ -e /run/cloud-init/result.json ] || systemctl is-failed --quiet cloud-final.service; do
    sleep 0.2
  done
  grep -qs '"errors": \[\]' /run/cloud-init/result.json && exit 0
fi
exec cloud-init status --wait"#;

fn command_failed<C: Communicator + ?Sized>(
    communicator: &C,
    command: &str,
    exit: &ExitInfo,
    stderr: &str,
) -> CommunicatorError {
    CommunicatorError::Command {
        guest: communicator.describe(),
        command: command.to_owned(),
        code: exit.code,
        stderr: stderr.trim_end().to_owned(),
    }
}

/// Runs one of strata's own commands (as root, or as the login user; without a `timeout` in the
/// guest, see [`ExecSpec::guest_timeout`]) and keeps its output: (exit, stdout, stderr).
pub(crate) async fn capture<C: Communicator + ?Sized>(
    communicator: &C,
    command: &str,
    timeout: Duration,
    as_root: bool,
) -> Result<(ExitInfo, String, String), CommunicatorError> {
    let mut stdout = String::new();
    let mut stderr = String::new();
    let env = BTreeMap::new();
    let spec = ExecSpec { command, env: &env, timeout, as_root, guest_timeout: false };
    let exit = communicator
        .run(spec, &mut |stream, line| {
            let text = if stream == Stream::Stdout { &mut stdout } else { &mut stderr };
            text.push_str(line);
            text.push('\n');
        })
        .await?;
    Ok((exit, stdout, stderr))
}
