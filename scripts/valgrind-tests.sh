#!/bin/bash
# Runs each test binary given under valgrind memcheck: any invalid read or write, use of
# uninitialised memory, bad free or definite/indirect leak fails it. One summary line at the end.
# Usage: valgrind-tests.sh TEST_BIN...   (MC_TEST_SCALE, MC_TEST_TIMEOUT as for run-tests.sh)
set -uo pipefail
limit="${MC_TEST_TIMEOUT:-900}"
pass=0; fail=0; failed=()
for t in "$@"; do
  name="$(basename "$t")"
  echo "=== valgrind $name"
  start=$(date +%s)
  # --child-silent-after-fork: tests that fork a child which execs a helper stay readable.
  if timeout --signal=KILL "$limit" valgrind --tool=memcheck --error-exitcode=99 \
       --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
       --track-origins=yes --child-silent-after-fork=yes --fair-sched=yes --num-callers=30 \
       --quiet "$t"; then
    pass=$((pass + 1)); echo "--- valgrind $name ok in $(( $(date +%s) - start )) s"
  else
    rc=$?
    echo "--- valgrind $name FAILED (exit $rc; 99 = memcheck errors) after $(( $(date +%s) - start )) s"
    fail=$((fail + 1)); failed+=("$name")
  fi
done
echo "=== valgrind summary: $pass test programs clean, $fail failed${failed:+: ${failed[*]}}"
[ "$fail" -eq 0 ]
