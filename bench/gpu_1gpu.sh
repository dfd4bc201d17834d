#!/bin/bash
# One-GPU benchmark (two processes sharing GPU 0): single requests next to cuMemcpyAsync, and
# kernel -> transfer -> kernel layers with mc_batch_submit_on_stream against
# submit-after-synchronize. Results go to bench/results/gpu_1gpu.txt (and $OUT/gpu_1gpu.txt).
# Usage: bench/gpu_1gpu.sh [BUILD_DIR] [--quick]   (builds BUILD_DIR/bin/gpu_1gpu_bench from libmc.a when absent)
set -o pipefail
build="${1:-build}"; [ $# -gt 0 ] && shift
cd "$(dirname "$0")/.." || exit 1
mkdir -p bench/results "$build/bin"
[ -x "$build/bin/gpu_1gpu_bench" ] || ${CXX:-g++} -std=c++20 -O2 -Wall -Wextra -Werror -pthread -Iinclude -Isrc \
  bench/gpu_1gpu_bench.cpp "$build/lib/libmc.a" -o "$build/bin/gpu_1gpu_bench" \
  $(make -s --no-print-directory harden-print-LIBS_PRIVATE) || exit 1
out=bench/results/gpu_1gpu.txt
{
  echo "# bench/gpu_1gpu.sh on $(hostname), $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader 2>/dev/null
  "$build/bin/gpu_1gpu_bench" "$@"
} 2>&1 | tee "$out"
rc=$?
[ -n "$OUT" ] && cp "$out" "$OUT/gpu_1gpu.txt"
exit $rc
