// MemHeap: an offset allocator over [0, capacity) that never hands out overlapping ranges.
//
// It manages numbers, not memory: callers add the offsets it returns to a base of their own (a
// registered buffer, a QP control area). Every function is thread-safe. A heap of at least
// 2 * kMinShardBytes is cut into a few shards (a power of two, up to twice the hardware
// threads, each at least kMinShardBytes), each with its own spin lock that yields and then naps
// when it waits long, never held across anything but the heap's own bookkeeping. A thread
// allocates from its own shard first (threads are spread over them in the order they first
// allocate), so threads that allocate at the same time mostly take different locks; a free takes
// the lock of the shard that holds the offset.
//
// Guarantees (shard boundaries are invisible in all of them: a "free range" is a maximal run of
// free bytes, whichever shards it lies in):
//  - alloc returns an offset that is a multiple of align, with [offset, offset+size) inside the
//    heap and outside every other live allocation.
//  - Alignment padding in front of an allocation stays free, so `used` is exactly the sum of the
//    live sizes and used + free == capacity at all times.
//  - Freed neighbours merge at once: freeing everything leaves one free range of the whole
//    capacity.
//  - alloc fails with MC_ERR_NO_MEMORY only when no free range could hold the request at any
//    alignment, i.e. no free range has size + align - 1 bytes (with align 1: no free range has
//    size bytes). A request with align > 1 may also succeed in a smaller range that happens to be
//    aligned well; it is not promised to. When no single shard holds a request, the heap takes
//    every shard's lock and places it on a free run across shard boundaries if one holds it.
//  - alloc and free take O(1) time in the common case (a few bit scans, list links and,
//    expected, one hash bucket; plus the amortized growth of internal arrays). An alloc that
//    its own shard cannot serve tries the others (O(shards)); one that finds no free range in
//    any size class of a shard above the request's own (for align > 1: above the class of
//    size + align - 1) walks that one class's free ranges, O(ranges in that class), since one of
//    them may still hold the request. An allocation across shards and its free hold every lock
//    and cost O(shards + log spanning allocations). stats() holds every lock and walks the
//    ranges of each shard's largest non-empty class. There is no limit on live allocations but
//    memory (about 64 bytes each).
//  - A call that fails changes nothing.
//  - Bookkeeping memory stays at its high-water mark until the heap is destroyed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "util/status.h"

namespace mc {

class MemHeap {
 public:
  struct Stats {
    uint64_t capacity = 0;
    uint64_t used = 0;          // sum of the live allocations' sizes
    uint64_t free = 0;          // capacity - used
    uint64_t largest_free = 0;  // the largest free range
    uint64_t allocations = 0;   // live allocations
  };

  static constexpr uint64_t kMinShardBytes = 16ull << 20;
  static constexpr unsigned kMaxShards = 64;

  // capacity 0 is MC_ERR_INVALID_ARG. shards 0 picks the count (auto_shards); otherwise it must
  // be a power of two up to kMaxShards and at most capacity (tests force small heaps into many
  // shards this way). *out is written only on success.
  static Status create(uint64_t capacity, std::unique_ptr<MemHeap> *out, unsigned shards = 0);
  // The shard count create picks for a capacity on this machine.
  static unsigned auto_shards(uint64_t capacity);

  ~MemHeap();
  MemHeap(const MemHeap &) = delete;
  MemHeap &operator=(const MemHeap &) = delete;

  // size 0 or align not a power of two: MC_ERR_INVALID_ARG; no room: MC_ERR_NO_MEMORY (see the
  // guarantee above). *offset is written only on success.
  Status alloc(uint64_t size, uint64_t align, uint64_t *offset);

  // offset not the start of a live allocation (double free included): MC_ERR_NOT_FOUND.
  Status free(uint64_t offset);

  // alloc and free for hot paths (the C API): the same checks and results, as a bare status
  // code; the reason goes to *why (when why is not null) only on failure, so a call that
  // succeeds builds no Status and no string.
  mc_status_t try_alloc(uint64_t size, uint64_t align, uint64_t *offset, std::string *why);
  mc_status_t try_free(uint64_t offset, std::string *why);

  Stats stats() const;
  unsigned shards() const;

  // Every heap alive in this process, summed (mc_heap_create's, the GPU staging pool's, the
  // simulated NICs' control regions): for the engine's stats and metrics. Takes each heap's
  // locks briefly, one heap at a time.
  struct Totals {
    uint64_t heaps = 0;
    uint64_t capacity = 0;
    uint64_t used = 0;
    uint64_t allocations = 0;
  };
  static Totals process_totals();

  // Walks every internal structure and checks that they agree (each shard's ranges tile its part
  // of [0, capacity), no two free ranges of a shard touch, the size index and the live table match
  // the ranges, the counters match, every allocation across shards has exactly its pieces).
  // O(number of ranges): for tests and fuzzing, not for production paths. Returns
  // MC_ERR_INTERNAL with the first broken rule.
  Status check_invariants() const;

 private:
  struct Impl;
  explicit MemHeap(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mc
