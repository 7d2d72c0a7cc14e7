#!/usr/bin/env bash
# Builds strata's local Debian 12 cloud base image from Debian packages only,
# like Debian's own genericcloud image: GPT disk (BIOS boot 14, ESP 15, ext4
# root 1 last so growpart can grow it), GRUB for BIOS and UEFI, serial console,
# cloud-init (NoCloud, ConfigDrive), no user, password, SSH key or host key.
#
# No mounts and no loop devices: mmdebstrap fills a folder, `mkfs.ext4 -d`
# writes it into the root partition of a sparse raw file, `mkfs.vfat --offset`
# and mtools fill the ESP, and GRUB's boot sector and core image are written at
# their offsets and patched the way grub-bios-setup patches them.
#
# Output in ${STRATA_BASE_IMAGE_DIR:-REPO/.cache/base-image}:
#   debian-12-strata-amd64.qcow2  compressed qcow2, 4 GiB virtual
#   SHA256SUMS                    GNU format
#   recipe.sha256                 stamp: hash of this script and scripts/base-image/*
#   debs/                         .deb cache, reused by the next build
#   mmdebstrap.log                the last build's package installation log
# Rebuilt only when the recipe changes (or with --force).
#
# Needs root and the host tools of scripts/install-host-deps.sh.
# Environment: STRATA_BASE_IMAGE_DIR, STRATA_DEBIAN_MIRROR (default
# http://deb.debian.org/debian), STRATA_DEBIAN_SECURITY_MIRROR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
recipe_dir="$here/base-image"
out=${STRATA_BASE_IMAGE_DIR:-$repo/.cache/base-image}
mirror=${STRATA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${STRATA_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
image_name=debian-12-strata-amd64.qcow2
disk_size_mib=4096

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      echo "Usage: $0 [--force]"
      exit 0 ;;
    *) echo "build-base-image: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[%5ss] %s\n' "$SECONDS" "$*"; }
die() { echo "build-base-image: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap chroot, device nodes, file owners); try: sudo $0"
for tool in mmdebstrap sgdisk mkfs.ext4 e2fsck mkfs.vfat mmd mcopy grub-mkimage qemu-img python3 sha256sum; do
  command -v "$tool" >/dev/null || die "'$tool' is missing; run scripts/install-host-deps.sh"
done
for dir in /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi; do
  [ -d "$dir" ] || die "$dir is missing; install grub-pc-bin and grub-efi-amd64-bin (scripts/install-host-deps.sh)"
done

# The recipe: this script and everything in scripts/base-image, by name and content.
recipe=$(
  cd "$here"
  { sha256sum build-base-image.sh; find base-image -type f -print0 | sort -z | xargs -0 sha256sum; } \
    | sha256sum | cut -d' ' -f1
)
mkdir -p "$out" "$out/debs"
if [ "$force" -eq 0 ] && [ -f "$out/$image_name" ] && [ -f "$out/SHA256SUMS" ] \
   && [ "$(cat "$out/recipe.sha256" 2>/dev/null)" = "$recipe" ]; then
  echo "$out/$image_name is up to date (recipe $recipe)"
  exit 0
fi

# One build at a time per output folder.
exec 9>"$out/.lock"
flock -n 9 || die "another build holds $out/.lock; wait for it to finish"

# Work folders of builds that were killed; only this build (it holds the lock) may have one.
find "$out" -maxdepth 1 -name 'work.*' -type d -exec rm -rf --one-file-system {} +
work=$(mktemp -d "$out/work.XXXXXX")
cleanup() { rm -rf --one-file-system "$work"; }
trap cleanup EXIT
rootfs="$work/rootfs"
raw="$work/disk.raw"

mapfile -t packages < <(sed 's/#.*//; s/[[:space:]]//g; /^$/d' "$recipe_dir/packages.txt")
include=$(IFS=,; echo "${packages[*]}")

# --- 1. the root file system ------------------------------------------------
root_uuid=$(cat /proc/sys/kernel/random/uuid)
esp_uuid=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
# /etc/fstab goes in before the kernel, so its initramfs gets fsck for the root.
cat >"$work/fstab" <<EOF
# <file system> <mount point> <type> <options> <dump> <pass>
UUID=$root_uuid / ext4 rw,errors=remount-ro 0 1
EOF
log "mmdebstrap: ${#packages[@]} packages (deb cache: $out/debs)"
# The .debs of the last build are hard-linked in (same file system), apt
# verifies them against the indexes and downloads only what changed.
# shellcheck disable=SC2016 # "$1" in hooks is expanded by mmdebstrap (the root folder)
mmdebstrap \
  --variant=apt \
  --mode=root \
  --format=directory \
  --components=main \
  --include="$include" \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='force-unsafe-io' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --skip=download/empty \
  --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
  --essential-hook="copy-in '$work/fstab' /etc/" \
  --setup-hook="find '$out/debs' -maxdepth 1 -name '*.deb' -exec cp -l -t \"\$1\"/var/cache/apt/archives/ {} +" \
  --customize-hook="find \"\$1\"/var/cache/apt/archives -maxdepth 1 -name '*.deb' -exec cp -l -t '$work/' {} +" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
  bookworm "$rootfs" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security_mirror bookworm-security main" \
  >"$work/mmdebstrap.log" 2>&1 || { tail -n 40 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }
cp "$work/mmdebstrap.log" "$out/mmdebstrap.log"
# The cache keeps exactly the .debs of this build.
find "$out/debs" -maxdepth 1 -name '*.deb' -delete
find "$work" -maxdepth 1 -name '*.deb' -exec mv -t "$out/debs/" {} +
log "root file system: $(du -sh --one-file-system "$rootfs" | cut -f1), $(chroot "$rootfs" dpkg-query -f '.\n' -W | wc -l) packages"

# --- 2. configure it as a cloud image ----------------------------------------

kernel=$(readlink "$rootfs/vmlinuz" || true)
initrd=$(readlink "$rootfs/initrd.img" || true)
{ [ -n "$kernel" ] && [ -f "$rootfs/$kernel" ]; } || die "no /vmlinuz symlink in the root file system (linux-update-symlinks did not run)"
{ [ -n "$initrd" ] && [ -f "$rootfs/$initrd" ]; } || die "no /initrd.img symlink in the root file system (no initramfs was built)"

echo localhost >"$rootfs/etc/hostname"
cat >"$rootfs/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# Without a LANG, cloud-init's locale module generates en_US.UTF-8 and fails.
echo 'LANG=C.UTF-8' >"$rootfs/etc/default/locale"
cat >"$rootfs/etc/network/interfaces" <<'EOF'
# cloud-init writes the interfaces it configures to interfaces.d/50-cloud-init
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
EOF
mkdir -p "$rootfs/etc/network/interfaces.d"
# The datasources a local build uses; Debian's debconf default lists them all.
cat >"$rootfs/etc/cloud/cloud.cfg.d/90_dpkg.cfg" <<'EOF'
# strata base image: local seeds (vfat/iso labelled CIDATA or config-2) only
datasource_list: [ NoCloud, ConfigDrive, None ]
EOF
cat >"$rootfs/etc/default/grub" <<'EOF'
# The image boots with a static /boot/grub/grub.cfg (see scripts/build-base-image.sh);
# kept for tools that read it.
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF
# The kernel and initrd are found through /vmlinuz and /initrd.img, which the
# kernel packages keep current, so kernel upgrades need no update-grub.
mkdir -p "$rootfs/boot/grub"
cat >"$rootfs/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
menuentry 'Debian GNU/Linux 12 (strata base)' {
	search --no-floppy --fs-uuid --set=root $root_uuid
	echo 'Loading Linux ...'
	linux /vmlinuz root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200
	initrd /initrd.img
}
menuentry 'Debian GNU/Linux 12 (strata base, previous kernel)' {
	search --no-floppy --fs-uuid --set=root $root_uuid
	linux /vmlinuz.old root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200
	initrd /initrd.img.old
}
EOF
# A first boot must be a first boot: no identity, no secrets, no caches.
# An EMPTY machine-id: systemd makes a new one and does not count it as a
# "first boot". A missing or "uninitialized" one does (ConditionFirstBoot), and
# systemd-firstboot then waits for a key press on the console and the boot
# stalls; `cloud-init clean --machine-id` (22.4) deletes the file, so the
# wizard is masked too: a cloud image has no one at its console.
: >"$rootfs/etc/machine-id"
ln -sfn /dev/null "$rootfs/etc/systemd/system/systemd-firstboot.service"
rm -f "$rootfs/var/lib/dbus/machine-id"
rm -f "$rootfs"/etc/ssh/ssh_host_*
rm -f "$rootfs/etc/resolv.conf"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
mkdir -p "$rootfs/var/lib/apt/lists/partial"
rm -rf "$rootfs"/var/lib/cloud/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs/var/log" -type f -exec truncate -s 0 {} +
rm -f "$rootfs/etc/dpkg/dpkg.cfg.d/99mmdebstrap"
# Keep the documentation exclusions for packages installed later, like the build did.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01_strata-nodoc" <<'EOF'
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
rm -f "$rootfs/etc/apt/apt.conf.d/99mmdebstrap"
# The apt sources mmdebstrap wrote are the real ones; keep them.
[ -s "$rootfs/etc/apt/sources.list" ] || die "mmdebstrap wrote no /etc/apt/sources.list"

# --- 3. the disk: GPT, partitions filled in place ----------------------------
sector=512
bios_start=2048 bios_end=8191        # 14: BIOS boot, 3 MiB
esp_start=8192 esp_end=262143        # 15: EFI system partition, 124 MiB
root_start=262144                    #  1: root, to the end of the disk
truncate -s "${disk_size_mib}M" "$raw"
sgdisk --clear \
  --new=14:$bios_start:$bios_end --typecode=14:EF02 --change-name=14:bios \
  --new=15:$esp_start:$esp_end --typecode=15:EF00 --change-name=15:esp \
  --new=1:$root_start:0 --typecode=1:8300 --change-name=1:root \
  "$raw" >/dev/null
root_end=$(sgdisk --info=1 "$raw" | sed -n 's/^Last sector: \([0-9]*\).*/\1/p')
[ -n "$root_end" ] || die "could not read the root partition's end from sgdisk"
root_bytes=$(( (root_end - root_start + 1) * sector ))

log "mkfs.ext4 root ($((root_bytes / 1048576)) MiB) from the folder"
mkfs.ext4 -q -F -L root -U "$root_uuid" -d "$rootfs" \
  -E offset=$((root_start * sector)) "$raw" "$((root_bytes / 1024))k"
e2fsck -fn "$raw?offset=$((root_start * sector))" >"$work/e2fsck.log" 2>&1 \
  || { cat "$work/e2fsck.log" >&2; die "e2fsck found errors in the root file system"; }

# GRUB: the same grub.cfg on the root file system for both firmwares; the
# core images only find the root file system by UUID and read it.
cat >"$work/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $root_uuid
set prefix=(\$root)/boot/grub
EOF
common_modules="part_gpt ext2 search search_fs_uuid normal configfile linux echo serial terminal test boot"
# shellcheck disable=SC2086
grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -o "$work/core.img" -c "$work/early.cfg" \
  -p /boot/grub biosdisk $common_modules
# shellcheck disable=SC2086
grub-mkimage -O x86_64-efi -d /usr/lib/grub/x86_64-efi -o "$work/BOOTX64.EFI" -c "$work/early.cfg" \
  -p /boot/grub fat efi_gop all_video $common_modules

log "ESP and GRUB boot code"
mkfs.vfat -F 32 -s 1 -n EFI -i "$esp_uuid" --offset=$esp_start "$raw" \
  $(( (esp_end - esp_start + 1) * sector / 1024 )) >"$work/mkfs.vfat.log" 2>&1 \
  || { cat "$work/mkfs.vfat.log" >&2; die "mkfs.vfat failed for the ESP"; }
esp="$raw@@$((esp_start * sector))"
mmd -i "$esp" ::/EFI ::/EFI/BOOT
mcopy -i "$esp" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

# BIOS: boot.img in the MBR (keeping the protective partition table), core.img
# at the start of the BIOS boot partition, patched like grub-bios-setup does.
python3 - "$raw" /usr/lib/grub/i386-pc/boot.img "$work/core.img" "$bios_start" "$bios_end" <<'PY'
import struct, sys
raw, boot_path, core_path, start, end = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
boot = bytearray(open(boot_path, "rb").read())
core = bytearray(open(core_path, "rb").read())
assert len(boot) == 512, "boot.img must be one sector"
if len(core) % 512:
    core += bytes(512 - len(core) % 512)
nsec = len(core) // 512
if nsec > end - start + 1:
    sys.exit(f"core.img ({nsec} sectors) does not fit the BIOS boot partition")
# diskboot's blocklist (last 12 bytes of core's first sector): start u64, len u16, segment u16
bl = 512 - 12
_, length, segment = struct.unpack_from("<QHH", core, bl)
assert length == nsec - 1, f"unexpected blocklist length {length} for {nsec} sectors"
assert segment == 0x820, f"unexpected blocklist segment {segment:#x}"
struct.pack_into("<QHH", core, bl, start + 1, length, segment)
with open(raw, "r+b") as f:
    mbr = bytearray(f.read(512))
    # keep the disk's BPB area and partition table + signature
    boot[0x03:0x5a] = mbr[0x03:0x5a]
    boot[0x1b8:0x200] = mbr[0x1b8:0x200]
    struct.pack_into("<Q", boot, 0x5c, start)  # kernel_sector: where core.img starts
    boot[0x64] = 0xFF                          # boot_drive: use the one the BIOS passed
    boot[0x66:0x68] = b"\x90\x90"              # hard disk: skip the buggy-BIOS drive check
    f.seek(0)
    f.write(boot)
    f.seek(start * 512)
    f.write(core)
PY
sgdisk --verify "$raw" >"$work/sgdisk.log" 2>&1 \
  || { cat "$work/sgdisk.log" >&2; die "the partition table does not verify"; }
grep -q 'No problems found' "$work/sgdisk.log" || { cat "$work/sgdisk.log" >&2; die "sgdisk --verify reported problems"; }

# --- 4. the compressed qcow2, its checksum and the stamp ---------------------
log "qemu-img convert (compressed qcow2)"
qemu-img convert -f raw -O qcow2 -c -o compression_type=zlib "$raw" "$work/$image_name"
qemu-img check -q "$work/$image_name"
(cd "$work" && sha256sum "$image_name" >SHA256SUMS)
mv -f "$work/$image_name" "$out/$image_name"
mv -f "$work/SHA256SUMS" "$out/SHA256SUMS"
sync "$out/$image_name" "$out/SHA256SUMS"
echo "$recipe" >"$out/recipe.sha256.tmp" && mv -f "$out/recipe.sha256.tmp" "$out/recipe.sha256"
log "done: $out/$image_name ($(du -h --apparent-size "$out/$image_name" | cut -f1), virtual ${disk_size_mib} MiB)"
cat "$out/SHA256SUMS"
