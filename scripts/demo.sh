#!/usr/bin/env bash
# demo.sh BUILD_DIR - a target and an initiator on loopback: verified WRITEs, then verified
# READs, over mc's default transport choice. Exits nonzero on any failure; the target is always
# stopped on the way out.
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

# Both runs verify every byte; their figures include the checks, so they are no benchmark.
# (make bench runs bench/tcp.sh for figures.)
echo "demo: verified WRITEs, then verified READs (block 1M, batch 8, 2 threads, 2 s each)"
for op in write read; do
  "$BENCH" initiator --segment "$SEGMENT" --op "$op" --block 1M --batch 8 --threads 2 \
    --duration 2 --verify >"$TMP/$op.out" 2>"$TMP/$op.err" || {
    echo "demo: $op failed:" >&2
    cat "$TMP/$op.err" >&2
    exit 1
  }
done
head -n 1 "$TMP/write.out"
tail -n +2 "$TMP/write.out"
tail -n +2 "$TMP/read.out"
grep -h 'verified' "$TMP/write.err" "$TMP/read.err" | sed 's/^mc_bench: /demo: /'

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
