#!/usr/bin/env bash
# Installs the host packages strata and its tests need on Debian 12 / Ubuntu 24.04.
# qemu-system-x86 and qemu-utils must come from the same release: a newer
# qemu-utils (a backport) breaks qemu-system-common, so both are pinned together.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Both QEMU packages from the release itself: a preinstalled backport of qemu-utils
# cannot sit beside the release's qemu-system-x86.
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
$SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades \
  "qemu-system-x86/$codename" "qemu-system-data/$codename" "qemu-utils/$codename" ovmf seabios ipxe-qemu \
  mmdebstrap fdisk gdisk dosfstools mtools bc e2fsprogs zstd \
  grub-pc-bin grub-efi-amd64-bin grub2-common \
  openssh-client openssh-server python3 python3-venv python3-yaml tmux ca-certificates curl \
  docker-registry apache2-utils ansible-core openssl
