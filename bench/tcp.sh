#!/usr/bin/env bash
# tcp.sh BUILD_DIR - mc over TCP on loopback against iperf3 (one stream) and UCX's ucx_perftest
# (UCX_TLS=tcp, ucp_put_bw and ucp_get), at 64 KiB, 1 MiB and 16 MiB.
#
#   1. Picks mc's batch depth and thread count per (op, size) from a short selection pass over
#      a few candidates; the figures reported come from separate, later runs of the chosen ones.
#   2. Runs ROUNDS rounds; each round measures mc READ and WRITE, iperf3 and UCX put and get, so
#      that load from elsewhere on the machine hits every tool alike. Reports the medians.
#   3. Writes the table and every raw figure to bench/results/tcp.txt.
#
# mc runs with --transport tcp: on one host "auto" would pick shared memory.
# GB/s is 10^9 bytes per second everywhere (ucx_perftest's "MB/s" is MiB/s and is converted).
# Knobs (environment): MC_BENCH_ROUNDS (3), MC_BENCH_DURATION (mc seconds per run, 3),
# MC_BENCH_SELECT_DURATION (2), MC_BENCH_CANDIDATES ("4x1 8x1 16x1 8x2 16x2", batch x threads),
# MC_BENCH_UCX_BYTES (bytes per ucx_perftest run, 1G), IPERF_SECONDS (5). MC_* engine keys such
# as MC_TCP_CONNECTIONS and MC_SLICE_SIZE reach both mc engines as usual.
set -euo pipefail

BUILD=${1:-build}
BENCH=$BUILD/bin/mc_bench
HERE=$(cd "$(dirname "$0")" && pwd)
RESULTS=$HERE/results
OUTFILE=$RESULTS/tcp.txt

ROUNDS=${MC_BENCH_ROUNDS:-3}
DURATION=${MC_BENCH_DURATION:-3}
SELECT_DURATION=${MC_BENCH_SELECT_DURATION:-2}
CANDIDATES=${MC_BENCH_CANDIDATES:-"4x1 8x1 16x1 8x2 16x2"}
UCX_BYTES=${MC_BENCH_UCX_BYTES:-1073741824}
IPERF_SECONDS=${IPERF_SECONDS:-5}
SIZES=(64K 1M 16M)
OPS=(read write)

if [[ ! -x $BENCH ]]; then
  echo "tcp.sh: $BENCH not found; run 'make all' first" >&2
  exit 1
fi
for tool in ss awk sort shuf timeout; do
  command -v "$tool" >/dev/null || { echo "tcp.sh: needs $tool" >&2; exit 1; }
done
HAVE_IPERF=1; command -v iperf3 >/dev/null || HAVE_IPERF=0
HAVE_UCX=1; command -v ucx_perftest >/dev/null || HAVE_UCX=0

mkdir -p "$RESULTS"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mc-tcp-bench.XXXXXX")
: >"$OUTFILE"

# ------------------------------------------------------------------ processes and cleanup

# Every process this script starts is recorded here and killed by pid on the way out.
PIDS=()
TARGET_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}" $TARGET_PID; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}" $TARGET_PID; do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# run_wait LIMIT OUT ERR CMD...: runs CMD in the background (so signals reach this script at
# once), waits for it and returns its status; killed after LIMIT seconds.
run_wait() {
  local limit=$1 out=$2 err=$3; shift 3
  timeout --signal=TERM --kill-after=5 "$limit" "$@" >"$out" 2>"$err" &
  local pid=$!
  PIDS+=("$pid")
  local rc=0
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

# A TCP port nobody uses right now.
free_port() {
  local p
  for _ in $(seq 100); do
    p=$(shuf -i 20000-60999 -n 1)
    if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# wait_listen PORT PID: until something listens on PORT; fails when PID exits or after 10 s.
wait_listen() {
  for _ in $(seq 200); do
    [[ -n $(ss -Hltn "( sport = :$1 )" 2>/dev/null) ]] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

say() { echo "$*" | tee -a "$OUTFILE"; }
raw() { echo "$*" >>"$OUTFILE"; }

# size_bytes 64K -> 65536
size_bytes() {
  local s=$1 n=${1%[KMG]}
  case $s in
    *K) echo $((n << 10)) ;;
    *M) echo $((n << 20)) ;;
    *G) echo $((n << 30)) ;;
    *) echo "$n" ;;
  esac
}

# median of the numeric arguments ("n/a" ones skipped); "n/a" when none is left.
median() {
  printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
    awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR+1)/2];
                         else printf "%.4f\n", (a[NR/2] + a[NR/2+1]) / 2}'
}

ratio() {
  if [[ $1 == n/a || $2 == n/a ]]; then echo n/a; return; fi
  awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'
}

# ------------------------------------------------------------------ the three tools

SEGMENT=
start_target() {
  "$BENCH" target --listen 127.0.0.1:0 --size 1G >"$TMP/target.out" 2>"$TMP/target.err" &
  TARGET_PID=$!
  for _ in $(seq 200); do
    SEGMENT=$(sed -n 's/^segment: //p' "$TMP/target.out")
    [[ -n $SEGMENT ]] && return 0
    kill -0 "$TARGET_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "tcp.sh: the mc target did not start:" >&2
  cat "$TMP/target.err" >&2
  exit 1
}

# mc_run OP BLOCKS BATCH THREADS SECONDS: writes "BLOCK_BYTES GBPS P50_US P99_US" per block to
# $TMP/mc.txt. (The measuring functions run in this shell, never in $(...), so that every pid they
# start is known to cleanup.)
mc_run() {
  local op=$1 blocks=$2 batch=$3 threads=$4 secs=$5
  local limit
  limit=$(awk -v s="$secs" -v n="$(echo "$blocks" | tr ',' '\n' | wc -l)" \
    'BEGIN {printf "%d", (s + 20) * n + 30}')
  if ! run_wait "$limit" "$TMP/mc.out" "$TMP/mc.err" "$BENCH" initiator --segment "$SEGMENT" \
    --op "$op" --block "$blocks" --batch "$batch" --threads "$threads" --duration "$secs" \
    --transport tcp --json; then
    echo "tcp.sh: mc_bench initiator --op $op --block $blocks --batch $batch --threads $threads failed:" >&2
    cat "$TMP/mc.err" >&2
    exit 1
  fi
  sed -E 's/.*"block":([0-9]+).*"gbps":([0-9.]+),"p50_us":([0-9.]+),"p99_us":([0-9.]+).*/\1 \2 \3 \4/' \
    "$TMP/mc.out" >"$TMP/mc.txt"
}

# iperf3_run: one single-stream run; sets GBPS to GB/s as the receiver counted it, or n/a.
iperf3_run() {
  local port pid
  GBPS=n/a
  port=$(free_port) || return 0
  iperf3 -s -1 -p "$port" >"$TMP/iperf3s.out" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if ! wait_listen "$port" "$pid"; then
    echo "tcp.sh: iperf3 server did not start: $(cat "$TMP/iperf3s.out")" >&2
    return 0
  fi
  if ! run_wait $((IPERF_SECONDS + 30)) "$TMP/iperf3.json" "$TMP/iperf3.err" \
    iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_SECONDS" -J; then
    echo "tcp.sh: iperf3 client failed: $(cat "$TMP/iperf3.err")" >&2
  else
    GBPS=$(awk '/"sum_received"/ {f = 1}
         f && /"bits_per_second"/ {match($0, /[0-9][0-9.]*(e[+-]?[0-9]+)?/);
                                   printf "%.4f\n", substr($0, RSTART, RLENGTH) / 8e9; exit}' \
      "$TMP/iperf3.json")
    [[ -n $GBPS ]] || GBPS=n/a
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# ucx_run TEST BYTES: one ucx_perftest run over UCX_TLS=tcp; sets GBPS (overall), or n/a.
ucx_run() {
  local test=$1 size=$2 port pid iters warm
  GBPS=n/a
  iters=$((UCX_BYTES / size)); ((iters > 0)) || iters=1
  warm=$((iters / 10 + 1))
  port=$(free_port) || return 0
  UCX_TLS=tcp ucx_perftest -p "$port" >"$TMP/ucxs.out" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if ! wait_listen "$port" "$pid"; then
    echo "tcp.sh: ucx_perftest server did not start: $(cat "$TMP/ucxs.out")" >&2
    return 0
  fi
  if ! run_wait 120 "$TMP/ucx.out" "$TMP/ucx.err" env UCX_TLS=tcp ucx_perftest 127.0.0.1 \
    -p "$port" -t "$test" -s "$size" -n "$iters" -w "$warm" -f; then
    echo "tcp.sh: ucx_perftest -t $test -s $size failed or ran past 120 s: $(tail -n 3 "$TMP/ucx.err")" >&2
  else
    # -f prints one final row: iterations, latency p50/avg/overall, bandwidth avg/overall (MiB/s),
    # message rate avg/overall. The overall bandwidth covers the whole measured run.
    GBPS=$(awk 'NF == 8 && $1 ~ /^[0-9]+$/ {v = $6} END {if (v == "") print "n/a";
                else printf "%.4f\n", v * 1048576 / 1e9}' "$TMP/ucx.out")
  fi
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# ------------------------------------------------------------------ run

say "# mc over TCP on loopback vs iperf3 (one stream) and UCX (UCX_TLS=tcp)"
say "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -sr), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))"
say "# mc $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$HERE/.." diff --quiet HEAD -- src include 2>/dev/null || echo '+local changes'), $(iperf3 --version 2>/dev/null | head -n 1 || echo 'no iperf3'), UCX $(ucx_info -v 2>/dev/null | awk '/Version/ {print $3}' || echo '?')"
say "# engine environment: $(env | grep -E '^MC_(TCP_CONNECTIONS|SLICE_SIZE|WORKERS|TIMEOUT_MS)=' | tr '\n' ' ' || true)(unset keys: library defaults)"
say "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
((HAVE_IPERF)) || say "# iperf3 not found: its columns are n/a"
((HAVE_UCX)) || say "# ucx_perftest not found: its columns are n/a"

start_target
say "# mc target $SEGMENT (1 GiB registered; each initiator thread uses its own part of it)"
BLOCKS=$(IFS=,; echo "${SIZES[*]}")

# 1. Selection: a short run of every candidate; the best per (op, size) is measured later.
say ""
say "## selection pass: mc GB/s per batch x threads, ${SELECT_DURATION} s each (not reported)"
declare -A SEL_BEST SEL_CFG
for op in "${OPS[@]}"; do
  for cand in $CANDIDATES; do
    batch=${cand%x*}; threads=${cand#*x}
    line="$op ${batch}x${threads}:"
    mc_run "$op" "$BLOCKS" "$batch" "$threads" "$SELECT_DURATION"
    while read -r bytes gbps _ _; do
      for s in "${SIZES[@]}"; do
        [[ $(size_bytes "$s") == "$bytes" ]] || continue
        line+=" $s=$gbps"
        key=${op}_$s
        if [[ -z ${SEL_BEST[$key]:-} ]] || awk -v a="$gbps" -v b="${SEL_BEST[$key]}" 'BEGIN {exit !(a > b)}'; then
          SEL_BEST[$key]=$gbps
          SEL_CFG[$key]=$cand
        fi
      done
    done <"$TMP/mc.txt"
    say "  $line"
  done
done
say "  chosen (batch x threads): $(for op in "${OPS[@]}"; do for s in "${SIZES[@]}"; do printf '%s %s=%s  ' "$op" "$s" "${SEL_CFG[${op}_$s]}"; done; done)"

# 2. Rounds.
declare -A V   # V[key] = space-separated figures, one per round
say ""
say "## raw figures, GB/s (10^9 B/s), $ROUNDS rounds; mc ${DURATION} s per run, iperf3 ${IPERF_SECONDS} s, UCX $((UCX_BYTES >> 20)) MiB per run"
for ((r = 1; r <= ROUNDS; r++)); do
  for op in "${OPS[@]}"; do
    for s in "${SIZES[@]}"; do
      cand=${SEL_CFG[${op}_$s]}
      mc_run "$op" "$s" "${cand%x*}" "${cand#*x}" "$DURATION"
      read -r _ gbps p50 p99 <"$TMP/mc.txt"
      V[mc_${op}_$s]+="$gbps "
      say "  round $r mc $op $s batch ${cand%x*} threads ${cand#*x}: $gbps GB/s (p50 $p50 us, p99 $p99 us)"
    done
  done
  if ((HAVE_IPERF)); then
    iperf3_run
    V[iperf3]+="$GBPS "
    say "  round $r iperf3 single stream: $GBPS GB/s"
  fi
  if ((HAVE_UCX)); then
    for s in "${SIZES[@]}"; do
      for t in ucp_put_bw ucp_get; do
        ucx_run "$t" "$(size_bytes "$s")"
        V[ucx_${t}_$s]+="$GBPS "
        say "  round $r ucx $t $s: $GBPS GB/s"
      done
    done
  fi
done
say "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# 3. Table.
IPERF=n/a
((HAVE_IPERF)) && IPERF=$(median ${V[iperf3]})
say ""
say "## medians of $ROUNDS rounds, GB/s = 10^9 bytes/s"
say "$(printf '%-5s %9s %9s %8s %8s %8s %11s %11s %9s %9s  %s' size 'mc READ' 'mc WRITE' iperf3 \
  'UCX put' 'UCX get' 'READ/iperf' 'WRITE/iperf' 'READ/get' 'WRITE/put' 'mc batch x threads (read, write)')"
declare -A MR MW UP UG
for s in "${SIZES[@]}"; do
  MR[$s]=$(median ${V[mc_read_$s]})
  MW[$s]=$(median ${V[mc_write_$s]})
  UP[$s]=n/a; UG[$s]=n/a
  if ((HAVE_UCX)); then
    UP[$s]=$(median ${V[ucx_ucp_put_bw_$s]})
    UG[$s]=$(median ${V[ucx_ucp_get_$s]})
  fi
  say "$(printf '%-5s %9s %9s %8s %8s %8s %11s %11s %9s %9s  %s, %s' "$s" "${MR[$s]}" "${MW[$s]}" \
    "$IPERF" "${UP[$s]}" "${UG[$s]}" "$(ratio "${MR[$s]}" "$IPERF")" "$(ratio "${MW[$s]}" "$IPERF")" \
    "$(ratio "${MR[$s]}" "${UG[$s]}")" "$(ratio "${MW[$s]}" "${UP[$s]}")" \
    "${SEL_CFG[read_$s]}" "${SEL_CFG[write_$s]}")"
done

# 4. The issue's goals: READ and WRITE >= 90% of iperf3 at 1 MiB and above; above UCX put (WRITE)
# and get (READ) at every size.
say ""
say "## goals"
verdict() {  # verdict VALUE BASE FACTOR
  if [[ $1 == n/a || $2 == n/a ]]; then echo "n/a"; return; fi
  awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN {print (a >= b * f) ? "met" : "NOT met"}'
}
for s in "${SIZES[@]}"; do
  if (($(size_bytes "$s") >= 1 << 20)); then
    say "  $s READ >= 0.9 x iperf3: $(verdict "${MR[$s]}" "$IPERF" 0.9) ($(ratio "${MR[$s]}" "$IPERF")x)"
    say "  $s WRITE >= 0.9 x iperf3: $(verdict "${MW[$s]}" "$IPERF" 0.9) ($(ratio "${MW[$s]}" "$IPERF")x)"
  fi
  say "  $s READ > UCX get: $(verdict "${MR[$s]}" "${UG[$s]}" 1.0000001) ($(ratio "${MR[$s]}" "${UG[$s]}")x)"
  say "  $s WRITE > UCX put: $(verdict "${MW[$s]}" "${UP[$s]}" 1.0000001) ($(ratio "${MW[$s]}" "${UP[$s]}")x)"
done
say ""
say "# written to $OUTFILE"

# Stop the target cleanly (SIGTERM; it exits 0); cleanup() kills anything left.
kill -TERM "$TARGET_PID" 2>/dev/null || true
wait "$TARGET_PID" 2>/dev/null || true
TARGET_PID=
