#!/usr/bin/env bash
# Everything the tests need, then every test: host packages, the local Debian base image
# (rebuilt only when its recipe changed), the Python judges' venv (reused while its requirements
# are unchanged), and the whole test suite with the guest tests enabled.
# Run from anywhere; needs root (or sudo) for apt.
# Guest tests are `#[ignore]`d by default and run here explicitly; STRATA_GUEST_TESTS=0 leaves
# them out (and skips the base image), and the summary counts them as ignored. The image's own
# boot is proved by the guest tests' shared cold build; `scripts/boot-smoke.sh` does it by hand.
# Ends with one line: tests passed, failed and skipped (ignored, or left out by the filter).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

export STRATA_GUEST_TESTS=${STRATA_GUEST_TESTS:-1}
started=$SECONDS
$SUDO bash scripts/install-host-deps.sh
echo "test.sh: host packages took $((SECONDS - started))s"
mkdir -p target

# What runs beside the compile (mostly downloads and dpkg): the base image and the venv.
background=()
if [ "$STRATA_GUEST_TESTS" = 1 ]; then
  $SUDO bash scripts/build-base-image.sh >target/base-image.log 2>&1 &
  background+=("$!:scripts/build-base-image.sh:target/base-image.log")
fi
bash scripts/install-test-venv.sh >target/test-venv.log 2>&1 &
background+=("$!:scripts/install-test-venv.sh:target/test-venv.log")

nextest=0
if cargo nextest --version >/dev/null 2>&1; then nextest=1; fi
compile_started=$SECONDS
compiled=0
if [ "$nextest" = 1 ]; then
  cargo nextest run --workspace --no-run || compiled=$?
else
  cargo test --workspace --no-run || compiled=$?
fi
echo "test.sh: compiling took $((SECONDS - compile_started))s"
for job in "${background[@]}"; do
  IFS=: read -r pid what log <<<"$job"
  if ! wait "$pid"; then
    cat "$log" >&2
    echo "test.sh: FAILED: $what (its log is above)" >&2
    exit 1
  fi
  tail -n 2 "$log"
done
echo "test.sh: set-up and compiling took $((SECONDS - started))s"
[ "$compiled" -eq 0 ] || { echo "test.sh: FAILED: compiling the tests" >&2; exit "$compiled"; }

suite_started=$SECONDS
suite=0
log=target/test-suite.log
if [ "$nextest" = 1 ]; then
  ignored=()
  [ "$STRATA_GUEST_TESTS" = 1 ] && ignored=(--run-ignored all)
  # .config/nextest.toml runs the guest tests one at a time.
  set +e
  cargo nextest run --workspace --no-fail-fast "${ignored[@]}" 2>&1 | tee "$log"
  suite=${PIPESTATUS[0]}
  set -e
  # nextest's own closing line: "N tests run: N passed, N failed, N skipped".
  counts=$({ grep -E '^ *Summary \[' "$log" || true; } | tail -n 1 | python3 -c '
import re, sys
line = sys.stdin.read()
def count(word):
    m = re.search(r"(\d+) (?:tests? )?" + word, line)
    return int(m.group(1)) if m else 0
print(count("run"), count("passed"), count("failed") + count("timed out"), count("skipped"))')
else
  ignored=()
  [ "$STRATA_GUEST_TESTS" = 1 ] && ignored=(--include-ignored --skip helper_that_holds_a_qemu --skip ::measure_)
  set +e
  cargo test --workspace --no-fail-fast -- "${ignored[@]}" 2>&1 | tee "$log"
  suite=${PIPESTATUS[0]}
  set -e
  # libtest: one "test result: … N passed; N failed; N ignored" line per binary.
  counts=$(python3 -c '
import re, sys
passed = failed = ignored = 0
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
    if m:
        passed += int(m.group(1)); failed += int(m.group(2)); ignored += int(m.group(3))
print(passed + failed, passed, failed, ignored)' "$log")
fi
read -r run passed failed skipped <<<"${counts:-0 0 0 0}"
echo "test.sh: the suite took $((SECONDS - suite_started))s; everything $((SECONDS - started))s"
if [ "$suite" -ne 0 ]; then
  echo "test.sh: FAILED: the test suite (exit $suite)" >&2
fi
echo "test.sh: $run tests run ($skipped skipped: ignored or filtered out)"
echo "test.sh: $passed passed, $failed failed, $skipped skipped"
[ "$suite" -eq 0 ]
