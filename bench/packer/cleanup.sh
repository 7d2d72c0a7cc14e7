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
# Rotated, then the archived files removed by name (`journalctl --vacuum-*` would look for them
# under the machine-id emptied above, and find none).
journalctl --rotate >/dev/null 2>&1 || true
rm -f /var/log/journal/*/*@*.journal /var/log/journal/*/*@*.journal~
fstrim -a >/dev/null 2>&1 || true
sync
