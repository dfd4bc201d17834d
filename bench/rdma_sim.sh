#!/bin/bash
# Software cost of the RDMA transport through the simulated NIC (no RDMA hardware here):
# requests/s for 4 KiB and 64 KiB WRITEs between two engines of one process (non-adjacent
# targets, so the engine cannot merge requests), and rejoin -> first completed transfer.
# Usage: bench/rdma_sim.sh [BUILD_DIR]   (writes bench/results/rdma_sim.txt)
set -e
build="${1:-build}"
cd "$(dirname "$0")/.."
make -s lib BUILD="$build"
mkdir -p "$build/bin" bench/results
g++ -std=c++20 -O2 -Iinclude bench/rdma_sim_bench.cpp -o "$build/bin/rdma_sim_bench" -L"$build/lib" -lmc \
  -Wl,-rpath,"$PWD/$build/lib" -lpthread
out=bench/results/rdma_sim.txt
{
  echo "# bench/rdma_sim.sh on $(hostname) ($(nproc) cores), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "# simulated NIC: the poller thread executes each WR (memcpy) - these are software-path figures, not NIC figures"
  for nics in sim sim:2; do
    for size in 4096 65536; do "$build/bin/rdma_sim_bench" $size $nics 3; done
  done
  "$build/bin/rdma_sim_bench" 4096 sim:2 0 rejoin 50
} | tee "$out"
