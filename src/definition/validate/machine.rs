//! `[machine]` and `[communicator]`: what QEMU is asked for (bounded by what it can give) and
//! how strata reaches the guest.

use serde_spanned::Spanned;

use super::{Checker, DEFAULT_READY_TIMEOUT, DEFAULT_USER};
use crate::definition::error::Problem;
use crate::definition::raw::{RawCommunicator, RawMachine, Text};
use crate::definition::types::{AccelChoice, Communicator, CommunicatorKind, Firmware, Machine};
use crate::units::{ByteSize, MAX_TIMEOUT};

const DEFAULT_CPUS: u32 = 2;
const DEFAULT_MEMORY: ByteSize = ByteSize(2 * ByteSize::GIB);
const MIN_MEMORY: ByteSize = ByteSize(256 * ByteSize::MIB);

impl Checker {
    pub(super) fn machine(&mut self, machine: Option<&RawMachine>) -> Option<Machine> {
        let Some(machine) = machine else {
            return Some(Machine {
                cpus: DEFAULT_CPUS,
                memory: DEFAULT_MEMORY,
                disk_size: None,
                firmware: Firmware::Bios,
                accel: AccelChoice::Auto,
                extra_args: Vec::new(),
            });
        };
        let cpus = self.cpus(machine.cpus.as_ref());
        let memory = self.memory(machine.memory.as_ref());
        let disk_size = match &machine.disk_size {
            None => Some(None),
            Some(text) => self.size("disk_size", text, Machine::MAX_DISK_SIZE, "64T").map(Some),
        };
        let firmware = self.choice("firmware", machine.firmware.as_ref(), Firmware::Bios);
        let accel = self.choice("accel", machine.accel.as_ref(), AccelChoice::Auto);
        Some(Machine {
            cpus: cpus?,
            memory: memory?,
            disk_size: disk_size?,
            firmware: firmware?,
            accel: accel?,
            extra_args: machine.extra_args.clone(),
        })
    }

    fn cpus(&mut self, cpus: Option<&Spanned<i64>>) -> Option<u32> {
        let Some(cpus) = cpus else {
            return Some(DEFAULT_CPUS);
        };
        match u32::try_from(*cpus.get_ref()) {
            Ok(count) if (1..=Machine::MAX_CPUS).contains(&count) => Some(count),
            _ => {
                self.report(Problem::BadCpus { value: *cpus.get_ref() }, cpus.span());
                None
            }
        }
    }

    fn memory(&mut self, memory: Option<&Text>) -> Option<ByteSize> {
        let Some(text) = memory else {
            return Some(DEFAULT_MEMORY);
        };
        let size = self.size("memory", text, Machine::MAX_MEMORY, "1T")?;
        if size < MIN_MEMORY {
            self.report(Problem::MemoryTooSmall { text: text.get_ref().clone() }, text.span());
            return None;
        }
        Some(size)
    }

    pub(super) fn communicator(
        &mut self,
        communicator: Option<&RawCommunicator>,
    ) -> Option<Communicator> {
        let Some(communicator) = communicator else {
            return Some(Communicator {
                kind: CommunicatorKind::Ssh,
                user: DEFAULT_USER.to_owned(),
                ready_timeout: DEFAULT_READY_TIMEOUT,
            });
        };
        let kind =
            self.choice("communicator kind", communicator.kind.as_ref(), CommunicatorKind::Ssh);
        let user = match &communicator.user {
            None => Some(DEFAULT_USER.to_owned()),
            Some(user) if user.get_ref() == "root" => {
                self.report(Problem::RootUser, user.span());
                None
            }
            Some(user) if !is_user_name(user.get_ref()) => {
                self.report(Problem::BadUser { user: user.get_ref().clone() }, user.span());
                None
            }
            Some(user) => Some(user.get_ref().clone()),
        };
        let ready_timeout = self.duration(
            "ready_timeout",
            communicator.ready_timeout.as_ref(),
            DEFAULT_READY_TIMEOUT,
            MAX_TIMEOUT,
        );
        Some(Communicator { kind: kind?, user: user?, ready_timeout: ready_timeout? })
    }
}

/// A Linux user name as useradd takes it by default.
fn is_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let body = name.strip_suffix('$').unwrap_or(name);
    first_ok
        && name.len() <= 32
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(is_user_name("debian"));
        assert!(is_user_name("_svc-1"));
        assert!(!is_user_name("Debian"));
        assert!(!is_user_name("1abc"));
        assert!(!is_user_name(""));
        assert!(!is_user_name("a b"));
        assert!(!is_user_name(&"a".repeat(33)));
    }
}
