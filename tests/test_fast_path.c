/* The fast path of mc_transfer (one small request over local or shm, copied on the calling
 * thread: src/engine/fast_path.cpp) against the normal path:
 *  - every bad request ends with the status and message the normal path gives it (mc_transfer of
 *    one request against mc_batch_submit + mc_batch_wait of the same request), nothing written;
 *  - the engine's and the transport's counters move by the same amounts for N requests either
 *    way, failures included;
 *  - races: the local buffer unregistered and unmapped while fast copies run (a pin that did not
 *    hold would fault), the target's rights narrowed while fast WRITEs run (none lands after
 *    mc_buffer_set_access returned), the target process killed (PEER_DOWN, then UNREACHABLE). */
#define _GNU_SOURCE
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

enum { kLen = 1 << 16 };

/* An initiator and the engine whose segment it opened: itself (local) or a second engine of this
 * process (shm). src is the initiator's, dst the target's; both registered plain memory. */
struct fx {
  mc_engine_t *e, *t;
  char *src, *dst;
  mc_segment_t seg;
  int shm;
};

static void fx_up(struct fx *f, int shm) {
  memset(f, 0, sizeof *f);
  f->shm = shm;
  f->e = tu_engine("timeout_ms", "2000", NULL);
  assert_non_null(f->e);
  f->t = shm ? tu_engine("timeout_ms", "2000", NULL) : f->e;
  assert_non_null(f->t);
  /* A page beyond each buffer stays unregistered: the two are never adjacent (a range past the
   * end of one must not run on into the other). */
  f->src = aligned_alloc(4096, kLen + 4096);
  f->dst = aligned_alloc(4096, kLen + 4096);
  tu_fill(f->src, kLen, 11);
  memset(f->dst, 0, kLen);
  assert_int_equal(mc_buffer_register(f->e, f->src, kLen, "cpu"), MC_OK);
  assert_int_equal(mc_buffer_register(f->t, f->dst, kLen, "cpu"), MC_OK);
  assert_int_equal(mc_segment_open(f->e, mc_engine_name(f->t), &f->seg), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(f->e, f->seg, &info), MC_OK);
  assert_string_equal(info.transport, shm ? "shm" : "local");
}

static void fx_down(struct fx *f) {
  mc_segment_close(f->e, f->seg);
  if (f->shm) mc_engine_destroy(f->t);
  mc_engine_destroy(f->e);
  free(f->src);
  free(f->dst);
}

static int all_zero(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* The normal path for one request: its status and message, the message without the name of the
 * call that made it ("mc_batch_submit: " or "mc_batch_wait: ...: "), as mc_transfer words it. */
static mc_status_t slow_one(mc_engine_t *e, const mc_request_t *r, char *msg, size_t cap) {
  mc_batch_t *b = NULL;
  assert_int_equal(mc_batch_create(e, 1, &b), MC_OK);
  mc_status_t st = mc_batch_submit(b, r, 1);
  if (st != MC_OK) {
    const char *m = mc_last_error();
    assert_int_equal(strncmp(m, "mc_batch_submit: ", 17), 0);
    snprintf(msg, cap, "mc_transfer: %s", m + 17);
  } else {
    st = mc_batch_wait(b, tu_wait_ms(5000));
    mc_request_status_t rs;
    assert_int_equal(mc_batch_status(b, 0, &rs), MC_OK);
    assert_int_equal(rs.error, st);
    snprintf(msg, cap, "mc_transfer: request 0 failed: %s", mc_status_str(st));
  }
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  return st;
}

/* Each bad request: the same status and message both ways, and the target untouched. */
static void errors_match(int shm) {
  struct fx f;
  fx_up(&f, shm);
  uint64_t d = (uint64_t)(uintptr_t)f.dst;
  char stack[16];
  mc_request_t cases[] = {
      {7, 0, f.src, f.seg, d, 8},                                  /* opcode */
      {MC_WRITE, 1, f.src, f.seg, d, 8},                           /* flags */
      {MC_WRITE, 0, f.src, f.seg, d, 0},                           /* length */
      {MC_WRITE, 0, NULL, f.seg, d, 8},                            /* NULL local */
      {MC_WRITE, 0, f.src + kLen - 4, f.seg, d, 8},                /* local runs past its buffer */
      {MC_WRITE, 0, stack, f.seg, d, 8},                           /* local not registered */
      {MC_READ, 0, stack, f.seg, d, 8},                            /* the same, READ */
      {MC_WRITE, 0, f.src, f.seg, d + kLen - 4, 8},                /* remote runs past its buffer */
      {MC_WRITE, 0, f.src, f.seg, 16, 8},                          /* remote not registered */
      {MC_READ, 0, f.src, f.seg, d - 8, 8},                        /* remote before its buffer */
      {MC_WRITE, 0, f.src, 4242, d, 8},                            /* unknown segment */
      {MC_NOTIFY, 0, f.src, f.seg, d, 8},                          /* NOTIFY with a remote */
      {MC_WRITE, 0, f.src, f.seg, UINT64_MAX - 4, 8},              /* remote wraps */
      {MC_WRITE, 0, (void *)(uintptr_t)(UINT64_MAX - 4), f.seg, d, 8}, /* local wraps */
  };
  char want[512];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    mc_status_t slow = slow_one(f.e, &cases[i], want, sizeof want);
    mc_status_t fast = mc_transfer(f.e, &cases[i], 1, tu_wait_ms(5000));
    if (fast != slow || strcmp(mc_last_error(), want) != 0)
      fail_msg("case %zu: fast %d \"%s\", normal path %d \"%s\"", i, fast, mc_last_error(), slow, want);
    assert_true(slow != MC_OK);
    assert_true(all_zero(f.dst, kLen));
  }
  /* Rights: a buffer peers may only read refuses WRITEs both ways (local: the fast path's own
   * refusal, the descriptor being stale; shm: the transport's, on the normal path). */
  assert_int_equal(mc_buffer_set_access(f.t, f.dst, MC_ACCESS_READ), MC_OK);
  mc_request_t w = {MC_WRITE, 0, f.src, f.seg, d, 8};
  assert_int_equal(mc_transfer(f.e, &w, 1, tu_wait_ms(5000)), MC_ERR_DENIED);
  char got[512];
  snprintf(got, sizeof got, "%s", mc_last_error());
  assert_int_equal(slow_one(f.e, &w, want, sizeof want), MC_ERR_DENIED);
  assert_string_equal(got, want);
  assert_true(all_zero(f.dst, kLen));
  /* A READ still goes. */
  mc_request_t r = {MC_READ, 0, f.src, f.seg, d, 8};
  assert_int_equal(mc_transfer(f.e, &r, 1, tu_wait_ms(5000)), MC_OK);
  assert_true(all_zero(f.src, 8));
  fx_down(&f);
}

static void test_errors_local(void **state) {
  (void)state;
  errors_match(0);
}

static void test_errors_shm(void **state) {
  (void)state;
  errors_match(1);
}

/* ------------------------------------------------------------------ counters */

static char *stats(mc_engine_t *e) {
  static char buf[1 << 16];
  size_t need;
  assert_int_equal(mc_engine_stats_json(e, buf, sizeof buf, &need), MC_OK);
  return buf;
}

/* The number after key, searched from the first occurrence of `after` (NULL: the start). */
static uint64_t num(const char *js, const char *after, const char *key) {
  const char *p = after ? strstr(js, after) : js;
  if (!p) fail_msg("no %s in %s", after, js);
  char k[128];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *q = strstr(p, k);
  if (!q) fail_msg("no %s after %s in %s", key, after ? after : "the start", js);
  return strtoull(q + strlen(k), NULL, 10);
}

enum { kFigures = 13 };

/* Every figure the two paths must move alike. */
static void figures(mc_engine_t *e, int shm, uint64_t *v) {
  const char *s = stats(e);
  const char *tx = shm ? "{\"transport\":\"shm\",\"direction\":\"" : "{\"transport\":\"local\",\"direction\":\"";
  char wr[96], rd[96];
  snprintf(wr, sizeof wr, "%swrite\"", tx);
  snprintf(rd, sizeof rd, "%sread\"", tx);
  v[0] = num(s, NULL, "requests_completed");
  v[1] = num(s, NULL, "requests_failed");
  v[2] = num(s, NULL, "bytes_written");
  v[3] = num(s, NULL, "bytes_read");
  v[4] = num(s, wr, "completed");
  v[5] = num(s, wr, "failed");
  v[6] = num(s, rd, "bytes");
  v[7] = num(s, "\"batch_latency\"", "count");
  v[8] = num(s, "\"failed\":{\"count\"", "count");
  v[9] = num(s, shm ? "\"shm\":{" : "\"local\":{", "slices_completed");
  v[10] = num(s, shm ? "\"shm\":{" : "\"local\":{", "slices_failed");
  v[11] = num(s, shm ? "\"shm\":{" : "\"local\":{", "bytes_copied");
  v[12] = shm ? num(s, "\"shm\":{", "bytes_cma") : 0;
}

/* n WRITEs and n READs of 8..15 bytes, then (local only) n WRITEs refused DENIED. */
static void traffic(struct fx *f, int n, int fast) {
  for (int k = 0; k < 2 * n; k++) {
    mc_request_t r = {k < n ? MC_WRITE : MC_READ, 0, f->src + (k % 32) * 64, f->seg,
                      (uint64_t)(uintptr_t)(f->dst + (k % 32) * 64), 8 + (uint64_t)(k % 8)};
    char msg[512];
    assert_int_equal(fast ? mc_transfer(f->e, &r, 1, tu_wait_ms(5000)) : slow_one(f->e, &r, msg, sizeof msg),
                     MC_OK);
  }
  if (f->shm) return;
  assert_int_equal(mc_buffer_set_access(f->t, f->dst + kLen / 2, MC_ACCESS_READ), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_buffer_set_access(f->t, f->dst, MC_ACCESS_READ), MC_OK);
  for (int k = 0; k < n; k++) {
    mc_request_t r = {MC_WRITE, 0, f->src, f->seg, (uint64_t)(uintptr_t)f->dst, 8};
    char msg[512];
    assert_int_equal(fast ? mc_transfer(f->e, &r, 1, tu_wait_ms(5000)) : slow_one(f->e, &r, msg, sizeof msg),
                     MC_ERR_DENIED);
  }
  assert_int_equal(mc_buffer_set_access(f->t, f->dst, MC_ACCESS_READ | MC_ACCESS_WRITE), MC_OK);
}

static void counts_match(int shm) {
  const int n = 500;
  struct fx f;
  fx_up(&f, shm);
  uint64_t a[kFigures], b[kFigures], c[kFigures];
  figures(f.e, shm, a);
  traffic(&f, n, 1);
  figures(f.e, shm, b);
  traffic(&f, n, 0);
  figures(f.e, shm, c);
  for (int i = 0; i < kFigures; i++) {
    print_message("figure %d: fast +%llu, normal +%llu\n", i, (unsigned long long)(b[i] - a[i]),
                  (unsigned long long)(c[i] - b[i]));
    if (b[i] - a[i] != c[i] - b[i]) fail_msg("figure %d moved %llu on the fast path, %llu on the normal one", i,
                                              (unsigned long long)(b[i] - a[i]), (unsigned long long)(c[i] - b[i]));
  }
  assert_int_equal(b[0] - a[0], 2 * n);  /* not both zero */
  if (!shm) assert_int_equal(b[1] - a[1], n);
  fx_down(&f);
}

static void test_counts_local(void **state) {
  (void)state;
  counts_match(0);
}

static void test_counts_shm(void **state) {
  (void)state;
  counts_match(1);
}

/* ------------------------------------------------------------------ races */

struct racer {
  mc_engine_t *e;
  mc_request_t r;
  int stamp; /* WRITE a counter: the local bytes change before each transfer */
  atomic_int stop;
  atomic_llong ok, refused, other;
  mc_status_t last_other;
};

static void *race_loop(void *arg) {
  struct racer *x = arg;
  uint64_t k = 0;
  while (!atomic_load(&x->stop)) {
    if (x->stamp) memcpy(x->r.local, &k, sizeof k);
    k++;
    mc_status_t st = mc_transfer(x->e, &x->r, 1, tu_wait_ms(5000));
    if (st == MC_OK) {
      atomic_fetch_add(&x->ok, 1);
    } else if (st == MC_ERR_OUT_OF_RANGE || st == MC_ERR_DENIED) {
      atomic_fetch_add(&x->refused, 1);
    } else {
      x->last_other = st;
      atomic_fetch_add(&x->other, 1);
    }
  }
  return NULL;
}

/* The local buffer (and, over local, the target buffer) is unregistered and made inaccessible
 * (PROT_NONE) while fast copies use it: an unregister that returns MC_OK means no copy holds it,
 * so no copy may touch the page until it is readable and registered again (a copy that did
 * would fault, or its cross-memory attach fail). Many times over. */
static void unregister_race(int shm, int target_side) {
  struct fx f;
  fx_up(&f, shm);
  char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(m != MAP_FAILED);
  mc_engine_t *owner = target_side ? f.t : f.e;
  assert_int_equal(mc_buffer_register(owner, m, 4096, "cpu"), MC_OK);
  struct racer x = {.e = f.e};
  x.r = target_side ? (mc_request_t){MC_WRITE, 0, f.src, f.seg, (uint64_t)(uintptr_t)m, 8}
                    : (mc_request_t){MC_WRITE, 0, m, f.seg, (uint64_t)(uintptr_t)f.dst, 8};
  if (target_side) x.r.local = f.src + 128;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, race_loop, &x), 0);
  int gone = 0, busy = 0;
  uint64_t t0 = tu_now_ms();
  while (gone < 200 && tu_now_ms() - t0 < tu_slack_ms(10000)) {
    mc_status_t st = mc_buffer_unregister(owner, m);
    if (st == MC_ERR_BUSY) {
      busy++;
      continue;
    }
    assert_int_equal(st, MC_OK);
    assert_int_equal(mprotect(m, 4096, PROT_NONE), 0);
    usleep(50);
    assert_int_equal(mprotect(m, 4096, PROT_READ | PROT_WRITE), 0);
    assert_int_equal(mc_buffer_register(owner, m, 4096, "cpu"), MC_OK);
    gone++;
    usleep(50);
  }
  atomic_store(&x.stop, 1);
  pthread_join(th, NULL);
  print_message("%s %s side: %d unregistered, %d busy; transfers %lld ok, %lld refused, %lld other (last %d)\n",
                shm ? "shm" : "local", target_side ? "target" : "initiator", gone, busy, (long long)x.ok,
                (long long)x.refused, (long long)x.other, x.last_other);
  assert_true(gone > 0);
  assert_int_equal(x.other, 0);
  assert_true(x.ok > 0);
  assert_int_equal(mc_buffer_unregister(owner, m), MC_OK);
  munmap(m, 4096);
  fx_down(&f);
}

static void test_unregister_local_initiator(void **state) {
  (void)state;
  unregister_race(0, 0);
}

static void test_unregister_local_target(void **state) {
  (void)state;
  unregister_race(0, 1);
}

static void test_unregister_shm_initiator(void **state) {
  (void)state;
  unregister_race(1, 0);
}

/* Fast WRITEs of a counter into the target while its rights flip between read-write and
 * read-only: every transfer ends OK or DENIED, and while the buffer is read-only (after
 * mc_buffer_set_access returned) its bytes do not change. */
static void access_race(int shm) {
  struct fx f;
  fx_up(&f, shm);
  struct racer x = {.e = f.e, .r = {MC_WRITE, 0, f.src, f.seg, (uint64_t)(uintptr_t)f.dst, 8}, .stamp = 1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, race_loop, &x), 0);
  int flips = 0;
  for (; flips < 100; flips++) {
    usleep(200);
    assert_int_equal(mc_buffer_set_access(f.t, f.dst, MC_ACCESS_READ), MC_OK);
    uint64_t before;
    memcpy(&before, f.dst, 8);
    usleep(500);
    uint64_t after;
    memcpy(&after, f.dst, 8);
    if (before != after) fail_msg("flip %d: a WRITE landed in a read-only buffer (%llu -> %llu)", flips,
                                  (unsigned long long)before, (unsigned long long)after);
    assert_int_equal(mc_buffer_set_access(f.t, f.dst, MC_ACCESS_READ | MC_ACCESS_WRITE), MC_OK);
  }
  atomic_store(&x.stop, 1);
  pthread_join(th, NULL);
  print_message("%s: %d flips; WRITEs %lld ok, %lld refused, %lld other (last %d)\n", shm ? "shm" : "local", flips,
                (long long)x.ok, (long long)x.refused, (long long)x.other, x.last_other);
  assert_int_equal(x.other, 0);
  assert_true(x.ok > 0);
  fx_down(&f);
}

static void test_access_race_local(void **state) {
  (void)state;
  access_race(0);
}

static void test_access_race_shm(void **state) {
  (void)state;
  access_race(1);
}

/* ------------------------------------------------------------------ a target process killed */

static pid_t g_child;

static int kill_child(void **state) {
  (void)state;
  if (g_child > 0) {
    kill(g_child, SIGKILL);
    waitpid(g_child, NULL, 0);
    g_child = 0;
  }
  return 0;
}

/* helper_shm (tests/helper_shm.c) in a child: its segment name and its two buffers' addresses. */
static void start_helper(char *name, size_t cap, uint64_t *alloc, uint64_t *plain) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  assert_true(n > 0);
  exe[n] = 0;
  char helper[PATH_MAX + 32];
  snprintf(helper, sizeof helper, "%s/helper_shm", dirname(exe));
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execl(helper, helper, "65536", "21", "listen=127.0.0.1:0", "timeout_ms=2000", (char *)NULL);
    _exit(127);
  }
  g_child = pid;
  close(fds[1]);
  FILE *fp = fdopen(fds[0], "r");
  char line[400];
  assert_non_null(fgets(line, sizeof line, fp));
  assert_int_equal(strncmp(line, "segment: ", 9), 0);
  line[strcspn(line, "\n")] = 0;
  snprintf(name, cap, "%.319s", line + 9);
  assert_non_null(fgets(line, sizeof line, fp));
  *alloc = strtoull(line + 7, NULL, 16);
  assert_non_null(fgets(line, sizeof line, fp));
  *plain = strtoull(line + 7, NULL, 16);
  fclose(fp);
}

struct death {
  mc_engine_t *e;
  mc_request_t r;
  atomic_int stop;
  atomic_llong ok, down, bad;
};

static void *death_loop(void *arg) {
  struct death *d = arg;
  while (!atomic_load(&d->stop)) {
    mc_status_t st = mc_transfer(d->e, &d->r, 1, tu_wait_ms(5000));
    if (st == MC_OK)
      atomic_fetch_add(&d->ok, 1);
    else if (st == MC_ERR_PEER_DOWN || st == MC_ERR_TRANSPORT)
      atomic_fetch_add(&d->down, 1);
    else
      atomic_fetch_add(&d->bad, 1);
  }
  return NULL;
}

/* The count of failures with status name (0 when none). */
static uint64_t failures_of(const char *js, const char *name) {
  const char *f = strstr(js, "\"failures\":{");
  assert_non_null(f);
  const char *end = strchr(f, '}');
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", name);
  const char *q = strstr(f, k);
  return q && q < end ? strtoull(q + strlen(k), NULL, 10) : 0;
}

/* Small WRITEs into a target's mapped memfd and READs from its plain buffer (cross-memory attach)
 * run in two threads while the target process is SIGKILLed: every transfer ends MC_OK or
 * MC_ERR_PEER_DOWN (MC_ERR_TRANSPORT for an attach that failed otherwise), none hangs or faults;
 * the segment goes UNREACHABLE and later transfers fail at once. Every MC_OK was counted as a
 * completed request, and every counted failure is one of those two statuses. */
static void test_peer_killed(void **state) {
  (void)state;
  char name[320];
  uint64_t alloc, plain;
  start_helper(name, sizeof name, &alloc, &plain);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", "heartbeat_ms", "200", NULL);
  char *l = aligned_alloc(4096, 4096);
  assert_int_equal(mc_buffer_register(e, l, 4096, "cpu"), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, name, &s), MC_OK);
  mc_request_t warm = {MC_READ, 0, l, s, alloc, 64};
  assert_int_equal(mc_transfer(e, &warm, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(tu_check(l, 64, 21), -1);
  warm.remote = plain;
  assert_int_equal(mc_transfer(e, &warm, 1, tu_wait_ms(5000)), MC_OK);
  struct death d[2] = {{.e = e, .r = {MC_WRITE, 0, l, s, alloc + 64, 8}},
                       {.e = e, .r = {MC_READ, 0, l + 64, s, plain + 64, 8}}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, death_loop, &d[i]), 0);
  usleep(20000);
  kill(g_child, SIGKILL);
  waitpid(g_child, NULL, 0);
  g_child = 0;
  uint64_t t0 = tu_now_ms();
  mc_segment_info_t info = {.size = sizeof info};
  for (;;) {
    assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
    if (info.state == MC_SEGMENT_UNREACHABLE) break;
    assert_true(tu_now_ms() - t0 < tu_slack_ms(4000));
    usleep(1000);
  }
  usleep(10000);
  for (int i = 0; i < 2; i++) {
    atomic_store(&d[i].stop, 1);
    pthread_join(th[i], NULL);
  }
  const char *js = stats(e);
  uint64_t failed = num(js, NULL, "requests_failed");
  print_message("peer death: unreachable after %llu ms; WRITEs %lld ok %lld down, READs %lld ok %lld down; "
                "counted failed %llu\n",
                (unsigned long long)(tu_now_ms() - t0), (long long)d[0].ok, (long long)d[0].down, (long long)d[1].ok,
                (long long)d[1].down, (unsigned long long)failed);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(d[i].bad, 0);
    assert_true(d[i].ok > 0 && d[i].down > 0);
  }
  assert_int_equal(num(js, NULL, "requests_completed"), 2 + d[0].ok + d[1].ok);
  assert_true(failed <= (uint64_t)(d[0].down + d[1].down));
  assert_int_equal(failed, failures_of(js, "MC_ERR_PEER_DOWN") + failures_of(js, "MC_ERR_TRANSPORT"));
  uint64_t t1 = tu_now_ms();
  assert_int_equal(mc_transfer(e, &d[0].r, 1, tu_wait_ms(5000)), MC_ERR_PEER_DOWN);
  assert_true(tu_now_ms() - t1 < tu_slack_ms(100));
  mc_segment_close(e, s);
  mc_engine_destroy(e);
  free(l);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_errors_local),
      cmocka_unit_test(test_errors_shm),
      cmocka_unit_test(test_counts_local),
      cmocka_unit_test(test_counts_shm),
      cmocka_unit_test(test_unregister_local_initiator),
      cmocka_unit_test(test_unregister_local_target),
      cmocka_unit_test(test_unregister_shm_initiator),
      cmocka_unit_test(test_access_race_local),
      cmocka_unit_test(test_access_race_shm),
      cmocka_unit_test_teardown(test_peer_killed, kill_child),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
