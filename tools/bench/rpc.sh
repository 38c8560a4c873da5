#!/usr/bin/env bash
# kilnd's RPC figures (not run in CI):
#   - requests/s and p50/p99 of GET /v1/instances with 1,000 instances known;
#   - warm-boot latency through the socket on test:///default, request to
#     operation succeeded (compare tools/bench/boot.sh: provision() in-process).
#
#   tools/bench/rpc.sh [build dir] [boots] [seconds] [clients]
#
# Starts the test peers (a real Glance on loopback), uploads a 64 MiB qcow2,
# and runs kilnd with a scratch instances path under /var/tmp.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-"$here/../../build"}
boots=${2:-100}
seconds=${3:-10}
clients=${4:-4}

work=$(mktemp -d /var/tmp/kiln-rpc-bench.XXXXXX)
env_file="$work/peers.env"
kilnd_pid=
cleanup() {
  [ -n "$kilnd_pid" ] && kill -TERM "$kilnd_pid" 2>/dev/null && wait "$kilnd_pid" 2>/dev/null || true
  "$here/../peers/stop" "$env_file" >/dev/null 2>&1 || true
  rm -rf -- "$work"
}
trap cleanup EXIT
"$here/../peers/start" "$env_file" >/dev/null
# shellcheck disable=SC1090
source "$env_file"

qemu-img create -q -f qcow2 "$work/image.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0xab 0 4M" "$work/image.qcow2" >/dev/null
image_id=$(curl -sf -X POST "$GLANCE_URL/v2/images" -H 'Content-Type: application/json' \
  -d '{"name": "rpc-bench", "disk_format": "qcow2", "container_format": "bare"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -sf -X PUT "$GLANCE_URL/v2/images/$image_id/file" -H 'Content-Type: application/octet-stream' \
  --data-binary @"$work/image.qcow2" >/dev/null

start_kilnd() {  # instances path
  cat > "$work/kiln.conf" <<CONF
[DEFAULT]
instances_path = $1
[glance]
api_servers = $GLANCE_URL
[libvirt]
connection_uri = test:///default
virt_type = qemu
[rpc]
unix_socket = $work/kiln.sock
CONF
  "$build/agent/kilnd" --config "$work/kiln.conf" 2>"$work/kilnd.log" &
  kilnd_pid=$!
  for _ in $(seq 100); do [ -S "$work/kiln.sock" ] && break; sleep 0.1; done
}
stop_kilnd() { kill -TERM "$kilnd_pid"; wait "$kilnd_pid" || true; kilnd_pid=; }

# 1,000 instance directories (listing reads directories and libvirt, not disks).
mkdir -p "$work/many"
for _ in $(seq 1000); do mkdir "$work/many/$(cat /proc/sys/kernel/random/uuid)"; done
start_kilnd "$work/many"
python3 "$here/rpc_bench.py" list "$work/kiln.sock" "$seconds" "$clients"
stop_kilnd

start_kilnd "$work/boots"
python3 "$here/rpc_bench.py" boot "$work/kiln.sock" "$image_id" "$boots"
stop_kilnd
