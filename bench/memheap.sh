#!/bin/bash
# Builds and runs the memheap benchmark: alloc+free pairs per second through mc_heap_* with
# 10,000 live blocks of mixed sizes, beside glibc malloc/free of the same sizes, 1 and 2 threads.
# Usage: bench/memheap.sh [RESULTS_FILE] [PAIRS_PER_THREAD]
#   RESULTS_FILE      where the table goes as well as stdout (default bench/results/memheap.txt)
#   PAIRS_PER_THREAD  timed alloc+free pairs per thread and case (default 4000000)
# The heap is compiled from its sources (g++ -O2, the library's flags), so this needs neither
# the rest of the library nor a Makefile target. Output binary: build/bench-memheap/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/results/memheap.txt}"
pairs="${2:-4000000}"
dir=build/bench-memheap
cxx="${CXX:-g++}"
flags=(-std=c++20 -O2 -g -Wall -Wextra -Werror -pthread -Iinclude -Isrc)
mkdir -p "$dir" "$(dirname "$out")"
pids=()
for src in src/memheap/memheap.cpp src/api/heap_api.cpp src/api/status_api.cpp; do
  "$cxx" "${flags[@]}" -fvisibility=hidden -fvisibility-inlines-hidden -c "$src" \
    -o "$dir/$(basename "$src" .cpp).o" &
  pids+=($!)
done
"$cxx" "${flags[@]}" -c bench/memheap_bench.cpp -o "$dir/memheap_bench.o" &
pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done  # each one, so that a failed compile stops the script
"$cxx" -pthread -o "$dir/memheap_bench" "$dir"/*.o
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$dir/memheap_bench" "$out" "$pairs"
# Where and when: the figures mean little without the machine and how busy it was.
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $cpu, $(nproc) cores, $(uname -sr);"
  echo "load average (1/5/15 min) before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  cat "$out"
} > "$out.tmp" && mv "$out.tmp" "$out"
echo "results written to $out"
