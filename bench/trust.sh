#!/bin/sh
# The cost of signing and verifying per artifact (issue 27; target: under 50 ms each): the
# cryptography alone, then a small layer pushed signed vs unsigned and pulled verified vs
# unverified against Debian's docker-registry on loopback. Prints numbers; asserts nothing.
# Usage: bench/trust.sh   (RUNS=N for the number of pushes and pulls; default 9). The dev profile
# is enough: dependencies, the cryptography among them, are built with opt-level 2.
set -eu
cd "$(dirname "$0")/.."
command -v docker-registry >/dev/null || { echo "needs docker-registry: apt-get install docker-registry" >&2; exit 1; }
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/data
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry=$!
trap 'kill $registry 2>/dev/null; rm -rf "$work"' EXIT INT TERM
deadline=$(( $(date +%s) + 20 ))
until curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the registry did not start" >&2; exit 1; }
  sleep 0.1
done
cargo run --quiet --example trust_bench -- "oci+http://127.0.0.1:$port/strata/cache"
echo "load: $(uptime | sed 's/.*load average: //')"
