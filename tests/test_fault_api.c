/* API-level faults with real target processes: engine destroy with work in flight (fails it
 * promptly, exactly once), mc_batch_cancel (every pending request FAILED with MC_ERR_CANCELED,
 * nothing touches memory after it returns, later submits run normally), for TCP and shm; and
 * file-descriptor exhaustion (RLIMIT_NOFILE 64 in a child) giving clear errors, no crash or hang. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/resource.h>
#include <cmocka.h>

#include "fault/fault_util.h"

static const char *const TARGET_KEYS[] = {"timeout_ms=1000", NULL};

static uint64_t stat_u64(mc_engine_t *e, const char *key) {
  static char buf[1 << 16];
  size_t need;
  assert_int_equal(mc_engine_stats_json(e, buf, sizeof buf, &need), MC_OK);
  const char *k = strstr(buf, key);
  assert_non_null(k);
  return strtoull(k + strlen(key) + 1, NULL, 10);
}

struct setup {
  struct fu_target t;
  mc_engine_t *e;
  mc_segment_t s;
  char *l;
  size_t len;
  size_t chunk; /* bytes per request of submit_reads */
};

static void start(struct setup *x, int tcp, size_t len, const char *peer_timeout) {
  memset(x, 0, sizeof *x);
  x->len = len;
  assert_int_equal(fu_start_target(&x->t, len, 5, tcp ? "plain" : "alloc", NULL, -1, TARGET_KEYS), 0);
  x->e = tu_engine("timeout_ms", "1000", "peer_timeout_ms", peer_timeout, "transports", tcp ? "tcp" : "auto", NULL);
  assert_non_null(x->e);
  void *p = NULL;
  assert_int_equal(mc_buffer_alloc(x->e, len, NULL, &p), MC_OK);
  x->l = p;
  assert_int_equal(mc_segment_open(x->e, x->t.name, &x->s), MC_OK);
}

static mc_batch_t *submit_reads(struct setup *x, size_t n) {
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(x->e, n, &b), MC_OK);
  mc_request_t *rq = calloc(n, sizeof *rq);
  /* The requests tile the local buffer: no two of them write the same bytes (requests of one
   * batch run concurrently, so overlapping destinations would be the caller's data race). */
  size_t chunk = x->len / n / 64 * 64;
  assert_true(chunk > 0);
  x->chunk = chunk;
  for (size_t i = 0; i < n; i++)
    rq[i] = (mc_request_t){MC_READ, 0, x->l + i * chunk, x->s, x->t.addr + i * chunk, chunk};
  assert_int_equal(mc_batch_submit(b, rq, n), MC_OK);
  free(rq);
  return b;
}

static void wait_first_done(mc_batch_t *b) {
  uint64_t t0 = tu_now_ms();
  mc_request_status_t rs;
  do {
    assert_int_equal(mc_batch_status(b, 0, &rs), MC_OK);
    assert_true(tu_now_ms() - t0 < tu_slack_ms(5000));
  } while (rs.state == MC_REQUEST_PENDING);
}

/* ------------------------------------------------------------------ destroy with work in flight */

static void destroy_in_flight(int tcp) {
  struct setup x;
  /* peer_timeout_ms above timeout_ms: destroy must still be bounded by about timeout_ms. */
  start(&x, tcp, 64 << 20, "3000");
  mc_request_t one = {MC_READ, 0, x.l, x.s, x.t.addr, 1 << 20};
  assert_int_equal(mc_transfer(x.e, &one, 1, tu_wait_ms(5000)), MC_OK);
  size_t n = (tcp ? 256 : 4096) * (size_t)tu_scale();
  if (tcp) fu_signal_target(&x.t, SIGSTOP); /* TCP: everything stays in flight */
  mc_batch_t *b = submit_reads(&x, n);
  if (tcp) {
    usleep(1200 * 1000); /* a health probe is now waiting on the paused peer */
  } else {
    wait_first_done(b);
  }
  uint64_t t0 = tu_now_ms();
  mc_engine_destroy(x.e);
  uint64_t took = tu_now_ms() - t0;
  print_message("  %s: mc_engine_destroy took %llu ms\n", tcp ? "tcp" : "shm", (unsigned long long)took);
  /* Every request ended exactly once, and at once (the wait does not block). */
  t0 = tu_now_ms();
  mc_status_t w = mc_batch_wait(b, 0);
  assert_int_not_equal(w, MC_ERR_TIMEOUT);
  size_t done = 0, failed = 0;
  for (size_t i = 0; i < n; i++) {
    mc_request_status_t rs;
    assert_int_equal(mc_batch_status(b, i, &rs), MC_OK);
    assert_int_not_equal(rs.state, MC_REQUEST_PENDING);
    if (rs.state == MC_REQUEST_COMPLETED) {
      done++;
      assert_int_equal(rs.bytes, x.chunk);
    } else {
      failed++;
      assert_true(rs.error == MC_ERR_PEER_DOWN || rs.error == MC_ERR_TRANSPORT);
    }
  }
  print_message("  %zu completed, %zu failed\n", done, failed);
  if (tcp) assert_int_equal(failed, n);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  fu_signal_target(&x.t, SIGKILL);
  /* The contract: destroy blocks at most about timeout_ms (1000). */
  if (took > tu_slack_ms(1500)) fail_msg("mc_engine_destroy blocked %llu ms with timeout_ms 1000", (unsigned long long)took);
}

static void test_destroy_in_flight_tcp(void **s) { (void)s; destroy_in_flight(1); }
static void test_destroy_in_flight_shm(void **s) { (void)s; destroy_in_flight(0); }

/* ------------------------------------------------------------------ cancel */

static void cancel(int tcp) {
  struct setup x;
  start(&x, tcp, 64 << 20, "3000");
  mc_request_t one = {MC_READ, 0, x.l, x.s, x.t.addr, 1 << 20};
  assert_int_equal(mc_transfer(x.e, &one, 1, tu_wait_ms(5000)), MC_OK);
  uint64_t c0 = stat_u64(x.e, "\"requests_completed\""), f0 = stat_u64(x.e, "\"requests_failed\"");
  size_t n = (tcp ? 256 : 4096) * (size_t)tu_scale();
  if (tcp) fu_signal_target(&x.t, SIGSTOP); /* TCP: READs stuck on the wire, data may arrive later */
  mc_batch_t *b = submit_reads(&x, n);
  if (tcp) usleep(100000);
  else wait_first_done(b);
  uint64_t t0 = tu_now_ms();
  assert_int_equal(mc_batch_cancel(b), MC_OK);
  uint64_t took = tu_now_ms() - t0;
  /* Nothing may touch the local buffer from here on: fill it with a sentinel. */
  memset(x.l, 0xAB, x.len);
  size_t done = 0, canceled = 0, other = 0, pending = 0, first_other = 0;
  int32_t other_err = 0;
  for (size_t i = 0; i < n; i++) {
    mc_request_status_t rs;
    assert_int_equal(mc_batch_status(b, i, &rs), MC_OK);
    if (rs.state == MC_REQUEST_PENDING) pending++;
    else if (rs.state == MC_REQUEST_COMPLETED) done++;
    else if (rs.error == MC_ERR_CANCELED) canceled++;
    else if (other++ == 0) {
      first_other = i;
      other_err = rs.error;
    }
  }
  print_message("  %s: cancel returned after %llu ms: %zu completed, %zu canceled, %zu failed otherwise, "
                "%zu pending\n", tcp ? "tcp" : "shm", (unsigned long long)took, done, canceled, other, pending);
  assert_int_equal(pending, 0);
  if (other)
    fail_msg("%zu requests FAILED with another error than MC_ERR_CANCELED (request %zu: %d, %s)", other,
             first_other, other_err, mc_status_str(other_err));
  assert_true(took < tu_slack_ms(2500));
  if (tcp) assert_int_equal(canceled, n);
  assert_int_equal(mc_batch_wait(b, 0), done == n ? MC_OK : MC_ERR_CANCELED);
  if (tcp) fu_signal_target(&x.t, SIGCONT); /* the paused target answers the old READs now */
  usleep(300000);
  for (size_t i = 0; i < x.len; i++)
    if ((unsigned char)x.l[i] != 0xAB) fail_msg("byte %zu of the local buffer changed after mc_batch_cancel", i);
  /* Exactly once: the engine counted each request once. */
  uint64_t c1 = stat_u64(x.e, "\"requests_completed\""), f1 = stat_u64(x.e, "\"requests_failed\"");
  print_message("  engine counters: +%llu completed, +%llu failed\n", (unsigned long long)(c1 - c0),
                (unsigned long long)(f1 - f0));
  assert_int_equal((c1 - c0) + (f1 - f0), n);
  /* Requests submitted after cancel run normally, on the same batch after reset. */
  assert_int_equal(mc_batch_reset(b), MC_OK);
  mc_request_t r = {MC_READ, 0, x.l, x.s, x.t.addr, x.len};
  assert_int_equal(mc_batch_submit(b, &r, 1), MC_OK);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(x.l, x.len, 5), -1);
  /* Cancel with nothing pending: at once. */
  t0 = tu_now_ms();
  assert_int_equal(mc_batch_cancel(b), MC_OK);
  assert_true(tu_now_ms() - t0 < tu_slack_ms(50));
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  mc_engine_destroy(x.e);
  fu_signal_target(&x.t, SIGKILL);
}

static void test_cancel_tcp(void **s) { (void)s; cancel(1); }
static void test_cancel_shm(void **s) { (void)s; cancel(0); }

/* ------------------------------------------------------------------ descriptor exhaustion */

/* In a child limited to 64 descriptors: engine creation fails cleanly once descriptors run
 * out, so do segment opens and allocations when the rest are taken; all work again once they
 * are given back. Exit code 0 on success; the child reports what it saw. */
static int fd_child(void) {
  alarm(60);
  struct rlimit rl = {64, 64};
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 10;
  mc_engine_t *tgt = tu_engine("timeout_ms", "1000", NULL);
  if (!tgt) return 11;
  void *tb = NULL;
  if (mc_buffer_alloc(tgt, 1 << 20, NULL, &tb) != MC_OK) return 12;
  tu_fill(tb, 1 << 20, 9);
  /* Engines until one fails. */
  mc_engine_t *es[64];
  int ne = 0;
  mc_status_t st = MC_OK;
  char msg[512] = "";
  while (ne < 64) {
    mc_config_t *cfg;
    mc_config_create(&cfg);
    st = mc_engine_create(cfg, &es[ne]);
    if (st != MC_OK) snprintf(msg, sizeof msg, "%s", mc_last_error());
    mc_config_destroy(cfg);
    if (st != MC_OK) break;
    ne++;
  }
  printf("  engines created before failure: %d; then %s: %s\n", ne, mc_status_str(st), msg);
  if (st == MC_OK || !msg[0]) return 13;
  for (int i = 0; i < ne; i++) mc_engine_destroy(es[i]);
  mc_engine_t *ini = tu_engine("timeout_ms", "1000", NULL);
  if (!ini) return 14;
  void *lb = NULL;
  if (mc_buffer_alloc(ini, 1 << 20, NULL, &lb) != MC_OK) return 15;
  /* Take every descriptor left. */
  int hog[128], nh = 0;
  while (nh < 128) {
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) break;
    hog[nh++] = fd;
  }
  mc_segment_t s;
  uint64_t t0 = tu_now_ms();
  st = mc_segment_open(ini, mc_engine_name(tgt), &s);
  printf("  segment open with no descriptor left: %s (%s) after %llu ms\n", mc_status_str(st),
         st ? mc_last_error() : "", (unsigned long long)(tu_now_ms() - t0));
  if (st == MC_OK) mc_segment_close(ini, s);
  else if (!mc_last_error()[0]) return 16;
  void *p = NULL;
  mc_status_t sa = mc_buffer_alloc(ini, 1 << 20, NULL, &p);
  printf("  mc_buffer_alloc with no descriptor left: %s (%s)\n", mc_status_str(sa), sa ? mc_last_error() : "");
  if (sa == MC_OK) mc_buffer_free(ini, p);
  mc_engine_t *e2 = NULL;
  mc_config_t *cfg;
  mc_config_create(&cfg);
  mc_status_t se = mc_engine_create(cfg, &e2);
  mc_config_destroy(cfg);
  printf("  mc_engine_create with no descriptor left: %s (%s)\n", mc_status_str(se), se ? mc_last_error() : "");
  if (se == MC_OK) mc_engine_destroy(e2);
  else if (!mc_last_error()[0]) return 17;
  if (tu_now_ms() - t0 > tu_slack_ms(5000)) return 18;
  /* Given back: everything works. */
  for (int i = 0; i < nh; i++) close(hog[i]);
  st = mc_segment_open(ini, mc_engine_name(tgt), &s);
  if (st != MC_OK) {
    printf("  segment open after the descriptors came back: %s\n", mc_last_error());
    return 19;
  }
  mc_request_t r = {MC_READ, 0, lb, s, (uint64_t)(uintptr_t)tb, 1 << 20};
  st = mc_transfer(ini, &r, 1, tu_wait_ms(5000));
  if (st != MC_OK) {
    printf("  transfer after the descriptors came back: %s\n", mc_last_error());
    return 20;
  }
  if (tu_check(lb, 1 << 20, 9) != -1) return 21;
  mc_engine_destroy(ini);
  mc_engine_destroy(tgt);
  printf("  recovered: open and verified transfer OK\n");
  fflush(stdout);
  return 0;
}

static void test_fd_exhaustion(void **s) {
  (void)s;
  fflush(stdout);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int rc = fd_child();
    fflush(stdout);
    _exit(rc);
  }
  fu_child_add(pid);
  int status = 0;
  uint64_t t0 = tu_now_ms();
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (tu_now_ms() - t0 > tu_slack_ms(60000)) fail_msg("the descriptor-exhaustion child hung");
    usleep(10000);
  }
  fu_child_forget(pid);
  if (WIFSIGNALED(status)) fail_msg("the child died of signal %d", WTERMSIG(status));
  if (WEXITSTATUS(status) != 0) fail_msg("the child failed at step %d", WEXITSTATUS(status));
}


int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (getenv("FAULT_FILTER")) cmocka_set_test_filter(getenv("FAULT_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_destroy_in_flight_tcp, fu_teardown),
      cmocka_unit_test_teardown(test_destroy_in_flight_shm, fu_teardown),
      cmocka_unit_test_teardown(test_cancel_tcp, fu_teardown),
      cmocka_unit_test_teardown(test_cancel_shm, fu_teardown),
      cmocka_unit_test_teardown(test_fd_exhaustion, fu_teardown),
  };
  return cmocka_run_group_tests_name("fault_api", tests, NULL, NULL);
}
