#!/usr/bin/env bash
# busy_ab.sh LABEL=BUILD [LABEL=BUILD...] - mc over shm (WRITE, 1M x 1 and 64K x 8 on one block,
# as busy.sh) from several builds in one run, beside HOGS busy loops (2; 0 for a quiet run), with
# memcpy as the load reference: ROUNDS rounds (5), the builds' order reversed every other round,
# DUR seconds a run (2). Each build has its own target. Prints every figure and the medians with
# all values, and writes them to OUT (bench/results/busy_ab.txt, appended).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: busy_ab.sh LABEL=BUILD [LABEL=BUILD...]" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-5} HOGS=${HOGS:-2} DUR=${DUR:-2} OUT=${OUT:-$HERE/results/busy_ab.txt}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mc-busy-ab.XXXXXX")
declare -A SEG TP
H=()
cleanup() {
  [ ${#H[@]} -gt 0 ] && kill "${H[@]}" 2>/dev/null && wait "${H[@]}" 2>/dev/null
  for l in "${!TP[@]}"; do kill "${TP[$l]}" 2>/dev/null; wait "${TP[$l]}" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
gcc -O2 -o "$TMP/memcpy" "$HERE/memcpy_bench.c"
for s in "$@"; do
  l=${s%%=*} b=${s#*=}
  "$b/bin/mc_bench" target --size 256M --alloc >"$TMP/$l.out" 2>/dev/null &
  TP[$l]=$!
  for _ in $(seq 200); do grep -q '^segment: ' "$TMP/$l.out" && break; sleep 0.05; done
  SEG[$l]=$(sed -n 's/^segment: //p' "$TMP/$l.out")
  [ -n "${SEG[$l]}" ] || { echo "busy_ab.sh: the target of $l did not start" >&2; exit 1; }
done
for _ in $(seq "$HOGS"); do bash -c 'while :; do :; done' & H+=($!); done
sleep 0.3
raw=$TMP/raw
: >"$raw"
for ((r = 1; r <= ROUNDS; r++)); do
  specs=("$@")
  ((r % 2 == 0)) && mapfile -t specs < <(printf '%s\n' "$@" | tac)
  for blk in 1M 64K; do
    batch=1 n=1048576
    [ $blk = 64K ] && batch=8 n=65536
    echo "memcpy $blk $("$TMP/memcpy" -t "$DUR" $n | cut -d' ' -f2)" >>"$raw"
    for s in "${specs[@]}"; do
      l=${s%%=*} b=${s#*=}
      g=$("$b/bin/mc_bench" initiator --segment "${SEG[$l]}" --op write --block $blk --batch $batch --threads 1 \
        --duration "$DUR" --transport shm --reuse --one-block --alloc --json 2>/dev/null |
        sed -n 's/.*"gbps":\([0-9.]*\).*/\1/p')
      echo "$l $blk ${g:-n/a}" >>"$raw"
    done
  done
done
{
  echo "# busy_ab.sh $(date -u +%FT%TZ), $(nproc) CPUs, $HOGS busy loops, $ROUNDS rounds of ${DUR}s, load at end $(cut -d' ' -f1-3 /proc/loadavg)"
  for s in "$@"; do echo "#   ${s%%=*} = ${s#*=} ($(git -C "${s#*=}/.." rev-parse --short HEAD 2>/dev/null || echo '?'))"; done
  for blk in 1M 64K; do
    for l in memcpy $(printf '%s\n' "$@" | cut -d= -f1); do
      v=$(awk -v l="$l" -v b=$blk '$1 == l && $2 == b {print $3}' "$raw" | sort -g | tr '\n' ' ')
      med=$(awk -v l="$l" -v b=$blk '$1 == l && $2 == b {print $3}' "$raw" | sort -g |
        awk '{a[NR] = $1} END {if (NR == 0) print "n/a"; else print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}')
      echo "$blk $l median $med : $v"
    done
  done
  echo
} | tee -a "$OUT"
