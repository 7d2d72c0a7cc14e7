#!/usr/bin/env bash
# Installs the host packages strata and its tests need on Debian 12 / Ubuntu 24.04.
# qemu-system-x86 and qemu-utils must come from the same release: a newer
# qemu-utils (a backport) breaks qemu-system-common, so both are pinned together.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
utils=qemu-utils
if apt-cache policy qemu-utils | grep -q 'Installed: .*bpo'; then
  # a backported qemu-utils cannot sit beside the release's qemu-system-x86
  utils="qemu-utils/$codename"
fi
$SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades \
  qemu-system-x86 qemu-system-data "$utils" ovmf seabios ipxe-qemu \
  mmdebstrap fdisk gdisk dosfstools mtools bc e2fsprogs zstd \
  grub-pc-bin grub-efi-amd64-bin grub2-common \
  openssh-client python3 tmux ca-certificates curl
