#!/usr/bin/env bash
# The `final` stage of images/demo.toml, after the app was uploaded to /opt/app:
# installs the strata-demo.service unit that starts the app at boot on
# $APP_PORT (default 8080), enables and starts it, checks GET /health answers
# 200 with {"status": "ok"}, and byte-compiles the app. Runs as root, uses no
# network, idempotent. Needs the `app` user from scripts/app-base.sh.
set -euo pipefail

say() { echo "install-app: $*"; }
die() { echo "install-app: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

port=${APP_PORT:-8080}
case "$port" in
  ''|*[!0-9]*) die "APP_PORT must be a TCP port number, got '$port' (set vars.app_port in the definition)" ;;
esac
{ [ "$port" -ge 1 ] && [ "$port" -le 65535 ]; } || die "APP_PORT $port is not in 1-65535"
id -u app >/dev/null 2>&1 || die "no user 'app'; the app-base stage (scripts/app-base.sh) creates it"
[ -f /opt/app/app.py ] || die "/opt/app/app.py is missing; upload images/demo/app/ to /opt/app/ before this step"
[ -f /opt/app/strata-demo.service ] || die "/opt/app/strata-demo.service is missing; upload images/demo/app/ to /opt/app/"

# The code belongs to app, readable by all, writable by none else.
chown -R app:app /opt/app
chmod -R u+rwX,go+rX,go-w /opt/app

# Warm the caches: the unit makes /opt/app read-only for the app.
python3 -m compileall -q /opt/app >/dev/null || die "python3 -m compileall failed on /opt/app"

umask 022
printf '# Written by strata scripts/install-app.sh\nAPP_PORT=%s\n' "$port" >/etc/default/strata-demo.tmp
mv -f /etc/default/strata-demo.tmp /etc/default/strata-demo
install -m 0644 /opt/app/strata-demo.service /etc/systemd/system/strata-demo.service.tmp
mv -f /etc/systemd/system/strata-demo.service.tmp /etc/systemd/system/strata-demo.service
systemctl daemon-reload
systemctl enable strata-demo.service >/dev/null 2>&1 || die "systemctl enable strata-demo.service failed"
systemctl restart strata-demo.service || { journalctl -u strata-demo.service -n 20 --no-pager >&2 || true; die "strata-demo.service did not start"; }
say "strata-demo.service enabled and started on port $port"

# --- verify: GET /health answers 200 {"status": "ok"} within 30 s -------------
python3 - "$port" <<'PY' || { journalctl -u strata-demo.service -n 20 --no-pager >&2 || true; die "GET http://127.0.0.1:$port/health did not answer 200 {\"status\": \"ok\"}"; }
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/health"
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            body = json.load(reply)
            if reply.status == 200 and body.get("status") == "ok":
                print(f"install-app: {url} -> {reply.status} {json.dumps(body)}")
                break
            last = f"{reply.status} {body}"
    except Exception as err:  # noqa: BLE001 (any failure is retried until the deadline)
        last = repr(err)
    if time.monotonic() > deadline:
        sys.exit(f"install-app: no healthy answer from {url}: {last}")
    time.sleep(0.2)
PY
[ "$(systemctl is-enabled strata-demo.service)" = enabled ] || die "strata-demo.service is not enabled"
say "verified"
