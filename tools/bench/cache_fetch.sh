#!/usr/bin/env bash
# kiln's cold fetch (download + verify + convert + publish) against the
# reference tools run one after the other: `curl -o file` then
# `qemu-img convert -f FMT -O raw`, on the same local Glance, same disk.
#
#   tools/bench/cache_fetch.sh [runs]        (default 5; not run in CI)
#
# Images: a 1 GiB raw holding ~300 MiB of random data in 10 scattered extents,
# and its qcow2. Prints each run, the medians, the ratios, kiln's peak RSS,
# and 32 concurrent acquisitions of one image against one.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
kilnctl=$(pwd)/build/tools/kilnctl
[ -x "$kilnctl" ] || { echo "build kilnctl first (tools/test or cmake --build build)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
chmod 0711 "$work"
trap 'tools/peers/stop "$work/peers.env" >/dev/null; rm -rf -- "$work"' EXIT
tools/peers/start "$work/peers.env" >/dev/null
. "$work/peers.env"

echo "making the images..."
truncate -s 1G "$work/image.raw"
for i in $(seq 0 9); do
  dd if=/dev/urandom of="$work/image.raw" bs=1M count=30 seek=$((i * 100)) conv=notrunc status=none
done
qemu-img convert -f raw -O qcow2 "$work/image.raw" "$work/image.qcow2"
upload() {
  local id
  id=$(curl -sS --fail-with-body -X POST "$GLANCE_URL/v2/images" -H 'Content-Type: application/json' \
    -d "{\"name\":\"bench-$1\",\"disk_format\":\"$1\",\"container_format\":\"bare\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  curl -sS --fail-with-body -X PUT "$GLANCE_URL/v2/images/$id/file" -H 'Content-Type: application/octet-stream' \
    -T "$2" >/dev/null
  echo "$id"
}
raw_id=$(upload raw "$work/image.raw")
qcow2_id=$(upload qcow2 "$work/image.qcow2")

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

kiln_fetch() {  # image id -> seconds
  rm -rf "$work/instances"; sync
  local start end
  start=$(now)
  "$kilnctl" --glance "$GLANCE_URL" --instances-path "$work/instances" cache fetch "$1" >/dev/null 2>&1
  end=$(now)
  echo "$end - $start" | bc
}

reference() {  # image id, format -> seconds
  rm -f "$work/ref.download" "$work/ref.raw"; sync
  local start end
  start=$(now)
  curl -sS -o "$work/ref.download" "$GLANCE_URL/v2/images/$1/file"
  qemu-img convert -f "$2" -O raw "$work/ref.download" "$work/ref.raw"
  end=$(now)
  echo "$end - $start" | bc
}

for format in raw qcow2; do
  id=$raw_id; [ "$format" = qcow2 ] && id=$qcow2_id
  : > "$work/times.kiln.$format"; : > "$work/times.ref.$format"
  for run in $(seq 1 "$runs"); do
    k=$(kiln_fetch "$id"); r=$(reference "$id" "$format")
    echo "$format run $run: kiln ${k}s, curl + qemu-img ${r}s"
    echo "$k" >> "$work/times.kiln.$format"; echo "$r" >> "$work/times.ref.$format"
  done
  km=$(median < "$work/times.kiln.$format"); rm_=$(median < "$work/times.ref.$format")
  echo "$format: median kiln ${km}s, curl + qemu-img ${rm_}s, ratio $(echo "scale=2; $km / $rm_" | bc)"
done

rm -rf "$work/instances"
rss=$(/usr/bin/time -f %M "$kilnctl" --glance "$GLANCE_URL" --instances-path "$work/instances" \
  cache fetch "$raw_id" 2>&1 >/dev/null | tail -n 1)
echo "peak RSS of a cold 1 GiB raw fetch: $((rss / 1024)) MiB"

# 32 concurrent acquisitions of one uncached image against one.
one() { rm -rf "$work/instances"; local s e; s=$(now); "$kilnctl" --glance "$GLANCE_URL" \
  --instances-path "$work/instances" cache fetch "$qcow2_id" >/dev/null 2>&1; e=$(now); echo "$e - $s" | bc; }
many() { rm -rf "$work/instances"; local s e; s=$(now)
  for _ in $(seq 1 32); do "$kilnctl" --glance "$GLANCE_URL" --instances-path "$work/instances" \
    cache fetch "$qcow2_id" >/dev/null 2>&1 & done; wait; e=$(now); echo "$e - $s" | bc; }
: > "$work/one"; : > "$work/many"
for run in $(seq 1 "$runs"); do one >> "$work/one"; many >> "$work/many"; done
o=$(median < "$work/one"); m=$(median < "$work/many")
echo "qcow2: one fetch ${o}s, 32 concurrent ${m}s, ratio $(echo "scale=2; $m / $o" | bc)"
