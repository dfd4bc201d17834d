#!/bin/bash
# GET /metrics cost: an engine with metrics_listen (tcp, shm, local and rdma on two simulated
# NICs, so the page carries every transport's figures) scraped 300 times on a new connection
# each and 300 times on one kept-alive connection (as Prometheus scrapes), against
# mc_engine_stats_json (the same figures as JSON, no HTTP) in the same run. Python's client
# adds its own time to both HTTP figures. Writes bench/results/metrics.txt.
# Usage: bench/metrics.sh [BUILD]   (BUILD defaults to build; run `make` first)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build}"
out="$root/bench/results/metrics.txt"
{
  echo "# bench/metrics.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$root" rev-parse --short HEAD)"
  echo "# machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo); load: $(cut -d' ' -f1-3 /proc/loadavg)"
  MC_LIB="$root/$build/lib/libmc.so" python3 - <<'PY'
import ctypes, http.client, json, os, statistics, time, urllib.request
L = ctypes.CDLL(os.environ["MC_LIB"])
cfg = ctypes.c_void_p(); L.mc_config_create(ctypes.byref(cfg))
for k, v in (("metrics_listen", "127.0.0.1:0"), ("rdma_devices", "sim:2")):
    assert L.mc_config_set(cfg, k.encode(), v.encode()) == 0
e = ctypes.c_void_p(); assert L.mc_engine_create(cfg, ctypes.byref(e)) == 0
buf = ctypes.create_string_buffer(1 << 16); need = ctypes.c_size_t()
L.mc_engine_stats_json(e, buf, len(buf), ctypes.byref(need))
port = int(json.loads(buf.value)["metrics"]["listen"].rsplit(":", 1)[1])
def report(name, ts):
    ts = sorted(ts)
    print("%-40s median %6.0f us  p99 %6.0f us" % (name, statistics.median(ts) * 1e6, ts[int(0.99 * len(ts))] * 1e6))
ts = []
for _ in range(300):
    t = time.perf_counter(); body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read()
    ts.append(time.perf_counter() - t)
print("page: %d bytes, %d lines" % (len(body), body.count(b"\n")))
report("GET /metrics, new connection each", ts)
c = http.client.HTTPConnection("127.0.0.1", port); ts = []
for _ in range(300):
    t = time.perf_counter(); c.request("GET", "/metrics"); c.getresponse().read(); ts.append(time.perf_counter() - t)
report("GET /metrics, one kept-alive connection", ts)
ts = []
for _ in range(300):
    t = time.perf_counter(); L.mc_engine_stats_json(e, buf, len(buf), ctypes.byref(need)); ts.append(time.perf_counter() - t)
report("mc_engine_stats_json (same figures)", ts)
L.mc_engine_destroy(e)
PY
} | tee "$out"
