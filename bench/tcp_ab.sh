#!/usr/bin/env bash
# tcp_ab.sh BEFORE_BUILD AFTER_BUILD - mc over TCP on loopback, two builds in one run, rounds
# interleaved (the order of the builds alternating), so load from elsewhere on the machine hits
# both alike. Each side runs its own target and initiator (mc_bench, --transport tcp) for READ and
# WRITE at 64K, 1M and 16M with one fixed batch x threads (no selection pass: the same shape for
# both builds), plus one iperf3 single stream per round as a load reference. Under load from
# elsewhere, GB/s also measures how much CPU the scheduler gives each build's threads (a build
# with fewer threads gets less of a busy machine); the CPU seconds both processes spend per GB
# moved (_cpu_s_per_GB, lower is better) measures the work itself.
# Writes a table of medians with min..max, and every raw figure, to OUT.
# Knobs: ROUNDS (3), DURATION (seconds per run, 2), SHAPE ("8x1": batch x threads), SIZES
# ("64K 1M 16M"), OUT (bench/results/tcp_ab.txt).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: tcp_ab.sh BEFORE_BUILD AFTER_BUILD" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
declare -A B=([before]=$(cd "$1" && pwd) [after]=$(cd "$2" && pwd))
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-2} SHAPE=${SHAPE:-8x1} SIZES=${SIZES:-"64K 1M 16M"}
OUT=${OUT:-$HERE/results/tcp_ab.txt}
BATCH=${SHAPE%x*} THREADS=${SHAPE#*x}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mc-tcp-ab.XXXXXX")
TPID=
cleanup() { [ -n "$TPID" ] && kill "$TPID" 2>/dev/null && wait "$TPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_target() {  # build
  "$1/bin/mc_bench" target --listen 127.0.0.1:0 --size 1G >"$TMP/t.out" 2>"$TMP/t.err" &
  TPID=$!
  for _ in $(seq 200); do
    SEG=$(sed -n 's/^segment: //p' "$TMP/t.out")
    [ -n "$SEG" ] && return 0
    sleep 0.05
  done
  echo "tcp_ab.sh: target did not start: $(cat "$TMP/t.err")" >&2
  exit 1
}
tcpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # the target's CPU time in clock ticks
stop_target() { kill "$TPID" 2>/dev/null; wait "$TPID" 2>/dev/null || true; TPID=; }

RAW=$TMP/raw
: >"$RAW"
{
  echo "# tcp_ab.sh $(date -u +%FT%TZ), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), $(uname -r)"
  echo "# before = ${B[before]}, after = ${B[after]}; $ROUNDS rounds interleaved, ${DURATION}s a run, batch x threads $SHAPE"
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
for ((r = 1; r <= ROUNDS; r++)); do
  order="before after"; ((r % 2)) || order="after before"
  for side in $order; do
    echo "round $r: $side, load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT"
    start_target "${B[$side]}"
    for op in read write; do
      for size in $SIZES; do
        t0=$(tcpu "$TPID")
        /usr/bin/time -f "%U %S" -o "$TMP/i.time" "${B[$side]}/bin/mc_bench" initiator --segment "$SEG" \
          --op $op --block "$size" --batch "$BATCH" --threads "$THREADS" --duration "$DURATION" \
          --transport tcp --json >"$TMP/i.out" 2>"$TMP/i.err" ||
          { echo "tcp_ab.sh: $side initiator failed: $(tail -3 "$TMP/i.err")" >&2
            if ! kill -0 "$TPID" 2>/dev/null; then
              st=0; wait "$TPID" || st=$?
              echo "tcp_ab.sh: $side target ended with status $st" >&2; TPID=
            fi
            echo "tcp_ab.sh: $side target's stderr: $(tail -5 "$TMP/t.err")" >&2; exit 1; }
        t1=$(tcpu "$TPID")
        # CPU seconds of both processes per GB moved: what the load on the machine does not change.
        sed -E 's/.*"bytes":([0-9]+).*"gbps":([0-9.]+),"p50_us":([0-9.]+).*/\1 \2 \3/' "$TMP/i.out" |
          awk -v s=$side -v r=$r -v f="tcp_${op}_$size" -v tc=$((t1 - t0)) -v it="$(cat "$TMP/i.time")" '
            {split(it, u, " "); cpu = tc / 100 + u[1] + u[2]
             printf "%s %s %s_gbps %s\n%s %s %s_p50_us %s\n", s, r, f, $2, s, r, f, $3
             if ($1 > 0) printf "%s %s %s_cpu_s_per_GB %.4f\n", s, r, f, cpu / ($1 / 1e9)}' >>"$RAW"
      done
    done
    stop_target
  done
  if command -v iperf3 >/dev/null; then
    port=$((20000 + RANDOM % 20000))
    iperf3 -s -1 -p $port >/dev/null 2>&1 & ip=$!
    sleep 0.3
    g=$(iperf3 -c 127.0.0.1 -p $port -t 2 -J 2>/dev/null | awk '/"sum_received"/ {f = 1}
         f && /"bits_per_second"/ {match($0, /[0-9][0-9.]*(e[+-]?[0-9]+)?/); printf "%.4f\n", substr($0, RSTART, RLENGTH) / 8e9; exit}')
    wait $ip 2>/dev/null || true
    [ -n "$g" ] && echo "peer $r peer_iperf3_gbps $g" >>"$RAW"
  fi
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
awk '
  { k = $3; if ($1 == "peer") { pv[k] = pv[k] " " $4; if (!(k in seen)) { seen[k] = 1; order[++n] = k }; next }
    v[k, $1] = v[k, $1] " " $4; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
  function st(list, o,   a, k, i, j, t) {
    k = split(list, a, " ")
    for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    o["min"] = a[1]; o["max"] = a[k]; o["med"] = k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  END {
    printf "\n%-24s %26s %26s %8s\n", "figure (median, min..max)", "before", "after", "change"
    for (i = 1; i <= n; i++) {
      m = order[i]
      if (m in pv) { st(pv[m], p); printf "%-24s %10.3f %6.3f..%-8.3f (load reference, every round)\n", m, p["med"], p["min"], p["max"]; continue }
      st(v[m, "before"], b); st(v[m, "after"], a)
      printf "%-24s %10.3f %6.3f..%-8.3f %10.3f %6.3f..%-8.3f %+7.1f%%\n", m, b["med"], b["min"], b["max"],
             a["med"], a["min"], a["max"], (b["med"] > 0 ? 100 * (a["med"] - b["med"]) / b["med"] : 0)
    }
  }' "$RAW" | tee -a "$OUT"
{ echo; echo "## raw (side round figure value)"; cat "$RAW"; } >>"$OUT"
