#!/bin/bash
# notify.sh BUILD_DIR - what mc's notifications cost, against Mooncake's and NIXL's notification
# paths from their pip wheels, in one run on this machine. Writes bench/results/notify.txt.
#   mc (bench/notify_bench.c, two engines of one process over tcp and over shm; the receiver
#   waits in epoll on its engine's event fd):
#     - notify latency: submit of a NOTIFY to the receiver's wake-up (p50/p99)
#     - a WRITE of one 64 KiB / 1 MiB block + a NOTIFY until the receiver has the notification,
#       against the same WRITE alone (mc_transfer): what the ordering costs
#   Mooncake (mooncake-transfer-engine-non-cuda, TransferEngine over "tcp", two processes) and
#   NIXL (nixl, two agents of one process on its UCX backend, UCX_TLS as UCX picks and =tcp):
#   the same through bench/notify_peers.py. Neither gives a file descriptor to wait on: their
#   receivers poll (yielding the CPU between polls). Mooncake has no notification without a
#   transfer in its Python API, so its latency row is an 8-byte WRITE with a notification.
# The wheels go into a venv (VENV, default /tmp/mc-notify-venv) that is made when missing; a
# wheel that does not install or run is reported in the file with its error line, not hidden.
# Not part of `make test`.
set -uo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
OUT=${OUT:-$HERE/results/notify.txt}
N=${ROUNDS:-2000}
VENV=${VENV:-/tmp/mc-notify-venv}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$HERE/results"
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }

say "# mc notifications vs Mooncake and NIXL, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
say "# $N latency rounds, $N 64 KiB rounds, $((N / 4)) 1 MiB rounds; us = microseconds, MB/s = 10^6 bytes/s"
gcc -O2 -std=c11 -I"$ROOT/include" "$HERE/notify_bench.c" -o "$TMP/notify_bench" -L"$BUILD/lib" -lmc \
  -Wl,-rpath,"$BUILD/lib" -lpthread || exit 1
# The machine is shared: every mc case runs REPEAT times (default 3), each printed, so that one
# disturbed run shows as such rather than passing for the figure.
for r in $(seq "${REPEAT:-3}"); do
  for t in shm tcp; do
    "$TMP/notify_bench" "$t" "$N" 2>&1 | sed "s/^/run $r: /" | tee -a "$OUT"
  done
done

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || { say "peers: no venv at $VENV"; exit 0; }
fi
for w in mooncake-transfer-engine-non-cuda nixl numpy; do
  "$VENV/bin/pip" show -q "$w" >/dev/null 2>&1 || "$VENV/bin/pip" install -q "$w" >"$TMP/pip.log" 2>&1 ||
    say "peers: pip install $w failed: $(tail -1 "$TMP/pip.log")"
done
peer() {  # name [env...]
  local name=$1; shift
  env "$@" timeout 600 "$VENV/bin/python" "$HERE/notify_peers.py" "$name" "$N" >"$TMP/p.out" 2>"$TMP/p.err"
  local rc=$?
  grep -E "latency|block" "$TMP/p.out" | sed "s/^/${*:+[$*] }/" | tee -a "$OUT"
  if ((rc != 0)); then
    if grep -q block "$TMP/p.out"; then
      say "$name${*:+ [$*]}: measured, then exited with status $rc$( ((rc == 139)) && echo " (SIGSEGV)") while shutting down"
    else
      say "$name${*:+ [$*]}: did not run (status $rc): $(grep -v 'INFO\|^[IWE][0-9]' "$TMP/p.err" | tail -1)"
    fi
  fi
}
peer mooncake
peer nixl
peer nixl UCX_TLS=tcp
