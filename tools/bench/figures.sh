#!/usr/bin/env bash
# Every figure of issue 15 with its references side by side, medians of
# several runs, in one run (not run in CI: the figures depend on the CPU and
# the disk, which it names).
#
#   tools/bench/figures.sh [runs] [sections]     runs default 5; sections default "fetch storm boot"
#   KILN_VARIANTS="before=/path/kilnctl after=build/tools/kilnctl" tools/bench/figures.sh 5 fetch
#        compares kilnctl builds in the same run, interleaved (same load, same disk).
#
# fetch  cold fetch (`kilnctl cache fetch`, a fresh instances path each run) of
#        the rig's images: a 1 GiB raw holding 300 MiB of random data in 10
#        scattered extents, and its qcow2, from a local Glance; and a compressed
#        qcow2 (qemu-img convert -c, zlib, "qcow2c") of the same layout holding
#        300 MiB of this machine's shared libraries (random data does not
#        compress, a disk's files do, about 2.5x). References per
#        run: curl -o, qemu-img convert -O raw of curl's file, `openssl dgst
#        -sha512` of the image file, nova's own fetch_to_raw (python3-nova,
#        timed inside the process). floor = max(curl + convert, sha512).
#        Prints kiln's phases (ms, from `--json`), its peak RSS, and `dd
#        conv=fsync` of 300 MiB as the disk's reference.
# storm  32 concurrent `kilnctl cache fetch` of one uncached qcow2 vs one.
# kstorm 32 concurrent boots of one uncached qcow2 through kilnd's socket vs
#        one, with the image-record and file GETs Glance saw (not in the default set).
# boot   warm boot: in-process provision() (kiln_boot_bench) and through
#        kilnd's socket (rpc_bench.py), test:///default, instances on /var/tmp;
#        `kilnctl boot` through kilnd vs `--direct`.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
runs=${1:-5}
sections=${2:-"fetch storm boot"}
build=${KILN_BUILD:-$root/build}
kilnctl=$build/tools/kilnctl
[ -x "$kilnctl" ] || { echo "build kilnctl first (cmake --build build)" >&2; exit 1; }
variants=${KILN_VARIANTS:-"kiln=$kilnctl"}

work=$(mktemp -d /var/tmp/kiln-figures.XXXXXX)
chmod 0711 "$work"
kilnd_pid=
cleanup() {
  [ -n "$kilnd_pid" ] && kill -TERM "$kilnd_pid" 2>/dev/null && wait "$kilnd_pid" 2>/dev/null || true
  tools/peers/stop "$work/peers.env" >/dev/null 2>&1 || true
  rm -rf -- "$work"
}
trap cleanup EXIT
tools/peers/start "$work/peers.env" >/dev/null
. "$work/peers.env"

now() { date +%s.%N; }
ms_since() { echo "($(now) - $1) * 1000" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
secs() { printf '%.2f s' "$(echo "scale=3; $1 / 1000" | bc)"; }

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores," \
  "$(grep -qw sha_ni /proc/cpuinfo && echo SHA-NI || echo 'no SHA-NI'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk: $(df -T /var/tmp | awk 'NR == 2 {print $2 " on " $1}'), kernel $(uname -r); $runs runs, medians"

upload() {  # disk_format file -> image id
  local id
  id=$(curl -sS --fail-with-body -X POST "$GLANCE_URL/v2/images" -H 'Content-Type: application/json' \
    -d "{\"name\":\"bench-$1\",\"disk_format\":\"$1\",\"container_format\":\"bare\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  curl -sS --fail-with-body -X PUT "$GLANCE_URL/v2/images/$id/file" -H 'Content-Type: application/octet-stream' \
    -T "$2" >/dev/null
  echo "$id"
}

truncate -s 1G "$work/image.raw"
for i in $(seq 0 9); do
  dd if=/dev/urandom of="$work/image.raw" bs=1M count=30 seek=$((i * 100)) conv=notrunc status=none
done
qemu-img convert -f raw -O qcow2 "$work/image.raw" "$work/image.qcow2"
declare -A image_id
image_id[raw]=$(upload raw "$work/image.raw")
image_id[qcow2]=$(upload qcow2 "$work/image.qcow2")
fetch_formats="raw qcow2"
if [[ " $sections " == *" fetch "* ]]; then
  # The compressed image: the same extents, filled from /usr/lib's shared objects.
  truncate -s 1G "$work/libs.raw"
  find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' -size +64k -print0 | sort -z |
    xargs -0 cat 2>/dev/null | head -c $((300 << 20)) > "$work/libs.data" || true
  for i in $(seq 0 9); do
    dd if="$work/libs.data" of="$work/libs.raw" bs=1M count=30 skip=$((i * 30)) seek=$((i * 100)) \
      conv=notrunc status=none
  done
  qemu-img convert -c -f raw -O qcow2 "$work/libs.raw" "$work/image.qcow2c"
  rm -f "$work/libs.raw" "$work/libs.data"
  image_id[qcow2c]=$(upload qcow2 "$work/image.qcow2c")
  fetch_formats="raw qcow2 qcow2c"
  echo "compressed qcow2: $(($(stat -c %s "$work/image.qcow2c") >> 20)) MiB for 300 MiB of data"
fi

kiln_fetch() {  # format run variant binary -> appends ms to times.VARIANT.FMT, writes phases.VARIANT.FMT.RUN, rss
  rm -rf "$work/instances"; sync
  local start
  start=$(now)
  /usr/bin/time -f '%M %U %S' -o "$work/rss.$3.$1.$2" "$4" --json --glance "$GLANCE_URL" \
    --instances-path "$work/instances" cache fetch "${image_id[$1]}" > "$work/phases.$3.$1.$2"
  ms_since "$start" >> "$work/times.$3.$1"
}

references() {  # format -> appends ms to times.{curl,convert,sha512,nova}.FMT
  rm -f "$work/ref.download" "$work/ref.raw" "$work/nova.raw"; sync
  local start
  start=$(now)
  curl -sS -o "$work/ref.download" "$GLANCE_URL/v2/images/${image_id[$1]}/file"
  ms_since "$start" >> "$work/times.curl.$1"
  start=$(now)
  qemu-img convert -f "${1%c}" -O raw "$work/ref.download" "$work/ref.raw"
  ms_since "$start" >> "$work/times.convert.$1"
  start=$(now)
  openssl dgst -sha512 "$work/image.$1" >/dev/null
  ms_since "$start" >> "$work/times.sha512.$1"
  rm -f "$work/ref.download" "$work/ref.raw"; sync
  if /usr/bin/python3 -c 'import nova' 2>/dev/null; then
    echo "$(/usr/bin/python3 tools/bench/nova_fetch.py "$GLANCE_URL" "${image_id[$1]}" "$work/nova.raw" 2>/dev/null) * 1000" |
      bc >> "$work/times.nova.$1" || true
  fi
}

phase_medians() {  # variant format -> "name median" lines, in the order of the first run
  python3 - "$work" "$1" "$2" <<'PY'
import glob, json, statistics, sys
work, variant, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
runs = [json.load(open(f)).get("phases_ms", {}) for f in sorted(glob.glob(f"{work}/phases.{variant}.{fmt}.*"))]
# In the order they run (kilnctl's JSON sorts keys).
order = ["download", "stream_finish", "fsync_part", "verify", "inspect", "convert_streamed", "convert", "unlink_part", "fsync_converted",
         "base_digest", "fsync_and_digest", "publish"]
names = sorted({n for r in runs for n in r}, key=lambda n: (order.index(n) if n in order else len(order), n))
for name in names:
    values = [r[name] for r in runs if name in r]
    print(f"{name} {statistics.median(values):.0f}")
PY
}

if [[ " $sections " == *" fetch "* ]]; then
  for format in $fetch_formats; do
    for run in $(seq 1 "$runs"); do
      for variant in $variants; do kiln_fetch "$format" "$run" "${variant%%=*}" "${variant#*=}"; done
      references "$format"
    done
  done
  dd_ms=()
  for run in $(seq 1 "$runs"); do
    start=$(now)
    dd if="$work/image.raw" of="$work/dd.out" bs=1M count=300 conv=fsync status=none
    dd_ms+=("$(ms_since "$start")")
    rm -f "$work/dd.out"
  done
  dd_median=$(printf '%s\n' "${dd_ms[@]}" | median)

  echo
  echo "| figure | kiln | references | ratio to floor |"
  echo "|---|---|---|---|"
  for format in $fetch_formats; do
    c=$(median < "$work/times.curl.$format")
    v=$(median < "$work/times.convert.$format")
    s=$(median < "$work/times.sha512.$format")
    n=$( [ -s "$work/times.nova.$format" ] && median < "$work/times.nova.$format" || echo "")
    cv=$(echo "$c + $v" | bc)
    floor=$(echo "if ($cv > $s) $cv else $s" | bc)
    for variant in $variants; do
      name=${variant%%=*}
      k=$(median < "$work/times.$name.$format")
      rss=$(cat "$work"/rss."$name"."$format".* | awk '{print $1}' | sort -n | tail -1)
      cpu=$(cat "$work"/rss."$name"."$format".* | awk '{print $2 + $3}' | median)
      nova=""
      [ -n "$n" ] && nova="; nova fetch_to_raw $(secs "$n") (kiln/nova $(ratio "$k" "$n"))"
      echo "| cold fetch, $format, $name (CPU ${cpu} s, peak RSS $((rss / 1024)) MiB) | $(secs "$k") |" \
        "curl $(secs "$c"); curl + qemu-img convert $(secs "$cv"); openssl sha512 $(secs "$s");" \
        "floor $(secs "$floor")$nova | **$(ratio "$k" "$floor")x** |"
    done
  done
  echo "| dd conv=fsync of 300 MiB | | $(secs "$dd_median") | |"
  for format in $fetch_formats; do
    for variant in $variants; do
      echo
      echo "${variant%%=*}: cold fetch of the $format image, ms per phase (medians):"
      phase_medians "${variant%%=*}" "$format" | awk '{printf "  %-16s %6d\n", $1, $2}'
    done
  done
fi

if [[ " $sections " == *" storm "* ]]; then
  one() { rm -rf "$work/instances"; sync; local s; s=$(now); "$kilnctl" --glance "$GLANCE_URL" \
    --instances-path "$work/instances" cache fetch "${image_id[qcow2]}" >/dev/null 2>&1; ms_since "$s"; }
  many() { rm -rf "$work/instances"; sync; local s; s=$(now)
    for _ in $(seq 1 32); do "$kilnctl" --glance "$GLANCE_URL" --instances-path "$work/instances" \
      cache fetch "${image_id[qcow2]}" >/dev/null 2>&1 & done; wait; ms_since "$s"; }
  : > "$work/one"; : > "$work/many"
  for _ in $(seq 1 "$runs"); do one >> "$work/one"; many >> "$work/many"; done
  o=$(median < "$work/one"); m=$(median < "$work/many")
  echo
  echo "| 32 concurrent cold fetches of one qcow2 (kilnctl, one host) | $(secs "$m") | one fetch $(secs "$o") | $(ratio "$m" "$o")x (goal 1.1x) |"
fi

start_kilnd() {  # once, for the sections that go through kilnd's socket
  [ -n "$kilnd_pid" ] && return
  cat > "$work/kiln.conf" <<CONF
[DEFAULT]
instances_path = $work/rpc-instances
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

if [[ " $sections " == *" kstorm "* ]]; then
  # Each run boots a freshly uploaded copy of the qcow2, so it is cold.
  start_kilnd
  : > "$work/kone"; : > "$work/kmany"; : > "$work/kwarm"
  for _ in $(seq 1 "$runs"); do
    python3 tools/bench/rpc_bench.py storm "$work/kiln.sock" "$(upload qcow2 "$work/image.qcow2")" 1 \
      "$ROOT/glance/glance-api.log" >> "$work/kone"
    storm_image=$(upload qcow2 "$work/image.qcow2")
    python3 tools/bench/rpc_bench.py storm "$work/kiln.sock" "$storm_image" 32 \
      "$ROOT/glance/glance-api.log" >> "$work/kmany"
    # The same 32 boots again, the base now cached: what the boots cost
    # without the download.
    python3 tools/bench/rpc_bench.py storm "$work/kiln.sock" "$storm_image" 32 \
      "$ROOT/glance/glance-api.log" >> "$work/kwarm"
  done
  o=$(cut -d' ' -f1 "$work/kone" | median); m=$(cut -d' ' -f1 "$work/kmany" | median)
  echo
  echo "| 32 concurrent boots of one uncached qcow2 through kilnd vs one | $(secs "$m") | one boot $(secs "$o") | $(ratio "$m" "$o")x (goal 1.1x) |"
  echo "  Glance requests per run for the 32 boots (record GETs, file GETs): $(cut -d' ' -f2,3 "$work/kmany" | tr ' \n' ',;')"
  echo "  the same 32 boots with the image cached: $(secs "$(cut -d' ' -f1 "$work/kwarm" | median)")"
fi

if [[ " $sections " == *" boot "* ]]; then
  qemu-img create -q -f qcow2 "$work/small.qcow2" 64M
  qemu-io -f qcow2 -c "write -P 0xab 0 4M" "$work/small.qcow2" >/dev/null
  small=$(upload qcow2 "$work/small.qcow2")
  echo
  echo "warm boot, in process (provision() to defined, test:///default, records remembered):"
  "$build/tools/kiln_boot_bench" "$GLANCE_URL" "$small" "$work/boot-instances" 100 test:///default 3600 | sed 's/^/  /'
  start_kilnd
  echo "warm boot through kilnd (request to operation succeeded; goal p50 <= 5 ms, p99 <= 20 ms):"
  python3 tools/bench/rpc_bench.py boot "$work/kiln.sock" "$small" 100 | sed 's/^/  /'
  python3 tools/bench/rpc_bench.py boot "$work/kiln.sock" "$small" 100 "$GLANCE_URL" | sed 's/^/  /'
  boot_once() {  # extra kilnctl options... -> ms
    local s uuid
    uuid=$(cat /proc/sys/kernel/random/uuid)
    s=$(now)
    "$kilnctl" --config "$work/kiln.conf" "$@" boot --image "$small" --uuid "$uuid" --vcpus 1 --memory-mb 64 \
      --root-gb 1 --swap-mb 0 --no-start >/dev/null
    ms_since "$s"
    "$kilnctl" --config "$work/kiln.conf" "$@" delete "$uuid" >/dev/null 2>&1 || true
  }
  : > "$work/via"; : > "$work/direct"
  for _ in $(seq 1 "$runs"); do boot_once >> "$work/via"; boot_once --direct >> "$work/direct"; done
  via=$(median < "$work/via"); direct=$(median < "$work/direct")
  echo "| kilnctl boot through kilnd vs --direct | $(printf '%.0f' "$via") ms | --direct $(printf '%.0f' "$direct") ms | $(ratio "$via" "$direct")x (goal 1.2x) |"
fi
