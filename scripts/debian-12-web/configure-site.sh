#!/usr/bin/env bash
# The `final` stage of images/debian-12-web.toml, after the site was uploaded to
# /var/www/strata-web and its server block to /etc/nginx/strata-web.conf: makes
# it nginx's only site, checks the configuration, reloads nginx and checks
# that / and /health answer. Runs as root, idempotent.
set -euo pipefail

say() { echo "configure-site: $*"; }
die() { echo "configure-site: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v nginx >/dev/null || die "nginx is not installed; the app-base stage installs it"
[ -f /var/www/strata-web/index.html ] || die "/var/www/strata-web/index.html is missing; upload debian-12-web/site/ first"
[ -f /etc/nginx/strata-web.conf ] || die "/etc/nginx/strata-web.conf is missing; upload debian-12-web/nginx-site.conf first"

chown -R root:root /var/www/strata-web
chmod -R u+rwX,go+rX,go-w /var/www/strata-web
install -m 0644 /etc/nginx/strata-web.conf /etc/nginx/sites-available/strata-web
rm -f /etc/nginx/strata-web.conf
ln -sfn ../sites-available/strata-web /etc/nginx/sites-enabled/strata-web
rm -f /etc/nginx/sites-enabled/default
nginx -t -q || die "nginx rejects its configuration"
systemctl enable nginx.service >/dev/null 2>&1
if systemctl is-active --quiet nginx.service; then systemctl reload nginx.service; else systemctl start nginx.service; fi

# --- verify, with a deadline ----------------------------------------------------
python3 - <<'PY' || die "nginx does not serve the site on 127.0.0.1:80"
import sys, time, urllib.request
deadline = time.monotonic() + 30
for path, want in (("/health", '"status": "ok"'), ("/", "It works.")):
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1{path}", timeout=2) as reply:
                body = reply.read().decode()
                if reply.status == 200 and want in body:
                    print(f"configure-site: GET {path} -> 200")
                    break
                last = f"{reply.status}"
        except Exception as err:  # noqa: BLE001
            last = repr(err)
        if time.monotonic() > deadline:
            sys.exit(f"configure-site: GET {path}: {last}")
        time.sleep(0.2)
PY
say "verified"
