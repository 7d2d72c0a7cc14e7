//! Every child process strata starts: its own process group, stderr drained, a deadline on
//! every wait, a graceful stop then a kill, killed on drop and when strata dies.
//! Must not know what the child is (beyond which Debian package provides a missing program).
//! Also the one home of shell text every layer writes (a leaf, so `drift`, `export`, `fleet`
//! and `communicator` all may import it): [`shell_quote`], the `sudo -n` prefix ([`SUDO`]) and
//! [`root_shell_command`].
//!
//! TRAP: children die with strata through `PR_SET_PDEATHSIG(SIGKILL)`, which Linux fires when
//! the *thread* that forked the child exits, not the process. Tokio's blocking-pool threads
//! exit after being idle for a while, so [`Command::spawn`] must only be called from async
//! context on a runtime worker thread (or a thread that lives as long as the child should):
//! never from inside `spawn_blocking` or a short-lived `std::thread`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::watch;

use crate::units::format_duration;

/// How much of a child's stderr is kept in memory unless told otherwise.
pub const DEFAULT_STDERR_TAIL: usize = 64 * 1024;
/// How long [`Child::stop`] waits after SIGTERM before SIGKILL, unless told otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How long a wait after SIGKILL may take before something is declared very wrong.
const AFTER_KILL: Duration = Duration::from_secs(10);
/// How long the reaper waits for stderr to reach EOF after the child exited (a grandchild
/// may hold the pipe open).
const STDERR_SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("failed to start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{program}` was not found: {hint}")]
    NotInstalled { program: String, hint: String },
    #[error(
        "failed to open {path} for the stderr of `{program}`: check that its folder exists and is writable"
    )]
    StderrLog {
        program: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` did not finish within {}{}", format_duration(*within), tail_suffix(stderr_tail))]
    Timeout { command: String, within: Duration, stderr_tail: String },
    #[error("`{command}` failed ({status}){}", tail_suffix(stderr_tail))]
    Failed { command: String, status: ExitStatus, stderr_tail: String },
    #[error("failed to wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },
    /// The supervisor stopped (the runtime shut down) or could not wait for the child (then
    /// `source` says why).
    #[error("lost track of `{command}` (pid {pid}): its supervisor stopped before it exited")]
    Lost {
        command: String,
        pid: u32,
        #[source]
        source: Option<Arc<io::Error>>,
    },
    #[error("failed to read the output of `{command}`")]
    Read {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` did not exit within {} of SIGKILL", format_duration(AFTER_KILL))]
    Unkillable { command: String },
}

fn tail_suffix(tail: &str) -> String {
    let tail = tail.trim_end();
    if tail.is_empty() { String::new() } else { format!("; its stderr ends with:\n{tail}") }
}

/// The Debian package that provides a program strata runs, for "not installed" errors.
#[must_use]
pub fn debian_package(program: &str) -> Option<&'static str> {
    let name = Path::new(program).file_name()?.to_str()?;
    let package = match name {
        "qemu-system-x86_64" => "qemu-system-x86",
        "qemu-img" | "qemu-nbd" | "qemu-io" => "qemu-utils",
        "ssh" | "ssh-keygen" | "scp" => "openssh-client",
        "sshd" => "openssh-server",
        "mkfs.vfat" | "fsck.vfat" | "mkfs.fat" => "dosfstools",
        "mcopy" | "mformat" => "mtools",
        "mmdebstrap" => "mmdebstrap",
        "sfdisk" | "fdisk" => "fdisk",
        "sgdisk" => "gdisk",
        "xorriso" => "xorriso",
        "zstd" => "zstd",
        "cloud-localds" => "cloud-image-utils",
        "ansible-playbook" => "ansible-core",
        _ => return None,
    };
    Some(package)
}

/// Checks that `program` is installed (an executable file on PATH, or at the path given), for
/// programs that something else runs on strata's behalf (QEMU's `exec:zstd`) and whose absence
/// would otherwise show late and vaguely. The error names the Debian package.
pub fn require_program(program: &str) -> Result<(), ProcessError> {
    require_program_in(program, std::env::var_os("PATH").as_deref())
}

fn require_program_in(program: &str, search_path: Option<&OsStr>) -> Result<(), ProcessError> {
    let found = if program.contains('/') {
        is_executable(Path::new(program))
    } else {
        search_path.is_some_and(|dirs| {
            std::env::split_paths(dirs).any(|dir| is_executable(&dir.join(program)))
        })
    };
    if found { Ok(()) } else { Err(spawn_error(program, io::ErrorKind::NotFound.into())) }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// A child process to start: a builder over `tokio::process::Command` that always sets a new
/// process group, a parent-death signal and a null stdin unless asked otherwise.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    current_dir: Option<PathBuf>,
    envs: Vec<(OsString, OsString)>,
    stdin_piped: bool,
    stdout_piped: bool,
    stderr_log: Option<PathBuf>,
    stderr_tail: usize,
}

impl Command {
    #[must_use]
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            current_dir: None,
            envs: Vec::new(),
            stdin_piped: false,
            stdout_piped: false,
            stderr_log: None,
            stderr_tail: DEFAULT_STDERR_TAIL,
        }
    }

    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    #[must_use]
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Give the child a pipe for stdin (see [`Child::take_stdin`]); the default is /dev/null.
    #[must_use]
    pub fn stdin_piped(mut self) -> Self {
        self.stdin_piped = true;
        self
    }

    /// Give the child a pipe for stdout (see [`Child::take_stdout`]); the default is /dev/null.
    #[must_use]
    pub fn stdout_piped(mut self) -> Self {
        self.stdout_piped = true;
        self
    }

    /// Also append everything the child writes on stderr to this file.
    #[must_use]
    pub fn stderr_to_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stderr_log = Some(path.into());
        self
    }

    /// Keep the last `bytes` of stderr in memory (default [`DEFAULT_STDERR_TAIL`]).
    #[must_use]
    pub fn stderr_tail(mut self, bytes: usize) -> Self {
        self.stderr_tail = bytes.max(1);
        self
    }

    #[must_use]
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    #[must_use]
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The command line, shell-quoted where needed: for messages and logs.
    #[must_use]
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|part| shell_quote(&part.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts the child. Must run on a long-lived thread (see the module's TRAP note).
    pub fn spawn(self) -> Result<Child, ProcessError> {
        let program = self.program.to_string_lossy().into_owned();
        let command_line = self.display();
        if let Some(dir) = &self.current_dir
            && !dir.is_dir()
        {
            return Err(ProcessError::Spawn {
                program,
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("working folder {} does not exist", dir.display()),
                ),
            });
        }
        let log = match &self.stderr_log {
            Some(path) => {
                Some(std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(
                    |source| ProcessError::StderrLog {
                        program: program.clone(),
                        path: path.clone(),
                        source,
                    },
                )?)
            }
            None => None,
        };

        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .stdin(if self.stdin_piped { Stdio::piped() } else { Stdio::null() })
            .stdout(if self.stdout_piped { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        die_with_parent(&mut command);

        let mut child = command.spawn().map_err(|source| spawn_error(&program, source))?;
        let Some(pid) = child.id() else {
            return Err(ProcessError::Spawn {
                program,
                source: io::Error::other("the child exited before its pid was read"),
            });
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let tail = Arc::new(Mutex::new(StderrTail::new(self.stderr_tail)));
        let drain = child.stderr.take().map(|stderr| {
            tokio::spawn(drain_stderr(stderr, tail.clone(), log.map(tokio::fs::File::from_std)))
        });

        let (sender, status) = watch::channel(None);
        let wait_error = Arc::new(Mutex::new(None));
        let wait_failure = wait_error.clone();
        tokio::spawn(async move {
            let result = child.wait().await;
            if let Some(drain) = drain {
                let _ = tokio::time::timeout(STDERR_SETTLE, drain).await;
            }
            match result {
                Ok(exit) => {
                    let _ = sender.send(Some(exit));
                }
                // No warning here (only `report/` prints): the status never comes, and whoever
                // waits for it gets `Lost` with this cause.
                Err(error) => {
                    if let Ok(mut slot) = wait_failure.lock() {
                        *slot = Some(Arc::new(error));
                    }
                }
            }
        });

        Ok(Child { pid, command: command_line, status, wait_error, tail, stdin, stdout })
    }

    /// Runs the child to completion (stdout captured) within `within`, whatever its exit status.
    pub async fn output_unchecked(self, within: Duration) -> Result<Output, ProcessError> {
        let started = std::time::Instant::now();
        let mut child = self.stdout_piped().spawn()?;
        let mut stdout = child.take_stdout();
        let command = child.command.clone();
        let run = async {
            let mut captured = Vec::new();
            if let Some(stdout) = stdout.as_mut() {
                stdout
                    .read_to_end(&mut captured)
                    .await
                    .map_err(|source| ProcessError::Read { command: command.clone(), source })?;
            }
            let status = child.wait_with_deadline(within).await?;
            Ok::<_, ProcessError>((status, captured))
        };
        match tokio::time::timeout(within, run).await {
            Ok(Ok((status, stdout))) => {
                // Where a build's host-side seconds go (`STRATA_LOG=strata=debug`).
                tracing::debug!("ran in {:?}: {}", started.elapsed(), child.command);
                Ok(Output { status, stdout, stderr: child.stderr_tail() })
            }
            Ok(Err(error)) => {
                let _ = child.kill().await;
                Err(error)
            }
            Err(_) => {
                let _ = child.kill().await;
                Err(ProcessError::Timeout { command, within, stderr_tail: child.stderr_tail() })
            }
        }
    }
}

/// Runs a short command to completion within `within`, with its stdout captured; an exit
/// status other than 0 is an error that names the command line and ends with its stderr.
pub async fn output(command: Command, within: Duration) -> Result<Output, ProcessError> {
    let line = command.display();
    let output = command.output_unchecked(within).await?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(ProcessError::Failed {
            command: line,
            status: output.status,
            stderr_tail: output.stderr,
        })
    }
}

fn spawn_error(program: &str, source: io::Error) -> ProcessError {
    if source.kind() != io::ErrorKind::NotFound {
        return ProcessError::Spawn { program: program.to_owned(), source };
    }
    let hint = match debian_package(program) {
        Some(package) => {
            format!("install it (Debian/Ubuntu package `{package}`), or put it on PATH")
        }
        None => "install it, or put it on PATH".to_owned(),
    };
    ProcessError::NotInstalled { program: program.to_owned(), hint }
}

/// Makes the kernel SIGKILL the child when the thread that forks it dies (see the module's
/// TRAP note), and kills the child at once if strata already died before the prctl.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut tokio::process::Command) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it calls prctl(2), getppid(2) and _exit(2) only, allocates nothing,
    // takes no locks, and touches no memory but the copied `parent` integer.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

async fn drain_stderr(
    mut stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<StderrTail>>,
    mut log: Option<tokio::fs::File>,
) {
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        if let Ok(mut tail) = tail.lock() {
            tail.push(chunk);
        }
        if let Some(file) = log.as_mut()
            && (file.write_all(chunk).await.is_err() || file.flush().await.is_err())
        {
            log = None;
        }
    }
    if let Some(mut file) = log {
        let _ = file.flush().await;
    }
}

/// The last bytes of a stream, bounded.
#[derive(Debug)]
struct StderrTail {
    bytes: VecDeque<u8>,
    capacity: usize,
    truncated: bool,
}

impl StderrTail {
    fn new(capacity: usize) -> Self {
        StderrTail { bytes: VecDeque::new(), capacity, truncated: false }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    /// The text, starting at a line boundary when the beginning was dropped.
    fn text(&self) -> String {
        let (front, back) = self.bytes.as_slices();
        let mut all = Vec::with_capacity(self.bytes.len());
        all.extend_from_slice(front);
        all.extend_from_slice(back);
        let start = if self.truncated {
            all.iter().position(|&byte| byte == b'\n').map_or(0, |newline| newline + 1)
        } else {
            0
        };
        String::from_utf8_lossy(&all[start..]).into_owned()
    }
}

/// What a finished short command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The tail of stderr (see [`Command::stderr_tail`]).
    pub stderr: String,
}

/// How [`Child::stop`] ended the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It had exited before it was asked to.
    AlreadyExited(ExitStatus),
    /// It exited within the grace period after SIGTERM.
    Terminated(ExitStatus),
    /// It had to be killed.
    Killed(ExitStatus),
}

impl Stopped {
    #[must_use]
    pub fn status(self) -> ExitStatus {
        match self {
            Stopped::AlreadyExited(status)
            | Stopped::Terminated(status)
            | Stopped::Killed(status) => status,
        }
    }
}

/// A running (or finished) child. Dropping it SIGKILLs its whole process group if it has not
/// exited yet; a background task reaps it and publishes its exit status.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    command: String,
    status: watch::Receiver<Option<ExitStatus>>,
    /// Why the supervisor could not wait for the child, if it could not.
    wait_error: Arc<Mutex<Option<Arc<io::Error>>>>,
    tail: Arc<Mutex<StderrTail>>,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
}

impl Child {
    /// The child's pid, which is also its process group id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line it was started with.
    #[must_use]
    pub fn command(&self) -> &str {
        &self.command
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The last part of what the child wrote on stderr so far (complete once it exited).
    #[must_use]
    pub fn stderr_tail(&self) -> String {
        self.tail.lock().map(|tail| tail.text()).unwrap_or_default()
    }

    /// Its exit status, once it has exited and been reaped.
    #[must_use]
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.status.borrow()
    }

    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.exited().is_none()
    }

    /// Resolves when the child exits, with its status; `None` if its supervisor went away
    /// first (the runtime shut down). Independent of `self`: select on it beside other work.
    pub fn died(&self) -> impl Future<Output = Option<ExitStatus>> + Send + 'static {
        let mut status = self.status.clone();
        async move { status.wait_for(Option::is_some).await.ok().and_then(|status| *status) }
    }

    /// The error for a child whose exit status will never come (see [`ProcessError::Lost`]).
    #[must_use]
    pub fn lost(&self) -> ProcessError {
        ProcessError::Lost {
            command: self.command.clone(),
            pid: self.pid,
            source: self.wait_error.lock().ok().and_then(|slot| slot.clone()),
        }
    }

    /// Waits for the child to exit, at most `within`; the child is left alone on timeout.
    pub async fn wait_with_deadline(&self, within: Duration) -> Result<ExitStatus, ProcessError> {
        match tokio::time::timeout(within, self.died()).await {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(self.lost()),
            Err(_) => Err(ProcessError::Timeout {
                command: self.command.clone(),
                within,
                stderr_tail: self.stderr_tail(),
            }),
        }
    }

    /// Sends `signal` to the child's whole process group, unless it has already exited.
    pub fn signal(&self, signal: Signal) {
        if self.is_alive() {
            let group = Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
            let _ = killpg(group, signal);
        }
    }

    /// SIGTERM to the group, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&self, grace: Duration) -> Result<Stopped, ProcessError> {
        if let Some(status) = self.exited() {
            return Ok(Stopped::AlreadyExited(status));
        }
        self.signal(Signal::SIGTERM);
        if let Ok(status) = self.wait_with_deadline(grace).await {
            return Ok(Stopped::Terminated(status));
        }
        self.kill().await.map(Stopped::Killed)
    }

    /// SIGKILL to the group, then wait for the exit.
    pub async fn kill(&self) -> Result<ExitStatus, ProcessError> {
        self.signal(Signal::SIGKILL);
        match self.wait_with_deadline(AFTER_KILL).await {
            Err(ProcessError::Timeout { .. }) => {
                Err(ProcessError::Unkillable { command: self.command.clone() })
            }
            other => other,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Quotes `word`, an argument, for a POSIX shell when it needs it: single quotes, with `'`
/// written as `'\''`. `=` is left bare: harmless in an argument (only a command's first word
/// `a=b` would be an assignment, and no first word strata writes holds one).
#[must_use]
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

/// The command line that runs `script` with `/bin/sh` as root over a remote login: as it is
/// when the login is root, else through `sudo -n` (which fails rather than ask for a password).
#[must_use]
pub fn root_shell_command(login_is_root: bool, script: &str) -> String {
    let command = format!("/bin/sh -c {}", shell_quote(script));
    if login_is_root { command } else { format!("{SUDO} {command}") }
}

/// The words that run a command as root from a login that is not root: `sudo -n` fails rather
/// than ask for a password.
pub const SUDO: &str = "sudo -n --";

/// For tests: the host tool `program`, which a test needs, is on PATH; if not, the test fails
/// with the line that installs it. scripts/test.sh installs every tool the tests use, so a
/// missing one is a broken environment: never a test that passes without checking anything.
#[cfg(test)]
pub(crate) fn require_tool(program: &str, install: &str) {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    });
    assert!(found, "{program} is not installed: {install} (scripts/install-host-deps.sh does)");
}

/// For tests: runs `program` with `args` and fails the test, with its stderr, unless it exits 0.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn run_for_test(program: &str, args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn root_shell_command_uses_sudo_only_for_other_logins() {
        assert_eq!(root_shell_command(true, "id -u"), "/bin/sh -c 'id -u'");
        assert_eq!(root_shell_command(false, "id -u"), "sudo -n -- /bin/sh -c 'id -u'");
    }

    #[tokio::test]
    async fn output_captures_stdout_and_stderr_tail() {
        let command = Command::new("sh").args(["-c", "echo out; echo err >&2"]);
        let output = output(command, Duration::from_secs(10)).await.unwrap();
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, "err\n");
    }

    #[tokio::test]
    async fn failure_names_the_command_status_and_stderr() {
        let command = Command::new("sh").args(["-c", "echo 'it broke' >&2; exit 3"]);
        let error = output(command, Duration::from_secs(10)).await.unwrap_err().to_string();
        assert!(error.contains("sh -c"), "{error}");
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(error.contains("it broke"), "{error}");
    }

    #[test]
    fn required_programs_are_looked_up_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let without = std::env::join_paths([dir.path()]).unwrap();
        let error = require_program_in("zstd", Some(&without)).unwrap_err();
        assert!(matches!(error, ProcessError::NotInstalled { .. }), "{error:?}");
        assert!(error.to_string().contains("package `zstd`"), "{error}");
        assert!(require_program_in("zstd", None).is_err());

        let zstd = dir.path().join("zstd");
        std::fs::write(&zstd, "#!/bin/sh\n").unwrap();
        assert!(require_program_in("zstd", Some(&without)).is_err(), "not executable");
        std::fs::set_permissions(&zstd, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        require_program_in("zstd", Some(&without)).unwrap();
        require_program_in(&zstd.to_string_lossy(), None).unwrap();
    }

    #[tokio::test]
    async fn missing_program_names_the_package() {
        let error = Command::new("/nonexistent/qemu-img").spawn().unwrap_err();
        assert!(matches!(error, ProcessError::NotInstalled { .. }));
        assert!(error.to_string().contains("qemu-utils"), "{error}");
        let error = Command::new("strata-no-such-program").spawn().unwrap_err().to_string();
        assert!(error.contains("put it on PATH"), "{error}");
    }

    #[tokio::test]
    async fn deadline_kills_the_group() {
        let started = Instant::now();
        let command = Command::new("sh").args(["-c", "sleep 30 & sleep 30"]);
        let error = output(command, Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(error, ProcessError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn stop_terminates_then_kills() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(child.is_alive());
        let stopped = child.stop(Duration::from_secs(5)).await.unwrap();
        assert!(matches!(stopped, Stopped::Terminated(_)), "{stopped:?}");
        assert!(!child.is_alive());

        let stubborn = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"])
            .stdout_piped();
        let mut child = stubborn.spawn().unwrap();
        let mut stdout = child.take_stdout().unwrap();
        let mut ready = [0u8; 6];
        stdout.read_exact(&mut ready).await.unwrap();
        let stopped = child.stop(Duration::from_millis(300)).await.unwrap();
        assert!(matches!(stopped, Stopped::Killed(_)), "{stopped:?}");
        assert!(matches!(child.stop(DEFAULT_GRACE).await.unwrap(), Stopped::AlreadyExited(_)));
    }

    #[tokio::test]
    async fn stderr_goes_to_a_file_and_a_bounded_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("child.stderr");
        let child = Command::new("sh")
            .args(["-c", "for i in $(seq 1 500); do echo line-$i >&2; done"])
            .stderr_to_file(&log)
            .stderr_tail(100)
            .spawn()
            .unwrap();
        child.wait_with_deadline(Duration::from_secs(10)).await.unwrap();
        let tail = child.stderr_tail();
        assert!(tail.ends_with("line-500\n"), "{tail}");
        assert!(tail.len() <= 100 && tail.starts_with("line-"), "{tail}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(logged.lines().count(), 500);
    }

    #[tokio::test]
    async fn drop_kills_the_group() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = Pid::from_raw(i32::try_from(child.pid()).unwrap());
        drop(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        // Gone or a zombie waiting for the reaper: either way it no longer runs.
        while nix::sys::signal::kill(pid, None).is_ok()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        {
            assert!(Instant::now() < deadline, "sleep still runs after drop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a-b_c/d.e:f,g+h@i%"), "a-b_c/d.e:f,g+h@i%");
        assert_eq!(shell_quote("hw_disk_bus=virtio"), "hw_disk_bus=virtio");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn display_quotes_what_needs_it() {
        let command = Command::new("qemu-img").args(["create", "-b", "../a b/disk.qcow2"]);
        assert_eq!(command.display(), "qemu-img create -b '../a b/disk.qcow2'");
    }
}
