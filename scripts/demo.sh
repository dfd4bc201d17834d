#!/usr/bin/env bash
# demo.sh BUILD_DIR - a target and an initiator on loopback: verified WRITEs, then verified
# READs, over mc's own transport choice and over TCP. Exits nonzero on any failure; the target
# is always stopped on the way out.
set -euo pipefail

BUILD=${1:-build}
BENCH=$BUILD/bin/mc_bench
if [[ ! -x $BENCH ]]; then
  echo "demo: $BENCH not found; run 'make all' first" >&2
  exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mc-demo.XXXXXX")
TARGET_PID=
cleanup() {
  local rc=$?
  if [[ -n $TARGET_PID ]] && kill -0 "$TARGET_PID" 2>/dev/null; then
    kill -TERM "$TARGET_PID" 2>/dev/null || true
    # A target that does not stop in 5 s is killed.
    for _ in $(seq 50); do kill -0 "$TARGET_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TARGET_PID" 2>/dev/null || true
    wait "$TARGET_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The target prints "segment: NAME" as its first stdout line once it serves.
"$BENCH" target --listen 127.0.0.1:0 --size 64M >"$TMP/target.out" 2>"$TMP/target.err" &
TARGET_PID=$!
SEGMENT=
for _ in $(seq 100); do
  SEGMENT=$(sed -n 's/^segment: //p' "$TMP/target.out")
  [[ -n $SEGMENT ]] && break
  if ! kill -0 "$TARGET_PID" 2>/dev/null; then
    echo "demo: the target exited before serving:" >&2
    cat "$TMP/target.err" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z $SEGMENT ]]; then
  echo "demo: the target printed no 'segment:' line within 10 s" >&2
  cat "$TMP/target.err" >&2
  exit 1
fi
echo "demo: target serves segment $SEGMENT (pid $TARGET_PID)"

# Every run verifies every byte; the figures include those checks, so they are no benchmark
# (make bench runs bench/tcp.sh for figures). "auto" is mc's own choice (shared memory on one
# host, where the library has it); "tcp" forces the TCP path.
echo "demo: verified WRITEs, then verified READs (block 1M, batch 8, 2 threads, 2 s each)"
RUNS=()
for transport in auto tcp; do
  for op in write read; do
    run=$transport-$op
    "$BENCH" initiator --segment "$SEGMENT" --transport "$transport" --op "$op" --block 1M \
      --batch 8 --threads 2 --duration 2 --verify >"$TMP/$run.out" 2>"$TMP/$run.err" || {
      echo "demo: $op over transport '$transport' failed:" >&2
      cat "$TMP/$run.err" >&2
      exit 1
    }
    RUNS+=("$run")
  done
done
head -n 1 "$TMP/${RUNS[0]}.out"
for run in "${RUNS[@]}"; do tail -n +2 "$TMP/$run.out"; done
for run in "${RUNS[@]}"; do
  echo "demo: $run: $(grep -h 'verified' "$TMP/$run.err" | sed 's/^mc_bench: //')"
done

if ! kill -0 "$TARGET_PID" 2>/dev/null; then
  echo "demo: the target died during the run:" >&2
  cat "$TMP/target.err" >&2
  exit 1
fi
kill -TERM "$TARGET_PID"
if ! wait "$TARGET_PID"; then
  echo "demo: the target did not exit cleanly:" >&2
  cat "$TMP/target.err" >&2
  TARGET_PID=
  exit 1
fi
TARGET_PID=
echo "demo: ok"
