/* Descriptor-heavy work: 100,000-request batches over shm and TCP, mixed valid and invalid
 * requests in one call, and 10,000 registered buffers (batch and one by one). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "testutil.h"

#define PAGE 4096u
#define NREQ 100000u

static void big_batch(const char *transports, int shuffled) {
  mc_engine_t *tgt = tu_engine(NULL);
  mc_engine_t *ini = tu_engine("transports", transports, "timeout_ms", "20000", NULL);
  size_t len = (size_t)NREQ * PAGE;
  char *l = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char *r = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_int_equal(mc_buffer_register(ini, l, len, NULL), MC_OK);
  assert_int_equal(mc_buffer_register(tgt, r, len, NULL), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(ini, mc_engine_name(tgt), &s), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(ini, s, &info), MC_OK);
  assert_string_equal(info.transport, strcmp(transports, "tcp") == 0 ? "tcp" : "shm");
  tu_fill(l, len, 99);
  memset(r, 0, len);
  mc_request_t *rq = malloc(NREQ * sizeof *rq);
  /* Shuffled: remote page i*7919 mod N (a permutation), so no two requests merge. */
  for (size_t i = 0; i < NREQ; i++) {
    size_t ri = shuffled ? (i * 7919u) % NREQ : i;
    rq[i] = (mc_request_t){MC_WRITE, 0, l + i * PAGE, s, (uint64_t)(uintptr_t)(r + ri * PAGE), PAGE};
  }
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(ini, NREQ, &b), MC_OK);
  uint64_t t0 = tu_now_ms();
  assert_int_equal(mc_batch_submit(b, rq, NREQ), MC_OK);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(60000)), MC_OK);
  print_message("%s %s: 100000 x 4 KiB WRITE in %llu ms\n", transports, shuffled ? "shuffled" : "contiguous",
                (unsigned long long)(tu_now_ms() - t0));
  for (size_t i = 0; i < NREQ; i++) {
    mc_request_status_t st;
    assert_int_equal(mc_batch_status(b, i, &st), MC_OK);
    if (st.state != MC_REQUEST_COMPLETED || st.bytes != PAGE) fail_msg("request %zu: state %u bytes %llu", i, st.state, (unsigned long long)st.bytes);
    size_t ri = shuffled ? (i * 7919u) % NREQ : i;
    if (memcmp(l + i * PAGE, r + ri * PAGE, PAGE) != 0) fail_msg("page %zu differs", i);
  }
  /* READ them all back into a cleared buffer. */
  memset(l, 0, len);
  for (size_t i = 0; i < NREQ; i++) rq[i].opcode = MC_READ;
  assert_int_equal(mc_batch_reset(b), MC_OK);
  assert_int_equal(mc_batch_submit(b, rq, NREQ), MC_OK);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(60000)), MC_OK);
  assert_int_equal(tu_check(l, len, 99), -1);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  free(rq);
  mc_engine_destroy(ini);
  mc_engine_destroy(tgt);
  munmap(l, len);
  munmap(r, len);
}

static void test_100k_shm(void **state) {
  (void)state;
  big_batch("shm,tcp", 0);
  big_batch("shm,tcp", 1);
}

static void test_100k_tcp(void **state) {
  (void)state;
  big_batch("tcp", 0);
  big_batch("tcp", 1);
}

static void test_mixed_valid_invalid(void **state) {
  (void)state;
  mc_engine_t *tgt = tu_engine(NULL);
  mc_engine_t *ini = tu_engine(NULL);
  size_t n = 10000, len = n * 64;
  char *l = calloc(1, len), *r = calloc(1, len);
  assert_int_equal(mc_buffer_register(ini, l, len, NULL), MC_OK);
  assert_int_equal(mc_buffer_register(tgt, r, len, NULL), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(ini, mc_engine_name(tgt), &s), MC_OK);
  memset(l, 0x5a, len);
  mc_request_t *rq = malloc(n * sizeof *rq);
  for (size_t i = 0; i < n; i++) rq[i] = (mc_request_t){MC_WRITE, 0, l + i * 64, s, (uint64_t)(uintptr_t)(r + i * 64), 64};
  rq[n - 1].remote = (uint64_t)(uintptr_t)(r + len - 32); /* the very last one runs past the end */
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(ini, n, &b), MC_OK);
  assert_int_equal(mc_batch_submit(b, rq, n), MC_ERR_OUT_OF_RANGE);
  assert_non_null(strstr(mc_last_error(), "request 9999"));
  for (size_t i = 0; i < len; i++)
    if (r[i]) fail_msg("byte %zu written although the call was refused", i);
  mc_request_status_t st;
  assert_int_equal(mc_batch_status(b, 0, &st), MC_ERR_INVALID_ARG); /* nothing submitted */
  rq[n - 1].remote = (uint64_t)(uintptr_t)(r + len - 64);
  rq[5000].flags = 3;
  assert_int_equal(mc_batch_submit(b, rq, n), MC_ERR_INVALID_ARG);
  for (size_t i = 0; i < len; i++)
    if (r[i]) fail_msg("byte %zu written although the call was refused", i);
  rq[5000].flags = 0;
  assert_int_equal(mc_batch_submit(b, rq, n), MC_OK);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(20000)), MC_OK);
  assert_int_equal(memcmp(l, r, len), 0);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  free(rq);
  mc_engine_destroy(ini);
  mc_engine_destroy(tgt);
  free(l);
  free(r);
}

static void test_10k_buffers(void **state) {
  (void)state;
  size_t nb = 10000, each = 4096;
  mc_engine_t *tgt = tu_engine(NULL);
  mc_engine_t *ini = tu_engine("transports", "tcp", NULL);
  char *r = mmap(NULL, 2 * nb * each, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char *l = malloc(each);
  assert_int_equal(mc_buffer_register(ini, l, each, NULL), MC_OK);
  /* The peer opens the segment before any of them exist. */
  mc_segment_t s;
  assert_int_equal(mc_segment_open(ini, mc_engine_name(tgt), &s), MC_OK);
  /* 10,000 in one call, every other page (not adjacent). */
  mc_buffer_desc_t *d = calloc(nb, sizeof *d);
  for (size_t i = 0; i < nb; i++) d[i] = (mc_buffer_desc_t){r + 2 * i * each, each, NULL};
  uint64_t t0 = tu_now_ms();
  assert_int_equal(mc_buffer_register_batch(tgt, d, nb), MC_OK);
  uint64_t t1 = tu_now_ms();
  /* All or nothing: one overlapping entry refuses the whole call. */
  mc_buffer_desc_t two[2] = {{r + each, each, NULL}, {r + 10, 16, NULL}};
  assert_int_equal(mc_buffer_register_batch(tgt, two, 2), MC_ERR_EXISTS);
  assert_non_null(strstr(mc_last_error(), "buffer 1"));
  mc_buffer_desc_t self_overlap[2] = {{r + each, each, NULL}, {r + each + 8, 16, NULL}};
  assert_int_equal(mc_buffer_register_batch(tgt, self_overlap, 2), MC_ERR_EXISTS);
  assert_int_equal(mc_buffer_unregister(tgt, r + each), MC_ERR_NOT_FOUND); /* neither got in */
  /* Transfer into the last one: the initiator's descriptor is refreshed on demand. */
  tu_fill(l, each, 3);
  mc_request_t w = {MC_WRITE, 0, l, s, (uint64_t)(uintptr_t)(r + 2 * (nb - 1) * each), each};
  assert_int_equal(mc_transfer(ini, &w, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(r + 2 * (nb - 1) * each, each, 3), -1);
  size_t count;
  assert_int_equal(mc_segment_buffers(ini, s, NULL, 0, &count), MC_ERR_BUFFER_TOO_SMALL);
  assert_int_equal(count, nb);
  /* Unregister them all at once; all-or-nothing with one unknown address. */
  void **addrs = calloc(nb, sizeof *addrs);
  for (size_t i = 0; i < nb; i++) addrs[i] = d[i].addr;
  void *bad[2] = {d[0].addr, r + 1};
  assert_int_equal(mc_buffer_unregister_batch(tgt, bad, 2), MC_ERR_NOT_FOUND);
  assert_int_equal(mc_buffer_unregister_batch(tgt, addrs, nb), MC_OK);
  /* One by one, into the odd pages. */
  uint64_t t2 = tu_now_ms();
  for (size_t i = 0; i < nb; i++) assert_int_equal(mc_buffer_register(tgt, r + (2 * i + 1) * each, each, NULL), MC_OK);
  uint64_t t3 = tu_now_ms();
  mc_request_t w2 = {MC_WRITE, 0, l, s, (uint64_t)(uintptr_t)(r + (2 * nb - 1) * each), each};
  assert_int_equal(mc_transfer(ini, &w2, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(r + (2 * nb - 1) * each, each, 3), -1);
  /* The initiator knew the segment all along: its refreshes were incremental (deltas). */
  assert_int_equal(mc_segment_buffers(ini, s, NULL, 0, &count), MC_ERR_BUFFER_TOO_SMALL);
  assert_int_equal(count, nb);
  char js[1 << 14];
  size_t need;
  assert_int_equal(mc_engine_stats_json(tgt, js, sizeof js, &need), MC_OK);
  const char *dk = strstr(js, "\"descriptor_deltas_served\":");
  assert_non_null(dk);
  assert_true(strtoull(dk + strlen("\"descriptor_deltas_served\":"), NULL, 10) >= 2);
  print_message("10000 buffers: batch %llu ms, one by one %llu ms\n", (unsigned long long)(t1 - t0),
                (unsigned long long)(t3 - t2));
  free(addrs);
  free(d);
  mc_engine_destroy(ini);
  mc_engine_destroy(tgt);
  free(l);
  munmap(r, 2 * nb * each);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_100k_shm),
      cmocka_unit_test(test_100k_tcp),
      cmocka_unit_test(test_mixed_valid_invalid),
      cmocka_unit_test(test_10k_buffers),
  };
  return cmocka_run_group_tests_name("descriptors", tests, NULL, NULL);
}
