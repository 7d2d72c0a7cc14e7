#!/usr/bin/env bash
# Builds the demo image from nothing: host packages, the local Debian base image (the demo's
# source when no other is configured), strata itself, then `strata build` and `strata export`
# of images/demo.toml into out/. Run from anywhere; needs root (or sudo) for apt.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

$SUDO bash scripts/install-host-deps.sh
$SUDO bash scripts/build-base-image.sh
cargo build --release
./target/release/strata validate images/demo.toml
./target/release/strata build images/demo.toml
./target/release/strata layers images/demo.toml
./target/release/strata export images/demo.toml -o out --force
# The exported image stands alone (no backing file): boot a throwaway copy of it.
image=$(ls out/demo-*.qcow2 | head -n 1)
cat <<TEXT

exported: $image (with its .sha256, platform files and out/manifest.json)
boot it (changes discarded; Ctrl-A X quits):
  qemu-system-x86_64 -machine q35 -accel kvm -accel tcg -cpu max -smp 2 -m 1024 -nographic \\
    -snapshot -drive file=$image,if=virtio,format=qcow2 -nic user,model=virtio-net-pci
TEXT
