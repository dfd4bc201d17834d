/* Single-thread memcpy of the same sizes as bench/shm.sh, into buffers that are already
 * faulted in, best of several passes; prints "SIZE GBPS" lines (GB/s = 1e9 B/s).
 * With -t SECONDS first: the bytes of all copies over the whole SECONDS instead (the average,
 * as mc_bench --duration reports it: bench/busy.sh compares the two like for like). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  double secs = 0;
  int first = 1;
  if (argc > 2 && strcmp(argv[1], "-t") == 0) {
    secs = atof(argv[2]);
    first = 3;
  }
  for (int i = first; i < argc; i++) {
    size_t n = strtoull(argv[i], NULL, 10);
    char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    if (secs > 0) {
      size_t copies = 0;
      double t0 = now(), t;
      do {
        for (int r = 0; r < 16; r++, copies++) {
          memcpy(b, a, n);
          __asm__ volatile("" : : "r"(b) : "memory");
        }
      } while ((t = now() - t0) < secs);
      printf("%zu %.3f\n", n, (double)n * (double)copies / t / 1e9);
      free(a);
      free(b);
      continue;
    }
    size_t reps = (size_t)(2e9 / (double)n) + 1;
    double best = 1e9;
    for (int pass = 0; pass < 3; pass++) {
      double t0 = now();
      for (size_t r = 0; r < reps; r++) {
        memcpy(b, a, n);
        __asm__ volatile("" : : "r"(b) : "memory");
      }
      double t = (now() - t0) / reps;
      if (t < best) best = t;
    }
    printf("%zu %.3f\n", n, n / best / 1e9);
    free(a);
    free(b);
  }
  return 0;
}
