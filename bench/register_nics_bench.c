/* register_nics_bench - issue 26: registering one buffer on several RDMA NICs at once against
 * one NIC after another, on simulated NICs.
 *
 *   register_nics_bench NICS BYTES ROUNDS PAGE_NS
 *     Two engines (transports=rdma, rdma_devices=sim:NICS) that differ only in
 *     rdma_register_threads: 1 (one NIC after another) and auto (one thread per NIC). Each round
 *     registers BYTES of touched memory with one, then the other (the order alternates), and
 *     unregisters it. MC_SIM_REG_PAGE_NS=PAGE_NS makes each simulated reg_mr spend that much CPU
 *     per 4 KiB page (0: registration is almost free, which shows what the threads cost).
 *     Prints every round's times and the medians. */
#define _GNU_SOURCE
#include <mc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static mc_engine_t *engine(const char *nics, const char *threads) {
  mc_config_t *c;
  mc_engine_t *e = NULL;
  char dev[32];
  snprintf(dev, sizeof dev, "sim:%s", nics);
  if (mc_config_create(&c) || mc_config_set(c, "transports", "rdma") || mc_config_set(c, "rdma_devices", dev) ||
      mc_config_set(c, "rdma_register_threads", threads) || mc_engine_create(c, &e)) {
    fprintf(stderr, "engine: %s\n", mc_last_error());
    exit(1);
  }
  mc_config_destroy(c);
  return e;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double reg_once(mc_engine_t *e, char *p, size_t len) {
  double t0 = now_ms();
  if (mc_buffer_register(e, p, len, "cpu")) {
    fprintf(stderr, "register: %s\n", mc_last_error());
    exit(1);
  }
  double t = now_ms() - t0;
  mc_buffer_unregister(e, p);
  return t;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: register_nics_bench NICS BYTES ROUNDS PAGE_NS\n");
    return 2;
  }
  size_t len = strtoull(argv[2], NULL, 0);
  int rounds = atoi(argv[3]);
  setenv("MC_SIM_REG_PAGE_NS", argv[4], 1);
  mc_engine_t *seq = engine(argv[1], "1"), *par = engine(argv[1], "auto");
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 1;
  memset(p, 1, len); /* touched: the rounds time registration, not first faults */
  double *ts = calloc((size_t)rounds, sizeof *ts), *tp = calloc((size_t)rounds, sizeof *tp);
  for (int r = 0; r < rounds; r++) {
    if (r % 2) {
      tp[r] = reg_once(par, p, len);
      ts[r] = reg_once(seq, p, len);
    } else {
      ts[r] = reg_once(seq, p, len);
      tp[r] = reg_once(par, p, len);
    }
    printf("  round %d: one after another %.1f ms, parallel %.1f ms\n", r + 1, ts[r], tp[r]);
  }
  qsort(ts, (size_t)rounds, sizeof *ts, cmp);
  qsort(tp, (size_t)rounds, sizeof *tp, cmp);
  double ms = ts[rounds / 2], mp = tp[rounds / 2];
  printf("register nics=%s bytes=%zu page_ns=%s rounds=%d median_serial_ms=%.1f median_parallel_ms=%.1f "
         "speedup=%.2f\n",
         argv[1], len, argv[4], rounds, ms, mp, mp > 0 ? ms / mp : 0.0);
  mc_engine_destroy(seq);
  mc_engine_destroy(par);
  return 0;
}
