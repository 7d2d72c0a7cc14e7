#!/usr/bin/env bash
# Everything the tests need, then every test: host packages, the local Debian base image
# (rebuilt only when its recipe changed), and the whole test suite with the guest tests enabled.
# Run from anywhere; needs root (or sudo) for apt.
# Guest tests are `#[ignore]`d by default and run here explicitly; STRATA_GUEST_TESTS=0 leaves
# them out (and skips the base image), and the summary counts them as ignored. The image's own
# boot is proved by qemu_process's guest test; `scripts/boot-smoke.sh` does it by hand.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

export STRATA_GUEST_TESTS=${STRATA_GUEST_TESTS:-1}
$SUDO bash scripts/install-host-deps.sh
if [ "$STRATA_GUEST_TESTS" = 1 ]; then
  $SUDO bash scripts/build-base-image.sh
  nextest_ignored=(--run-ignored all)
  libtest_ignored=(--include-ignored)
else
  nextest_ignored=()
  libtest_ignored=()
fi

started=$SECONDS
suite=0
if cargo nextest --version >/dev/null 2>&1; then
  # .config/nextest.toml runs the guest tests one at a time.
  cargo nextest run --workspace --no-fail-fast "${nextest_ignored[@]}" || suite=$?
else
  cargo test --workspace --no-fail-fast -- "${libtest_ignored[@]}" || suite=$?
fi
echo "test.sh: build and suite took $((SECONDS - started))s"
if [ "$suite" -ne 0 ]; then
  echo "test.sh: FAILED: the test suite (exit $suite)" >&2
fi
[ "$suite" -eq 0 ]
