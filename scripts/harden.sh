#!/usr/bin/env bash
# Hardens a Debian 12 guest; the `base` stage of images/demo.toml and
# images/debian-12-web.toml. Runs as root, uses no network, and is idempotent:
# every file is rewritten whole, and running it twice changes nothing.
#   - kernel and network sysctls (/etc/sysctl.d/60-strata-hardening.conf), applied now
#   - sshd: keys only, no root login, a login banner (sshd_config.d drop-in + /etc/issue.net)
#   - unneeded units masked (only those present in the image)
# Ends by checking what it did: `sshd -t`, the effective sshd settings, the
# live sysctl values and the masks.
set -euo pipefail

say() { echo "harden: $*"; }
die() { echo "harden: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

# --- kernel and network sysctls ------------------------------------------------
sysctl_file=/etc/sysctl.d/60-strata-hardening.conf
cat >"$sysctl_file.tmp" <<'EOF'
# Written by strata's scripts/harden.sh; rewritten on every run.
# Kernel: hide kernel pointers and logs from users, restrict ptrace and BPF.
kernel.kptr_restrict = 2
kernel.dmesg_restrict = 1
kernel.yama.ptrace_scope = 1
kernel.unprivileged_bpf_disabled = 1
net.core.bpf_jit_harden = 2
kernel.sysrq = 0
fs.suid_dumpable = 0
fs.protected_hardlinks = 1
fs.protected_symlinks = 1
fs.protected_fifos = 2
fs.protected_regular = 2
# Network: no redirects or source routes, reverse-path filtering, SYN cookies.
net.ipv4.conf.all.rp_filter = 1
net.ipv4.conf.default.rp_filter = 1
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv4.conf.all.secure_redirects = 0
net.ipv4.conf.default.secure_redirects = 0
net.ipv4.conf.all.send_redirects = 0
net.ipv4.conf.default.send_redirects = 0
net.ipv4.conf.all.accept_source_route = 0
net.ipv4.conf.default.accept_source_route = 0
net.ipv4.conf.all.log_martians = 1
net.ipv4.conf.default.log_martians = 1
net.ipv4.icmp_echo_ignore_broadcasts = 1
net.ipv4.icmp_ignore_bogus_error_responses = 1
net.ipv4.tcp_syncookies = 1
net.ipv4.tcp_rfc1337 = 1
net.ipv6.conf.all.accept_redirects = 0
net.ipv6.conf.default.accept_redirects = 0
net.ipv6.conf.all.accept_source_route = 0
net.ipv6.conf.default.accept_source_route = 0
EOF
chmod 0644 "$sysctl_file.tmp"
mv -f "$sysctl_file.tmp" "$sysctl_file"
# -e: a key this kernel lacks (e.g. no Yama) is skipped, not an error.
sysctl -q -e -p "$sysctl_file"
say "sysctls applied from $sysctl_file"

# --- sshd ---------------------------------------------------------------------
cat >/etc/issue.net.tmp <<'EOF'
*****************************************************************
  Authorised access only. Activity on this system is logged.
  Built by strata. Disconnect now if you are not authorised.
*****************************************************************
EOF
chmod 0644 /etc/issue.net.tmp
mv -f /etc/issue.net.tmp /etc/issue.net

# sshd keeps the first value it reads for a keyword and Debian's sshd_config
# includes sshd_config.d/*.conf first, so this early-sorting drop-in wins over
# sshd_config and over later drop-ins (such as cloud-init's).
dropin=/etc/ssh/sshd_config.d/10-strata-hardening.conf
mkdir -p /etc/ssh/sshd_config.d
cat >"$dropin.tmp" <<'EOF'
# Written by strata's scripts/harden.sh; rewritten on every run.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PubkeyAuthentication yes
AuthenticationMethods publickey
X11Forwarding no
AllowAgentForwarding no
MaxAuthTries 3
LoginGraceTime 30
ClientAliveInterval 300
ClientAliveCountMax 2
Banner /etc/issue.net
EOF
chmod 0644 "$dropin.tmp"
mv -f "$dropin.tmp" "$dropin"

sshd_bin=$(command -v sshd || echo /usr/sbin/sshd)
[ -x "$sshd_bin" ] || die "sshd is not installed (openssh-server); this script hardens an SSH guest"
mkdir -p /run/sshd
"$sshd_bin" -t || die "sshd rejects its configuration after adding $dropin"
# reload, not restart: the connection running this script stays up.
if systemctl is-active --quiet ssh.service; then
  systemctl reload ssh.service
fi
say "sshd: keys only, no root login, banner /etc/issue.net"

# --- unneeded units -----------------------------------------------------------
# Masked only where the unit exists; absent ones are left alone.
unneeded=(
  ctrl-alt-del.target        # no reboot from a console key press
  debug-shell.service        # root shell on tty9 without a password
  avahi-daemon.service avahi-daemon.socket
  cups.service cups.socket cups-browsed.service
  bluetooth.service
  ModemManager.service
  rpcbind.service rpcbind.socket
  nfs-server.service
  exim4.service
)
# One query for all of them: systemctl is slow to start under emulation.
mapfile -t masked < <(systemctl list-unit-files --no-legend --no-pager --plain "${unneeded[@]}" 2>/dev/null \
  | awk '{print $1}')
# Only when one is not masked yet: each mask reloads systemd's units (slow under TCG).
states=
if [ "${#masked[@]}" -gt 0 ]; then
  states=$(systemctl is-enabled "${masked[@]}" 2>/dev/null || true)
fi
if [ "${#masked[@]}" -gt 0 ] && grep -qvx masked <<<"$states"; then
  # --now stops what runs.
  systemctl mask --now "${masked[@]}" >/dev/null 2>&1 || systemctl mask "${masked[@]}" >/dev/null \
    || die "systemctl mask ${masked[*]} failed"
fi
say "masked: ${masked[*]:-(none present)}"

# --- verify -------------------------------------------------------------------
effective=$("$sshd_bin" -T -C user=nobody,host=localhost,addr=127.0.0.1 2>/dev/null) \
  || die "sshd -T failed; cannot read the effective configuration"
for want in "permitrootlogin no" "passwordauthentication no" "kbdinteractiveauthentication no" \
            "pubkeyauthentication yes" "banner /etc/issue.net"; do
  grep -qx "$want" <<<"$effective" || die "sshd's effective configuration lacks '$want'"
done
bad=0
while IFS='=' read -r key value; do
  # Builtins only: every fork costs under emulation.
  key=${key//[[:space:]]/}; value=${value//[[:space:]]/}
  case "$key" in ''|'#'*) continue ;; esac
  proc="/proc/sys/${key//.//}"
  [ -e "$proc" ] || { say "sysctl $key: not in this kernel, skipped"; continue; }
  read -r live <"$proc"; live=${live//[[:space:]]/}
  [ "$live" = "$value" ] || { echo "harden: sysctl $key is $live, wanted $value" >&2; bad=1; }
done <"$sysctl_file"
[ "$bad" -eq 0 ] || die "some sysctls did not take effect"
if [ "${#masked[@]}" -gt 0 ]; then
  states=$(systemctl is-enabled "${masked[@]}" 2>/dev/null || true)
  ! grep -qvx masked <<<"$states" || die "not all of ${masked[*]} are masked: ${states//$'\n'/ }"
fi
say "verified"
