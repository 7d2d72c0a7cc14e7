//! A command that holds the guest in some state until strata lets go: it prints a marker line
//! when it holds, and goes on when strata writes a line to its stdin, to its next marker or its
//! end (its stdin's end lets it go too, so the guest never stays held when strata goes away).
//! Used to keep filesystems frozen while QEMU takes a live snapshot, and to keep the seal
//! command standing by between stages.

use std::time::Duration;

use russh::{ChannelMsg, client};

use super::{CommunicatorError, ExecSpec, SshCommunicator, shell};

/// A command left running in the guest, waiting on its stdin until strata lets it go on (the
/// freeze that holds a guest's filesystems while a layer is cut is one). Dropping it closes the
/// channel, which lets the guest go too.
pub struct Held {
    channel: russh::Channel<client::Msg>,
    guest: String,
    command: String,
    /// What the command wrote to stdout before it held, marker excluded.
    said: String,
}

/// A held command that ended before it held.
#[derive(Debug)]
pub struct NotHeld {
    /// Its exit status; `None` when the channel closed without one.
    pub code: Option<u32>,
    pub stdout: String,
    pub stderr: String,
    pub error: CommunicatorError,
}

impl NotHeld {
    /// Failed with nothing heard from the command.
    fn silent(error: CommunicatorError) -> Box<NotHeld> {
        Box::new(NotHeld { code: None, stdout: String::new(), stderr: String::new(), error })
    }
}

impl SshCommunicator {
    /// Starts `spec` and waits up to `within` for a stdout line equal to `marker`. `what` names
    /// the command in errors (its script may be long).
    pub async fn hold(
        &self,
        spec: ExecSpec<'_>,
        what: &str,
        marker: &str,
        within: Duration,
    ) -> Result<Held, Box<NotHeld>> {
        let line =
            shell::command_line(&spec, self.target().user == "root").map_err(NotHeld::silent)?;
        let channel =
            self.start(line, false, "start a held command").await.map_err(NotHeld::silent)?;
        let held = Held {
            channel,
            guest: self.describe_target(),
            command: what.to_owned(),
            said: String::new(),
        };
        held.wait_for(marker, within).await
    }
}

impl Held {
    /// Lets the command go on to its next held state: writes a line to its stdin, then waits up
    /// to `within` for a stdout line equal to `marker`, as [`SshCommunicator::hold`] does.
    pub async fn proceed(self, marker: &str, within: Duration) -> Result<Held, Box<NotHeld>> {
        self.proceed_with("go", marker, within).await
    }

    /// [`Held::proceed`], with `line` (one line, no newline) as what the command reads.
    pub async fn proceed_with(
        self,
        line: &str,
        marker: &str,
        within: Duration,
    ) -> Result<Held, Box<NotHeld>> {
        let line = format!("{}\n", line.trim_end_matches('\n'));
        if self.channel.data(line.as_bytes()).await.is_err() {
            return Err(NotHeld::silent(
                self.failed(-1, "the held command's channel closed early"),
            ));
        }
        self.wait_for(marker, within).await
    }

    async fn wait_for(mut self, marker: &str, within: Duration) -> Result<Held, Box<NotHeld>> {
        match tokio::time::timeout(within, self.read_until(marker)).await {
            Ok(Ok(())) => Ok(self),
            Ok(Err((code, stdout, stderr))) => {
                let code_or = code.map_or(-1, |c| i32::try_from(c).unwrap_or(-1));
                let error = self.failed(code_or, &format!("{stdout}{stderr}"));
                Err(Box::new(NotHeld { code, stdout, stderr, error }))
            }
            Err(_) => Err(NotHeld::silent(CommunicatorError::Timeout {
                guest: self.guest,
                command: self.command,
                timeout: within,
            })),
        }
    }

    /// Reads output until a stdout line equals `marker`; on the command's end, returns its exit
    /// status, stdout and stderr. Bytes are kept until then and decoded once: SSH's packets
    /// split the stream anywhere, also inside a character (a file name in the inventory, say).
    async fn read_until(&mut self, marker: &str) -> Result<(), (Option<u32>, String, String)> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut code = None;
        while let Some(message) = self.channel.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    stdout.extend_from_slice(&data);
                    if let Some(at) = marker_line(&stdout, marker) {
                        stdout.truncate(at);
                        self.said = String::from_utf8_lossy(&stdout).into_owned();
                        return Ok(());
                    }
                }
                ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Err((code, text(&stdout), text(&stderr)))
    }

    /// What the command wrote to stdout before it held.
    #[must_use]
    pub fn said(&self) -> &str {
        &self.said
    }

    fn failed(&self, code: i32, output: &str) -> CommunicatorError {
        CommunicatorError::Command {
            guest: self.guest.clone(),
            command: self.command.clone(),
            code,
            stderr: output.trim_end().to_owned(),
        }
    }
}

/// Where the first whole line equal to `marker` starts in `output`.
fn marker_line(output: &[u8], marker: &str) -> Option<usize> {
    let mut at = 0;
    for line in output.split_inclusive(|&byte| byte == b'\n') {
        if line.ends_with(b"\n") && line.trim_ascii() == marker.as_bytes() {
            return Some(at);
        }
        at += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::marker_line;

    #[test]
    fn the_marker_must_be_a_whole_line() {
        assert_eq!(marker_line(b"pkg a 1\nfrozen\n", "frozen"), Some(8));
        assert_eq!(marker_line(b"frozen\n", "frozen"), Some(0));
        assert_eq!(marker_line(b"not frozen\nfroz", "frozen"), None);
        // Not until its line has ended: more of it may still come.
        assert_eq!(marker_line(b"x\nfrozen", "frozen"), None);
    }
}
