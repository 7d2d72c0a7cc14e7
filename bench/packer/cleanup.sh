#!/bin/sh
# Last provisioner of every Packer stage: what strata's sysprep does (src/stage/guest.rs), so
# each Packer output is a clean cloud template like a strata layer. BENCH_USER: the build user.
set -eu
cloud-init clean --logs --seed
: > /etc/machine-id
[ -L /var/lib/dbus/machine-id ] || rm -f /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
home=$(getent passwd "$BENCH_USER" | cut -d: -f6)
[ -z "$home" ] || rm -f "$home/.ssh/authorized_keys"
rm -f /var/lib/systemd/random-seed /var/lib/dhcp/*.leases
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
fstrim -a >/dev/null 2>&1 || true
sync
