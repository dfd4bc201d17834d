// Software cost of the RDMA transport through the simulated NIC (bench/rdma_sim.sh): requests/s
// for WRITEs of one size between two engines of one process, and the time from a peer's rejoin
// (destroyed, created again on the same HOST:PORT) to the first completed transfer.
// Usage: rdma_sim_bench SIZE NIC_SPEC SECONDS [rejoin ROUNDS]
#include <mc.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

static double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static mc_engine_t *engine(const char *nics, const char *listen) {
  mc_config_t *c;
  mc_config_create(&c);
  mc_config_set(c, "transports", "rdma");
  mc_config_set(c, "rdma_devices", nics);
  mc_config_set(c, "heartbeat_ms", "50");
  if (listen) mc_config_set(c, "listen", listen);
  mc_engine_t *e = nullptr;
  if (mc_engine_create(c, &e) != MC_OK) {
    fprintf(stderr, "engine: %s\n", mc_last_error());
    exit(1);
  }
  mc_config_destroy(c);
  return e;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  size_t size = strtoull(argv[1], nullptr, 0);
  const char *nics = argv[2];
  double secs = atof(argv[3]);
  size_t batch = size <= 4096 ? 4096 : 1024;
  size_t stride = size * 2;  // gaps between remote targets: requests cannot be merged
  size_t len = batch * stride;
  mc_engine_t *a = engine(nics, nullptr), *b = engine(nics, nullptr);
  char *la = static_cast<char *>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  char *rb = static_cast<char *>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  memset(la, 1, len);
  memset(rb, 0, len);
  mc_buffer_register(a, la, len, nullptr);
  mc_buffer_register(b, rb, len, nullptr);
  mc_segment_t seg;
  if (mc_segment_open(a, mc_engine_name(b), &seg) != MC_OK) return 1;
  std::vector<mc_request_t> rq(batch);
  for (size_t i = 0; i < batch; i++)
    rq[i] = {MC_WRITE, 0, la + i * stride, seg, (uint64_t)(uintptr_t)(rb + (batch - 1 - i) * stride), size};
  mc_batch_t *bt;
  mc_batch_create(a, batch, &bt);
  if (argc >= 6 && std::string(argv[4]) == "rejoin") {
    int rounds = atoi(argv[5]);
    std::string bname = mc_engine_name(b);
    std::vector<double> ms;
    for (int r = 0; r < rounds; r++) {
      mc_engine_destroy(b);
      b = engine(nics, bname.c_str());
      mc_buffer_register(b, rb, len, nullptr);
      double t0 = now_s();
      while (mc_transfer(a, rq.data(), 1, 2000) != MC_OK) std::this_thread::sleep_for(std::chrono::microseconds(200));
      ms.push_back((now_s() - t0) * 1e3);
    }
    std::sort(ms.begin(), ms.end());
    printf("rejoin -> first completed transfer (%s, %d rounds): median %.2f ms, p90 %.2f ms, max %.2f ms\n", nics,
           rounds, ms[ms.size() / 2], ms[ms.size() * 9 / 10], ms.back());
  } else {
    // warm up (connects the endpoints)
    mc_batch_submit(bt, rq.data(), batch);
    mc_batch_wait(bt, -1);
    size_t done = 0;
    double t0 = now_s(), t;
    do {
      mc_batch_reset(bt);
      mc_batch_submit(bt, rq.data(), batch);
      if (mc_batch_wait(bt, -1) != MC_OK) {
        fprintf(stderr, "batch failed\n");
        return 1;
      }
      done += batch;
      t = now_s();
    } while (t - t0 < secs);
    double rps = done / (t - t0);
    printf("WRITE %6zu B  %-6s batch %4zu: %10.0f requests/s  %8.2f GB/s\n", size, nics, batch, rps, rps * size / 1e9);
  }
  mc_batch_destroy(bt);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  return 0;
}
