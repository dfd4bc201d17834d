#!/bin/bash
# descriptors_ab.sh BEFORE_BUILD AFTER_BUILD - bench/descriptors_bench.c against two builds in one
# run, interleaved (issue 23: "bench/descriptors.sh before and after, in the same run"): ROUNDS
# rounds (3), each running the bench once per build, the order alternating from round to round.
# Prints every line of every run and a table of medians per figure (lower is better for all of
# them: ns a request, ms), with min..max. Writes bench/results/descriptors_ab.txt (OUT=...).
set -uo pipefail
[ $# -eq 2 ] || { echo "usage: descriptors_ab.sh BEFORE_BUILD AFTER_BUILD" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results/descriptors_ab.txt}
ROUNDS=${ROUNDS:-3}
declare -A LIB=([before]=$(cd "$1/lib" && pwd) [after]=$(cd "$2/lib" && pwd)) || exit 1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for s in before after; do
  gcc -std=c11 -O2 -Wall -Wextra -Werror -I"$HERE/../include" "$HERE/descriptors_bench.c" -o "$TMP/bench_$s" \
    -L"${LIB[$s]}" -lmc -Wl,-rpath,"${LIB[$s]}" || exit 1
done
commit_of() { git -C "$1/.." rev-parse --short HEAD 2>/dev/null || echo '?'; }
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }
say "# descriptors_ab.sh $(date -u +%FT%TZ), before $1 ($(commit_of "${LIB[before]}")), after $2 ($(commit_of "${LIB[after]}")), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), load at start $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do
  order="before after"; [ $((r % 2)) -eq 0 ] && order="after before"
  for s in $order; do
    "$TMP/bench_$s" >"$TMP/$s.$r" 2>&1 || { echo "descriptors_ab.sh: the $s bench failed: $(tail -1 "$TMP/$s.$r")" >&2; exit 1; }
    sed "s/^/  round $r $s: /" "$TMP/$s.$r" | tee -a "$OUT"
  done
done
# figure name -> value, per line: "shm contiguous submit_ns_per_request 145 batch_ms 94.2 (...)"
figures() {
  awk '!/^#/ {
    if ($1 == "register") { print "register_batch_ms", $5; print "register_one_by_one_ms", $7; print "unregister_batch_ms", $9; next }
    for (i = 3; i < NF; i += 2) if ($(i + 1) ~ /^[0-9.]+$/) print $1 "_" $2 "_" $i, $(i + 1)
  }' "$@"
}
say ""
say "$(printf '%-40s %10s %10s %8s   %s' figure before after change 'before min..max | after min..max')"
for f in $(figures "$TMP"/before.* | awk '{print $1}' | sort -u); do
  stat() { figures "$TMP"/$1.* | awk -v f="$f" '$1 == f {print $2}' | sort -g | awk '{v[NR] = $1} END {printf "%s %s %s\n", v[int((NR + 1) / 2)], v[1], v[NR]}'; }
  read -r bm bl bh <<<"$(stat before)"; read -r am al ah <<<"$(stat after)"
  say "$(printf '%-40s %10s %10s %7s%%   %s..%s | %s..%s' "$f" "$bm" "$am" "$(awk -v a="$am" -v b="$bm" 'BEGIN {printf "%+.1f", (a - b) / b * 100}')" "$bl" "$bh" "$al" "$ah")"
done
say "# load at end $(cut -d' ' -f1-3 /proc/loadavg)"
