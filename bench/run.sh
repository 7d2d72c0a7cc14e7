#!/usr/bin/env bash
# strata against Packer 1.6.6's QEMU builder, on images/demo.toml's three stages, in one run on
# one machine: installs what it needs (host packages, Debian's packer and xorriso), builds the
# local base image and strata (release), then runs bench/bench.py, which prints the table and
# writes bench/results/latest.{json,md} and dated copies. Unattended; needs root (or sudo) for
# apt and the base image. A full run takes 20-40 minutes under TCG.
#
# Environment: BENCH_RUNS (runs per scenario, default 1), BENCH_WORK (work folder), BENCH_KEEP=1
# (keep it), BENCH_SKIP_SETUP=1 (skip apt, the base image and cargo: all already done).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

if [ "${BENCH_SKIP_SETUP:-0}" != 1 ]; then
  $SUDO bash scripts/install-host-deps.sh
  # packer 1.6.6 (its qemu builder is built in); xorriso makes its cd_files seed ISO.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends packer xorriso
  $SUDO bash scripts/build-base-image.sh
  cargo build --release
fi
exec python3 bench/bench.py "$@"
