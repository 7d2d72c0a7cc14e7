#!/usr/bin/env bash
# The shared cache's figures (numbers, not assertions), on loopback with a real registry
# (Debian's docker-registry). Run it under the guest lock:
#   flock /tmp/strata-guest.lock bench/cache.sh
# 1. runner A, empty store, empty registry: cold build of the demo with --push --cache-restore
#    (this is also "a fresh runner without a registry": nothing can be pulled);
# 2. runner B, empty store, warm registry: the no-change build;
# 3. runner C, empty store, warm registry: an app-only change (images/demo/app/app.py), --push:
#    bytes pushed against the final layer's size;
# 4. runner D, empty store, warm registry: the same app change with --cache-restore (pulls the
#    restore point of the layer below instead of booting), against 3.
# Environment: STRATA_BIN (default target/release/strata, else target/debug/strata),
# STRATA_BASE_IMAGE_DIR (default .cache/base-image).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${STRATA_BIN:-$repo/target/release/strata}
[ -x "$bin" ] || bin=$repo/target/debug/strata
base=${STRATA_BASE_IMAGE_DIR:-$repo/.cache/base-image}
work=$(mktemp -d /tmp/strata-bench-cache.XXXXXX)
registry_pid=
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

. "$repo/bench/registry.sh"
start_registry "$work"
cache=oci+http://127.0.0.1:$registry_port/strata/bench
# Every runner signs with one fleet key and trusts it: the figures include signing and
# verifying (issue 27).
"$bin" key generate "$work/fleet.key" >/dev/null 2>&1
export STRATA_SIGN_KEY="$work/fleet.key"
unset STRATA_CACHE_TRUST STRATA_CACHE_UNSIGNED

# One copy of the demo per runner, its source the local base image.
runner() {
  local dir=$work/$1
  mkdir -p "$dir/.cache"
  cp -a "$repo/images" "$repo/scripts" "$dir/"
  ln -s "$base" "$dir/.cache/base-image"
  echo "$dir"
}

# build RUNNER ARGS...: prints the wall seconds; events go to RUNNER/events.jsonl
build() {
  local dir=$1; shift
  local start end
  start=$(date +%s.%N)
  (cd "$dir" && "$bin" --store "$dir/store" --cache "$cache" --log-format json \
      build images/demo.toml "$@" >"$dir/events.jsonl" 2>"$dir/stderr") \
    || { echo "build in $dir failed:" >&2; tail -5 "$dir/stderr" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.1f}')"
}

# facts RUNNER: qemu starts, bytes pushed and pulled, the final layer's disk bytes
facts() {
  python3 - "$1/events.jsonl" <<'PY'
import json, sys
qemu = pushed = pulled = 0
final = None
for line in open(sys.argv[1]):
    e = json.loads(line)
    kind = e.get("event")
    if kind == "qemu_started":
        qemu += 1
    elif kind == "cache_transfer_finished":
        if e["direction"] == "push":
            pushed += e["bytes"]
        else:
            pulled += e["bytes"]
    elif kind == "layer_committed" and e["stage"] == "final":
        final = e["bytes"]
print(f"qemu starts {qemu}, pushed {pushed/2**20:.1f} MiB, pulled {pulled/2**20:.1f} MiB", end="")
if final is not None:
    print(f", final layer {final/2**20:.1f} MiB, pushed/final {pushed/final:.2f}x", end="")
print()
PY
}

change_app() { echo "# bench change $(date +%s%N)" >>"$1/images/demo/app/app.py"; }

a=$(runner a); b=$(runner b); c=$(runner c); d=$(runner d)
t=$(build "$a" --push --cache-restore)
echo "A cold build (fresh runner, nothing to pull), --push --cache-restore: ${t}s; $(facts "$a")"
t=$(build "$b")
echo "B fresh runner, warm registry, no change: ${t}s (target <= 3 s); $(facts "$b")"
change_app "$c"; change_app "$d"  # different changes: D must not find C's final layer
t=$(build "$c" --push)
echo "C fresh runner, warm registry, app-only change, --push (boots): ${t}s (target <= 20 s); $(facts "$c")"
t=$(build "$d" --cache-restore)
echo "D fresh runner, warm registry, app-only change, --cache-restore (resumes): ${t}s; $(facts "$d")"
echo "registry holds $(du -sh "$work/registry-data" | cut -f1)"
