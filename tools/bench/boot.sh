#!/usr/bin/env bash
# Warm-boot latency: provision() of a cached image to a defined domain on
# test:///default, p50/p99, with the Glance record lookup timed on its own.
#
#   tools/bench/boot.sh [bench binary] [boots] [instances parent directory]
#
# Starts the test peers (tools/peers/start: a real Glance on loopback),
# uploads a 64 MiB qcow2 image, and runs kiln_boot_bench against it. The
# instances path is on a real disk (/var/tmp) unless a directory is given
# (e.g. /dev/shm, to see the cost without fsync latency).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench=${1:-"$here/../../build/tools/kiln_boot_bench"}
boots=${2:-200}
parent=${3:-/var/tmp}

work=$(mktemp -d "$parent/kiln-boot-bench.XXXXXX")
env_file="$work/peers.env"
trap '"$here/../peers/stop" "$env_file" >/dev/null 2>&1 || true; rm -rf -- "$work"' EXIT
"$here/../peers/start" "$env_file" >/dev/null
# shellcheck disable=SC1090
source "$env_file"

qemu-img create -q -f qcow2 "$work/image.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0xab 0 4M" "$work/image.qcow2" >/dev/null
image_id=$(curl -sf -X POST "$GLANCE_URL/v2/images" -H 'Content-Type: application/json' \
  -d '{"name": "boot-bench", "disk_format": "qcow2", "container_format": "bare"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -sf -X PUT "$GLANCE_URL/v2/images/$image_id/file" -H 'Content-Type: application/octet-stream' \
  --data-binary "@$work/image.qcow2"

echo "every boot asks Glance for the image record (image_record_ttl = 0, the default):"
"$bench" "$GLANCE_URL" "$image_id" "$work/instances" "$boots" test:///default 0
echo "records remembered for an hour (image_record_ttl = 3600):"
"$bench" "$GLANCE_URL" "$image_id" "$work/instances-ttl" "$boots" test:///default 3600
