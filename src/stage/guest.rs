//! What strata itself does inside the guest: collect facts for layer.json, sysprep so the
//! layer is a clean cloud template, and reboot with a reconnect.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Link;
use super::{StageError, StageJob, Vm, communicator_error, race_death};
use crate::communicator::{Communicator, CommunicatorError};
use crate::events::Stream;

/// What the layer records about the guest it was cut from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestFacts {
    /// `name version` per installed package.
    pub packages: Vec<String>,
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    pub guest_agent: bool,
}

/// Makes the layer a valid cloud template again (DESIGN §4 step 7): cloud-init forgets this
/// instance, machine-id is empty (never missing), the build's host keys and client
/// key go, the journal and per-instance state are dropped, freed blocks are trimmed.
const SYSPREP: &str = r#"set -eu
# Only when cloud-init left something since the last clean: a later stage of the same boot, or a
# resumed guest, has nothing to clean, and cloud-init's Python start costs seconds under TCG.
if [ -n "$(ls -A /var/lib/cloud 2>/dev/null)" ] || ls /var/log/cloud-init*.log >/dev/null 2>&1; then
  cloud-init clean --logs --seed
fi
# Empty, not "uninitialized": systemd then makes a new id at the next boot without first-boot
# semantics, whose systemd-firstboot prompt would hang a Debian guest on its console.
: > /etc/machine-id
[ -L /var/lib/dbus/machine-id ] || rm -f /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
home=$(getent passwd "$STRATA_USER" | cut -d: -f6)
[ -z "$home" ] || rm -f "$home/.ssh/authorized_keys"
rm -f /tmp/strata-step-* /var/lib/systemd/random-seed /var/lib/dhcp/*.leases
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
fstrim -a >/dev/null 2>&1 || true
sync
"#;

const FACTS: &str = r#"if command -v dpkg-query >/dev/null; then dpkg-query -W -f='pkg ${Package} ${Version}\n'
elif command -v rpm >/dev/null; then rpm -qa --qf 'pkg %{NAME} %{VERSION}-%{RELEASE}\n'; fi
. /etc/os-release 2>/dev/null && echo "os_id $ID" && echo "os_version ${VERSION_ID:-}"
if command -v qemu-ga >/dev/null || [ -e /usr/sbin/qemu-ga ]; then echo "guest_agent yes"; fi
"#;

pub fn link<'a>(vm: &'a Vm, stage: &str) -> Result<&'a Link, StageError> {
    vm.link.as_ref().ok_or_else(|| StageError::NotConnected { stage: stage.to_owned() })
}

pub async fn facts(link: &Link) -> GuestFacts {
    let mut facts = GuestFacts::default();
    let mut lines = Vec::new();
    let result = link
        .exec(FACTS, &BTreeMap::new(), Duration::from_secs(120), |stream, line| {
            if stream == Stream::Stdout {
                lines.push(line.to_owned());
            }
        })
        .await;
    if result.is_err() {
        return facts;
    }
    for line in lines {
        let (kind, value) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match kind {
            "pkg" => facts.packages.push(value.to_owned()),
            "os_id" => facts.os_id = Some(value.to_owned()),
            "os_version" if !value.is_empty() => facts.os_version = Some(value.to_owned()),
            "guest_agent" => facts.guest_agent = true,
            _ => {}
        }
    }
    facts
}

pub async fn sysprep(link: &Link, user: &str) -> Result<(), CommunicatorError> {
    let env = BTreeMap::from([("STRATA_USER".to_owned(), user.to_owned())]);
    let mut output = Vec::new();
    let exit = link
        .exec_as_root(SYSPREP, &env, Duration::from_secs(600), |_, line| {
            output.push(line.to_owned());
        })
        .await?;
    if exit.success() {
        Ok(())
    } else {
        Err(CommunicatorError::Command {
            guest: link.describe(),
            command: "sysprep".to_owned(),
            code: exit.code,
            stderr: output.join("\n"),
        })
    }
}

/// A `reboot` step: reboot, wait for a new boot, wait for cloud-init again.
pub async fn reboot(job: &StageJob<'_>, vm: &mut Vm, during: &str) -> Result<(), StageError> {
    let stage = job.stage.name.to_string();
    let deadline = Instant::now() + job.definition.communicator.ready_timeout;
    let Some(mut link) = vm.link.take() else {
        return Err(StageError::NotConnected { stage });
    };
    let rebooted = {
        let mut on_wait = |_: &crate::communicator::ConnectWait| {};
        race_death(&vm.machine, &stage, during, link.reboot(deadline, &mut on_wait)).await?
    };
    vm.link = Some(link);
    rebooted.map_err(|source| {
        communicator_error(vm, &stage, "the guest did not come back from a reboot", source)
    })?;
    let link = self::link(vm, &stage)?;
    let outcome = race_death(&vm.machine, &stage, during, link.wait_cloud_init(deadline)).await?;
    outcome.map_err(|source| {
        communicator_error(vm, &stage, "cloud-init failed after a reboot", source)
    })?;
    Ok(())
}
