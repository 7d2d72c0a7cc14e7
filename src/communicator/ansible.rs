//! An Ansible step: the host's `ansible-playbook` run against the guest over strata's own SSH.
//! Owns the step's private work folder (0700: the build's client key in a 0600 file, a
//! known_hosts that pins the guest's host key, a generated inventory, the extra vars as JSON),
//! removed when the run ends, fails or is dropped. Must not start or stop QEMU, and never turns
//! host key checking off.
//!
//! It lives beside the SSH communicator because it is another client of the same target
//! ([`SshTarget`]: address, user, keys), not a stage concern.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::lines::Lines;
use super::{ExitInfo, SshTarget};
use crate::events::Stream;
use crate::process::shell_quote as quote;
use crate::process::{Command, DEFAULT_GRACE, ProcessError};
use crate::units::format_duration;

/// The program run unless told otherwise (Debian package `ansible-core`).
pub const ANSIBLE_PLAYBOOK: &str = "ansible-playbook";
/// The inventory's one host: Packer's Ansible provisioner calls it `default` too, so
/// playbooks written for it run unchanged (as do those that say `hosts: all`).
pub const INVENTORY_HOST: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum AnsibleError {
    #[error("the playbook {} does not exist or is not a file: check the step's `ansible` path", path.display())]
    NoPlaybook { path: PathBuf },
    #[error("failed to prepare the Ansible work folder in {}", dir.display())]
    WorkFolder {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to encode the inventory or the extra vars for {}", playbook.display())]
    Encode {
        playbook: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to run the playbook {}", playbook.display())]
    Start {
        playbook: PathBuf,
        #[source]
        source: ProcessError,
    },
    #[error(
        "the playbook {} ran past its timeout of {} and was stopped: raise the step's timeout if it is just slow",
        playbook.display(),
        format_duration(*timeout)
    )]
    Timeout { playbook: PathBuf, timeout: Duration },
}

/// One `{ ansible = "PATH/site.yml", extra_vars = { … }, tags = [...] }` step.
#[derive(Debug, Clone)]
pub struct AnsibleStep {
    playbook: PathBuf,
    extra_vars: BTreeMap<String, Value>,
    tags: Vec<String>,
    program: PathBuf,
}

impl AnsibleStep {
    #[must_use]
    pub fn new(playbook: PathBuf, extra_vars: BTreeMap<String, Value>, tags: Vec<String>) -> Self {
        AnsibleStep { playbook, extra_vars, tags, program: PathBuf::from(ANSIBLE_PLAYBOOK) }
    }

    /// Runs another `ansible-playbook` than the one on PATH.
    #[must_use]
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Runs the playbook against `target` with a work folder made inside `work_parent` (the
    /// stage's own 0700 folder), streaming ansible's output lines to `on_output`. The exit
    /// status is the caller's to judge, as a shell step's is. Past `timeout` ansible is
    /// stopped (TERM, then KILL) and the result is [`AnsibleError::Timeout`].
    pub async fn run(
        &self,
        target: &SshTarget,
        work_parent: &Path,
        timeout: Duration,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExitInfo, AnsibleError> {
        let playbook = self.absolute_playbook()?;
        // Dropped on every way out of this function, a cancelled future included: the key
        // file goes with it.
        let work = WorkFolder::create(work_parent, target, &self.extra_vars)
            .map_err(|error| error.for_playbook(&playbook))?;
        let started = Instant::now();
        let mut child = self
            .command(&playbook, &work)
            .spawn()
            .map_err(|source| AnsibleError::Start { playbook: playbook.clone(), source })?;
        let mut stdout = child.take_stdout();
        let streamed = async {
            let mut lines = Lines::default();
            let mut buffer = vec![0u8; 8192];
            if let Some(stdout) = stdout.as_mut() {
                loop {
                    match stdout.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => lines.push(&buffer[..read], Stream::Stdout, on_output),
                    }
                }
            }
            lines.finish(Stream::Stdout, on_output);
            child.died().await
        };
        let status = match tokio::time::timeout(timeout, streamed).await {
            Ok(Some(status)) => status,
            Ok(None) => {
                let source = child.lost();
                return Err(AnsibleError::Start { playbook, source });
            }
            Err(_) => {
                let _ = child.stop(DEFAULT_GRACE).await;
                return Err(AnsibleError::Timeout { playbook, timeout });
            }
        };
        // Ansible writes warnings and its own errors on stderr; they come after its stdout.
        let mut lines = Lines::default();
        lines.push(child.stderr_tail().as_bytes(), Stream::Stderr, on_output);
        lines.finish(Stream::Stderr, on_output);
        Ok(exit_info(status, started.elapsed()))
    }

    fn absolute_playbook(&self) -> Result<PathBuf, AnsibleError> {
        let missing = || AnsibleError::NoPlaybook { path: self.playbook.clone() };
        let path = fs::canonicalize(&self.playbook).map_err(|_| missing())?;
        if path.is_file() { Ok(path) } else { Err(missing()) }
    }

    fn command(&self, playbook: &Path, work: &WorkFolder) -> Command {
        let folder = playbook.parent().unwrap_or(Path::new("/"));
        let mut command = Command::new(&self.program)
            .arg("-i")
            .arg(work.inventory())
            .arg("--extra-vars")
            .arg(format!("@{}", work.extra_vars().display()));
        for tag in &self.tags {
            command = command.arg("--tags").arg(tag);
        }
        // In the playbook's folder, so its ansible.cfg, roles/ and relative paths apply; the
        // settings below are environment variables, which win over any ansible.cfg.
        command
            .arg(playbook)
            .current_dir(folder)
            .stdout_piped()
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .env("ANSIBLE_SSH_ARGS", work.ssh_args())
            // One SSH connection per task instead of several; Debian's sudo needs no tty.
            .env("ANSIBLE_PIPELINING", "True")
            .env("ANSIBLE_LOCAL_TEMP", work.path.join("tmp"))
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            .env("ANSIBLE_FORCE_COLOR", "False")
            .env("PYTHONUNBUFFERED", "1")
    }
}

fn exit_info(status: std::process::ExitStatus, duration: Duration) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal();
    let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    let signal = signal.map(|number| {
        nix::sys::signal::Signal::try_from(number).map_or_else(
            |_| number.to_string(),
            |known| known.as_str().trim_start_matches("SIG").to_owned(),
        )
    });
    ExitInfo { code, signal, duration }
}

/// The step's private folder; removed when dropped.
struct WorkFolder {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// A failure while writing the work folder, before the playbook's name is attached.
enum WorkError {
    Io { dir: PathBuf, source: io::Error },
    Encode(Box<dyn std::error::Error + Send + Sync>),
}

impl WorkError {
    fn for_playbook(self, playbook: &Path) -> AnsibleError {
        match self {
            WorkError::Io { dir, source } => AnsibleError::WorkFolder { dir, source },
            WorkError::Encode(source) => {
                AnsibleError::Encode { playbook: playbook.to_owned(), source }
            }
        }
    }
}

impl WorkFolder {
    fn create(
        parent: &Path,
        target: &SshTarget,
        extra_vars: &BTreeMap<String, Value>,
    ) -> Result<WorkFolder, WorkError> {
        let io = |source| WorkError::Io { dir: parent.to_owned(), source };
        let dir = tempfile::Builder::new()
            .prefix("ansible-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(io)?;
        let work = WorkFolder { path: dir.path().to_owned(), _dir: dir };
        let key =
            target.client_key.private_openssh().map_err(|e| WorkError::Encode(Box::new(e)))?;
        write_new(&work.key(), key.as_bytes(), 0o600).map_err(io)?;
        let host = target.host_key.to_openssh().map_err(|e| WorkError::Encode(Box::new(e)))?;
        write_new(
            &work.known_hosts(),
            format!("{} {host}\n", known_host(target)).as_bytes(),
            0o600,
        )
        .map_err(io)?;
        let inventory = inventory(target, &work.key());
        let encode = |value: &Value| {
            serde_json::to_vec_pretty(value).map_err(|e| WorkError::Encode(Box::new(e)))
        };
        write_new(&work.inventory(), &encode(&inventory)?, 0o600).map_err(io)?;
        write_new(&work.extra_vars(), &encode(&json!(extra_vars))?, 0o600).map_err(io)?;
        fs::create_dir(work.path.join("tmp")).map_err(io)?;
        Ok(work)
    }

    fn key(&self) -> PathBuf {
        self.path.join("id_ed25519")
    }

    fn known_hosts(&self) -> PathBuf {
        self.path.join("known_hosts")
    }

    /// JSON is YAML: Ansible's yaml inventory plugin takes a `.json` file.
    fn inventory(&self) -> PathBuf {
        self.path.join("inventory.json")
    }

    fn extra_vars(&self) -> PathBuf {
        self.path.join("extra_vars.json")
    }

    /// Options for every ssh Ansible runs: only the pinned host key is trusted, only the
    /// build's key is offered, nothing is written back, no connection outlives the step.
    fn ssh_args(&self) -> String {
        let known_hosts = quote(&self.known_hosts().to_string_lossy());
        format!(
            "-o ControlMaster=no -o ControlPath=none -o UserKnownHostsFile={known_hosts} \
             -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o UpdateHostKeys=no \
             -o IdentitiesOnly=yes -o BatchMode=yes"
        )
    }
}

/// How known_hosts names the guest: `[127.0.0.1]:PORT`, or the bare address on port 22.
fn known_host(target: &SshTarget) -> String {
    match target.addr.port() {
        22 => target.addr.ip().to_string(),
        port => format!("[{}]:{port}", target.addr.ip()),
    }
}

fn inventory(target: &SshTarget, key: &Path) -> Value {
    json!({
        "all": {
            "hosts": {
                INVENTORY_HOST: {
                    "ansible_host": target.addr.ip().to_string(),
                    "ansible_port": target.addr.port(),
                    "ansible_user": target.user,
                    "ansible_connection": "ssh",
                    "ansible_ssh_private_key_file": key,
                    // Debian's cloud image has it; naming it saves a discovery round trip.
                    "ansible_python_interpreter": "/usr/bin/python3",
                }
            }
        }
    })
}

/// Creates `path` (it must not exist) with `mode` from the start, and syncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
