/* Promises of include/mc.h that earlier code broke quietly:
 *  - mc_buffer_set_access returns MC_ERR_TIMEOUT (not MC_OK) when a peer request admitted under
 *    the old rights still runs after timeout_ms, and the new rights hold for new requests;
 *  - the engine's own name always opens, also when `transports` excludes "local" (the segment
 *    is then reached over an allowed transport: tcp to the engine's own listener).
 * The slow peer is played by hand on the wire (src/proto/wire.h): a WRITE whose payload
 * trickles in one byte at a time keeps its request admitted for as long as the test wants. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

enum { WRITE = 5, WRITE_ACK = 6, HELLO = 12 };

struct trickle {
  int fd;
  atomic_int stop;
  atomic_int sent;
};

/* Sends one payload byte every 10 ms until told to stop: progress, so the target's reaper
 * (no progress for timeout_ms) leaves the connection alone and the request stays admitted. */
static void *trickle_main(void *arg) {
  struct trickle *t = arg;
  while (!t->stop) {
    char c = 'x';
    if (send(t->fd, &c, 1, MSG_NOSIGNAL) != 1) break;
    t->sent++;
    usleep(10000);
  }
  return NULL;
}

static void test_set_access_timeout(void **state) {
  (void)state;
  int tmo = 300 * tu_slack();
  char tmo_s[16];
  snprintf(tmo_s, sizeof tmo_s, "%d", tmo);
  mc_engine_t *e = tu_engine("timeout_ms", tmo_s, "transports", "tcp", NULL);
  assert_non_null(e);
  size_t len = 1 << 20;
  char *buf = calloc(1, len);
  assert_int_equal(mc_buffer_register(e, buf, len, "cpu"), MC_OK);

  int fd = tu_dial(mc_engine_name(e));
  assert_true(fd >= 0);
  struct tu_wire_hdr h[2] = {{0x3157434d, 1, HELLO, 0, 0, 0, 0, 0}, {0x3157434d, 1, WRITE, 1, (uint64_t)(uintptr_t)buf, len, 0, 0}};
  assert_int_equal(send(fd, h, sizeof h, MSG_NOSIGNAL), (ssize_t)sizeof h);
  struct trickle t = {fd, 0, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, trickle_main, &t), 0);
  /* Let the target admit the WRITE (it pins the buffer once the header passed its checks). */
  while (t.sent < 10) usleep(1000);

  uint64_t t0 = tu_now_ms();
  mc_status_t st = mc_buffer_set_access(e, buf, MC_ACCESS_READ);
  uint64_t took = tu_now_ms() - t0;
  print_message("set_access with a WRITE trickling in: %s after %llu ms (%s)\n", mc_status_str(st),
                (unsigned long long)took, mc_last_error());
  assert_int_equal(st, MC_ERR_TIMEOUT);
  assert_true(took >= (uint64_t)tmo - 10);
  assert_non_null(strstr(mc_last_error(), "still runs"));
  t.stop = 1;
  pthread_join(th, NULL);
  close(fd);

  /* The new rights hold: a WRITE from another engine is refused, a READ works. */
  mc_engine_t *peer = tu_engine("timeout_ms", tmo_s, "transports", "tcp", NULL);
  assert_non_null(peer);
  char *mine = calloc(1, 4096);
  assert_int_equal(mc_buffer_register(peer, mine, 4096, "cpu"), MC_OK);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(peer, mc_engine_name(e), &seg), MC_OK);
  mc_request_t w = {MC_WRITE, 0, mine, seg, (uint64_t)(uintptr_t)buf, 4096};
  assert_int_equal(mc_transfer(peer, &w, 1, 5000 * tu_slack()), MC_ERR_DENIED);
  mc_request_t r = {MC_READ, 0, mine, seg, (uint64_t)(uintptr_t)buf, 4096};
  assert_int_equal(mc_transfer(peer, &r, 1, 5000 * tu_slack()), MC_OK);
  /* A change with no peer request running returns MC_OK. */
  assert_int_equal(mc_buffer_set_access(e, buf, 0), MC_OK);
  mc_engine_destroy(peer);
  mc_engine_destroy(e);
  free(mine);
  free(buf);
}

static void own_name_over(const char *transports, const char *route) {
  mc_engine_t *e = tu_engine("transports", transports, NULL);
  assert_non_null(e);
  size_t len = 256 << 10;
  char *a = malloc(len), *b = calloc(1, len);
  tu_fill(a, len, 7);
  assert_int_equal(mc_buffer_register(e, a, len, "cpu"), MC_OK);
  assert_int_equal(mc_buffer_register(e, b, len, "cpu"), MC_OK);
  mc_segment_t self;
  mc_status_t st = mc_segment_open(e, mc_engine_name(e), &self);
  if (st != MC_OK) print_message("own name with transports=%s: %s\n", transports, mc_last_error());
  assert_int_equal(st, MC_OK);
  mc_request_t w = {MC_WRITE, 0, a, self, (uint64_t)(uintptr_t)b, len};
  assert_int_equal(mc_transfer(e, &w, 1, 5000 * tu_slack()), MC_OK);
  assert_int_equal(tu_check(b, len, 7), -1);
  memset(a, 0, len);
  mc_request_t r = {MC_READ, 0, a, self, (uint64_t)(uintptr_t)b, len};
  assert_int_equal(mc_transfer(e, &r, 1, 5000 * tu_slack()), MC_OK);
  assert_int_equal(tu_check(a, len, 7), -1);
  char stats[16384];
  size_t need = 0;
  assert_int_equal(mc_engine_stats_json(e, stats, sizeof stats, &need), MC_OK);
  /* The route is the one `transports` allows: "peers":{"<own name>":{"transport":"tcp",... */
  char want[128];
  snprintf(want, sizeof want, "\"%s\":{\"transport\":\"%s\"", mc_engine_name(e), route);
  if (!strstr(stats, want)) print_message("no %s in %s\n", want, stats);
  assert_non_null(strstr(stats, want));
  mc_segment_close(e, self);
  mc_engine_destroy(e);
  free(a);
  free(b);
}

static void test_own_name_without_local(void **state) {
  (void)state;
  own_name_over("tcp", "tcp");
  own_name_over("shm,tcp", "shm");
  own_name_over("local,tcp", "local");
}

static int g_info_lines;
static void count_info(int level, const char *message, void *user) {
  (void)message;
  (void)user;
  if (level >= MC_LOG_INFO) g_info_lines++;
}

/* A failed mc_engine_create leaves the process-wide log level as it was. */
static void test_failed_create_keeps_log_level(void **state) {
  (void)state;
  mc_log_set_level(MC_LOG_WARN);
  mc_log_set_handler(count_info, NULL);
  mc_engine_t *holder = tu_engine(NULL);
  assert_non_null(holder);
  /* Same listen address as a live engine: start fails after log_level took effect. */
  mc_engine_t *e = tu_engine("listen", mc_engine_name(holder), "log_level", "debug", NULL);
  assert_null(e);
  g_info_lines = 0;
  mc_engine_t *ok = tu_engine(NULL); /* logs "started" at info: must not reach the handler */
  assert_non_null(ok);
  mc_engine_destroy(ok);
  mc_log_set_handler(NULL, NULL);
  assert_int_equal(g_info_lines, 0);
  mc_engine_destroy(holder);
}

/* Timeouts below -1 are refused and change nothing; echoed caller strings are cut at 256 bytes;
 * segment names have 1 to 255 bytes. */
static void test_bad_input_messages(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  assert_non_null(e);
  char *buf = calloc(1, 4096);
  assert_int_equal(mc_buffer_register(e, buf, 4096, "cpu"), MC_OK);
  mc_segment_t self;
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &self), MC_OK);
  mc_request_t w = {MC_WRITE, 0, buf, self, (uint64_t)(uintptr_t)buf, 8};
  assert_int_equal(mc_transfer(e, &w, 1, -2), MC_ERR_INVALID_ARG);
  assert_non_null(strstr(mc_last_error(), "-2"));
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(e, 4, &b), MC_OK);
  assert_int_equal(mc_batch_wait(b, -5), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_wait(b, INT32_MIN), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_wait(b, 0), MC_OK); /* nothing submitted: done */
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  char stats[4096];
  size_t need;
  assert_int_equal(mc_engine_stats_json(e, stats, sizeof stats, &need), MC_OK);
  assert_non_null(strstr(stats, "\"requests_completed\":0"));

  size_t big = 100000;
  char *s = malloc(big + 1);
  memset(s, 'k', big);
  s[big] = 0;
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, s, "1"), MC_ERR_INVALID_ARG);
  print_message("unknown key: %.120s...\n", mc_last_error());
  assert_non_null(strstr(mc_last_error(), "(100000 bytes)"));
  assert_true(strlen(mc_last_error()) < 2048);
  assert_int_equal(mc_config_set(cfg, "workers", s), MC_ERR_INVALID_ARG);
  assert_non_null(strstr(mc_last_error(), "(100000 bytes)"));
  assert_true(strlen(mc_last_error()) < 2048);
  mc_config_destroy(cfg);
  void *p = NULL;
  assert_int_equal(mc_buffer_alloc(e, 4096, s, &p), MC_ERR_UNSUPPORTED);
  assert_non_null(strstr(mc_last_error(), "(100000 bytes)"));
  assert_true(strlen(mc_last_error()) < 2048);
  assert_null(p);
  mc_segment_t x;
  s[256] = 0;
  assert_int_equal(mc_segment_open(e, s, &x), MC_ERR_INVALID_ARG);
  assert_non_null(strstr(mc_last_error(), "255"));
  s[0] = 0;
  assert_int_equal(mc_segment_open(e, s, &x), MC_ERR_INVALID_ARG);
  free(s);
  mc_segment_close(e, self);
  mc_engine_destroy(e);
  free(buf);
}

struct racer {
  mc_engine_t *e;
  char *base;
  size_t off;
  pthread_barrier_t *go;
  mc_status_t st;
};

static void *race_register(void *arg) {
  struct racer *r = arg;
  pthread_barrier_wait(r->go);
  r->st = mc_buffer_register(r->e, r->base + r->off, 1 << 20, "cpu");
  return NULL;
}

/* Registrations run the transports' part (NIC registration, IPC export) outside the engine's
 * buffer lock; two overlapping ones at once still never both succeed. */
static void test_overlapping_registrations_race(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine("rdma_devices", "sim:2", NULL);
  assert_non_null(e);
  char *base = malloc(2 << 20);
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, 2);
  int wins[3] = {0, 0, 0};
  for (int round = 0; round < 300; round++) {
    struct racer a = {e, base, 0, &go, 0}, b = {e, base, (size_t)(round % 3) * (256 << 10), &go, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race_register, &a);
    pthread_create(&tb, NULL, race_register, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    int ok = (a.st == MC_OK) + (b.st == MC_OK);
    assert_int_equal(ok, 1);
    assert_true(a.st == MC_OK || a.st == MC_ERR_EXISTS);
    assert_true(b.st == MC_OK || b.st == MC_ERR_EXISTS);
    wins[a.st == MC_OK ? 0 : 1]++;
    assert_int_equal(mc_buffer_unregister(e, a.st == MC_OK ? a.base + a.off : b.base + b.off), MC_OK);
  }
  print_message("first racer won %d rounds, second %d\n", wins[0], wins[1]);
  pthread_barrier_destroy(&go);
  mc_engine_destroy(e);
  free(base);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_access_timeout),
      cmocka_unit_test(test_own_name_without_local),
      cmocka_unit_test(test_failed_create_keeps_log_level),
      cmocka_unit_test(test_bad_input_messages),
      cmocka_unit_test(test_overlapping_registrations_race),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
