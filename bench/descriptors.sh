#!/bin/bash
# Descriptor-heavy figures (issue: 100,000-request batches, 10,000 buffers).
# Usage: bench/descriptors.sh [BUILD_DIR]; writes bench/results/descriptors.txt.
set -euo pipefail
build="${1:-build}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p bench/results "$build/bin"
gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude bench/descriptors_bench.c -o "$build/bin/descriptors_bench" \
  -L"$build/lib" -lmc -Wl,-rpath,"$root/$build/lib"
{
  echo "# machine: $(nproc) cores, $(uname -r); $(date -u +%F)"
  "$build/bin/descriptors_bench"
} | tee bench/results/descriptors.txt
