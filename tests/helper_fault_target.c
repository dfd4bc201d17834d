/* A target process for the fault tests: one buffer filled with tu_fill(SEED), from mc_buffer_alloc
 * (MEM "alloc": memfd, mapped by same-host peers) or plain mmap (MEM "plain"), placed after a
 * random-sized gap so that a restarted target has its buffer at another address. Prints
 * "segment: NAME", "addr: 0x..." and "incarnation: N" (decimal) and serves until SIGTERM/SIGINT.
 * Dies with its parent. Usage: helper_fault_target SIZE SEED MEM [key=value ...] */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: helper_fault_target SIZE SEED alloc|plain [key=value ...]\n");
    return 2;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  size_t size = strtoull(argv[1], NULL, 0);
  uint64_t seed = strtoull(argv[2], NULL, 0);
  int use_alloc = strcmp(argv[3], "alloc") == 0;
  mc_config_t *cfg;
  mc_config_create(&cfg);
  for (int i = 4; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq) continue;
    *eq = 0;
    if (mc_config_set(cfg, argv[i], eq + 1) != MC_OK) {
      fprintf(stderr, "helper_fault_target: %s\n", mc_last_error());
      return 1;
    }
  }
  mc_engine_t *e;
  if (mc_engine_create(cfg, &e) != MC_OK) {
    fprintf(stderr, "helper_fault_target: %s\n", mc_last_error());
    return 1;
  }
  mc_config_destroy(cfg);
  /* A gap of random size, so that the buffer lands elsewhere than the last incarnation's. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  srand((unsigned)(ts.tv_nsec ^ getpid()));
  size_t gap = (size_t)(1 + rand() % 256) * 4096;
  void *g = mmap(NULL, gap, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  (void)g;
  void *buf = NULL;
  if (use_alloc) {
    if (mc_buffer_alloc(e, size, NULL, &buf) != MC_OK) {
      fprintf(stderr, "helper_fault_target: %s\n", mc_last_error());
      return 1;
    }
    /* Registered (and in the descriptor peers fetch) from here on, before it holds the pattern:
     * peers can reach it while it is filled. MC_FAULT_SLOW_FILL=1 fills it in 64 KiB steps 1 ms
     * apart, as a loaded machine may (test_fault_proc's cycles_shm_slow_fill). */
    const char *slow = getenv("MC_FAULT_SLOW_FILL");
    if (slow && strcmp(slow, "1") == 0) {
      for (size_t off = 0; off < size; off += 64 << 10) {
        size_t n = size - off < (64 << 10) ? size - off : (64 << 10);
        tu_fill((char *)buf + off, n, seed + off); /* the pattern at off: mix(seed + off + i) */
        usleep(1000);
      }
    } else {
      tu_fill(buf, size, seed);
    }
  } else {
    buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    tu_fill(buf, size, seed);
    if (mc_buffer_register(e, buf, size, NULL) != MC_OK) {
      fprintf(stderr, "helper_fault_target: %s\n", mc_last_error());
      return 1;
    }
  }
  char js[1 << 14];
  size_t need = 0;
  unsigned long long inc = 0;
  if (mc_engine_stats_json(e, js, sizeof js, &need) == MC_OK) {
    const char *p = strstr(js, "\"incarnation\":");
    if (p) inc = strtoull(p + 14, NULL, 10);
  }
  printf("segment: %s\naddr: %p\nincarnation: %llu\n", mc_engine_name(e), buf, inc);
  fflush(stdout);
  while (!stop) pause();
  mc_engine_destroy(e);
  return 0;
}
