//! A command that holds the guest in some state until strata lets go: it prints a marker line
//! when it holds, and ends when strata writes a line to its stdin (or its stdin closes, so the
//! guest never stays held when strata goes away). Used to keep filesystems frozen while QEMU
//! takes a live snapshot.

use std::time::Duration;

use russh::{ChannelMsg, client};

use super::{CommunicatorError, ExecSpec, SshCommunicator, shell};

/// A running held command. Dropping it closes the channel, which releases the guest too.
pub struct Held {
    channel: russh::Channel<client::Msg>,
    guest: String,
    command: String,
}

impl SshCommunicator {
    /// Starts `spec` and waits up to `within` for a stdout line equal to `marker`.
    pub async fn hold(
        &self,
        spec: ExecSpec<'_>,
        marker: &str,
        within: Duration,
    ) -> Result<Held, CommunicatorError> {
        let line = shell::command_line(&spec, self.target().user == "root")?;
        let channel = self.open_channel().await?;
        channel
            .exec(true, line)
            .await
            .map_err(|error| self.error("start a held command", error))?;
        let mut held =
            Held { channel, guest: self.describe_target(), command: spec.command.to_owned() };
        match tokio::time::timeout(within, held.read_until(marker)).await {
            Ok(Ok(())) => Ok(held),
            Ok(Err(output)) => Err(held.failed(-1, &output)),
            Err(_) => Err(CommunicatorError::Timeout {
                guest: held.guest,
                command: held.command,
                timeout: within,
            }),
        }
    }
}

impl Held {
    /// Reads output until a line equals `marker`; on the command's end, returns what it said.
    async fn read_until(&mut self, marker: &str) -> Result<(), String> {
        let mut output = String::new();
        while let Some(message) = self.channel.wait().await {
            match message {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                    output.push_str(&String::from_utf8_lossy(&data));
                    if output.lines().any(|line| line.trim() == marker) {
                        return Ok(());
                    }
                }
                ChannelMsg::Close | ChannelMsg::Eof => break,
                _ => {}
            }
        }
        Err(output)
    }

    fn failed(&self, code: i32, output: &str) -> CommunicatorError {
        CommunicatorError::Command {
            guest: self.guest.clone(),
            command: self.command.clone(),
            code,
            stderr: output.trim_end().to_owned(),
        }
    }

    /// Writes a line to the command's stdin and waits up to `within` for it to exit 0.
    pub async fn release(mut self, within: Duration) -> Result<(), CommunicatorError> {
        let sent = self.channel.data(&b"go\n"[..]).await;
        let _ = self.channel.eof().await;
        if sent.is_err() {
            return Err(self.failed(-1, "the held command's channel closed early"));
        }
        let mut output = String::new();
        let mut code = None;
        let waited = tokio::time::timeout(within, async {
            while let Some(message) = self.channel.wait().await {
                match message {
                    ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                        output.push_str(&String::from_utf8_lossy(&data));
                    }
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
        })
        .await;
        match (waited, code) {
            (Ok(()), Some(0)) => Ok(()),
            (Ok(()), code) => {
                Err(self.failed(code.map_or(-1, |c| i32::try_from(c).unwrap_or(-1)), &output))
            }
            (Err(_), _) => Err(CommunicatorError::Timeout {
                guest: self.guest,
                command: self.command,
                timeout: within,
            }),
        }
    }
}
