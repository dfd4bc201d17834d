#!/bin/bash
# register.sh BUILD_DIR [LABEL] - registration figures of issue 19 (bench/register_bench.c):
# (a) the longest 8-byte transfer on an already registered buffer while 1 GiB is registered
# (tcp, shm+tcp "auto", rdma on the simulated NIC), (b) 10,000 buffers in one
# mc_buffer_register_batch with no peer and with a peer engine in another process that has the
# segment open (idle, then READing), median of ROUNDS (7). Goals printed (register_batch with a
# peer < 50 ms), never asserted. Appends to bench/results/register.txt.
set -uo pipefail
BUILD=${1:-build}
LABEL=${2:-$(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo '?')}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results/register.txt}
ROUNDS=${ROUNDS:-7}
[ -f "$BUILD/lib/libmc.so" ] || { echo "register.sh: $BUILD/lib/libmc.so not found; build first" >&2; exit 1; }
BUILD=$(cd "$BUILD" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
gcc -std=c11 -O2 -Wall -Wextra -Werror -I"$HERE/../include" "$HERE/register_bench.c" -o "$TMP/register_bench" \
  -L"$BUILD/lib" -lmc -Wl,-rpath,"$BUILD/lib" -lpthread || exit 1
commit=$(cat "$BUILD/COMMIT" 2>/dev/null || git -C "$(dirname "$BUILD")" rev-parse --short HEAD 2>/dev/null || echo '?')
{
  echo ""
  echo "## $LABEL"
  echo "# $(date -u +%FT%TZ), mc $commit (build $BUILD), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$OUT"
run() { timeout 300 "$TMP/register_bench" "$@" 2>"$TMP/err" | tee -a "$OUT" || echo "register_bench $*: failed: $(tail -1 "$TMP/err")" | tee -a "$OUT"; }
run stall tcp
run stall auto
run stall rdma sim
for t in tcp auto; do
  for how in idle busy; do
    run batch "$t" "$ROUNDS" "$how"
    m=$(sed -n "s/^batch transports=$t .*peer=$how .*median_peer_ms=\([0-9.]*\).*/\1/p" "$OUT" | tail -1)
    [ -n "$m" ] && echo "  goal: 10,000 buffers with a peer attached ($how) < 50 ms: $(awk -v m="$m" 'BEGIN {print (m < 50 ? "met" : "NOT met")}') ($m ms)" | tee -a "$OUT"
  done
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
