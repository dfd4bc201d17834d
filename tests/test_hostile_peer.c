/* A same-host peer that sends malformed messages (tests/helper_fake_peer.c, one mode per case:
 * a descriptor whose transports.shm socket is [1] or a number, an admission reply with a string,
 * negative or truncated pid, a LIST with a string address, a wrapping range or a huge array while
 * the path opens, and a LIST with a float epoch or overlapping buffers on a later refresh from a
 * request's thread). For each: the engine logs once what is wrong, naming the peer and the
 * field; the request to that peer ends FAILED in bounded time (MC_ERR_TRANSPORT where the shm
 * path was open and its list went bad; otherwise the engine falls back to tcp, where the fake
 * peer hangs up); the process is alive; and the same engine still moves data with an honest
 * same-host peer (a second engine in this process, over shm) afterwards. */
#define _GNU_SOURCE
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

static pid_t g_child;
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_log[1 << 16];
static size_t g_log_len;

static void on_log(int level, const char *message, void *user) {
  (void)level;
  (void)user;
  pthread_mutex_lock(&g_log_mu);
  size_t n = strlen(message);
  if (g_log_len + n + 2 < sizeof g_log) {
    memcpy(g_log + g_log_len, message, n);
    g_log_len += n;
    g_log[g_log_len++] = '\n';
    g_log[g_log_len] = 0;
  }
  pthread_mutex_unlock(&g_log_mu);
}

/* The log holds one line with all of the given words. */
static int log_has(const char *a, const char *b, const char *c) {
  pthread_mutex_lock(&g_log_mu);
  int found = 0;
  for (char *line = g_log; *line && !found;) {
    char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line) : strlen(line);
    char tmp[4096];
    if (n >= sizeof tmp) n = sizeof tmp - 1;
    memcpy(tmp, line, n);
    tmp[n] = 0;
    found = strstr(tmp, a) && strstr(tmp, b) && strstr(tmp, c);
    line += n + (end ? 1 : 0);
  }
  pthread_mutex_unlock(&g_log_mu);
  return found;
}

static int kill_child(void **state) {
  (void)state;
  if (g_child > 0) {
    kill(g_child, SIGKILL);
    waitpid(g_child, NULL, 0);
    g_child = 0;
  }
  mc_log_set_handler(NULL, NULL);
  return 0;
}

/* Starts the fake peer in mode; *port and *addr from its first line. */
static void start_fake(const char *mode, int *port, unsigned long long *addr) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  assert_true(n > 0);
  exe[n] = 0;
  char helper[PATH_MAX + 32];
  snprintf(helper, sizeof helper, "%s/helper_fake_peer", dirname(exe));
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    close(fds[0]);
    execl(helper, helper, mode, (char *)NULL);
    _exit(127);
  }
  g_child = pid;
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  assert_non_null(f);
  assert_int_equal(fscanf(f, "%d %llu", port, addr), 2);
  fclose(f);
}

/* The honest part: a second engine in this process, over shm, still serves and is served. */
static void honest_peer_works(mc_engine_t *e, void *local) {
  mc_engine_t *h = tu_engine("transports", "shm,tcp", NULL);
  assert_non_null(h);
  void *hb = NULL;
  assert_int_equal(mc_buffer_alloc(h, 4096, NULL, &hb), MC_OK);
  tu_fill(hb, 4096, 77);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, mc_engine_name(h), &s), MC_OK);
  mc_segment_info_t info;
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
  assert_string_equal(info.transport, "shm");
  mc_request_t r = {MC_READ, 0, local, s, (uint64_t)(uintptr_t)hb, 4096};
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(local, 4096, 77), -1);
  mc_engine_destroy(h);
}

/* want_status: the request's status when the shm path opened (0: any failure, the tcp
 * fallback's). field: what the log line must name. */
static void hostile(const char *mode, const char *field, mc_status_t want_status) {
  g_log_len = 0;
  g_log[0] = 0;
  mc_log_set_handler(on_log, NULL);
  int port = 0;
  unsigned long long addr = 0;
  start_fake(mode, &port, &addr);
  char name[64];
  snprintf(name, sizeof name, "127.0.0.1:%d", port);
  mc_engine_t *e = tu_engine("transports", "shm,tcp", "timeout_ms", "2000", NULL);
  assert_non_null(e);
  void *local = NULL;
  assert_int_equal(mc_buffer_alloc(e, 1 << 16, NULL, &local), MC_OK);
  mc_segment_t seg = 0;
  mc_status_t st = mc_segment_open(e, name, &seg);
  if (want_status == MC_ERR_METADATA) {
    /* A malformed descriptor entry: the descriptor is refused whole, the open fails naming the
     * peer, the entry and the field. */
    if (st != MC_ERR_METADATA) fprintf(stderr, "mode %s: open: %d %s\n", mode, st, mc_last_error());
    assert_int_equal(st, MC_ERR_METADATA);
    assert_non_null(strstr(mc_last_error(), field));
    assert_non_null(strstr(mc_last_error(), "shm"));
    assert_non_null(strstr(mc_last_error(), name));
    honest_peer_works(e, local);
    mc_engine_destroy(e);
    kill_child(NULL);
    mc_log_set_handler(NULL, NULL);
    return;
  }
  if (st == MC_OK) {
    mc_request_t r = {MC_READ, 0, local, seg, addr, 4096};
    uint64_t t0 = tu_now_ms();
    st = mc_transfer(e, &r, 1, tu_wait_ms(10000));
    assert_true(tu_now_ms() - t0 < tu_slack_ms(10000));
  }
  if (!log_has(name, field, "shm") || getenv("MC_TEST_VERBOSE")) fprintf(stderr, "mode %s: log:\n%s\n", mode, g_log);
  assert_true(log_has(name, field, "shm"));
  assert_int_not_equal(st, MC_OK);
  if (want_status) assert_int_equal(st, want_status);
  assert_int_equal(kill(getpid(), 0), 0);
  honest_peer_works(e, local);
  mc_engine_destroy(e);
  kill_child(NULL);
}

static void blob_array(void **s) { (void)s; hostile("blob_array", "'socket'", MC_ERR_METADATA); }
static void blob_number(void **s) { (void)s; hostile("blob_number", "'socket'", MC_ERR_METADATA); }
static void hello_pid_string(void **s) { (void)s; hostile("hello_pid_string", "'pid'", 0); }
static void hello_pid_neg(void **s) { (void)s; hostile("hello_pid_neg", "'pid'", 0); }
static void hello_truncated(void **s) { (void)s; hostile("hello_truncated", "not valid JSON", 0); }
static void list_string(void **s) { (void)s; hostile("list_string", "'buffers[0].addr'", 0); }
static void list_wrap(void **s) { (void)s; hostile("list_wrap", "'buffers[0].len'", 0); }
static void list_huge(void **s) { (void)s; hostile("list_huge", "'buffers'", 0); }
static void relist_float(void **s) { (void)s; hostile("relist_float", "'epoch'", MC_ERR_TRANSPORT); }
static void relist_overlap(void **s) { (void)s; hostile("relist_overlap", "'buffers[1].addr'", MC_ERR_TRANSPORT); }

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(blob_array, kill_child),     cmocka_unit_test_teardown(blob_number, kill_child),
      cmocka_unit_test_teardown(hello_pid_string, kill_child), cmocka_unit_test_teardown(hello_pid_neg, kill_child),
      cmocka_unit_test_teardown(hello_truncated, kill_child), cmocka_unit_test_teardown(list_string, kill_child),
      cmocka_unit_test_teardown(list_wrap, kill_child),      cmocka_unit_test_teardown(list_huge, kill_child),
      cmocka_unit_test_teardown(relist_float, kill_child),   cmocka_unit_test_teardown(relist_overlap, kill_child),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
