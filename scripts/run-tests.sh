#!/bin/bash
# Runs each test binary given, with a time limit each, and prints one closing summary line.
# Usage: run-tests.sh BUILD_DIR TEST_BIN...
build="$1"; shift
limit="${MC_TEST_TIMEOUT:-600}"
pass=0; fail=0; failed=()
for t in "$@"; do
  echo "=== $(basename "$t")"
  if timeout --signal=KILL "$limit" "$t"; then
    pass=$((pass + 1))
  else
    rc=$?
    echo "--- $(basename "$t") FAILED (exit $rc)"
    fail=$((fail + 1)); failed+=("$(basename "$t")")
  fi
done
echo "=== summary ($build): $pass test programs passed, $fail failed${failed:+: ${failed[*]}}"
[ "$fail" -eq 0 ]
