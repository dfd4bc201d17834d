#!/bin/bash
# Fault figures: detection (peer death or hang -> MC_SEGMENT_UNREACHABLE), resumption (restarted
# peer answering -> first verified transfer), requests lost or corrupted over kill/restart cycles,
# for TCP and shm, with the default health settings and with fast ones.
# Usage: bench/fault.sh [BUILD_DIR] (default build; run `make all` and the test helpers first).
# Writes bench/results/fault.txt. CYCLES (default 100) and STOPS (default 10) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cycles=${CYCLES:-100}
stops=${STOPS:-10}
[ -e "$build/lib/libmc.so" ] || { echo "fault.sh: $build/lib/libmc.so missing: run make first" >&2; exit 1; }
[ -x "$build/tests/helper_fault_target" ] || make "$build/tests/helper_fault_target" >/dev/null
out=bench/results/fault.txt
bin=$build/bench/fault_bench
mkdir -p "$(dirname "$bin")" bench/results
gcc -std=c11 -O2 -g -Wall -Wextra -Werror -pthread -Iinclude -Itests bench/fault_bench.c tests/testutil.c \
  -L"$build/lib" -lmc -Wl,-rpath,"$(cd "$build/lib" && pwd)" -lpthread -o "$bin"
export MC_FAULT_HELPER=$build/tests/helper_fault_target MC_LOG_LEVEL=error
{
  echo "# bench/fault.sh on $(hostname) $(date -u +%FT%TZ), $(nproc) CPUs; $cycles kill/restart cycles, $stops SIGSTOPs per row"
  echo "# detection goal: peer_timeout_ms + one heartbeat; resumption goal: 500 ms; lost/corrupted goal: 0"
  rc=0
  for cfg in "1000 3000" "100 500"; do
    set -- $cfg
    for tr in tcp shm; do
      timeout 900 "$bin" "$tr" "$cycles" "$1" "$2" "$stops" || rc=1
    done
  done
  exit $rc
} 2>/dev/null | tee "$out"
