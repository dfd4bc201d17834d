/* Descriptor-heavy figures: submit cost per request of a 100,000 x 4 KiB batch, its completion
 * time over shm and tcp beside the same bytes as one large request, and the registration time
 * of 10,000 buffers (one call and one by one). Prints one line per figure. */
#define _GNU_SOURCE
#include <mc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define N 100000u
#define PAGE 4096u

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static mc_engine_t *engine(const char *transports) {
  mc_config_t *c;
  mc_config_create(&c);
  if (transports) mc_config_set(c, "transports", transports);
  mc_config_set(c, "timeout_ms", "30000");
  mc_engine_t *e;
  if (mc_engine_create(c, &e) != MC_OK) {
    fprintf(stderr, "engine: %s\n", mc_last_error());
    exit(1);
  }
  mc_config_destroy(c);
  return e;
}

static void run(const char *transports, const char *label, int reps) {
  mc_engine_t *tgt = engine(NULL), *ini = engine(transports);
  size_t len = (size_t)N * PAGE;
  char *l = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  char *r = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  mc_buffer_register(ini, l, len, NULL);
  mc_buffer_register(tgt, r, len, NULL);
  mc_segment_t s;
  if (mc_segment_open(ini, mc_engine_name(tgt), &s) != MC_OK) {
    fprintf(stderr, "open: %s\n", mc_last_error());
    exit(1);
  }
  mc_request_t *rq = malloc(N * sizeof *rq);
  mc_batch_t *b;
  mc_batch_create(ini, N, &b);
  for (int shuffled = 0; shuffled < 2; shuffled++) {
    for (size_t i = 0; i < N; i++) {
      size_t ri = shuffled ? (i * 7919u) % N : i;
      rq[i] = (mc_request_t){MC_WRITE, 0, l + i * PAGE, s, (uint64_t)(uintptr_t)(r + ri * PAGE), PAGE};
    }
    double best_sub = 1e9, best_all = 1e9;
    for (int k = 0; k < reps; k++) {
      mc_batch_reset(b);
      double t0 = now();
      if (mc_batch_submit(b, rq, N) != MC_OK) {
        fprintf(stderr, "submit: %s\n", mc_last_error());
        exit(1);
      }
      double t1 = now();
      if (mc_batch_wait(b, 60000) != MC_OK) {
        fprintf(stderr, "wait: %s\n", mc_last_error());
        exit(1);
      }
      double t2 = now();
      if (t1 - t0 < best_sub) best_sub = t1 - t0;
      if (t2 - t0 < best_all) best_all = t2 - t0;
    }
    printf("%-4s %-10s submit_ns_per_request %.0f  batch_ms %.1f  (%.2f GB/s)\n", label,
           shuffled ? "shuffled" : "contiguous", best_sub / N * 1e9, best_all * 1e3, len / best_all / 1e9);
  }
  double best_one = 1e9;
  for (int k = 0; k < reps; k++) {
    mc_request_t one = {MC_WRITE, 0, l, s, (uint64_t)(uintptr_t)r, len};
    double t0 = now();
    if (mc_transfer(ini, &one, 1, 60000) != MC_OK) {
      fprintf(stderr, "transfer: %s\n", mc_last_error());
      exit(1);
    }
    double t1 = now();
    if (t1 - t0 < best_one) best_one = t1 - t0;
  }
  printf("%-4s %-10s one_request_ms %.1f  (%.2f GB/s)\n", label, "single", best_one * 1e3, len / best_one / 1e9);
  mc_batch_destroy(b);
  free(rq);
  mc_engine_destroy(ini);
  mc_engine_destroy(tgt);
  munmap(l, len);
  munmap(r, len);
}

int main(void) {
  printf("# %u requests of %u bytes, best of 3; GB/s = 1e9 bytes/s\n", N, PAGE);
  run("shm", "shm", 3);
  run("tcp", "tcp", 3);
  mc_engine_t *e = engine(NULL);
  size_t nb = 10000, each = 4096;
  char *m = mmap(NULL, 2 * nb * each, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  mc_buffer_desc_t *d = calloc(nb, sizeof *d);
  void **a = calloc(nb, sizeof *a);
  for (size_t i = 0; i < nb; i++) d[i] = (mc_buffer_desc_t){m + 2 * i * each, each, NULL}, a[i] = d[i].addr;
  double t0 = now();
  mc_buffer_register_batch(e, d, nb);
  double t1 = now();
  mc_buffer_unregister_batch(e, a, nb);
  double t2 = now();
  for (size_t i = 0; i < nb; i++) mc_buffer_register(e, d[i].addr, each, NULL);
  double t3 = now();
  printf("register 10000 buffers: batch_ms %.2f  one_by_one_ms %.2f  unregister_batch_ms %.2f\n",
         (t1 - t0) * 1e3, (t3 - t2) * 1e3, (t2 - t1) * 1e3);
  mc_engine_destroy(e);
  return 0;
}
