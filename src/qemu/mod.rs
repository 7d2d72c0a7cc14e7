//! QEMU: the argv from a `MachineSpec`, starting and supervising the process, QMP, accelerator
//! detection, firmware lookup, and `qemu-img`. Must not know about stages or steps.

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("qemu support is not built yet")]
    NotBuiltYet,
}
