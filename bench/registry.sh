# Sourced by the bench scripts: start_registry DIR starts Debian's docker-registry on a free
# loopback port with its data in DIR/registry-data, waits (20 s at most) until it answers, and
# sets `registry_port` and `registry_pid` (the caller kills it when done).
start_registry() {
  local dir=$1
  command -v docker-registry >/dev/null ||
    { echo "needs docker-registry: apt-get install docker-registry" >&2; return 1; }
  registry_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/registry-data
http:
  addr: 127.0.0.1:$registry_port
YML
  docker-registry serve "$dir/registry.yml" >/dev/null 2>&1 &
  registry_pid=$!
  local deadline=$(( $(date +%s) + 20 ))
  until curl -fsS "http://127.0.0.1:$registry_port/v2/" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "the registry did not start" >&2; return 1; }
    sleep 0.1
  done
}
