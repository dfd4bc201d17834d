#!/usr/bin/env bash
# auth.sh [BUILD_DIR] - what an auth_token costs (issue 9), written to bench/results/auth.txt:
#   1. connection setup: mc_segment_open (connect + admission handshake + descriptor fetch) of a
#      TCP peer, OPENS times, p50/p99, with and without a token (bench/auth_bench.c);
#   2. throughput once connected: mc_bench READ and WRITE over TCP on loopback at 64 KiB and
#      1 MiB, with and without a token (MC_AUTH_TOKEN reaches both engines), ROUNDS rounds
#      alternating the two, medians reported. The goal is no measurable difference.
# Knobs: MC_BENCH_OPENS (500), MC_BENCH_ROUNDS (3), MC_BENCH_DURATION (3 s per run).
set -euo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/results/auth.txt
OPENS=${MC_BENCH_OPENS:-500}
ROUNDS=${MC_BENCH_ROUNDS:-3}
DURATION=${MC_BENCH_DURATION:-3}
TOKEN="bench-token-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[ -x "$BUILD/bin/mc_bench" ] || make -j2 all BUILD="$BUILD"
mkdir -p "$BUILD/bench" "$HERE/results"
BIN=$BUILD/bench/auth_bench
"${CC:-cc}" -std=c11 -O2 -g -Wall -Wextra -Werror -pthread -Iinclude bench/auth_bench.c -o "$BIN" \
  -L"$BUILD/lib" -lmc -Wl,-rpath,"$(cd "$BUILD/lib" && pwd)"

tmp=$(mktemp -d /tmp/mc-bench-auth-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

{
  echo "# mc auth_token cost ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(uname -r))"
  echo "## connection setup: mc_segment_open over tcp (connect + handshake + GET_DESC), $OPENS opens"
  "$BIN" "$OPENS" ""
  "$BIN" "$OPENS" "$TOKEN"
} | tee "$tmp/setup.txt"

run_bw() {  # token op block -> GB/s
  local tok=$1 op=$2 block=$3
  env -u MC_AUTH_TOKEN ${tok:+MC_AUTH_TOKEN=$tok} "$BUILD/bin/mc_bench" target --size 256M > "$tmp/seg" 2>/dev/null &
  local tp=$!
  pids+=("$tp")
  for _ in $(seq 100); do grep -q segment: "$tmp/seg" 2>/dev/null && break; sleep 0.05; done
  local seg
  seg=$(sed -n 's/^segment: //p' "$tmp/seg")
  env -u MC_AUTH_TOKEN ${tok:+MC_AUTH_TOKEN=$tok} "$BUILD/bin/mc_bench" initiator --segment "$seg" --op "$op" --block "$block" \
    --batch 8 --threads 1 --duration "$DURATION" --transport tcp --json 2>/dev/null |
    sed -n 's/.*"gbps":\([0-9.]*\).*/\1/p'
  kill "$tp"; wait "$tp" 2>/dev/null || true
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

{
  echo "## throughput over tcp on loopback (batch 8, 1 thread, ${DURATION}s per run, median of $ROUNDS), GB/s"
  printf "%-6s %-6s %10s %10s %8s\n" op block no-token token delta
  for op in read write; do
    for block in 64K 1M; do
      : > "$tmp/a"; : > "$tmp/b"
      for r in $(seq "$ROUNDS"); do
        run_bw "" "$op" "$block" >> "$tmp/a"
        run_bw "$TOKEN" "$op" "$block" >> "$tmp/b"
      done
      a=$(median < "$tmp/a"); b=$(median < "$tmp/b")
      printf "%-6s %-6s %10.3f %10.3f %7.1f%%\n" "$op" "$block" "$a" "$b" \
        "$(awk -v a="$a" -v b="$b" 'BEGIN {print (a > 0) ? (b - a) / a * 100 : 0}')"
    done
  done
} | tee "$tmp/bw.txt"
cat "$tmp/setup.txt" "$tmp/bw.txt" > "$OUT"
echo "written to $OUT"
