/* auth_bench: connection setup time with and without an auth_token.
 *
 * A target engine and an initiator engine in this process (same token or none). Each of N
 * rounds opens the target's segment (one fresh control connection: connect, the admission
 * handshake, GET_DESC) and closes it again; prints p50/p99/mean in microseconds. With
 * transports=tcp so that no same-host socket is opened.
 * Usage: auth_bench ROUNDS [TOKEN] */
#define _GNU_SOURCE
#include <mc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static mc_engine_t *engine(const char *token) {
  mc_config_t *c;
  mc_config_create(&c);
  mc_config_set(c, "transports", "tcp");
  if (token) mc_config_set(c, "auth_token", token);
  mc_engine_t *e = NULL;
  if (mc_engine_create(c, &e) != MC_OK) {
    fprintf(stderr, "auth_bench: %s\n", mc_last_error());
    exit(1);
  }
  mc_config_destroy(c);
  return e;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 500;
  const char *token = argc > 2 && argv[2][0] ? argv[2] : NULL;
  mc_engine_t *t = engine(token), *i = engine(token);
  static char buf[1 << 20];
  mc_buffer_register(t, buf, sizeof buf, NULL);
  double *lat = calloc((size_t)n, sizeof *lat), sum = 0;
  for (int k = -20; k < n; k++) { /* 20 warm-up rounds */
    mc_segment_t s;
    double t0 = now_us();
    if (mc_segment_open(i, mc_engine_name(t), &s) != MC_OK) {
      fprintf(stderr, "auth_bench: %s\n", mc_last_error());
      return 1;
    }
    double dt = now_us() - t0;
    mc_segment_close(i, s);
    if (k >= 0) {
      lat[k] = dt;
      sum += dt;
    }
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp);
  printf("%-10s opens=%d p50_us=%.1f p99_us=%.1f mean_us=%.1f\n", token ? "token" : "no-token", n,
         lat[n / 2], lat[(n * 99) / 100], sum / n);
  mc_engine_destroy(i);
  mc_engine_destroy(t);
  free(lat);
  return 0;
}
