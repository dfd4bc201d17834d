#!/bin/bash
# small.sh BUILD_DIR - the fixed cost of a request (issue 23), with its peer in the same run.
#   - 8-byte WRITE and READ, one request per mc_transfer call, p50 over ITERS calls: over local
#     (the engine's own segment) and over shm (a peer process's mc_buffer_alloc memory), against
#     UCX posix ucp_put_lat 8 (half a put ping-pong: ucx_perftest's own latency figure);
#   - a batch of 64 WRITEs of 64 bytes (reset + submit + wait), per request;
#   - 64 KiB WRITE and READ over shm (batches of 8 on one block, as bench/shm.sh) against UCX
#     posix ucp_put_bw / ucp_get, in every round.
# ROUNDS interleaved rounds (default 3): each prints its own figures, the table gives medians and
# the goals of the issue as met / NOT met (never asserted). Writes bench/results/small.txt (OUT=...).
# The bench program is bench/small_bench.c (one thread, each call timed on its own).
set -uo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results/small.txt}
ROUNDS=${ROUNDS:-3} ITERS=${ITERS:-200000} DUR=${DURATION:-1}
BENCH=$BUILD/bin/mc_bench
[ -x "$BENCH" ] || { echo "small.sh: $BENCH not found; build first" >&2; exit 1; }
command -v ucx_perftest >/dev/null || { echo "small.sh: ucx_perftest not found (scripts/install-deps.sh)" >&2; exit 1; }
LIB=$(cd "$BUILD/lib" && pwd)
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
"${CC:-cc}" -std=c11 -O2 -g -Wall -Wextra -Werror -I"$HERE/../include" "$HERE/small_bench.c" \
  -o "$TMP/small_bench" -L"$LIB" -lmc -Wl,-rpath,"$LIB" || exit 1
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
med() { printf '%s\n' "$@" | grep -v n/a | sort -g | awk '{v[NR] = $1} END {print (NR == 0 ? "n/a" : v[int((NR + 1) / 2)])}'; }

"$BENCH" target --size 64M --alloc >"$TMP/t.out" 2>"$TMP/t.err" &
PIDS+=($!)
for _ in $(seq 400); do grep -q '^segment: ' "$TMP/t.out" 2>/dev/null && break; sleep 0.05; done
SEG=$(sed -n 's/^segment: //p' "$TMP/t.out")
[ -n "$SEG" ] || { echo "small.sh: the target did not start: $(tail -1 "$TMP/t.err")" >&2; exit 1; }

ucx() {  # test size iters -> latency us (put_lat) or GB/s (bw tests)
  local port; port=$(free_port)
  UCX_TLS=posix ucx_perftest -p "$port" >/dev/null 2>&1 &
  local sp=$!; sleep 0.4
  UCX_TLS=posix timeout 60 ucx_perftest 127.0.0.1 -p "$port" -t "$1" -s "$2" -n "$3" -f >"$TMP/u.out" 2>/dev/null
  kill $sp 2>/dev/null; wait $sp 2>/dev/null
  if [ "$1" = ucp_put_lat ]; then awk 'NF == 8 && $1 ~ /^[0-9]+$/ {v = $2} END {print (v == "" ? "n/a" : v)}' "$TMP/u.out"
  else awk 'NF == 8 && $1 ~ /^[0-9]+$/ {v = $6} END {if (v == "") print "n/a"; else printf "%.3f\n", v * 1048576 / 1e9}' "$TMP/u.out"; fi
}
mc64k() {  # op -> GB/s
  "$BENCH" initiator --segment "$SEG" --op "$1" --block 64K --batch 8 --threads 1 --duration "$DUR" \
    --transport shm --reuse --one-block --alloc --json 2>/dev/null | sed -n 's/.*"gbps":\([0-9.]*\).*/\1/p' | tail -1
}
field() { awk -v c="$2" '$1 == c {printf "%.3f\n", $3 / 1000}' "$1"; }     # case -> p50 us
field_ns() { awk -v c="$2" '$1 == c {print $3}' "$1"; }                    # case -> p50 ns

say "# small.sh $(date -u +%FT%TZ), mc $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), load at start $(cut -d' ' -f1-3 /proc/loadavg)"
say "# p50 over $ITERS calls per case, one thread; 64 KiB: batches of 8 on one block for ${DUR} s (mc) / 4 GiB (UCX)"
declare -A V
for ((r = 1; r <= ROUNDS; r++)); do
  "$TMP/small_bench" local "$ITERS" >"$TMP/local.txt" || { echo "small.sh: small_bench local failed" >&2; exit 1; }
  "$TMP/small_bench" shm "$SEG" "$ITERS" >"$TMP/shm.txt" || { echo "small.sh: small_bench shm failed" >&2; exit 1; }
  row=(
    "local_write_8B_us=$(field "$TMP/local.txt" write_8B)" "local_read_8B_us=$(field "$TMP/local.txt" read_8B)"
    "shm_write_8B_us=$(field "$TMP/shm.txt" write_8B)" "shm_read_8B_us=$(field "$TMP/shm.txt" read_8B)"
    "ucx_posix_put_lat_8B_us=$(ucx ucp_put_lat 8 1000000)"
    "local_batch64x64B_ns_per_req=$(field_ns "$TMP/local.txt" batch64x64B)"
    "shm_batch64x64B_ns_per_req=$(field_ns "$TMP/shm.txt" batch64x64B)"
    "shm_write_64K_gbps=$(mc64k write)" "ucx_posix_put_64K_gbps=$(ucx ucp_put_bw 65536 65536)"
    "shm_read_64K_gbps=$(mc64k read)" "ucx_posix_get_64K_gbps=$(ucx ucp_get 65536 65536)"
  )
  for kv in "${row[@]}"; do V[${kv%%=*}]+="${kv#*=} "; done
  say "  round $r: ${row[*]}"
done
say ""
say "$(printf '%-30s %10s   %s' figure median rounds)"
for k in local_write_8B_us local_read_8B_us shm_write_8B_us shm_read_8B_us ucx_posix_put_lat_8B_us \
         local_batch64x64B_ns_per_req shm_batch64x64B_ns_per_req shm_write_64K_gbps ucx_posix_put_64K_gbps \
         shm_read_64K_gbps ucx_posix_get_64K_gbps; do
  # shellcheck disable=SC2086
  say "$(printf '%-30s %10s   %s' "$k" "$(med ${V[$k]})" "${V[$k]}")"
done
goal() {  # description value op limit
  local ok; ok=$(awk -v v="$2" -v l="$4" -v o="$3" 'BEGIN {if (v == "n/a") print "n/a"; else if ((o == "<=" && v <= l) || (o == ">=" && v >= l) || (o == "<" && v < l)) print "met"; else print "NOT met"}')
  say "goal: $1: $2 $3 $4: $ok"
}
say ""
# shellcheck disable=SC2086
{
  goal "shm 8-byte WRITE p50 (us)" "$(med ${V[shm_write_8B_us]})" "<=" 0.3
  goal "shm 8-byte READ p50 (us)" "$(med ${V[shm_read_8B_us]})" "<=" 0.3
  goal "local 8-byte WRITE p50 (us)" "$(med ${V[local_write_8B_us]})" "<" 0.15
  goal "local 8-byte READ p50 (us)" "$(med ${V[local_read_8B_us]})" "<" 0.15
  goal "batch of 64 x 64 B over shm, per request (ns)" "$(med ${V[shm_batch64x64B_ns_per_req]})" "<=" 40
}
# 64 KiB: at or above UCX in every round, not only in the median.
for op in write:put read:get; do
  read -ra m <<<"${V[shm_${op%%:*}_64K_gbps]}"; read -ra u <<<"${V[ucx_posix_${op#*:}_64K_gbps]}"
  lost=0
  for i in "${!m[@]}"; do
    awk -v a="${m[$i]}" -v b="${u[$i]:-n/a}" 'BEGIN {exit !(a == "n/a" || b == "n/a" || a + 0 < b + 0)}' && lost=$((lost + 1))
  done
  say "goal: 64 KiB ${op%%:*} over shm at or above UCX posix ${op#*:} in every round: $([ $lost -eq 0 ] && echo met || echo "NOT met ($lost of ${#m[@]} rounds below or missing)")"
done
say "# load at end $(cut -d' ' -f1-3 /proc/loadavg)"
