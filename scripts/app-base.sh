#!/usr/bin/env bash
# The `app-base` stage of images/demo.toml: the demo app's system user and
# folders, and its runtime (python3, which the base image carries) checked and
# precompiled. Runs as root, uses no network, idempotent.
#   - system user and group `app` (home /var/lib/app, no login shell)
#   - /opt/app (code) and /var/lib/app (state), owned by app
#   - python3 >= 3.9 with the stdlib modules the app imports, stdlib byte-compiled
set -euo pipefail

say() { echo "app-base: $*"; }
die() { echo "app-base: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

# --- user and folders ---------------------------------------------------------
getent group app >/dev/null || groupadd --system app
if ! id -u app >/dev/null 2>&1; then
  useradd --system --gid app --home-dir /var/lib/app --no-create-home \
    --shell /usr/sbin/nologin --comment "strata demo app" app
fi
install -d -o app -g app -m 0755 /opt/app
install -d -o app -g app -m 0750 /var/lib/app
say "user $(id app)"

# --- runtime ------------------------------------------------------------------
python=$(command -v python3) || die "python3 is not installed; the base image must carry it (this stage uses no network)"
"$python" - <<'PY' || die "python3 is too old or lacks stdlib modules the app needs"
import sys
assert sys.version_info >= (3, 9), sys.version
import http.server, json, socketserver, signal, threading, urllib.request  # noqa: F401
PY
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
# Byte-compile the stdlib once here, so the app's first start does not (and
# cannot: its unit makes the file system read-only for it). Debian ships a few
# files that do not compile on purpose (lib2to3 test data); those are excluded.
"$python" -m compileall -q -j 0 -x '/(test|tests|lib2to3)/' "$stdlib" >/dev/null \
  || die "python3 -m compileall failed on $stdlib"
say "runtime $("$python" --version) at $python, stdlib compiled ($stdlib)"

# --- verify -------------------------------------------------------------------
[ "$(stat -c %U:%G /opt/app)" = app:app ] || die "/opt/app is not owned by app:app"
[ "$(stat -c %U:%G /var/lib/app)" = app:app ] || die "/var/lib/app is not owned by app:app"
[ "$(getent passwd app | cut -d: -f7)" = /usr/sbin/nologin ] || die "user app has a login shell"
su -s /bin/sh app -c "$python -c 'import http.server'" || die "user app cannot run python3"
say "verified"
