#!/bin/bash
# relayout.sh BEFORE_BUILD AFTER_BUILD - bench/tcp.sh and bench/shm.sh against two builds in one
# run (issue 19: "before and after in the same run: no figure worse beyond its round-to-round
# spread"). ROUNDS rounds (3); each round runs tcp.sh and shm.sh once per build (one round of
# theirs each), the order of the builds alternating from round to round, so that load from
# elsewhere on the machine hits both alike. Writes a side-by-side table of mc's figures
# (median, min..max over the rounds, change of the medians) to bench/results/relayout.txt, with
# every raw figure. "worse beyond spread": the after median is below the before minimum (GB/s)
# or above the before maximum (latency). The peers' figures (iperf3, UCX) are kept raw as a
# record of the machine's load. Leaves bench/results/tcp.txt and shm.txt as they were.
# Knobs: ROUNDS (3), LABEL_BEFORE ("before"), LABEL_AFTER ("after"); tcp.sh's and shm.sh's own
# (MC_BENCH_DURATION, MC_BENCH_SELECT_DURATION, MC_BENCH_CANDIDATES, DURATION, ...) pass through.
set -uo pipefail
[ $# -eq 2 ] || { echo "usage: relayout.sh BEFORE_BUILD AFTER_BUILD" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${RELAYOUT_OUT:-$HERE/results/relayout.txt}
ROUNDS=${ROUNDS:-3}
LB=${LABEL_BEFORE:-before} LA=${LABEL_AFTER:-after}
declare -A BUILD=([before]=$(cd "$1" && pwd) [after]=$(cd "$2" && pwd)) || exit 1
for s in before after; do
  [ -x "${BUILD[$s]}/bin/mc_bench" ] || { echo "relayout.sh: ${BUILD[$s]}/bin/mc_bench not found" >&2; exit 1; }
done
TMP=$(mktemp -d)
# tcp.sh always writes bench/results/tcp.txt and shm.sh defaults to shm.txt: keep the committed ones.
cp "$HERE/results/tcp.txt" "$TMP/tcp.txt.keep" 2>/dev/null
restore() { [ -f "$TMP/tcp.txt.keep" ] && cp "$TMP/tcp.txt.keep" "$HERE/results/tcp.txt"; rm -rf "$TMP"; }
trap restore EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
commit_of() { cat "$1/COMMIT" 2>/dev/null || git -C "$(dirname "$1")" rev-parse --short HEAD 2>/dev/null || echo '?'; }

# RAW holds "side metric value" lines; metric names end in _gbps (higher is better) or _us.
RAW=$TMP/raw
: >"$RAW"
run_tcp() {  # side round
  if ! MC_BENCH_ROUNDS=1 "$HERE/tcp.sh" "${BUILD[$1]}" >"$TMP/tcp.log" 2>&1; then
    echo "relayout.sh: tcp.sh on $1 failed: $(tail -3 "$TMP/tcp.log")" >&2; return 1
  fi
  sed -nE 's/.*round [0-9]+ mc (read|write) ([0-9]+[KMG]) batch.*: ([0-9.]+) GB\/s \(p50 ([0-9.]+) us.*/tcp_\1_\2_gbps \3\ntcp_\1_\2_p50_us \4/p;
           s/.*round [0-9]+ iperf3 single stream: ([0-9.]+) GB\/s.*/peer_iperf3_gbps \1/p;
           s/.*round [0-9]+ ucx (ucp_[a-z_]+) ([0-9]+[KMG]): ([0-9.]+) GB\/s.*/peer_tcp_\1_\2_gbps \3/p' \
    "$HERE/results/tcp.txt" | sed "s/^/$1 /" >>"$RAW"
}
run_shm() {  # side round
  if ! OUT=$TMP/shm.txt ROUNDS=1 "$HERE/shm.sh" "${BUILD[$1]}" >"$TMP/shm.log" 2>&1; then
    echo "relayout.sh: shm.sh on $1 failed: $(tail -3 "$TMP/shm.log")" >&2; return 1
  fi
  grep -q 'verify.*: ok' "$TMP/shm.txt" || echo "$1 shm_verify_failed 1" >>"$RAW"
  awk -v s="$1" '$1 ~ /^[0-9]+[KM]$/ && $3 == "|" {
      printf "%s shm_memfd_write_%s_gbps %s\n%s shm_memfd_read_%s_gbps %s\n", s, $1, $4, s, $1, $5
      printf "%s shm_cma_write_%s_gbps %s\n%s shm_cma_read_%s_gbps %s\n", s, $1, $7, s, $1, $8
      printf "%s peer_memcpy_%s_gbps %s\n%s peer_ucx_posix_put_%s_gbps %s\n", s, $1, $2, s, $1, $10 }
    /^8-byte WRITE latency/ { gsub(/,/, ""); printf "%s shm_memfd_write_8B_p50_us %s\n%s shm_cma_write_8B_p50_us %s\n", s, $8, s, $11 }' \
    "$TMP/shm.txt" >>"$RAW"
}

{
  echo "# relayout.sh $(date -u +%FT%TZ), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), $(uname -r)"
  echo "# $LB = ${BUILD[before]} ($(commit_of "${BUILD[before]}")), $LA = ${BUILD[after]} ($(commit_of "${BUILD[after]}")), $ROUNDS rounds interleaved"
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT"
cat "$OUT"
for ((r = 1; r <= ROUNDS; r++)); do
  order="before after"; ((r % 2)) || order="after before"
  for side in $order; do
    echo "round $r: $side (tcp.sh, shm.sh), load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT"
    run_tcp "$side" || exit 1
    run_shm "$side" || exit 1
  done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"

# The table: per metric, for each side the median and the min..max of its rounds.
awk -v lb="$LB" -v la="$LA" '
  { v[$2, $1] = v[$2, $1] " " $3; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
  function stats(list, out,   a, k, i, j, t) {
    k = split(list, a, " ")
    for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    out["n"] = k; out["min"] = a[1]; out["max"] = a[k]
    out["med"] = k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  END {
    printf "\n%-30s %22s %22s %8s  %s\n", "figure (median, min..max)", lb, la, "change", "verdict"
    for (i = 1; i <= n; i++) {
      m = order[i]
      if (!((m, "before") in v) || !((m, "after") in v)) continue
      stats(v[m, "before"], b); stats(v[m, "after"], a)
      ch = b["med"] > 0 ? sprintf("%+.1f%%", 100 * (a["med"] - b["med"]) / b["med"]) : "n/a"
      if (m ~ /^peer_/) verdict = "(peer: load reference)"
      else if (m ~ /_us$/) verdict = a["med"] > b["max"] ? "WORSE beyond spread" : "ok"
      else verdict = a["med"] < b["min"] ? "WORSE beyond spread" : "ok"
      printf "%-30s %8.3f %6.3f..%-6.3f %8.3f %6.3f..%-6.3f %8s  %s\n", m, b["med"], b["min"], b["max"],
             a["med"], a["min"], a["max"], ch, verdict
    }
  }' "$RAW" | tee -a "$OUT"
{
  echo ""
  echo "## raw figures (side, figure, value), in the order measured"
  cat "$RAW"
} >>"$OUT"
echo "# written to $OUT"
