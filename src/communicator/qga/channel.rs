//! The guest agent's connection and framing: one unix socket, `guest-sync-delimited` rounds
//! that find the start of a fresh reply (again after a reboot, a timeout or a garbled read),
//! and batches of requests whose replies come back in order. Knows no command's meaning; the
//! operations are in `qga.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use qapi_qga::QgaCommand;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::QgaError;
use super::wire::{self, Message, Reader};
use crate::communicator::ConnectWait;

/// How long a resync before a request may take once the agent answered before.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// The first wait for a sync reply before the request is sent again; it doubles up to
/// [`MAX_RESEND`]. Requests sent before the agent runs wait in the socket, so the agent
/// answers the latest at once when it starts, whatever the pause.
const FIRST_RESEND: Duration = Duration::from_millis(500);
const MAX_RESEND: Duration = Duration::from_secs(4);
/// The pause after the socket refused a connection (QEMU not listening yet).
const CONNECT_PAUSE: Duration = Duration::from_millis(250);

/// The connection and the reader's state. One request at a time: qemu-ga answers in order
/// and its replies carry no id.
#[derive(Default)]
pub(super) struct Channel {
    stream: Option<UnixStream>,
    reader: Reader,
    synced: bool,
}

impl Channel {
    pub(super) async fn ensure_connected(&mut self, socket: &Path) -> Result<(), QgaError> {
        if self.stream.is_none() {
            let stream = UnixStream::connect(socket).await.map_err(QgaError::Connect)?;
            self.stream = Some(stream);
            self.reader.clear();
            self.synced = false;
        }
        Ok(())
    }

    pub(super) fn drop_stream(&mut self) {
        self.stream = None;
        self.reader.clear();
        self.synced = false;
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), QgaError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(QgaError::Closed);
        };
        if let Err(error) = stream.write_all(bytes).await {
            self.drop_stream();
            return Err(QgaError::Io(error));
        }
        Ok(())
    }

    /// The next message, waiting until `until`.
    pub(super) async fn receive(
        &mut self,
        command: &str,
        until: Instant,
    ) -> Result<Message, QgaError> {
        let started = Instant::now();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(message) = self.reader.next_message() {
                return Ok(message);
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(QgaError::Closed);
            };
            let read = tokio::time::timeout_at(until.into(), stream.read(&mut chunk)).await;
            match read {
                Err(_) => {
                    self.synced = false;
                    return Err(QgaError::NoReply {
                        command: command.to_owned(),
                        within: started.elapsed(),
                    });
                }
                Ok(Ok(0)) => {
                    self.drop_stream();
                    return Err(QgaError::Closed);
                }
                Ok(Ok(n)) => self.reader.push(&chunk[..n]),
                Ok(Err(error)) => {
                    self.drop_stream();
                    return Err(QgaError::Io(error));
                }
            }
        }
    }

    /// One sync round: connect if needed, send `guest-sync-delimited` with a fresh id, and
    /// skip everything until its reply (stale replies, garbage) or `until`.
    pub(super) async fn sync_once(
        &mut self,
        socket: &Path,
        until: Instant,
    ) -> Result<(), QgaError> {
        self.ensure_connected(socket).await?;
        let id = random_u32();
        self.send(&wire::sync_request(id)).await?;
        loop {
            let message = self.receive("guest-sync-delimited", until).await?;
            if wire::is_sync_reply(&message, id) {
                self.synced = true;
                return Ok(());
            }
        }
    }

    /// Sync rounds until one is answered or `deadline` passes; `on_wait` hears about each
    /// failed round. Returns the last round's error and how many rounds there were.
    pub(super) async fn sync(
        &mut self,
        socket: &Path,
        deadline: Instant,
        on_wait: &mut (dyn FnMut(&ConnectWait) + Send),
    ) -> Result<u32, (QgaError, u32)> {
        let started = Instant::now();
        let mut resend = FIRST_RESEND;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let until = deadline.min(Instant::now() + resend);
            let error = match self.sync_once(socket, until).await {
                Ok(()) => return Ok(attempt),
                Err(error) => error,
            };
            on_wait(&ConnectWait {
                attempt,
                elapsed: started.elapsed(),
                reason: error.to_string(),
            });
            let now = Instant::now();
            if now >= deadline {
                return Err((error, attempt));
            }
            if matches!(error, QgaError::Connect(_) | QgaError::Closed | QgaError::Io(_)) {
                self.drop_stream();
                let pause = CONNECT_PAUSE.min(deadline - now);
                tokio::time::sleep(pause).await;
            }
            resend = (resend * 2).min(MAX_RESEND);
        }
    }

    /// Sends requests in one write and returns their replies in order (qemu-ga handles them
    /// one after the other, so a batch costs one round trip), resyncing first when needed.
    /// The outer error is the link's; each reply may be a refusal of its own.
    pub(super) async fn batch(
        &mut self,
        socket: &Path,
        requests: &[Request],
        within: Duration,
    ) -> Result<Vec<Result<serde_json::Value, QgaError>>, QgaError> {
        if !self.synced {
            let deadline = Instant::now() + RESYNC_TIMEOUT.min(within.max(FIRST_RESEND));
            self.sync(socket, deadline, &mut |_| {}).await.map_err(|(error, _)| error)?;
        }
        let bytes: Vec<u8> =
            requests.iter().flat_map(|request| request.bytes.iter().copied()).collect();
        // Until every reply is in, a reply may still be on its way: if this future is dropped
        // (or fails) half way, the next request must resync first.
        self.synced = false;
        self.send(&bytes).await?;
        let until = Instant::now() + within;
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            replies.push(match self.receive(request.name, until).await? {
                Message::Return(value) => Ok(value),
                Message::Error { class, desc } => {
                    Err(QgaError::Refused { command: request.name.to_owned(), class, desc })
                }
            });
        }
        self.synced = true;
        Ok(replies)
    }

    /// Sends `request`, whose success has no reply (`guest-shutdown`: the agent goes down),
    /// resyncing first when needed, then listens up to `listen` for a refusal; silence, or
    /// anything else, is success.
    pub(super) async fn send_unanswered(
        &mut self,
        socket: &Path,
        request: &Request,
        listen: Duration,
    ) -> Result<(), QgaError> {
        if !self.synced {
            let deadline = Instant::now() + RESYNC_TIMEOUT;
            self.sync(socket, deadline, &mut |_| {}).await.map_err(|(error, _)| error)?;
        }
        self.synced = false;
        self.send(&request.bytes).await?;
        let heard = self.receive(request.name, Instant::now() + listen).await;
        // Whatever comes later belongs to no request of ours.
        self.synced = false;
        match heard {
            Ok(Message::Error { class, desc }) => {
                Err(QgaError::Refused { command: request.name.to_owned(), class, desc })
            }
            _ => Ok(()),
        }
    }
}

/// One encoded request.
pub(super) struct Request {
    name: &'static str,
    bytes: Vec<u8>,
}

impl Request {
    pub(super) fn new<C: QgaCommand>(command: &C) -> Result<Request, QgaError> {
        let bytes = wire::request(C::NAME, command)
            .map_err(|source| QgaError::Encode { command: C::NAME.to_owned(), source })?;
        Ok(Request { name: C::NAME, bytes })
    }
}

/// Decodes one reply of a batch as `C`'s.
pub(super) fn decode<C: QgaCommand>(
    reply: Option<Result<serde_json::Value, QgaError>>,
) -> Result<C::Ok, QgaError> {
    let value = reply.ok_or(QgaError::Closed)??;
    serde_json::from_value(value)
        .map_err(|source| QgaError::Decode { command: C::NAME.to_owned(), source })
}

pub(super) fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // A weak id only risks taking a stale reply for ours; the time is a fine fallback.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        bytes = nanos.to_le_bytes();
    }
    // Small enough for any JSON reader's integers.
    u32::from_le_bytes(bytes) >> 1
}

pub(super) fn random_suffix() -> String {
    let mut suffix = [0u8; 6];
    if getrandom::fill(&mut suffix).is_err() {
        suffix[..4].copy_from_slice(&random_u32().to_le_bytes());
    }
    hex::encode(suffix)
}
