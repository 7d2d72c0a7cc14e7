//! The guest-agent communicator: steps run over QEMU's virtio-serial port
//! `org.qemu.guest_agent.0` (a unix socket on the host, see `MachineSpec.guest_agent_socket`),
//! so a guest needs neither a network nor an SSH server. Speaks the guest agent protocol with
//! qapi-qga's command types and its own tolerant reader (`qga/wire.rs`) over one connection
//! framed with `guest-sync-delimited` (`qga/channel.rs`); this file holds the operations: runs
//! commands with `guest-exec` and polls `guest-exec-status`; uploads tar streams with
//! `guest-file-open`/`write`/`close`; reboots and powers off with `guest-shutdown`; freezes
//! file systems for live cuts. Must not start or stop QEMU.
//!
//! Output: qemu-ga's own `capture-output` hands output over only when the command has exited
//! (and caps it at 16 MiB), so commands write to two files in the guest's /tmp instead, which
//! strata opens first and reads with `guest-file-read` between polls: lines arrive while the
//! command runs, about every [`STREAM_EVERY`]. The command unlinks the files as soon as it has
//! them open, so nothing is left behind.

mod channel;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qapi_qga::{GuestShutdownMode, QgaCommand};
use tokio::sync::{Mutex, mpsc};

use self::channel::{Channel, Request, decode, random_suffix};
use super::lines::Lines;
use super::tar;
use super::{
    CloudInitOutcome, Communicator, CommunicatorError, ConnectWait, ExecSpec, ExitInfo, shell,
};
use crate::events::Stream;
use crate::units::format_duration;

/// What a command's environment starts from: `guest-exec`'s `env` replaces qemu-ga's own.
const BASE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long one request may wait for its reply (a `guest-exec` forks; a write carries a chunk).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// `guest-shutdown` answers only when it failed; this long strata listens for that.
const SHUTDOWN_ERROR_WINDOW: Duration = Duration::from_secs(2);
/// Polling `guest-exec-status`: from this pause, doubling up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_millis(200);
/// How often a running command's output files are read.
pub const STREAM_EVERY: Duration = Duration::from_millis(250);
/// Bytes asked for per `guest-file-read`.
const READ_CHUNK: i64 = 1024 * 1024;
/// Raw bytes per `guest-file-write` (base64 makes it 4/3 larger on the wire; qemu-ga's JSON
/// parser refuses a request over 64 MiB). Measured under TCG for 100 MB: 48 KiB writes 1.9 and
/// 2.1 MB/s, 1 MiB writes 1.8 and 1.6 MB/s; qemu-ga's own parsing is the limit.
pub const DEFAULT_UPLOAD_CHUNK: usize = 48 * 1024;
/// `guest-file-write` requests sent in one round trip. More than one is possible but not
/// safe here: with 8 in flight, a 100 MB upload under TCG stalled after ~25 MB (qemu-ga's
/// reply never came), which one at a time never did.
const WRITES_IN_FLIGHT: usize = 1;
/// Freezing syncs every file system first.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(120);
/// During a reboot the old agent may die mid-request: do not wait long for any one reply.
const REBOOT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Between boot id checks while waiting for the old boot to end.
const REBOOT_PAUSE: Duration = Duration::from_secs(1);

/// What went wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    #[error("could not connect to the socket")]
    Connect(#[source] std::io::Error),
    #[error("the socket failed")]
    Io(#[source] std::io::Error),
    #[error("QEMU closed the socket (did QEMU exit?)")]
    Closed,
    #[error(
        "no reply to `{command}` within {} (the guest agent is not running, or not yet)",
        format_duration(*within)
    )]
    NoReply { command: String, within: Duration },
    #[error("failed to encode `{command}`")]
    Encode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the guest agent's reply to `{command}` is not what its schema says")]
    Decode {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the guest agent refused `{command}`: {class}: {desc}")]
    Refused { command: String, class: String, desc: String },
    #[error("`guest-file-write` wrote {written} of {len} bytes")]
    ShortWrite { written: i64, len: usize },
}

/// Talks to one guest through its QEMU guest agent. Commands run as root (qemu-ga's user);
/// `as_root = false` runs them as the login user through `runuser`.
pub struct GuestAgentCommunicator {
    socket: PathBuf,
    user: String,
    upload_chunk: usize,
    link: Mutex<Channel>,
}

impl fmt::Debug for GuestAgentCommunicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestAgentCommunicator")
            .field("socket", &self.socket)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A running command's two output files, read as they grow.
struct Outputs {
    handles: [(i64, Stream); 2],
    stdout: Lines,
    stderr: Lines,
}

impl GuestAgentCommunicator {
    /// Connects to QEMU's guest agent socket and waits until the agent answers
    /// `guest-sync-delimited`, resending it while the guest boots, until `deadline`;
    /// `on_wait` hears about each unanswered round. `user` is the login user that
    /// `as_root = false` commands run as.
    pub async fn connect(
        socket: &Path,
        user: &str,
        deadline: Instant,
        on_wait: &mut (dyn FnMut(&ConnectWait) + Send),
    ) -> Result<GuestAgentCommunicator, CommunicatorError> {
        let started = Instant::now();
        let mut link = Channel::default();
        link.sync(socket, deadline, on_wait).await.map_err(|(last, attempts)| {
            CommunicatorError::AgentTimeout {
                socket: socket.to_owned(),
                waited: started.elapsed(),
                attempts,
                last: Box::new(last),
            }
        })?;
        Ok(GuestAgentCommunicator {
            socket: socket.to_owned(),
            user: user.to_owned(),
            upload_chunk: DEFAULT_UPLOAD_CHUNK,
            link: Mutex::new(link),
        })
    }

    /// Sets how many raw bytes go in one `guest-file-write` (at least 4 KiB, at most 32 MiB).
    #[must_use]
    pub fn with_upload_chunk(mut self, bytes: usize) -> Self {
        self.upload_chunk = bytes.clamp(4096, 32 * 1024 * 1024);
        self
    }

    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    fn agent_error(&self, action: &str, source: QgaError) -> CommunicatorError {
        CommunicatorError::Agent {
            socket: self.socket.clone(),
            action: action.to_owned(),
            source: Box::new(source),
        }
    }

    /// Runs one typed command and decodes its reply.
    async fn call_within<C: QgaCommand>(
        &self,
        command: &C,
        within: Duration,
    ) -> Result<C::Ok, QgaError> {
        let request = Request::new(command)?;
        let mut replies = self.batch(&[request], within).await?;
        decode::<C>(replies.pop())
    }

    async fn batch(
        &self,
        requests: &[Request],
        within: Duration,
    ) -> Result<Vec<Result<serde_json::Value, QgaError>>, QgaError> {
        self.link.lock().await.batch(&self.socket, requests, within).await
    }

    async fn call<C: QgaCommand>(&self, command: &C) -> Result<C::Ok, QgaError> {
        self.call_within(command, CALL_TIMEOUT).await
    }

    /// `guest-shutdown` with `mode`. Success has no reply (the agent goes down), so strata
    /// listens briefly for an error and takes silence as success.
    async fn shutdown(&self, mode: GuestShutdownMode) -> Result<(), CommunicatorError> {
        let request = Request::new(&qapi_qga::guest_shutdown { mode: Some(mode) })
            .map_err(|error| self.agent_error("ask for a shutdown", error))?;
        self.link
            .lock()
            .await
            .send_unanswered(&self.socket, &request, SHUTDOWN_ERROR_WINDOW)
            .await
            .map_err(|error| self.agent_error("ask for a shutdown", error))
    }

    /// Freezes the guest's file systems (`guest-fsfreeze-freeze`) for a consistent live
    /// snapshot; returns how many were frozen. Thaw with [`Self::thaw`] soon: while frozen,
    /// the agent refuses most commands and the guest's writers block.
    pub async fn freeze(&self) -> Result<u32, CommunicatorError> {
        let count = self
            .call_within(&qapi_qga::guest_fsfreeze_freeze {}, FREEZE_TIMEOUT)
            .await
            .map_err(|error| self.agent_error("freeze the guest's file systems", error))?;
        Ok(u32::try_from(count).unwrap_or(0))
    }

    /// Thaws what [`Self::freeze`] froze; returns how many file systems were thawed.
    pub async fn thaw(&self) -> Result<u32, CommunicatorError> {
        let count = self
            .call_within(&qapi_qga::guest_fsfreeze_thaw {}, FREEZE_TIMEOUT)
            .await
            .map_err(|error| self.agent_error("thaw the guest's file systems", error))?;
        Ok(u32::try_from(count).unwrap_or(0))
    }

    /// Asks the guest to power off (`guest-shutdown` mode powerdown) and ends the session.
    /// Wait for QEMU to exit (`Machine::wait_exit`) to know it did.
    pub async fn power_off(self) -> Result<(), CommunicatorError> {
        self.shutdown(GuestShutdownMode::Powerdown).await
    }

    /// The command's wrapper for `/bin/sh -c`: output to the two files (then unlinked), the
    /// login user's home as the working folder, `runuser` for the login user, and `line`.
    fn wrapper(&self, line: &str, as_root: bool, out: &str, err: &str) -> String {
        let user = crate::process::shell_quote(&self.user);
        let plain_user = user == self.user;
        let mut script = format!("exec >>{out} 2>>{err} </dev/null; rm -f -- {out} {err}; ");
        if plain_user {
            script.push_str(&format!("cd ~{user} 2>/dev/null || cd /; "));
        } else {
            script.push_str("cd /; ");
        }
        script.push_str("exec ");
        if !as_root && self.user != "root" {
            script.push_str(&format!("runuser -u {user} -- "));
        }
        script.push_str(line);
        script
    }

    async fn run_with(
        &self,
        spec: ExecSpec<'_>,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
        call_timeout: Duration,
    ) -> Result<ExitInfo, CommunicatorError> {
        let line = shell::command_line(&spec, true)?;
        let base = format!("/tmp/strata-exec-{}", random_suffix());
        let (out_path, err_path) = (format!("{base}.out"), format!("{base}.err"));
        let script = self.wrapper(&line, spec.as_root, &out_path, &err_path);
        let starting = || format!("start `{}`", spec.command);
        let open = |path: &str| {
            Request::new(&qapi_qga::guest_file_open {
                path: path.to_owned(),
                mode: Some("w+".to_owned()),
            })
        };
        // Both files, then the command, in one round trip.
        let requests = [open(&out_path), open(&err_path), Request::new(&exec_request(&script))]
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| self.agent_error(&starting(), error))?;
        let started = Instant::now();
        let mut replies = self
            .batch(&requests, call_timeout)
            .await
            .map_err(|error| self.agent_error(&starting(), error))?
            .into_iter();
        let out = decode::<qapi_qga::guest_file_open>(replies.next());
        let err = decode::<qapi_qga::guest_file_open>(replies.next());
        let pid = decode::<qapi_qga::guest_exec>(replies.next()).map(|exec| exec.pid);
        let (out, err, pid) = match (out, err, pid) {
            (Ok(out), Ok(err), Ok(pid)) => (out, err, pid),
            (out, err, pid) => {
                // The command must not run on unseen; what was opened is closed again.
                if let Ok(pid) = pid {
                    let _ = self.spawn(&format!("kill -KILL -- -{pid} {pid}"), call_timeout).await;
                }
                let opened: Vec<i64> = [&out, &err].into_iter().flatten().copied().collect();
                self.close_files(&opened, call_timeout).await;
                let _ = self.spawn(&format!("rm -f -- {out_path} {err_path}"), call_timeout).await;
                let error = [out.err(), err.err(), pid.err()].into_iter().flatten().next();
                return Err(self.agent_error(&starting(), error.unwrap_or(QgaError::Closed)));
            }
        };
        let mut outputs = Outputs {
            handles: [(out, Stream::Stdout), (err, Stream::Stderr)],
            stdout: Lines::default(),
            stderr: Lines::default(),
        };
        let result =
            self.wait_for(&spec, pid, started, &mut outputs, on_output, call_timeout).await;
        outputs.stdout.finish(Stream::Stdout, on_output);
        outputs.stderr.finish(Stream::Stderr, on_output);
        self.close_files(&[out, err], call_timeout).await;
        result
    }

    async fn close_files(&self, handles: &[i64], call_timeout: Duration) {
        let requests: Vec<Request> = handles
            .iter()
            .filter_map(|&handle| Request::new(&qapi_qga::guest_file_close { handle }).ok())
            .collect();
        if !requests.is_empty() {
            let _ = self.batch(&requests, call_timeout).await;
        }
    }

    /// Starts `/bin/sh -c script` as root and returns its pid, without waiting.
    async fn spawn(&self, script: &str, call_timeout: Duration) -> Result<i64, QgaError> {
        Ok(self.call_within(&exec_request(script), call_timeout).await?.pid)
    }

    /// Polls the command until it exits, reading its output files in the same round trips.
    async fn wait_for(
        &self,
        spec: &ExecSpec<'_>,
        pid: i64,
        started: Instant,
        outputs: &mut Outputs,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
        call_timeout: Duration,
    ) -> Result<ExitInfo, CommunicatorError> {
        let waiting = || format!("wait for `{}`", spec.command);
        let limit = started + spec.host_wait();
        let mut pause = FIRST_POLL;
        let mut last_read: Option<Instant> = None;
        let status = loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(MAX_POLL);
            let read_now = last_read.is_none_or(|at| at.elapsed() >= STREAM_EVERY);
            let mut requests = vec![
                Request::new(&qapi_qga::guest_exec_status { pid })
                    .map_err(|error| self.agent_error(&waiting(), error))?,
            ];
            if read_now {
                requests.extend(
                    read_requests(outputs).map_err(|error| self.agent_error(&waiting(), error))?,
                );
            }
            let mut replies = self
                .batch(&requests, call_timeout)
                .await
                .map_err(|error| self.agent_error(&waiting(), error))?
                .into_iter();
            let status = decode::<qapi_qga::guest_exec_status>(replies.next())
                .map_err(|error| self.agent_error(&waiting(), error))?;
            let mut more = false;
            if read_now {
                last_read = Some(Instant::now());
                more = take_reads(outputs, &mut replies, on_output)
                    .map_err(|error| self.agent_error(&waiting(), error))?;
            }
            if status.exited {
                // The reads came after the status, so they saw all the command wrote, unless
                // they were not made or a file had more than one read gives.
                if !read_now || more {
                    self.drain_outputs(outputs, on_output, call_timeout)
                        .await
                        .map_err(|error| self.agent_error(&waiting(), error))?;
                }
                break status;
            }
            if Instant::now() >= limit {
                // `timeout` in the guest should have ended it; make sure.
                let _ = self.spawn(&format!("kill -KILL -- -{pid} {pid}"), call_timeout).await;
                return Err(CommunicatorError::Timeout {
                    guest: self.describe(),
                    command: spec.command.to_owned(),
                    timeout: spec.timeout,
                });
            }
        };
        let duration = started.elapsed();
        let signal = status.signal.and_then(|n| i32::try_from(n).ok());
        let code = match (status.exitcode, signal) {
            (Some(code), _) => i32::try_from(code).unwrap_or(i32::MAX),
            (None, Some(signal)) => 128 + signal,
            (None, None) => -1,
        };
        // 124: timeout(1) sent TERM; 137: it had to send KILL too.
        if matches!(code, 124 | 137) && duration >= spec.timeout {
            return Err(CommunicatorError::Timeout {
                guest: self.describe(),
                command: spec.command.to_owned(),
                timeout: spec.timeout,
            });
        }
        Ok(ExitInfo { code, signal: signal.map(signal_name), duration })
    }

    /// Reads both output files until neither has more.
    async fn drain_outputs(
        &self,
        outputs: &mut Outputs,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
        call_timeout: Duration,
    ) -> Result<(), QgaError> {
        loop {
            let requests = read_requests(outputs)?;
            let mut replies = self.batch(&requests, call_timeout).await?.into_iter();
            if !take_reads(outputs, &mut replies, on_output)? {
                return Ok(());
            }
        }
    }

    /// Writes the chunks to `handle`, [`WRITES_IN_FLIGHT`] requests per round trip.
    async fn write_chunks(
        &self,
        handle: i64,
        mut chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        local: &str,
    ) -> Result<(), CommunicatorError> {
        let failed = |error| self.agent_error(&format!("upload {local}"), error);
        let mut done = false;
        while !done {
            let mut requests = Vec::with_capacity(WRITES_IN_FLIGHT);
            let mut lengths = Vec::with_capacity(WRITES_IN_FLIGHT);
            while requests.len() < WRITES_IN_FLIGHT {
                let Some(chunk) = chunks.recv().await else {
                    done = true;
                    break;
                };
                let chunk = chunk.map_err(|source| CommunicatorError::ReadLocal {
                    path: local.into(),
                    source,
                })?;
                lengths.push(chunk.len());
                let write =
                    qapi_qga::guest_file_write { handle, buf_b64: chunk.to_vec(), count: None };
                requests.push(Request::new(&write).map_err(failed)?);
            }
            if requests.is_empty() {
                break;
            }
            let mut replies =
                self.batch(&requests, CALL_TIMEOUT).await.map_err(failed)?.into_iter();
            for len in lengths {
                let wrote = decode::<qapi_qga::guest_file_write>(replies.next()).map_err(failed)?;
                if usize::try_from(wrote.count).ok() != Some(len) {
                    return Err(failed(QgaError::ShortWrite { written: wrote.count, len }));
                }
            }
        }
        Ok(())
    }

    async fn boot_id_within(&self, call_timeout: Duration) -> Result<String, CommunicatorError> {
        let env = BTreeMap::new();
        let command = "cat /proc/sys/kernel/random/boot_id";
        let spec = ExecSpec {
            command,
            env: &env,
            timeout: Duration::from_secs(30),
            as_root: true,
            guest_timeout: false,
        };
        let mut stdout = String::new();
        let exit = self
            .run_with(
                spec,
                &mut |stream, line| {
                    if stream == Stream::Stdout {
                        stdout.push_str(line);
                    }
                },
                call_timeout,
            )
            .await?;
        match stdout.trim() {
            id if exit.success() && !id.is_empty() => Ok(id.to_owned()),
            _ => Err(CommunicatorError::Command {
                guest: self.describe(),
                command: command.to_owned(),
                code: exit.code,
                stderr: String::new(),
            }),
        }
    }
}

fn signal_name(number: i32) -> String {
    match number {
        libc::SIGHUP => "HUP",
        libc::SIGINT => "INT",
        libc::SIGQUIT => "QUIT",
        libc::SIGILL => "ILL",
        libc::SIGABRT => "ABRT",
        libc::SIGFPE => "FPE",
        libc::SIGKILL => "KILL",
        libc::SIGSEGV => "SEGV",
        libc::SIGPIPE => "PIPE",
        libc::SIGALRM => "ALRM",
        libc::SIGTERM => "TERM",
        libc::SIGUSR1 => "USR1",
        libc::SIGUSR2 => "USR2",
        _ => return number.to_string(),
    }
    .to_owned()
}

/// `guest-exec` of `/bin/sh -c script` as root, with a minimal environment (the agent's own
/// is replaced, not extended) and no captured output.
fn exec_request(script: &str) -> qapi_qga::guest_exec {
    qapi_qga::guest_exec {
        path: "/bin/sh".to_owned(),
        arg: Some(vec!["-c".to_owned(), script.to_owned()]),
        env: Some(vec![
            BASE_PATH.to_owned(),
            "HOME=/root".to_owned(),
            "USER=root".to_owned(),
            "LOGNAME=root".to_owned(),
        ]),
        input_data: None,
        capture_output: None,
    }
}

/// One `guest-file-read` per output file, stdout first.
fn read_requests(outputs: &Outputs) -> Result<Vec<Request>, QgaError> {
    outputs
        .handles
        .iter()
        .map(|&(handle, _)| {
            Request::new(&qapi_qga::guest_file_read { handle, count: Some(READ_CHUNK) })
        })
        .collect()
}

/// Takes the replies of [`read_requests`] and passes their lines on; true when a file may
/// have more than one read gave.
fn take_reads(
    outputs: &mut Outputs,
    replies: &mut impl Iterator<Item = Result<serde_json::Value, QgaError>>,
    on_output: &mut (dyn FnMut(Stream, &str) + Send),
) -> Result<bool, QgaError> {
    let mut more = false;
    for (_, stream) in outputs.handles {
        let read = decode::<qapi_qga::guest_file_read>(replies.next())?;
        let lines = match stream {
            Stream::Stdout => &mut outputs.stdout,
            Stream::Stderr => &mut outputs.stderr,
        };
        lines.push(&read.buf_b64, stream, on_output);
        more |= read.count >= READ_CHUNK;
    }
    Ok(more)
}

impl Communicator for GuestAgentCommunicator {
    fn describe(&self) -> String {
        format!("{} via the guest agent on {}", self.user, self.socket.display())
    }

    async fn run(
        &self,
        spec: ExecSpec<'_>,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExitInfo, CommunicatorError> {
        self.run_with(spec, on_output, CALL_TIMEOUT).await
    }

    async fn upload(&self, local: &Path, remote: &str) -> Result<(), CommunicatorError> {
        tar::send_path(self, local, remote).await
    }

    async fn upload_bytes(
        &self,
        bytes: &[u8],
        remote: &str,
        mode: u32,
    ) -> Result<(), CommunicatorError> {
        tar::send_bytes(self, bytes, remote, mode).await
    }

    async fn reboot(
        &mut self,
        deadline: Instant,
        on_wait: &mut (dyn FnMut(&ConnectWait) + Send),
    ) -> Result<(), CommunicatorError> {
        let before = self.boot_id_within(CALL_TIMEOUT).await?;
        self.shutdown(GuestShutdownMode::Reboot).await?;
        let started = Instant::now();
        loop {
            let synced = self.link.lock().await.sync(&self.socket, deadline, on_wait).await;
            if let Err((last, attempts)) = synced {
                return Err(CommunicatorError::AgentTimeout {
                    socket: self.socket.clone(),
                    waited: started.elapsed(),
                    attempts,
                    last: Box::new(last),
                });
            }
            // The old agent answers until the old boot ends.
            match self.boot_id_within(REBOOT_CALL_TIMEOUT).await {
                Ok(id) if id != before => return Ok(()),
                Ok(_) | Err(_) if Instant::now() + REBOOT_PAUSE < deadline => {
                    tokio::time::sleep(REBOOT_PAUSE).await;
                }
                _ => {
                    return Err(CommunicatorError::NoReboot {
                        guest: self.describe(),
                        boot_id: before,
                    });
                }
            }
        }
    }

    /// As root: over the guest agent the login user may not exist yet.
    async fn boot_id(&self) -> Result<String, CommunicatorError> {
        self.boot_id_within(CALL_TIMEOUT).await
    }

    /// As [`Communicator::wait_cloud_init`] says, but as root: cloud-init is what creates the
    /// login user, and over the guest agent nothing waited for that before.
    async fn wait_cloud_init(
        &self,
        deadline: Instant,
    ) -> Result<CloudInitOutcome, CommunicatorError> {
        super::wait_cloud_init_as(self, deadline, true).await
    }

    async fn close(self) {
        // Nothing to say goodbye to: the agent serves whoever connects next.
        drop(self);
    }
}

impl tar::Untar for GuestAgentCommunicator {
    fn chunk(&self) -> usize {
        self.upload_chunk
    }

    /// Writes the tar stream from `chunks` to a temp file in the guest, then extracts it into
    /// `dir` as root and removes it.
    async fn extract(
        &self,
        dir: &str,
        chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        local: &str,
        remote: &str,
    ) -> Result<(), CommunicatorError> {
        let temp = format!("/tmp/strata-upload-{}.tar", random_suffix());
        let open = qapi_qga::guest_file_open { path: temp.clone(), mode: Some("w".to_owned()) };
        let action = format!("upload {local} to {remote}");
        let handle = self.call(&open).await.map_err(|error| self.agent_error(&action, error))?;
        let written = self.write_chunks(handle, chunks, local).await;
        let closed = self.call(&qapi_qga::guest_file_close { handle }).await;
        let quoted_temp = crate::process::shell_quote(&temp);
        if let Err(error) = written {
            let _ = self.spawn(&format!("rm -f -- {quoted_temp}"), CALL_TIMEOUT).await;
            return Err(error);
        }
        closed.map_err(|error| self.agent_error(&action, error))?;
        let quoted = crate::process::shell_quote(dir);
        let script = format!(
            "mkdir -p -- {quoted} && tar -x --no-same-owner -f {quoted_temp} -C {quoted}; \
             rc=$?; rm -f -- {quoted_temp}; exit $rc"
        );
        let env = BTreeMap::new();
        let spec = ExecSpec {
            command: &script,
            env: &env,
            timeout: Duration::from_secs(3600),
            as_root: true,
            guest_timeout: true,
        };
        let mut stderr = String::new();
        let exit = self
            .run(spec, &mut |stream, line| {
                if stream == Stream::Stderr {
                    stderr.push_str(line);
                    stderr.push('\n');
                }
            })
            .await?;
        if !exit.success() {
            return Err(CommunicatorError::Upload {
                guest: self.describe(),
                local: local.to_owned(),
                remote: remote.to_owned(),
                code: exit.code,
                stderr: stderr.trim_end().to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_redirects_unlinks_and_drops_to_the_user() {
        let communicator = GuestAgentCommunicator {
            socket: PathBuf::from("/run/x/qga.sock"),
            user: "debian".to_owned(),
            upload_chunk: DEFAULT_UPLOAD_CHUNK,
            link: Mutex::new(Channel::default()),
        };
        let as_user = communicator.wrapper("timeout 1s true", false, "/tmp/o", "/tmp/e");
        assert_eq!(
            as_user,
            "exec >>/tmp/o 2>>/tmp/e </dev/null; rm -f -- /tmp/o /tmp/e; \
             cd ~debian 2>/dev/null || cd /; exec runuser -u debian -- timeout 1s true"
        );
        let as_root = communicator.wrapper("true", true, "/tmp/o", "/tmp/e");
        assert!(as_root.ends_with("exec true"), "{as_root}");
    }

    /// The wrapper, run by a real shell here: output lands in the files, which are gone after.
    #[test]
    fn wrapper_runs_in_a_real_shell() {
        let communicator = GuestAgentCommunicator {
            socket: PathBuf::from("/run/x/qga.sock"),
            user: "root".to_owned(),
            upload_chunk: DEFAULT_UPLOAD_CHUNK,
            link: Mutex::new(Channel::default()),
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o");
        let err = dir.path().join("e");
        std::fs::write(&out, "").unwrap();
        std::fs::write(&err, "").unwrap();
        let keep_out = std::fs::File::open(&out).unwrap();
        let keep_err = std::fs::File::open(&err).unwrap();
        let mut env = BTreeMap::new();
        env.insert("GREETING".to_owned(), "it's here".to_owned());
        let spec = ExecSpec {
            command: "echo \"$GREETING\"; echo oops >&2; exit 3",
            env: &env,
            timeout: Duration::from_secs(5),
            as_root: true,
            guest_timeout: true,
        };
        let line = shell::command_line(&spec, true).unwrap();
        let script =
            communicator.wrapper(&line, true, out.to_str().unwrap(), err.to_str().unwrap());
        let status = std::process::Command::new("/bin/sh").arg("-c").arg(&script).status().unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(!out.exists() && !err.exists());
        let read = |mut file: &std::fs::File| {
            use std::io::Read;
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap();
            text
        };
        assert_eq!(read(&keep_out), "it's here\n");
        assert_eq!(read(&keep_err), "oops\n");
    }

    #[test]
    fn chunks_have_the_asked_size() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut rx = tar::produce_tar(4096, |tar| {
                tar::append_file(
                    tar,
                    std::path::Path::new("f"),
                    0o600,
                    0,
                    10_000,
                    &vec![1u8; 10_000][..],
                )
            });
            let mut sizes = Vec::new();
            while let Some(chunk) = rx.recv().await {
                sizes.push(chunk.unwrap().len());
            }
            // 512 header + 10000 data + 240 padding + 1024 end = 11776 bytes.
            assert_eq!(sizes, vec![4096, 4096, 3584]);
        });
    }
}
