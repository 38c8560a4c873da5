#!/usr/bin/env bash
# The cache's in-use scan over 1,000 instance directories vs qemu-img info on each.
#
#   tools/bench/scan.sh [bench binary] [instances] [runs] [qemu-img sample]
#
# Runs in a temporary directory under /var/tmp (a real disk, not tmpfs);
# the page cache is warm, as it is for the agent's periodic scans.
set -euo pipefail

bench=${1:-"$(dirname "$0")/../../build/tools/kiln_scan_bench"}
instances=${2:-1000}
runs=${3:-9}
sample=${4:-50}

work=$(mktemp -d /var/tmp/kiln-scan-bench.XXXXXX)
trap 'rm -rf -- "$work"' EXIT
"$bench" "$work/instances" "$instances" "$runs" "$sample"
