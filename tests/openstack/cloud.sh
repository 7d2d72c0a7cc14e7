#!/usr/bin/env bash
# A real Keystone and Glance on loopback for the publish tests and benchmark, from the test venv
# (scripts/install-test-venv.sh): sqlite databases, Glance's file store, Glance behind
# keystonemiddleware, both under gunicorn. Everything lives in DIR:
#
#   cloud.sh start DIR   configure, start both, bootstrap an admin, create the `glance` service
#                        user, a `member` user in its own project `strata`, the image service and
#                        its endpoints, and write DIR/clouds.yaml (clouds `admin` and `member`)
#                        and DIR/cloud.env (ports, passwords, pids). Prints the seconds it took.
#   cloud.sh stop DIR    stops both (their process groups).
#
# Environment: STRATA_TEST_VENV (default REPO/.cache/venv); GLANCE_ENDPOINT overrides the URL
# registered for the image service (a proxy in front of Glance, for the interrupted-upload test).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${STRATA_TEST_VENV:-$repo/.cache/venv}
command=${1:?usage: cloud.sh start|stop DIR}
dir=${2:?usage: cloud.sh start|stop DIR}

stop() {
  for name in keystone glance; do
    if [ -f "$dir/$name.pid" ]; then
      kill -TERM -- "-$(cat "$dir/$name.pid")" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

if [ "$command" = stop ]; then
  stop
  exit 0
fi
if [ ! -x "$venv/bin/keystone-manage" ] || [ ! -x "$venv/bin/glance-manage" ] || [ ! -x "$venv/bin/openstack" ]; then
  echo "cloud.sh: Keystone, Glance or the OpenStack client is missing from $venv: run scripts/install-test-venv.sh" >&2
  exit 1
fi
started=$(date +%s.%N)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
keystone_port=$(free_port)
glance_port=$(free_port)
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }
admin_password=$(secret)
glance_password=$(secret)
member_password=$(secret)
keystone_url="http://127.0.0.1:$keystone_port/v3"
glance_url=${GLANCE_ENDPOINT:-http://127.0.0.1:$glance_port}

# Keystone.
mkdir -p "$dir/keystone" "$dir/glance/images" "$dir/glance/staging"
cat >"$dir/keystone/keystone.conf" <<EOF
[DEFAULT]
log_file = $dir/keystone.log
[database]
connection = sqlite:///$dir/keystone/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = $dir/keystone/fernet-keys
[fernet_receipts]
key_repository = $dir/keystone/fernet-keys
[credential]
key_repository = $dir/keystone/credential-keys
EOF
# Keystone's WSGI module parses sys.argv as its own options: gunicorn's would make it fail.
cat >"$dir/keystone/keystone_wsgi.py" <<'EOF'
import sys
sys.argv = sys.argv[:1]
from keystone.wsgi.api import application  # noqa: E402,F401
EOF
manage=("$venv/bin/keystone-manage" --config-file "$dir/keystone/keystone.conf")
"${manage[@]}" db_sync >>"$dir/setup.log" 2>&1
"${manage[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" >>"$dir/setup.log" 2>&1
"${manage[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" >>"$dir/setup.log" 2>&1
"${manage[@]}" bootstrap --bootstrap-password "$admin_password" \
  --bootstrap-admin-url "$keystone_url" --bootstrap-internal-url "$keystone_url" \
  --bootstrap-public-url "$keystone_url" --bootstrap-region-id RegionOne >>"$dir/setup.log" 2>&1
OS_KEYSTONE_CONFIG_DIR="$dir/keystone" setsid "$venv/bin/gunicorn" -b "127.0.0.1:$keystone_port" -w 2 \
  --pythonpath "$dir/keystone" --error-logfile "$dir/keystone-gunicorn.log" keystone_wsgi:application \
  </dev/null >>"$dir/keystone-gunicorn.log" 2>&1 &
echo $! >"$dir/keystone.pid"

# Glance.
cp "$venv/etc/glance/glance-api-paste.ini" "$dir/glance/"
cat >"$dir/glance/glance-api.conf" <<EOF
[DEFAULT]
log_file = $dir/glance.log
enabled_backends = file:file
[database]
connection = sqlite:///$dir/glance/glance.db
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = $dir/glance/images/
[os_glance_staging_store]
filesystem_store_datadir = $dir/glance/staging/
[os_glance_tasks_store]
filesystem_store_datadir = $dir/glance/tasks/
[paste_deploy]
flavor = keystone
[keystone_authtoken]
www_authenticate_uri = $keystone_url
auth_url = $keystone_url
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = glance
password = $glance_password
[oslo_policy]
enforce_new_defaults = true
enforce_scope = true
EOF
"$venv/bin/glance-manage" --config-dir "$dir/glance" db_sync >>"$dir/setup.log" 2>&1

wait_port() {
  local port=$1 name=$2 deadline=$((SECONDS + 120))
  until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "cloud.sh: $name did not listen on $port within 120s; see $dir/$name-gunicorn.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}
wait_port "$keystone_port" keystone

# The service user, the member's project and user, the image service.
export OS_AUTH_URL=$keystone_url OS_USERNAME=admin OS_PASSWORD=$admin_password OS_PROJECT_NAME=admin \
  OS_USER_DOMAIN_ID=default OS_PROJECT_DOMAIN_ID=default OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=RegionOne
"$venv/bin/python" - "$glance_password" "$member_password" "$glance_url" >>"$dir/setup.log" 2>&1 <<'EOF'
import sys
import openstack
glance_password, member_password, glance_url = sys.argv[1:4]
cloud = openstack.connect()
identity = cloud.identity
service_project = identity.create_project(name="service", domain_id="default")
project = identity.create_project(name="strata", domain_id="default")
glance = identity.create_user(name="glance", password=glance_password, domain_id="default")
member = identity.create_user(name="member", password=member_password, domain_id="default",
                              default_project_id=project.id)
roles = {role.name: role for role in identity.roles()}
identity.assign_project_role_to_user(service_project, glance, roles["admin"])
identity.assign_project_role_to_user(service_project, glance, roles["service"])
identity.assign_project_role_to_user(project, member, roles["member"])
service = identity.create_service(name="glance", type="image")
for interface in ("public", "internal", "admin"):
    identity.create_endpoint(service_id=service.id, interface=interface, url=glance_url,
                             region_id="RegionOne")
EOF
unset OS_AUTH_URL OS_USERNAME OS_PASSWORD OS_PROJECT_NAME OS_USER_DOMAIN_ID OS_PROJECT_DOMAIN_ID \
  OS_IDENTITY_API_VERSION OS_REGION_NAME

OS_GLANCE_CONFIG_DIR="$dir/glance" setsid "$venv/bin/gunicorn" -b "127.0.0.1:$glance_port" -w 1 \
  --timeout 600 --error-logfile "$dir/glance-gunicorn.log" glance.wsgi.api:application \
  </dev/null >>"$dir/glance-gunicorn.log" 2>&1 &
echo $! >"$dir/glance.pid"
wait_port "$glance_port" glance

umask 077
cat >"$dir/clouds.yaml" <<EOF
clouds:
  admin:
    auth:
      auth_url: $keystone_url
      username: admin
      password: $admin_password
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  member:
    auth:
      auth_url: $keystone_url
      username: member
      password: $member_password
      project_name: strata
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
EOF
cat >"$dir/cloud.env" <<EOF
KEYSTONE_PORT=$keystone_port
GLANCE_PORT=$glance_port
KEYSTONE_URL=$keystone_url
GLANCE_URL=http://127.0.0.1:$glance_port
ADMIN_PASSWORD=$admin_password
MEMBER_PASSWORD=$member_password
EOF
python3 -c "import time; print(f'{time.time() - $started:.1f}')"
