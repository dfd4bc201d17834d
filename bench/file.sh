#!/bin/bash
# file.sh BUILD_DIR - mc file segments (mc_bench --file) against fio's io_uring engine on the same
# file in the same run: sequential 1 MiB READ and WRITE with O_DIRECT at queue depth 32, random
# 4 KiB READ with O_DIRECT at queue depth 64 (IOPS), and 100,000 scattered 4 KiB pages in one
# batch (the KV offload pattern) against fio replaying the same kind of offsets from an iolog.
# Writes bench/results/file.txt (OUT=... for another file). GB/s = 10^9 bytes/s.
#
# Same work on both sides: one file of SIZE (default 1G, filled with data first, so reads hit
# the device, not holes), mc with workers=1 (one io_uring) and file_queue_depth equal to fio's
# iodepth, so that neither has more than depth requests at the device. fio keeps depth in flight
# continuously. mc is measured two ways: "1 batch" submits a batch of depth requests and waits
# for it before the next (the device idles from the batch's last completion until the next
# batch reaches the ring: two thread hand-offs, slow on a loaded machine), and "2 batches"
# (mc_bench --inflight 2) keeps a second batch queued in the engine, which the ring starts as
# slots free up, as a streaming application double-buffers; still at most depth at the device.
# Random offsets: mc_bench --random walks slot (k * 48271 + 11) mod slots; fio randread uses its
# own generator; the 100,000-page case gives fio an iolog of exactly mc's first 100,000 offsets.
# The page cache is dropped before every run (echo 3 > /proc/sys/vm/drop_caches) where this
# process may write it; the result file says whether it could. Each case runs ROUNDS times
# (default 5), fio and the mc variants in an order that rotates each round (so that neither side
# always runs first after the cache drop), and the table gives each side's median and best.
set -uo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results/file.txt}
BENCH=$BUILD/bin/mc_bench
FILE=${FILE:-/var/tmp/mc-file-bench.dat}
SIZE=${SIZE:-1G}
DUR=${DURATION:-3}
ROUNDS=${ROUNDS:-5}
command -v fio >/dev/null || { echo "file.sh: fio is missing (scripts/install-deps.sh)" >&2; exit 2; }
[ -x "$BENCH" ] || { echo "file.sh: no $BENCH (make all)" >&2; exit 2; }
tmp=$(mktemp -d /tmp/mc-file-bench.XXXXXX)
trap 'rm -rf "$tmp"; rm -f "$FILE"' EXIT

# Tried once here (a run's $(...) subshell could not report back).
if sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then drop=yes; else drop="no: not permitted here"; fi
drop_caches() { sync; [ "$drop" = yes ] && echo 3 >/proc/sys/vm/drop_caches; }

# fio's figure for one job: "bw" (bytes/s) or "iops" of its read or write part.
fio_num() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0][sys.argv[2]]; print(j["bw_bytes"] if sys.argv[3]=="bw" else j["iops"])' "$@"; }
mc_num() { python3 -c 'import json,sys; j=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(j["gbps"]*1e9 if sys.argv[2]=="bw" else j["requests"]/j["seconds"])' "$@"; }
best() { python3 -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "$@"; }

run_fio() {  # NAME RW BS DEPTH [extra...] -> prints the figure
  local name=$1 rw=$2 bs=$3 depth=$4; shift 4
  drop_caches
  fio --name="$name" --filename="$FILE" --ioengine=io_uring --direct=1 --rw="$rw" --bs="$bs" \
    --iodepth="$depth" --size="$SIZE" --output-format=json --output="$tmp/fio.json" "$@" >/dev/null 2>&1 ||
    { echo "fio failed" >&2; echo 0; return; }
  case $rw in *write*) fio_num "$tmp/fio.json" write "$KIND";; *) fio_num "$tmp/fio.json" read "$KIND";; esac
}
run_mc() {  # OP BLOCK DEPTH BATCH [extra...]
  local op=$1 block=$2 depth=$3 batch=$4; shift 4
  drop_caches
  "$BENCH" initiator --file "$FILE" --file-size "$SIZE" --direct --op "$op" --block "$block" --batch "$batch" \
    --threads 1 --duration "$DUR" --workers 1 --queue-depth "$depth" --json "$@" >"$tmp/mc.json" 2>"$tmp/mc.err" ||
    { cat "$tmp/mc.err" >&2; echo 0; return; }
  mc_num "$tmp/mc.json" "$KIND"
}
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# Fill the file with data (no holes), through fio so that mc and fio read the same bytes.
fio --name=fill --filename="$FILE" --ioengine=io_uring --direct=1 --rw=write --bs=1M --iodepth=32 \
  --size="$SIZE" >/dev/null 2>&1 || { echo "file.sh: could not fill $FILE" >&2; exit 1; }
slots=$(( $(numfmt --from=iec "$SIZE") / 4096 ))
python3 - "$FILE" "$slots" >"$tmp/pages.iolog" <<'PY'
import sys
f, slots = sys.argv[1], int(sys.argv[2])
print("fio version 2 iolog"); print(f, "add"); print(f, "open")
# mc_bench --random's first timed batch (iteration 1) of 100000: k = 100000 + i
for i in range(100000): print(f, "read", ((100000 + i) * 48271 + 11) % slots * 4096, 4096)
print(f, "close")
PY

load0=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
each=()
row() {  # LABEL KIND MC-VALUES FIO-VALUES (space-separated)
  python3 -c 'import sys,statistics as st; l,k=sys.argv[1:3]; m=[float(x) for x in sys.argv[3].split()]; f=[float(x) for x in sys.argv[4].split()]
fmt=(lambda v: "%.3f GB/s" % (v/1e9)) if k=="bw" else (lambda v: "%.0f IOPS" % v)
mm,fm,mb,fb=st.median(m),st.median(f),max(m),max(f)
print("%-46s %14s %14s %6.2fx %14s %14s %6.2fx" % (l, fmt(mm), fmt(fm), mm/fm if fm else 0, fmt(mb), fmt(fb), mb/fb if fb else 0))' "$@"
}
case_run() {  # LABEL KIND "NAME|mc-args" ["NAME|mc-args" ...] -- fio-args...
  local label=$1; KIND=$2; shift 2
  local variants=() fioargs=() f=() r i n
  while [ "$1" != "--" ]; do variants+=("$1"); shift; done; shift; fioargs=("$@")
  n=$(( ${#variants[@]} + 1 ))
  local -A m=()
  for r in $(seq 0 $((ROUNDS - 1))); do
    for i in $(seq 0 $((n - 1))); do  # rotated: round r starts with entry r mod n (0 is fio)
      local k=$(( (i + r) % n ))
      if [ $k -eq 0 ]; then f+=("$(run_fio "${fioargs[@]}")")
      else local v=${variants[$((k - 1))]}; m[$k]+="$(run_mc ${v#*|}) "; fi
    done
  done
  for i in $(seq 1 $((n - 1))); do
    local v=${variants[$((i - 1))]}
    rows+=("$(row "$label, mc ${v%%|*}" "$KIND" "${m[$i]}" "${f[*]}")")
    each+=("$label, mc ${v%%|*}: $(printf '%.4g ' ${m[$i]})")
  done
  each+=("$label, fio: $(printf '%.4g ' "${f[@]}")")
}
T="--time_based --runtime=$DUR"
case_run "seq READ 1 MiB QD32 O_DIRECT" bw "2 batches|read 1M 32 32 --inflight 2" "1 batch|read 1M 32 32" \
  -- seqr read 1M 32 $T
case_run "seq WRITE 1 MiB QD32 O_DIRECT" bw "2 batches|write 1M 32 32 --inflight 2" "1 batch|write 1M 32 32" \
  -- seqw write 1M 32 $T
case_run "rand READ 4 KiB QD64 O_DIRECT" iops "2 batches|read 4K 64 64 --random --inflight 2" \
  "1 batch|read 4K 64 64 --random" -- randr randread 4k 64 $T
case_run "100,000 scattered 4 KiB READs" iops "1 batch|read 4K 64 100000 --random" -- pages read 4k 64 \
  --read_iolog="$tmp/pages.iolog" --replay_no_stall=1

{
  echo "# bench/file.sh: mc file segments against fio $(fio --version) (io_uring engine), same file, same run"
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
  echo "file:    $FILE, $SIZE, on $(findmnt -n -o SOURCE,FSTYPE -T "$(dirname "$FILE")")"
  echo "load:    $load0 (1/5/15 min) at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; other sessions share this machine"
  echo "caches:  dropped before every run: $drop"
  echo "mc:      workers=1 (one io_uring), file_queue_depth = fio iodepth, batches of that many requests;"
  echo "         '1 batch': submit, wait, submit; '2 batches': mc_bench --inflight 2 (one queued behind)"
  echo "         (100,000-page case: one batch of 100,000 requests, depth 64); $DUR s per run, $ROUNDS rounds,"
  echo "         fio and mc variants in an order rotated each round"
  echo
  printf "%-46s %14s %14s %7s %14s %14s %7s\n" "case" "mc median" "fio median" "ratio" "mc best" "fio best" "ratio"
  for r in "${rows[@]}"; do echo "$r"; done
  echo
  echo "each round (bytes/s or IOPS):"
  for r in "${each[@]}"; do echo "  $r"; done
} | tee "$OUT"
