#!/usr/bin/env bash
# Everything the tests need, then every test: host packages, the local Debian base image
# (rebuilt only when its recipe changed), a boot smoke test of that image, and the whole
# test suite with the guest tests enabled. Run from anywhere; needs root (or sudo) for apt.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

$SUDO bash scripts/install-host-deps.sh
$SUDO bash scripts/build-base-image.sh
bash scripts/boot-smoke.sh

export STRATA_GUEST_TESTS=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
