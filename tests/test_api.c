/* Public-API tests that need no second engine: version, status, config, buffers, segments,
 * batches and every bad input (each returns its error and changes nothing). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "testutil.h"

static void test_version(void **state) {
  (void)state;
  assert_int_equal(mc_version(), (MC_VERSION_MAJOR << 16) | (MC_VERSION_MINOR << 8) | MC_VERSION_PATCH);
  char buf[32];
  snprintf(buf, sizeof buf, "%d.%d.%d", MC_VERSION_MAJOR, MC_VERSION_MINOR, MC_VERSION_PATCH);
  assert_string_equal(mc_version_string(), buf);
}

static void test_status_strings(void **state) {
  (void)state;
  assert_string_equal(mc_status_str(MC_OK), "ok");
  for (int s = MC_OK; s >= MC_ERR_CANCELED; s--) {
    assert_non_null(mc_status_str(s));
    assert_string_not_equal(mc_status_str(s), "unknown status");
  }
  assert_string_equal(mc_status_str(-999), "unknown status");
  assert_string_equal(mc_status_str(42), "unknown status");
  assert_non_null(mc_last_error());
  /* Pinned values. */
  assert_int_equal(MC_ERR_INVALID_ARG, -1);
  assert_int_equal(MC_ERR_BUFFER_TOO_SMALL, -13);
  assert_int_equal(MC_ERR_CANCELED, -14);
}

static void test_config(void **state) {
  (void)state;
  mc_config_t *cfg = NULL;
  assert_int_equal(mc_config_create(NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "workers", "2"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "slice_size", "256K"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "timeout_ms", "2000"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "transports", "tcp,local"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "log_level", "warn"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "metadata", "p2p"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "listen", "127.0.0.1:0"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "tcp_connections", "3"), MC_OK);

  assert_int_equal(mc_config_set(cfg, "no_such_key", "1"), MC_ERR_INVALID_ARG);
  assert_non_null(strstr(mc_last_error(), "no_such_key"));
  assert_int_equal(mc_config_set(cfg, "workers", "0"), MC_ERR_INVALID_ARG);
  assert_non_null(strstr(mc_last_error(), "workers"));
  assert_int_equal(mc_config_set(cfg, "workers", "abc"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "slice_size", "1"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "slice_size", "99999999999999999999999G"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "timeout_ms", "-5"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "listen", "nohost"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "listen", "127.0.0.1:70000"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "transports", "carrier-pigeon"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "metadata", "zookeeper://x"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "log_level", "loud"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(NULL, "workers", "1"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, NULL, "1"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "workers", NULL), MC_ERR_INVALID_ARG);

  /* The failed sets changed nothing: the engine starts with the good values. */
  mc_engine_t *e = NULL;
  assert_int_equal(mc_engine_create(cfg, &e), MC_OK);
  assert_non_null(e);
  assert_int_equal(strncmp(mc_engine_name(e), "127.0.0.1:", 10), 0);
  mc_engine_destroy(e);
  mc_config_destroy(cfg);
  mc_config_destroy(NULL);
}

static void test_config_env(void **state) {
  (void)state;
  /* A key that is not set comes from MC_<KEY>; a bad value there fails engine creation. */
  setenv("MC_TIMEOUT_MS", "not-a-number", 1);
  mc_engine_t *e = NULL;
  assert_int_equal(mc_engine_create(NULL, &e), MC_ERR_INVALID_ARG);
  assert_null(e);
  assert_non_null(strstr(mc_last_error(), "MC_TIMEOUT_MS"));
  /* A value set in the config wins over the environment. */
  mc_config_t *cfg = NULL;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "timeout_ms", "1000"), MC_OK);
  assert_int_equal(mc_engine_create(cfg, &e), MC_OK);
  mc_engine_destroy(e);
  mc_config_destroy(cfg);
  unsetenv("MC_TIMEOUT_MS");
  /* Other MC_* variables are ignored. */
  setenv("MC_SOMETHING_ELSE", "x", 1);
  setenv("MC_LISTEN", "127.0.0.1:0", 1);
  assert_int_equal(mc_engine_create(NULL, &e), MC_OK);
  mc_engine_destroy(e);
  unsetenv("MC_SOMETHING_ELSE");
  unsetenv("MC_LISTEN");
}

static void test_engine_basics(void **state) {
  (void)state;
  assert_int_equal(mc_engine_create(NULL, NULL), MC_ERR_INVALID_ARG);
  mc_engine_t *e = tu_engine(NULL);
  assert_non_null(e);
  assert_string_equal(mc_engine_name(NULL), "");
  /* stats: NULL buffer with 0 capacity gives the size; too small is BUFFER_TOO_SMALL. */
  size_t need = 0;
  assert_int_equal(mc_engine_stats_json(e, NULL, 0, &need), MC_ERR_BUFFER_TOO_SMALL);
  assert_true(need > 10);
  char small[4] = "abc";
  size_t need2 = 0;
  assert_int_equal(mc_engine_stats_json(e, small, sizeof small, &need2), MC_ERR_BUFFER_TOO_SMALL);
  assert_int_equal(need2, need);
  assert_string_equal(small, "abc");
  char *buf = malloc(need);
  assert_int_equal(mc_engine_stats_json(e, buf, need, &need2), MC_OK);
  assert_int_equal(strlen(buf) + 1, need2);
  const char *keys[] = {"\"name\"", "\"incarnation\"", "\"requests_completed\"", "\"requests_failed\"",
                        "\"bytes_read\"", "\"bytes_written\"", "\"tcp\":{", "\"local\":{"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) assert_non_null(strstr(buf, keys[i]));
  free(buf);
  assert_int_equal(mc_engine_stats_json(NULL, NULL, 0, &need), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_engine_stats_json(e, NULL, 0, NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_engine_stats_json(e, NULL, 5, &need), MC_ERR_INVALID_ARG);
  mc_engine_destroy(e);
  mc_engine_destroy(NULL);
}

static void test_listen_busy(void **state) {
  (void)state;
  mc_engine_t *a = tu_engine(NULL);
  assert_non_null(a);
  mc_config_t *cfg;
  mc_config_create(&cfg);
  assert_int_equal(mc_config_set(cfg, "listen", mc_engine_name(a)), MC_OK);
  mc_engine_t *b = NULL;
  assert_int_not_equal(mc_engine_create(cfg, &b), MC_OK);
  assert_null(b);
  assert_non_null(strstr(mc_last_error(), "listen"));
  mc_config_destroy(cfg);
  mc_engine_destroy(a);
}

static void test_register(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  char *mem = malloc(1 << 20);
  assert_int_equal(mc_buffer_register(e, mem, 4096, NULL), MC_OK);
  assert_int_equal(mc_buffer_register(e, mem + 8192, 4096, "cpu"), MC_OK);
  assert_int_equal(mc_buffer_register(e, mem + 16384, 4096, "cpu:0"), MC_OK);
  /* Overlaps: inside, straddling the start, straddling the end, covering. */
  assert_int_equal(mc_buffer_register(e, mem, 10, NULL), MC_ERR_EXISTS);
  assert_int_equal(mc_buffer_register(e, mem + 100, 10, NULL), MC_ERR_EXISTS);
  assert_int_equal(mc_buffer_register(e, mem + 4000, 200, NULL), MC_ERR_EXISTS);
  assert_int_equal(mc_buffer_register(e, mem + 8000, 200, NULL), MC_ERR_EXISTS);
  assert_int_equal(mc_buffer_register(e, mem + 4096, 1 << 16, NULL), MC_ERR_EXISTS);
  /* Adjacent is fine. */
  assert_int_equal(mc_buffer_register(e, mem + 4096, 4096, NULL), MC_OK);
  /* Bad input. */
  assert_int_equal(mc_buffer_register(NULL, mem, 1, NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_register(e, NULL, 1, NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_register(e, mem + 65536, 0, NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_register(e, mem + 65536, 16, "tpu:3"), MC_ERR_INVALID_ARG);
  /* No CUDA driver: unsupported; with one: host memory is not device memory of GPU 0. */
  mc_status_t cu = mc_buffer_register(e, mem + 65536, 16, "cuda:0");
  assert_true(cu == MC_ERR_UNSUPPORTED || cu == MC_ERR_INVALID_ARG);
  /* Unregister: only the exact start. */
  assert_int_equal(mc_buffer_unregister(e, mem + 1), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_buffer_unregister(e, mem + 65536), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_buffer_unregister(e, NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_unregister(NULL, mem), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_unregister(e, mem), MC_OK);
  assert_int_equal(mc_buffer_unregister(e, mem), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_buffer_register(e, mem, 4096, NULL), MC_OK);
  /* The segment reflects the registrations. */
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &s), MC_OK);
  size_t count = 0;
  assert_int_equal(mc_segment_buffers(e, s, NULL, 0, &count), MC_ERR_BUFFER_TOO_SMALL);
  assert_int_equal(count, 4);
  mc_buffer_info_t info[4];
  memset(info, 0xee, sizeof info);
  assert_int_equal(mc_segment_buffers(e, s, info, 2, &count), MC_ERR_BUFFER_TOO_SMALL);
  assert_int_equal(count, 4);
  assert_int_equal(info[0].addr, 0xeeeeeeeeeeeeeeeeULL); /* untouched */
  assert_int_equal(mc_segment_buffers(e, s, info, 4, &count), MC_OK);
  assert_int_equal(count, 4);
  assert_int_equal(info[0].addr, (uint64_t)(uintptr_t)mem);
  assert_int_equal(info[1].addr, (uint64_t)(uintptr_t)(mem + 4096));
  assert_int_equal(info[3].addr, (uint64_t)(uintptr_t)(mem + 16384));
  assert_string_equal(info[3].location, "cpu:0");
  assert_string_equal(info[0].location, "cpu");
  mc_engine_destroy(e);
  free(mem);
}

static void test_segments(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine("timeout_ms", "2000", NULL);
  mc_segment_t s = 0, s2 = 0;
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &s), MC_OK);
  assert_int_not_equal(s, 0);
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &s2), MC_OK);
  assert_int_not_equal(s, s2);
  mc_segment_info_t info;
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
  assert_int_equal(info.state, MC_SEGMENT_OK);
  assert_string_equal(info.transport, "local");
  assert_int_not_equal(info.incarnation, 0);
  /* An older caller's smaller struct is filled only as far as its size says. */
  struct { size_t size; uint32_t state; uint32_t buffer_count; uint64_t canary; } small;
  small.size = offsetof(mc_segment_info_t, incarnation);
  small.canary = 0x1234;
  assert_int_equal(mc_segment_query(e, s, (mc_segment_info_t *)&small), MC_OK);
  assert_int_equal(small.canary, 0x1234);
  assert_int_equal(mc_segment_query(e, s, NULL), MC_ERR_INVALID_ARG);
  info.size = 0;
  assert_int_equal(mc_segment_query(e, s, &info), MC_ERR_INVALID_ARG);
  info.size = sizeof info;
  assert_int_equal(mc_segment_query(e, 9999, &info), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_segment_close(e, s2), MC_OK);
  assert_int_equal(mc_segment_close(e, s2), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_segment_query(e, s2, &info), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_segment_query(e, s, &info), MC_OK); /* the other handle lives on */
  /* Nothing listens there: refused at once. */
  uint64_t t0 = tu_now_ms();
  mc_segment_t bad;
  assert_int_equal(mc_segment_open(e, "127.0.0.1:1", &bad), MC_ERR_PEER_DOWN);
  assert_true(tu_now_ms() - t0 < tu_slack_ms(1000));
  assert_non_null(strstr(mc_last_error(), "127.0.0.1:1"));
  /* Not a HOST:PORT in p2p mode. */
  assert_int_equal(mc_segment_open(e, "some-name", &bad), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_segment_open(e, NULL, &bad), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_segment_open(e, "127.0.0.1:1", NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_segment_open(NULL, "127.0.0.1:1", &bad), MC_ERR_INVALID_ARG);
  mc_engine_destroy(e);
}

/* A local-loopback fixture for batch tests: one engine, its own segment, two buffers. */
struct fx {
  mc_engine_t *e;
  mc_segment_t seg;
  char *src, *dst;
  size_t len;
};

static void fx_init(struct fx *f, size_t len) {
  f->e = tu_engine(NULL);
  assert_non_null(f->e);
  f->len = len;
  /* One allocation with a gap between the two buffers: they must never be adjacent, or a
   * request crossing src's end would be a legal span into dst. */
  f->src = malloc(2 * len + 4096);
  f->dst = f->src + len + 4096;
  tu_fill(f->src, len, 1);
  memset(f->dst, 0xAB, len);
  assert_int_equal(mc_buffer_register(f->e, f->src, len, NULL), MC_OK);
  assert_int_equal(mc_buffer_register(f->e, f->dst, len, NULL), MC_OK);
  assert_int_equal(mc_segment_open(f->e, mc_engine_name(f->e), &f->seg), MC_OK);
}

static void fx_done(struct fx *f) {
  mc_engine_destroy(f->e);
  free(f->src);
}

static void assert_dst_untouched(struct fx *f) {
  for (size_t i = 0; i < f->len; i++)
    if ((unsigned char)f->dst[i] != 0xAB) fail_msg("dst byte %zu was written", i);
}

static void test_bad_requests(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, 1 << 16);
  mc_batch_t *b = NULL;
  assert_int_equal(mc_batch_create(f.e, 4, &b), MC_OK);
  mc_request_t good = {MC_WRITE, 0, f.src, f.seg, (uint64_t)(uintptr_t)f.dst, 4096};
  struct {
    mc_request_t r;
    mc_status_t want;
  } cases[] = {
      {{7, 0, f.src, f.seg, (uint64_t)(uintptr_t)f.dst, 16}, MC_ERR_INVALID_ARG},       /* opcode */
      {{MC_WRITE, 1, f.src, f.seg, (uint64_t)(uintptr_t)f.dst, 16}, MC_ERR_INVALID_ARG}, /* flags */
      {{MC_WRITE, 0, f.src, f.seg, (uint64_t)(uintptr_t)f.dst, 0}, MC_ERR_INVALID_ARG},  /* length */
      {{MC_WRITE, 0, NULL, f.seg, (uint64_t)(uintptr_t)f.dst, 16}, MC_ERR_INVALID_ARG},  /* NULL local */
      {{MC_WRITE, 0, f.src + f.len - 8, f.seg, (uint64_t)(uintptr_t)f.dst, 16}, MC_ERR_OUT_OF_RANGE},
      {{MC_WRITE, 0, (char *)&good, f.seg, (uint64_t)(uintptr_t)f.dst, 16}, MC_ERR_OUT_OF_RANGE},
      {{MC_WRITE, 0, f.src, f.seg, (uint64_t)(uintptr_t)f.dst + f.len - 8, 16}, MC_ERR_OUT_OF_RANGE},
      {{MC_WRITE, 0, f.src, f.seg, 16, 16}, MC_ERR_OUT_OF_RANGE},
      {{MC_READ, 0, f.dst, f.seg, (uint64_t)(uintptr_t)f.src - 1, 16}, MC_ERR_OUT_OF_RANGE},
      {{MC_WRITE, 0, f.src, 4242, (uint64_t)(uintptr_t)f.dst, 16}, MC_ERR_NOT_FOUND},    /* segment */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    /* The bad request comes second: the good first one must not start either. */
    mc_request_t pair[2] = {good, cases[i].r};
    mc_status_t got = mc_batch_submit(b, pair, 2);
    if (got != cases[i].want) fail_msg("case %zu: got %d want %d (%s)", i, got, cases[i].want, mc_last_error());
    assert_non_null(strstr(mc_last_error(), "request 1"));
    assert_int_equal(mc_transfer(f.e, pair, 2, tu_wait_ms(1000)), cases[i].want);
    assert_dst_untouched(&f);
  }
  /* Nothing was submitted, so status of index 0 is out of range. */
  mc_request_status_t rs;
  assert_int_equal(mc_batch_status(b, 0, &rs), MC_ERR_INVALID_ARG);
  /* Capacity: 5 requests in a batch of 4. */
  mc_request_t five[5] = {good, good, good, good, good};
  assert_int_equal(mc_batch_submit(b, five, 5), MC_ERR_INVALID_ARG);
  assert_dst_untouched(&f);
  assert_int_equal(mc_batch_submit(b, five, 3), MC_OK);
  assert_int_equal(mc_batch_submit(b, five, 2), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(mc_batch_status(b, 2, &rs), MC_OK);
  assert_int_equal(rs.state, MC_REQUEST_COMPLETED);
  assert_int_equal(rs.bytes, 4096);
  assert_int_equal(rs.error, MC_OK);
  assert_int_equal(mc_batch_status(b, 3, &rs), MC_ERR_INVALID_ARG);
  assert_int_equal(memcmp(f.src, f.dst, 4096), 0);
  /* NULLs. */
  assert_int_equal(mc_batch_submit(NULL, &good, 1), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_submit(b, NULL, 1), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_status(b, 0, NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_status(NULL, 0, &rs), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_wait(NULL, 0), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_create(f.e, 0, &b), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_create(NULL, 1, &b), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_transfer(f.e, NULL, 1, 100), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_transfer(NULL, &good, 1, 100), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_reset(b), MC_OK);
  assert_int_equal(mc_batch_status(b, 0, &rs), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  assert_int_equal(mc_batch_destroy(NULL), MC_OK);
  fx_done(&f);
}

static void test_local_copies(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, 8 << 20);
  /* WRITE src -> dst, sizes from 1 byte to several slices, then READ back into src's copy. */
  size_t sizes[] = {1, 7, 4096, 65537, 1 << 20, (8 << 20)};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    memset(f.dst, 0, f.len);
    mc_request_t r = {MC_WRITE, 0, f.src, f.seg, (uint64_t)(uintptr_t)f.dst, sizes[i]};
    assert_int_equal(mc_transfer(f.e, &r, 1, tu_wait_ms(5000)), MC_OK);
    assert_int_equal(memcmp(f.src, f.dst, sizes[i]), 0);
    if (sizes[i] < f.len) assert_int_equal(f.dst[sizes[i]], 0);
  }
  /* A request spanning two adjacent registered buffers on both sides. */
  char *two = malloc(2 * 4096);
  assert_int_equal(mc_buffer_unregister(f.e, f.dst), MC_OK);
  assert_int_equal(mc_buffer_register(f.e, f.dst, 4096, NULL), MC_OK);
  assert_int_equal(mc_buffer_register(f.e, f.dst + 4096, f.len - 4096, NULL), MC_OK);
  memset(f.dst, 0, 8192);
  mc_request_t span = {MC_WRITE, 0, f.src + 100, f.seg, (uint64_t)(uintptr_t)f.dst + 100, 8000};
  assert_int_equal(mc_transfer(f.e, &span, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(memcmp(f.src + 100, f.dst + 100, 8000), 0);
  free(two);
  /* Batch reuse: capacity, reset. (BUSY while pending: test_busy.) */
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(f.e, 1, &b), MC_OK);
  assert_int_equal(mc_batch_submit(b, &span, 1), MC_OK);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(mc_batch_submit(b, &span, 1), MC_ERR_INVALID_ARG); /* capacity 1 used */
  assert_int_equal(mc_batch_reset(b), MC_OK);
  assert_int_equal(mc_batch_submit(b, &span, 1), MC_OK);
  assert_int_equal(mc_batch_wait(b, -1), MC_OK);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  fx_done(&f);
}

/* status is MC_ERR_INVALID_ARG and mc_last_error() names the function and the NULL argument. */
static void expect_null(mc_status_t status, const char *fn, const char *arg) {
  assert_int_equal(status, MC_ERR_INVALID_ARG);
  const char *msg = mc_last_error();
  if (!strstr(msg, fn) || !strstr(msg, arg)) fail_msg("%s with NULL %s: message \"%s\"", fn, arg, msg);
}

static void on_segment(mc_segment_t s, uint32_t state, uint64_t inc, void *user) {
  (void)s; (void)state; (void)inc; (void)user;
}

/* NULL handles and pointers of the calls no other case passes them to: MC_ERR_INVALID_ARG with
 * a message, nothing changed; the engine still works afterwards. */
static void test_null_args(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  assert_non_null(e);
  void *p = NULL;
  expect_null(mc_buffer_alloc(NULL, 4096, NULL, &p), "mc_buffer_alloc", "engine");
  assert_null(p);
  expect_null(mc_buffer_alloc(e, 4096, NULL, NULL), "mc_buffer_alloc", "addr");
  assert_int_equal(mc_buffer_alloc(e, 4096, NULL, &p), MC_OK);
  expect_null(mc_buffer_free(NULL, p), "mc_buffer_free", "engine");
  expect_null(mc_buffer_free(e, NULL), "mc_buffer_free", "addr");
  expect_null(mc_buffer_set_access(NULL, p, MC_ACCESS_READ), "mc_buffer_set_access", "engine");
  expect_null(mc_buffer_set_access(e, NULL, MC_ACCESS_READ), "mc_buffer_set_access", "addr");
  char *mem = malloc(8192);
  mc_buffer_desc_t d = {mem, 4096, NULL};
  expect_null(mc_buffer_register_batch(NULL, &d, 1), "mc_buffer_register_batch", "engine");
  expect_null(mc_buffer_register_batch(e, NULL, 1), "mc_buffer_register_batch", "bufs");
  void *addrs[2] = {mem, NULL};
  assert_int_equal(mc_buffer_register_batch(e, &d, 1), MC_OK);
  expect_null(mc_buffer_unregister_batch(NULL, addrs, 1), "mc_buffer_unregister_batch", "engine");
  expect_null(mc_buffer_unregister_batch(e, NULL, 1), "mc_buffer_unregister_batch", "addrs");
  /* A NULL entry: all or nothing, mem stays registered. */
  assert_int_equal(mc_buffer_unregister_batch(e, addrs, 2), MC_ERR_INVALID_ARG);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &s), MC_OK);
  mc_buffer_info_t bi[4];
  size_t n = 99;
  expect_null(mc_segment_buffers(NULL, s, bi, 4, &n), "mc_segment_buffers", "engine");
  expect_null(mc_segment_buffers(e, s, bi, 4, NULL), "mc_segment_buffers", "count");
  expect_null(mc_segment_buffers(e, s, NULL, 4, &n), "mc_segment_buffers", "out");
  assert_int_equal(n, 99);
  /* Nothing above changed the buffers: the alloc'd one and mem (access READ|WRITE: the
   * set_access calls failed). */
  assert_int_equal(mc_segment_buffers(e, s, bi, 4, &n), MC_OK);
  assert_int_equal(n, 2);
  expect_null(mc_batch_cancel(NULL), "mc_batch_cancel", "batch");
  expect_null(mc_batch_reset(NULL), "mc_batch_reset", "batch");
  assert_int_equal(mc_batch_destroy(NULL), MC_OK);
  expect_null(mc_engine_set_segment_callback(NULL, on_segment, NULL), "mc_engine_set_segment_callback", "engine");
  expect_null(mc_engine_set_segment_callback(NULL, NULL, NULL), "mc_engine_set_segment_callback", "engine");
  assert_int_equal(mc_engine_set_segment_callback(e, on_segment, NULL), MC_OK);
  assert_int_equal(mc_engine_set_segment_callback(e, NULL, NULL), MC_OK);
  assert_int_equal(mc_buffer_unregister_batch(e, addrs, 1), MC_OK);
  assert_int_equal(mc_buffer_free(e, p), MC_OK);
  mc_engine_destroy(e);
  free(mem);
}

/* While requests are pending, each call that would reset or free what they use is MC_ERR_BUSY
 * and changes nothing. Local copies run on engine threads (mc_batch_submit returns at once), so
 * a 64 MiB batch is normally still pending right after submit; but a loaded machine may stall
 * this thread until it ended, so a round makes one of the calls only, and a result of MC_OK
 * must mean the batch had ended (order, not time). Each call must be seen BUSY in some round.
 * The buffers freed or unregistered are the requests' local side (src: mc_buffer_alloc'd, or
 * malloc'd and registered for unregister_batch); dst, the remote side, is left alone. */
static void test_busy(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  assert_non_null(e);
  size_t len = 64 << 20;
  char *dst = malloc(len);
  assert_non_null(dst);
  assert_int_equal(mc_buffer_register(e, dst, len, NULL), MC_OK);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &seg), MC_OK);
  enum { N = 64, CALLS = 4 };
  const char *names[CALLS] = {"mc_batch_reset", "mc_batch_destroy", "mc_buffer_free",
                              "mc_buffer_unregister_batch"};
  int seen = 0;
  for (int round = 0; round < 10 * CALLS && seen != (1 << CALLS) - 1; round++) {
    int k = round % CALLS;
    if (seen & (1 << k)) continue;
    char *src = NULL;
    if (k == 3) {
      src = malloc(len);
      assert_non_null(src);
      assert_int_equal(mc_buffer_register(e, src, len, NULL), MC_OK);
    } else {
      assert_int_equal(mc_buffer_alloc(e, len, NULL, (void **)&src), MC_OK);
    }
    tu_fill(src, len, 100 + (uint64_t)round);
    mc_request_t rq[N];
    size_t piece = len / N;
    for (int i = 0; i < N; i++)
      rq[i] = (mc_request_t){MC_WRITE, 0, src + i * piece, seg, (uint64_t)(uintptr_t)(dst + i * piece), piece};
    mc_batch_t *b;
    assert_int_equal(mc_batch_create(e, N, &b), MC_OK);
    assert_int_equal(mc_batch_submit(b, rq, N), MC_OK);
    void *one[1] = {src};
    mc_status_t st = k == 0 ? mc_batch_reset(b)
                   : k == 1 ? mc_batch_destroy(b)
                   : k == 2 ? mc_buffer_free(e, src)
                            : mc_buffer_unregister_batch(e, one, 1);
    if (st == MC_ERR_BUSY) {
      seen |= 1 << k;
      assert_int_equal(mc_batch_wait(b, -1), MC_OK);
      /* Nothing was reset, freed or unregistered: the data arrived, the batch is still full. */
      assert_int_equal(tu_check(dst, len, 100 + (uint64_t)round), -1);
      assert_int_equal(mc_batch_submit(b, rq, 1), MC_ERR_INVALID_ARG);
      assert_int_equal(mc_batch_destroy(b), MC_OK);
      if (k == 3) {
        assert_int_equal(mc_buffer_unregister(e, src), MC_OK);
        free(src);
      } else {
        assert_int_equal(mc_buffer_free(e, src), MC_OK);
      }
      continue;
    }
    /* Not BUSY: the call succeeded, so no request of the batch was pending any more. */
    if (st != MC_OK) fail_msg("%s while requests may be pending: %s", names[k], mc_status_str(st));
    print_message("round %d: the batch ended before %s\n", round, names[k]);
    if (k != 1) {
      assert_int_equal(mc_batch_wait(b, 0), MC_OK);
      assert_int_equal(mc_batch_destroy(b), MC_OK);
    }
    if (k == 3) free(src); /* unregistered by the call */
    else if (k != 2) assert_int_equal(mc_buffer_free(e, src), MC_OK);
  }
  for (int k = 0; k < CALLS; k++)
    if (!(seen & (1 << k))) fail_msg("%s was never MC_ERR_BUSY while requests were pending", names[k]);
  mc_engine_destroy(e);
  free(dst);
}

/* mc_batch_submit_on_stream without a CUDA driver (main sets MC_CUDA_DISABLE, as a machine
 * without one): MC_ERR_UNSUPPORTED with a reason, nothing submitted; bad input first. */
static void test_submit_on_stream_no_cuda(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  assert_non_null(e);
  char *src = malloc(4096), *dst = malloc(4096);
  assert_int_equal(mc_buffer_register(e, src, 4096, NULL), MC_OK);
  assert_int_equal(mc_buffer_register(e, dst, 4096, NULL), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &s), MC_OK);
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(e, 4, &b), MC_OK);
  mc_request_t r = {MC_WRITE, 0, src, s, (uint64_t)(uintptr_t)dst, 4096};
  expect_null(mc_batch_submit_on_stream(NULL, &r, 1, NULL), "mc_batch_submit_on_stream", "batch");
  expect_null(mc_batch_submit_on_stream(b, NULL, 1, NULL), "mc_batch_submit_on_stream", "requests");
  assert_int_equal(mc_batch_submit_on_stream(b, &r, 0, NULL), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_batch_submit_on_stream(b, &r, 1, NULL), MC_ERR_UNSUPPORTED);
  assert_non_null(strstr(mc_last_error(), "CUDA"));
  mc_request_status_t rs;
  assert_int_equal(mc_batch_status(b, 0, &rs), MC_ERR_INVALID_ARG); /* nothing was submitted */
  assert_int_equal(mc_batch_submit(b, &r, 1), MC_OK);               /* the batch still works */
  assert_int_equal(mc_batch_wait(b, 10000), MC_OK);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  mc_engine_destroy(e);
  free(src);
  free(dst);
}

int main(void) {
  /* No CUDA in this program, also where a driver is installed: the no-driver path is tested. */
  setenv("MC_CUDA_DISABLE", "1", 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version),        cmocka_unit_test(test_status_strings),
      cmocka_unit_test(test_config),         cmocka_unit_test(test_config_env),
      cmocka_unit_test(test_engine_basics),  cmocka_unit_test(test_listen_busy),
      cmocka_unit_test(test_register),       cmocka_unit_test(test_segments),
      cmocka_unit_test(test_bad_requests),   cmocka_unit_test(test_local_copies),
      cmocka_unit_test(test_busy),           cmocka_unit_test(test_null_args),
      cmocka_unit_test(test_submit_on_stream_no_cuda),
  };
  return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
