//! Talking to a running guest: SSH (russh, pinned host key) and the QEMU guest agent.
//! Waiting until ready, running commands with streamed output, uploading files.
//! Must not start or stop QEMU.

#[derive(Debug, thiserror::Error)]
pub enum CommunicatorError {
    #[error("the communicator is not built yet")]
    NotBuiltYet,
}
