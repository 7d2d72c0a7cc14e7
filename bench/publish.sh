#!/usr/bin/env bash
# bench/publish.sh DEF [RUNS]: `strata publish` into a real Keystone and Glance on loopback
# (tests/openstack/cloud.sh, from the test venv) against `openstack image create --file` of the
# same file, interleaved; and the end-to-end time of export plus publish. DEF must be built in
# the store (STRATA_STORE or the default one). Prints numbers; asserts nothing.
#
#   scripts/install-test-venv.sh && bench/publish.sh images/demo.toml 3
#
# STRATA_BIN picks the binary (default target/release/strata, else target/debug/strata).
# Targets: strata's upload at least 0.9x the OpenStack client's throughput.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
def=${1:?usage: bench/publish.sh DEF [RUNS]}
runs=${2:-3}
venv=${STRATA_TEST_VENV:-$repo/.cache/venv}
strata=${STRATA_BIN:-}
if [ -z "$strata" ]; then
  strata=$repo/target/release/strata
  [ -x "$strata" ] || strata=$repo/target/debug/strata
fi
work=$(mktemp -d /var/tmp/strata-bench-publish-XXXXXX)
cleanup() { "$repo/tests/openstack/cloud.sh" stop "$work/cloud" || true; rm -rf "$work"; }
trap cleanup EXIT
for name in $(env | grep -o '^OS_[A-Z_]*' || true); do unset "$name"; done
export OS_CLIENT_CONFIG_FILE=$work/cloud/clouds.yaml

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "load: $(uptime | sed 's/.*load average: //')"
echo "strata: $strata"
t0=$(now)
"$repo/tests/openstack/cloud.sh" start "$work/cloud" >/dev/null
echo "keystone+glance set-up (config, db_sync, bootstrap, users, endpoints): $(secs "$t0" "$(now)") s"

os() { "$venv/bin/openstack" --os-cloud member "$@"; }
delete_all() {
  for id in $(os image list -f value -c ID); do os image delete "$id"; done
}

# End to end: export (nothing in the folder yet) and publish.
t0=$(now)
"$strata" -q publish "$def" --to openstack --cloud member -o "$work/out" >/dev/null
e2e=$(secs "$t0" "$(now)")
file=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['artifacts'][0]['path'])" "$work/out/manifest.json")
bytes=$(stat -c %s "$work/out/$file")
mib=$(python3 -c "print(f'{$bytes/1048576:.1f}')")
echo "export + publish of $file ($mib MiB), end to end: $e2e s"
delete_all

# Throughput, interleaved: strata (export reused: log in, list, create, upload, wait, verify)
# against the OpenStack client (its start-up, log in, create, upload).
printf '%-4s %10s %10s %12s %12s %7s\n' run strata_s client_s strata_MiB/s client_MiB/s ratio
for run in $(seq 1 "$runs"); do
  t0=$(now)
  "$strata" -q publish "$def" --to openstack --cloud member -o "$work/out" >/dev/null
  s=$(secs "$t0" "$(now)")
  delete_all
  t0=$(now)
  os image create --disk-format qcow2 --container-format bare --file "$work/out/$file" bench >/dev/null
  c=$(secs "$t0" "$(now)")
  delete_all
  python3 - "$run" "$s" "$c" "$bytes" <<'EOF'
import sys
run, s, c, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rs, rc = n / s / 1048576, n / c / 1048576
print(f"{run:<4} {s:>10.2f} {c:>10.2f} {rs:>12.1f} {rc:>12.1f} {rs / rc:>7.2f}")
EOF
done
echo "load: $(uptime | sed 's/.*load average: //')"
