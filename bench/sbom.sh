#!/usr/bin/env bash
# bench: what `strata sbom` and the provenance of `strata export` cost on a built demo.
#
#   bench/sbom.sh STORE DEF [RUNS]
#
# STORE holds the demo built (e.g. the guest tests' shared fixture,
# target/tmp/guest-demo/built/store with its images/demo.toml); no guest is booted. For each of
# the demo's three stages and both formats: the wall time of `strata sbom` (process start to
# exit, the record read, the plan's keys hashed, the document written), the median and range of
# RUNS runs (default 5), and the document's size. Then one `strata export` (qcow2, generic): the
# SBOM's and the provenance's share of it from its events' timestamps (the last image written
# to the SBOM's event; the SBOM's to the provenance's). Target: under 0.5 s per SBOM.
set -euo pipefail
store=${1:?usage: bench/sbom.sh STORE DEF [RUNS]}
definition=${2:?usage: bench/sbom.sh STORE DEF [RUNS]}
runs=${3:-5}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strata=${STRATA_BIN:-$repo/target/release/strata}
[ -x "$strata" ] || strata=$repo/target/debug/strata
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "strata: $strata; load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %-15s %8s %8s %8s %9s %9s\n' stage format median min max bytes packages
for stage in base app-base final; do
  for format in spdx-json cyclonedx-json; do
    times=()
    for _ in $(seq "$runs"); do
      start=$(date +%s.%N)
      "$strata" --store "$store" sbom "$definition" --stage "$stage" --format "$format" -o "$work/sbom.json" 2>/dev/null
      times+=("$(echo "$(date +%s.%N) - $start" | bc)")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    median=$(echo "$sorted" | sed -n "$(((runs + 1) / 2))p")
    packages=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(1 for p in d.get("packages", []) if p["SPDXID"].startswith("SPDXRef-Package-")) + sum(1 for c in d.get("components", []) if c["type"] == "library"))' "$work/sbom.json")
    printf '%-10s %-15s %8.3f %8.3f %8.3f %9d %9d\n' "$stage" "$format" "$median" \
      "$(echo "$sorted" | head -1)" "$(echo "$sorted" | tail -1)" "$(stat -c %s "$work/sbom.json")" "$packages"
  done
done
"$strata" --store "$store" --log-format json export "$definition" --format qcow2 --target generic -o "$work/out" >"$work/events.jsonl"
python3 - "$work/events.jsonl" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
artifacts = [e for e in events if e.get("event") == "export_artifact"]
image = max(e["time"] for e in artifacts if e["format"] in ("qcow2", "raw", "vmdk"))
sbom = next(e["time"] for e in artifacts if e["format"] == "spdx-json")
prov = next(e["time"] for e in artifacts if e["format"].startswith("provenance"))
print(f"export: SBOM {sbom - image:.3f} s after the image, provenance {prov - sbom:.3f} s after the SBOM")
PY
