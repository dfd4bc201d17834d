#!/bin/bash
# Runs each test binary given, with a time limit each, and prints per program how many cases
# passed and how many skipped, then one closing summary line.
# Usage: run-tests.sh BUILD_DIR TEST_BIN...
#
# Skips are counted from cmocka's "[  SKIPPED ] N test(s)" lines, never as passes; a program
# whose every case skipped is reported as SKIPPED. A test says why it skipped with a line
#   MC-SKIP: <reason>             (optional here: no GPU, no RDMA NIC)
#   MC-SKIP-REQUIRED: <reason>    (a suite that must run on a `make test` machine: the etcd and
#                                  redis metadata cases, network namespaces, the fd flood)
# (tests/testutil.h: TU_SKIP / TU_SKIP_REQUIRED). A required skip fails the run, naming the
# program and reason, unless MC_ALLOW_SKIP=1.
build="$1"; shift
limit="${MC_TEST_TIMEOUT:-600}"
pass=0; fail=0; failed=(); skipped_progs=(); skip_total=0; skip_notes=(); required=()
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
# sum_field REGEX: the sum of the first number on every line of the output that matches REGEX.
sum_field() { grep -aE "$1" "$tmp" | sed -E 's/[^0-9]*([0-9]+).*/\1/' | awk '{s += $1} END {print s + 0}'; }
for t in "$@"; do
  name=$(basename "$t")
  echo "=== $name"
  t0=$(date +%s.%N)
  timeout --signal=KILL "$limit" "$t" 2>&1 | tee "$tmp"
  rc=${PIPESTATUS[0]}
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f s", b - a}')
  npass=$(sum_field '^\[  PASSED  \] [0-9]+ test')
  nskip=$(sum_field '^\[  SKIPPED \] [0-9]+ test\(s\)')
  reason=$(grep -aoE 'MC-SKIP(-REQUIRED)?: .*' "$tmp" | sed -E 's/^MC-SKIP(-REQUIRED)?: //' |
           awk '!seen[$0]++' | paste -sd';' | sed 's/;/; /g')
  while IFS= read -r r; do
    [ -n "$r" ] && required+=("$name: $r")
  done < <(grep -aoE 'MC-SKIP-REQUIRED: .*' "$tmp" | sed 's/^MC-SKIP-REQUIRED: //' | awk '!seen[$0]++')
  if [ "$nskip" -gt 0 ]; then
    # The summary keeps each reason up to its first ": " ("no GPU", "network namespaces").
    short=$(grep -aoE 'MC-SKIP(-REQUIRED)?: .*' "$tmp" | sed -E 's/^MC-SKIP(-REQUIRED)?: //; s/: .*//' |
            awk '!seen[$0]++' | paste -sd';' | sed 's/;/; /g')
    skip_total=$((skip_total + nskip))
    skip_notes+=("$name: $nskip [${short:-no reason printed}]")
  fi
  if [ "$rc" -ne 0 ]; then
    echo "--- $name FAILED (exit $rc): $npass passed, $nskip skipped [$secs]"
    fail=$((fail + 1)); failed+=("$name")
  elif [ "$nskip" -gt 0 ] && [ "$npass" -eq 0 ]; then
    echo "--- $name SKIPPED: every case ($nskip) skipped: ${reason:-no reason printed} [$secs]"
    skipped_progs+=("$name")
  else
    echo "--- $name: $npass passed, $nskip skipped${reason:+ ($reason)} [$secs]"
    pass=$((pass + 1))
  fi
done
line="=== summary ($build): $pass test programs passed, $fail failed${failed:+: ${failed[*]}}"
[ ${#skipped_progs[@]} -gt 0 ] && line+=", ${#skipped_progs[@]} skipped entirely: ${skipped_progs[*]}"
if [ "$skip_total" -gt 0 ]; then
  notes=$(printf '%s, ' "${skip_notes[@]}"); notes=${notes%, }
  line+="; $skip_total cases skipped in ${#skip_notes[@]} programs ($notes)"
else
  line+="; 0 cases skipped"
fi
echo "$line"
status=0
[ "$fail" -eq 0 ] || status=1
if [ ${#required[@]} -gt 0 ]; then
  if [ "${MC_ALLOW_SKIP:-0}" = 1 ]; then
    echo "=== required suites skipped (allowed by MC_ALLOW_SKIP=1):"
  else
    echo "=== FAILED: required suites skipped (set MC_ALLOW_SKIP=1 to allow):"
    status=1
  fi
  for r in "${required[@]}"; do echo "  $r"; done
fi
exit $status
