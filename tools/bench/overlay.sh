#!/usr/bin/env bash
# Native qcow2 overlay creation vs `qemu-img create -f qcow2 -F raw -b base ov 20G`.
#
#   tools/bench/overlay.sh [bench binary] [rounds] [overlays per round]
#
# Each round runs kiln_overlay_bench once per writer, both through
# kiln::disk::create_overlay, so what is timed is what production pays: the
# native writer's fsync (or none, as provision() batches it), qemu-img's
# process start-up. A round records its
# median microseconds per overlay.
# Prints every round, the median of the rounds per writer and their ratio.
# Runs in a temporary directory under /var/tmp (a real disk, not tmpfs).
set -euo pipefail

bench=${1:-"$(dirname "$0")/../../build/tools/kiln_overlay_bench"}
rounds=${2:-5}
count=${3:-200}

work=$(mktemp -d /var/tmp/kiln-overlay-bench.XXXXXX)
trap 'rm -rf -- "$work"' EXIT

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: >"$work/native.txt"
: >"$work/native-unsynced.txt"
: >"$work/qemu-img.txt"
for round in $(seq 1 "$rounds"); do
  for writer in native native-unsynced qemu-img; do
    result=$("$bench" "$work" "$count" "$writer")
    echo "round $round: $result us per overlay"
    echo "${result#* }" >>"$work/$writer.txt"
  done
done

native=$(median <"$work/native.txt")
unsynced=$(median <"$work/native-unsynced.txt")
qemu_img=$(median <"$work/qemu-img.txt")
echo "median of $rounds rounds x $count overlays (20 GiB, 64 MiB raw base):"
echo "  native, fsync'd          ${native} us"
echo "  native, caller syncs     ${unsynced} us   (as provision() writes it; qemu-img never fsyncs)"
echo "  qemu-img create          ${qemu_img} us"
awk -v n="$native" -v u="$unsynced" -v q="$qemu_img" 'BEGIN {
  printf "  ratio qemu-img / native, same durability as qemu-img = %.1fx\n", q / u
  printf "  ratio qemu-img / native, fsync included             = %.1fx\n", q / n }'
