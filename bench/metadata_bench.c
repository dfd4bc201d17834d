/* Metadata figures for one backend (bench/metadata.sh runs it against p2p, etcd and redis):
 *   metadata_bench open URL N        open latency: N x (mc_segment_open + mc_segment_close) of a
 *                                    peer engine's segment; p50/p99/max
 *   metadata_bench expire URL TTL R  a child engine is killed with SIGKILL; time until opening its
 *                                    name fails with MC_ERR_NOT_FOUND (R rounds)
 *   metadata_bench publish URL N T   N engines created from T threads (each create is a claim),
 *                                    then one buffer registered on each (each an update), then
 *                                    open latency with N descriptors in the store
 * Public API only. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mc.h>

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int is_p2p(const char *url) { return strcmp(url, "p2p") == 0; }

static mc_engine_t *engine(const char *url, const char *name, const char *ttl) {
  mc_config_t *cfg;
  mc_config_create(&cfg);
  mc_config_set(cfg, "metadata", url);
  mc_config_set(cfg, "workers", "1");
  mc_config_set(cfg, "tcp_connections", "1");
  mc_config_set(cfg, "timeout_ms", "2000");
  if (ttl) mc_config_set(cfg, "metadata_ttl_ms", ttl);
  if (name && !is_p2p(url)) mc_config_set(cfg, "name", name);
  mc_engine_t *e = NULL;
  if (mc_engine_create(cfg, &e) != MC_OK) {
    fprintf(stderr, "engine %s: %s\n", name ? name : "-", mc_last_error());
    e = NULL;
  }
  mc_config_destroy(cfg);
  return e;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Opens and closes name n times; prints p50/p99/max in microseconds. */
static int open_latency(mc_engine_t *e, const char *label, const char *name, int n) {
  uint64_t *lat = calloc((size_t)n, sizeof *lat);
  for (int i = 0; i < n; i++) {
    mc_segment_t s;
    uint64_t t0 = now_us();
    if (mc_segment_open(e, name, &s) != MC_OK) {
      fprintf(stderr, "open %s: %s\n", name, mc_last_error());
      free(lat);
      return 1;
    }
    lat[i] = now_us() - t0;
    mc_segment_close(e, s);
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
  printf("%-34s n=%d  p50=%" PRIu64 " us  p99=%" PRIu64 " us  max=%" PRIu64 " us\n", label, n, lat[n / 2],
         lat[(size_t)n * 99 / 100], lat[n - 1]);
  free(lat);
  return 0;
}

static int cmd_open(const char *url, int n) {
  mc_engine_t *a = engine(url, "bench-target", NULL), *b = engine(url, "bench-reader", NULL);
  if (!a || !b) return 1;
  static char buf[1 << 16];
  mc_buffer_register(a, buf, sizeof buf, NULL);
  char label[64];
  snprintf(label, sizeof label, "open latency (%s)", url[0] == 'e' ? "etcd" : url[0] == 'r' ? "redis" : "p2p");
  int rc = open_latency(b, label, mc_engine_name(a), n);
  mc_engine_destroy(b);
  /* cold: the first open of a fresh engine (nothing cached, store connections not yet open) */
  int cold = n / 10 > 0 ? n / 10 : 1;
  uint64_t *lat = calloc((size_t)cold, sizeof *lat);
  for (int i = 0; i < cold && rc == 0; i++) {
    char name[64];
    snprintf(name, sizeof name, "bench-cold-%d", i);
    mc_engine_t *c = engine(url, name, NULL);
    mc_segment_t s;
    uint64_t t0 = now_us();
    if (!c || mc_segment_open(c, mc_engine_name(a), &s) != MC_OK) rc = 1;
    lat[i] = now_us() - t0;
    if (rc == 0) mc_segment_close(c, s);
    mc_engine_destroy(c);
  }
  if (rc == 0) {
    qsort(lat, (size_t)cold, sizeof *lat, cmp_u64);
    printf("%-34s n=%d  p50=%" PRIu64 " us  p99=%" PRIu64 " us  max=%" PRIu64 " us\n", "first open of a fresh engine",
           cold, lat[cold / 2], lat[(size_t)cold * 99 / 100], lat[cold - 1]);
  }
  free(lat);
  mc_engine_destroy(a);
  return rc;
}

static int cmd_child(const char *url, const char *ttl) {
  mc_engine_t *e = engine(url, "bench-doomed", ttl);
  if (!e) return 1;
  printf("%s\n", mc_engine_name(e));
  fflush(stdout);
  pause();
  return 0;
}

static int cmd_expire(const char *self, const char *url, const char *ttl, int rounds) {
  mc_engine_t *b = engine(url, "bench-expire-reader", NULL);
  if (!b) return 1;
  for (int r = 0; r < rounds; r++) {
    int fds[2];
    if (pipe(fds) != 0) return 1;
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(fds[1], 1);
      close(fds[0]);
      execl(self, self, "child", url, ttl, (char *)NULL);
      _exit(127);
    }
    close(fds[1]);
    char name[256] = {0};
    FILE *f = fdopen(fds[0], "r");
    if (!fgets(name, sizeof name, f)) return 1;
    fclose(f);
    name[strcspn(name, "\n")] = 0;
    mc_segment_t s;
    if (mc_segment_open(b, name, &s) != MC_OK) return 1;
    mc_segment_close(b, s);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    uint64_t t0 = now_us();
    mc_status_t want = is_p2p(url) ? MC_ERR_PEER_DOWN : MC_ERR_NOT_FOUND, rc;
    while ((rc = mc_segment_open(b, name, &s)) != want) {
      if (rc == MC_OK) mc_segment_close(b, s);
      if (now_us() - t0 > 30000000u) return 1;
      usleep(5000);
    }
    printf("crashed engine's descriptor gone   ttl=%s ms  after %.0f ms\n", ttl, (now_us() - t0) / 1000.0);
  }
  mc_engine_destroy(b);
  return 0;
}

struct pub {
  const char *url;
  mc_engine_t **engines;
  int from, to;
  char (*bufs)[4096];
  int phase;  /* 0 create, 1 register */
  int failed;
};

static void *pub_thread(void *arg) {
  struct pub *p = arg;
  for (int i = p->from; i < p->to; i++) {
    if (p->phase == 0) {
      char name[64];
      snprintf(name, sizeof name, "bench-pub-%05d", i);
      p->engines[i] = engine(p->url, name, NULL);
      if (!p->engines[i]) p->failed++;
    } else if (p->engines[i] && mc_buffer_register(p->engines[i], p->bufs[i], 4096, NULL) != MC_OK) {
      p->failed++;
    }
  }
  return NULL;
}

static int cmd_publish(const char *url, int n, int threads) {
  mc_engine_t **engines = calloc((size_t)n, sizeof *engines);
  char (*bufs)[4096] = aligned_alloc(4096, (size_t)n * 4096);
  struct pub *ps = calloc((size_t)threads, sizeof *ps);
  pthread_t *th = calloc((size_t)threads, sizeof *th);
  for (int phase = 0; phase < 2; phase++) {
    uint64_t t0 = now_us();
    int failed = 0;
    for (int t = 0; t < threads; t++) {
      ps[t] = (struct pub){url, engines, n * t / threads, n * (t + 1) / threads, bufs, phase, 0};
      pthread_create(&th[t], NULL, pub_thread, &ps[t]);
    }
    for (int t = 0; t < threads; t++) {
      pthread_join(th[t], NULL);
      failed += ps[t].failed;
    }
    double s = (now_us() - t0) / 1e6;
    printf("%-34s %d engines, %d threads: %.2f s, %.0f publishes/s%s\n",
           phase == 0 ? "publish: engine create (claim)" : "publish: buffer register (update)", n, threads, s,
           n / s, failed ? " (SOME FAILED)" : "");
    if (failed) return 1;
  }
  char label[80];
  snprintf(label, sizeof label, "open latency, %d in the store", n);
  int rc = open_latency(engines[0], label, mc_engine_name(engines[n - 1]), 1000);
  uint64_t t0 = now_us();
  for (int i = 0; i < n; i++) mc_engine_destroy(engines[i]);
  printf("%-34s %d engines: %.2f s\n", "unpublish: engine destroy", n, (now_us() - t0) / 1e6);
  free(engines);
  free(bufs);
  free(ps);
  free(th);
  return rc;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 4 && strcmp(argv[1], "child") == 0) return cmd_child(argv[2], argv[3]);
  if (argc >= 4 && strcmp(argv[1], "open") == 0) return cmd_open(argv[2], atoi(argv[3]));
  static char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return 1;
  if (argc >= 5 && strcmp(argv[1], "expire") == 0) return cmd_expire(self, argv[2], argv[3], atoi(argv[4]));
  if (argc >= 5 && strcmp(argv[1], "publish") == 0) return cmd_publish(argv[2], atoi(argv[3]), atoi(argv[4]));
  fprintf(stderr, "usage: %s open URL N | expire URL TTL_MS ROUNDS | publish URL N THREADS\n", argv[0]);
  return 2;
}
