#!/usr/bin/env bash
# The Python judges the tests use (SBOM validators, Keystone, Glance, the OpenStack client), in
# one virtualenv: `STRATA_TEST_VENV`, default REPO/.cache/venv. Each requirements file in
# tests/venv/ is installed; the venv is reused while those files (and the Python) are unchanged,
# so a second run on one machine costs a second.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${STRATA_TEST_VENV:-$repo/.cache/venv}
shopt -s nullglob
requirements=("$repo"/tests/venv/*.txt)
if [ "${#requirements[@]}" -eq 0 ]; then
  echo "install-test-venv: no requirements in tests/venv/" >&2
  exit 0
fi
stamp=$(cat "${requirements[@]}" | cat - <(python3 --version) | sha256sum | cut -d' ' -f1)
if [ -f "$venv/.strata-stamp" ] && [ "$(cat "$venv/.strata-stamp")" = "$stamp" ]; then
  echo "install-test-venv: $venv is up to date"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  echo "install-test-venv: python3-venv is missing (apt-get install python3-venv)" >&2
  exit 1
fi
started=$SECONDS
# The stamp is written last: an install cut short is made again by the next run.
rm -rf "$venv"
python3 -m venv "$venv"
args=()
for file in "${requirements[@]}"; do args+=(-r "$file"); done
"$venv/bin/pip" install -q --disable-pip-version-check "${args[@]}"
echo "$stamp" >"$venv/.strata-stamp"
echo "install-test-venv: $venv made in $((SECONDS - started))s"
