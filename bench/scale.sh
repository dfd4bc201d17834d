#!/bin/bash
# scale.sh BUILD_DIR [LABEL] - what open segments cost one engine (issue 19, "Measured"): for
# transports=tcp and transports=shm, N=10 and N=1000 segments whose peer engines live in 4 other
# processes on loopback, heartbeat_ms=1000. Figures of the observing engine's process: threads,
# fds, RSS (per segment = (RSS@1000 - RSS@10) / 990), idle CPU over IDLE s (10) with the peer
# processes' CPU in the same window beside it (peers_cpu%: a cost moved to the peers shows), the time
# from SIGKILL of one peer process until all its segments are UNREACHABLE, beside
# peer_timeout_ms + heartbeat_ms. The issue's goals are printed as met / NOT met, never asserted.
# Appends the table, commit, machine, load and LABEL to bench/results/scale.txt.
# Knobs: SIZES ("10 1000"), TRANSPORTS ("tcp shm"), PROCS (4), IDLE (10), MC_PEER_TIMEOUT_MS.
set -uo pipefail
BUILD=${1:-build}
LABEL=${2:-$(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo '?')}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results/scale.txt}
SIZES=${SIZES:-"10 1000"}
TRANSPORTS=${TRANSPORTS:-"tcp shm"}
PROCS=${PROCS:-4}
export IDLE=${IDLE:-10} MC_HEARTBEAT_MS=1000 MC_PEER_TIMEOUT_MS=${MC_PEER_TIMEOUT_MS:-3000}
[ -f "$BUILD/lib/libmc.so" ] || { echo "scale.sh: $BUILD/lib/libmc.so not found; build first" >&2; exit 1; }
BUILD=$(cd "$BUILD" && pwd)
mkdir -p "$(dirname "$OUT")"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
gcc -std=c11 -O2 -Wall -Wextra -Werror -I"$HERE/../include" "$HERE/scale_bench.c" -o "$TMP/scale_bench" \
  -L"$BUILD/lib" -lmc -Wl,-rpath,"$BUILD/lib" -lpthread || exit 1

# The commit a build was made from: BUILD/COMMIT where one was written, else its checkout's HEAD.
build_commit() { cat "$BUILD/COMMIT" 2>/dev/null || git -C "$(dirname "$BUILD")" rev-parse --short HEAD 2>/dev/null || echo '?'; }
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
verdict() { awk -v c="$1" 'BEGIN {print (c ? "met" : "NOT met")}'; }
{
  echo ""
  echo "## $LABEL"
  echo "# $(date -u +%FT%TZ), mc $(build_commit) (build $BUILD), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), $(uname -r)"
  echo "# heartbeat_ms=$MC_HEARTBEAT_MS peer_timeout_ms=$MC_PEER_TIMEOUT_MS, $PROCS peer processes, idle window ${IDLE} s, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$OUT"
declare -A R
for t in $TRANSPORTS; do
  for n in $SIZES; do
    if timeout 600 "$TMP/scale_bench" "$t" "$n" "$PROCS" >"$TMP/out" 2>"$TMP/err"; then
      R[$t.$n]=$(tail -1 "$TMP/out")
    else
      R[$t.$n]="failed: $(tail -1 "$TMP/err")"
    fi
    echo "# raw $t N=$n: ${R[$t.$n]} (load $(cut -d' ' -f1 /proc/loadavg))" | tee -a "$OUT"
  done
done
lo=${SIZES%% *} hi=${SIZES##* }
printf '%-5s %6s %8s %8s %8s %9s %10s %10s %9s %s\n' transport N threads fds RSS_KiB idle_cpu% peers_cpu% kill_ms limit_ms "goals" | tee -a "$OUT"
for t in $TRANSPORTS; do
  for n in $SIZES; do
    l=${R[$t.$n]}
    if [[ $l == failed* ]]; then printf '%-5s %6s  %s\n' "$t" "$n" "$l" | tee -a "$OUT"; continue; fi
    cpu=$(get idle_cpu_pct "$l") down=$(get down_ms "$l")
    limit=$((MC_PEER_TIMEOUT_MS + MC_HEARTBEAT_MS))
    g="idle<1%: $(verdict "$(awk -v c="$cpu" 'BEGIN {print (c < 1)}')")"
    g+=", kill<=limit: $(verdict "$(awk -v d="$down" -v l="$limit" 'BEGIN {print (d >= 0 && d <= l)}')")"
    printf '%-5s %6s %8s %8s %8s %9s %10s %10s %9s %s\n' "$t" "$n" "$(get threads "$l")" "$(get fds "$l")" \
      "$(get rss_kib "$l")" "$cpu" "$(get peers_idle_cpu_pct "$l")" "$down" "$limit" "$g" | tee -a "$OUT"
  done
  a=${R[$t.$lo]} b=${R[$t.$hi]}
  [[ $a == failed* || $b == failed* || $lo == "$hi" ]] && continue
  ta=$(get threads "$a") tb=$(get threads "$b") fa=$(get fds "$a") fb=$(get fds "$b")
  ra=$(get rss_kib "$a") rb=$(get rss_kib "$b")
  per=$(awk -v a="$ra" -v b="$rb" -v d=$((hi - lo)) 'BEGIN {printf "%.1f", (b - a) / d}')
  echo "$t N=$lo -> N=$hi: threads $ta -> $tb ($((tb - ta)) more; constant in peers (a difference of at most 2 allowed): $(verdict $((tb - ta <= 2)))), fds $fa -> $fb ($((fb - fa)) more), RSS per open segment $per KiB (< 64 KiB: $(verdict "$(awk -v p="$per" 'BEGIN {print (p < 64)}')"))" | tee -a "$OUT"
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
