/* A target process for the multi-process tests: registers one buffer filled with a pattern,
 * prints "segment: NAME" and serves until SIGTERM/SIGINT.
 * Usage: helper_target SIZE SEED [key=value ...] */
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
  if (argc < 3) {
    fprintf(stderr, "usage: helper_target SIZE SEED [key=value ...]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  size_t size = strtoull(argv[1], NULL, 0);
  uint64_t seed = strtoull(argv[2], NULL, 0);
  mc_config_t *cfg;
  mc_config_create(&cfg);
  for (int i = 3; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq) continue;
    *eq = 0;
    if (mc_config_set(cfg, argv[i], eq + 1) != MC_OK) {
      fprintf(stderr, "helper_target: %s\n", mc_last_error());
      return 1;
    }
  }
  mc_engine_t *e;
  if (mc_engine_create(cfg, &e) != MC_OK) {
    fprintf(stderr, "helper_target: %s\n", mc_last_error());
    return 1;
  }
  mc_config_destroy(cfg);
  char *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  tu_fill(buf, size, seed);
  if (mc_buffer_register(e, buf, size, NULL) != MC_OK) {
    fprintf(stderr, "helper_target: %s\n", mc_last_error());
    return 1;
  }
  printf("segment: %s\n", mc_engine_name(e));
  fflush(stdout);
  while (!stop) pause();
  mc_engine_destroy(e);
  munmap(buf, size);
  return 0;
}
