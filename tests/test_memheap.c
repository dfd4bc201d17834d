/* mc_heap_*: argument checks, edge cases, exhaustion, coalescing, 100,000 live blocks, threads
 * and a randomized run checked against a reference model, all through the public API. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mc.h>

#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s) { /* splitmix64: small, seedable, good enough here */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
static uint64_t rng_below(uint64_t *s, uint64_t n) { return rng_next(s) % n; }

static mc_heap_stats_t stats_of(const mc_heap_t *h) {
  mc_heap_stats_t st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  assert_int_equal(mc_heap_stats(h, &st), MC_OK);
  return st;
}

static mc_heap_t *heap_new(uint64_t capacity) {
  mc_heap_t *h = NULL;
  assert_int_equal(mc_heap_create(capacity, &h), MC_OK);
  assert_non_null(h);
  return h;
}

static uint64_t alloc_ok(mc_heap_t *h, uint64_t size, uint64_t align) {
  uint64_t off = 0;
  assert_int_equal(mc_heap_alloc(h, size, align, &off), MC_OK);
  assert_int_equal(off % align, 0);
  return off;
}

static void assert_stats(const mc_heap_t *h, uint64_t cap, uint64_t used, uint64_t allocs,
                         uint64_t largest) {
  mc_heap_stats_t st = stats_of(h);
  assert_int_equal(st.size, sizeof st);
  assert_int_equal(st.capacity, cap);
  assert_int_equal(st.used, used);
  assert_int_equal(st.free, cap - used);
  assert_int_equal(st.allocations, allocs);
  assert_int_equal(st.largest_free, largest);
}

static void assert_error_mentions(const char *word) {
  const char *msg = mc_last_error();
  assert_non_null(msg);
  if (strstr(msg, word) == NULL) fail_msg("last error \"%s\" does not mention \"%s\"", msg, word);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ argument checks */

static void test_create_invalid(void **state) {
  (void)state;
  mc_heap_t *h = (mc_heap_t *)(uintptr_t)0x1234; /* must stay untouched on failure */
  assert_int_equal(mc_heap_create(0, &h), MC_ERR_INVALID_ARG);
  assert_ptr_equal(h, (mc_heap_t *)(uintptr_t)0x1234);
  assert_error_mentions("capacity");
  assert_int_equal(mc_heap_create(4096, NULL), MC_ERR_INVALID_ARG);
  assert_error_mentions("out");
  mc_heap_destroy(NULL); /* allowed */

  h = heap_new(1); /* the smallest heap works */
  assert_int_equal(alloc_ok(h, 1, 1), 0);
  assert_stats(h, 1, 1, 1, 0);
  mc_heap_destroy(h); /* with a live allocation: allowed */
}

static void test_alloc_invalid(void **state) {
  (void)state;
  mc_heap_t *h = heap_new(4096);
  const uint64_t keep = alloc_ok(h, 100, 1);
  uint64_t off = 777;
  assert_int_equal(mc_heap_alloc(NULL, 8, 8, &off), MC_ERR_INVALID_ARG);
  assert_error_mentions("heap");
  assert_int_equal(mc_heap_alloc(h, 8, 8, NULL), MC_ERR_INVALID_ARG);
  assert_error_mentions("offset");
  assert_int_equal(mc_heap_alloc(h, 0, 8, &off), MC_ERR_INVALID_ARG);
  assert_error_mentions("size");
  const uint64_t bad_aligns[] = {0, 3, 6, 12, 100, 4097, (1ULL << 63) + 1, UINT64_MAX};
  for (size_t i = 0; i < sizeof bad_aligns / sizeof bad_aligns[0]; i++) {
    assert_int_equal(mc_heap_alloc(h, 8, bad_aligns[i], &off), MC_ERR_INVALID_ARG);
    assert_error_mentions("power of two");
  }
  assert_int_equal(off, 777); /* never written on failure */
  assert_stats(h, 4096, 100, 1, 3996);
  assert_int_equal(mc_heap_free(h, keep), MC_OK);
  assert_stats(h, 4096, 0, 0, 4096);
  mc_heap_destroy(h);
}

static void test_free_invalid(void **state) {
  (void)state;
  mc_heap_t *h = heap_new(4096);
  const uint64_t a = alloc_ok(h, 64, 64);
  const uint64_t b = alloc_ok(h, 64, 64);
  assert_int_not_equal(a, b);
  assert_int_equal(mc_heap_free(NULL, a), MC_ERR_INVALID_ARG);
  assert_error_mentions("heap");
  /* inside an allocation, past the end, never allocated */
  const uint64_t bad[] = {a + 1, a + 63, b + 32, 4096, 5000, UINT64_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(mc_heap_free(h, bad[i]), MC_ERR_NOT_FOUND);
    assert_error_mentions("not the start of a live allocation");
  }
  assert_stats(h, 4096, 128, 2, 4096 - 128);
  assert_int_equal(mc_heap_free(h, a), MC_OK);
  assert_int_equal(mc_heap_free(h, a), MC_ERR_NOT_FOUND); /* double free */
  assert_stats(h, 4096, 64, 1, 4096 - 128);
  /* the double free changed nothing: b is still live and a can be handed out again */
  assert_int_equal(alloc_ok(h, 64, 64), a);
  assert_int_equal(mc_heap_free(h, b), MC_OK);
  assert_int_equal(mc_heap_free(h, a), MC_OK);
  assert_stats(h, 4096, 0, 0, 4096);
  mc_heap_destroy(h);
}

static void test_stats_sizes(void **state) {
  (void)state;
  mc_heap_t *h = heap_new(1000);
  alloc_ok(h, 10, 1);
  mc_heap_stats_t st;
  assert_int_equal(mc_heap_stats(NULL, &st), MC_ERR_INVALID_ARG);
  assert_error_mentions("heap");
  assert_int_equal(mc_heap_stats(h, NULL), MC_ERR_INVALID_ARG);
  assert_error_mentions("stats");
  const size_t too_small[] = {0, 1, sizeof(size_t), offsetof(mc_heap_stats_t, capacity) + 7};
  for (size_t i = 0; i < sizeof too_small / sizeof too_small[0]; i++) {
    memset(&st, 0xAB, sizeof st);
    st.size = too_small[i];
    assert_int_equal(mc_heap_stats(h, &st), MC_ERR_INVALID_ARG);
    assert_error_mentions("size");
    assert_int_equal(st.capacity, 0xABABABABABABABABULL); /* untouched */
  }
  /* an older, shorter struct: only the fields that fit are written */
  memset(&st, 0xAB, sizeof st);
  st.size = offsetof(mc_heap_stats_t, used) + sizeof st.used;
  assert_int_equal(mc_heap_stats(h, &st), MC_OK);
  assert_int_equal(st.size, offsetof(mc_heap_stats_t, used) + sizeof st.used);
  assert_int_equal(st.capacity, 1000);
  assert_int_equal(st.used, 10);
  assert_int_equal(st.free, 0xABABABABABABABABULL);
  assert_int_equal(st.allocations, 0xABABABABABABABABULL);
  /* a newer, longer struct: every known field is written, the bytes after them are not */
  unsigned char big[sizeof(mc_heap_stats_t) + 16];
  memset(big, 0xCD, sizeof big);
  mc_heap_stats_t *sp = (mc_heap_stats_t *)(void *)big;
  sp->size = sizeof big;
  assert_int_equal(mc_heap_stats(h, sp), MC_OK);
  assert_int_equal(sp->allocations, 1);
  assert_int_equal(sp->largest_free, 990);
  for (size_t i = sizeof(mc_heap_stats_t); i < sizeof big; i++) assert_int_equal(big[i], 0xCD);
  mc_heap_destroy(h);
}

/* ------------------------------------------------------------------ edge cases */

static void test_align_one(void **state) {
  (void)state;
  mc_heap_t *h = heap_new(10);
  uint64_t offs[10];
  for (int i = 0; i < 10; i++) offs[i] = alloc_ok(h, 1, 1);
  qsort(offs, 10, sizeof offs[0], cmp_u64);
  for (int i = 0; i < 10; i++) assert_int_equal(offs[i], (uint64_t)i); /* every byte, once */
  uint64_t off = 99;
  assert_int_equal(mc_heap_alloc(h, 1, 1, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(off, 99);
  assert_error_mentions("no free range");
  assert_stats(h, 10, 10, 10, 0);
  /* a hole of 1 byte in the middle is found with align 1, and only there */
  assert_int_equal(mc_heap_free(h, 5), MC_OK);
  assert_stats(h, 10, 9, 9, 1);
  assert_int_equal(mc_heap_alloc(h, 2, 1, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(mc_heap_alloc(h, 1, 2, &off), MC_ERR_NO_MEMORY); /* 5 is odd */
  assert_int_equal(alloc_ok(h, 1, 1), 5);
  /* odd offsets with align 1 */
  assert_int_equal(mc_heap_free(h, 3), MC_OK);
  assert_int_equal(mc_heap_free(h, 4), MC_OK);
  assert_int_equal(alloc_ok(h, 2, 1), 3);
  mc_heap_destroy(h);
}

static void test_huge_align(void **state) {
  (void)state;
  const uint64_t cap = 1ULL << 20;
  mc_heap_t *h = heap_new(cap);
  /* align far above the capacity: only offset 0 qualifies */
  assert_int_equal(alloc_ok(h, 1, 1ULL << 63), 0);
  uint64_t off = 99;
  assert_int_equal(mc_heap_alloc(h, 1, 1ULL << 63, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(mc_heap_alloc(h, 1, 1ULL << 40, &off), MC_ERR_NO_MEMORY);
  /* half the capacity: offset cap/2 is the one left */
  assert_int_equal(alloc_ok(h, 1, cap / 2), cap / 2);
  assert_int_equal(mc_heap_alloc(h, 1, cap / 2, &off), MC_ERR_NO_MEMORY);
  /* the padding in front of cap/2 stayed free and is usable */
  assert_stats(h, cap, 2, 2, cap / 2 - 1);
  /* two free ranges of cap/2 - 1 bytes are left, at 1 and at cap/2 + 1: both get used, in
   * whichever order the heap picks them */
  const uint64_t p1 = alloc_ok(h, cap / 2 - 1, 1);
  const uint64_t p2 = alloc_ok(h, cap / 2 - 1, 1);
  assert_true((p1 == 1 && p2 == cap / 2 + 1) || (p1 == cap / 2 + 1 && p2 == 1));
  assert_stats(h, cap, cap, 4, 0);
  assert_int_equal(mc_heap_free(h, 0), MC_OK);
  assert_int_equal(mc_heap_free(h, 1), MC_OK);
  assert_int_equal(mc_heap_free(h, cap / 2), MC_OK);
  assert_int_equal(mc_heap_free(h, cap / 2 + 1), MC_OK);
  assert_stats(h, cap, 0, 0, cap);
  mc_heap_destroy(h);

  /* the largest capacity: sizes and alignments near 2^64 must not overflow */
  h = heap_new(UINT64_MAX);
  /* a heap this large has several shards, and a thread starts in its own: the two offsets
   * aligned to 2^63 come back in either order */
  const uint64_t q1 = alloc_ok(h, 1ULL << 62, 1ULL << 63);
  const uint64_t q2 = alloc_ok(h, 1ULL << 62, 1ULL << 63);
  assert_true((q1 == 0 && q2 == 1ULL << 63) || (q1 == 1ULL << 63 && q2 == 0));
  assert_int_equal(mc_heap_alloc(h, 1ULL << 62, 1ULL << 63, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(mc_heap_alloc(h, UINT64_MAX, 1, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(mc_heap_alloc(h, UINT64_MAX - (1ULL << 63), 1ULL << 63, &off),
                   MC_ERR_NO_MEMORY);
  /* [2^62, 2^63) is the one free range that holds 2^62 bytes; the last one is a byte short */
  assert_int_equal(alloc_ok(h, 1ULL << 62, 1ULL << 62), 1ULL << 62);
  assert_int_equal(alloc_ok(h, (1ULL << 62) - 1, 1ULL << 62), 3ULL << 62); /* up to the end */
  assert_stats(h, UINT64_MAX, UINT64_MAX, 4, 0);
  assert_int_equal(mc_heap_free(h, 1ULL << 63), MC_OK);
  assert_int_equal(mc_heap_free(h, 0), MC_OK);
  assert_int_equal(mc_heap_free(h, 3ULL << 62), MC_OK);
  assert_int_equal(mc_heap_free(h, 1ULL << 62), MC_OK);
  assert_stats(h, UINT64_MAX, 0, 0, UINT64_MAX);
  assert_int_equal(alloc_ok(h, UINT64_MAX, 1), 0); /* exact fit of the whole space */
  mc_heap_destroy(h);
}

static void test_size_above_capacity(void **state) {
  (void)state;
  mc_heap_t *h = heap_new(4096);
  uint64_t off = 5;
  assert_int_equal(mc_heap_alloc(h, 4097, 1, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(mc_heap_alloc(h, UINT64_MAX, 1, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(mc_heap_alloc(h, UINT64_MAX, 1ULL << 63, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(mc_heap_alloc(h, 4096, 8192, &off), MC_OK); /* offset 0 is aligned */
  assert_int_equal(off, 0);
  assert_int_equal(mc_heap_free(h, 0), MC_OK);
  assert_int_equal(mc_heap_alloc(h, 4095, 1, &off), MC_OK);
  uint64_t off2 = 5;
  assert_int_equal(mc_heap_alloc(h, 2, 1, &off2), MC_ERR_NO_MEMORY);
  assert_int_equal(off2, 5);
  assert_stats(h, 4096, 4095, 1, 1);
  mc_heap_destroy(h);
}

static void test_exact_fit(void **state) {
  (void)state;
  /* whole capacity, power of two and not */
  const uint64_t caps[] = {4096, 1001, 999999, 3};
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
    mc_heap_t *h = heap_new(caps[i]);
    assert_int_equal(alloc_ok(h, caps[i], 1), 0);
    assert_stats(h, caps[i], caps[i], 1, 0);
    uint64_t off;
    assert_int_equal(mc_heap_alloc(h, 1, 1, &off), MC_ERR_NO_MEMORY);
    assert_int_equal(mc_heap_free(h, 0), MC_OK);
    assert_stats(h, caps[i], 0, 0, caps[i]);
    mc_heap_destroy(h);
  }
  /* a hole of exactly the request's size, between two live blocks, in a size class where
   * neighbouring sizes share a class (1000..1007 bytes) */
  mc_heap_t *h = heap_new(3003);
  const uint64_t a = alloc_ok(h, 1001, 1);
  const uint64_t b = alloc_ok(h, 1001, 1);
  const uint64_t c = alloc_ok(h, 1001, 1);
  assert_int_equal(mc_heap_free(h, b), MC_OK);
  assert_stats(h, 3003, 2002, 2, 1001);
  assert_int_equal(alloc_ok(h, 1001, 1), b);
  assert_int_equal(mc_heap_free(h, b), MC_OK);
  uint64_t off;
  assert_int_equal(mc_heap_alloc(h, 1002, 1, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(alloc_ok(h, 1000, 1), b); /* best fit in its own class */
  assert_stats(h, 3003, 3002, 3, 1);
  assert_int_equal(mc_heap_free(h, a), MC_OK);
  assert_int_equal(mc_heap_free(h, c), MC_OK);
  assert_int_equal(mc_heap_free(h, b), MC_OK);
  assert_stats(h, 3003, 0, 0, 3003);
  mc_heap_destroy(h);
}

/* The heap's last resort: no class above the request's own holds a range, and the newest range
 * of its own class is too small, but an older one of that class fits. It must be found, and a
 * request that none of them holds must fail. Sizes 1000..1007 share one class. */
static void test_own_class_scan(void **state) {
  (void)state;
  const uint64_t cap = 1007 + 1 + 1000 + 1 + 1001 + 1;
  mc_heap_t *h = heap_new(cap);
  const uint64_t a = alloc_ok(h, 1007, 1);
  const uint64_t s1 = alloc_ok(h, 1, 1);
  const uint64_t b = alloc_ok(h, 1000, 1);
  const uint64_t s2 = alloc_ok(h, 1, 1);
  const uint64_t c = alloc_ok(h, 1001, 1);
  const uint64_t s3 = alloc_ok(h, 1, 1);
  assert_stats(h, cap, cap, 6, 0);
  /* three holes of one class, freed oldest first: 1007, 1001, then 1000 (the newest) */
  assert_int_equal(mc_heap_free(h, a), MC_OK);
  assert_int_equal(mc_heap_free(h, c), MC_OK);
  assert_int_equal(mc_heap_free(h, b), MC_OK);
  assert_stats(h, cap, 3, 3, 1007);
  assert_int_equal(alloc_ok(h, 1005, 1), a); /* only the 1007 hole holds it */
  uint64_t off = 77;
  assert_int_equal(mc_heap_alloc(h, 1002, 1, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(off, 77);
  assert_int_equal(alloc_ok(h, 1001, 1), c);
  assert_int_equal(alloc_ok(h, 1000, 1), b);
  assert_stats(h, cap, cap - 2, 6, 2);
  const uint64_t all[] = {a, s1, b, s2, c, s3};
  for (size_t i = 0; i < 6; i++) assert_int_equal(mc_heap_free(h, all[i]), MC_OK);
  assert_stats(h, cap, 0, 0, cap);
  mc_heap_destroy(h);
}

/* ------------------------------------------------------------------ exhaustion, coalescing */

static void test_exhaustion_and_recovery(void **state) {
  (void)state;
  const uint64_t cap = 1 << 20, blk = 96;
  mc_heap_t *h = heap_new(cap);
  const size_t n_max = cap / blk;
  uint64_t *offs = calloc(n_max + 1, sizeof *offs);
  assert_non_null(offs);
  for (int round = 0; round < 3; round++) {
    size_t n = 0;
    uint64_t off;
    mc_status_t s;
    while ((s = mc_heap_alloc(h, blk, 32, &off)) == MC_OK) {
      assert_true(n < n_max);
      offs[n++] = off;
    }
    assert_int_equal(s, MC_ERR_NO_MEMORY);
    assert_int_equal(n, n_max); /* 96 is a multiple of 32: no padding anywhere */
    assert_stats(h, cap, n_max * blk, n_max, cap - n_max * blk);
    /* the remainder still serves a small request, then nothing fits */
    const uint64_t rest = alloc_ok(h, cap - n_max * blk, 1);
    assert_int_equal(rest, n_max * blk);
    assert_int_equal(mc_heap_alloc(h, 1, 1, &off), MC_ERR_NO_MEMORY);
    assert_int_equal(mc_heap_free(h, rest), MC_OK);
    /* free in a different order each round */
    for (size_t i = 0; i < n; i++) {
      const size_t k = round == 0 ? i : round == 1 ? n - 1 - i : (i * 7919) % n;
      assert_int_equal(mc_heap_free(h, offs[k]), MC_OK);
    }
    assert_stats(h, cap, 0, 0, cap);
  }
  free(offs);
  mc_heap_destroy(h);
}

static void test_fragmentation_then_coalescing(void **state) {
  (void)state;
  const uint64_t n = 4096, blk = 256, cap = n * blk;
  mc_heap_t *h = heap_new(cap);
  uint64_t *offs = malloc(n * sizeof *offs);
  assert_non_null(offs);
  for (uint64_t i = 0; i < n; i++) offs[i] = alloc_ok(h, blk, 1);
  assert_stats(h, cap, cap, n, 0);
  /* free every other block: half the heap is free, in 256-byte holes */
  for (uint64_t i = 0; i < n; i += 2) assert_int_equal(mc_heap_free(h, offs[i]), MC_OK);
  assert_stats(h, cap, cap / 2, n / 2, blk);
  uint64_t off = 0;
  /* plenty of free bytes, but no range of 257 */
  assert_int_equal(mc_heap_alloc(h, blk + 1, 1, &off), MC_ERR_NO_MEMORY);
  assert_int_equal(mc_heap_alloc(h, cap / 2, 1, &off), MC_ERR_NO_MEMORY);
  /* every hole starts at a multiple of 512: an exact, aligned fit */
  off = alloc_ok(h, blk, 512);
  assert_int_equal(off % 512, 0);
  assert_int_equal((off / blk) % 2, 0); /* it is one of the holes */
  assert_stats(h, cap, cap / 2 + blk, n / 2 + 1, blk);
  assert_int_equal(mc_heap_free(h, off), MC_OK);
  /* free the rest in a scrambled order: neighbours merge at once, so the largest free range
   * grows to the whole capacity exactly when the last block goes */
  uint64_t seed = 42;
  uint64_t left = n / 2;
  uint64_t *odd = malloc(left * sizeof *odd);
  assert_non_null(odd);
  for (uint64_t i = 0; i < left; i++) odd[i] = offs[2 * i + 1];
  for (uint64_t i = left; i > 1; i--) { /* Fisher-Yates */
    const uint64_t j = rng_below(&seed, i);
    const uint64_t t = odd[i - 1];
    odd[i - 1] = odd[j];
    odd[j] = t;
  }
  for (uint64_t i = 0; i < left; i++) {
    assert_int_equal(mc_heap_free(h, odd[i]), MC_OK);
    mc_heap_stats_t st = stats_of(h);
    assert_int_equal(st.allocations, left - 1 - i);
    assert_int_equal(st.used + st.free, cap);
    if (i + 1 < left) assert_true(st.largest_free < cap);
  }
  assert_stats(h, cap, 0, 0, cap);
  assert_int_equal(alloc_ok(h, cap, 1), 0); /* one range again */
  assert_int_equal(mc_heap_free(h, 0), MC_OK);
  free(odd);
  free(offs);
  mc_heap_destroy(h);
}

/* 100,000 live blocks of mixed sizes: all disjoint, inside the heap, counted right. */
static void test_many_live_blocks(void **state) {
  (void)state;
  const size_t n = 100000;
  const uint64_t cap = 64ULL << 20;
  mc_heap_t *h = heap_new(cap);
  uint64_t *offs = malloc(n * sizeof *offs);
  uint64_t *sizes = malloc(n * sizeof *sizes);
  uint64_t *sorted = malloc(2 * n * sizeof *sorted);
  assert_non_null(offs);
  assert_non_null(sizes);
  assert_non_null(sorted);
  uint64_t seed = 7, used = 0;
  for (size_t i = 0; i < n; i++) {
    sizes[i] = 1 + rng_below(&seed, 600);
    const uint64_t align = 1ULL << rng_below(&seed, 7);
    offs[i] = alloc_ok(h, sizes[i], align);
    used += sizes[i];
  }
  mc_heap_stats_t st = stats_of(h);
  assert_int_equal(st.allocations, n);
  assert_int_equal(st.used, used);
  assert_int_equal(st.free, cap - used);
  /* distinct starts, then no two ranges overlap: sort (start, size) pairs by start */
  for (size_t i = 0; i < n; i++) sorted[i] = offs[i];
  qsort(sorted, n, sizeof *sorted, cmp_u64);
  for (size_t i = 1; i < n; i++) assert_true(sorted[i] > sorted[i - 1]); /* distinct starts */
  for (size_t i = 0; i < n; i++) {
    sorted[2 * i] = offs[i];
    sorted[2 * i + 1] = sizes[i];
  }
  qsort(sorted, n, 2 * sizeof *sorted, cmp_u64); /* compares the start, the pair moves along */
  for (size_t i = 0; i < n; i++) {
    assert_true(sorted[2 * i] + sorted[2 * i + 1] <= cap);
    if (i > 0) assert_true(sorted[2 * (i - 1)] + sorted[2 * (i - 1) + 1] <= sorted[2 * i]);
  }
  /* free every third, then the rest in reverse */
  for (size_t i = 0; i < n; i += 3) assert_int_equal(mc_heap_free(h, offs[i]), MC_OK);
  st = stats_of(h);
  assert_int_equal(st.allocations, n - (n + 2) / 3);
  for (size_t i = n; i-- > 0;)
    if (i % 3 != 0) assert_int_equal(mc_heap_free(h, offs[i]), MC_OK);
  assert_stats(h, cap, 0, 0, cap);
  free(sorted);
  free(sizes);
  free(offs);
  mc_heap_destroy(h);
}

/* ------------------------------------------------------------------ threads */

/* Four threads share one heap and one ownership bitmap with a bit per byte of the heap. A
 * thread sets the bits of every range it gets and clears them before it frees the range; a
 * bit found already set means two live allocations overlap. cmocka's asserts must run on the
 * main thread, so the threads count failures and the main thread checks the counts. */
enum { kThreads = 4, kThreadCap = 1 << 20, kThreadLive = 256 };

struct shared {
  mc_heap_t *heap;
  _Atomic uint64_t bits[kThreadCap / 64];
  atomic_int overlaps;
  atomic_int errors;
  atomic_ullong allocs;
  int ops;
};

struct worker {
  struct shared *sh;
  uint64_t seed;
  uint64_t ok_allocs;
};

/* Sets (or clears) the bits of [off, off+len); returns 0 when some bit was already set (or,
 * when clearing, already clear). */
static int mark(struct shared *sh, uint64_t off, uint64_t len, int set) {
  int good = 1;
  while (len > 0) {
    const uint64_t w = off / 64, b = off % 64;
    const uint64_t n = len < 64 - b ? len : 64 - b;
    const uint64_t mask = (n == 64 ? ~0ULL : ((1ULL << n) - 1)) << b;
    if (set) {
      if (atomic_fetch_or(&sh->bits[w], mask) & mask) good = 0;
    } else {
      if ((atomic_fetch_and(&sh->bits[w], ~mask) & mask) != mask) good = 0;
    }
    off += n;
    len -= n;
  }
  return good;
}

static void *worker_main(void *arg) {
  struct worker *wk = arg;
  struct shared *sh = wk->sh;
  uint64_t offs[kThreadLive], lens[kThreadLive];
  int live = 0;
  for (int i = 0; i < sh->ops; i++) {
    if (live > 0 && (live == kThreadLive || rng_below(&wk->seed, 2))) {
      const int k = (int)rng_below(&wk->seed, (uint64_t)live);
      if (!mark(sh, offs[k], lens[k], 0)) atomic_fetch_add(&sh->overlaps, 1);
      if (mc_heap_free(sh->heap, offs[k]) != MC_OK) atomic_fetch_add(&sh->errors, 1);
      offs[k] = offs[live - 1];
      lens[k] = lens[live - 1];
      live--;
    } else {
      const uint64_t len = 1 + rng_below(&wk->seed, 2048);
      const uint64_t align = 1ULL << rng_below(&wk->seed, 9);
      uint64_t off;
      const mc_status_t s = mc_heap_alloc(sh->heap, len, align, &off);
      if (s == MC_OK) {
        if (off % align != 0 || off + len > kThreadCap) atomic_fetch_add(&sh->errors, 1);
        if (!mark(sh, off, len, 1)) atomic_fetch_add(&sh->overlaps, 1);
        offs[live] = off;
        lens[live] = len;
        live++;
        wk->ok_allocs++;
      } else if (s != MC_ERR_NO_MEMORY) {
        atomic_fetch_add(&sh->errors, 1);
      }
    }
    if (i % 1024 == 0) {
      mc_heap_stats_t st;
      st.size = sizeof st;
      if (mc_heap_stats(sh->heap, &st) != MC_OK || st.used + st.free != kThreadCap ||
          st.largest_free > st.free)
        atomic_fetch_add(&sh->errors, 1);
    }
  }
  while (live > 0) {
    live--;
    if (!mark(sh, offs[live], lens[live], 0)) atomic_fetch_add(&sh->overlaps, 1);
    if (mc_heap_free(sh->heap, offs[live]) != MC_OK) atomic_fetch_add(&sh->errors, 1);
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  struct shared *sh = calloc(1, sizeof *sh);
  assert_non_null(sh);
  sh->heap = heap_new(kThreadCap);
  sh->ops = 200000 * tu_scale();
  struct worker wk[kThreads];
  pthread_t th[kThreads];
  for (int t = 0; t < kThreads; t++) {
    wk[t].sh = sh;
    wk[t].seed = 1000 + (uint64_t)t;
    wk[t].ok_allocs = 0;
    assert_int_equal(pthread_create(&th[t], NULL, worker_main, &wk[t]), 0);
  }
  for (int t = 0; t < kThreads; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
  assert_int_equal(atomic_load(&sh->overlaps), 0);
  assert_int_equal(atomic_load(&sh->errors), 0);
  for (int t = 0; t < kThreads; t++) assert_true(wk[t].ok_allocs > (uint64_t)sh->ops / 4);
  for (size_t i = 0; i < kThreadCap / 64; i++) assert_int_equal(atomic_load(&sh->bits[i]), 0);
  assert_stats(sh->heap, kThreadCap, 0, 0, kThreadCap);
  mc_heap_destroy(sh->heap);
  free(sh);
}

/* ------------------------------------------------------------------ randomized model test */

/* The reference model: a bit per byte of the heap (set: owned by a live allocation) and, per
 * byte offset, the index of the live allocation starting there (-1: none). Each step checks
 * the heap's answer against the model: a new range must be aligned, inside the heap and on
 * clear bits only; a free must succeed exactly at live starts; the counters must match; and
 * NO_MEMORY must be honest: no run of clear bits of size + align - 1 bytes (size bytes with
 * align 1) may exist. The largest run of clear bits is also compared with largest_free, which
 * holds because freed neighbours merge at once. */
enum { kModelCap = 1 << 18, kModelLive = 2048 };

struct model {
  uint64_t bits[kModelCap / 64];
  int32_t start_of[kModelCap];
  uint64_t off[kModelLive], len[kModelLive];
  int live;
  uint64_t used;
};

static int range_clear(const struct model *m, uint64_t off, uint64_t len) {
  while (len > 0) {
    const uint64_t w = off / 64, b = off % 64;
    const uint64_t n = len < 64 - b ? len : 64 - b;
    const uint64_t mask = (n == 64 ? ~0ULL : ((1ULL << n) - 1)) << b;
    if (m->bits[w] & mask) return 0;
    off += n;
    len -= n;
  }
  return 1;
}

static void range_flip(struct model *m, uint64_t off, uint64_t len) {
  while (len > 0) {
    const uint64_t w = off / 64, b = off % 64;
    const uint64_t n = len < 64 - b ? len : 64 - b;
    m->bits[w] ^= (n == 64 ? ~0ULL : ((1ULL << n) - 1)) << b;
    off += n;
    len -= n;
  }
}

/* The longest run of clear bits: the largest free range. Word at a time: whole words of clear
 * or set bits are common, and the gaps inside a mixed word are found from its set bits. */
static uint64_t model_largest_free(const struct model *m) {
  uint64_t best = 0, run = 0;
  for (size_t w = 0; w < kModelCap / 64; w++) {
    uint64_t x = m->bits[w];
    if (x == 0) {
      run += 64;
      continue;
    }
    int prev = -1; /* the last set bit seen in this word */
    while (x) {
      const int b = __builtin_ctzll(x);
      run += (uint64_t)(b - prev - 1);
      if (run > best) best = run;
      run = 0;
      prev = b;
      x &= x - 1;
    }
    run = (uint64_t)(63 - prev);
  }
  return run > best ? run : best;
}

static uint64_t random_size(uint64_t *seed) {
  const uint64_t r = rng_below(seed, 100);
  if (r < 50) return 1 + rng_below(seed, 64);
  if (r < 85) return 1 + rng_below(seed, 1024);
  if (r < 98) return 1 + rng_below(seed, 8192);
  return 1 + rng_below(seed, kModelCap / 2);
}

static uint64_t random_align(uint64_t *seed) {
  const uint64_t r = rng_below(seed, 100);
  if (r < 40) return 1;
  if (r < 95) return 1ULL << rng_below(seed, 8); /* 1..128 */
  if (r < 99) return 1ULL << rng_below(seed, 17);
  return 1ULL << (17 + rng_below(seed, 47)); /* up to 2^63: beyond the capacity */
}

static void check_counters(const mc_heap_t *h, const struct model *m) {
  const mc_heap_stats_t st = stats_of(h);
  assert_int_equal(st.capacity, kModelCap);
  assert_int_equal(st.used, m->used);
  assert_int_equal(st.free, kModelCap - m->used);
  assert_int_equal(st.allocations, (uint64_t)m->live);
  assert_true(st.largest_free <= st.free);
}

static void test_model_random(void **state) {
  (void)state;
  struct model *m = calloc(1, sizeof *m);
  assert_non_null(m);
  memset(m->start_of, 0xff, sizeof m->start_of);
  mc_heap_t *h = heap_new(kModelCap);
  uint64_t seed = 20240601;
  const long ops = 1000000L * tu_scale();
  long n_alloc = 0, n_nomem = 0, n_free = 0, n_notfound = 0;
  for (long i = 0; i < ops; i++) {
    const uint64_t r = rng_below(&seed, 100);
    if (r < 50 && m->live < kModelLive) {
      const uint64_t size = random_size(&seed), align = random_align(&seed);
      uint64_t off = 0xDEAD;
      const mc_status_t s = mc_heap_alloc(h, size, align, &off);
      if (s == MC_OK) {
        assert_int_equal(off % align, 0);
        assert_true(off < kModelCap && size <= kModelCap - off);
        if (!range_clear(m, off, size))
          fail_msg("step %ld: [%llu, +%llu) overlaps a live allocation", i,
                   (unsigned long long)off, (unsigned long long)size);
        range_flip(m, off, size);
        m->start_of[off] = m->live;
        m->off[m->live] = off;
        m->len[m->live] = size;
        m->live++;
        m->used += size;
        n_alloc++;
      } else {
        assert_int_equal(s, MC_ERR_NO_MEMORY);
        assert_int_equal(off, 0xDEAD);
        /* honest failure: no range that would hold the request at any alignment. The heap's
         * largest_free is checked against the model's every 16th failure (a full scan costs
         * too much to do each time) and every 4096 steps. */
        const uint64_t largest = stats_of(h).largest_free;
        if (n_nomem % 16 == 0) assert_int_equal(largest, model_largest_free(m));
        const uint64_t need = align - 1 > kModelCap ? UINT64_MAX : size + align - 1;
        if (largest >= (align == 1 ? size : need))
          fail_msg("step %ld: NO_MEMORY for %llu bytes at align %llu with a free range of %llu",
                   i, (unsigned long long)size, (unsigned long long)align,
                   (unsigned long long)largest);
        n_nomem++;
      }
    } else if (r < 96 && m->live > 0) {
      const int k = (int)rng_below(&seed, (uint64_t)m->live);
      const uint64_t off = m->off[k], len = m->len[k];
      assert_int_equal(mc_heap_free(h, off), MC_OK);
      range_flip(m, off, len);
      m->start_of[off] = -1;
      m->used -= len;
      m->live--;
      if (k != m->live) { /* keep the arrays dense */
        m->off[k] = m->off[m->live];
        m->len[k] = m->len[m->live];
        m->start_of[m->off[k]] = k;
      }
      n_free++;
      if (rng_below(&seed, 8) == 0) { /* a double free now and then */
        assert_int_equal(mc_heap_free(h, off), MC_ERR_NOT_FOUND);
        n_notfound++;
      }
    } else {
      /* free of a random offset: must work exactly when a live allocation starts there */
      const uint64_t off = rng_below(&seed, kModelCap + 16);
      const int k = off < kModelCap ? m->start_of[off] : -1;
      if (k >= 0) continue; /* would free a live block: the branch above covers that */
      assert_int_equal(mc_heap_free(h, off), MC_ERR_NOT_FOUND);
      n_notfound++;
    }
    check_counters(h, m);
    if (i % 4096 == 0) assert_int_equal(stats_of(h).largest_free, model_largest_free(m));
  }
  print_message("%ld steps: %ld allocs, %ld NO_MEMORY, %ld frees, %ld NOT_FOUND\n", ops, n_alloc,
                n_nomem, n_free, n_notfound);
  /* every path was taken */
  assert_true(n_alloc > ops / 10);
  assert_true(n_nomem > 100);
  assert_true(n_free > ops / 10);
  assert_true(n_notfound > 1000);
  while (m->live > 0) {
    m->live--;
    assert_int_equal(mc_heap_free(h, m->off[m->live]), MC_OK);
  }
  assert_stats(h, kModelCap, 0, 0, kModelCap);
  mc_heap_destroy(h);
  free(m);
}

/* ------------------------------------------------------------------ main */

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_invalid),
      cmocka_unit_test(test_alloc_invalid),
      cmocka_unit_test(test_free_invalid),
      cmocka_unit_test(test_stats_sizes),
      cmocka_unit_test(test_align_one),
      cmocka_unit_test(test_huge_align),
      cmocka_unit_test(test_size_above_capacity),
      cmocka_unit_test(test_exact_fit),
      cmocka_unit_test(test_own_class_scan),
      cmocka_unit_test(test_exhaustion_and_recovery),
      cmocka_unit_test(test_fragmentation_then_coalescing),
      cmocka_unit_test(test_many_live_blocks),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_model_random),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
