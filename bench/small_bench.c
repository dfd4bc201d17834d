/* small_bench - the fixed cost of a request (issue 23), one process, one thread.
 *
 *   small_bench local ITERS            this engine's own segment, transports=local
 *   small_bench shm SEGMENT ITERS      a peer's segment (mc_bench target --alloc), transports=shm
 *
 * Prints one line per case, "CASE p50_ns P50 p99_ns P99 min_ns MIN":
 *   write_8B / read_8B   one 8-byte request per mc_transfer call, timed call by call
 *   batch64x64B          one batch of 64 requests of 64 bytes (mc_batch_reset + submit +
 *                        wait on one reused batch), timed batch by batch; the figures are
 *                        per request (the batch's time / 64)
 * Every request is checked for MC_OK; the 8-byte WRITE's bytes are read back at the end. */
#define _GNU_SOURCE
#include <mc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 64
#define BLOCK 64

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what, mc_status_t s) {
  fprintf(stderr, "small_bench: %s: %s (%s)\n", what, mc_status_str(s), mc_last_error());
  exit(1);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *name, uint64_t *ns, size_t n, double per) {
  qsort(ns, n, sizeof *ns, cmp_u64);
  printf("%s p50_ns %.1f p99_ns %.1f min_ns %.1f\n", name, (double)ns[n / 2] / per,
         (double)ns[n * 99 / 100] / per, (double)ns[0] / per);
  fflush(stdout);
}

static void single(mc_engine_t *e, const char *name, uint32_t op, uint8_t *local,
                   mc_segment_t seg, uint64_t remote, uint64_t *ns, size_t iters) {
  mc_request_t r = {op, 0, local, seg, remote, 8};
  for (size_t i = 0; i < iters / 10 + 1; i++) {  // warm up: caches, connections, spin tuning
    mc_status_t s = mc_transfer(e, &r, 1, 5000);
    if (s != MC_OK) die(name, s);
  }
  for (size_t i = 0; i < iters; i++) {
    uint64_t t0 = now_ns();
    mc_status_t s = mc_transfer(e, &r, 1, 5000);
    ns[i] = now_ns() - t0;
    if (s != MC_OK) die(name, s);
  }
  report(name, ns, iters, 1.0);
}

static void batched(mc_engine_t *e, uint8_t *local, mc_segment_t seg, uint64_t remote,
                    uint64_t *ns, size_t iters) {
  mc_batch_t *b;
  mc_status_t s = mc_batch_create(e, BATCH, &b);
  if (s != MC_OK) die("mc_batch_create", s);
  mc_request_t r[BATCH];
  for (int i = 0; i < BATCH; i++)
    r[i] = (mc_request_t){MC_WRITE, 0, local + i * BLOCK, seg, remote + i * BLOCK, BLOCK};
  size_t rounds = iters / 8 + 1;
  for (size_t i = 0; i < rounds + rounds / 10; i++) {
    uint64_t t0 = now_ns();
    if ((s = mc_batch_reset(b)) != MC_OK) die("mc_batch_reset", s);
    if ((s = mc_batch_submit(b, r, BATCH)) != MC_OK) die("mc_batch_submit", s);
    if ((s = mc_batch_wait(b, 5000)) != MC_OK) die("mc_batch_wait", s);
    if (i >= rounds / 10) ns[i - rounds / 10] = now_ns() - t0;
  }
  mc_batch_destroy(b);
  report("batch64x64B", ns, rounds, BATCH);
}

int main(int argc, char **argv) {
  int is_local = argc == 3 && strcmp(argv[1], "local") == 0;
  int is_shm = argc == 4 && strcmp(argv[1], "shm") == 0;
  if (!is_local && !is_shm) {
    fprintf(stderr, "usage: small_bench local ITERS | small_bench shm SEGMENT ITERS\n");
    return 2;
  }
  size_t iters = strtoull(argv[argc - 1], NULL, 10);
  if (iters < 100) iters = 100;
  mc_config_t *cfg;
  mc_status_t s = mc_config_create(&cfg);
  if (s == MC_OK) s = mc_config_set(cfg, "transports", is_local ? "local" : "shm");
  if (s == MC_OK) s = mc_config_set(cfg, "listen", "127.0.0.1:0");
  mc_engine_t *e = NULL;
  if (s == MC_OK) s = mc_engine_create(cfg, &e);
  mc_config_destroy(cfg);
  if (s != MC_OK) die("engine", s);
  size_t len = 2 * BATCH * BLOCK;
  uint8_t *mem = aligned_alloc(4096, 2 * len);
  memset(mem, 0, 2 * len);
  if ((s = mc_buffer_register(e, mem, 2 * len, "cpu")) != MC_OK) die("register", s);
  mc_segment_t seg;
  if ((s = mc_segment_open(e, is_local ? mc_engine_name(e) : argv[2], &seg)) != MC_OK)
    die("mc_segment_open", s);
  mc_buffer_info_t buf;
  size_t nbuf = 0;
  if ((s = mc_segment_buffers(e, seg, &buf, 1, &nbuf)) != MC_OK) die("mc_segment_buffers", s);
  // Local: the copies go from the first half of mem to its second half.
  uint64_t remote = is_local ? (uint64_t)(uintptr_t)(mem + len) : buf.addr;
  uint64_t *ns = malloc(iters * sizeof *ns);
  memcpy(mem, "8bytes!!", 8);
  single(e, "write_8B", MC_WRITE, mem, seg, remote, ns, iters);
  single(e, "read_8B", MC_READ, mem + 8, seg, remote, ns, iters);
  if (memcmp(mem + 8, "8bytes!!", 8) != 0) {
    fprintf(stderr, "small_bench: the 8 bytes written did not read back\n");
    return 1;
  }
  batched(e, mem, seg, remote, ns, iters);
  free(ns);
  mc_segment_close(e, seg);
  mc_engine_destroy(e);
  free(mem);
  return 0;
}
