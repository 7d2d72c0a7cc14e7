//! The communicator a stage talks to its guest through: SSH, or the QEMU guest agent over
//! virtio-serial (for guests without network). One type, so steps, sysprep and cuts are
//! written once.

use std::path::Path;
use std::time::Instant;

use crate::communicator::{
    Communicator, CommunicatorError, ConnectWait, ExecSpec, ExitInfo, GuestAgentCommunicator,
    SshCommunicator,
};
use crate::events::Stream;

pub enum Link {
    Ssh(SshCommunicator),
    Agent(GuestAgentCommunicator),
}

/// What differs per transport when a guest is sealed and cut. The rest of `stage/` asks these
/// and never matches on the variants itself.
impl Link {
    /// The SSH connection, for what only SSH can do: hold a command open in the guest (the
    /// seal that freezes in the same command, started ahead of time).
    #[must_use]
    pub fn ssh(&self) -> Option<&SshCommunicator> {
        match self {
            Link::Ssh(ssh) => Some(ssh),
            Link::Agent(_) => None,
        }
    }

    /// Freezes the guest's filesystems by the transport's own means (the guest agent's
    /// `guest-fsfreeze-freeze`). Over SSH the freeze is a held command instead (see
    /// `session::seal`), so this is not used there and fails.
    pub async fn freeze_filesystems(&self) -> Result<(), CommunicatorError> {
        match self {
            Link::Agent(agent) => agent.freeze().await.map(|_| ()),
            Link::Ssh(ssh) => Err(CommunicatorError::Unsupported {
                guest: ssh.describe(),
                what: "freezing without a held command".to_owned(),
            }),
        }
    }

    /// Thaws what [`Link::freeze_filesystems`] froze; nothing to do over SSH.
    pub async fn thaw_filesystems(&self) -> Result<(), CommunicatorError> {
        match self {
            Link::Agent(agent) => agent.thaw().await.map(|_| ()),
            Link::Ssh(_) => Ok(()),
        }
    }

    /// True when the thaw also put back the keys sysprep kept in memory: over SSH the held
    /// freeze command does it as it thaws; the guest agent has to be asked.
    #[must_use]
    pub fn keys_back_with_thaw(&self) -> bool {
        matches!(self, Link::Ssh(_))
    }
}

impl Communicator for Link {
    fn describe(&self) -> String {
        match self {
            Link::Ssh(ssh) => ssh.describe(),
            Link::Agent(agent) => agent.describe(),
        }
    }

    async fn run(
        &self,
        spec: ExecSpec<'_>,
        on_output: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExitInfo, CommunicatorError> {
        match self {
            Link::Ssh(ssh) => ssh.run(spec, on_output).await,
            Link::Agent(agent) => agent.run(spec, on_output).await,
        }
    }

    async fn upload(&self, local: &Path, remote: &str) -> Result<(), CommunicatorError> {
        match self {
            Link::Ssh(ssh) => ssh.upload(local, remote).await,
            Link::Agent(agent) => agent.upload(local, remote).await,
        }
    }

    async fn upload_bytes(
        &self,
        bytes: &[u8],
        remote: &str,
        mode: u32,
    ) -> Result<(), CommunicatorError> {
        match self {
            Link::Ssh(ssh) => ssh.upload_bytes(bytes, remote, mode).await,
            Link::Agent(agent) => agent.upload_bytes(bytes, remote, mode).await,
        }
    }

    async fn reboot(
        &mut self,
        deadline: Instant,
        on_wait: &mut (dyn FnMut(&ConnectWait) + Send),
    ) -> Result<(), CommunicatorError> {
        match self {
            Link::Ssh(ssh) => ssh.reboot(deadline, on_wait).await,
            Link::Agent(agent) => agent.reboot(deadline, on_wait).await,
        }
    }

    async fn wait_cloud_init(
        &self,
        deadline: Instant,
    ) -> Result<crate::communicator::CloudInitOutcome, CommunicatorError> {
        match self {
            Link::Ssh(ssh) => ssh.wait_cloud_init(deadline).await,
            Link::Agent(agent) => agent.wait_cloud_init(deadline).await,
        }
    }

    async fn close(self) {
        match self {
            Link::Ssh(ssh) => ssh.close().await,
            Link::Agent(agent) => agent.close().await,
        }
    }
}
