#!/bin/bash
# file.sh BUILD_DIR - mc file segments (mc_bench --file) against fio's io_uring engine on the same
# file in the same run: sequential 1 MiB READ and WRITE with O_DIRECT at queue depth 32, random
# 4 KiB READ with O_DIRECT at queue depth 64 (IOPS), and 100,000 scattered 4 KiB pages in one
# batch (the KV offload pattern) against fio replaying the same kind of offsets from an iolog.
# Writes bench/results/file.txt (OUT=... for another file). GB/s = 10^9 bytes/s.
#
# Same work on both sides: one file of SIZE (default 1G, filled with data first, so reads hit
# the device, not holes), mc with workers=1 (one io_uring) and file_queue_depth equal to fio's
# iodepth. mc submits batches of depth requests and waits for each batch (its API's unit), fio
# keeps depth in flight continuously: the difference is the batch tail, part of what is measured.
# Random offsets: mc_bench --random walks slot (k * 48271 + 11) mod slots; fio randread uses its
# own generator; the 100,000-page case gives fio an iolog of exactly mc's first 100,000 offsets.
# The page cache is dropped before every run (echo 3 > /proc/sys/vm/drop_caches) where this
# process may write it; the result file says whether it could. Each case runs ROUNDS times
# (default 2), mc and fio in turn, and the table gives the median (of 2: the mean).
set -uo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/results/file.txt}
BENCH=$BUILD/bin/mc_bench
FILE=${FILE:-/var/tmp/mc-file-bench.dat}
SIZE=${SIZE:-1G}
DUR=${DURATION:-3}
ROUNDS=${ROUNDS:-2}
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

rows=()
each=()
case_run() {  # LABEL KIND mc-args... -- fio-args...
  local label=$1; KIND=$2; shift 2
  local mcargs=() fioargs=() m=() f=()
  while [ "$1" != "--" ]; do mcargs+=("$1"); shift; done; shift; fioargs=("$@")
  for r in $(seq "$ROUNDS"); do m+=("$(run_mc "${mcargs[@]}")"); f+=("$(run_fio "${fioargs[@]}")"); done
  local mm ff; mm=$(median "${m[@]}"); ff=$(median "${f[@]}")
  rows+=("$(python3 -c 'import sys; l,k,m,f=sys.argv[1:]; m=float(m); f=float(f)
fmt=(lambda v: "%.3f GB/s" % (v/1e9)) if k=="bw" else (lambda v: "%.0f IOPS" % v)
print("%-34s %16s %16s %7.2fx" % (l, fmt(m), fmt(f), m/f if f else 0))' "$label" "$KIND" "$mm" "$ff")")
  each+=("$label: mc $(printf '%.4g ' "${m[@]}")/ fio $(printf '%.4g ' "${f[@]}")")
}
T="--time_based --runtime=$DUR"
case_run "seq READ 1 MiB QD32 O_DIRECT" bw read 1M 32 32 -- seqr read 1M 32 $T
case_run "seq WRITE 1 MiB QD32 O_DIRECT" bw write 1M 32 32 -- seqw write 1M 32 $T
case_run "rand READ 4 KiB QD64 O_DIRECT" iops read 4K 64 64 --random -- randr randread 4k 64 $T
case_run "100,000 scattered 4 KiB READs" iops read 4K 64 100000 --random -- pages read 4k 64 \
  --read_iolog="$tmp/pages.iolog" --replay_no_stall=1

{
  echo "# bench/file.sh: mc file segments against fio $(fio --version) (io_uring engine), same file, same run"
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
  echo "file:    $FILE, $SIZE, on $(findmnt -n -o SOURCE,FSTYPE -T "$(dirname "$FILE")")"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) before the last case; other sessions share this machine"
  echo "caches:  dropped before every run: $drop"
  echo "mc:      workers=1 (one io_uring), file_queue_depth = fio iodepth, batches of that many requests"
  echo "         (100,000-page case: one batch of 100,000 requests, depth 64); $DUR s per run, $ROUNDS rounds"
  echo
  printf "%-34s %16s %16s %8s\n" "case" "mc" "fio" "mc/fio"
  for r in "${rows[@]}"; do echo "$r"; done
  echo
  echo "each round (bytes/s or IOPS):"
  for r in "${each[@]}"; do echo "  $r"; done
} | tee "$OUT"
