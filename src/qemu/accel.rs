//! Which accelerator a machine runs under: `accel = "auto"` picks KVM only when it works
//! (/dev/kvm opens, a VM and a vCPU can be created, and KVM's supported CPUID does not hide
//! SSE3/SSSE3/SSE4.1/SSE4.2 that the host CPU has, a sign of a nested or paravirtual KVM that
//! kills real guests), and the boot watchdog that restarts a KVM boot once under TCG when it
//! goes nowhere. Must not know about stages beyond carrying their name into events.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::QemuError;
use super::machine::Machine;
use super::qmp::is_broken;
use super::spec::{Accel, MachineSpec};
use crate::definition::AccelChoice;
use crate::events::Events;

/// How long a KVM boot may stay silent on the serial console before it is restarted under TCG.
pub const BOOT_WATCHDOG: Duration = Duration::from_secs(60);
/// How often the watchdog looks.
const WATCHDOG_POLL: Duration = Duration::from_millis(250);

/// The accelerator chosen, and why (for the build log and `-v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

impl Accel {
    /// Resolves the definition's choice; `Auto` probes KVM (fast: a few milliseconds).
    #[must_use]
    pub fn detect(choice: AccelChoice) -> AccelDecision {
        detect(choice)
    }
}

/// See [`Accel::detect`].
#[must_use]
pub fn detect(choice: AccelChoice) -> AccelDecision {
    match choice {
        AccelChoice::Tcg => AccelDecision { accel: Accel::Tcg, reason: "accel = \"tcg\"".into() },
        AccelChoice::Kvm => AccelDecision { accel: Accel::Kvm, reason: "accel = \"kvm\"".into() },
        AccelChoice::Auto => match probe_kvm() {
            Ok(()) => AccelDecision { accel: Accel::Kvm, reason: "KVM works".into() },
            Err(why) => AccelDecision { accel: Accel::Tcg, reason: format!("KVM unusable: {why}") },
        },
    }
}

const KVM_API_VERSION: i32 = 12;
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
/// `_IOWR(KVMIO, 0x05, struct kvm_cpuid2)`; the struct's fixed part is 8 bytes.
const KVM_GET_SUPPORTED_CPUID: libc::c_ulong = 0xC008_AE05;
/// `struct kvm_cpuid_entry2` is 10 u32s: function, index, flags, eax, ebx, ecx, edx, padding[3].
const ENTRY_WORDS: usize = 10;

/// CPUID leaf 1 ECX bits, with the names /proc/cpuinfo uses for them.
const LEAF1_ECX: &[(u32, &str, &str)] = &[
    (0, "pni", "sse3"),
    (9, "ssse3", "ssse3"),
    (19, "sse4_1", "sse4.1"),
    (20, "sse4_2", "sse4.2"),
];

/// Probes KVM step by step: open, API version, create VM and vCPU, supported CPUID vs host
/// flags. `Err` says which step failed and why.
pub fn probe_kvm() -> Result<(), String> {
    let kvm = File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|error| format!("/dev/kvm does not open ({error})"))?;
    let version = ioctl_int(kvm.as_fd(), KVM_GET_API_VERSION, 0)
        .map_err(|error| format!("KVM_GET_API_VERSION failed ({error})"))?;
    if version != KVM_API_VERSION {
        return Err(format!("KVM API version {version}, not {KVM_API_VERSION}"));
    }
    let vm = ioctl_fd(kvm.as_fd(), KVM_CREATE_VM, 0)
        .map_err(|error| format!("KVM_CREATE_VM failed ({error})"))?;
    let _vcpu = ioctl_fd(vm.as_fd(), KVM_CREATE_VCPU, 0)
        .map_err(|error| format!("KVM_CREATE_VCPU failed ({error})"))?;
    let entries = supported_cpuid(kvm.as_fd())
        .map_err(|error| format!("KVM_GET_SUPPORTED_CPUID failed ({error})"))?;
    let leaf1 = entries
        .chunks_exact(ENTRY_WORDS)
        .find(|entry| entry[0] == 1 && entry[1] == 0)
        .ok_or("KVM's supported CPUID has no leaf 1")?;
    let kvm_ecx = leaf1[5];
    let host_flags = host_cpu_flags();
    let hidden: Vec<&str> = LEAF1_ECX
        .iter()
        .filter(|(bit, flag, _)| host_flags.iter().any(|f| f == flag) && kvm_ecx & (1 << bit) == 0)
        .map(|(_, _, name)| *name)
        .collect();
    if !hidden.is_empty() {
        return Err(format!(
            "KVM hides CPU features the host has ({}): a nested or paravirtual KVM whose guests crash",
            hidden.join(", ")
        ));
    }
    Ok(())
}

/// The host CPU's flags from /proc/cpuinfo (first processor).
fn host_cpu_flags() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "flags").then(|| value.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

/// An ioctl whose argument is a plain integer and whose result is an integer.
#[allow(unsafe_code)]
fn ioctl_int(
    fd: BorrowedFd<'_>,
    request: libc::c_ulong,
    arg: libc::c_ulong,
) -> std::io::Result<i32> {
    // SAFETY: only called with KVM requests that take an integer argument (no pointer), on a
    // file descriptor that the borrow keeps open.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if result < 0 { Err(std::io::Error::last_os_error()) } else { Ok(result) }
}

/// An ioctl with an integer argument that returns a new file descriptor, owned from then on.
#[allow(unsafe_code)]
fn ioctl_fd(
    fd: BorrowedFd<'_>,
    request: libc::c_ulong,
    arg: libc::c_ulong,
) -> std::io::Result<OwnedFd> {
    let raw = ioctl_int(fd, request, arg)?;
    // SAFETY: KVM_CREATE_VM and KVM_CREATE_VCPU return a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// KVM_GET_SUPPORTED_CPUID: the entries, `ENTRY_WORDS` u32s each.
#[allow(unsafe_code)]
fn supported_cpuid(kvm: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    let mut capacity: usize = 256;
    loop {
        // struct kvm_cpuid2 { u32 nent; u32 padding; struct kvm_cpuid_entry2 entries[]; }
        let mut buffer = vec![0u32; 2 + capacity * ENTRY_WORDS];
        buffer[0] = u32::try_from(capacity).unwrap_or(u32::MAX);
        // SAFETY: `buffer` is a u32-aligned kvm_cpuid2 with room for `nent` entries, which is
        // all the kernel writes; it lives across the call.
        let result =
            unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_SUPPORTED_CPUID, buffer.as_mut_ptr()) };
        if result >= 0 {
            let count = usize::try_from(buffer[0]).unwrap_or(0).min(capacity);
            return Ok(buffer[2..2 + count * ENTRY_WORDS].to_vec());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::E2BIG) && capacity < 4096 {
            capacity *= 2;
        } else {
            return Err(error);
        }
    }
}

/// Starts the machine; under KVM, watches the boot for `watchdog` (normally
/// [`BOOT_WATCHDOG`]): when QEMU dies, its status turns `internal-error` or `guest-panicked`,
/// or nothing appears on the serial console in that time, the boot is restarted once under
/// TCG, with a warning event. Returns as soon as the console shows a first byte.
pub async fn start_with_fallback(
    spec: MachineSpec,
    events: &Events,
    stage: &str,
    watchdog: Duration,
) -> Result<Machine, QemuError> {
    if spec.accel != Accel::Kvm {
        return Machine::start(spec, events, stage).await;
    }
    let mut fallback = spec.clone();
    fallback.accel = Accel::Tcg;
    let why = match Machine::start(spec, events, stage).await {
        Ok(machine) => match watch_boot(&machine, watchdog).await {
            None => return Ok(machine),
            Some(why) => {
                let _ = machine.kill().await;
                why
            }
        },
        Err(QemuError::ExitedAtStart { status, stderr, .. }) => {
            format!("qemu exited at start ({status}): {}", last_line(&stderr))
        }
        Err(QemuError::QmpNotReady { .. }) => "qemu did not open its QMP socket".to_owned(),
        Err(error) => return Err(error),
    };
    events.warn(format!("stage `{stage}`: the KVM boot failed ({why}); restarting it under TCG"));
    Machine::start(fallback, events, stage).await
}

/// The last non-empty line of QEMU's stderr: usually the reason it gave up.
fn last_line(text: &str) -> &str {
    text.lines().rev().map(str::trim).find(|line| !line.is_empty()).unwrap_or("no message")
}

/// `None` when the boot looks alive; otherwise why not.
async fn watch_boot(machine: &Machine, watchdog: Duration) -> Option<String> {
    let started = Instant::now();
    let mut died = std::pin::pin!(machine.died());
    let mut last_status = Instant::now();
    loop {
        if machine.console_bytes() > 0 {
            return None;
        }
        if let Some(status) = machine.exited() {
            return Some(format!("qemu exited ({status}): {}", last_line(&machine.stderr_tail())));
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            if let Ok(info) = machine.qmp().query_status().await
                && is_broken(info.status)
            {
                return Some(format!("the guest is in state {:?}", info.status));
            }
        }
        if started.elapsed() >= watchdog {
            return Some(format!(
                "no output on the serial console within {}",
                crate::units::format_duration(watchdog)
            ));
        }
        tokio::select! {
            _ = &mut died => {}
            () = tokio::time::sleep(WATCHDOG_POLL) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn explicit_choices_are_kept() {
        assert_eq!(detect(AccelChoice::Tcg).accel, Accel::Tcg);
        assert_eq!(detect(AccelChoice::Kvm).accel, Accel::Kvm);
    }

    #[test]
    fn auto_decides_fast() {
        let started = Instant::now();
        let decision = Accel::detect(AccelChoice::Auto);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(!decision.reason.is_empty());
    }

    #[test]
    fn host_flags_are_read() {
        if cfg!(target_arch = "x86_64") {
            let flags = host_cpu_flags();
            assert!(flags.iter().any(|flag| flag == "sse2"), "{flags:?}");
        }
    }
}
