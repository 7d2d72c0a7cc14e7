//! Every child process strata starts: its own process group, stderr drained, a deadline on
//! every wait, a graceful stop then a kill, killed on drop and when strata dies.
//! Must not know what the child is.

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("failed to start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}
