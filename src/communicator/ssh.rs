//! The SSH communicator (russh): connects with a pinned host key, retrying while the guest
//! boots; runs commands with streamed output and a timeout enforced in the guest; uploads
//! with tar over an exec channel; reboots and reconnects. Must not start or stop QEMU.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh::keys::PrivateKeyWithHashAlg;
use russh::keys::ssh_key::{Algorithm, PublicKey};
use russh::{ChannelMsg, Disconnect, Sig, client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::keys::{ClientKey, fingerprint};
use super::lines::Lines;
use super::tar;
use super::{Communicator, CommunicatorError, ConnectWait, ExecSpec, ExitInfo, shell};
use crate::events::Stream;

/// The first pause between connection attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause between attempts: strata notices a ready guest at most this late.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a TCP connect may take (QEMU's forwarder answers at once).
const TCP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for the server's banner. QEMU's user networking accepts a forwarded
/// connection before the guest does, so a guest that is not up yet shows as silence.
const BANNER_TIMEOUT: Duration = Duration::from_secs(4);
/// Key exchange and authentication, once the banner came.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and as whom to log in, and the host key to expect there.
#[derive(Clone)]
pub struct SshTarget {
    pub addr: SocketAddr,
    pub user: String,
    pub client_key: ClientKey,
    /// The guest's host key: any other is refused at once.
    pub host_key: PublicKey,
}

impl fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTarget")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("client_key", &self.client_key)
            .field("host_key", &fingerprint(&self.host_key))
            .finish()
    }
}

/// Why one connection attempt failed; the last one is the source of a connect timeout.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("could not connect")]
    Connect(#[source] std::io::Error),
    #[error("the TCP connection was not accepted in time")]
    ConnectTimeout,
    #[error("no SSH banner came in time (the guest's sshd is not up yet)")]
    NoBanner,
    #[error("the connection was closed before the SSH banner (the guest's sshd is not up yet)")]
    ClosedEarly,
    #[error("the SSH handshake failed")]
    Handshake(#[source] russh::Error),
    #[error("the SSH handshake did not finish in time")]
    HandshakeTimeout,
    #[error(
        "the guest refused the key for user `{user}` (cloud-init may not have created the user yet, or the seed's user differs)"
    )]
    AuthRejected { user: String },
}

impl AttemptError {
    /// An attempt that says why logging in fails, rather than only that time ran out: worth
    /// reporting even when a later attempt was cut short by the deadline.
    fn is_telling(&self) -> bool {
        matches!(self, AttemptError::AuthRejected { .. } | AttemptError::Handshake(_))
    }

    fn refused(&self) -> bool {
        matches!(self, AttemptError::ClosedEarly)
            || matches!(self, AttemptError::Connect(error) if error.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// A logged-in SSH session to one guest.
pub struct SshCommunicator {
    target: SshTarget,
    handle: client::Handle<PinnedHostKey>,
}

impl fmt::Debug for SshCommunicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshCommunicator").field("target", &self.target).finish_non_exhaustive()
    }
}

impl SshCommunicator {
    /// Connects and logs in, retrying refused, reset and silent connections (backoff from
    /// 250 ms to 1 s) until `deadline`; `on_wait` hears about each failed attempt. A host key
    /// other than `target.host_key` fails at once with [`CommunicatorError::HostKeyMismatch`].
    pub async fn connect(
        target: SshTarget,
        deadline: Instant,
        on_wait: &mut (dyn FnMut(&ConnectWait) + Send),
    ) -> Result<SshCommunicator, CommunicatorError> {
        let started = Instant::now();
        let config = Arc::new(client_config());
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        let mut telling: Option<AttemptError> = None;
        loop {
            attempt = attempt.saturating_add(1);
            let error = match try_connect(&target, &config, deadline).await {
                Ok(handle) => return Ok(SshCommunicator { target, handle }),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry(error)) => error,
            };
            on_wait(&ConnectWait {
                attempt,
                elapsed: started.elapsed(),
                reason: error.to_string(),
            });
            // Refused means nothing listens yet: poll briskly. Other failures cost time
            // themselves, so back off.
            let pause = if error.refused() { backoff } else { FIRST_BACKOFF };
            let now = Instant::now();
            if now + pause >= deadline {
                // A last attempt cut short by the deadline says less than a refused key before it.
                let last = match telling {
                    Some(earlier) if !error.is_telling() => earlier,
                    _ => error,
                };
                return Err(CommunicatorError::ConnectTimeout {
                    addr: target.addr,
                    user: target.user.clone(),
                    waited: started.elapsed(),
                    attempts: attempt,
                    last: Box::new(last),
                });
            }
            if error.is_telling() {
                telling = Some(error);
            }
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    #[must_use]
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// [`start_command`] on this connection, its failure as a session error; `exec` names
    /// the command in it.
    pub(super) async fn start(
        &self,
        command: String,
        close_stdin: bool,
        exec: &str,
    ) -> Result<russh::Channel<client::Msg>, CommunicatorError> {
        start_command(&self.handle, command, close_stdin)
            .await
            .map_err(|(step, error)| self.session_error(&step.action(exec), error))
    }

    pub(super) fn describe_target(&self) -> String {
        format!("{}@{}", self.target.user, self.target.addr)
    }

    fn login_is_root(&self) -> bool {
        self.target.user == "root"
    }

    fn session_error(&self, action: &str, source: russh::Error) -> CommunicatorError {
        CommunicatorError::Session {
            addr: self.target.addr,
            user: self.target.user.clone(),
            action: action.to_owned(),
            source: Box::new(source),
        }
    }
}

/// Which step of starting a command over SSH failed (see [`start_command`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStep {
    OpenChannel,
    Exec,
    CloseStdin,
}

/// How a command is started over an SSH connection, the one place for it: a session channel
/// opened on `handle`, `command` executed on it and, unless it reads its stdin, that closed
/// (`close_stdin`). `Err` says which step failed; each caller words it in its own error.
pub async fn start_command<H: client::Handler>(
    handle: &client::Handle<H>,
    command: String,
    close_stdin: bool,
) -> Result<russh::Channel<client::Msg>, (StartStep, russh::Error)> {
    let channel =
        handle.channel_open_session().await.map_err(|error| (StartStep::OpenChannel, error))?;
    channel.exec(true, command).await.map_err(|error| (StartStep::Exec, error))?;
    if close_stdin {
        channel.eof().await.map_err(|error| (StartStep::CloseStdin, error))?;
    }
    Ok(channel)
}

impl StartStep {
    /// The step in words, for errors; `exec` names the command being started.
    #[must_use]
    pub fn action(self, exec: &str) -> String {
        match self {
            StartStep::OpenChannel => "open a channel".to_owned(),
            StartStep::Exec => exec.to_owned(),
            StartStep::CloseStdin => "close stdin".to_owned(),
        }
    }
}

/// How much of a tar stream one SSH data message carries.
const CHUNK: usize = 256 * 1024;

impl Communicator for SshCommunicator {
    fn describe(&self) -> String {
        format!("{}@{}", self.target.user, self.target.addr)
    }

    async fn run(
        &self,
        spec: ExecSpec<'_>,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExitInfo, CommunicatorError> {
        let line = shell::command_line(&spec, self.login_is_root())?;
        let started = Instant::now();
        // The command gets no input.
        let mut channel = self.start(line, true, &format!("start `{}`", spec.command)).await?;
        let limit = spec.host_wait();
        let timed_out = || CommunicatorError::Timeout {
            guest: self.describe(),
            command: spec.command.to_owned(),
            timeout: spec.timeout,
        };
        let Ok((code, signal)) =
            tokio::time::timeout(limit, collect(&mut channel, on_output)).await
        else {
            // `timeout` in the guest (if any) should have ended it; give up on the channel.
            let _ = channel.close().await;
            return Err(timed_out());
        };
        let duration = started.elapsed();
        let Some(code) = code else {
            return Err(self.session_error(
                &format!("get the exit status of `{}`", spec.command),
                russh::Error::Disconnect,
            ));
        };
        // 124: timeout(1) sent TERM; 137: it had to send KILL too.
        if matches!(code, 124 | 137) && duration >= spec.timeout {
            return Err(timed_out());
        }
        Ok(ExitInfo { code, signal, duration })
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
        let before = self.boot_id().await?;
        let env = BTreeMap::new();
        let spec = ExecSpec {
            command: "systemctl --no-block reboot || reboot",
            env: &env,
            timeout: Duration::from_secs(30),
            as_root: true,
            guest_timeout: false,
        };
        // The connection may drop before the command reports back: that is the point.
        let _ = self.run(spec, &mut |_, _| {}).await;
        loop {
            let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
            let fresh = SshCommunicator::connect(self.target.clone(), deadline, on_wait).await?;
            self.handle = fresh.handle;
            // A connection that slipped in before sshd stopped still sees the old boot.
            match self.boot_id().await {
                Ok(id) if id != before => return Ok(()),
                Ok(_) | Err(_) if Instant::now() + FIRST_BACKOFF < deadline => {
                    tokio::time::sleep(FIRST_BACKOFF).await;
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

    async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

/// Reads a channel until it closes, calling `on_output` once per line.
/// Returns the exit status (128 + signal when killed) and the signal's name.
async fn collect(
    channel: &mut russh::Channel<client::Msg>,
    on_output: &mut (dyn FnMut(Stream, &str) + Send),
) -> (Option<i32>, Option<String>) {
    let mut stdout = Lines::default();
    let mut stderr = Lines::default();
    let mut code = None;
    let mut signal = None;
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => stdout.push(&data, Stream::Stdout, on_output),
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                stderr.push(&data, Stream::Stderr, on_output);
            }
            ChannelMsg::ExitStatus { exit_status } => {
                code = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                let (name, number) = signal_info(&signal_name);
                code = code.or(Some(128 + number));
                signal = Some(name);
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    stdout.finish(Stream::Stdout, on_output);
    stderr.finish(Stream::Stderr, on_output);
    (code, signal)
}

fn signal_info(signal: &Sig) -> (String, i32) {
    let number = match signal {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(_) => 0,
    };
    let name = match signal {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    };
    (name, number)
}

fn client_config() -> client::Config {
    let mut config = client::Config::default();
    // We pin an ed25519 host key, so ask for that algorithm only: a guest that also has other
    // host keys must present the one we know.
    config.preferred.key = std::borrow::Cow::Owned(vec![Algorithm::Ed25519]);
    config
}

enum Failure {
    Retry(AttemptError),
    Fatal(CommunicatorError),
}

/// The handler's error: russh's own, or the host key mismatch that must not be retried.
#[derive(Debug)]
enum HandlerError {
    Ssh(russh::Error),
    Mismatch { got: String },
}

impl From<russh::Error> for HandlerError {
    fn from(error: russh::Error) -> Self {
        HandlerError::Ssh(error)
    }
}

struct PinnedHostKey {
    expected: PublicKey,
}

impl client::Handler for PinnedHostKey {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }
                if key.key_data() == self.expected.key_data() =>
            {
                Ok(true)
            }
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                Err(HandlerError::Mismatch { got: fingerprint(key) })
            }
            russh::keys::PublicKeyOrCertificate::Certificate(certificate) => {
                Err(HandlerError::Mismatch {
                    got: format!(
                        "a certificate for {}",
                        fingerprint(&PublicKey::from(certificate.public_key().clone()))
                    ),
                })
            }
        }
    }
}

async fn try_connect(
    target: &SshTarget,
    config: &Arc<client::Config>,
    deadline: Instant,
) -> Result<client::Handle<PinnedHostKey>, Failure> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let retry = |error| Err(Failure::Retry(error));
    let stream = match tokio::time::timeout(
        TCP_TIMEOUT.min(left()),
        TcpStream::connect(target.addr),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return retry(AttemptError::Connect(error)),
        Err(_) => return retry(AttemptError::ConnectTimeout),
    };
    // Without this every small request waits on Nagle and delayed ACKs.
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 4];
    match tokio::time::timeout(BANNER_TIMEOUT.min(left()), stream.peek(&mut first)).await {
        Ok(Ok(0)) => return retry(AttemptError::ClosedEarly),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return retry(AttemptError::Connect(error)),
        Err(_) => return retry(AttemptError::NoBanner),
    }
    let handler = PinnedHostKey { expected: target.host_key.clone() };
    let handshake = async {
        let mut handle = client::connect_stream(Arc::clone(config), stream, handler).await?;
        let key = PrivateKeyWithHashAlg::new(target.client_key.private(), None);
        let auth = handle.authenticate_publickey(target.user.clone(), key).await?;
        Ok::<_, HandlerError>((handle, auth.success()))
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT.min(left()), handshake).await {
        Ok(Ok((handle, true))) => Ok(handle),
        Ok(Ok((_, false))) => retry(AttemptError::AuthRejected { user: target.user.clone() }),
        Ok(Err(HandlerError::Mismatch { got })) => {
            Err(Failure::Fatal(CommunicatorError::HostKeyMismatch {
                addr: target.addr,
                expected: fingerprint(&target.host_key),
                got,
            }))
        }
        Ok(Err(HandlerError::Ssh(error))) => retry(AttemptError::Handshake(error)),
        Err(_) => retry(AttemptError::HandshakeTimeout),
    }
}

impl tar::Untar for SshCommunicator {
    fn chunk(&self) -> usize {
        CHUNK
    }

    /// Sends the tar stream from `chunks` to `tar -x` in `dir` as root; `local` and `remote`
    /// name the upload in errors.
    async fn extract(
        &self,
        dir: &str,
        chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        local: &str,
        remote: &str,
    ) -> Result<(), CommunicatorError> {
        let quoted = crate::process::shell_quote(dir);
        let script =
            format!("mkdir -p -- {quoted} && exec tar -x --no-same-owner -f - -C {quoted}");
        let command = crate::process::root_shell_command(self.login_is_root(), &script);
        let mut channel = self.start(command, false, "start tar").await?;
        let mut writer = channel.make_writer();
        let send = async move {
            let mut chunks = chunks;
            while let Some(chunk) = chunks.recv().await {
                let chunk = chunk?;
                writer.write_all(&chunk).await?;
            }
            writer.shutdown().await
        };
        let mut stderr = String::new();
        let mut on_output = |stream: Stream, line: &str| {
            if stream == Stream::Stderr {
                stderr.push_str(line);
                stderr.push('\n');
            }
        };
        // Send and read together; when tar ends early, what is left unsent does not matter.
        let (sent, code) = {
            let received = collect(&mut channel, &mut on_output);
            tokio::pin!(send, received);
            let mut sent = None;
            let (code, _) = loop {
                tokio::select! {
                    result = &mut send, if sent.is_none() => sent = Some(result),
                    outcome = &mut received => break outcome,
                }
            };
            (sent, code)
        };
        let code = code.unwrap_or(-1);
        let sent = sent.unwrap_or_else(|| {
            Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "tar ended before the upload"))
        });
        if let Err(error) = sent {
            // A local read error is ours; a write error means tar ended early, and its
            // stderr says why.
            if code == 0 || stderr.is_empty() {
                return Err(CommunicatorError::ReadLocal { path: local.into(), source: error });
            }
        }
        if code != 0 {
            return Err(CommunicatorError::Upload {
                guest: self.describe(),
                local: local.to_owned(),
                remote: remote.to_owned(),
                code,
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
    fn lines_split_across_chunks_and_keep_streams_apart() {
        let mut seen = Vec::new();
        let mut on_output = |stream: Stream, line: &str| seen.push((stream, line.to_owned()));
        let mut lines = Lines::default();
        lines.push(b"one\r\ntw", Stream::Stdout, &mut on_output);
        lines.push(b"o\n\nthr", Stream::Stdout, &mut on_output);
        lines.push(b"\xffee", Stream::Stdout, &mut on_output);
        lines.finish(Stream::Stdout, &mut on_output);
        let texts: Vec<&str> = seen.iter().map(|(_, line)| line.as_str()).collect();
        assert_eq!(texts, ["one", "two", "", "thr\u{fffd}ee"]);
    }

    #[test]
    fn remote_paths_split_into_folder_and_name() {
        let local = Path::new("/src/app.conf");
        assert_eq!(tar::split_remote("/etc/app/", local), ("/etc/app/".into(), "app.conf".into()));
        assert_eq!(
            tar::split_remote("/etc/app/x.conf", local),
            ("/etc/app".into(), "x.conf".into())
        );
        assert_eq!(tar::split_remote("/x.conf", local), ("/".into(), "x.conf".into()));
        assert_eq!(tar::split_remote("x.conf", local), (".".into(), "x.conf".into()));
    }
}
