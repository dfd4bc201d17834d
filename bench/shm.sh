#!/bin/bash
# shm.sh BUILD_DIR - mc over the same-host transport against UCX (UCX_TLS=posix and cma) and a
# single-thread memcpy, in one run on this machine. Sizes 64 KiB, 1 MiB, 16 MiB, 256 MiB; READ
# and WRITE; both memory kinds (mc_buffer_alloc memfd on both ends: "memfd"; plain registered
# memory reached by cross-memory attach: "cma"); 8-byte WRITE latency (p50 of single-request
# batches). Writes bench/results/shm.txt. GB/s = 10^9 bytes/s; ucx_perftest's MB/s is MiB/s.
set -uo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/results/shm.txt
BENCH=$BUILD/bin/mc_bench
DUR=${DURATION:-2}
mkdir -p "$HERE/results"
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
say() { echo "$*" | tee -a "$OUT"; }
: >"$OUT"
SIZES="64K 1M 16M 256M"
bytes() { case $1 in *K) echo $((${1%K} << 10));; *M) echo $((${1%M} << 20));; *) echo "$1";; esac; }

say "# mc shm vs UCX posix/cma vs memcpy, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
gcc -O2 -o "$TMP/memcpy" "$HERE/memcpy_bench.c" || exit 1
declare -A MEMCPY
while read -r n g; do MEMCPY[$n]=$g; done < <("$TMP/memcpy" $(for s in $SIZES; do bytes "$s"; done))

start_target() {  # $1: extra flags; sets SEG
  "$BENCH" target --size 512M $1 >"$TMP/t.out" 2>"$TMP/t.err" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q '^segment: ' "$TMP/t.out" 2>/dev/null && break; sleep 0.05; done
  SEG=$(sed -n 's/^segment: //p' "$TMP/t.out")
}
mc_gbps() {  # kind op size batch -> GB/s
  local flags=""; [ "$1" = memfd ] && flags="--alloc"
  "$BENCH" initiator --segment "$SEG" --op "$2" --block "$3" --batch "$4" --threads 1 --duration "$DUR" \
    --transport shm $flags --json 2>/dev/null | sed -n 's/.*"gbps":\([0-9.]*\).*/\1/p' | tail -1
}
mc_lat() {  # kind -> p50 us of 8-byte single-request WRITE batches
  local flags=""; [ "$1" = memfd ] && flags="--alloc"
  "$BENCH" initiator --segment "$SEG" --op write --block 8 --batch 1 --threads 1 --duration "$DUR" \
    --transport shm $flags --json 2>/dev/null | sed -n 's/.*"p50_us":\([0-9.]*\).*/\1/p' | tail -1
}
ucx() {  # tls test size -> GB/s (bw tests) or latency us (lat test)
  local port=$((20000 + RANDOM % 20000)) n iters
  n=$(bytes "$3"); iters=$(( (1 << 31) / n )); ((iters < 1000)) || iters=1000; ((iters > 0)) || iters=1
  [ "$2" = ucp_put_lat ] && iters=100000
  UCX_TLS=$1 ucx_perftest -p "$port" >/dev/null 2>&1 &
  local sp=$!; PIDS+=($sp); sleep 0.5
  UCX_TLS=$1 timeout 120 ucx_perftest 127.0.0.1 -p "$port" -t "$2" -s "$n" -n "$iters" -f >"$TMP/u.out" 2>/dev/null
  kill $sp 2>/dev/null; wait $sp 2>/dev/null
  if [ "$2" = ucp_put_lat ]; then awk 'NF == 8 && $1 ~ /^[0-9]+$/ {v = $2} END {print (v == "" ? "n/a" : v)}' "$TMP/u.out"
  else awk 'NF == 8 && $1 ~ /^[0-9]+$/ {v = $6} END {if (v == "") print "n/a"; else printf "%.3f\n", v * 1048576 / 1e9}' "$TMP/u.out"; fi
}

say ""
say "size   memcpy | mc-memfd WRITE READ | mc-cma WRITE READ | UCX-posix put get | UCX-cma put get | memfd WRITE/memcpy"
start_target "--alloc"; SEG_ALLOC=$SEG
start_target ""; SEG_PLAIN=$SEG
for s in $SIZES; do
  batch=8; [ "$s" = 256M ] && batch=1
  SEG=$SEG_ALLOC; mw=$(mc_gbps memfd write "$s" $batch); mr=$(mc_gbps memfd read "$s" $batch)
  SEG=$SEG_PLAIN; cw=$(mc_gbps cma write "$s" $batch); cr=$(mc_gbps cma read "$s" $batch)
  pp=$(ucx posix ucp_put_bw "$s"); pg=$(ucx posix ucp_get "$s")
  cp=$(ucx cma ucp_put_bw "$s"); cg=$(ucx cma ucp_get "$s")
  m=${MEMCPY[$(bytes "$s")]}
  ratio=$(awk -v a="$mw" -v b="$m" 'BEGIN {if (a == "" || b == "") print "n/a"; else printf "%.2f", a / b}')
  say "$(printf '%-5s %7s | %8s %6s | %7s %6s | %8s %6s | %7s %6s | %s' "$s" "$m" "$mw" "$mr" "$cw" "$cr" "$pp" "$pg" "$cp" "$cg" "$ratio")"
done
SEG=$SEG_ALLOC; lm=$(mc_lat memfd)
SEG=$SEG_PLAIN; lc=$(mc_lat cma)
say ""
say "8-byte WRITE latency, p50 us: mc memfd $lm, mc cma $lc, UCX posix put_lat $(ucx posix ucp_put_lat 8), UCX cma put_lat $(ucx cma ucp_put_lat 8)"
