//! QEMU: the argv from a `MachineSpec`, starting and supervising the process, QMP, accelerator
//! detection, firmware lookup, and `qemu-img`. Must not know about stages or steps (a stage's
//! name is only carried into events and messages).

pub mod accel;
pub mod firmware;
pub mod img;
pub mod machine;
pub mod qmp;
pub mod spec;

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

pub use accel::{AccelDecision, BOOT_WATCHDOG, detect, start_with_fallback};
pub use firmware::Ovmf;
pub use machine::{Machine, PowerOff};
pub use qmp::{Qmp, QmpEvent};
pub use spec::{Accel, CacheMode, Disk, MachineFirmware, MachineSpec, Network};

use crate::process::ProcessError;
use crate::units::format_duration;

/// The longest path a unix socket address holds (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("failed to start qemu for stage `{stage}`")]
    Spawn {
        stage: String,
        #[source]
        source: ProcessError,
    },
    #[error(
        "the socket path {path} is {len} bytes long, more than the {MAX_SOCKET_PATH} a unix socket allows: use a shorter --store path"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("failed to prepare {path} for qemu")]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to replace {} with its compacted copy", path.display())]
    Replace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("qemu for stage `{stage}` exited at start ({status}){}", section("its stderr", stderr))]
    ExitedAtStart { stage: String, status: ExitStatus, stderr: String },
    #[error(
        "qemu for stage `{stage}` did not open its QMP socket {} within {}{}",
        socket.display(), format_duration(*within), section("its stderr", stderr)
    )]
    QmpNotReady { stage: String, socket: PathBuf, within: Duration, stderr: String },
    #[error("failed to connect to QMP at {}", socket.display())]
    QmpConnect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP at {} closed (qemu exited?)", socket.display())]
    QmpClosed { socket: PathBuf },
    #[error("failed to talk to QMP at {}", socket.display())]
    QmpIo {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP at {} did not speak QMP: {detail}", socket.display())]
    QmpProtocol { socket: PathBuf, detail: String },
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    QmpCommand { command: String, class: String, desc: String },
    #[error("QMP command `{command}` got no answer within {}", format_duration(*within))]
    QmpTimeout { command: String, within: Duration },
    #[error("failed to encode or decode QMP command `{command}`")]
    QmpJson {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "qemu for stage `{stage}` died ({status}){}{}",
        section("its stderr", stderr),
        section("the serial console's last lines", console)
    )]
    Died { stage: String, status: String, stderr: String, console: String },
    #[error("failed to stop qemu for stage `{stage}`")]
    Stop {
        stage: String,
        #[source]
        source: ProcessError,
    },
    #[error(
        "no OVMF firmware found (looked for {}): install the `ovmf` package (Debian, Ubuntu) or `edk2-ovmf` (Fedora, Arch), or use firmware = \"bios\"",
        searched.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    FirmwareMissing { searched: Vec<PathBuf> },
    #[error("failed to copy the OVMF variables {} to {}", from.display(), to.display())]
    FirmwareCopy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("qemu for stage `{stage}` still runs after {}", format_duration(*within))]
    StillRunning { stage: String, within: Duration },
    #[error("qemu-img failed on {}", path.display())]
    Img {
        path: PathBuf,
        #[source]
        source: ProcessError,
    },
    #[error("failed to read qemu-img's report on {}", path.display())]
    ImgReport {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{} is corrupt: qemu-img check found {corruptions} corruption(s){}; the image must be rebuilt",
        path.display(), section("its report", report)
    )]
    ImageCorrupt { path: PathBuf, corruptions: u64, report: String },
}

/// "\nTITLE:\nTEXT" when there is text; nothing otherwise.
fn section(title: &str, text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() { String::new() } else { format!("\n{title}:\n{text}") }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
/// Another process may take it before QEMU does; callers that care retry.
pub fn free_local_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_local_port().unwrap();
        assert!(port > 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
