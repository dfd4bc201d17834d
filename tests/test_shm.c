/* The same-host transport between two processes: both memory kinds verified, batches of
 * scattered small requests (bulk completion), refusals write
 * nothing, a peer killed while mapped, a peer restarted under the same name, automatic choice,
 * and transports=tcp still working on one host. */
#define _GNU_SOURCE
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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

/* Every helper still running, killed by each test's teardown even when an assert failed. */
static pid_t g_children[16];

static int kill_children(void **state) {
  (void)state;
  for (int i = 0; i < 16; i++)
    if (g_children[i] > 0) {
      kill(g_children[i], SIGKILL);
      waitpid(g_children[i], NULL, 0);
      g_children[i] = 0;
    }
  return 0;
}

struct target {
  pid_t pid;
  char name[320];
  uint64_t alloc, plain;
};

static void start_target(struct target *t, size_t size, uint64_t seed, const char *listen) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  assert_true(n > 0);
  exe[n] = 0;
  char helper[PATH_MAX + 32];
  snprintf(helper, sizeof helper, "%s/helper_shm", dirname(exe));
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  char sz[32], sd[32], ls[300];
  snprintf(sz, sizeof sz, "%zu", size);
  snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
  snprintf(ls, sizeof ls, "listen=%s", listen ? listen : "127.0.0.1:0");
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execl(helper, helper, sz, sd, ls, "timeout_ms=2000", (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 16; i++)
    if (g_children[i] == 0) {
      g_children[i] = pid;
      break;
    }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[300];
  assert_non_null(fgets(line, sizeof line, f));
  assert_int_equal(strncmp(line, "segment: ", 9), 0);
  line[strcspn(line, "\n")] = 0;
  snprintf(t->name, sizeof t->name, "%s", line + 9);
  assert_non_null(fgets(line, sizeof line, f));
  t->alloc = strtoull(line + 7, NULL, 16);
  assert_non_null(fgets(line, sizeof line, f));
  t->plain = strtoull(line + 7, NULL, 16);
  fclose(f);
  t->pid = pid;
}

static void stop_target(struct target *t, int sig) {
  if (t->pid <= 0) return;
  kill(t->pid, sig);
  waitpid(t->pid, NULL, 0);
  for (int i = 0; i < 16; i++)
    if (g_children[i] == t->pid) g_children[i] = 0;
  t->pid = 0;
}

static char *stats(mc_engine_t *e) {
  static char buf[1 << 16];
  size_t need;
  assert_int_equal(mc_engine_stats_json(e, buf, sizeof buf, &need), MC_OK);
  return buf;
}

static uint64_t stat_u64(const char *js, const char *obj, const char *key) {
  const char *o = strstr(js, obj);
  assert_non_null(o);
  const char *k = strstr(o, key);
  assert_non_null(k);
  return strtoull(k + strlen(key) + 1, NULL, 10);
}

static void roundtrip(mc_engine_t *e, mc_segment_t s, char *l, uint64_t remote, size_t len,
                      uint64_t expect_seed, uint64_t new_seed) {
  /* READ the target's pattern, then WRITE a new one and READ it back. */
  memset(l, 0, len);
  mc_request_t r = {MC_READ, 0, l, s, remote, len};
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(l, len, expect_seed), -1);
  tu_fill(l, len, new_seed);
  mc_request_t w[8];
  for (int i = 0; i < 8; i++) w[i] = (mc_request_t){MC_WRITE, 0, l + i * (len / 8), s, remote + i * (len / 8), len / 8};
  assert_int_equal(mc_transfer(e, w, 8, tu_wait_ms(10000)), MC_OK);
  memset(l, 0, len);
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(l, len, new_seed), -1);
}

static void test_both_memory_kinds(void **state) {
  (void)state;
  size_t len = 16 << 20;
  struct target t;
  start_target(&t, len, 10, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", NULL);
  void *l = NULL;
  assert_int_equal(mc_buffer_alloc(e, len, NULL, &l), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
  assert_string_equal(info.transport, "shm"); /* chosen by itself on one host */
  assert_int_equal(info.buffer_count, 2);
  roundtrip(e, s, l, t.alloc, len, 10, 20);
  roundtrip(e, s, l, t.plain, len, 11, 21);
  /* Small requests too, and odd sizes. */
  size_t sizes[] = {1, 8, 4095, 65537};
  for (int i = 0; i < 4; i++) {
    tu_fill(l, sizes[i], 40 + i);
    mc_request_t w = {MC_WRITE, 0, l, s, t.alloc + 4096 * i, sizes[i]};
    assert_int_equal(mc_transfer(e, &w, 1, tu_wait_ms(10000)), MC_OK);
    memset(l, 0, sizes[i]);
    mc_request_t r = {MC_READ, 0, l, s, t.alloc + 4096 * i, sizes[i]};
    assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_OK);
    assert_int_equal(tu_check(l, sizes[i], 40 + i), -1);
  }
  /* The bytes went through shm (memcpy for the memfd buffer, CMA for the plain one), not TCP. */
  char *js = stats(e);
  assert_true(stat_u64(js, "\"shm\":{", "\"bytes_copied\"") >= 3 * len);
  assert_true(stat_u64(js, "\"shm\":{", "\"bytes_cma\"") >= 3 * len);
  assert_int_equal(stat_u64(js, "\"tcp\":{", "\"bytes_sent\""), 0);
  /* mc_buffer_unregister refuses alloc memory; mc_buffer_free releases it. */
  assert_int_equal(mc_buffer_unregister(e, l), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_free(e, (char *)l + 1), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_buffer_free(e, l), MC_OK);
  assert_int_equal(mc_buffer_free(e, l), MC_ERR_NOT_FOUND);
  stop_target(&t, SIGTERM);
  mc_engine_destroy(e);
}

/* Batches of many small requests that are not adjacent (so each is a slice of its own, and the
 * batch ends through the engine's bulk completion), READs and WRITEs mixed in one batch, on both
 * memory kinds: every byte lands, every request ends COMPLETED, and the engine's counters grow
 * by exactly the requests and bytes moved. */
static void test_scattered_small_requests(void **state) {
  (void)state;
  enum { kN = 64, kLen = 1000, kStride = 4096 };
  struct target t;
  start_target(&t, 1 << 20, 12, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", NULL);
  char *l = NULL;
  assert_int_equal(mc_buffer_alloc(e, 4 * kN * kStride, NULL, (void **)&l), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  uint64_t bases[2] = {t.alloc, t.plain};
  for (int kind = 0; kind < 2; kind++) {
    const uint64_t rb = bases[kind];
    char *js = stats(e);
    const uint64_t done0 = stat_u64(js, "\"incarnation\"", "\"requests_completed\"");
    const uint64_t wr0 = stat_u64(js, "\"incarnation\"", "\"bytes_written\"");
    const uint64_t rd0 = stat_u64(js, "\"incarnation\"", "\"bytes_read\"");
    mc_request_t r[kN];
    for (int i = 0; i < kN; i++) {
      tu_fill(l + i * kStride, kLen, 100 + kind * kN + i);
      r[i] = (mc_request_t){MC_WRITE, 0, l + i * kStride, s, rb + (uint64_t)(kN - 1 - i) * kStride, kLen};
    }
    mc_batch_t *b = NULL;
    assert_int_equal(mc_batch_create(e, 2 * kN, &b), MC_OK);
    assert_int_equal(mc_batch_submit(b, r, kN), MC_OK);
    assert_int_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_OK);
    for (int i = 0; i < kN; i++) {
      mc_request_status_t st;
      assert_int_equal(mc_batch_status(b, (size_t)i, &st), MC_OK);
      assert_int_equal(st.state, MC_REQUEST_COMPLETED);
      assert_int_equal(st.error, MC_OK);
      assert_int_equal(st.bytes, kLen);
    }
    assert_int_equal(mc_batch_reset(b), MC_OK);
    /* Mixed: even requests READ back what was written, odd ones WRITE a second pattern to new
     * places; then everything is read back and checked. */
    char *back = l + 2 * kN * kStride;
    memset(back, 0, (size_t)kN * kStride);
    for (int i = 0; i < kN; i++) {
      const uint64_t rem = rb + (uint64_t)(kN - 1 - i) * kStride;
      if (i % 2 == 0) {
        r[i] = (mc_request_t){MC_READ, 0, back + i * kStride, s, rem, kLen};
      } else {
        tu_fill(l + i * kStride, kLen, 500 + kind * kN + i);
        r[i] = (mc_request_t){MC_WRITE, 0, l + i * kStride, s, rem + 2048, kLen};
      }
    }
    assert_int_equal(mc_batch_submit(b, r, kN), MC_OK);
    assert_int_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_OK);
    for (int i = 0; i < kN; i += 2) assert_int_equal(tu_check(back + i * kStride, kLen, 100 + kind * kN + i), -1);
    for (int i = 1; i < kN; i += 2) {
      mc_request_t rr = {MC_READ, 0, back + i * kStride, s, rb + (uint64_t)(kN - 1 - i) * kStride + 2048, kLen};
      assert_int_equal(mc_transfer(e, &rr, 1, tu_wait_ms(10000)), MC_OK);
      assert_int_equal(tu_check(back + i * kStride, kLen, 500 + kind * kN + i), -1);
    }
    assert_int_equal(mc_batch_destroy(b), MC_OK);
    js = stats(e);
    /* 64 WRITEs, then 32 READs + 32 WRITEs, then 32 single READs */
    assert_int_equal(stat_u64(js, "\"incarnation\"", "\"requests_completed\"") - done0, 2 * kN + kN / 2);
    assert_int_equal(stat_u64(js, "\"incarnation\"", "\"bytes_written\"") - wr0, (kN + kN / 2) * kLen);
    assert_int_equal(stat_u64(js, "\"incarnation\"", "\"bytes_read\"") - rd0, kN * kLen);
  }
  assert_int_equal(mc_buffer_free(e, l), MC_OK);
  stop_target(&t, SIGTERM);
  mc_engine_destroy(e);
}

/* Requests of one slice that are too large to copy on the submitting thread alone (256 KiB to
 * the 1 MiB slice size) are cut into pieces that the submitting thread and a worker copy side by
 * side; each request still ends once, with every byte in place, on both memory kinds. */
static void test_single_slice_split(void **state) {
  (void)state;
  const size_t sizes[] = {256 * 1024 + 1, 300 * 1024, 700001, (1 << 20) - 1, 1 << 20};
  struct target t;
  start_target(&t, 4 << 20, 13, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", NULL);
  char *l = NULL;
  assert_int_equal(mc_buffer_alloc(e, 4 << 20, NULL, (void **)&l), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  uint64_t bases[2] = {t.alloc, t.plain};
  for (int kind = 0; kind < 2; kind++) {
    for (int round = 0; round < 20; round++) {
      for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const size_t n = sizes[k];
        const uint64_t seed = 900 + (uint64_t)(kind * 1000 + round * 10 + (int)k);
        const uint64_t rem = bases[kind] + (uint64_t)(k % 2) * (2 << 20) + 64 * (uint64_t)round;
        tu_fill(l, n, seed);
        mc_request_t w = {MC_WRITE, 0, l, s, rem, n};
        assert_int_equal(mc_transfer(e, &w, 1, tu_wait_ms(10000)), MC_OK);
        memset(l + (2 << 20), 0, n);
        mc_request_t r = {MC_READ, 0, l + (2 << 20), s, rem, n};
        assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_OK);
        assert_int_equal(tu_check(l + (2 << 20), n, seed), -1);
      }
    }
  }
  assert_int_equal(mc_buffer_free(e, l), MC_OK);
  stop_target(&t, SIGTERM);
  mc_engine_destroy(e);
}

/* A batch of small requests that adds up to a large copy (here 12 requests, 64 KiB, 40000 bytes
 * and 1000 bytes, about 600 KiB) is shared by halves between the submitting thread and a
 * worker; every request still ends COMPLETED with every byte in place, written and read back,
 * on both memory kinds. */
static void test_batch_shared_by_halves(void **state) {
  (void)state;
  enum { kN = 12, kStride = 128 * 1024 };
  const size_t lens[3] = {64 * 1024, 40000, 1000};
  struct target t;
  start_target(&t, 4 << 20, 14, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", NULL);
  char *l = NULL;
  assert_int_equal(mc_buffer_alloc(e, 2 * kN * kStride, NULL, (void **)&l), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  uint64_t bases[2] = {t.alloc, t.plain};
  char *back = l + kN * kStride;
  for (int kind = 0; kind < 2; kind++) {
    for (int round = 0; round < 10; round++) {
      mc_request_t r[kN];
      for (int i = 0; i < kN; i++) {
        const size_t n = lens[i % 3];
        tu_fill(l + i * kStride, n, 2000 + (uint64_t)(kind * 1000 + round * kN + i));
        r[i] = (mc_request_t){MC_WRITE, 0, l + i * kStride, s, bases[kind] + (uint64_t)(kN - 1 - i) * kStride + 64 * (uint64_t)round, n};
      }
      assert_int_equal(mc_transfer(e, r, kN, tu_wait_ms(10000)), MC_OK);
      /* READ them back in one batch */
      memset(back, 0, (size_t)kN * kStride);
      for (int i = 0; i < kN; i++) {
        r[i].opcode = MC_READ;
        r[i].local = back + i * kStride;
      }
      assert_int_equal(mc_transfer(e, r, kN, tu_wait_ms(10000)), MC_OK);
      for (int i = 0; i < kN; i++)
        assert_int_equal(tu_check(back + i * kStride, lens[i % 3], 2000 + (uint64_t)(kind * 1000 + round * kN + i)), -1);
    }
  }
  assert_int_equal(mc_buffer_free(e, l), MC_OK);
  stop_target(&t, SIGTERM);
  mc_engine_destroy(e);
}

/* Bursts of the same call of 8 requests of 64 KiB (512 KiB, the size a worker shares by halves),
 * WRITE then READ back, each burst checked: at least one, then more until the engine's shm stats
 * count *want* calls shared by halves or the time is up; returns the calls it counted. */
static uint64_t halves_bursts(mc_engine_t *e, mc_segment_t s, char *l, uint64_t base, uint64_t want,
                              uint64_t seed) {
  enum { kN = 8, kLen = 64 * 1024 };
  char *back = l + kN * kLen;
  const uint64_t before = stat_u64(stats(e), "\"shm\":{", "\"halves_shared\"");
  uint64_t got = 0;
  const uint64_t until = tu_now_ms() + tu_slack_ms(10000);
  for (int burst = 0; burst == 0 || (got < want && tu_now_ms() < until); burst++) {
    mc_request_t r[kN];
    for (int i = 0; i < kN; i++) {
      tu_fill(l + i * kLen, kLen, seed + (uint64_t)(burst * kN + i));
      /* every other request lands in reverse order: halves of slices that do not continue */
      r[i] = (mc_request_t){MC_WRITE, 0, l + i * kLen, s, base + (uint64_t)(i ^ 1) * kLen, kLen};
    }
    for (int k = 0; k < 100; k++) assert_int_equal(mc_transfer(e, r, kN, tu_wait_ms(10000)), MC_OK);
    for (int k = 0; k < 100; k++) {
      memset(back, 0, (size_t)kN * kLen);
      for (int i = 0; i < kN; i++) {
        r[i].opcode = MC_READ;
        r[i].local = back + i * kLen;
      }
      assert_int_equal(mc_transfer(e, r, kN, tu_wait_ms(10000)), MC_OK);
      if (k % 50 == 49)
        for (int i = 0; i < kN; i++) assert_int_equal(tu_check(back + i * kLen, kLen, seed + (uint64_t)(burst * kN + i)), -1);
      for (int i = 0; i < kN; i++) {
        r[i].opcode = MC_WRITE;
        r[i].local = l + i * kLen;
      }
    }
    got = stat_u64(stats(e), "\"shm\":{", "\"halves_shared\"") - before;
  }
  return got;
}

/* shm_share=always: calls of 64 KiB requests are shared by halves with a watching worker (the
 * stats count them), and every byte lands, on both memory kinds; shm_share=never: none is, and
 * the bytes land all the same. A value other than auto, always or never is refused. */
static void test_share_always_and_never(void **state) {
  (void)state;
  mc_config_t *cfg = NULL;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "shm_share", "sometimes"), MC_ERR_INVALID_ARG);
  assert_non_null(strstr(mc_last_error(), "shm_share"));
  mc_config_destroy(cfg);
  struct target t;
  start_target(&t, 4 << 20, 15, NULL);
  const char *modes[2] = {"always", "never"};
  for (int m = 0; m < 2; m++) {
    mc_engine_t *e = tu_engine("timeout_ms", "2000", "shm_share", modes[m], NULL);
    char *l = NULL;
    assert_int_equal(mc_buffer_alloc(e, 2 << 20, NULL, (void **)&l), MC_OK);
    mc_segment_t s;
    assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
    uint64_t bases[2] = {t.alloc, t.plain};
    for (int kind = 0; kind < 2; kind++) {
      const uint64_t got = halves_bursts(e, s, l, bases[kind], m == 0 ? 20 : 0, 5000 + (uint64_t)(m * 100000 + kind * 50000));
      if (m == 0)
        assert_true(got >= 20);
      else
        assert_int_equal(got, 0);
    }
    assert_int_equal(mc_buffer_free(e, l), MC_OK);
    mc_engine_destroy(e);
  }
  stop_target(&t, SIGTERM);
}

static void test_out_of_range(void **state) {
  (void)state;
  size_t len = 1 << 20;
  struct target t;
  start_target(&t, len, 5, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", NULL);
  void *l = NULL;
  assert_int_equal(mc_buffer_alloc(e, 2 * len, NULL, &l), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  /* Past the end of each buffer: refused before anything moves. */
  mc_request_t w1 = {MC_WRITE, 0, l, s, t.alloc + len - 16, 32};
  mc_request_t w2 = {MC_WRITE, 0, l, s, t.plain + len - 16, 32};
  mc_request_t w3 = {MC_WRITE, 0, l, s, t.alloc - 16, 32};
  assert_int_equal(mc_transfer(e, &w1, 1, tu_wait_ms(5000)), MC_ERR_OUT_OF_RANGE);
  assert_int_equal(mc_transfer(e, &w2, 1, tu_wait_ms(5000)), MC_ERR_OUT_OF_RANGE);
  assert_int_equal(mc_transfer(e, &w3, 1, tu_wait_ms(5000)), MC_ERR_OUT_OF_RANGE);
  /* The target's patterns are intact. */
  mc_request_t r = {MC_READ, 0, l, s, t.alloc, len};
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(tu_check(l, len, 5), -1);
  r.remote = t.plain;
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(tu_check(l, len, 6), -1);
  stop_target(&t, SIGTERM);
  mc_engine_destroy(e);
}

static void test_killed_while_mapped(void **state) {
  (void)state;
  size_t len = 8 << 20;
  struct target t;
  start_target(&t, len, 7, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", "heartbeat_ms", "200", NULL);
  void *l = NULL;
  assert_int_equal(mc_buffer_alloc(e, len, NULL, &l), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  mc_request_t r = {MC_READ, 0, l, s, t.alloc, len};
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(5000)), MC_OK); /* mapped now */
  stop_target(&t, SIGKILL);
  uint64_t t0 = tu_now_ms();
  /* No SIGBUS, no hang: requests fail with PEER_DOWN and the segment becomes unreachable. */
  mc_status_t st = MC_OK;
  mc_segment_info_t info = {.size = sizeof info};
  for (;;) {
    st = mc_transfer(e, &r, 1, tu_wait_ms(5000));
    assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
    if (st != MC_OK && info.state == MC_SEGMENT_UNREACHABLE) break;
    assert_true(tu_now_ms() - t0 < tu_slack_ms(3000));
    usleep(5000);
  }
  assert_int_equal(st, MC_ERR_PEER_DOWN);
  print_message("peer death seen after %llu ms\n", (unsigned long long)(tu_now_ms() - t0));
  /* New submits fail at once while unreachable. */
  uint64_t t1 = tu_now_ms();
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(5000)), MC_ERR_PEER_DOWN);
  assert_true(tu_now_ms() - t1 < tu_slack_ms(100));
  mc_engine_destroy(e);
}

static void test_restart_same_name(void **state) {
  (void)state;
  size_t len = 4 << 20;
  struct target t;
  start_target(&t, len, 100, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", "heartbeat_ms", "100", NULL);
  void *l = NULL;
  assert_int_equal(mc_buffer_alloc(e, len, NULL, &l), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
  uint64_t inc0 = info.incarnation;
  uint64_t old_alloc = t.alloc;
  mc_request_t r = {MC_READ, 0, l, s, t.alloc, len};
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(tu_check(l, len, 100), -1);
  /* Restart under the same HOST:PORT with a different pattern (new buffer addresses too). */
  char name[320];
  snprintf(name, sizeof name, "%s", t.name);
  stop_target(&t, SIGKILL);
  start_target(&t, len, 200, name);
  assert_string_equal(t.name, name);
  /* The same handle keeps working once the health probe sees the new incarnation. */
  uint64_t t0 = tu_now_ms();
  for (;;) {
    assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
    if (info.incarnation != inc0 && info.state == MC_SEGMENT_OK) break;
    assert_true(tu_now_ms() - t0 < tu_slack_ms(5000));
    usleep(10000);
  }
  assert_int_equal(info.rejoins, 1);
  mc_request_t r2 = {MC_READ, 0, l, s, t.alloc, len};
  assert_int_equal(mc_transfer(e, &r2, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(tu_check(l, len, 200), -1);
  print_message("rejoin seen and used after %llu ms\n", (unsigned long long)(tu_now_ms() - t0));
  if (old_alloc != t.alloc) {
    /* A stale address (old incarnation's buffer) is refused, never written. */
    mc_request_t stale = {MC_WRITE, 0, l, s, old_alloc, 4096};
    assert_int_equal(mc_transfer(e, &stale, 1, tu_wait_ms(5000)), MC_ERR_OUT_OF_RANGE);
  }
  stop_target(&t, SIGTERM);
  mc_engine_destroy(e);
}

static void test_forced_tcp(void **state) {
  (void)state;
  size_t len = 4 << 20;
  struct target t;
  start_target(&t, len, 300, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", "transports", "tcp", NULL);
  char *l = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_int_equal(mc_buffer_register(e, l, len, NULL), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
  assert_string_equal(info.transport, "tcp");
  roundtrip(e, s, l, t.alloc, len, 300, 301);
  roundtrip(e, s, l, t.plain, len, 301, 302);
  char *js = stats(e);
  assert_true(stat_u64(js, "\"tcp\":{", "\"bytes_sent\"") >= 2 * len);
  assert_null(strstr(js, "\"shm\":{"));
  stop_target(&t, SIGTERM);
  mc_engine_destroy(e);
  munmap(l, len);
}

/* An engine whose transports leave tcp out still has its listener (control channel, descriptor,
 * health) and moves data over shm; its descriptor says it serves no tcp data, so a tcp-only
 * peer is refused at open with a message instead of failing at the first transfer. */
static void test_shm_only_engine(void **state) {
  (void)state;
  size_t len = 1 << 20;
  struct target t;
  start_target(&t, len, 310, NULL);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", "transports", "shm", NULL);
  assert_non_null(e);
  char *l = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_int_equal(mc_buffer_register(e, l, len, NULL), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
  assert_string_equal(info.transport, "shm");
  roundtrip(e, s, l, t.alloc, len, 310, 311);
  char *js = stats(e);
  assert_null(strstr(js, "\"tcp\":{"));
  assert_non_null(strstr(js, "\"control\":{"));
  mc_engine_t *f = tu_engine("timeout_ms", "2000", "transports", "tcp", NULL);
  mc_segment_t fs;
  assert_int_equal(mc_segment_open(f, mc_engine_name(e), &fs), MC_ERR_UNSUPPORTED);
  print_message("  tcp-only peer opening it: %s\n", mc_last_error());
  mc_engine_destroy(f);
  stop_target(&t, SIGTERM);
  mc_engine_destroy(e);
  munmap(l, len);
}

static void test_unregister_while_peer_copies(void **state) {
  (void)state;
  /* In one process: a peer engine copies into our alloc buffer over shm while we free it.
   * After mc_buffer_free returns, nothing lands in the memfd any more. */
  mc_engine_t *tgt = tu_engine(NULL);
  mc_engine_t *ini = tu_engine(NULL);
  size_t len = 1 << 20;
  void *tb = NULL, *lb = NULL;
  assert_int_equal(mc_buffer_alloc(tgt, len, NULL, &tb), MC_OK);
  assert_int_equal(mc_buffer_alloc(ini, len, NULL, &lb), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(ini, mc_engine_name(tgt), &s), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(ini, s, &info), MC_OK);
  assert_string_equal(info.transport, "shm");
  mc_request_t w = {MC_WRITE, 0, lb, s, (uint64_t)(uintptr_t)tb, len};
  assert_int_equal(mc_transfer(ini, &w, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(mc_buffer_free(tgt, tb), MC_OK);
  /* The initiator's descriptor is stale, but the shm path refuses the freed range. */
  assert_int_equal(mc_transfer(ini, &w, 1, tu_wait_ms(5000)), MC_ERR_OUT_OF_RANGE);
  mc_engine_destroy(ini);
  mc_engine_destroy(tgt);
}

/* Threads that do not grow with same-host peers. This process is a target and an initiator
 * for n peer engines (in a child: this program again, "peers" mode): each peer opens our
 * segment and reads from it over shm (our side serves its requests and its watch connection),
 * and we open each peer's segment and read from it (we watch each peer's socket). Our thread
 * count (/proc/self/task) is printed for 1, 10 and 100 peers; the shm part of it may not grow
 * by more than a fixed handful from 1 to 100 peers (before the shared same-host loop it grew
 * by 3 threads a peer: two served connections and one watcher). */
static int count_tasks(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    if (de->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static int run_peers(int n, const char *target, uint64_t addr) {
  mc_engine_t **es = calloc((size_t)n, sizeof *es);
  for (int i = 0; i < n; i++) {
    es[i] = tu_engine("timeout_ms", "5000", NULL);
    void *a = NULL;
    mc_request_t r = {MC_READ, 0, NULL, 0, addr, 4096};
    mc_segment_info_t info = {.size = sizeof info};
    if (!es[i] || mc_buffer_alloc(es[i], 4096, NULL, &a) != MC_OK || !(r.local = a) || mc_segment_open(es[i], target, &r.segment) != MC_OK ||
        mc_transfer(es[i], &r, 1, 10000) != MC_OK || mc_segment_query(es[i], r.segment, &info) != MC_OK ||
        strcmp(info.transport, "shm") != 0) {
      fprintf(stderr, "peer %d: %s (transport %s)\n", i, mc_last_error(), info.transport);
      return 1;
    }
    memset(a, i & 0xff, 4096);
    printf("%s %p\n", mc_engine_name(es[i]), a);
  }
  printf("ready\n");
  fflush(stdout);
  while (getchar() != EOF) {
  }
  for (int i = 0; i < n; i++) mc_engine_destroy(es[i]);
  free(es);
  return 0;
}

/* Our threads with n peers attached both ways, minus our threads before. */
static int threads_with_peers(mc_engine_t *e, void *buf, int n) {
  int before = count_tasks(getpid());
  char ns[16], ad[32];
  snprintf(ns, sizeof ns, "%d", n);
  snprintf(ad, sizeof ad, "%p", buf);
  int to_child;
  FILE *f = NULL;
  pid_t pid = tu_spawn_self(&to_child, &f, "peers", ns, mc_engine_name(e), ad, (char *)NULL);
  assert_true(pid > 0);
  for (int i = 0; i < 16; i++)
    if (g_children[i] == 0) {
      g_children[i] = pid;
      break;
    }
  char line[400];
  char *rb = NULL;
  assert_int_equal(mc_buffer_alloc(e, 4096, NULL, (void **)&rb), MC_OK);
  mc_segment_t *segs = calloc((size_t)n, sizeof *segs);
  for (int i = 0; i < n; i++) {
    assert_non_null(fgets(line, sizeof line, f));
    char name[320];
    void *pa = NULL;
    assert_int_equal(sscanf(line, "%319s %p", name, &pa), 2);
    assert_int_equal(mc_segment_open(e, name, &segs[i]), MC_OK);
    mc_request_t r = {MC_READ, 0, rb, segs[i], (uint64_t)(uintptr_t)pa, 4096};
    assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_OK);
    assert_int_equal(rb[100], (char)(i & 0xff));
    mc_segment_info_t info = {.size = sizeof info};
    assert_int_equal(mc_segment_query(e, segs[i], &info), MC_OK);
    assert_string_equal(info.transport, "shm");
  }
  assert_non_null(fgets(line, sizeof line, f));
  assert_string_equal(line, "ready\n");
  int after = count_tasks(getpid());
  printf("shm threads: %d peer(s): %d threads before, %d with the peers attached both ways (+%d)\n", n, before, after,
         after - before);
  for (int i = 0; i < n; i++) mc_segment_close(e, segs[i]);
  free(segs);
  assert_int_equal(mc_buffer_free(e, rb), MC_OK);
  close(to_child);
  fclose(f);
  waitpid(pid, NULL, 0);
  for (int i = 0; i < 16; i++)
    if (g_children[i] == pid) g_children[i] = 0;
  return after - before;
}

static void test_threads_constant_in_peers(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine("timeout_ms", "5000", NULL);
  void *buf = NULL;
  assert_int_equal(mc_buffer_alloc(e, 4096, NULL, &buf), MC_OK);
  int d1 = threads_with_peers(e, buf, 1);
  int d10 = threads_with_peers(e, buf, 10);
  int d100 = threads_with_peers(e, buf, 100);
  (void)d10;
  assert_true(d100 <= d1 + 8);
  mc_engine_destroy(e);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 5 && strcmp(argv[1], "peers") == 0)
    return run_peers(atoi(argv[2]), argv[3], strtoull(argv[4], NULL, 16));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_both_memory_kinds, kill_children),  cmocka_unit_test_teardown(test_scattered_small_requests, kill_children),
      cmocka_unit_test_teardown(test_single_slice_split, kill_children),
      cmocka_unit_test_teardown(test_batch_shared_by_halves, kill_children),
      cmocka_unit_test_teardown(test_share_always_and_never, kill_children),
      cmocka_unit_test_teardown(test_out_of_range, kill_children),
      cmocka_unit_test_teardown(test_killed_while_mapped, kill_children), cmocka_unit_test_teardown(test_restart_same_name, kill_children),
      cmocka_unit_test_teardown(test_forced_tcp, kill_children),
      cmocka_unit_test_teardown(test_shm_only_engine, kill_children),
      cmocka_unit_test_teardown(test_unregister_while_peer_copies, kill_children),
      cmocka_unit_test_teardown(test_threads_constant_in_peers, kill_children),
  };
  return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
