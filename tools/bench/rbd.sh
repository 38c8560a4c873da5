#!/usr/bin/env bash
# Issue 18's figures (not run in CI): what a boot costs with images_type = rbd against the local-file path,
# for a 64 MiB and a 1 GiB raw image (each holding 32 MiB of random data at its start), medians of several
# runs, on the rig's private single-node Ceph (a memstore OSD of 4 GiB) and Glance (file store and rbd store,
# thin-provisioned), `kilnctl --direct boot --no-start` on the rig's libvirtd: the disks are made and the
# domain is defined; QEMU's start (the same for every case) is left out.
#
#   tools/bench/rbd.sh [runs]      runs default 3
#
# rbd-clone   the image is in Glance's RBD store: the root disk is a clone of Glance's snapshot.
# file-cold   images_type = default, a fresh instances path each run: download, verify, overlay.
# pool-first  images_type = rbd, the image in Glance's file store, a fresh pool base name each run
#             (a new image): download, verify, write the pool base, clone.
# pool-second the same image booted again from a fresh instances path (another host): clone only.
# Each line also gives the image-data GETs Glance served for the case's boots.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
runs=${1:-3}
kilnctl=${KILN_BUILD:-$root/build}/tools/kilnctl
[ -x "$kilnctl" ] || { echo "build kilnctl first (cmake --build build)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/kiln-rbd-bench.XXXXXX)
chmod 0711 "$work"
cleanup() {
  tools/peers/stop "$work/peers.env" >/dev/null 2>&1 || true
  tools/peers/ceph stop "$work/ceph" >/dev/null 2>&1 || true
  rm -rf -- "$work"
}
trap cleanup EXIT
KILN_CEPH_MEMSTORE_BYTES=$((4 << 30)) tools/peers/ceph start "$work/ceph" >/dev/null
. "$work/ceph/ceph.env"
tools/peers/start "$work/peers.env" --ceph "$work/ceph" >/dev/null
. "$work/peers.env"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg); $runs runs, medians; boot = disks made and domain defined"

# The libvirt ceph secret with client.kiln's key, and kiln.conf for each backend.
secret=$(cat /proc/sys/kernel/random/uuid)
cat > "$work/secret.xml" <<XML
<secret ephemeral='no' private='no'><uuid>$secret</uuid><usage type='ceph'><name>client.kiln $secret</name></usage></secret>
XML
virsh -q -c "$LIBVIRT_URI" secret-define "$work/secret.xml" >/dev/null
virsh -q -c "$LIBVIRT_URI" secret-set-value --secret "$secret" \
  --base64 "$(ceph --conf "$CEPH_CONF" auth get-key client.kiln)" >/dev/null 2>&1
printf '[libvirt]\nimages_type = rbd\nimages_rbd_pool = vms\nimages_rbd_ceph_conf = %s\nrbd_user = kiln\nrbd_secret_uuid = %s\n' \
  "$CEPH_CONF" "$secret" > "$work/rbd.conf"
printf '[libvirt]\nimages_type = default\n' > "$work/file.conf"

upload() {  # store file -> image id
  local id
  id=$(curl -sS --fail-with-body -X POST "$GLANCE_URL/v2/images" -H 'Content-Type: application/json' \
    -d '{"name": "bench", "disk_format": "raw", "container_format": "bare"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -sS --fail-with-body -X PUT "$GLANCE_URL/v2/images/$id/file" -H 'Content-Type: application/octet-stream' \
    ${1:+-H "X-Image-Meta-Store: $1"} -T "$2" >/dev/null  # -T streams the file (--data-binary reads it into memory)
  echo "$id"
}
file_gets() { grep -c "GET /v2/images/$1/file" "$ROOT/glance/glance-api.log" || true; }

boot() {  # conf instances image -> milliseconds
  local uuid start ms
  uuid=$(cat /proc/sys/kernel/random/uuid)
  start=$(now)
  "$kilnctl" --json --glance "$GLANCE_URL" --libvirt-uri "$LIBVIRT_URI" --virt-type qemu --config "$1" \
    --instances-path "$2" --direct boot --image "$3" --uuid "$uuid" --vcpus 1 --memory-mb 128 --root-gb 1 \
    --swap-mb 0 --no-start > "$work/boot.json" 2> "$work/boot.err" || { cat "$work/boot.err" >&2; exit 1; }
  ms=$(echo "($(now) - $start) * 1000" | bc)
  "$kilnctl" --json --glance "$GLANCE_URL" --libvirt-uri "$LIBVIRT_URI" --config "$1" --instances-path "$2" \
    --direct delete "$uuid" > /dev/null 2>&1
  printf '%.0f\n' "$ms"
}

for size in 64M 1G; do
  image=$work/image-$size.raw
  rm -f "$image"
  truncate -s "$size" "$image"
  dd if=/dev/urandom of="$image" bs=1M count=32 conv=notrunc status=none
  in_ceph=$(upload ceph "$image")
  clone=() cold=() first=() second=() first_fetch=() first_write=() first_publish=() cold_fetch=()
  gets_cold=0 gets_first=0 gets_second=0
  for run in $(seq "$runs"); do
    clone+=("$(boot "$work/rbd.conf" "$work/i-clone-$run" "$in_ceph")")
    in_file=$(upload "" "$image")  # a new image each run: a cold cache and no pool base yet
    cold+=("$(boot "$work/file.conf" "$work/i-cold-$run" "$in_file")")
    cold_fetch+=("$(python3 -c 'import json,sys; print(round(sum(json.load(open(sys.argv[1]))["base"]["phases_ms"].values())))' "$work/boot.json")")
    gets_cold=$((gets_cold + $(file_gets "$in_file")))
    in_file=$(upload "" "$image")
    first+=("$(boot "$work/rbd.conf" "$work/i-first-$run" "$in_file")")
    # Where the first host's time went: the fetch (download, verification, conversion: the base's phases),
    # writing the pool base's data, publishing it (snapshot, protect, rename).
    read -r fetch write publish < <(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
i = r["disk"]["pool_base_import"]
print(round(sum(r["base"]["phases_ms"].values())), i["write_ms"], i["publish_ms"])' "$work/boot.json")
    first_fetch+=("$fetch") first_write+=("$write") first_publish+=("$publish")
    before=$(file_gets "$in_file")
    second+=("$(boot "$work/rbd.conf" "$work/i-second-$run" "$in_file")")
    gets_first=$((gets_first + before))
    gets_second=$((gets_second + $(file_gets "$in_file") - before))
  done
  printf '%-5s rbd-clone %6s ms (image-data GETs %d) | file-cold %6s ms (%d) | pool-first %6s ms (%d) | pool-second %6s ms (%d)\n' \
    "$size" "$(printf '%s\n' "${clone[@]}" | median)" "$(file_gets "$in_ceph")" \
    "$(printf '%s\n' "${cold[@]}" | median)" "$gets_cold" \
    "$(printf '%s\n' "${first[@]}" | median)" "$gets_first" \
    "$(printf '%s\n' "${second[@]}" | median)" "$gets_second"
  printf '%-5s file-cold: fetch %s ms | pool-first: fetch %s ms, pool base data written %s ms, published %s ms (medians)\n' \
    "$size" "$(printf '%s\n' "${cold_fetch[@]}" | median)" \
    "$(printf '%s\n' "${first_fetch[@]}" | median)" "$(printf '%s\n' "${first_write[@]}" | median)" \
    "$(printf '%s\n' "${first_publish[@]}" | median)"
done
