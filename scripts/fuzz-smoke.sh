#!/bin/bash
# Runs each libFuzzer target given for SECONDS on a temporary copy of its committed seed corpus
# (tests/fuzz/corpus/<name>/, where fuzz_<name> is the binary), so the committed corpus never
# grows. Prints one line per target: runs, executions per second, corpus size before and after,
# peak RSS. A crash, leak, timeout or failed check fails the run; the input that caused it is
# kept in FUZZ_BUILD/artifacts/ (rerun it with: BINARY ARTIFACT).
# Usage: fuzz-smoke.sh SECONDS FUZZ_BINARY...
# FUZZ_FLAGS adds libFuzzer flags (e.g. FUZZ_FLAGS=-jobs=2).
set -uo pipefail
secs="$1"; shift
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0; summary=()
for bin in "$@"; do
  name="$(basename "$bin")"; name="${name#fuzz_}"
  art="$(dirname "$bin")/artifacts"
  mkdir -p "$tmp/$name" "$art"
  seeds="$root/tests/fuzz/corpus/$name"
  [ -d "$seeds" ] && cp -r "$seeds"/. "$tmp/$name"/
  before="$(find "$tmp/$name" -type f | wc -l)"
  echo "=== fuzz $name: ${secs}s, $before seeds"
  # -timeout: one input taking this long is a hang; -rss_limit_mb: the process must not grow.
  # shellcheck disable=SC2086
  "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 -artifact_prefix="$art/$name-" ${FUZZ_FLAGS:-} "$tmp/$name" \
    > "$tmp/$name.log" 2>&1
  rc=$?
  after="$(find "$tmp/$name" -type f | wc -l)"
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$name.log" | tail -1)"
  eps="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$tmp/$name.log" | tail -1)"
  rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$tmp/$name.log" | tail -1)"
  cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$tmp/$name.log" | tail -1)"
  line="fuzz $name: ${runs:-?} runs, ${eps:-?} exec/s, corpus $before -> $after files, ${cov:-no cov}, peak rss ${rss:-?} MB"
  if [ "$rc" -ne 0 ]; then
    echo "--- fuzz $name FAILED (exit $rc); log tail:"
    tail -60 "$tmp/$name.log"
    ls -1 "$art"/"$name"-* 2>/dev/null | sed 's/^/    artifact: /'
    line="$line: FAILED"
    fail=1
  fi
  echo "$line"
  summary+=("$line")
done
echo "=== fuzz-smoke summary"
printf '%s\n' "${summary[@]}"
exit "$fail"
