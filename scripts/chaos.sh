#!/usr/bin/env bash
# Chaos run for issue 16: SIGKILL strata at a random point of N real cold builds of the demo,
# then check that no QEMU is left, that every folder in layers/ is whole (layer.json readable,
# `qemu-img check` clean), and that the next build sweeps tmp/, succeeds, and reuses what was
# committed and the restore points that were saved. Then three builds of one definition at
# once on one store: each layer built once, all three succeed. Prints its figures.
#
# Usage: flock /tmp/strata-guest.lock bash scripts/chaos.sh [N]   (N default 3; not part of CI)
# Environment: STRATA_BIN (default target/debug/strata), STRATA_BASE_IMAGE_DIR,
#   CHAOS_KILL_MIN / CHAOS_KILL_MAX (seconds into a build to kill it; default 20 / 100, which
#   spans a cold build of the demo under TCG on a quiet machine, about 95 s: before and
#   between its commits).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
runs=${1:-3}
strata=${STRATA_BIN:-$repo/target/debug/strata}
base=${STRATA_BASE_IMAGE_DIR:-$repo/.cache/base-image}
kill_min=${CHAOS_KILL_MIN:-20}
kill_max=${CHAOS_KILL_MAX:-100}

die() { echo "chaos: $*" >&2; exit 1; }
[ -x "$strata" ] || die "no strata binary at $strata (cargo build first, or set STRATA_BIN)"
[ -f "$base/SHA256SUMS" ] || die "no base image in $base (scripts/build-base-image.sh)"
for tool in qemu-img python3 pgrep; do command -v "$tool" >/dev/null || die "'$tool' missing"; done

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-chaos.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -a "$repo/images" "$repo/scripts" "$work/"
base_abs=$(cd "$base" && pwd)
sed -i "s|\.\./\.cache/base-image|$base_abs|g" "$work/images/demo.toml"
definition=$work/images/demo.toml
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Counts JSON events named $2 in file $1.
count() { grep -c "\"event\":\"$2\"" "$1" || true; }

# No QEMU of this store left, within 15 s (its parent is dead; QEMU dies with it).
no_qemu_left() {
  local store=$1 deadline=$((SECONDS + 15))
  while pgrep -f "qemu-system-x86_64.*$store" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { fail "QEMU left running for $store"; return; }
    sleep 0.5
  done
}

# Every layer folder whole: layer.json parses, qemu-img check is clean.
layers_whole() {
  local store=$1 dir
  for dir in "$store"/layers/*/; do
    [ -d "$dir" ] || continue
    python3 -c 'import json,sys; json.load(open(sys.argv[1], encoding="utf-8"))' \
      "$dir/layer.json" 2>/dev/null || fail "unreadable $dir/layer.json"
    qemu-img check -q "$dir/disk.qcow2" >/dev/null 2>&1 || fail "qemu-img check $dir/disk.qcow2"
  done
}

printf '%-4s %-8s %-9s %-8s %-9s %-8s %-8s %-9s\n' \
  run killed@s committed restores tmp-left cached resumed rebuild-s
for run in $(seq 1 "$runs"); do
  store=$work/store-$run
  "$strata" --store "$store" fetch "$definition" >/dev/null
  at=$((kill_min + RANDOM % (kill_max - kill_min + 1)))
  "$strata" --store "$store" --log-format json build "$definition" >"$work/killed-$run.jsonl" 2>&1 &
  pid=$!
  deadline=$((SECONDS + at))
  while [ $SECONDS -lt $deadline ] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  no_qemu_left "$store"
  layers_whole "$store"
  committed=$(find "$store/layers" -mindepth 1 -maxdepth 1 -type d | wc -l)
  restores=$(find "$store/layers" -mindepth 3 -maxdepth 3 -name restore.json | wc -l)
  started=$SECONDS
  if ! "$strata" --store "$store" --log-format json build "$definition" >"$work/next-$run.jsonl" 2>"$work/next-$run.err"; then
    fail "run $run: the build after the kill failed: $(tail -3 "$work/next-$run.err")"
  fi
  seconds=$((SECONDS - started))
  tmp_left=$(find "$store/tmp" -mindepth 1 -maxdepth 1 | wc -l)
  cached=$(count "$work/next-$run.jsonl" stage_cached)
  resumed=$(count "$work/next-$run.jsonl" restore_resumed)
  [ "$tmp_left" -eq 0 ] || fail "run $run: $tmp_left entries left in tmp/"
  [ "$cached" -ge "$committed" ] || fail "run $run: $committed layers committed, $cached reused"
  # A saved restore point under a stage still to build is resumed, not booted again.
  if [ "$restores" -gt 0 ] && [ "$cached" -lt 2 ] && [ "$resumed" -eq 0 ]; then
    fail "run $run: a restore point was saved but the next build booted"
  fi
  printf '%-4s %-8s %-9s %-8s %-9s %-8s %-8s %-9s\n' \
    "$run" "$at" "$committed" "$restores" "$tmp_left" "$cached" "$resumed" "$seconds"
done

# Three builds of one definition at once on one store.
store=$work/store-concurrent
"$strata" --store "$store" fetch "$definition" >/dev/null
started=$SECONDS
pids=()
for i in 1 2 3; do
  "$strata" --store "$store" --log-format json build "$definition" >"$work/concurrent-$i.jsonl" 2>&1 &
  pids+=($!)
done
ok=0
for pid in "${pids[@]}"; do wait "$pid" && ok=$((ok + 1)); done
built=0
for i in 1 2 3; do built=$((built + $(count "$work/concurrent-$i.jsonl" layer_committed))); done
stages=$(grep -c '^\[\[stage\]\]' "$definition")
no_qemu_left "$store"
layers_whole "$store"
echo "concurrent: $ok/3 builds succeeded, $built layers built for $stages stages, $((SECONDS - started)) s"
[ "$ok" -eq 3 ] || fail "concurrent: only $ok of 3 builds succeeded"
[ "$built" -eq "$stages" ] || fail "concurrent: $built layers built, expected $stages (each once)"

echo "chaos: $runs killed builds, $failures failures"
[ "$failures" -eq 0 ]
