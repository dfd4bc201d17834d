// MemHeap: an offset allocator over [0, capacity) that never hands out overlapping ranges.
//
// It manages numbers, not memory: callers add the offsets it returns to a base of their own (a
// registered buffer, a QP control area). Every function is thread-safe (one spin lock per heap
// that yields and then naps when it waits long, never held across anything but the heap's own
// bookkeeping).
//
// Guarantees:
//  - Alloc returns an offset that is a multiple of align, with [offset, offset+size) inside the
//    heap and outside every other live allocation.
//  - Alignment padding in front of an allocation stays a free range of its own, so `used` is
//    exactly the sum of the live sizes and used + free == capacity at all times.
//  - Freed neighbours merge at once: freeing everything leaves one free range of the whole
//    capacity.
//  - Alloc fails with MC_ERR_NO_MEMORY only when no free range could hold the request at any
//    alignment, i.e. no free range has size + align - 1 bytes (with align 1: no free range has
//    size bytes). A request with align > 1 may also succeed in a smaller range that happens to be
//    aligned well; it is not promised to.
//  - Alloc and Free take O(1) time (a few bit scans, list links and, expected, one hash bucket; plus the
//    amortized growth of internal arrays). The one exception is an Alloc that finds no free
//    range in any size class above the request's own (for align > 1: above the class of
//    size + align - 1): it then walks that one class's free ranges, O(ranges in that class),
//    since one of them may still hold the request. That only happens when the heap has no larger
//    free range at all. stats() walks the ranges of the largest non-empty class to find
//    largest_free. There is no limit on live allocations but memory (about 64 bytes each).
//  - A call that fails changes nothing.
//  - Bookkeeping memory stays at its high-water mark until the heap is destroyed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

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

  // capacity 0 is MC_ERR_INVALID_ARG. *out is written only on success.
  static Status Create(uint64_t capacity, std::unique_ptr<MemHeap> *out);

  ~MemHeap();
  MemHeap(const MemHeap &) = delete;
  MemHeap &operator=(const MemHeap &) = delete;

  // size 0 or align not a power of two: MC_ERR_INVALID_ARG; no room: MC_ERR_NO_MEMORY (see the
  // guarantee above). *offset is written only on success.
  Status Alloc(uint64_t size, uint64_t align, uint64_t *offset);

  // offset not the start of a live allocation (double free included): MC_ERR_NOT_FOUND.
  Status Free(uint64_t offset);

  // Alloc and Free for hot paths (the C API): the same checks and results, as a bare status
  // code; the reason goes to *why (when why is not null) only on failure, so a call that
  // succeeds builds no Status and no string.
  mc_status_t TryAlloc(uint64_t size, uint64_t align, uint64_t *offset, std::string *why);
  mc_status_t TryFree(uint64_t offset, std::string *why);

  Stats stats() const;

  // Walks every internal structure and checks that they agree (ranges tile [0, capacity), no two
  // free ranges touch, the size index and the live table match the ranges, the counters match).
  // O(number of ranges): for tests and fuzzing, not for production paths. Returns
  // MC_ERR_INTERNAL with the first broken rule.
  Status CheckInvariants() const;

 private:
  struct Impl;
  explicit MemHeap(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mc
