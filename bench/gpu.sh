#!/bin/bash
# GPU benchmark (run on a machine with two GPUs joined by NVLink): mc over nvlink beside the
# copy-engine limit, NCCL send/recv through torch.distributed, pinned host<->device copies and
# the staging stage alone. Results go to bench/results/gpu.txt (and $OUT/gpu.txt when $OUT is set).
# Usage: bench/gpu.sh [BUILD_DIR]   (the library must be built: make lib)
set -o pipefail
build="${1:-build}"; [ $# -gt 0 ] && shift
cd "$(dirname "$0")/.." || exit 1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p bench/results "$build/bin"
out=bench/results/gpu.txt
${CXX:-g++} -std=c++20 -O2 -Wall -Wextra -Werror -pthread -Iinclude -Isrc bench/gpu_bench.cpp \
  "$build/lib/libmc.a" -o "$build/bin/gpu_bench" -lpthread -ldl -lstdc++ -lm -lcurl -lhiredis -lcrypto -luring $(pkg-config --libs libmicrohttpd 2>/dev/null) || exit 1
{
  echo "# bench/gpu.sh on $(hostname), $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader 2>/dev/null
  nvidia-smi topo -m 2>/dev/null | head -4
  "$build/bin/gpu_bench" "$@"
  echo
  python3 bench/gpu_nccl.py
} 2>&1 | tee "$out"
rc=$?
[ -n "$OUT" ] && cp "$out" "$OUT/gpu.txt"
exit $rc
