#!/usr/bin/env bash
# Times `strata fetch` against curl and sha256sum on one random file served on 127.0.0.1.
#
#   scripts/bench-fetch.sh [SIZE_MIB]        (default 2048; needs ~3x that in free disk)
#
# Prints wall seconds and MB/s for: curl alone, sha256sum alone, curl + sha256sum, strata.
# Uses target/release/strata (run `cargo build --release` first). Each figure is the best of
# RUNS (default 3) interleaved rounds; the served file is in the page cache for all of them alike.
set -euo pipefail

size_mib=${1:-2048}
runs=${RUNS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
strata=$root/target/release/strata
[[ -x $strata ]] || { echo "build first: cargo build --release" >&2; exit 2; }
for tool in python3 curl bc sha256sum; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench.XXXXXX")
[[ -d $work ]] || exit 2
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf -- "$work"
}
trap cleanup EXIT

mkdir -p "$work/www"
echo "writing ${size_mib} MiB of random data…" >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/www/disk.qcow2"
bytes=$(stat -c %s "$work/www/disk.qcow2")
expected=$(sha256sum "$work/www/disk.qcow2" | cut -d' ' -f1)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
server_pid=$!
url=http://127.0.0.1:$port/disk.qcow2
for _ in $(seq 100); do curl -sfI "$url" >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$work/bench.toml" <<EOF
name = "bench"

[source]
url = "$url"
checksum = "sha256:$expected"

[[stage]]
name = "base"
steps = [{ shell = "true" }]
EOF

now() { date +%s.%N; }

report() { # NAME SECONDS
    awk -v name="$1" -v s="$2" -v b="$bytes" \
        'BEGIN { printf "%-18s %7.2f s %8.1f MB/s\n", name, s, b / s / 1e6 }'
}

# time_of COMMAND...: wall seconds of one run, which starts with no output left from the run
# before and the dirty pages written back.
time_of() {
    local t0 t1
    rm -rf -- "$work/curl.out" "$work/store"
    sync
    t0=$(now)
    "$@"
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}

curl_only() { curl -sf -o "$work/curl.out" "$url"; }
hash_only() { sha256sum "$work/www/disk.qcow2" >/dev/null; }
curl_then_hash() { curl_only && sha256sum "$work/curl.out" >/dev/null; }
strata_fetch() { "$strata" --store "$work/store" -q fetch "$work/bench.toml"; }

# Rounds interleave the four, so that a busy machine slows them alike; the best round counts.
min() { if [[ -z $1 ]] || (($(echo "$2 < $1" | bc -l))); then echo "$2"; else echo "$1"; fi; }
curl_s="" sha_s="" both_s="" strata_s=""
for round in $(seq "$runs"); do
    echo "round $round of $runs…" >&2
    curl_s=$(min "$curl_s" "$(time_of curl_only)")
    sha_s=$(min "$sha_s" "$(time_of hash_only)")
    both_s=$(min "$both_s" "$(time_of curl_then_hash)")
    strata_s=$(min "$strata_s" "$(time_of strata_fetch)")
done
cmp -s "$work/www/disk.qcow2" "$work/store/sources/sha256-$expected.qcow2" ||
    { echo "strata's copy differs from the served file" >&2; exit 1; }

echo "file: $bytes bytes, served by python3 -m http.server on 127.0.0.1; best of $runs runs"
report "curl" "$curl_s"
report "sha256sum" "$sha_s"
report "curl+sha256sum" "$both_s"
report "strata fetch" "$strata_s"
awk -v s="$strata_s" -v c="$curl_s" -v b="$both_s" 'BEGIN {
    printf "strata wall / (curl+sha256sum) wall: %.2f (target <= 1)\n", s / b
    printf "strata throughput / curl alone: %.0f%% (target >= 90%%)\n", 100 * c / s
}'
