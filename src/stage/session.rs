//! A guest that lives across stages (one boot for a whole build): after a stage's steps, the
//! guest is sysprepped and its filesystems are frozen, QEMU switches the running disk onto a
//! new overlay for the next stage (a live external snapshot), the guest is thawed and given
//! back the build's keys, and the frozen overlay becomes the stage's layer. Must not commit
//! layers itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::guest::{self, GuestFacts, SysprepFor};
use super::{
    Link, StageError, StageJob, StageOutput, Vm, boot, create_overlay, race_death, run_dir,
};
use crate::communicator::{
    Communicator, CommunicatorError, ExecSpec, Held, NotHeld, SshCommunicator, capture,
};
use crate::events::Event;
use crate::qemu::img;

/// How long the guest may take to freeze, and to thaw and answer.
const FREEZE_WITHIN: Duration = Duration::from_secs(60);
/// How long sysprep may take.
const SYSPREP_WITHIN: Duration = Duration::from_secs(600);
/// What the sysprep-and-freeze command says between the two.
const SYSPREPPED: &str = "sysprepped";
/// What it says once the filesystems are frozen ([`FREEZE`] echoes it).
const FROZEN: &str = "frozen";
/// What a seal command started ahead says when it is ready, and when it begins to seal.
const STANDING_BY: &str = "standing-by";
const SEALING: &str = "sealing";
/// Its exit status when the guest cannot be frozen.
const CANNOT_FREEZE: u32 = 3;
const POWER_OFF_GRACE: Duration = Duration::from_secs(90);
const CHECK_WITHIN: Duration = Duration::from_secs(300);

/// Trims, then freezes every local journaled filesystem, says `frozen`, waits for a line on stdin
/// (or its end: strata closes the channel, or goes away, so a guest never stays frozen longer
/// than strata lives), thaws, and puts back the keys sysprep kept in memory (the thaw comes
/// after the cut, so they land in the next stage's overlay).
/// The trim comes first so that a guest without fsfreeze is trimmed before its power-off too.
/// Mounts are listed last-mounted first, so a filesystem mounted inside another is frozen before
/// it. (The shell reads /proc/mounts and waits with its own `read`: each process costs 50-100 ms
/// under emulation. `fsfreeze` syncs the filesystem it freezes, so no `sync` after the trim.)
const FREEZE: &str = r#"set -u
mounts=""
while read -r _ mount type _; do
  case $type in ext2|ext3|ext4|xfs|btrfs) mounts="$mount $mounts" ;; esac
done < /proc/mounts
sync
fstrim -a >/dev/null 2>&1 || true
command -v fsfreeze >/dev/null || { echo "no fsfreeze" >&2; exit 3; }
frozen=""
for m in $mounts; do
  if fsfreeze -f "$m"; then frozen="$m $frozen"; else
    for t in $frozen; do fsfreeze -u "$t"; done
    echo "cannot freeze $m" >&2; exit 3
  fi
done
echo frozen
read -r _ || true
for m in $frozen; do fsfreeze -u "$m"; done
"#;

/// The guest's filesystems held frozen, by whichever means its communicator has.
enum Frozen {
    /// A command over SSH that thaws when it reads a line (or its stdin closes).
    Ssh(Held),
    /// `guest-fsfreeze-freeze`; thawed with `guest-fsfreeze-thaw`.
    Agent,
}

impl Frozen {
    /// Trims, then freezes through the link's own means (the guest agent's fsfreeze).
    async fn freeze_by_link(link: &Link) -> Result<Frozen, CommunicatorError> {
        // The same trim first, so the layer holds only what the stage really wrote.
        let trim = "sync; fstrim -a >/dev/null 2>&1; sync";
        capture(link, trim, FREEZE_WITHIN, true).await?;
        link.freeze_filesystems().await.map(|()| Frozen::Agent)
    }

    /// Thaws the guest. Over SSH the held command then stands by for the next stage's seal,
    /// and is returned: `None` when it ended instead (cleanly), or over the guest agent.
    async fn thaw(self, link: &Link) -> Result<Option<Held>, CommunicatorError> {
        match self {
            Frozen::Ssh(held) => match held.proceed(STANDING_BY, FREEZE_WITHIN).await {
                Ok(standby) => Ok(Some(standby)),
                Err(ended) if ended.code == Some(0) => Ok(None),
                Err(not_held) => Err(not_held.error),
            },
            Frozen::Agent => link.thaw_filesystems().await.map(|()| None),
        }
    }
}

/// A sysprepped guest, frozen when it can be.
struct Sealed {
    facts: GuestFacts,
    /// Why it could not be frozen (no fsfreeze, a filesystem that refuses), if so.
    frozen: Result<Frozen, String>,
}

/// Seals the guest (a seal: sysprep, then the freeze, so the disk is a clean, consistent
/// template). Over SSH one command does both: each command costs a login shell,
/// `sudo` and a round trip, about 0.4 s under emulation. `standby`: that command, started ahead
/// (see [`stand_by`]). `Err`: sysprep failed.
async fn seal(
    link: &Link,
    sysprep: SysprepFor<'_>,
    standby: Option<Held>,
) -> Result<Sealed, CommunicatorError> {
    if let Some(ssh) = link.ssh() {
        return seal_over_ssh(ssh, sysprep, standby).await;
    }
    let facts = guest::sysprep(link, sysprep).await?;
    let frozen = Frozen::freeze_by_link(link).await.map_err(|error| error.to_string());
    Ok(Sealed { facts, frozen })
}

/// The seal as one root script that serves every stage of a boot: sysprep (with the facts)
/// in a subshell of its own, [`SYSPREPPED`], the freeze and its hold, the thaw, the keys put
/// back; then [`STANDING_BY`] until the next stage's seal sends its mode
/// ([`guest::seal_mode`]), or the channel's end ends it. Each command costs a login shell,
/// `sudo` and a round trip (about 0.3 s under emulation, more right after a resume), so the
/// stages after the first in a boot cost none. (The subshell stands alone, not in an `||`
/// list, where the shell would ignore its `set -e`.)
fn seal_loop(sysprep: SysprepFor<'_>) -> String {
    seal_loop_of(&guest::sysprep_body(sysprep), FREEZE, &guest::unkeep_script())
}

fn seal_loop_of(sysprep: &str, freeze: &str, unkeep: &str) -> String {
    format!(
        "while :; do\necho {SEALING}\n(\n{sysprep})\nsealed=$?\n\
         [ \"$sealed\" -eq 0 ] || exit \"$sealed\"\n\
         echo {SYSPREPPED}\nset +e\n{freeze}{unkeep}echo {STANDING_BY}\nread -r mode || exit 0\ndone\n"
    )
}

/// The seal command started when the seal is due: it seals at once, in `sysprep`'s mode.
fn seal_script(sysprep: SysprepFor<'_>) -> String {
    format!("mode={}\n{}", guest::seal_mode(sysprep), seal_loop(sysprep))
}

/// Starts the stage's seal command ahead of time, as root, behind `first` (a command the guest
/// needs now anyway, such as setting its clock after a resume): it runs `first`, says
/// [`STANDING_BY`], and waits for its mode before it seals. The seal then costs no command of
/// its own. If the command is gone by then (a `reboot` step ends it), the seal starts a fresh
/// one.
pub(super) async fn stand_by(
    ssh: &SshCommunicator,
    sysprep: SysprepFor<'_>,
    first: &str,
    within: Duration,
) -> Result<Held, Box<NotHeld>> {
    hold_seal(ssh, &standby_script(first, &seal_loop(sysprep)), STANDING_BY, within).await
}

/// `first`, then [`STANDING_BY`] until a mode comes, then `seal_loop`.
fn standby_script(first: &str, seal_loop: &str) -> String {
    format!("{first}\necho {STANDING_BY}\nread -r mode || exit 0\n{seal_loop}")
}

/// Starts a seal `script` as root (strata's own: no `timeout` in the guest) and waits up to
/// `within` for its line `marker`.
async fn hold_seal(
    ssh: &SshCommunicator,
    script: &str,
    marker: &str,
    within: Duration,
) -> Result<Held, Box<NotHeld>> {
    let env = BTreeMap::new();
    let spec = ExecSpec {
        command: script,
        env: &env,
        timeout: SYSPREP_WITHIN + FREEZE_WITHIN,
        as_root: true,
        guest_timeout: false,
    };
    ssh.hold(spec, "sysprep and freeze", marker, within).await
}

async fn seal_over_ssh(
    ssh: &SshCommunicator,
    sysprep: SysprepFor<'_>,
    standby: Option<Held>,
) -> Result<Sealed, CommunicatorError> {
    let within = SYSPREP_WITHIN + FREEZE_WITHIN;
    let drift = sysprep.drift;
    let fresh = || async { hold_seal(ssh, &seal_script(sysprep), FROZEN, within).await };
    let held = match standby {
        None => fresh().await,
        Some(standby) => {
            match standby.proceed_with(guest::seal_mode(sysprep), FROZEN, within).await {
                // It ended before it began to seal (a reboot ended it): start one now.
                Err(gone)
                    if !said(&gone.stdout, SEALING)
                        && !matches!(gone.error, CommunicatorError::Timeout { .. }) =>
                {
                    tracing::debug!(
                        "seal: the command started ahead is gone; starting a fresh one"
                    );
                    fresh().await
                }
                other => other,
            }
        }
    };
    match held {
        Ok(held) => {
            let facts = guest::parse_facts(held.said(), drift);
            Ok(Sealed { facts, frozen: Ok(Frozen::Ssh(held)) })
        }
        Err(not_held) => {
            let sysprepped = said(&not_held.stdout, SYSPREPPED);
            match not_held.code {
                Some(CANNOT_FREEZE) if sysprepped => Ok(Sealed {
                    facts: guest::parse_facts(&not_held.stdout, drift),
                    frozen: Err(not_held.stderr.trim().to_owned()),
                }),
                Some(code) => Err(CommunicatorError::Command {
                    guest: ssh.describe(),
                    command: if sysprepped { "freeze" } else { "sysprep" }.to_owned(),
                    code: i32::try_from(code).unwrap_or(-1),
                    stderr: not_held.stderr.trim_end().to_owned(),
                }),
                None => Err(not_held.error),
            }
        }
    }
}

/// Whether `stdout` has the whole line `marker`.
fn said(stdout: &str, marker: &str) -> bool {
    stdout.lines().any(|line| line == marker)
}

/// What a cut did (a cut: the stage's layer taken from the running guest by a live snapshot,
/// so the next stage goes on without a reboot). Either way the guest is sysprepped, and `facts`
/// are the stage's.
#[derive(Debug)]
pub enum Cut {
    /// The old disk is frozen and ready to commit; the guest now writes to the new overlay.
    Done { facts: GuestFacts },
    /// The guest could not be frozen (no fsfreeze, a filesystem that refuses): no snapshot was
    /// taken; the caller should power off (see [`Session::power_off_unfrozen`]) and boot per
    /// stage.
    Unsupported { facts: GuestFacts, why: String },
}

/// A booted guest that may serve several stages.
pub struct Session {
    pub(super) vm: Vm,
    run_dir: super::RunDir,
    /// The block node the guest writes to now (`disk0`, then `layer1`, `layer2`, …).
    top_node: String,
    cuts: u32,
    /// The stage's seal command, started ahead ([`stand_by`]), if it was.
    pub(super) standby: Option<Held>,
}

impl Session {
    /// Creates the first stage's overlay and boots the guest on it.
    pub async fn start(job: &StageJob<'_>) -> Result<Session, StageError> {
        create_overlay(job).await?;
        let run_dir = run_dir(job.stage.name.as_str())?;
        let vm = boot(job, run_dir.path()).await?;
        Ok(Session::from_parts(vm, run_dir))
    }

    pub(super) fn from_parts(vm: Vm, run_dir: super::RunDir) -> Session {
        Session { vm, run_dir, top_node: "disk0".to_owned(), cuts: 0, standby: None }
    }

    /// The seed the guest booted with (restore points keep a copy, for reboots after a resume).
    pub(super) fn seed_path(&self) -> std::path::PathBuf {
        self.run_dir.path().join("seed.img")
    }

    /// Runs the stage's steps. Sysprep follows in [`Session::cut`] or [`Session::power_off`].
    pub async fn run_steps(&mut self, job: &StageJob<'_>) -> Result<(), StageError> {
        super::steps::run_all(job, &mut self.vm).await?;
        job.events.emit(Event::Sysprep { stage: job.stage.name.to_string() });
        Ok(())
    }

    /// Sysprep and freeze; `Err` when sysprep failed (or QEMU died).
    async fn seal(&mut self, job: &StageJob<'_>) -> Result<Sealed, StageError> {
        let stage = job.stage.name.to_string();
        let link = guest::link(&self.vm, &stage)?;
        let sealing = seal(link, SysprepFor::of(job), self.standby.take());
        let sealed = race_death(&self.vm.machine, &stage, "during sysprep", sealing).await?;
        sealed.map_err(|source| self.communicator_error(&stage, "sysprep failed", source))
    }

    /// Sysprepps the guest and cuts `job`'s layer from it: its disk stops taking writes, and the
    /// guest goes on on `next_disk`, a new overlay whose backing file is written as
    /// `next_backing`.
    pub async fn cut(
        &mut self,
        job: &StageJob<'_>,
        next_disk: &Path,
        next_backing: &str,
    ) -> Result<Cut, StageError> {
        let stage = job.stage.name.to_string();
        let qemu_err = |what| {
            let stage = stage.clone();
            move |source| StageError::Qemu { stage, what, source }
        };
        let size = img::info(&job.disk)
            .await
            .map_err(qemu_err("failed to read the stage's disk"))?
            .virtual_size;
        img::create_overlay_unchecked(next_disk, next_backing, "qcow2", size)
            .await
            .map_err(qemu_err("failed to create the next stage's overlay"))?;
        let seal_started = std::time::Instant::now();
        let Sealed { facts, frozen } = self.seal(job).await?;
        tracing::debug!("cut: sysprepped and frozen in {:?}", seal_started.elapsed());
        let frozen = match frozen {
            Ok(frozen) => frozen,
            Err(why) => return Ok(Cut::Unsupported { facts, why }),
        };
        let link = guest::link(&self.vm, &stage)?;
        let node = format!("layer{}", self.cuts + 1);
        let snapshot = self.snapshot(next_disk, &node).await;
        let thawed = frozen.thaw(link).await;
        tracing::debug!(
            "cut: snapshot taken and guest thawed {:?} after the seal began",
            seal_started.elapsed()
        );
        snapshot.map_err(qemu_err("failed to take a live snapshot"))?;
        self.standby = thawed.map_err(|source| {
            self.communicator_error(&stage, "failed to thaw the guest", source)
        })?;
        self.top_node = node;
        self.cuts += 1;
        self.restore_keys(job).await?;
        Ok(Cut::Done { facts })
    }

    /// `blockdev-add` of the new overlay (its backing is the running top, not its header's
    /// path), then `blockdev-snapshot` so the guest's writes go there.
    async fn snapshot(&self, next_disk: &Path, node: &str) -> Result<(), crate::qemu::QemuError> {
        let qmp = self.vm.machine.qmp();
        let add = json!({
            "driver": "qcow2",
            "node-name": node,
            "discard": "unmap",
            "detect-zeroes": "unmap",
            "cache": { "direct": false, "no-flush": true },
            "file": { "driver": "file", "filename": next_disk.to_string_lossy() },
            "backing": null,
        });
        qmp.execute("blockdev-add", Some(add)).await?;
        qmp.execute("blockdev-snapshot", Some(json!({ "node": self.top_node, "overlay": node })))
            .await?;
        Ok(())
    }

    /// Sysprep moved the build's client key and host keys into memory; the next stage needs
    /// them back. Over SSH the freeze command did that as it thawed (see
    /// [`Link::keys_back_with_thaw`]); otherwise the guest is asked here.
    async fn restore_keys(&self, job: &StageJob<'_>) -> Result<(), StageError> {
        let stage = job.stage.name.to_string();
        let link = super::guest::link(&self.vm, &stage)?;
        if link.keys_back_with_thaw() {
            return Ok(());
        }
        let comm =
            |source| self.communicator_error(&stage, "failed to restore the build's keys", source);
        let (exit, _, stderr) =
            capture(link, &guest::unkeep_script(), FREEZE_WITHIN, true).await.map_err(comm)?;
        if exit.success() {
            Ok(())
        } else {
            Err(comm(CommunicatorError::Command {
                guest: link.describe(),
                command: "restore the build's keys".to_owned(),
                code: exit.code,
                stderr: stderr.trim_end().to_owned(),
            }))
        }
    }

    fn communicator_error(&self, stage: &str, what: &str, source: CommunicatorError) -> StageError {
        super::communicator_error(&self.vm, stage, what, source)
    }

    /// Sysprepps the guest and ends it, after the last stage of a session. The disk is left
    /// exactly as a cut leaves it: filesystems frozen (so consistent, journals flushed), then
    /// QEMU told to quit, which writes out its caches. That skips the guest's whole shutdown; a
    /// guest that cannot freeze is powered off over ACPI instead.
    pub async fn power_off(mut self, job: &StageJob<'_>) -> Result<GuestFacts, StageError> {
        let Sealed { facts, frozen } = self.seal(job).await?;
        job.events.emit(Event::PoweringOff { stage: job.stage.name.to_string() });
        if let Ok(frozen) = frozen {
            let machine = &self.vm.machine;
            let quit = machine.qmp().execute("quit", None).await;
            let exited = machine.wait_exit(POWER_OFF_GRACE).await;
            // The freeze's channel died with QEMU; nothing is left to thaw.
            drop(frozen);
            if quit.is_ok() && exited.is_ok() {
                return Ok(facts);
            }
        }
        self.acpi_power_off(job).await?;
        Ok(facts)
    }

    /// Powers off a guest that a cut found it could not freeze (it is sysprepped already).
    pub async fn power_off_unfrozen(self, job: &StageJob<'_>) -> Result<(), StageError> {
        job.events.emit(Event::PoweringOff { stage: job.stage.name.to_string() });
        self.acpi_power_off(job).await
    }

    async fn acpi_power_off(&self, job: &StageJob<'_>) -> Result<(), StageError> {
        let powered_off = self.vm.machine.power_off(POWER_OFF_GRACE).await;
        powered_off.map(|_| ()).map_err(|source| StageError::Qemu {
            stage: job.stage.name.to_string(),
            what: "failed to power off",
            source,
        })
    }

    /// Stops the guest at once: after a failure, nothing in it matters any more.
    pub async fn kill(self) {
        let _ = self.vm.machine.kill().await;
    }
}

/// Compacts a finished stage's disk (see [`img::compact_overlay`]), drops its emptied journals'
/// blocks ([`img::discard`], ranges from the seal's facts), checks it and reads its
/// virtual size. `in_use`: a running QEMU still
/// holds it read-only (a layer cut from a live guest).
pub async fn finish_disk(
    job: &StageJob<'_>,
    facts: super::GuestFacts,
    in_use: bool,
) -> Result<StageOutput, StageError> {
    let stage = job.stage.name.to_string();
    if let Some(why) = &facts.inventory_unreadable {
        job.events.warn(format!("stage `{stage}`: the layer records no packages or files: {why}"));
    }
    job.events.emit(Event::Committing { stage: stage.clone() });
    let qemu_err = |what| {
        let stage = stage.clone();
        move |source| StageError::Qemu { stage, what, source }
    };
    img::compact_overlay(&job.disk, &job.backing, "qcow2", in_use, CHECK_WITHIN)
        .await
        .map_err(qemu_err("failed to compact the layer's disk"))?;
    // The compacted file is new: no QEMU holds it, even when the guest still runs.
    if let Err(error) = img::discard(&job.disk, &facts.journals, CHECK_WITHIN).await {
        job.events.warn(format!(
            "stage `{stage}`: the emptied filesystem journal stays in the layer ({})",
            crate::events::error_chain(&error)
        ));
    }
    let checked = if in_use {
        img::check_in_use(&job.disk, CHECK_WITHIN).await
    } else {
        img::check(&job.disk, CHECK_WITHIN).await
    };
    checked.map_err(qemu_err("the layer's disk failed `qemu-img check`"))?;
    let info = img::info(&job.disk).await.map_err(qemu_err("failed to read the layer's disk"))?;
    Ok(StageOutput { facts, virtual_bytes: info.virtual_size })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Runs `script` in `sh` with `input` on stdin; its stdout and exit code.
    fn run(script: &str, input: &str) -> (String, Option<i32>) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        (String::from_utf8(output.stdout).unwrap(), output.status.code())
    }

    /// The loop's control flow with a sysprep and a freeze that only say what they do: one
    /// command seals stage after stage, each in the mode it is sent; it ends when its input
    /// does; a failing sysprep ends it with sysprep's status, before `sysprepped`, even though
    /// the loop runs it in a subshell (where `set -e` could be lost).
    #[test]
    fn one_seal_command_serves_stage_after_stage_in_the_mode_it_is_sent() {
        let sysprep =
            "set -eu\necho \"sysprep $mode\"\n[ \"$mode\" != fail ] || false\necho after\n";
        let freeze = "echo frozen\nread -r _ || true\necho thawed\n";
        let seal = seal_loop_of(sysprep, freeze, "echo keys-back\n");
        let script = standby_script("echo clock-set", &seal);
        let (said, code) = run(&script, "clean\n\nkeep-caches\n\n");
        let expected = "clock-set\nstanding-by\n\
            sealing\nsysprep clean\nafter\nsysprepped\nfrozen\nthawed\nkeys-back\nstanding-by\n\
            sealing\nsysprep keep-caches\nafter\nsysprepped\nfrozen\nthawed\nkeys-back\nstanding-by\n";
        assert_eq!(said, expected);
        assert_eq!(code, Some(0));

        let (said, code) = run(&script, "clean\n\nfail\n");
        assert!(said.ends_with("standing-by\nsealing\nsysprep fail\n"), "{said}");
        assert_eq!(code, Some(1));

        // Started when the seal is due: it seals at once.
        let (said, _) = run(&format!("mode=clean\n{seal}"), "\n");
        assert!(said.starts_with("sealing\nsysprep clean\n"), "{said}");
    }

    #[test]
    fn the_real_seal_scripts_parse() {
        let drift = crate::definition::Drift {
            roots: crate::drift::Roots::default(),
            ignore: crate::drift::IgnoreRules::new::<&str>(&[]).unwrap(),
        };
        let sysprep = SysprepFor { user: "debian", drift: &drift, keep_package_caches: false };
        for script in [seal_script(sysprep), standby_script("date", &seal_loop(sysprep))] {
            let parsed = std::process::Command::new("sh").args(["-n", "-c", &script]).status();
            assert!(parsed.unwrap().success(), "sh -n rejects:\n{script}");
        }
    }
}
