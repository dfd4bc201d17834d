#!/usr/bin/env bash
# metadata.sh [BUILD_DIR] - metadata figures per backend (p2p, etcd, redis), written to
# bench/results/metadata.txt as well as stdout:
#   - open latency: p50/p99 over 1000 x (mc_segment_open + mc_segment_close) of a peer's segment
#   - time for a crashed engine's (SIGKILL) descriptor to disappear, metadata_ttl_ms=1500 and 3000
#   - publish throughput with 1000 engines' descriptors in one store (claims at engine create,
#     updates at buffer register), and open latency with those 1000 in the store
# etcd and redis run on loopback on free ports from scratch directories and are killed at the end.
# Knobs (environment): MC_BENCH_OPENS (1000), MC_BENCH_ENGINES (1000), MC_BENCH_THREADS (8).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
out=bench/results/metadata.txt
opens="${MC_BENCH_OPENS:-1000}"
engines="${MC_BENCH_ENGINES:-1000}"
threads="${MC_BENCH_THREADS:-8}"
[ -e "$build/lib/libmc.so" ] || make -j2 lib BUILD="$build"
mkdir -p "$build/bench" "$(dirname "$out")"
bin="$build/bench/metadata_bench"
"${CC:-cc}" -std=c11 -O2 -g -Wall -Wextra -Werror -pthread -Iinclude bench/metadata_bench.c -o "$bin" \
  -L"$build/lib" -lmc -Wl,-rpath,"$(cd "$build/lib" && pwd)"

tmp=$(mktemp -d /tmp/mc-bench-metadata-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {  # port probe-command
  for _ in $(seq 200); do
    if eval "$2" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "server on port $1 did not come up" >&2
  return 1
}

# Many engines in one process: each holds a listener, a few threads and sockets.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

urls=(p2p)
if command -v etcd >/dev/null; then
  ep=$(free_port); pp=$(free_port)
  etcd --name b --data-dir "$tmp/etcd" --listen-client-urls "http://127.0.0.1:$ep" \
    --advertise-client-urls "http://127.0.0.1:$ep" --listen-peer-urls "http://127.0.0.1:$pp" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pp" --initial-cluster "b=http://127.0.0.1:$pp" \
    >"$tmp/etcd.log" 2>&1 &
  pids+=($!)
  wait_ready "$ep" "curl -sf http://127.0.0.1:$ep/health | grep -q true"
  urls+=("etcd://127.0.0.1:$ep")
else
  echo "etcd not installed: skipping etcd" >&2
fi
if command -v redis-server >/dev/null; then
  rp=$(free_port)
  redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
  pids+=($!)
  wait_ready "$rp" "redis-cli -p $rp ping | grep -q PONG"
  urls+=("redis://127.0.0.1:$rp")
else
  echo "redis-server not installed: skipping redis" >&2
fi

{
  echo "# mc metadata figures ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, loopback; etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}'), redis $(redis-server --version 2>/dev/null | awk '{print $3}' | cut -d= -f2))"
  echo "# p2p: the descriptor comes from the peer itself over its control channel."
  echo "# etcd: served from the engine's watch-fed cache after the first fetch; redis: one GET per open."
  for url in "${urls[@]}"; do
    kind=${url%%:*}
    echo
    echo "## $kind"
    "$bin" open "$url" "$opens"
    "$bin" expire "$url" 1500 3
    "$bin" expire "$url" 3000 1
    if [ "$kind" != p2p ]; then
      "$bin" publish "$url" "$engines" "$threads"
    fi
  done
} 2>&1 | tee "$out"
echo "results written to $out"
