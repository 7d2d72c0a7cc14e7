#!/bin/sh
# The cost of signing and verifying per artifact (issue 27; target: under 50 ms each): the
# cryptography alone, then a small layer pushed signed vs unsigned and pulled verified vs
# unverified against Debian's docker-registry on loopback. Prints numbers; asserts nothing.
# Usage: bench/trust.sh   (RUNS=N for the number of pushes and pulls; default 9). The dev profile
# is enough: dependencies, the cryptography among them, are built with opt-level 2.
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d)
registry_pid=
trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT INT TERM
. bench/registry.sh
start_registry "$work"
cargo run --quiet --release --example trust_bench -- "oci+http://127.0.0.1:$registry_port/strata/cache"
echo "load: $(uptime | sed 's/.*load average: //')"
