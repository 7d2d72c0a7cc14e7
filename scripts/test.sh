#!/usr/bin/env bash
# Everything the tests need, then every test: host packages, the local Debian base image
# (rebuilt only when its recipe changed), a boot smoke test of that image, and the whole
# test suite with the guest tests enabled. Run from anywhere; needs root (or sudo) for apt.
# Guest tests are `#[ignore]`d by default and run here explicitly; STRATA_GUEST_TESTS=0 leaves
# them out (and skips the base image and smoke test), and the summary counts them as ignored.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

export STRATA_GUEST_TESTS=${STRATA_GUEST_TESTS:-1}
$SUDO bash scripts/install-host-deps.sh
smoke=0
if [ "$STRATA_GUEST_TESTS" = 1 ]; then
  $SUDO bash scripts/build-base-image.sh
  # A failed smoke test must not hide the suite's results: run the suite anyway, then fail.
  bash scripts/boot-smoke.sh || smoke=$?
  nextest_ignored=(--run-ignored all)
  libtest_ignored=(--include-ignored)
else
  nextest_ignored=()
  libtest_ignored=()
fi

suite=0
if cargo nextest --version >/dev/null 2>&1; then
  # .config/nextest.toml runs the guest tests one at a time.
  cargo nextest run --workspace --no-fail-fast "${nextest_ignored[@]}" || suite=$?
else
  cargo test --workspace --no-fail-fast -- "${libtest_ignored[@]}" || suite=$?
fi
if [ "$smoke" -ne 0 ]; then
  echo "test.sh: FAILED: the boot smoke test (exit $smoke); the suite's results are above" >&2
fi
if [ "$suite" -ne 0 ]; then
  echo "test.sh: FAILED: the test suite (exit $suite)" >&2
fi
[ "$smoke" -eq 0 ] && [ "$suite" -eq 0 ]
