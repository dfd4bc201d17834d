/* A right granted or taken away with mc_buffer_set_access takes effect at once for a peer that
 * has the segment open: no cached view of the target (the engine's descriptor, the same-host
 * buffer list, a mapping made under the old rights) refuses a request the target now allows, or
 * lets through one it now forbids. Two engines in this process, over shm (memfd buffers and
 * plain registered ones) and over tcp. */
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

enum { kLen = 1 << 16 };

struct pair {
  mc_engine_t *a, *b;  /* a: target, b: initiator */
  void *abuf, *bbuf;   /* abuf: A's buffer under test; bbuf: B's local buffer */
  void *plain;         /* abuf when it was malloc'ed (freed at the end) */
  mc_segment_t seg;
};

/* A and B with the given transports; A's buffer from mc_buffer_alloc (memfd) or malloc. */
static void setup_pair(struct pair *p, const char *transports, int memfd) {
  memset(p, 0, sizeof *p);
  p->a = tu_engine("transports", transports, NULL);
  p->b = tu_engine("transports", transports, NULL);
  assert_non_null(p->a);
  assert_non_null(p->b);
  if (memfd) {
    assert_int_equal(mc_buffer_alloc(p->a, kLen, NULL, &p->abuf), MC_OK);
  } else {
    p->plain = p->abuf = aligned_alloc(4096, kLen);
    assert_int_equal(mc_buffer_register(p->a, p->abuf, kLen, "cpu"), MC_OK);
  }
  assert_int_equal(mc_buffer_alloc(p->b, kLen, NULL, &p->bbuf), MC_OK);
  memset(p->abuf, 0, kLen);
}

static void open_seg(struct pair *p, const char *want_transport) {
  assert_int_equal(mc_segment_open(p->b, mc_engine_name(p->a), &p->seg), MC_OK);
  mc_segment_info_t info;
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  assert_int_equal(mc_segment_query(p->b, p->seg, &info), MC_OK);
  assert_string_equal(info.transport, want_transport);
}

static void teardown_pair(struct pair *p) {
  mc_engine_destroy(p->b);
  mc_engine_destroy(p->a);
  free(p->plain);
}

static mc_status_t write_seed(struct pair *p, uint64_t seed) {
  tu_fill(p->bbuf, kLen, seed);
  mc_request_t r = {MC_WRITE, 0, p->bbuf, p->seg, (uint64_t)(uintptr_t)p->abuf, kLen};
  return mc_transfer(p->b, &r, 1, tu_wait_ms(10000));
}

static int all_zero(const void *b, size_t n) {
  const unsigned char *c = b;
  for (size_t i = 0; i < n; i++)
    if (c[i]) return 0;
  return 1;
}

/* Read-only, a WRITE refused with nothing written; WRITE granted, the very next WRITE lands. */
static void grant(const char *transports, int memfd, const char *want) {
  struct pair p;
  setup_pair(&p, transports, memfd);
  assert_int_equal(mc_buffer_set_access(p.a, p.abuf, MC_ACCESS_READ), MC_OK);
  open_seg(&p, want);
  assert_int_equal(write_seed(&p, 1), MC_ERR_DENIED);
  assert_true(all_zero(p.abuf, kLen));
  assert_int_equal(mc_buffer_set_access(p.a, p.abuf, MC_ACCESS_READ | MC_ACCESS_WRITE), MC_OK);
  mc_status_t st = write_seed(&p, 2);
  if (st != MC_OK) fprintf(stderr, "WRITE after the grant: %s\n", mc_last_error());
  assert_int_equal(st, MC_OK);
  assert_int_equal(tu_check(p.abuf, kLen, 2), -1);
  teardown_pair(&p);
}

/* Writable and written (so a same-host peer holds a writable mapping); WRITE taken away, the
 * very next WRITE is refused with nothing written. */
static void revoke(const char *transports, int memfd, const char *want) {
  struct pair p;
  setup_pair(&p, transports, memfd);
  open_seg(&p, want);
  assert_int_equal(write_seed(&p, 3), MC_OK);
  assert_int_equal(tu_check(p.abuf, kLen, 3), -1);
  assert_int_equal(mc_buffer_set_access(p.a, p.abuf, MC_ACCESS_READ), MC_OK);
  assert_int_equal(write_seed(&p, 4), MC_ERR_DENIED);
  assert_int_equal(tu_check(p.abuf, kLen, 3), -1);
  /* READ is still allowed and sees the old bytes. */
  mc_request_t r = {MC_READ, 0, p.bbuf, p.seg, (uint64_t)(uintptr_t)p.abuf, kLen};
  assert_int_equal(mc_transfer(p.b, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(p.bbuf, kLen, 3), -1);
  teardown_pair(&p);
}

static void shm_grant_memfd(void **s) { (void)s; grant("shm", 1, "shm"); }
static void shm_grant_plain(void **s) { (void)s; grant("shm", 0, "shm"); }
static void shm_revoke_memfd(void **s) { (void)s; revoke("shm", 1, "shm"); }
static void shm_revoke_plain(void **s) { (void)s; revoke("shm", 0, "shm"); }
static void tcp_grant(void **s) { (void)s; grant("tcp", 0, "tcp"); }
static void tcp_revoke(void **s) { (void)s; revoke("tcp", 0, "tcp"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(shm_grant_memfd), cmocka_unit_test(shm_grant_plain),  cmocka_unit_test(shm_revoke_memfd),
      cmocka_unit_test(shm_revoke_plain), cmocka_unit_test(tcp_grant),       cmocka_unit_test(tcp_revoke),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
