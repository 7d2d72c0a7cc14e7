//! What strata itself does inside the guest: collect facts for layer.json, sysprep so the
//! layer is a clean cloud template, and reboot with a reconnect.

use std::time::{Duration, Instant};

use super::Link;
use super::{StageError, StageJob, Vm, communicator_error, race_death};
use crate::communicator::{Communicator, CommunicatorError};
use crate::definition::Drift;

/// What the layer records about the guest it was cut from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestFacts {
    /// The packages and the file manifest (`[drift]`), from drift's collection script.
    pub inventory: crate::drift::Inventory,
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    pub guest_agent: bool,
    /// Where the ext4 journals on the build disk lie, in bytes, but for each one's first block
    /// (see [`JOURNALS`]).
    pub journals: Vec<crate::qemu::img::ByteRange>,
    /// Why the inventory could not be read, when it could not (the layer is still good, only
    /// its record is short): [`super::finish_disk`] warns with it.
    pub inventory_unreadable: Option<String>,
}

/// Makes the layer a valid cloud template again (the README's "clean cloud template"): cloud-init forgets this
/// instance, machine-id is empty (never missing), the build's host keys and client key leave
/// the disk, the journal and per-instance state are dropped, and so are package managers'
/// caches unless the stage keeps them ([`PACKAGE_CACHES`]). The freeze that always follows
/// (`session`) syncs and trims, so sysprep does neither.
///
/// The keys are moved to [`KEPT`], in /run (memory): a live cut puts them back with
/// [`unkeep_script`] for the stages still to run in this boot, which saves uploading them
/// again. The folder stays (empty) for the next sysprep.
///
/// Every process costs 50-100 ms under emulation, so the script uses globs and builtins where a
/// command would do, and runs journald's switch and [`FACTS`] beside the rest (the guest
/// has more than one CPU).
const SYSPREP: &str = r#"set -eu
# journald is asked to log to /run from now on and to close its files in /var, which then all go
# below: the active files too, whose preallocated blocks hold whatever this stage wrote there
# before (about 13 MiB of every layer), and which are the build's log, not the image's. The
# image's next boot logs to /var again. A journald without --relinquish-var (systemd < 243) is
# rotated instead, so that everything logged so far is in archived files, which go below.
# (`journalctl --vacuum-*` cannot: it looks for the journal under /etc/machine-id, emptied below.)
journal_off() {
  journalctl --relinquish-var >/dev/null 2>&1 && return 0
  journalctl --rotate >/dev/null 2>&1 || true
  return 1
}
journal_off &
rotating=$!
dirty=""
for f in /var/lib/cloud/* /var/log/cloud-init*.log*; do
  if [ -e "$f" ]; then dirty=yes; break; fi
done
custom=""
for f in /etc/cloud/clean.d/*; do
  if [ -f "$f" ] && [ -x "$f" ]; then custom=yes; fi
done
# `cloud-init clean --logs --seed` when nothing makes it more than removing files (no clean.d
# scripts, the default cloud_dir): cloud-init's Python start alone costs 2-3 s under emulation.
gone="/tmp/strata-step-* /var/lib/systemd/random-seed /var/lib/dhcp/*.leases"
if [ -n "$dirty" ]; then
  if [ -n "$custom" ] || grep -hs '^[[:space:]]*cloud_dir:' /etc/cloud/cloud.cfg /etc/cloud/cloud.cfg.d/*.cfg |
      grep -qv 'cloud_dir:[[:space:]]*/var/lib/cloud/\?[[:space:]]*$'; then
    cloud-init clean --logs --seed
  else
    gone="$gone /var/lib/cloud/* /var/log/cloud-init.log* /var/log/cloud-init-output.log*"
  fi
fi
# Empty, not "uninitialized": systemd then makes a new id at the next boot without first-boot
# semantics, whose systemd-firstboot prompt would hang a Debian guest on its console.
: > /etc/machine-id
[ -L /var/lib/dbus/machine-id ] || gone="$gone /var/lib/dbus/machine-id"
kept=KEPT
[ -d "$kept" ] || mkdir -m 700 "$kept"
keys=""
for key in /etc/ssh/ssh_host_*; do [ ! -e "$key" ] || keys="$keys $key"; done
home=""
while IFS=: read -r name _ _ _ _ dir _; do
  if [ "$name" = "$STRATA_USER" ]; then home=$dir; break; fi
done < /etc/passwd
if [ -z "$home" ]; then
  home=$(getent passwd "$STRATA_USER" || true)
  home=${home%:*}
  home=${home##*:}
fi
if [ -n "$home" ] && [ -f "$home/.ssh/authorized_keys" ]; then
  printf '%s\n' "$home/.ssh/authorized_keys" > "$kept/authorized_keys.path"
  keys="$keys $home/.ssh/authorized_keys"
else
  rm -f "$kept/authorized_keys.path"
fi
[ -z "$keys" ] || mv -f $keys "$kept/"
@PACKAGE_CACHES@journal="/var/log/journal/*/*@*.journal /var/log/journal/*/*@*.journal~"
if wait "$rotating"; then
  journal="/var/log/journal/*/*.journal /var/log/journal/*/*.journal~"
fi
rm -rf $gone $journal
wait
"#;

/// Package managers' indexes and downloads, added to what sysprep removes unless the stage
/// keeps them (`keep_package_caches`): apt's lists, `*.bin` caches and downloaded `.deb`s (what
/// `apt-get clean` and `rm -rf /var/lib/apt/lists/*` remove), dnf's and yum's cache folders
/// (what `dnf clean all` / `yum clean all` remove). Every stage that installs packages runs its
/// own update first, so they would only make the layer bigger: on Debian they are about 90% of
/// a package-installing stage's layer, and every export carries them. apt's `lock` files and
/// `partial` folders stay, as apt expects them. Globs and builtins rather than the tools
/// themselves: no process (dnf is Python, seconds under emulation), and a missing tool or
/// folder costs nothing. An unmatched glob stays literal and is skipped by the `-e` test.
const PACKAGE_CACHES: &str = r#"for f in /var/lib/apt/lists/* /var/lib/apt/lists/partial/* /var/cache/apt/*.bin \
    /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/* /var/cache/dnf/* \
    /var/cache/yum/*; do
  case $f in
    */lock | */partial) ;;
    *) [ ! -e "$f" ] || gone="$gone $f" ;;
  esac
done
"#;

/// Where sysprep keeps the build's keys off the disk: tmpfs, gone at power-off.
const KEPT: &str = "/run/strata-sysprep";

/// Puts back what sysprep kept in memory (after a live cut, so not into the cut layer).
const UNKEEP: &str = r#"kept=KEPT
keys=""
for key in "$kept"/ssh_host_*; do [ ! -e "$key" ] || keys="$keys $key"; done
[ -z "$keys" ] || mv -f $keys /etc/ssh/
if [ -f "$kept/authorized_keys" ] && [ -f "$kept/authorized_keys.path" ]; then
  read -r to < "$kept/authorized_keys.path"
  mv -f "$kept/authorized_keys" "$to"
fi
"#;

/// Facts for layer.json, printed as `kind value` lines while sysprep runs (it waits for them). In
/// a background subshell, so that os-release's variables stay out of sysprep's way, and never
/// fatal. (The packages come with drift's inventory, which runs before, alone on stdout.)
const FACTS: &str = r#"( . /etc/os-release 2>/dev/null && echo "os_id $ID" && echo "os_version ${VERSION_ID:-}"
if command -v qemu-ga >/dev/null || [ -e /usr/sbin/qemu-ga ]; then echo "guest_agent yes"; fi
@JOURNALS@) &
"#;

/// Where each ext3/ext4 journal on the build disk (`vda`) lies: for each such mount, a
/// `journal-begin PARTITION START_SECTOR` line, debugfs's report of the block size and of the
/// journal inode's extents, and `journal-end`. The freeze that ends every stage empties the
/// journals (`jbd2_journal_flush`: all checkpointed, the journal's superblock marked empty), so
/// what their other blocks hold is never read again: at the next mount, an empty journal is not
/// replayed. The host drops those blocks from the layer ([`crate::qemu::img::discard`]); they
/// are most of what a first stage writes under a package install (17 MiB of debian-12-web's
/// base layer). A guest without debugfs, or whose root is elsewhere, reports nothing.
const JOURNALS: &str = r#"if command -v debugfs >/dev/null; then
  while read -r dev _ type _; do
    case $type in ext3|ext4) ;; *) continue ;; esac
    part=${dev#/dev/}
    case $part in
      vda) start=0 ;;
      vda[0-9]*) read -r start < "/sys/class/block/$part/start" || continue ;;
      *) continue ;;
    esac
    echo "journal-begin $part $start"
    printf 'stats -h\nstat <8>\n' | debugfs -f - "$dev" 2>/dev/null
    echo "journal-end"
  done < /proc/mounts
fi
"#;

pub fn link<'a>(vm: &'a Vm, stage: &str) -> Result<&'a Link, StageError> {
    vm.link.as_ref().ok_or_else(|| StageError::NotConnected { stage: stage.to_owned() })
}

/// Reads the inventory and the facts from what the seal printed: drift's inventory (an
/// unreadable one is left empty, with why in `inventory_unreadable`),
/// then the lines [`FACTS`] printed; other lines are ignored.
pub(super) fn parse_facts(stdout: &str, drift: &Drift) -> GuestFacts {
    let mut facts = GuestFacts::default();
    match crate::drift::parse_inventory(stdout.as_bytes(), &drift.roots) {
        Ok(inventory) => facts.inventory = inventory,
        Err(error) => facts.inventory_unreadable = Some(crate::events::error_chain(&error)),
    }
    for line in stdout.lines() {
        let (kind, value) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "os_id" => facts.os_id = Some(value.to_owned()),
            "os_version" if !value.is_empty() => facts.os_version = Some(value.to_owned()),
            "guest_agent" => facts.guest_agent = true,
            _ => {}
        }
    }
    facts.journals = parse_journals(stdout);
    facts
}

/// The largest journal ext4 makes is 1 GiB; a report of more is not a journal's.
const MAX_JOURNAL_BYTES: u64 = 1 << 30;

/// The byte ranges of the build disk that [`JOURNALS`] reported, without each journal's first
/// block (its superblock, which says it is empty). A journal whose report cannot be read, or
/// says more than a journal can be, gives nothing: its blocks then stay in the layer.
fn parse_journals(stdout: &str) -> Vec<crate::qemu::img::ByteRange> {
    let mut ranges = Vec::new();
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        let Some(header) = line.strip_prefix("journal-begin ") else { continue };
        let start_sector = header.split_whitespace().nth(1).and_then(|s| s.parse::<u64>().ok());
        let report: Vec<&str> = lines.by_ref().take_while(|line| *line != "journal-end").collect();
        if let Some(journal) = start_sector.and_then(|start| journal_ranges(start, &report)) {
            ranges.extend(journal);
        }
    }
    ranges
}

/// One journal's ranges from debugfs's `stats -h` (its `Block size:`) and `stat <8>` (the
/// `EXTENTS:` after it: `(0-16383):1081344-1097727, (16384):1097728`; `(ETB0):…` are the
/// extent tree's own blocks, not the journal's).
fn journal_ranges(start_sector: u64, report: &[&str]) -> Option<Vec<crate::qemu::img::ByteRange>> {
    let block_size = report
        .iter()
        .find_map(|line| line.strip_prefix("Block size:"))
        .and_then(|size| size.trim().parse::<u64>().ok())
        .filter(|size| size.is_power_of_two() && (1024..=65536).contains(size))?;
    let extents_at = report.iter().position(|line| line.trim() == "EXTENTS:")?;
    let partition = start_sector.checked_mul(512)?;
    let mut ranges = Vec::new();
    let mut total = 0u64;
    for token in report[extents_at + 1..].iter().flat_map(|line| line.split(',')) {
        let Some((logical, physical)) = token.trim().split_once(':') else { continue };
        let logical = logical.trim_start_matches('(').trim_end_matches(')');
        if logical.starts_with("ETB") {
            continue;
        }
        let first_logical = logical.split('-').next()?.parse::<u64>().ok()?;
        let (first, last) = match physical.split_once('-') {
            Some((first, last)) => (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?),
            None => {
                let only = physical.parse::<u64>().ok()?;
                (only, only)
            }
        };
        // The journal's superblock (its block 0) stays: it is what says the journal is empty.
        let first = if first_logical == 0 { first.checked_add(1)? } else { first };
        if first > last {
            continue;
        }
        let blocks = last - first + 1;
        let range = crate::qemu::img::ByteRange {
            offset: partition.checked_add(first.checked_mul(block_size)?)?,
            len: blocks.checked_mul(block_size)?,
        };
        total = total.checked_add(range.len)?;
        ranges.push(range);
    }
    (total <= MAX_JOURNAL_BYTES && !ranges.is_empty()).then_some(ranges)
}

/// [`UNKEEP`] with [`KEPT`] filled in.
pub(super) fn unkeep_script() -> String {
    UNKEEP.replace("KEPT", KEPT)
}

/// What a stage's sysprep depends on: the build user, what the layer's manifest covers, and
/// whether package caches stay.
#[derive(Debug, Clone, Copy)]
pub struct SysprepFor<'a> {
    pub user: &'a str,
    pub drift: &'a Drift,
    pub keep_package_caches: bool,
}

impl<'a> SysprepFor<'a> {
    #[must_use]
    pub fn of(job: &StageJob<'a>) -> SysprepFor<'a> {
        SysprepFor {
            user: &job.definition.communicator.user,
            drift: &job.definition.drift,
            keep_package_caches: job.stage.keep_package_caches,
        }
    }
}

/// The inventory (alone, so its NUL-separated output is whole; an `echo` ends its last line),
/// facts, then sysprep, as one script to run as root, for the build user. Exits non-zero
/// when sysprep failed. (The user is set in the script, not through `env`: one process less.)
/// The inventory runs before sysprep: what sysprep changes under the roots (machine-id, host
/// keys) is in drift's default ignore list.
pub(super) fn sysprep_script(sysprep: SysprepFor<'_>) -> String {
    format!("mode={}\n{}", seal_mode(sysprep), sysprep_body(sysprep))
}

/// What a seal is told for a stage (`$mode` in [`sysprep_body`]): whether its package caches
/// stay. A seal command that stands by across stages reads it as its go-ahead, so one command
/// serves stages that differ in it.
pub(super) fn seal_mode(sysprep: SysprepFor<'_>) -> &'static str {
    if sysprep.keep_package_caches { KEEP_CACHES_MODE } else { "clean" }
}

const KEEP_CACHES_MODE: &str = "keep-caches";

/// [`sysprep_script`] without the line that sets `$mode`: what the build user and `[drift]`
/// decide, the same for every stage of a build.
pub(super) fn sysprep_body(sysprep: SysprepFor<'_>) -> String {
    let user = crate::process::shell_quote(sysprep.user);
    let inventory = sysprep.drift.collect_script();
    let caches = format!("if [ \"$mode\" != {KEEP_CACHES_MODE} ]; then\n{PACKAGE_CACHES}fi\n");
    let script = SYSPREP.replace("KEPT", KEPT).replace("@PACKAGE_CACHES@", &caches);
    let facts = FACTS.replace("@JOURNALS@", JOURNALS);
    format!("STRATA_USER={user}\n{inventory}echo\n{facts}{script}")
}

/// Collects the guest's facts and sysprepps it, in one command (each costs a shell start and a
/// round trip, which add up under emulation).
pub async fn sysprep(
    link: &Link,
    sysprep: SysprepFor<'_>,
) -> Result<GuestFacts, CommunicatorError> {
    let script = sysprep_script(sysprep);
    let (exit, stdout, stderr) =
        crate::communicator::capture(link, &script, Duration::from_secs(600), true).await?;
    if exit.success() {
        Ok(parse_facts(&stdout, sysprep.drift))
    } else {
        Err(CommunicatorError::Command {
            guest: link.describe(),
            command: "sysprep".to_owned(),
            code: exit.code,
            stderr: stderr.trim_end().to_owned(),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn drift() -> Drift {
        Drift {
            roots: crate::drift::Roots::default(),
            ignore: crate::drift::IgnoreRules::new::<&str>(&[]).unwrap(),
        }
    }

    /// What [`JOURNALS`] prints for one mount, with `report` as debugfs's output.
    fn journal_report(part: &str, start: u64, report: &str) -> String {
        format!("os_id debian\njournal-begin {part} {start}\n{report}journal-end\nos_version 12\n")
    }

    #[test]
    fn a_journals_blocks_but_its_superblock_are_read_from_debugfs() {
        let report = "debugfs: stats -h\nBlock size:               4096\nJournal inode:            8\n\
                      debugfs: stat <8>\nInode: 8   Type: regular\nEXTENTS:\n\
                      (0-8191):131072-139263, (ETB0):5000, (8192):140000\n(8193-8199):140001-140007\n";
        let stdout = journal_report("vda1", 2048, report);
        let ranges = parse_journals(&stdout);
        let at = |block: u64| (1 << 20) + block * 4096;
        assert_eq!(
            ranges,
            [
                crate::qemu::img::ByteRange { offset: at(131_073), len: 8191 * 4096 },
                crate::qemu::img::ByteRange { offset: at(140_000), len: 4096 },
                crate::qemu::img::ByteRange { offset: at(140_001), len: 7 * 4096 },
            ]
        );
        assert_eq!(parse_facts(&stdout, &drift()).journals, ranges);
    }

    #[test]
    fn an_unreadable_or_oversized_journal_report_gives_nothing() {
        let no_size = "EXTENTS:\n(0-8191):131072-139263\n";
        let no_extents = "Block size: 4096\n";
        let too_big = "Block size: 4096\nEXTENTS:\n(0-999999):1-1000000\n";
        let garbage = "Block size: 4096\nEXTENTS:\n(x-y):a-b\n";
        let overflow =
            "Block size: 4096\nEXTENTS:\n(1-2):18446744073709551614-18446744073709551615\n";
        for report in [no_size, no_extents, too_big, garbage, overflow] {
            assert!(parse_journals(&journal_report("vda1", 2048, report)).is_empty(), "{report}");
        }
        assert!(parse_journals("journal-begin vda1\njournal-end\n").is_empty());
    }

    /// The guest's own command on a real ext4 image (the host's debugfs), read by the parser.
    #[test]
    fn debugfs_output_on_a_real_filesystem_parses_to_its_journal() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image).unwrap().set_len(256 << 20).unwrap();
        crate::process::require_tool("mkfs.ext4", "apt-get install e2fsprogs");
        crate::process::require_tool("debugfs", "apt-get install e2fsprogs");
        let made = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&image)
            .status()
            .unwrap();
        assert!(made.success(), "mkfs.ext4 failed on {}", image.display());
        let script = format!(
            "printf 'stats -h\\nstat <8>\\n' | debugfs -f - {} 2>/dev/null",
            image.display()
        );
        let output = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
        let report = String::from_utf8(output.stdout).unwrap();
        let ranges = parse_journals(&journal_report("vda", 0, &report));
        assert!(!ranges.is_empty(), "{report}");
        let total: u64 = ranges.iter().map(|range| range.len).sum();
        // The journal inode's size, from the same report: all of it but its first block.
        let size: u64 = report
            .split_whitespace()
            .skip_while(|word| *word != "Size:")
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(total + 4096, size, "{report}");
        assert!(ranges.iter().all(|range| range.offset % 4096 == 0 && range.offset > 0));
    }

    #[test]
    fn sysprep_removes_package_caches_unless_the_stage_keeps_them() {
        let drift = drift();
        let default = SysprepFor { user: "debian", drift: &drift, keep_package_caches: false };
        let script = sysprep_script(default);
        assert!(script.starts_with("mode=clean\n"), "{script}");
        assert!(script.contains(PACKAGE_CACHES), "{script}");
        assert!(!script.contains("@PACKAGE_CACHES@"));
        let kept = sysprep_script(SysprepFor { keep_package_caches: true, ..default });
        assert!(kept.starts_with("mode=keep-caches\n"), "{kept}");
        // The rest of sysprep is the same either way: the mode alone decides.
        assert_eq!(kept.split_once('\n').unwrap().1, script.split_once('\n').unwrap().1);
        for script in [&script, &kept] {
            let parsed = std::process::Command::new("sh").args(["-n", "-c", script]).status();
            assert!(parsed.unwrap().success(), "sh -n rejects:\n{script}");
        }
    }

    /// The caches' fragment as sysprep runs it, on a fake root, in either mode: only
    /// `keep-caches` leaves the `.deb` there.
    #[test]
    fn the_mode_decides_whether_package_caches_go() {
        let drift = drift();
        let sysprep = SysprepFor { user: "debian", drift: &drift, keep_package_caches: false };
        let body = sysprep_body(sysprep);
        let start = body.find("if [ \"$mode\"").unwrap();
        let end = start + body[start..].find("\nfi\n").unwrap() + "\nfi\n".len();
        for (mode, kept) in [("clean", false), ("keep-caches", true)] {
            let root = tempfile::tempdir().unwrap();
            let deb = root.path().join("var/cache/apt/archives/x.deb");
            std::fs::create_dir_all(deb.parent().unwrap()).unwrap();
            std::fs::write(&deb, "x").unwrap();
            let fragment =
                body[start..end].replace("/var/", &format!("{}/var/", root.path().display()));
            let script = format!("set -eu\nmode={mode}\ngone=\"\"\n{fragment}rm -rf $gone\n");
            let status = std::process::Command::new("sh").arg("-c").arg(&script).status().unwrap();
            assert!(status.success(), "{script}");
            assert_eq!(deb.exists(), kept, "mode {mode}");
        }
    }

    /// The fragment on a fake root: lists, `.bin` caches, `.deb`s and dnf's cache go; apt's
    /// locks and `partial` folders stay; an absent package manager is no error.
    #[test]
    fn the_package_cache_fragment_keeps_what_apt_expects() {
        let root = tempfile::tempdir().unwrap();
        let root_text = root.path().to_str().unwrap();
        let files = [
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
            "var/lib/apt/lists/lock",
            "var/lib/apt/lists/partial/half",
            "var/cache/apt/pkgcache.bin",
            "var/cache/apt/srcpkgcache.bin",
            "var/cache/apt/archives/nginx_1.22.1-9_amd64.deb",
            "var/cache/apt/archives/lock",
            "var/cache/apt/archives/partial/x.deb",
            "var/cache/dnf/fedora-1234/repodata/primary.xml.zst",
        ];
        for file in files {
            let path = root.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        let fragment = PACKAGE_CACHES.replace("/var/", &format!("{root_text}/var/"));
        let script = format!("set -eu\ngone=\"\"\n{fragment}rm -rf $gone\n");
        let status = std::process::Command::new("sh").arg("-c").arg(&script).status().unwrap();
        assert!(status.success());
        let left: Vec<&str> =
            files.into_iter().filter(|file| root.path().join(file).exists()).collect();
        assert_eq!(left, ["var/lib/apt/lists/lock", "var/cache/apt/archives/lock"]);
        for folder in ["var/lib/apt/lists/partial", "var/cache/apt/archives/partial"] {
            assert!(root.path().join(folder).is_dir(), "{folder} is gone");
        }
        assert!(root.path().join("var/cache/dnf").is_dir());

        // No package manager at all: nothing to remove, and no error under `set -eu`.
        let empty = tempfile::tempdir().unwrap();
        let fragment = PACKAGE_CACHES.replace("/var/", &format!("{}/var/", empty.path().display()));
        let script = format!("set -eu\ngone=\"\"\n{fragment}[ -z \"$gone\" ]\n");
        let status = std::process::Command::new("sh").arg("-c").arg(&script).status().unwrap();
        assert!(status.success(), "an absent package manager added something to remove");
    }
}
