#!/bin/bash
# shm.sh BUILD_DIR - mc over the same-host transport against UCX (UCX_TLS=posix and cma) and a
# single-thread memcpy, in one run on this machine. Sizes 64 KiB, 1 MiB, 16 MiB, 256 MiB; READ
# and WRITE; both memory kinds (mc_buffer_alloc memfd on both ends: "memfd"; plain registered
# memory reached by cross-memory attach: "cma"); 8-byte WRITE latency (p50 of single-request
# batches). Writes bench/results/shm.txt. GB/s = 10^9 bytes/s; ucx_perftest's MB/s is MiB/s.
#
# Measured the same way on every side: ucx_perftest puts to (gets from) one remote buffer again
# and again, the memcpy loop copies one buffer again and again, so mc_bench runs with --reuse
# (the same blocks every batch: warm pages and caches, no walk through the target's buffer) and
# --one-block (every request on one block each side, as ucx_perftest keeps its window of puts
# or gets on one buffer). 64 KiB: batches of 8 requests (8 in flight on one 64 KiB block);
# 1 MiB and up: one request per batch. So mc and UCX have the same working set: one block each
# side. The 64 KiB case is also run with 8 distinct blocks per batch (512 KiB each side, which
# no longer fits in L2 beside the other side's), printed under the table. UCX runs enough iterations to
# last about as long as mc's DURATION, so that both see the same load of a shared machine.
# Each size runs ROUNDS times (default 3), every column in turn within a round, and the table
# gives the median of each column; the ratios of every round are printed under it. Sizes near
# the L2 size (1 MiB: 2 MiB of source and destination) move by +-10% from run to run for mc and
# UCX alike, and one round of each would compare noise.
# UCX 1.13 cannot run cma alone (it needs a transport for active messages): "UCX-cma" is
# UCX_TLS=cma,tcp.
set -uo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results/shm.txt}  # OUT=... to keep another machine's file
BENCH=$BUILD/bin/mc_bench
DUR=${DURATION:-1}
ROUNDS=${ROUNDS:-3}
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

start_target() {  # $1: extra flags, $2: a name for its files; sets SEG
  "$BENCH" target --size 512M $1 >"$TMP/$2.out" 2>"$TMP/$2.err" &
  PIDS+=($!)
  for _ in $(seq 400); do grep -q '^segment: ' "$TMP/$2.out" 2>/dev/null && break; sleep 0.05; done
  SEG=$(sed -n 's/^segment: //p' "$TMP/$2.out")
  [ -n "$SEG" ] || { echo "shm.sh: the target ($2) did not start: $(tail -1 "$TMP/$2.err")" >&2; exit 1; }
}
mc_gbps() {  # kind op size batch [--one-block] -> GB/s
  local flags=""; [ "$1" = memfd ] && flags="--alloc"
  "$BENCH" initiator --segment "$SEG" --op "$2" --block "$3" --batch "$4" --threads 1 --duration "$DUR" \
    --transport shm --reuse ${5:-} $flags --json 2>/dev/null | sed -n 's/.*"gbps":\([0-9.]*\).*/\1/p' | tail -1
}
mc_lat() {  # kind -> p50 us of 8-byte WRITEs, each one mc_transfer call
  local flags=""; [ "$1" = memfd ] && flags="--alloc"
  "$BENCH" initiator --segment "$SEG" --op write --block 8 --batch 1 --threads 1 --duration "$DUR" \
    --transport shm --reuse --transfer $flags --json 2>/dev/null | sed -n 's/.*"p50_us":\([0-9.]*\).*/\1/p' | tail -1
}
ucx() {  # tls test size -> GB/s (bw tests) or latency us (lat test)
  local port=$((20000 + RANDOM % 20000)) n iters
  # About 8 GiB per test over posix (0.5-1 s here), 256 MiB over cma,tcp (far slower).
  n=$(bytes "$3"); iters=$(( (8 << 30) / n )); [ "$1" = posix ] || iters=$(( (256 << 20) / n ))
  ((iters >= 8)) || iters=8
  [ "$2" = ucp_put_lat ] && iters=1000000
  UCX_TLS=$1 ucx_perftest -p "$port" >/dev/null 2>&1 &
  local sp=$!; PIDS+=($sp); sleep 0.5
  UCX_TLS=$1 timeout 120 ucx_perftest 127.0.0.1 -p "$port" -t "$2" -s "$n" -n "$iters" -f >"$TMP/u.out" 2>/dev/null
  kill $sp 2>/dev/null; wait $sp 2>/dev/null
  if [ "$2" = ucp_put_lat ]; then awk 'NF == 8 && $1 ~ /^[0-9]+$/ {v = $2} END {print (v == "" ? "n/a" : v)}' "$TMP/u.out"
  else awk 'NF == 8 && $1 ~ /^[0-9]+$/ {v = $6} END {if (v == "") print "n/a"; else printf "%.3f\n", v * 1048576 / 1e9}' "$TMP/u.out"; fi
}

start_target "--alloc" memfd; SEG_ALLOC=$SEG
start_target "" plain; SEG_PLAIN=$SEG
# Untimed check first: the same runs with --verify (every byte read back or compared).
VER=ok
for k in memfd cma; do
  [ $k = memfd ] && SEG=$SEG_ALLOC || SEG=$SEG_PLAIN
  flags=""; [ $k = memfd ] && flags="--alloc"
  for op in write read; do
    "$BENCH" initiator --segment "$SEG" --op $op --block 8,64K,1M,16M,256M --batch 1 --threads 1 --duration 0.2 \
      --transport shm --reuse --verify $flags >/dev/null 2>"$TMP/v.err" || { VER="FAILED ($k $op: $(tail -1 "$TMP/v.err"))"; }
  done
done
say "verify (mc_bench --verify, both kinds, READ and WRITE, 8 B to 256 MiB): $VER"
say ""
say "medians of $ROUNDS rounds, ${DUR} s per mc run"
say "size   memcpy | mc-memfd WRITE READ | mc-cma WRITE READ | UCX-posix put get | UCX-cma put get | memfd W/memcpy R/memcpy W/put R/get"
r() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b}'; }
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR == 0 ? "n/a" : v[int((NR + 1) / 2)])}'; }
ROUNDLOG=() DW=() DR=() PP64=() PG64=()
for s in $SIZES; do
  batch=1; [ "$s" = 64K ] && batch=8
  M=() MW=() MR=() CW=() CR=() PP=() PG=() CP=() CG=()
  for ((round = 1; round <= ROUNDS; round++)); do
    m=$("$TMP/memcpy" "$(bytes "$s")" | cut -d' ' -f2)  # just before mc, under the same load
    SEG=$SEG_ALLOC; mw=$(mc_gbps memfd write "$s" $batch --one-block); mr=$(mc_gbps memfd read "$s" $batch --one-block)
    if [ "$s" = 64K ]; then DW+=("$(mc_gbps memfd write "$s" $batch)") DR+=("$(mc_gbps memfd read "$s" $batch)"); fi
    SEG=$SEG_PLAIN; cw=$(mc_gbps cma write "$s" $batch --one-block); cr=$(mc_gbps cma read "$s" $batch --one-block)
    pp=$(ucx posix ucp_put_bw "$s"); pg=$(ucx posix ucp_get "$s")
    cp=$(ucx cma,tcp ucp_put_bw "$s"); cg=$(ucx cma,tcp ucp_get "$s")
    M+=("$m") MW+=("$mw") MR+=("$mr") CW+=("$cw") CR+=("$cr") PP+=("$pp") PG+=("$pg") CP+=("$cp") CG+=("$cg")
    ROUNDLOG+=("$(printf '%-5s round %d: memfd W/memcpy %s R/memcpy %s W/put %s R/get %s' "$s" "$round" \
      "$(r "$mw" "$m")" "$(r "$mr" "$m")" "$(r "$mw" "$pp")" "$(r "$mr" "$pg")")")
  done
  m=$(med "${M[@]}") mw=$(med "${MW[@]}") mr=$(med "${MR[@]}") cw=$(med "${CW[@]}") cr=$(med "${CR[@]}")
  pp=$(med "${PP[@]}") pg=$(med "${PG[@]}") cp=$(med "${CP[@]}") cg=$(med "${CG[@]}")
  [ "$s" = 64K ] && PP64=$pp PG64=$pg
  say "$(printf '%-5s %7s | %8s %6s | %7s %6s | %8s %6s | %7s %6s | %s %s %s %s' "$s" "$m" "$mw" "$mr" "$cw" "$cr" "$pp" "$pg" "$cp" "$cg" \
    "$(r "$mw" "$m")" "$(r "$mr" "$m")" "$(r "$mw" "$pp")" "$(r "$mr" "$pg")")"
done
if ((${#DW[@]})); then
  dw=$(med "${DW[@]}") dr=$(med "${DR[@]}")
  say "64K with 8 distinct blocks per batch on each side (--reuse without --one-block; 512 KiB each side), medians: mc-memfd WRITE $dw READ $dr GB/s, W/put $(r "$dw" "$PP64") R/get $(r "$dr" "$PG64")"
fi
say ""
say "every round (the table above holds the medians of $ROUNDS rounds):"
for l in "${ROUNDLOG[@]}"; do say "  $l"; done
SEG=$SEG_ALLOC; lm=$(mc_lat memfd)
SEG=$SEG_PLAIN; lc=$(mc_lat cma)
say ""
say "8-byte WRITE latency, p50 us: mc memfd $lm, mc cma $lc (one mc_transfer each, to completion), UCX posix put_lat $(ucx posix ucp_put_lat 8), UCX cma,tcp put_lat $(ucx cma,tcp ucp_put_lat 8) (ucx_perftest put_lat: half a put ping-pong)"
say "load at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(uname -r); $(lscpu | sed -n 's/^Model name: *//p')"
