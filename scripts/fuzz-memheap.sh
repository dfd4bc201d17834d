#!/bin/bash
# Builds the mc::MemHeap libFuzzer target (tests/fuzz/fuzz_memheap.cc) with clang++ into
# build-fuzz/ and runs it for SECONDS (default 60).
# Usage: scripts/fuzz-memheap.sh [SECONDS]
# The committed seeds in tests/fuzz/corpus/memheap/ are only read; inputs the fuzzer finds go
# to build-fuzz/corpus-memheap/, and a crashing input to build-fuzz/crash-*.
# CXX_FUZZ picks the compiler (default clang++); extra libFuzzer flags go in FUZZ_FLAGS.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/.."
out=build-fuzz
cxx="${CXX_FUZZ:-clang++}"
mkdir -p "$out/corpus-memheap"

"$cxx" -std=c++20 -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Werror -Iinclude -Isrc \
  tests/fuzz/fuzz_memheap.cc src/memheap/memheap.cpp -o "$out/fuzz_memheap"

# -max_len: a few thousand steps per input is plenty to reach every state of a heap;
# longer inputs only slow the search down.
exec "$out/fuzz_memheap" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$out/" ${FUZZ_FLAGS:-} "$out/corpus-memheap" tests/fuzz/corpus/memheap
