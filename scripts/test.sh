#!/usr/bin/env bash
# Everything the tests need, then every test: host packages, the local Debian base image
# (rebuilt only when its recipe changed), and the whole test suite with the guest tests enabled.
# Run from anywhere; needs root (or sudo) for apt.
# Guest tests are `#[ignore]`d by default and run here explicitly; STRATA_GUEST_TESTS=0 leaves
# them out (and skips the base image), and the summary counts them as ignored. The image's own
# boot is proved by the guest tests' shared cold build; `scripts/boot-smoke.sh` does it by hand.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

export STRATA_GUEST_TESTS=${STRATA_GUEST_TESTS:-1}
$SUDO bash scripts/install-host-deps.sh
nextest_ignored=()
libtest_ignored=()
image_pid=
if [ "$STRATA_GUEST_TESTS" = 1 ]; then
  # The base image is made (mostly downloads and dpkg) while cargo compiles the tests.
  mkdir -p target
  $SUDO bash scripts/build-base-image.sh >target/base-image.log 2>&1 &
  image_pid=$!
  nextest_ignored=(--run-ignored all)
  libtest_ignored=(--include-ignored)
fi

started=$SECONDS
nextest=0
if cargo nextest --version >/dev/null 2>&1; then nextest=1; fi
compiled=0
if [ "$nextest" = 1 ]; then
  cargo nextest run --workspace --no-run || compiled=$?
else
  cargo test --workspace --no-run || compiled=$?
fi
echo "test.sh: compiling took $((SECONDS - started))s"
if [ -n "$image_pid" ]; then
  if ! wait "$image_pid"; then
    cat target/base-image.log >&2
    echo "test.sh: FAILED: scripts/build-base-image.sh (its log is above)" >&2
    exit 1
  fi
  tail -n 3 target/base-image.log
fi
[ "$compiled" -eq 0 ] || { echo "test.sh: FAILED: compiling the tests" >&2; exit "$compiled"; }

suite=0
if [ "$nextest" = 1 ]; then
  # .config/nextest.toml runs the guest tests one at a time.
  cargo nextest run --workspace --no-fail-fast "${nextest_ignored[@]}" || suite=$?
else
  cargo test --workspace --no-fail-fast -- "${libtest_ignored[@]}" || suite=$?
fi
echo "test.sh: compiling and the suite took $((SECONDS - started))s"
if [ "$suite" -ne 0 ]; then
  echo "test.sh: FAILED: the test suite (exit $suite)" >&2
fi
[ "$suite" -eq 0 ]
