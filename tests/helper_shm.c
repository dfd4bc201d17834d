/* A same-host target for the shm tests: one buffer from mc_buffer_alloc and one plain
 * registered buffer, each filled with a pattern; prints "segment: NAME" and then the two
 * addresses ("alloc: 0x..", "plain: 0x.."), and serves until SIGTERM.
 * Usage: helper_shm SIZE SEED [key=value ...] */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testutil.h"

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  size_t size = strtoull(argv[1], NULL, 0);
  uint64_t seed = strtoull(argv[2], NULL, 0);
  mc_config_t *cfg;
  mc_config_create(&cfg);
  for (int i = 3; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq) continue;
    *eq = 0;
    if (mc_config_set(cfg, argv[i], eq + 1) != MC_OK) {
      fprintf(stderr, "helper_shm: %s\n", mc_last_error());
      return 1;
    }
  }
  mc_engine_t *e;
  if (mc_engine_create(cfg, &e) != MC_OK) {
    fprintf(stderr, "helper_shm: %s\n", mc_last_error());
    return 1;
  }
  mc_config_destroy(cfg);
  void *a = NULL;
  if (mc_buffer_alloc(e, size, NULL, &a) != MC_OK) {
    fprintf(stderr, "helper_shm: %s\n", mc_last_error());
    return 1;
  }
  tu_fill(a, size, seed);
  /* The plain buffer goes far from the alloc one so the two are never adjacent. */
  char *p = mmap(NULL, size + 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  p += 4096; /* a gap on both sides: never adjacent to the alloc buffer */
  tu_fill(p, size, seed + 1);
  if (mc_buffer_register(e, p, size, NULL) != MC_OK) {
    fprintf(stderr, "helper_shm: %s\n", mc_last_error());
    return 1;
  }
  printf("segment: %s\nalloc: %p\nplain: %p\n", mc_engine_name(e), a, (void *)p);
  fflush(stdout);
  while (!stop) pause();
  mc_engine_destroy(e);
  return 0;
}
