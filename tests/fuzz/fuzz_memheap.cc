// libFuzzer target for mc::MemHeap: the input drives a sequence of allocs and frees (valid and
// invalid) on one heap, checked step by step against a model, an ordered map of the live
// ranges. Any disagreement aborts. The heap's shard count comes from the input too. Build and run: scripts/fuzz-memheap.sh [seconds].
//
// Checked after every step: the heap's answer (status, offset) against the model, the stats
// against the model (used, free, allocations, largest_free equal to the largest gap between
// live ranges), and MemHeap::check_invariants() (the internal structures agree with each other;
// after the first 64 steps only every 8th step, and at the end).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>

#include "memheap/memheap.h"

namespace {

#define CHECK(cond, ...)                                            \
  do {                                                              \
    if (!(cond)) {                                                  \
      std::fprintf(stderr, "fuzz_memheap: check failed: %s: ", #cond); \
      std::fprintf(stderr, __VA_ARGS__);                            \
      std::fputc('\n', stderr);                                     \
      std::abort();                                                 \
    }                                                               \
  } while (0)

using u64 = uint64_t;

struct Model {
  u64 capacity = 0;
  std::map<u64, u64> live;  // start -> size
  u64 used = 0;

  // The largest gap between live ranges: with merging at once, the largest free range.
  u64 LargestGap() const {
    u64 best = 0, at = 0;
    for (const auto &[start, size] : live) {
      best = std::max(best, start - at);
      at = start + size;
    }
    return std::max(best, capacity - at);
  }
  bool Overlaps(u64 off, u64 size) const {
    auto it = live.upper_bound(off);  // first range starting after off
    if (it != live.end() && it->first < off + size) return true;
    if (it == live.begin()) return false;
    --it;  // the last range starting at or before off
    return it->first + it->second > off;
  }
};

u64 PickCapacity(FuzzedDataProvider &in) {
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: return in.ConsumeIntegralInRange<u64>(1, 64);
    case 1: return in.ConsumeIntegralInRange<u64>(1, 1 << 16);
    case 2: {  // around a power of two, where size classes change
      const int k = in.ConsumeIntegralInRange<int>(0, 40);
      const u64 base = u64(1) << k;
      return std::max<u64>(1, base + in.ConsumeIntegralInRange<u64>(0, 2) - 1);
    }
    case 3: return UINT64_MAX - in.ConsumeIntegralInRange<u64>(0, 1000);
    default: return in.ConsumeIntegral<u64>() | 1;
  }
}

u64 PickSize(FuzzedDataProvider &in, const Model &m) {
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return 0;  // invalid
    case 1: return in.ConsumeIntegralInRange<u64>(1, 16);
    case 2: return in.ConsumeIntegralInRange<u64>(1, 4096);
    case 3: return m.capacity;
    case 4: return m.capacity - m.used;  // exactly what is free, when it is one range
    case 5: return UINT64_MAX - in.ConsumeIntegralInRange<u64>(0, 3);
    case 6: return in.ConsumeIntegralInRange<u64>(1, m.capacity);
    default: return in.ConsumeIntegral<u64>();
  }
}

u64 PickAlign(FuzzedDataProvider &in) {
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: return 1;
    case 1: return u64(1) << in.ConsumeIntegralInRange<int>(0, 12);
    case 2: return u64(1) << in.ConsumeIntegralInRange<int>(0, 63);
    default: return in.ConsumeIntegral<u64>();  // mostly not a power of two: invalid
  }
}

// deep: also run check_invariants, which walks every size class (thousands for a large
// capacity) and would otherwise dominate the run time.
void CheckState(const mc::MemHeap &h, const Model &m, bool deep = true) {
  const mc::MemHeap::Stats s = h.stats();
  CHECK(s.capacity == m.capacity, "%llu", (unsigned long long)s.capacity);
  CHECK(s.used == m.used, "heap %llu model %llu", (unsigned long long)s.used,
        (unsigned long long)m.used);
  CHECK(s.free == m.capacity - m.used, "%llu", (unsigned long long)s.free);
  CHECK(s.allocations == m.live.size(), "heap %llu model %zu",
        (unsigned long long)s.allocations, m.live.size());
  const u64 gap = m.LargestGap();
  CHECK(s.largest_free == gap, "heap %llu model %llu", (unsigned long long)s.largest_free,
        (unsigned long long)gap);
  if (!deep) return;
  const mc::Status inv = h.check_invariants();
  CHECK(inv.ok(), "%s", inv.message().c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  Model m;
  m.capacity = PickCapacity(in);
  // Shards: the automatic count (one below 2 * kMinShardBytes), or 2^k forced, which puts
  // small heaps in many shards so that allocations cross shard boundaries.
  const int shard_log = in.ConsumeIntegralInRange<int>(-1, 3);
  unsigned shards = shard_log < 0 ? 0 : 1u << shard_log;
  while (shards > m.capacity) shards /= 2;
  std::unique_ptr<mc::MemHeap> heap;
  CHECK(mc::MemHeap::create(m.capacity, &heap, shards).ok(), "create %llu with %u shards",
        (unsigned long long)m.capacity, shards);
  CHECK(!mc::MemHeap::create(0, &heap).ok(), "capacity 0 accepted");
  mc::MemHeap &h = *heap;
  CheckState(h, m);

  for (int step = 0; step < 1000 && in.remaining_bytes() > 0; ++step) {
    const int op = in.ConsumeIntegralInRange<int>(0, 9);
    if (op <= 4) {  // alloc
      const u64 sz = PickSize(in, m);
      const u64 align = PickAlign(in);
      u64 off = 0xFEEDFACE;
      const mc::Status s = h.alloc(sz, align, &off);
      const bool valid = sz != 0 && align != 0 && (align & (align - 1)) == 0;
      if (!valid) {
        CHECK(s.code() == MC_ERR_INVALID_ARG, "size %llu align %llu gave %d",
              (unsigned long long)sz, (unsigned long long)align, s.code());
        CHECK(off == 0xFEEDFACE, "offset written on failure");
      } else if (s.ok()) {
        CHECK(off % align == 0, "offset %llu align %llu", (unsigned long long)off,
              (unsigned long long)align);
        CHECK(off < m.capacity && sz <= m.capacity - off, "[%llu, +%llu) outside %llu",
              (unsigned long long)off, (unsigned long long)sz, (unsigned long long)m.capacity);
        CHECK(!m.Overlaps(off, sz), "[%llu, +%llu) overlaps a live range",
              (unsigned long long)off, (unsigned long long)sz);
        m.live.emplace(off, sz);
        m.used += sz;
      } else {
        CHECK(s.code() == MC_ERR_NO_MEMORY, "code %d", s.code());
        CHECK(off == 0xFEEDFACE, "offset written on failure");
        // The promise: NO_MEMORY only when no free range holds size + align - 1 bytes (size
        // bytes when align is 1).
        const u64 gap = m.LargestGap();
        const bool room = align == 1 ? gap >= sz
                                     : (align - 1 <= UINT64_MAX - sz && gap >= sz + align - 1);
        CHECK(!room, "NO_MEMORY for %llu at align %llu with a free range of %llu",
              (unsigned long long)sz, (unsigned long long)align, (unsigned long long)gap);
      }
    } else if (op <= 7 && !m.live.empty()) {  // free a live range
      const size_t k = in.ConsumeIntegralInRange<size_t>(0, m.live.size() - 1);
      auto it = std::next(m.live.begin(), long(k));
      const u64 off = it->first;
      if (op == 7 && it->second > 1) {  // inside it instead: must be refused
        const u64 inside = off + in.ConsumeIntegralInRange<u64>(1, it->second - 1);
        CHECK(h.free(inside).code() == MC_ERR_NOT_FOUND, "free inside a range accepted");
      } else {
        CHECK(h.free(off).ok(), "free of live %llu failed", (unsigned long long)off);
        m.used -= it->second;
        m.live.erase(it);
        CHECK(h.free(off).code() == MC_ERR_NOT_FOUND, "double free accepted");
      }
    } else {  // free an arbitrary offset
      const u64 off = in.ConsumeIntegral<u64>() % (m.capacity == UINT64_MAX ? m.capacity
                                                                             : m.capacity + 1);
      auto it = m.live.find(off);
      const mc::Status s = h.free(off);
      if (it != m.live.end()) {
        CHECK(s.ok(), "free of live %llu failed", (unsigned long long)off);
        m.used -= it->second;
        m.live.erase(it);
      } else {
        CHECK(s.code() == MC_ERR_NOT_FOUND, "free of %llu gave %d", (unsigned long long)off,
              s.code());
      }
    }
    // The stats every step; the deep walk on the first steps (short inputs are most of the
    // corpus) and then every 8th.
    CheckState(h, m, step < 64 || step % 8 == 0);
  }

  // Freeing everything leaves one range of the whole capacity.
  for (const auto &[off, sz] : m.live) CHECK(h.free(off).ok(), "final free");
  m.live.clear();
  m.used = 0;
  CheckState(h, m);
  CHECK(h.stats().largest_free == m.capacity, "not one range after freeing everything");
  return 0;
}
