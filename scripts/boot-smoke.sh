#!/usr/bin/env bash
# Proves a cloud image boots by firmware (SeaBIOS, or OVMF with --uefi) under
# TCG with a NoCloud seed, to an SSH login with the seeded key; then waits for
# cloud-init, prints the timings and the guest's systemd-analyze line, and
# powers the guest off. Exits non-zero with the console's tail on failure.
#
# Usage: scripts/boot-smoke.sh [--uefi] [--keep] [IMAGE]
#   IMAGE   default: ${STRATA_BASE_IMAGE_DIR:-REPO/.cache/base-image}/debian-12-strata-amd64.qcow2
#   --uefi  boot with OVMF (a fresh copy of OVMF_VARS per boot)
#   --keep  keep the work folder (console log, key, overlay) and print its path
# Environment: SMOKE_TIMEOUT (seconds, default 300), SMOKE_ACCEL (default tcg,thread=multi).
# The image itself is never written: the guest runs on a temporary overlay.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
uefi=0 keep=0 image=
for arg in "$@"; do
  case "$arg" in
    --uefi) uefi=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "boot-smoke: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    *) image=$arg ;;
  esac
done
image=${image:-${STRATA_BASE_IMAGE_DIR:-$repo/.cache/base-image}/debian-12-strata-amd64.qcow2}
timeout_s=${SMOKE_TIMEOUT:-300}
accel=${SMOKE_ACCEL:-tcg,thread=multi}

die() { echo "boot-smoke: $*" >&2; exit 1; }
[ -f "$image" ] || die "no image at $image; build it with scripts/build-base-image.sh"
for tool in qemu-system-x86_64 qemu-img ssh ssh-keygen mkfs.vfat mcopy python3; do
  command -v "$tool" >/dev/null || die "'$tool' is missing; run scripts/install-host-deps.sh"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-smoke.XXXXXX")
chmod 700 "$work"
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [ "$keep" -eq 1 ]; then echo "boot-smoke: work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() {
  echo "boot-smoke: FAILED: $*" >&2
  if [ -f "$work/console.log" ]; then
    echo "---- last 40 lines of the serial console ----" >&2
    tail -n 40 "$work/console.log" | tr -d '\r' >&2
  fi
  if [ -s "$work/qemu.err" ]; then
    echo "---- QEMU stderr ----" >&2
    tail -n 20 "$work/qemu.err" >&2
  fi
  exit 1
}

# A free port on 127.0.0.1 for the SSH forward.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

ssh-keygen -q -t ed25519 -N '' -C strata-smoke -f "$work/key"
cat >"$work/user-data" <<EOF
#cloud-config
users:
  - name: smoke
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
    ssh_authorized_keys:
      - $(cat "$work/key.pub")
ssh_pwauth: false
manage_etc_hosts: true
ssh_genkeytypes: [ed25519]
ssh_quiet_keygen: true
EOF
cat >"$work/meta-data" <<EOF
instance-id: smoke-$(date +%s)-$$
local-hostname: smoke
EOF
mkfs.vfat -n CIDATA -C "$work/seed.img" 1024 >/dev/null
mcopy -i "$work/seed.img" "$work/user-data" "$work/meta-data" ::/

qemu-img create -q -f qcow2 -F qcow2 -b "$(realpath "$image")" "$work/overlay.qcow2"

firmware=()
if [ "$uefi" -eq 1 ]; then
  code='' vars=''
  for pair in /usr/share/OVMF/OVMF_CODE_4M.fd:/usr/share/OVMF/OVMF_VARS_4M.fd \
              /usr/share/OVMF/OVMF_CODE.fd:/usr/share/OVMF/OVMF_VARS.fd \
              /usr/share/edk2/ovmf/OVMF_CODE.fd:/usr/share/edk2/ovmf/OVMF_VARS.fd; do
    if [ -f "${pair%%:*}" ] && [ -f "${pair##*:}" ]; then code=${pair%%:*} vars=${pair##*:}; break; fi
  done
  [ -n "$code" ] || die "no OVMF firmware found; install the ovmf package"
  cp "$vars" "$work/OVMF_VARS.fd"
  firmware=(-machine q35 -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
            -drive "if=pflash,format=raw,unit=1,file=$work/OVMF_VARS.fd")
fi

ssh_opts=(-i "$work/key" -p "$port" -o BatchMode=yes -o IdentitiesOnly=yes
          -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
          -o ConnectTimeout=5)
# shellcheck disable=SC2029 # the commands are meant to expand in the guest
guest() { ssh "${ssh_opts[@]}" smoke@127.0.0.1 "$@"; }
# The first login can come just before cloud-init restarts sshd; a connection that meets the
# restart fails in SSH itself (exit 255, "kex_exchange_identification: Connection closed by
# remote host"). Such failures are retried for up to 60 s while QEMU runs; any other exit
# status (the remote command's) is returned at once.
guest_retry() {
  local until=$(( $(date +%s) + 60 )) rc
  while :; do
    rc=0
    guest "$@" 2>"$work/ssh.err" || rc=$?
    if [ "$rc" -ne 255 ] || [ "$(date +%s)" -ge "$until" ] || ! kill -0 "$qemu_pid" 2>/dev/null; then
      cat "$work/ssh.err" >&2
      return "$rc"
    fi
    echo "boot-smoke: ssh failed ($(tr -d '\r' <"$work/ssh.err" | tail -n1)); retrying" >&2
    sleep 1
  done
}

start=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$(date +%s.%N)" "$start"; }
qemu-system-x86_64 -accel "$accel" -m 1024 -smp 2 "${firmware[@]}" \
  -drive "file=$work/overlay.qcow2,if=virtio,format=qcow2" \
  -drive "file=$work/seed.img,if=virtio,format=raw,readonly=on" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
  -device virtio-rng-pci \
  -serial "file:$work/console.log" -display none -nodefaults -vga none \
  2>"$work/qemu.err" &
qemu_pid=$!
echo "boot-smoke: booting $(basename "$image") ($([ "$uefi" -eq 1 ] && echo UEFI/OVMF || echo BIOS/SeaBIOS), $accel), ssh on 127.0.0.1:$port"

deadline=$(( $(date +%s) + timeout_s ))
until guest true 2>/dev/null; do
  kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited before SSH answered"
  [ "$(date +%s)" -lt "$deadline" ] || fail "no SSH login within ${timeout_s}s"
  sleep 1
done
t_ssh=$(elapsed)
echo "boot-smoke: SSH login after ${t_ssh}s"

remaining=$(( deadline - $(date +%s) ))
[ "$remaining" -gt 0 ] || fail "no time left for cloud-init"
status=$(guest_retry "timeout $remaining cloud-init status --wait --long" 2>&1) || true
t_ci=$(elapsed)
printf '  %s\n' "$status" | sed '2,$s/^/  /'
echo "$status" | grep -q '^status: done' || fail "cloud-init did not finish cleanly"
echo "boot-smoke: cloud-init done after ${t_ci}s"

guest_retry 'systemd-analyze 2>/dev/null | head -n1; uname -r; findmnt -no SOURCE,SIZE / 2>/dev/null || df -h /; systemctl is-system-running || true' \
  | sed 's/^/  guest: /' || fail "could not query the guest"
guest_retry 'sudo -n true' || fail "passwordless sudo does not work for the seeded user"

# Power off and wait for QEMU to exit, with a deadline.
guest 'sudo systemctl poweroff' 2>/dev/null || true
off_deadline=$(( $(date +%s) + 60 ))
while kill -0 "$qemu_pid" 2>/dev/null; do
  [ "$(date +%s)" -lt "$off_deadline" ] || fail "the guest did not power off within 60s"
  sleep 0.5
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
echo "boot-smoke: OK: ssh ${t_ssh}s, cloud-init done ${t_ci}s, powered off at $(elapsed)s"
