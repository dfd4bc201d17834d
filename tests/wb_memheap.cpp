// White-box tests of mc::MemHeap's shards: heaps forced into several shards (small capacities,
// so that requests cross shard boundaries all the time), checked against a model of the live
// ranges; allocations across shards and their pieces; several threads on one sharded heap with
// allocations across shards among them. tests/test_memheap.c covers the public API (heaps that
// small have one shard); tests/fuzz/fuzz_memheap.cc fuzzes both.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "memheap/memheap.h"

extern "C" {
#include <cmocka.h>
}

using mc::MemHeap;

namespace {

int scale() {
  const char *s = getenv("MC_TEST_SCALE");
  int v = s ? atoi(s) : 1;
  return v > 0 ? v : 1;
}

std::unique_ptr<MemHeap> make_heap(uint64_t cap, unsigned shards) {
  std::unique_ptr<MemHeap> h;
  const mc::Status s = MemHeap::create(cap, &h, shards);
  if (!s.ok()) fail_msg("create %llu / %u: %s", (unsigned long long)cap, shards, s.message().c_str());
  assert_int_equal(h->shards(), shards);
  return h;
}

uint64_t alloc_ok(MemHeap &h, uint64_t size, uint64_t align) {
  uint64_t off = 0;
  const mc::Status s = h.alloc(size, align, &off);
  if (!s.ok()) fail_msg("alloc %llu at %llu: %s", (unsigned long long)size, (unsigned long long)align,
                        s.message().c_str());
  assert_int_equal(off % align, 0);
  return off;
}

void check_ok(const MemHeap &h) {
  const mc::Status s = h.check_invariants();
  if (!s.ok()) fail_msg("%s", s.message().c_str());
}

void expect_stats(const MemHeap &h, uint64_t used, uint64_t allocations, uint64_t largest) {
  const MemHeap::Stats s = h.stats();
  assert_int_equal(s.used, used);
  assert_int_equal(s.free, s.capacity - used);
  assert_int_equal(s.allocations, allocations);
  assert_int_equal(s.largest_free, largest);
}

// The reference: live ranges by start.
struct Model {
  uint64_t capacity;
  std::map<uint64_t, uint64_t> live;
  uint64_t used = 0;
  uint64_t LargestGap() const {
    uint64_t best = 0, at = 0;
    for (const auto &[start, size] : live) {
      best = std::max(best, start - at);
      at = start + size;
    }
    return std::max(best, capacity - at);
  }
  bool Overlaps(uint64_t off, uint64_t size) const {
    auto it = live.upper_bound(off);
    if (it != live.end() && it->first < off + size) return true;
    if (it == live.begin()) return false;
    --it;
    return it->first + it->second > off;
  }
};

void check_model(const MemHeap &h, const Model &m) {
  const MemHeap::Stats s = h.stats();
  assert_int_equal(s.capacity, m.capacity);
  assert_int_equal(s.used, m.used);
  assert_int_equal(s.free, m.capacity - m.used);
  assert_int_equal(s.allocations, m.live.size());
  assert_int_equal(s.largest_free, m.LargestGap());
}

// 4 shards of 1 KiB: an allocation across three of them, its pieces, its free.
void test_span_basics(void **) {
  auto h = make_heap(4096, 4);
  check_ok(*h);
  expect_stats(*h, 0, 0, 4096);  // four wholly free shards are one free range
  const uint64_t a = alloc_ok(*h, 3000, 1);  // no shard holds it alone
  assert_true(a + 3000 <= 4096);
  check_ok(*h);
  expect_stats(*h, 3000, 1, 4096 - 3000);
  // The shard boundaries inside it and its inside are no allocations; a second free fails.
  for (uint64_t b : {uint64_t(1024), uint64_t(2048), uint64_t(3072), a + 1, a + 2999})
    if (b > a && b < a + 3000) assert_int_equal(h->free(b).code(), MC_ERR_NOT_FOUND);
  check_ok(*h);
  assert_true(h->free(a).ok());
  assert_int_equal(h->free(a).code(), MC_ERR_NOT_FOUND);
  check_ok(*h);
  expect_stats(*h, 0, 0, 4096);

  // The whole capacity, then nothing; aligned across a boundary.
  assert_int_equal(alloc_ok(*h, 4096, 1), 0);
  uint64_t off = 7;
  assert_int_equal(h->alloc(1, 1, &off).code(), MC_ERR_NO_MEMORY);
  assert_int_equal(off, 7);  // not written on failure
  assert_true(h->free(0).ok());
  // One 1000-byte block per shard (24 bytes left at the end of each), then free the two blocks
  // of shards 1 and 2: one free run from 1000 to 3072, across two boundaries.
  std::vector<uint64_t> offs;
  uint64_t o;
  while (h->alloc(1000, 8, &o).ok()) offs.push_back(o);
  assert_int_equal(offs.size(), 4);  // 4 x 1000 + 96 left in pieces of 24: no 1000 more
  check_ok(*h);
  std::sort(offs.begin(), offs.end());
  assert_true(h->free(offs[1]).ok());  // [1024, 2024)
  assert_true(h->free(offs[2]).ok());  // [2048, 3048)
  // Free now: [1000, 3072) and 24 bytes at the end of shard 3.
  expect_stats(*h, 2000, 2, 2072);
  const uint64_t s = alloc_ok(*h, 2048, 1024);
  assert_int_equal(s, 1024);
  check_ok(*h);
  expect_stats(*h, 4048, 3, 24);
  assert_int_equal(h->alloc(25, 1, &o).code(), MC_ERR_NO_MEMORY);
  assert_true(h->free(s).ok());
  assert_true(h->free(offs[0]).ok());
  assert_true(h->free(offs[3]).ok());
  check_ok(*h);
  expect_stats(*h, 0, 0, 4096);
}

// An odd capacity: the last shard takes the rest; shard counts the capacity cannot carry fail.
void test_shard_layout(void **) {
  std::unique_ptr<MemHeap> h;
  assert_int_equal(MemHeap::create(100, &h, 3).code(), MC_ERR_INVALID_ARG);
  assert_int_equal(MemHeap::create(100, &h, 128).code(), MC_ERR_INVALID_ARG);
  assert_int_equal(MemHeap::create(3, &h, 4).code(), MC_ERR_INVALID_ARG);
  assert_null(h.get());
  h = make_heap(1000, 8);  // shards of 64 bytes, the last one 552
  check_ok(*h);
  expect_stats(*h, 0, 0, 1000);
  assert_int_equal(alloc_ok(*h, 1000, 1), 0);
  check_ok(*h);
  expect_stats(*h, 1000, 1, 0);
  assert_true(h->free(0).ok());
  expect_stats(*h, 0, 0, 1000);
  // The automatic count: one shard for a small heap, a power of two within bounds for others.
  assert_int_equal(MemHeap::auto_shards(1 << 20), 1);
  for (uint64_t cap : {uint64_t(64) << 20, uint64_t(1) << 30, UINT64_MAX}) {
    const unsigned n = MemHeap::auto_shards(cap);
    assert_true(n >= 1 && n <= MemHeap::kMaxShards && (n & (n - 1)) == 0);
    assert_true(cap / n >= MemHeap::kMinShardBytes);
  }
}

// Random allocs and frees against the model on heaps forced into many shards.
void test_model_sharded(void **) {
  struct Case {
    uint64_t cap;
    unsigned shards;
  };
  const Case cases[] = {{4096, 4}, {65536, 8}, {3001, 2}, {1 << 20, 64}, {777, 16}};
  const int steps = 60000 * scale();
  for (const Case &c : cases) {
    auto h = make_heap(c.cap, c.shards);
    Model m{c.cap, {}, 0};
    std::mt19937_64 rng(c.cap * 31 + c.shards);
    const uint64_t shard_len = uint64_t(1) << (63 - __builtin_clzll(c.cap / c.shards));
    uint64_t allocs = 0, spans_seen = 0, refusals = 0;
    for (int step = 0; step < steps; ++step) {
      const int op = int(rng() % 10);
      if (op < 5) {
        uint64_t size;
        switch (rng() % 4) {
          case 0: size = 1 + rng() % 16; break;
          case 1: size = 1 + rng() % (shard_len / 2 + 1); break;
          case 2: size = 1 + rng() % (shard_len * 3); break;  // often across shards
          default: size = 1 + rng() % c.cap; break;
        }
        const uint64_t align = uint64_t(1) << (rng() % 4 == 0 ? rng() % 12 : 0);
        uint64_t off = 0xABCD;
        const mc::Status s = h->alloc(size, align, &off);
        if (s.ok()) {
          assert_int_equal(off % align, 0);
          assert_true(off < c.cap && size <= c.cap - off);
          assert_false(m.Overlaps(off, size));
          m.live.emplace(off, size);
          m.used += size;
          ++allocs;
          if (off / shard_len != (off + size - 1) / shard_len) ++spans_seen;
        } else {
          assert_int_equal(s.code(), MC_ERR_NO_MEMORY);
          assert_int_equal(off, 0xABCD);
          const uint64_t gap = m.LargestGap();
          const bool room = align == 1 ? gap >= size : gap >= size + align - 1;
          if (room)
            fail_msg("NO_MEMORY for %llu at %llu with a free range of %llu (cap %llu, %u shards)",
                     (unsigned long long)size, (unsigned long long)align, (unsigned long long)gap,
                     (unsigned long long)c.cap, c.shards);
        }
      } else if (op < 8 && !m.live.empty()) {
        auto it = std::next(m.live.begin(), long(rng() % m.live.size()));
        const uint64_t off = it->first, size = it->second;
        if (op == 7 && size > 1) {
          // Inside it, at a shard boundary inside it when there is one: refused.
          uint64_t inside = off + 1 + rng() % (size - 1);
          const uint64_t b = (off / shard_len + 1) * shard_len;
          if (b < off + size && rng() % 2) inside = b;
          assert_int_equal(h->free(inside).code(), MC_ERR_NOT_FOUND);
          ++refusals;
        } else {
          assert_true(h->free(off).ok());
          assert_int_equal(h->free(off).code(), MC_ERR_NOT_FOUND);
          m.used -= size;
          m.live.erase(it);
        }
      } else {
        const uint64_t off = rng() % (c.cap + 1);
        const mc::Status s = h->free(off);
        auto it = m.live.find(off);
        if (it != m.live.end()) {
          assert_true(s.ok());
          m.used -= it->second;
          m.live.erase(it);
        } else {
          assert_int_equal(s.code(), MC_ERR_NOT_FOUND);
        }
      }
      check_model(*h, m);
      if (step % 64 == 0) check_ok(*h);
    }
    for (const auto &[off, size] : m.live) assert_true(h->free(off).ok());
    m.live.clear();
    m.used = 0;
    check_model(*h, m);
    check_ok(*h);
    assert_int_equal(h->stats().largest_free, c.cap);
    std::printf("  cap %llu, %u shards: %llu allocations (%llu across shards), %llu refused frees "
                "inside\n",
                (unsigned long long)c.cap, c.shards, (unsigned long long)allocs,
                (unsigned long long)spans_seen, (unsigned long long)refusals);
    assert_true(spans_seen > 100);  // the case does what it is for
  }
}

// 4 threads on one heap of 8 shards, sizes up to 3 shards: each 64-byte granule has an owner
// word that an allocation must find 0 and a free must find its own; no error, no overlap, and
// all free at the end.
void test_threads_sharded(void **) {
  constexpr uint64_t kCap = 1 << 20;
  constexpr unsigned kShards = 8;
  constexpr int kThreads = 4;
  auto h = make_heap(kCap, kShards);
  std::vector<std::atomic<uint32_t>> owner(kCap / 64);
  std::atomic<uint64_t> errors{0}, overlaps{0}, spans{0};
  const int ops = 40000 * scale();
  auto work = [&](uint32_t id) {
    std::mt19937_64 rng(id * 7919 + 1);
    std::vector<std::pair<uint64_t, uint64_t>> mine;
    auto mark = [&](uint64_t off, uint64_t size, uint32_t from, uint32_t to) {
      for (uint64_t g = off / 64; g < (off + size) / 64; ++g) {
        uint32_t want = from;
        if (!owner[g].compare_exchange_strong(want, to)) overlaps.fetch_add(1);
      }
    };
    for (int i = 0; i < ops; ++i) {
      if (mine.size() < 8 && rng() % 3 != 0) {
        const uint64_t size = 64 * (1 + (rng() % 4 == 0 ? rng() % (3 * kCap / kShards / 64)
                                                        : rng() % 16));
        uint64_t off;
        const mc::Status s = h->alloc(size, 64, &off);
        if (s.ok()) {
          mark(off, size, 0, id);
          mine.emplace_back(off, size);
          if (off / (kCap / kShards) != (off + size - 1) / (kCap / kShards)) spans.fetch_add(1);
        } else if (s.code() != MC_ERR_NO_MEMORY) {
          errors.fetch_add(1);
        }
      } else if (!mine.empty()) {
        const size_t k = rng() % mine.size();
        const auto [off, size] = mine[k];
        mark(off, size, id, 0);
        if (!h->free(off).ok()) errors.fetch_add(1);
        mine[k] = mine.back();
        mine.pop_back();
      }
      if (i % 1024 == 0 && !h->check_invariants().ok()) errors.fetch_add(1);
    }
    for (const auto &[off, size] : mine) {
      mark(off, size, id, 0);
      if (!h->free(off).ok()) errors.fetch_add(1);
    }
  };
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t) th.emplace_back(work, uint32_t(t + 1));
  for (auto &t : th) t.join();
  assert_int_equal(errors.load(), 0);
  assert_int_equal(overlaps.load(), 0);
  std::printf("  %d threads x %d steps: %llu allocations across shards\n", kThreads, ops,
              (unsigned long long)spans.load());
  assert_true(spans.load() > 50);
  check_ok(*h);
  expect_stats(*h, 0, 0, kCap);
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_span_basics),
      cmocka_unit_test(test_shard_layout),
      cmocka_unit_test(test_model_sharded),
      cmocka_unit_test(test_threads_sharded),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
