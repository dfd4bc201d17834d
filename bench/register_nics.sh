#!/bin/bash
# register_nics.sh BUILD_DIR [LABEL] - issue 26: 1 GiB registered on 4 simulated NICs at once
# (rdma_register_threads=auto, one thread per NIC for the call) against one NIC after another
# (rdma_register_threads=1), in the same run, median of ROUNDS (7). The simulated NIC's
# registration is free unless MC_SIM_REG_PAGE_NS gives it a CPU cost per 4 KiB page: 0 shows
# what the threads cost; 100 ns per page stands in for the kernel's pinning and mapping of each
# page (an assumed figure, not one measured on a NIC: there is none here). Appends to
# bench/results/register_nics.txt.
set -uo pipefail
BUILD=${1:-build}
LABEL=${2:-$(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo '?')}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results/register_nics.txt}
ROUNDS=${ROUNDS:-7}
[ -f "$BUILD/lib/libmc.so" ] || { echo "register_nics.sh: $BUILD/lib/libmc.so not found; build first" >&2; exit 1; }
BUILD=$(cd "$BUILD" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
gcc -std=c11 -O2 -Wall -Wextra -Werror -I"$HERE/../include" "$HERE/register_nics_bench.c" -o "$TMP/bench" \
  -L"$BUILD/lib" -lmc -Wl,-rpath,"$BUILD/lib" || exit 1
commit=$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo '?')
{
  echo ""
  echo "## $LABEL"
  echo "# $(date -u +%FT%TZ), mc $commit (build $BUILD), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$OUT"
for ns in 0 100; do
  timeout 600 "$TMP/bench" 4 $((1 << 30)) "$ROUNDS" "$ns" 2>&1 | tee -a "$OUT"
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
