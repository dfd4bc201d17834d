/* bench_c.c - the C baseline of bench/bindings: the cost of one 8-byte mc_transfer (WRITE) between
 * two engines in this process (see run.sh for the setup every language shares).
 * usage: bench_c ITERS WARMUP CHUNKS -> prints "transport NAME" and "ns_per_op X" (the median
 * chunk). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mc.h"

static void die(const char *what, mc_status_t s) {
  fprintf(stderr, "bench_c: %s: %s: %s\n", what, mc_status_str(s), mc_last_error());
  exit(1);
}
#define CHECK(call) do { mc_status_t s_ = (call); if (s_ != MC_OK) die(#call, s_); } while (0)

static mc_engine_t *engine(void) {
  mc_config_t *cfg;
  mc_engine_t *e;
  const char *transports = getenv("BENCH_TRANSPORTS");
  CHECK(mc_config_create(&cfg));
  CHECK(mc_config_set(cfg, "listen", "127.0.0.1:0"));
  CHECK(mc_config_set(cfg, "transports", transports ? transports : "shm"));
  CHECK(mc_engine_create(cfg, &e));
  mc_config_destroy(cfg);
  return e;
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 20000;
  long warmup = argc > 2 ? atol(argv[2]) : 2000;
  int chunks = argc > 3 ? atoi(argv[3]) : 5;
  mc_engine_t *a = engine(), *b = engine();
  static _Alignas(4096) char local[4096], target[4096];
  mc_segment_t seg;
  mc_segment_info_t info;
  mc_buffer_info_t buf;
  size_t count;
  double per[64];

  memset(local, 7, sizeof local);
  CHECK(mc_buffer_register(a, local, sizeof local, NULL));
  CHECK(mc_buffer_register(b, target, sizeof target, NULL));
  CHECK(mc_segment_open(a, mc_engine_name(b), &seg));
  CHECK(mc_segment_buffers(a, seg, &buf, 1, &count));
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  CHECK(mc_segment_query(a, seg, &info));
  printf("transport %s\n", info.transport);

  mc_request_t req = {MC_WRITE, 0, local, seg, buf.addr, 8};
  for (long i = 0; i < warmup; i++) CHECK(mc_transfer(a, &req, 1, -1));
  if (chunks > 64) chunks = 64;
  for (int c = 0; c < chunks; c++) {
    long n = iters / chunks;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) CHECK(mc_transfer(a, &req, 1, -1));
    per[c] = (now_ns() - t0) / n;
  }
  if (target[0] != 7) { fprintf(stderr, "bench_c: data did not arrive\n"); return 1; }
  qsort(per, chunks, sizeof per[0], cmp);
  printf("ns_per_op %.1f\n", per[chunks / 2]);
  CHECK(mc_segment_close(a, seg));
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  return 0;
}
