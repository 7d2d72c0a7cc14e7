//! A QMP client over QEMU's unix socket, with its own tolerant line reader: every line is a
//! `serde_json::Value`; replies are matched to commands by id; events it does not know (newer
//! QEMUs add some) and lines it cannot parse are ignored, never fatal. qapi-qmp provides
//! command and reply types only. Must not know what the machine is for.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use super::QemuError;

/// How long a command may take unless told otherwise.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How many known events are remembered for [`Qmp::recent_events`].
const RECENT_EVENTS: usize = 64;

/// The events kept and broadcast; the rest are ignored.
pub const KNOWN_EVENTS: &[&str] = &[
    "SHUTDOWN",
    "POWERDOWN",
    "STOP",
    "RESUME",
    "RESET",
    "GUEST_PANICKED",
    "BLOCK_JOB_COMPLETED",
    "BLOCK_JOB_CANCELLED",
    "BLOCK_JOB_ERROR",
    "BLOCK_JOB_READY",
    "BLOCK_JOB_PENDING",
    "BLOCK_IO_ERROR",
];

/// An event QEMU sent.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
    /// Seconds since the epoch, as QEMU stamped it.
    pub timestamp: Option<f64>,
}

/// What QMP told us about the machine's state so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notices {
    /// The SHUTDOWN event's data (`guest`, `reason`), once one came.
    pub shutdown: Option<Value>,
    /// A STOP came and no RESUME since.
    pub stopped: bool,
    pub guest_panicked: bool,
    pub resets: u32,
}

/// A QMP run state that means the guest will not get anywhere by itself.
#[must_use]
pub fn is_broken(state: qapi_qmp::RunState) -> bool {
    matches!(state, qapi_qmp::RunState::internal_error | qapi_qmp::RunState::guest_panicked)
}

type Reply = Result<Value, (String, String)>;

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    closed: AtomicBool,
    notices: Mutex<Notices>,
    recent: Mutex<VecDeque<QmpEvent>>,
}

/// A connected QMP session (capabilities negotiated).
#[derive(Debug)]
pub struct Qmp {
    socket: PathBuf,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
    events: broadcast::Sender<QmpEvent>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
    greeting: Value,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities, all within `within`.
    pub async fn connect(socket: &Path, within: Duration) -> Result<Qmp, QemuError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| QemuError::QmpConnect { socket: socket.to_owned(), source })?;
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);
        let greeting = tokio::time::timeout(within, read_greeting(&mut read, socket))
            .await
            .map_err(|_| QemuError::QmpProtocol {
                socket: socket.to_owned(),
                detail: "no greeting".to_owned(),
            })??;

        let shared = Arc::new(Shared::default());
        let (events, _) = broadcast::channel(256);
        let reader = tokio::spawn(read_loop(read, shared.clone(), events.clone()));
        let qmp = Qmp {
            socket: socket.to_owned(),
            writer: tokio::sync::Mutex::new(write),
            shared,
            events,
            next_id: AtomicU64::new(1),
            reader,
            greeting,
        };
        qmp.execute_within("qmp_capabilities", None, within).await?;
        Ok(qmp)
    }

    /// The greeting's `QMP` object (version, capabilities).
    #[must_use]
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the connection is closed (QEMU exited or closed it).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Runs a command, waiting at most [`DEFAULT_COMMAND_TIMEOUT`] for its reply.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QemuError> {
        self.execute_within(command, arguments, DEFAULT_COMMAND_TIMEOUT).await
    }

    /// Runs a command, waiting at most `within` for its reply.
    pub async fn execute_within(
        &self,
        command: &str,
        arguments: Option<Value>,
        within: Duration,
    ) -> Result<Value, QemuError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&message)
            .map_err(|source| QemuError::QmpJson { command: command.to_owned(), source })?;
        line.push(b'\n');

        let (sender, receiver) = oneshot::channel();
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.insert(id, sender);
        }
        if self.is_closed() {
            self.forget(id);
            return Err(QemuError::QmpClosed { socket: self.socket.clone() });
        }
        let written = {
            let mut writer = self.writer.lock().await;
            match writer.write_all(&line).await {
                Ok(()) => writer.flush().await,
                Err(error) => Err(error),
            }
        };
        if let Err(source) = written {
            self.forget(id);
            return Err(match source.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    QemuError::QmpClosed { socket: self.socket.clone() }
                }
                _ => QemuError::QmpIo { socket: self.socket.clone(), source },
            });
        }
        match tokio::time::timeout(within, receiver).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err((class, desc)))) => {
                Err(QemuError::QmpCommand { command: command.to_owned(), class, desc })
            }
            Ok(Err(_)) => Err(QemuError::QmpClosed { socket: self.socket.clone() }),
            Err(_) => {
                self.forget(id);
                Err(QemuError::QmpTimeout { command: command.to_owned(), within })
            }
        }
    }

    /// Runs a typed qapi-qmp command (e.g. `qapi_qmp::query_status {}`), decoding its reply.
    pub async fn run<C: qapi_qmp::QmpCommand>(&self, command: &C) -> Result<C::Ok, QemuError> {
        let json_error = |source| QemuError::QmpJson { command: C::NAME.to_owned(), source };
        let arguments = serde_json::to_value(command).map_err(json_error)?;
        let arguments = match &arguments {
            Value::Object(fields) if fields.is_empty() => None,
            Value::Null => None,
            _ => Some(arguments),
        };
        let reply = self.execute(C::NAME, arguments).await?;
        decode(reply).map_err(json_error)
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<qapi_qmp::StatusInfo, QemuError> {
        self.run(&qapi_qmp::query_status {}).await
    }

    /// Events from now on (known ones only). Subscribe before the command that causes them.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// The last known events received, oldest first.
    #[must_use]
    pub fn recent_events(&self) -> Vec<QmpEvent> {
        self.shared.recent.lock().map(|recent| recent.iter().cloned().collect()).unwrap_or_default()
    }

    /// What the events said so far: SHUTDOWN, STOP/RESUME, GUEST_PANICKED, RESET.
    #[must_use]
    pub fn notices(&self) -> Notices {
        self.shared.notices.lock().map(|notices| notices.clone()).unwrap_or_default()
    }

    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.remove(&id);
        }
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(value)
}

async fn read_greeting(
    read: &mut BufReader<OwnedReadHalf>,
    socket: &Path,
) -> Result<Value, QemuError> {
    let protocol = |detail: String| QemuError::QmpProtocol { socket: socket.to_owned(), detail };
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = read
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| QemuError::QmpIo { socket: socket.to_owned(), source })?;
        if read == 0 {
            return Err(QemuError::QmpClosed { socket: socket.to_owned() });
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(mut value) if value.get("QMP").is_some() => return Ok(value["QMP"].take()),
            Ok(_) => {}
            Err(_) if line.trim_ascii().is_empty() => {}
            Err(_) => {
                return Err(protocol(format!(
                    "the first line was {:?}",
                    String::from_utf8_lossy(&line).trim_end()
                )));
            }
        }
    }
}

async fn read_loop(
    mut read: BufReader<OwnedReadHalf>,
    shared: Arc<Shared>,
    events: broadcast::Sender<QmpEvent>,
) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => handle_line(&line, &shared, &events),
        }
    }
    shared.closed.store(true, Ordering::SeqCst);
    if let Ok(mut pending) = shared.pending.lock() {
        pending.clear();
    }
}

/// One line from QEMU: a reply, an event, or something to ignore.
fn handle_line(line: &[u8], shared: &Shared, events: &broadcast::Sender<QmpEvent>) {
    let Ok(mut value) = serde_json::from_slice::<Value>(line) else {
        tracing::debug!(
            "ignoring a QMP line that is not JSON: {:?}",
            String::from_utf8_lossy(line)
        );
        return;
    };
    if let Some(name) = value.get("event").and_then(Value::as_str) {
        if !KNOWN_EVENTS.contains(&name) {
            tracing::debug!("ignoring QMP event {name}");
            return;
        }
        let timestamp = value.get("timestamp").and_then(|stamp| {
            let seconds = stamp.get("seconds")?.as_f64()?;
            let micro = stamp.get("microseconds").and_then(Value::as_f64).unwrap_or(0.0);
            Some(seconds + micro / 1e6)
        });
        let event = QmpEvent { name: name.to_owned(), data: value["data"].take(), timestamp };
        if let Ok(mut notices) = shared.notices.lock() {
            match event.name.as_str() {
                "SHUTDOWN" => notices.shutdown = Some(event.data.clone()),
                "STOP" => notices.stopped = true,
                "RESUME" => notices.stopped = false,
                "GUEST_PANICKED" => notices.guest_panicked = true,
                "RESET" => notices.resets += 1,
                _ => {}
            }
        }
        if let Ok(mut recent) = shared.recent.lock() {
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = events.send(event);
        return;
    }
    let Some(id) = value.get("id").and_then(Value::as_u64) else {
        tracing::debug!("ignoring a QMP message without id: {value}");
        return;
    };
    let reply = if let Some(error) = value.get("error") {
        let text = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        Err((text("class"), text("desc")))
    } else if let Some(result) = value.get_mut("return") {
        Ok(result.take())
    } else {
        return;
    };
    let sender = shared.pending.lock().ok().and_then(|mut pending| pending.remove(&id));
    if let Some(sender) = sender {
        let _ = sender.send(reply);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reader_ignores_what_it_does_not_know() {
        let shared = Shared::default();
        let (events, mut receiver) = broadcast::channel(16);
        let (sender, reply) = oneshot::channel();
        shared.pending.lock().unwrap().insert(7, sender);
        let (error_sender, error_reply) = oneshot::channel();
        shared.pending.lock().unwrap().insert(8, error_sender);

        for line in [
            &b"not json at all\n"[..],
            br#"{"event": "SOMETHING_FROM_QEMU_12", "data": {"x": 1}, "timestamp": {"seconds": 1, "microseconds": 2}}"#,
            br#"{"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 500000}}"#,
            br#"{"return": {}, "id": 99}"#,
            br#"{"unexpected": true}"#,
            br#"{"return": {"running": false, "status": "paused"}, "id": 7}"#,
            br#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": 8}"#,
            br#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
        ] {
            handle_line(line, &shared, &events);
        }

        assert_eq!(reply.await.unwrap().unwrap()["status"], "paused");
        let (class, desc) = error_reply.await.unwrap().unwrap_err();
        assert_eq!(class, "CommandNotFound");
        assert!(desc.contains("nope"));
        let stop = receiver.recv().await.unwrap();
        assert_eq!(stop.name, "STOP");
        assert_eq!(stop.timestamp, Some(1_700_000_000.5));
        assert_eq!(receiver.recv().await.unwrap().name, "SHUTDOWN");
        assert!(receiver.try_recv().is_err());
        let notices = shared.notices.lock().unwrap().clone();
        assert!(notices.stopped);
        assert_eq!(notices.shutdown.unwrap()["reason"], "guest-shutdown");
        assert_eq!(shared.recent.lock().unwrap().len(), 2);
    }

    #[test]
    fn broken_states() {
        assert!(is_broken(qapi_qmp::RunState::internal_error));
        assert!(is_broken(qapi_qmp::RunState::guest_panicked));
        assert!(!is_broken(qapi_qmp::RunState::running));
        assert!(!is_broken(qapi_qmp::RunState::paused));
    }
}
