/* Network faults between two network namespaces that this test creates (tests/fault/netns.sh:
 * NAME-a and NAME-b joined by a veth pair). The initiator runs in NAME-a (this process joins it
 * before creating any engine), the target process in NAME-b; nothing is sent from the root
 * namespace. Cases: link down and up; a silent nftables blackhole, then cleared; 20% random
 * loss (nftables numgen) under verified traffic; and default transports across namespaces of one
 * host (shm must not be chosen where it cannot work). Skips, saying why, where namespaces cannot
 * be created (not root, no iproute2). The namespaces are removed at the end, on failure too. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fault/fault_util.h"

static char g_script[PATH_MAX + 64];
static char g_ns[16];
static char g_addr_a[32], g_addr_b[32];
static int g_ready, g_have_nft, g_fd_b = -1, g_fd_root = -1;
static char g_skip[256];

static int sh(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static void ns_down(void) {
  if (!g_ns[0]) return;
  fu_kill_all();
  if (g_fd_root >= 0) setns(g_fd_root, CLONE_NEWNET);
  sh("'%s' down %s", g_script, g_ns);
  g_ns[0] = 0;
}

static void on_fatal(int sig) {
  ns_down();
  signal(sig, SIG_DFL);
  raise(sig);
}

static int find_script(void) {
  char dir[PATH_MAX];
  if (access("tests/fault/netns.sh", X_OK) == 0) {
    snprintf(g_script, sizeof g_script, "tests/fault/netns.sh");
    return 0;
  }
  fu_exe_dir(dir, sizeof dir); /* BUILD/tests -> the repository's tests/fault */
  snprintf(g_script, sizeof g_script, "%s/../../tests/fault/netns.sh", dir);
  return access(g_script, X_OK);
}

static int group_setup(void **state) {
  (void)state;
  if (geteuid() != 0) {
    snprintf(g_skip, sizeof g_skip, "not root: network namespaces cannot be created");
    return 0;
  }
  if (find_script() != 0) {
    snprintf(g_skip, sizeof g_skip, "tests/fault/netns.sh not found");
    return 0;
  }
  if (sh("'%s' check >/dev/null 2>&1", g_script) != 0) {
    snprintf(g_skip, sizeof g_skip, "network namespaces or veth pairs unavailable (netns.sh check failed)");
    return 0;
  }
  g_have_nft = sh("command -v nft >/dev/null 2>&1") == 0;
  sh("'%s' reap", g_script);
  snprintf(g_ns, sizeof g_ns, "mcf%d", (int)(getpid() % 100000));
  atexit(ns_down);
  signal(SIGTERM, on_fatal);
  signal(SIGINT, on_fatal);
  signal(SIGABRT, on_fatal);
  char cmd[PATH_MAX + 128];
  snprintf(cmd, sizeof cmd, "'%s' up %s", g_script, g_ns);
  FILE *p = popen(cmd, "r");
  if (!p || fscanf(p, "%31s %31s", g_addr_a, g_addr_b) != 2) {
    if (p) pclose(p);
    snprintf(g_skip, sizeof g_skip, "netns.sh up failed");
    ns_down();
    return 0;
  }
  pclose(p);
  char path[128];
  g_fd_root = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  snprintf(path, sizeof path, "/var/run/netns/%s-b", g_ns);
  g_fd_b = open(path, O_RDONLY | O_CLOEXEC);
  snprintf(path, sizeof path, "/var/run/netns/%s-a", g_ns);
  int fa = open(path, O_RDONLY | O_CLOEXEC);
  /* No engine exists yet: every engine thread created from here on lives in NAME-a. */
  if (g_fd_root < 0 || g_fd_b < 0 || fa < 0 || setns(fa, CLONE_NEWNET) != 0) {
    snprintf(g_skip, sizeof g_skip, "cannot join the test namespaces: %s", strerror(errno));
    if (fa >= 0) close(fa);
    ns_down();
    return 0;
  }
  close(fa);
  g_ready = 1;
  fprintf(stderr, "netns: %s-a %s <-> %s-b %s\n", g_ns, g_addr_a, g_ns, g_addr_b);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  ns_down();
  return 0;
}

#define NEED_NS()                                            \
  do {                                                       \
    if (!g_ready) {                                          \
      TU_SKIP_REQUIRED("network namespaces: %s", g_skip);    \
    }                                                        \
  } while (0)

static const char *const TARGET_KEYS[] = {"timeout_ms=2000", NULL};
#define TIMEOUT_MS 2000
#define HEARTBEAT_MS 200
#define PEER_TIMEOUT_MS 1000

struct net {
  struct fu_target t;
  mc_engine_t *e;
  mc_segment_t s;
  char *l;
  size_t len;
  struct fu_events ev;
};

/* The case that runs now (its struct net is static, so a failed case's engine, whose callback
 * points at it, can still be destroyed by net_teardown after cmocka left the case). */
static struct net *g_live;

static void net_start(struct net *x, const char *transports, size_t len) {
  memset(x, 0, sizeof *x);
  g_live = x;
  x->len = len;
  char listen[64];
  snprintf(listen, sizeof listen, "%s:0", g_addr_b);
  assert_int_equal(fu_start_target(&x->t, len, 77, "alloc", listen, g_fd_b, TARGET_KEYS), 0);
  char mine[64];
  snprintf(mine, sizeof mine, "%s:0", g_addr_a);
  x->e = tu_engine("listen", mine, "timeout_ms", "2000", "heartbeat_ms", "200", "peer_timeout_ms", "1000",
                   "transports", transports, NULL);
  assert_non_null(x->e);
  fu_events_init(&x->ev);
  assert_int_equal(mc_engine_set_segment_callback(x->e, fu_on_segment, &x->ev), MC_OK);
  void *p = NULL;
  assert_int_equal(mc_buffer_alloc(x->e, len, NULL, &p), MC_OK);
  x->l = p;
  assert_int_equal(mc_segment_open(x->e, x->t.name, &x->s), MC_OK);
}

static void net_stop(struct net *x) {
  mc_engine_destroy(x->e);
  x->e = NULL;
  fu_signal_target(&x->t, SIGKILL);
  g_live = NULL;
}

static int net_teardown(void **state) {
  if (g_ready) { /* a failed case may have left its fault in place */
    sh("'%s' heal %s", g_script, g_ns);
    if (g_have_nft) sh("'%s' clear %s", g_script, g_ns);
  }
  if (g_live && g_live->e) net_stop(g_live);
  g_live = NULL;
  return fu_teardown(state);
}

/* WRITE a fresh pattern to [off, off+n) and READ it back; 1 verified, 0 failed, -1 wrong bytes. */
static int roundtrip(struct net *x, size_t off, size_t n, uint64_t seed, mc_status_t *err) {
  tu_fill(x->l + off, n, seed);
  mc_request_t w = {MC_WRITE, 0, x->l + off, x->s, x->t.addr + off, n};
  mc_status_t st = mc_transfer(x->e, &w, 1, TIMEOUT_MS + 3000);
  if (st == MC_OK) {
    memset(x->l + off, 0, n);
    mc_request_t r = {MC_READ, 0, x->l + off, x->s, x->t.addr + off, n};
    st = mc_transfer(x->e, &r, 1, TIMEOUT_MS + 3000);
  }
  *err = st;
  if (st != MC_OK) return 0;
  return tu_check(x->l + off, n, seed) == -1 ? 1 : -1;
}

/* A fault that stops all traffic (cut or blackhole): in-flight work fails within timeout_ms, the
 * segment goes UNREACHABLE within peer_timeout_ms + a heartbeat (+ slack), new submits fail at
 * once; healed, the same incarnation is OK again without a rebuild and data is verified. */
static void partition(const char *fault, const char *heal) {
  static struct net x;
  net_start(&x, "tcp", 16 << 20);
  mc_status_t err;
  assert_int_equal(roundtrip(&x, 0, x.len, 1, &err), 1);
  mc_batch_t *b;
  size_t n = 64;
  assert_int_equal(mc_batch_create(x.e, n, &b), MC_OK);
  mc_request_t rq[64];
  for (size_t i = 0; i < n; i++)
    rq[i] = (mc_request_t){i % 2 ? MC_WRITE : MC_READ, 0, x.l + (i % 16) * (1 << 20), x.s,
                           x.t.addr + (i % 16) * (1 << 20), 1 << 20};
  size_t evn = fu_events_count(&x.ev);
  assert_int_equal(sh("'%s' %s %s", g_script, fault, g_ns), 0);
  uint64_t t0 = tu_now_ms();
  assert_int_equal(mc_batch_submit(b, rq, n), MC_OK);
  mc_status_t w = mc_batch_wait(b, TIMEOUT_MS + PEER_TIMEOUT_MS + 2000);
  uint64_t took = tu_now_ms() - t0;
  assert_int_not_equal(w, MC_ERR_TIMEOUT);
  size_t failed = 0;
  for (size_t i = 0; i < n; i++) {
    mc_request_status_t rs;
    assert_int_equal(mc_batch_status(b, i, &rs), MC_OK);
    assert_int_not_equal(rs.state, MC_REQUEST_PENDING);
    if (rs.state == MC_REQUEST_FAILED) {
      failed++;
      assert_true(rs.error == MC_ERR_PEER_DOWN || rs.error == MC_ERR_TRANSPORT);
    }
  }
  print_message("  %s: batch ended after %llu ms, %zu of %zu failed\n", fault, (unsigned long long)took, failed, n);
  long ei = fu_wait_event(&x.ev, evn, MC_SEGMENT_UNREACHABLE, 0, PEER_TIMEOUT_MS + HEARTBEAT_MS + 3000);
  assert_true(ei >= 0);
  uint64_t det = x.ev.ev[ei].ms - t0;
  print_message("  %s: UNREACHABLE after %llu ms\n", fault, (unsigned long long)det);
  assert_true(det <= PEER_TIMEOUT_MS + HEARTBEAT_MS + tu_slack_ms(500));
  mc_request_t one = {MC_READ, 0, x.l, x.s, x.t.addr, 4096};
  uint64_t t1 = tu_now_ms();
  assert_int_equal(mc_transfer(x.e, &one, 1, tu_wait_ms(5000)), MC_ERR_PEER_DOWN);
  assert_true(tu_now_ms() - t1 < tu_slack_ms(100));
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  usleep(500000);
  evn = fu_events_count(&x.ev);
  assert_int_equal(sh("'%s' %s %s", g_script, heal, g_ns), 0);
  uint64_t t2 = tu_now_ms();
  ei = fu_wait_event(&x.ev, evn, MC_SEGMENT_OK, x.t.incarnation, 10000);
  assert_true(ei >= 0);
  print_message("  %s: OK again %llu ms after the heal\n", heal, (unsigned long long)(x.ev.ev[ei].ms - t2));
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(x.e, x.s, &info), MC_OK);
  assert_int_equal(info.rejoins, 0);
  assert_int_equal(info.incarnation, x.t.incarnation);
  /* Data verified after the heal (retrying while the old connections are being replaced). */
  int ok = 0;
  for (int i = 0; i < 50 && ok != 1; i++) {
    ok = roundtrip(&x, 0, x.len, 2 + (uint64_t)i, &err);
    assert_int_not_equal(ok, -1);
    if (ok != 1) usleep(100000);
  }
  assert_int_equal(ok, 1);
  net_stop(&x);
}

static void test_link_down_up(void **s) { (void)s; NEED_NS(); partition("cut", "heal"); }

static void test_blackhole(void **s) {
  (void)s;
  NEED_NS();
  if (!g_have_nft) {
    TU_SKIP_REQUIRED("nft (nftables) is not installed (scripts/install-deps.sh installs it)");
  }
  partition("blackhole", "clear");
}

/* 20% of what the target receives dropped at random: TCP retransmits; every completed transfer
 * must carry the right bytes; failures are allowed (a segment may flap), pending requests not. */
static void test_loss(void **s) {
  (void)s;
  NEED_NS();
  if (!g_have_nft) {
    TU_SKIP_REQUIRED("nft (nftables) is not installed (scripts/install-deps.sh installs it)");
  }
  static struct net x;
  net_start(&x, "tcp", 4 << 20);
  mc_status_t err;
  assert_int_equal(roundtrip(&x, 0, x.len, 1, &err), 1);
  assert_int_equal(sh("'%s' loss %s 20", g_script, g_ns), 0);
  uint64_t t0 = tu_now_ms(), dur = 3000 * (uint64_t)tu_scale();
  uint64_t okc = 0, failc = 0, bytes = 0;
  mc_status_t last = MC_OK;
  for (uint64_t k = 0; tu_now_ms() - t0 < dur; k++) {
    size_t n = (size_t)(4096 << (k % 7)); /* 4 KiB .. 256 KiB */
    size_t off = (size_t)(k % 8) * (512 << 10);
    int r = roundtrip(&x, off, n, 1000 + k, &err);
    if (r < 0) fail_msg("wrong bytes read back under loss (round %llu)", (unsigned long long)k);
    if (r == 1) {
      okc++;
      bytes += n;
    } else {
      failc++;
      last = err;
      usleep(20000);
    }
  }
  double secs = (double)(tu_now_ms() - t0) / 1000.0;
  print_message("  20%% loss: %llu verified round trips (%.1f KiB/s), %llu failed (last: %s)\n",
                (unsigned long long)okc, (double)bytes / 1024.0 / secs, (unsigned long long)failc,
                mc_status_str(last));
  assert_int_equal(sh("'%s' clear %s", g_script, g_ns), 0);
  assert_true(okc > 0);
  /* Loss gone: everything verified again. */
  int ok = 0;
  for (int i = 0; i < 50 && ok != 1; i++) {
    ok = roundtrip(&x, 0, x.len, 9 + (uint64_t)i, &err);
    assert_int_not_equal(ok, -1);
    if (ok != 1) usleep(100000);
  }
  assert_int_equal(ok, 1);
  net_stop(&x);
}

/* A WRITE that failed must never land afterwards. The target drops everything it receives
 * while a 1 MiB WRITE of pattern A is sent: the request fails, the segment goes UNREACHABLE.
 * Healed, pattern B is written to the same place and read back after the old connection's
 * kernel had time to retransmit A (it keeps retransmitting what it had queued): B must be
 * there. Without a fence, A's retransmission lands after B and B is silently lost. */
static void test_failed_write_never_lands_late(void **s) {
  (void)s;
  NEED_NS();
  if (!g_have_nft) {
    TU_SKIP_REQUIRED("nft (nftables) is not installed (scripts/install-deps.sh installs it)");
  }
  static struct net x;
  net_start(&x, "tcp", 4 << 20);
  mc_status_t err;
  assert_int_equal(roundtrip(&x, 0, x.len, 1, &err), 1);
  size_t n = 1 << 20;
  size_t evn = fu_events_count(&x.ev);
  assert_int_equal(sh("'%s' blackhole %s", g_script, g_ns), 0);
  tu_fill(x.l, n, 0xA);
  mc_request_t w = {MC_WRITE, 0, x.l, x.s, x.t.addr, n};
  mc_status_t st = mc_transfer(x.e, &w, 1, TIMEOUT_MS + 3000);
  print_message("  WRITE A during the blackhole: %s\n", mc_status_str(st));
  assert_true(st == MC_ERR_PEER_DOWN || st == MC_ERR_TRANSPORT);
  assert_true(fu_wait_event(&x.ev, evn, MC_SEGMENT_UNREACHABLE, 0, PEER_TIMEOUT_MS + HEARTBEAT_MS + 3000) >= 0);
  evn = fu_events_count(&x.ev);
  assert_int_equal(sh("'%s' clear %s", g_script, g_ns), 0);
  assert_true(fu_wait_event(&x.ev, evn, MC_SEGMENT_OK, x.t.incarnation, 10000) >= 0);
  /* B over a new connection (retried while the old ones are replaced). */
  tu_fill(x.l, n, 0xB);
  st = MC_ERR_PEER_DOWN;
  for (int i = 0; i < 50 && st != MC_OK; i++) {
    st = mc_transfer(x.e, &w, 1, TIMEOUT_MS + 3000);
    if (st != MC_OK) usleep(100000);
  }
  assert_int_equal(st, MC_OK);
  /* The old socket's retransmission timer backs off from 200 ms; within 8 s it fires again. */
  usleep((useconds_t)tu_wait_ms(8000) * 1000);
  memset(x.l, 0, n);
  mc_request_t r = {MC_READ, 0, x.l, x.s, x.t.addr, n};
  assert_int_equal(mc_transfer(x.e, &r, 1, TIMEOUT_MS + 3000), MC_OK);
  if (tu_check(x.l, n, 0xB) != -1) {
    int was_a = tu_check(x.l, n, 0xA) == -1;
    fail_msg("the WRITE that failed landed after a later WRITE had completed (%s)",
             was_a ? "the whole of pattern A" : "part of it");
  }
  net_stop(&x);
}

/* Default transports between two namespaces of one host: the abstract shm socket is per
 * namespace, so the same-host path cannot work; the segment must still open and move data. */
static void test_auto_across_namespaces(void **s) {
  (void)s;
  NEED_NS();
  static struct net x;
  net_start(&x, "auto", 4 << 20);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(x.e, x.s, &info), MC_OK);
  print_message("  transport chosen across namespaces: %s\n", info.transport);
  assert_true(info.transport[0] != 0);
  assert_string_not_equal(info.transport, "shm");
  mc_status_t err;
  int r = roundtrip(&x, 0, x.len, 5, &err);
  if (r != 1) fail_msg("transports=auto across namespaces: %s (%s)", mc_status_str(err), mc_last_error());
  /* Still not shm once data moved (the choice may be revised at the first transfer). */
  assert_int_equal(mc_segment_query(x.e, x.s, &info), MC_OK);
  assert_string_not_equal(info.transport, "shm");
  net_stop(&x);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (getenv("FAULT_FILTER")) cmocka_set_test_filter(getenv("FAULT_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_link_down_up, net_teardown),
      cmocka_unit_test_teardown(test_blackhole, net_teardown),
      cmocka_unit_test_teardown(test_loss, net_teardown),
      cmocka_unit_test_teardown(test_failed_write_never_lands_late, net_teardown),
      cmocka_unit_test_teardown(test_auto_across_namespaces, net_teardown),
  };
  return cmocka_run_group_tests_name("fault_net", tests, group_setup, group_teardown);
}
