//! A running QEMU under supervision: started through `process`, QMP connected, the serial
//! console followed (kept in memory and emitted as `Event::Console`), powered off politely
//! then less so, and its death noticed and explained. Must not know about stages' steps.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::task::JoinHandle;

use super::QemuError;
use super::qmp::Qmp;
use super::spec::MachineSpec;
use crate::events::{Event, Events};
use crate::process::{self, ProcessError};

/// How long QEMU may take to open its QMP socket.
pub const QMP_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many console lines are kept in memory.
pub const CONSOLE_LINES: usize = 200;
/// How often the console file is polled for new bytes.
const CONSOLE_POLL: Duration = Duration::from_millis(100);
/// How long `quit` and the kill after it may take each.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// QEMU's stderr kept in memory.
const STDERR_TAIL: usize = 32 * 1024;

/// How [`Machine::power_off`] ended QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// It had exited before power-off was asked for.
    AlreadyExited(ExitStatus),
    /// The guest shut down after `system_powerdown` (ACPI), within the grace period.
    Clean(ExitStatus),
    /// The guest did not; QMP `quit` ended QEMU.
    Quit(ExitStatus),
    /// Neither worked; its process group was killed.
    Killed(ExitStatus),
}

impl PowerOff {
    #[must_use]
    pub fn status(self) -> ExitStatus {
        match self {
            PowerOff::AlreadyExited(status)
            | PowerOff::Clean(status)
            | PowerOff::Quit(status)
            | PowerOff::Killed(status) => status,
        }
    }
}

/// A started QEMU. Dropping it kills QEMU (and the console follower).
#[derive(Debug)]
pub struct Machine {
    spec: MachineSpec,
    stage: String,
    child: process::Child,
    qmp: Qmp,
    console: Arc<Mutex<Console>>,
    follower: JoinHandle<()>,
    started: Instant,
}

impl Machine {
    /// Starts QEMU for `spec`, waits for its QMP socket (at most [`QMP_READY_TIMEOUT`]),
    /// connects, and starts following the serial console. Emits `QemuStarted`.
    /// Call from async context on a runtime worker thread (see `process`'s TRAP note).
    pub async fn start(
        spec: MachineSpec,
        events: &Events,
        stage: &str,
    ) -> Result<Machine, QemuError> {
        let mut sockets = vec![spec.qmp_socket.as_path()];
        sockets.extend(spec.guest_agent_socket.as_deref());
        for socket in sockets {
            check_socket_path(socket)?;
            remove_stale(socket)?;
        }
        let console_start = std::fs::metadata(&spec.serial_log).map_or(0, |meta| meta.len());

        let argv = spec.argv();
        tracing::debug!("qemu: {} {}", spec.binary.display(), argv.join(" ".as_ref()).display());
        let mut command = process::Command::new(&spec.binary).args(argv).stderr_tail(STDERR_TAIL);
        if let Some(log) = &spec.stderr_log {
            command = command.stderr_to_file(log);
        }
        let child = command
            .spawn()
            .map_err(|source| QemuError::Spawn { stage: stage.to_owned(), source })?;
        let qmp = connect_qmp(&child, &spec.qmp_socket, stage).await?;
        events.emit(Event::QemuStarted {
            stage: stage.to_owned(),
            accel: spec.accel.name().to_owned(),
            pid: child.pid(),
        });

        let console = Arc::new(Mutex::new(Console::default()));
        let follower = tokio::spawn(follow_console(
            spec.serial_log.clone(),
            console_start,
            console.clone(),
            events.clone(),
            stage.to_owned(),
            child.died(),
        ));
        Ok(Machine {
            spec,
            stage: stage.to_owned(),
            child,
            qmp,
            console,
            follower,
            started: Instant::now(),
        })
    }

    #[must_use]
    pub fn spec(&self) -> &MachineSpec {
        &self.spec
    }

    #[must_use]
    pub fn stage(&self) -> &str {
        &self.stage
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// When QEMU was started.
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }

    #[must_use]
    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.child.is_alive()
    }

    /// QEMU's exit status, once it has exited.
    #[must_use]
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.exited()
    }

    /// Resolves when QEMU exits (`None` only if the runtime is shutting down). Independent of
    /// `self`: `select!` it beside a step to notice QEMU dying mid-step, then use
    /// [`Machine::died_error`].
    pub fn died(&self) -> impl Future<Output = Option<ExitStatus>> + Send + 'static {
        self.child.died()
    }

    /// The error that says QEMU died, with its stderr and the console's last lines.
    #[must_use]
    pub fn died_error(&self) -> QemuError {
        QemuError::Died {
            stage: self.stage.clone(),
            status: self.exited().map_or_else(|| "still running".to_owned(), |s| s.to_string()),
            stderr: self.stderr_tail(),
            console: self.console_tail(20).join("\n"),
        }
    }

    /// Waits at most `within` for QEMU to exit by itself.
    pub async fn wait_exit(&self, within: Duration) -> Result<ExitStatus, QemuError> {
        self.child.wait_with_deadline(within).await.map_err(|error| match error {
            ProcessError::Timeout { .. } => {
                QemuError::StillRunning { stage: self.stage.clone(), within }
            }
            source => QemuError::Stop { stage: self.stage.clone(), source },
        })
    }

    /// `system_powerdown`, up to `grace` for the guest to power off, then `quit`, then kill.
    pub async fn power_off(&self, grace: Duration) -> Result<PowerOff, QemuError> {
        if let Some(status) = self.exited() {
            return Ok(PowerOff::AlreadyExited(status));
        }
        let _ = self.qmp.execute_within("system_powerdown", None, QUIT_TIMEOUT).await;
        if let Ok(status) = self.child.wait_with_deadline(grace).await {
            return Ok(PowerOff::Clean(status));
        }
        let _ = self.qmp.execute_within("quit", None, QUIT_TIMEOUT).await;
        if let Ok(status) = self.child.wait_with_deadline(QUIT_TIMEOUT).await {
            return Ok(PowerOff::Quit(status));
        }
        self.kill().await.map(PowerOff::Killed)
    }

    /// Kills QEMU's process group at once and waits for it to exit.
    pub async fn kill(&self) -> Result<ExitStatus, QemuError> {
        self.child
            .kill()
            .await
            .map_err(|source| QemuError::Stop { stage: self.stage.clone(), source })
    }

    /// The last part of QEMU's stderr.
    #[must_use]
    pub fn stderr_tail(&self) -> String {
        self.child.stderr_tail()
    }

    /// The last `n` console lines (an unfinished last line, like a login prompt, included).
    #[must_use]
    pub fn console_tail(&self, n: usize) -> Vec<String> {
        self.console.lock().map(|console| console.tail(n)).unwrap_or_default()
    }

    #[must_use]
    pub fn last_console_line(&self) -> Option<String> {
        self.console_tail(1).pop()
    }

    /// How many bytes the guest wrote on its console since this QEMU started.
    #[must_use]
    pub fn console_bytes(&self) -> u64 {
        self.console.lock().map_or(0, |console| console.bytes)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

fn check_socket_path(path: &Path) -> Result<(), QemuError> {
    let len = path.as_os_str().len();
    if len > super::MAX_SOCKET_PATH {
        return Err(QemuError::SocketPathTooLong { path: path.to_owned(), len });
    }
    Ok(())
}

fn remove_stale(path: &Path) -> Result<(), QemuError> {
    match std::fs::remove_file(path) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(QemuError::Prepare { path: path.to_owned(), source })
        }
        _ => Ok(()),
    }
}

/// Polls for the QMP socket until QEMU listens, QEMU exits, or the deadline passes.
async fn connect_qmp(child: &process::Child, socket: &Path, stage: &str) -> Result<Qmp, QemuError> {
    let deadline = tokio::time::Instant::now() + QMP_READY_TIMEOUT;
    let mut died = Box::pin(child.died());
    loop {
        if let Some(status) = child.exited() {
            return Err(QemuError::ExitedAtStart {
                stage: stage.to_owned(),
                status,
                stderr: child.stderr_tail(),
            });
        }
        if socket.exists() {
            match Qmp::connect(socket, QMP_READY_TIMEOUT).await {
                Ok(qmp) => return Ok(qmp),
                Err(QemuError::QmpConnect { .. }) => {}
                Err(error) => {
                    if child.wait_with_deadline(Duration::from_millis(500)).await.is_ok() {
                        continue; // it exited: report that, with its stderr
                    }
                    return Err(error);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(QemuError::QmpNotReady {
                stage: stage.to_owned(),
                socket: socket.to_owned(),
                within: QMP_READY_TIMEOUT,
                stderr: child.stderr_tail(),
            });
        }
        tokio::select! {
            _ = &mut died => {}
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// The console's last lines.
#[derive(Debug, Default)]
struct Console {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    bytes: u64,
}

impl Console {
    /// Takes new bytes; returns the lines they completed.
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.bytes += chunk.len() as u64;
        let mut done = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                let line = clean_line(&self.partial);
                self.partial.clear();
                if self.lines.len() == CONSOLE_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(line.clone());
                done.push(line);
            } else if self.partial.len() < 64 * 1024 {
                self.partial.push(byte);
            }
        }
        done
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let partial = clean_line(&self.partial);
        let extra = usize::from(!partial.trim().is_empty());
        let complete = n.saturating_sub(extra).min(self.lines.len());
        let mut tail: Vec<String> =
            self.lines.iter().skip(self.lines.len() - complete).cloned().collect();
        if extra == 1 && n > 0 {
            tail.push(partial);
        }
        tail
    }
}

/// A console line as a terminal would show it (see [`crate::events::printable`]).
fn clean_line(bytes: &[u8]) -> String {
    crate::events::printable(&String::from_utf8_lossy(bytes)).trim_end().to_owned()
}

/// Follows the console file from `offset`, until QEMU dies (then reads what is left).
async fn follow_console(
    path: PathBuf,
    mut offset: u64,
    console: Arc<Mutex<Console>>,
    events: Events,
    stage: String,
    died: impl Future<Output = Option<ExitStatus>>,
) {
    let mut died = std::pin::pin!(died);
    let mut file: Option<tokio::fs::File> = None;
    let mut ticker = tokio::time::interval(CONSOLE_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buffer = vec![0u8; 16 * 1024];
    let mut last_round = false;
    loop {
        tokio::select! {
            _ = &mut died, if !last_round => last_round = true,
            _ = ticker.tick() => {}
        }
        if file.is_none()
            && let Ok(mut opened) = tokio::fs::File::open(&path).await
            && opened.seek(SeekFrom::Start(offset)).await.is_ok()
        {
            file = Some(opened);
        }
        if let Some(opened) = file.as_mut() {
            // A file shorter than what was read was truncated: start again from its top.
            if let Ok(meta) = opened.metadata().await
                && meta.len() < offset
                && opened.seek(SeekFrom::Start(0)).await.is_ok()
            {
                offset = 0;
            }
            while let Ok(read) = opened.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                offset += read as u64;
                let lines = console.lock().map(|mut console| console.push(&buffer[..read]));
                for line in lines.unwrap_or_default() {
                    events.emit(Event::Console { stage: stage.clone(), line });
                }
            }
        }
        if last_round {
            break;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_cleaned_and_bounded() {
        let mut console = Console::default();
        let done = console.push(b"[  \x1b[0;32mOK  \x1b[0m] Started ssh.\r\nsecond");
        assert_eq!(done, ["[  OK  ] Started ssh."]);
        assert_eq!(console.tail(5), ["[  OK  ] Started ssh.", "second"]);
        assert_eq!(console.tail(1), ["second"]);
        console.push(b" half\ndebian login: ");
        assert_eq!(console.tail(2), ["second half", "debian login:"]);
        for i in 0..500 {
            console.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(console.tail(1000).len(), CONSOLE_LINES);
        assert_eq!(console.tail(1), ["line 499"]);
        assert_eq!(console.tail(0), Vec::<String>::new());
    }

    #[test]
    fn long_socket_paths_are_refused() {
        let long = PathBuf::from(format!("/{}/qmp.sock", "x".repeat(120)));
        let error = check_socket_path(&long).unwrap_err().to_string();
        assert!(error.contains("--store"), "{error}");
        check_socket_path(Path::new("/tmp/qmp.sock")).unwrap();
    }
}
