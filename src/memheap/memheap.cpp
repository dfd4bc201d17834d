// MemHeap internals.
//
// A heap is one or more shards (Arena), each the allocator described below over its own slice of
// [0, capacity), with its own lock; MemHeap::Impl at the end of this file routes calls to them
// and places the rare allocation that no shard holds alone across shard boundaries. In a shard:
//
// Every range, free or allocated, is a Block in one pool (a vector indexed by uint32), linked to
// its address neighbours. The links make merging on free O(1) without an address-ordered tree.
//
// free ranges are indexed by size the way TLSF does it (two-level segregated fit): a size class
// is (fl, sl) where fl is the power of two of the size and sl one of 64 equal steps inside it, so
// a class spans less than 1/64 of its sizes (sizes below 128 have a class each). Each class is
// an intrusive doubly linked list (links in the Block, newest first), and two bitmaps say which
// classes hold ranges, so "the first class at or above X that holds a range" is a couple of bit
// scans and taking or putting back a range is a few stores.
//
// alloc looks, in this order, each step O(1):
//  1. at the newest range of the request's own class: an exact reuse in the common fixed-size
//     pool case (TLSF alone would split a larger range and leave the freed ones unused);
//  2. at the newest range of the first class whose every range is >= size (align 1: it fits);
//  3. for align > 1, at the first class whose every range is >= size + align - 1 (it fits at any
//     alignment).
// Only when all of that fails, which needs every class above the request's own (or, for
// align > 1, above the class of size + align - 1) to be empty, does it walk that one class's
// list: ranges there may still hold the request, and "no room" must mean no room. That walk is
// O(ranges in one size class); it happens only when the heap has no larger range at all.
//
// Live allocations are found by offset in a hash table of 64-byte buckets of four (see
// LiveTable), so neither alloc nor free allocates a node; the pool and the table grow
// geometrically and are reserved before anything changes, so a bad_alloc leaves the heap as it
// was.
//
// Most of the cost of an alloc+free pair with random sizes is mispredicted branches, so the hot
// steps avoid data-dependent branches where they can: two sentinel blocks stand for "no list
// neighbour" (kListEnd) and "no address neighbour" (kEdge) so that links are written without a
// test, the class of a size is computed without one, and a bucket is searched with four compares
// combined into a bit mask.
#include "memheap/memheap.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#define MC_HOT_INLINE [[gnu::always_inline]] inline

namespace mc {
namespace {

// Pool slots 0 and 1 are sentinels, never ranges. kListEnd ends every class list: list steps
// write its fprev/fnext freely, its size stays 0 so that it never fits a request. kEdge is the
// address neighbour of the first and last range: address steps write its prev/next freely, its
// fprev stays kUsed so that it never merges.
constexpr uint32_t kListEnd = 0;
constexpr uint32_t kEdge = 1;
constexpr uint32_t kFirstBlock = 2;
constexpr uint32_t kNone = UINT32_MAX;  // end of the recycled-slot chain; "no block" results
// Block::fprev of an allocated block and of a recycled pool slot; a free block holds its list
// predecessor there (kListEnd at the head of its class list).
constexpr uint32_t kUsed = UINT32_MAX - 1;
constexpr uint32_t kDead = UINT32_MAX - 2;
// Block indices stay below this so that they never collide with the markers above.
constexpr uint64_t kMaxBlocks = UINT32_MAX - 3;

constexpr unsigned kSlLog = 6;
constexpr uint32_t kSl = 1u << kSlLog;

// Classes are numbered fl * kSl + sl. For size < 128 the class is the size itself; above, with
// s = log2(size) - 6, it is s * 64 + (size >> s), i.e. fl = s + 1 and sl = the 6 bits below the
// top one. One formula for both, without a branch: s is 0 for every size below 128.
// (63 - clz is one bsr; std::bit_width costs a few more instructions without -mlzcnt.)
inline unsigned shift_of(uint64_t size) { return unsigned(63 - __builtin_clzll(size | 64)) - 6; }
inline uint32_t class_index(uint64_t size) {
  const unsigned s = shift_of(size);
  return uint32_t((uint64_t(s) << kSlLog) + (size >> s));
}
// The first class whose every range is >= size: the class of size, or the next one when size
// is not the smallest size of its class. (The next class of sl 63 is sl 0 of the next fl.)
inline uint32_t class_up_index(uint64_t size) {
  const unsigned s = shift_of(size);
  return uint32_t((uint64_t(s) << kSlLog) + (size >> s)) + uint32_t((size & ((uint64_t(1) << s) - 1)) != 0);
}

// Padding that brings start up to a multiple of align (a power of two); never overflows.
inline uint64_t pad_for(uint64_t start, uint64_t align) { return (0 - start) & (align - 1); }

// Grows v geometrically so that `extra` more elements fit without reallocating.
// (vector::reserve(size()+1) would allocate exactly that much every time: quadratic.)
template <class T>
[[gnu::noinline]] void grow(std::vector<T> &v, size_t extra) {
  v.reserve(std::max(v.size() + extra, std::max<size_t>(8, v.capacity() * 2)));
}

// Live allocations: offset -> block index. Open addressing over 64-byte buckets of four slots
// (F14's layout): a lookup compares the four keys of its home bucket at once and nearly always
// ends there. Each bucket counts the entries that had to move on past it because it was full
// (`overflow`); a lookup stops at the first bucket with no overflow, and an erase decrements the
// counts on its entry's path, so there are no tombstones and no backward shifts. Empty slots
// hold kEmpty, which no live offset can be (offsets are < capacity <= UINT64_MAX). At most half
// the slots are used.
class LiveTable {
 public:
  static constexpr uint64_t kEmpty = UINT64_MAX;
  static constexpr size_t npos = SIZE_MAX;

  LiveTable() { rehash(4); }

  // Makes room for one more insert; may throw bad_alloc, changes nothing visible.
  void reserve_one() {
    if ((size_ + 1) * 2 > buckets_.size() * 4) [[unlikely]]
      rehash(buckets_.size() * 2);
  }
  // key must be absent and room reserved.
  void insert(uint64_t key, uint32_t val) {
    for (size_t b = home(key);; b = (b + 1) & mask_) {
      Bucket &k = buckets_[b];
      const unsigned m = match(k, kEmpty);
      if (m) [[likely]] {
        const unsigned i = unsigned(std::countr_zero(m));
        k.key[i] = key;
        k.val[i] = val;
        ++size_;
        return;
      }
      ++k.overflow;
    }
  }
  // The slot (bucket * 4 + index) holding key, or npos. key must not be kEmpty.
  // At most one lap: in principle every bucket could have been passed by a live entry.
  size_t find(uint64_t key) const {
    size_t b = home(key);
    for (size_t seen = 0; seen <= mask_; ++seen, b = (b + 1) & mask_) {
      const Bucket &k = buckets_[b];
      const unsigned m = match(k, key);
      if (m) [[likely]]
        return b * 4 + unsigned(std::countr_zero(m));
      if (k.overflow == 0) return npos;
    }
    return npos;
  }
  uint32_t value_at(size_t slot) const { return buckets_[slot / 4].val[slot % 4]; }
  void erase_at(size_t slot) {
    const size_t at = slot / 4;
    Bucket &k = buckets_[at];
    for (size_t b = home(k.key[slot % 4]); b != at; b = (b + 1) & mask_) --buckets_[b].overflow;
    k.key[slot % 4] = kEmpty;
    --size_;
  }
  size_t size() const { return size_; }

  // Recounts every bucket's overflow from the entries and checks that each entry is found.
  bool consistent() const {
    std::vector<uint32_t> over(buckets_.size(), 0);
    size_t n = 0;
    for (size_t b = 0; b < buckets_.size(); ++b)
      for (unsigned i = 0; i < 4; ++i) {
        const uint64_t key = buckets_[b].key[i];
        if (key == kEmpty) continue;
        ++n;
        for (size_t h = home(key); h != b; h = (h + 1) & mask_) ++over[h];
        if (find(key) != b * 4 + i) return false;
      }
    if (n != size_) return false;
    for (size_t b = 0; b < buckets_.size(); ++b)
      if (over[b] != buckets_[b].overflow) return false;
    return true;
  }

 private:
  struct alignas(64) Bucket {
    uint64_t key[4] = {kEmpty, kEmpty, kEmpty, kEmpty};
    uint32_t val[4] = {};
    uint32_t overflow = 0;  // entries whose search passed this bucket because it was full
  };
  // Bit i set: slot i holds key. Plain compares, combined without branches.
  static unsigned match(const Bucket &k, uint64_t key) {
    return unsigned(k.key[0] == key) | unsigned(k.key[1] == key) << 1 | unsigned(k.key[2] == key) << 2 |
           unsigned(k.key[3] == key) << 3;
  }
  // Fibonacci hashing: offsets are often multiples of a large alignment, and the multiply
  // spreads those low-zero keys over the top bits taken here.
  size_t home(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  [[gnu::noinline]] void rehash(size_t n) {
    std::vector<Bucket> old(n);
    old.swap(buckets_);
    mask_ = n - 1;
    shift_ = 64 - unsigned(std::countr_zero(n));
    size_ = 0;
    for (const Bucket &k : old)
      for (unsigned i = 0; i < 4; ++i)
        if (k.key[i] != kEmpty) insert(k.key[i], k.val[i]);
  }

  std::vector<Bucket> buckets_;
  size_t mask_ = 0;
  unsigned shift_ = 0;
  size_t size_ = 0;
};

std::string U(uint64_t v) { return std::to_string(v); }

// The heap's lock: a test-and-set spin lock that yields, then sleeps, when it waits long. Heap
// calls hold it for some tens of nanoseconds, so a waiter almost always gets it within a few
// hundred cycles; sleeping in the kernel and being woken would cost microseconds (with a
// std::mutex two threads on one heap ran ten times slower than one). Taking it is one atomic
// exchange and releasing it a plain store: no locked instruction on the way out, which a
// futex-style lock needs to learn whether someone sleeps, and which cost a quarter of an
// uncontended alloc+free pair here. Nobody sleeps on the lock word itself: a waiter that spun
// too long yields its core (the owner may have been preempted) and then naps for 50 us at a
// time, so the owner never has anybody to wake.
class HeapMutex {
 public:
  void lock() {
    if (!state_.exchange(1, std::memory_order_acquire)) [[likely]]
      return;
    lock_slow();
  }
  void unlock() { state_.store(0, std::memory_order_release); }

 private:
  [[gnu::noinline]] void lock_slow() {
    // Spin on a plain load with exponential backoff: polling with writes would pull the lock's
    // cache line away from the owner on every try, and backing off lets the owner run several
    // calls in a row while the heap's lines are in its cache.
    for (int pauses = 1;; pauses = pauses < kMaxBackoff ? pauses * 2 : pauses) {
      if (!state_.load(std::memory_order_relaxed) && !state_.exchange(1, std::memory_order_acquire)) return;
      if (pauses < kMaxBackoff) {
        for (int i = 0; i < pauses; ++i) pause();
        continue;
      }
      break;
    }
    for (unsigned tries = 0;; ++tries) {
      if (!state_.load(std::memory_order_relaxed) && !state_.exchange(1, std::memory_order_acquire)) return;
      if (tries < kYields) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  // 63 pauses in all before yielding: well under a microsecond to a few, as pause varies by CPU.
  static constexpr int kMaxBackoff = 64;
  static constexpr unsigned kYields = 64;
  std::atomic<uint32_t> state_{0};
};

}  // namespace

namespace {

// Block::fnext of an allocated block says what it is (fnext is a class-list link only while the
// block is free): an allocation of its own, the first piece of an allocation that spans shards
// (the one its offset names), or a later piece of one (never freed by offset).
constexpr uint32_t kWhole = 0;
constexpr uint32_t kSpanHead = 1;
constexpr uint32_t kSpanPart = 2;

// One shard of a heap (see MemHeap::Impl below): the TLSF allocator over [lo, lo + len), with
// offsets kept absolute. Not locked by itself: every method but the constructor needs mu held.
struct Arena {
  // 32 bytes: two blocks to a cache line.
  struct Block {
    uint64_t start;
    uint64_t size;
    uint32_t prev;  // address neighbours (kEdge at the ends); `next` chains recycled slots too
    uint32_t next;
    uint32_t fprev;  // free: class list links (kListEnd at the ends); kUsed; kDead
    uint32_t fnext;  // allocated: kWhole, kSpanHead or kSpanPart
  };

  // The edge sentinel's own links name the first (next) and last (prev) range: every step that
  // changes an end of the address chain writes them through a neighbour link that is kEdge.
  Arena(uint64_t lo_, uint64_t len_)
      : lo(lo_), len(len_), heads(size_t(class_index(len_) / kSl + 1) * kSl, kListEnd) {
    blocks.push_back(Block{0, 0, kEdge, kEdge, kListEnd, kListEnd});           // kListEnd
    blocks.push_back(Block{0, 0, kFirstBlock, kFirstBlock, kUsed, kListEnd});  // kEdge
    blocks.push_back(Block{lo_, len_, kEdge, kEdge, kUsed, kListEnd});
    link(kFirstBlock, class_index(len_));
  }

  // alloc without the failure text: MC_OK, MC_ERR_NO_MEMORY (no free range fits) or
  // MC_ERR_NO_MEMORY with *too_many set (the pool is full).
  mc_status_t alloc(uint64_t size, uint64_t align, uint64_t *offset, bool *too_many);
  // Frees the live allocation at offset: MC_OK; MC_ERR_NOT_FOUND when offset starts no
  // allocation of its own (a later piece of a spanning one included). The first piece of a
  // spanning allocation is left alone: *span_head is set and MC_ERR_NOT_FOUND returned.
  mc_status_t free(uint64_t offset, bool *span_head);
  // Frees the allocated block at offset whatever its kind (spanning allocations' pieces).
  void free_piece(uint64_t offset);
  // Carves [a, a + size) out of free block f (which holds it) as an allocated block of `kind`.
  // Room must be reserved (reserve) first; cannot fail.
  void carve(uint32_t f, uint64_t a, uint64_t size, uint32_t kind);
  // Makes sure that one carve succeeds: false when the pool would pass kMaxBlocks; may throw
  // bad_alloc. Either way nothing visible changes.
  bool reserve() {
    if (!reserve_slots(2)) return false;
    live.reserve_one();
    return true;
  }
  // The free range at an end of this shard, or kNone.
  uint32_t free_head() const { return is_free(blocks[kEdge].next) ? blocks[kEdge].next : kNone; }
  uint32_t free_tail() const { return is_free(blocks[kEdge].prev) ? blocks[kEdge].prev : kNone; }
  bool all_free() const { return used == 0; }
  // Checks the structures; counts the span pieces (first ones and later ones) it walks past.
  Status check(uint64_t *span_heads, uint64_t *span_parts) const;
  bool has_block(uint64_t start, uint64_t size, uint32_t kind) const {
    const size_t slot = live.find(start);
    if (slot == LiveTable::npos) return false;
    const Block &b = blocks[live.value_at(slot)];
    return b.size == size && b.fnext == kind;
  }

  uint32_t find_fit(uint64_t size, uint64_t align) const;
  uint32_t scan_class(uint32_t k, uint64_t size, uint64_t align) const;
  uint32_t first_from(uint32_t k) const;  // the first non-empty class at or after k, or kNone
  uint64_t largest() const;
  bool is_free(uint32_t b) const { return blocks[b].fprev != kUsed; }  // b is not recycled
  // Whether block b (free, or kListEnd, which holds nothing) holds size bytes at align.
  bool fits(uint32_t b, uint64_t size, uint64_t align) const {
    const uint64_t pad = pad_for(blocks[b].start, align);
    return pad <= blocks[b].size && size <= blocks[b].size - pad;
  }
  // Makes sure that n new_slot calls succeed: false when the pool would pass kMaxBlocks; may
  // throw bad_alloc. Either way nothing visible changes.
  bool reserve_slots(size_t n) {
    if (dead_slots + (blocks.capacity() - blocks.size()) >= n) [[likely]]
      return true;
    if (blocks.size() + n > kMaxBlocks) return false;
    grow(blocks, n);
    return true;
  }
  uint32_t new_slot() {
    if (free_slot != kNone) {
      const uint32_t i = free_slot;
      free_slot = blocks[i].next;
      --dead_slots;
      return i;
    }
    blocks.push_back(Block{});  // capacity reserved by reserve_slots: cannot throw
    return uint32_t(blocks.size() - 1);
  }
  void recycle(uint32_t i) {
    blocks[i].fprev = kDead;
    blocks[i].next = free_slot;
    free_slot = i;
    ++dead_slots;
  }
  // Puts block b (its size set) at the head of class list k / takes it out of its list.
  void link(uint32_t b, uint32_t k);
  void unlink(uint32_t b);
  // Gives free block b the range [start, start+size), moving it to the list of its new class
  // when the class changes.
  void reshape(uint32_t b, uint64_t start, uint64_t size);
  void release(uint32_t al);  // turns allocated block al back into free space, merging

  // guards everything below. On a cache line of its own: a thread that waits reads the lock
  // over and over, and must not take away the line that the owner is updating counters in.
  alignas(64) mutable HeapMutex mu;
  alignas(64) const uint64_t lo;
  const uint64_t len;
  uint64_t used = 0;
  uint64_t allocations = 0;  // allocated blocks (span pieces each count)
  uint64_t free_ranges = 0;
  std::vector<Block> blocks;
  uint32_t free_slot = kNone;  // recycled pool slots, chained through Block::next
  size_t dead_slots = 0;
  uint64_t fl_bitmap = 0;                // bit fl: some class (fl, *) holds a range
  std::array<uint64_t, 64> sl_bitmap{};  // [fl] bit sl: class (fl, sl) holds a range
  std::vector<uint32_t> heads;           // class list heads (kListEnd: empty)
  LiveTable live;
};

MC_HOT_INLINE void Arena::link(uint32_t b, uint32_t k) {
  const uint32_t h = heads[k];
  blocks[b].fprev = kListEnd;
  blocks[b].fnext = h;
  blocks[h].fprev = b;  // kListEnd's link when the list was empty: never read
  heads[k] = b;
  sl_bitmap[k / kSl] |= uint64_t(1) << (k % kSl);
  fl_bitmap |= uint64_t(1) << (k / kSl);
  ++free_ranges;
}

MC_HOT_INLINE void Arena::unlink(uint32_t b) {
  const uint32_t p = blocks[b].fprev, n = blocks[b].fnext;
  const uint32_t k = class_index(blocks[b].size);
  blocks[n].fprev = p;
  uint32_t &from = p != kListEnd ? blocks[p].fnext : heads[k];
  from = n;
  const uint64_t empty = heads[k] == kListEnd;
  sl_bitmap[k / kSl] &= ~(empty << (k % kSl));
  fl_bitmap &= ~(uint64_t(sl_bitmap[k / kSl] == 0) << (k / kSl));
  blocks[b].fprev = kUsed;
  --free_ranges;
}

MC_HOT_INLINE void Arena::reshape(uint32_t b, uint64_t start, uint64_t size) {
  const uint32_t k = class_index(size);
  if (class_index(blocks[b].size) != k) {
    unlink(b);
    blocks[b].start = start;
    blocks[b].size = size;
    link(b, k);
    return;
  }
  blocks[b].start = start;
  blocks[b].size = size;
}

MC_HOT_INLINE uint32_t Arena::first_from(uint32_t k) const {
  // k / kSl < 60 for any size (class_index(UINT64_MAX) / kSl is 58), and the bitmaps of classes
  // past this heap's last one are 0, so no bound check is needed.
  const uint32_t fl = k / kSl;
  const uint64_t here = sl_bitmap[fl] & (~uint64_t(0) << (k % kSl));
  if (here) [[likely]]
    return fl * kSl + uint32_t(std::countr_zero(here));
  const uint64_t above = fl_bitmap & (~uint64_t(0) << (fl + 1));
  if (!above) return kNone;
  const uint32_t f = uint32_t(std::countr_zero(above));
  return f * kSl + uint32_t(std::countr_zero(sl_bitmap[f]));
}

// The order of the look-ups and why it keeps "no room means no room": see the file comment.
MC_HOT_INLINE uint32_t Arena::find_fit(uint64_t size, uint64_t align) const {
  if (size > len - used) return kNone;
  const uint32_t own = class_index(size);
  const uint32_t h = heads[own];
  if (fits(h, size, align)) return h;  // an empty list's kListEnd never fits
  const uint32_t k = first_from(class_up_index(size));
  if (align == 1) {
    if (k != kNone) [[likely]]
      return heads[k];
    // Every class above `own` is empty: only `own` may hold a range >= size.
    return scan_class(own, size, 1);
  }
  if (k != kNone && fits(heads[k], size, align)) return heads[k];
  if (align - 1 > len - size) return kNone;  // size + align - 1 > len: promise kept
  const uint64_t need = size + align - 1;
  const uint32_t k2 = first_from(class_up_index(need));
  if (k2 != kNone) return heads[k2];
  // Every class above the class of `need` is empty: only that class may hold a range >= need.
  return scan_class(class_index(need), size, align);
}

// Walks class list k for a range that holds size bytes at align: the rare case of find_fit.
[[gnu::noinline]] uint32_t Arena::scan_class(uint32_t k, uint64_t size, uint64_t align) const {
  for (uint32_t b = heads[k]; b != kListEnd; b = blocks[b].fnext)
    if (fits(b, size, align)) return b;
  return kNone;
}

// The largest free range is in the highest class that holds any: O(ranges in that class).
uint64_t Arena::largest() const {
  if (fl_bitmap == 0) return 0;
  const uint32_t fl = uint32_t(63 - std::countl_zero(fl_bitmap));
  const uint32_t sl = uint32_t(63 - std::countl_zero(sl_bitmap[fl]));
  uint64_t best = 0;
  for (uint32_t b = heads[fl * kSl + sl]; b != kListEnd; b = blocks[b].fnext)
    best = std::max(best, blocks[b].size);
  return best;
}

// Failure texts are built out of line, so that the hot paths stay small.
[[gnu::noinline, gnu::cold]] mc_status_t no_room(std::string *why, uint64_t size, uint64_t align,
                                                 uint64_t capacity, uint64_t free, uint64_t largest) {
  if (why)
    *why = "no free range holds " + U(size) + " bytes aligned to " + U(align) + " (capacity " + U(capacity) +
           ", " + U(free) + " bytes free, the largest free range " + U(largest) + ")";
  return MC_ERR_NO_MEMORY;
}
[[gnu::noinline, gnu::cold]] mc_status_t too_many_ranges(std::string *why) {
  if (why) *why = "too many ranges in one heap shard (" + U(kMaxBlocks) + ")";
  return MC_ERR_NO_MEMORY;
}
[[gnu::noinline, gnu::cold]] mc_status_t not_live(std::string *why, uint64_t offset) {
  if (why)
    *why = "offset " + U(offset) +
           " is not the start of a live allocation (already freed, never allocated, or "
           "inside an allocation)";
  return MC_ERR_NOT_FOUND;
}
[[gnu::noinline, gnu::cold]] mc_status_t bad_arg(std::string *why, std::string text) {
  if (why) *why = std::move(text);
  return MC_ERR_INVALID_ARG;
}

// The free range [start, start+n) of f becomes padding [start, a), the allocation [a, a+size)
// and a tail [a+size, start+n); padding and tail stay free. The range's own slot keeps the tail
// (or else the padding) so that, when its size class does not change, as when a small block is
// cut from a large range, its class list is not touched at all.
MC_HOT_INLINE void Arena::carve(uint32_t f, uint64_t a, uint64_t size, uint32_t kind) {
  const uint64_t start = blocks[f].start;
  const uint64_t n = blocks[f].size;
  const uint64_t pad = a - start;
  const uint64_t tail = n - pad - size;
  uint32_t al;  // the allocation's block
  if (tail) [[likely]] {
    al = new_slot();  // [a, a+size) before the tail, which keeps f's slot
    uint32_t left = blocks[f].prev;
    if (pad) {
      const uint32_t p = new_slot();
      blocks[p] = Block{start, pad, left, al, kUsed, kListEnd};
      blocks[left].next = p;
      left = p;
      link(p, class_index(pad));
    } else {
      blocks[left].next = al;
    }
    blocks[al] = Block{a, size, left, f, kUsed, kind};
    blocks[f].prev = al;
    reshape(f, a + size, tail);
  } else if (pad) {
    al = new_slot();  // [a, a+size) after the padding, which keeps f's slot
    const uint32_t next = blocks[f].next;
    blocks[al] = Block{a, size, f, next, kUsed, kind};
    blocks[next].prev = al;
    blocks[f].next = al;
    reshape(f, start, pad);
  } else {
    unlink(f);
    blocks[f].fnext = kind;
    al = f;
  }
  live.insert(a, al);
  used += size;
  ++allocations;
}

MC_HOT_INLINE mc_status_t Arena::alloc(uint64_t size, uint64_t align, uint64_t *offset, bool *too_many) {
  const uint32_t f = find_fit(size, align);
  if (f == kNone) [[unlikely]]
    return MC_ERR_NO_MEMORY;
  // Everything that may allocate or fail happens before the first change.
  if (!reserve()) [[unlikely]] {
    *too_many = true;
    return MC_ERR_NO_MEMORY;
  }
  const uint64_t a = blocks[f].start + pad_for(blocks[f].start, align);
  carve(f, a, size, kWhole);
  *offset = a;
  return MC_OK;
}

MC_HOT_INLINE void Arena::release(uint32_t al) {
  const Block blk = blocks[al];
  used -= blk.size;
  --allocations;
  const bool merge_prev = is_free(blk.prev);  // kEdge never is
  const bool merge_next = is_free(blk.next);
  // A free neighbour grows over the freed range in place (keeping its slot and, when its size
  // class holds, its list position) instead of all three ranges leaving and re-entering lists.
  if (merge_prev) {
    const uint32_t p = blk.prev;
    uint64_t merged = blocks[p].size + blk.size;
    uint32_t after = blk.next;
    if (merge_next) {
      merged += blocks[blk.next].size;
      unlink(blk.next);
      after = blocks[blk.next].next;
      recycle(blk.next);
    }
    blocks[p].next = after;
    blocks[after].prev = p;
    reshape(p, blocks[p].start, merged);
    recycle(al);
  } else if (merge_next) {
    const uint32_t nx = blk.next;
    blocks[nx].prev = blk.prev;
    blocks[blk.prev].next = nx;
    reshape(nx, blk.start, blk.size + blocks[nx].size);
    recycle(al);
  } else {
    link(al, class_index(blk.size));
  }
}

MC_HOT_INLINE mc_status_t Arena::free(uint64_t offset, bool *span_head) {
  const size_t slot = live.find(offset);
  if (slot == LiveTable::npos) [[unlikely]]
    return MC_ERR_NOT_FOUND;
  const uint32_t al = live.value_at(slot);
  if (blocks[al].fnext != kWhole) [[unlikely]] {
    *span_head = blocks[al].fnext == kSpanHead;
    return MC_ERR_NOT_FOUND;
  }
  live.erase_at(slot);
  release(al);
  return MC_OK;
}

void Arena::free_piece(uint64_t offset) {
  const size_t slot = live.find(offset);
  const uint32_t al = live.value_at(slot);
  live.erase_at(slot);
  release(al);
}

Status Arena::check(uint64_t *span_heads, uint64_t *span_parts) const {
  auto bad = [this](const std::string &what) {
    return Err(MC_ERR_INTERNAL, "memheap: shard at " + U(lo) + ": " + what);
  };

  // The sentinels keep what the hot paths rely on.
  if (blocks.size() < kFirstBlock + 1) return bad("pool too small");
  if (blocks[kListEnd].size != 0 || blocks[kListEnd].start != 0) return bad("the list sentinel got a range");
  if (blocks[kEdge].fprev != kUsed) return bad("the edge sentinel looks free");

  // The pool: exactly one live block has no left neighbour; recycled slots are counted.
  uint32_t head = kNone;
  size_t dead = 0;
  for (size_t i = kFirstBlock; i < blocks.size(); ++i) {
    if (blocks[i].fprev == kDead) {
      ++dead;
    } else if (blocks[i].prev == kEdge) {
      if (head != kNone) return bad("two blocks without a left neighbour");
      head = uint32_t(i);
    }
  }
  if (dead != dead_slots) return bad("recycled slot count is off");
  size_t chained = 0;
  for (uint32_t i = free_slot; i != kNone; i = blocks[i].next) {
    if (i < kFirstBlock || i >= blocks.size() || blocks[i].fprev != kDead || ++chained > dead)
      return bad("recycled slot chain is broken");
  }
  if (chained != dead) return bad("recycled slot chain misses slots");
  if (head == kNone) return bad("no first block");
  if (blocks[kEdge].next != head) return bad("the edge sentinel does not name the first range");

  // The ranges tile [lo, lo + len) in address order.
  const size_t in_use = blocks.size() - kFirstBlock - dead;
  const uint64_t hi = lo + len;
  uint64_t at = lo, used_sum = 0, allocs = 0, frees = 0;
  size_t walked = 0;
  bool prev_free = false;
  uint32_t last = kNone;
  for (uint32_t i = head, prev = kEdge; i != kEdge; prev = i, i = blocks[i].next) {
    if (i < kFirstBlock || i >= blocks.size()) return bad("address link out of the pool");
    const Block &k = blocks[i];
    if (++walked > in_use) return bad("address chain loops");
    if (k.fprev == kDead) return bad("recycled slot in the address chain");
    if (k.prev != prev) return bad("broken left link at offset " + U(k.start));
    if (k.start != at) return bad("gap or overlap at offset " + U(at));
    if (k.size == 0 || k.size > hi - at) return bad("bad size at offset " + U(at));
    at += k.size;
    last = i;
    const bool is_free = k.fprev != kUsed;
    const size_t slot = live.find(k.start);
    if (is_free) {
      if (prev_free) return bad("two free ranges touch at offset " + U(k.start));
      if (slot != LiveTable::npos) return bad("free range at " + U(k.start) + " is live");
      ++frees;
    } else {
      if (slot == LiveTable::npos || live.value_at(slot) != i)
        return bad("allocation at " + U(k.start) + " is missing from the live table");
      if (k.fnext == kSpanHead) {
        ++*span_heads;
      } else if (k.fnext == kSpanPart) {
        ++*span_parts;
      } else if (k.fnext != kWhole) {
        return bad("allocation at " + U(k.start) + " has an unknown kind");
      }
      used_sum += k.size;
      ++allocs;
    }
    prev_free = is_free;
  }
  if (walked != in_use) return bad("blocks outside the address chain");
  if (at != hi) return bad("ranges end at " + U(at) + ", not at the shard's end");
  if (blocks[kEdge].prev != last) return bad("the edge sentinel does not name the last range");
  if (used_sum != used) return bad("used is " + U(used) + ", ranges say " + U(used_sum));
  if (allocs != allocations || live.size() != allocations)
    return bad("allocation count disagrees with the ranges or the live table");
  if (!live.consistent()) return bad("live table buckets disagree with their entries");
  if (frees != free_ranges) return bad("free range count is off");

  // The class lists: each free range exactly once, in the list of its class, links both ways,
  // bitmaps set exactly for the non-empty lists.
  std::vector<char> seen(blocks.size(), 0);
  size_t listed = 0;
  const uint32_t fl_count = uint32_t(heads.size() / kSl);
  static_assert(kListEnd == 0, "an empty first level is a run of zero heads");
  static const std::array<uint32_t, kSl> kNoHeads{};
  for (uint32_t fl = 0; fl < 64; ++fl) {
    // Most first levels are empty: one compare of their heads (this walk is most of the time of
    // a fuzzing run, under coverage instrumentation).
    if (sl_bitmap[fl] == 0 && ((fl_bitmap >> fl) & 1) == 0 &&
        (fl >= fl_count || std::memcmp(&heads[size_t(fl) * kSl], kNoHeads.data(), sizeof kNoHeads) == 0))
      continue;
    for (uint32_t sl = 0; sl < kSl; ++sl) {
      const bool bit = (sl_bitmap[fl] >> sl) & 1;
      if (fl >= fl_count) {
        if (bit) return bad("class bitmap set past the last class");
        continue;
      }
      const uint32_t k = fl * kSl + sl;
      if (bit != (heads[k] != kListEnd)) return bad("class bitmap disagrees with class contents");
      for (uint32_t b = heads[k], p = kListEnd; b != kListEnd; p = b, b = blocks[b].fnext) {
        if (b < kFirstBlock || b >= blocks.size() || seen[b] || ++listed > frees)
          return bad("class list loops or repeats a range");
        seen[b] = 1;
        const Block &blk = blocks[b];
        if (blk.fprev != p) return bad("broken class list back link");
        if (class_index(blk.size) != k) return bad("range in the wrong class");
      }
    }
    if (((fl_bitmap >> fl) & 1) != (sl_bitmap[fl] != 0)) return bad("first-level bitmap is off");
  }
  if (listed != frees) return bad("class lists miss free ranges");
  return Status::Ok();
}

// The shard a thread tries first: threads are numbered in the order they first allocate, and
// thread k starts at shard k mod n, so that up to n threads each have a shard of their own.
std::atomic<uint32_t> g_thread_numbers{0};
thread_local uint32_t t_thread_number = UINT32_MAX;
[[gnu::noinline]] uint32_t number_this_thread() {
  t_thread_number = g_thread_numbers.fetch_add(1, std::memory_order_relaxed) & 0x7fffffffu;
  return t_thread_number;
}
MC_HOT_INLINE uint32_t thread_number() {
  const uint32_t n = t_thread_number;
  return n != UINT32_MAX ? n : number_this_thread();
}

}  // namespace

// The heap: one Arena (shard) per slice of [0, capacity). Large heaps are cut into a few shards
// so that threads that allocate at the same time mostly take different locks and touch different
// cache lines (one lock for all was 4x slower per pair than malloc with two threads). A thread
// allocates from its own shard first, then from the others in turn; a request that no shard
// holds alone is placed across shard boundaries under all locks ("spanning": one allocated
// piece per shard it covers, found by its offset in `spans`). To users the boundaries do not
// exist: a free range is a maximal run of free bytes whichever shards it lies in, and "no room"
// is decided on those runs with every lock held.
struct MemHeap::Impl {
  Impl(uint64_t cap, unsigned n) : capacity(cap) {
    // Shard k covers [k << shift, (k + 1) << shift); the last one also takes the rest.
    shift = n == 1 ? 64 : unsigned(63 - std::countl_zero(cap / n));
    for (unsigned k = 0; k < n; ++k) {
      const uint64_t lo = uint64_t(k) << (shift & 63);
      const uint64_t hi = k + 1 == n ? cap : uint64_t(k + 1) << shift;
      shards.push_back(std::make_unique<Arena>(n == 1 ? 0 : lo, hi - (n == 1 ? 0 : lo)));
    }
    mask = n - 1;
  }

  mc_status_t alloc(uint64_t size, uint64_t align, uint64_t *offset, std::string *why);
  mc_status_t free(uint64_t offset, std::string *why);
  Stats get_stats() const;
  Status check() const;

  uint32_t shard_of(uint64_t offset) const {
    return shift >= 64 ? 0 : uint32_t(std::min<uint64_t>(offset >> shift, mask));
  }
  // With every lock held:
  mc_status_t alloc_all(uint64_t size, uint64_t align, uint64_t *offset, std::string *why);
  mc_status_t free_span(uint64_t offset, std::string *why);
  Stats stats_all() const;
  // Every shard's lock, taken in shard order (a thread holds at most one otherwise), released
  // on every way out (reserve and the span table may throw bad_alloc).
  class all_locks {
   public:
    explicit all_locks(const Impl &h) : h_(h) {
      for (auto &s : h_.shards) s->mu.lock();
    }
    ~all_locks() {
      for (auto it = h_.shards.rbegin(); it != h_.shards.rend(); ++it) (*it)->mu.unlock();
    }
    all_locks(const all_locks &) = delete;
    all_locks &operator=(const all_locks &) = delete;

   private:
    const Impl &h_;
  };
  // The free runs that cross a shard boundary, as [start, end), in address order.
  template <class F>
  void for_each_boundary_run(F &&f) const;

  const uint64_t capacity;
  unsigned shift = 64;
  uint32_t mask = 0;
  std::vector<std::unique_ptr<Arena>> shards;
  // Allocations across shard boundaries (offset -> size); changed and read with every lock held.
  std::map<uint64_t, uint64_t> spans;
  uint64_t span_parts = 0;  // their pieces after the first, which are no allocation of their own
};

template <class F>
void MemHeap::Impl::for_each_boundary_run(F &&f) const {
  // A run that crosses a boundary is the free tail of one shard, any number of wholly free
  // shards and the free head of the next.
  uint64_t run_start = 0;
  bool open = false;  // a run reaches the end of the previous shard
  size_t shards_in = 0;
  for (size_t k = 0; k < shards.size(); ++k) {
    const Arena &a = *shards[k];
    if (open) {
      if (a.all_free()) {
        ++shards_in;
        continue;
      }
      const uint32_t h = a.free_head();
      const uint64_t end = h == kNone ? a.lo : a.lo + a.blocks[h].size;
      if (shards_in > 1 || end > a.lo) f(run_start, end);
      open = false;
    }
    const uint32_t t = a.free_tail();  // a wholly free shard: its one range
    if (t != kNone) {
      run_start = a.blocks[t].start;
      open = true;
      shards_in = 1;
    }
  }
  if (open && shards_in > 1) f(run_start, capacity);
}

mc_status_t MemHeap::Impl::alloc_all(uint64_t size, uint64_t align, uint64_t *offset, std::string *why) {
  const uint32_t home = thread_number() & mask;
  bool too_many = false;
  for (uint32_t i = 0; i <= mask; ++i) {
    const mc_status_t c = shards[(home + i) & mask]->alloc(size, align, offset, &too_many);
    if (c == MC_OK) return MC_OK;
    if (too_many) return too_many_ranges(why);
  }
  // No shard holds it alone: the first run across boundaries that does.
  uint64_t at = 0;
  bool found = false;
  for_each_boundary_run([&](uint64_t start, uint64_t end) {
    const uint64_t a = start + pad_for(start, align);
    if (!found && a >= start && a <= end && size <= end - a) {
      at = a;
      found = true;
    }
  });
  if (!found) {
    const Stats s = stats_all();
    return no_room(why, size, align, capacity, s.free, s.largest_free);
  }
  const uint32_t first = shard_of(at), last = shard_of(at + size - 1);
  // Everything that may allocate or fail happens before the first change.
  for (uint32_t k = first; k <= last; ++k)
    if (!shards[k]->reserve()) return too_many_ranges(why);
  if (first != last) spans.emplace(at, size);
  for (uint32_t k = first; k <= last; ++k) {
    Arena &a = *shards[k];
    const uint64_t from = std::max(at, a.lo);
    const uint64_t to = k == last ? at + size : a.lo + a.len;
    // The piece lies in this shard's free tail (the first shard), in its free head (the
    // last), or is the whole free shard.
    const uint32_t t = a.free_tail(), h = a.free_head();
    const uint32_t f =
        t != kNone && a.blocks[t].start <= from && to - a.blocks[t].start <= a.blocks[t].size ? t : h;
    a.carve(f, from, to - from, first == last ? kWhole : k == first ? kSpanHead : kSpanPart);
  }
  span_parts += last - first;
  *offset = at;
  return MC_OK;
}

mc_status_t MemHeap::Impl::alloc(uint64_t size, uint64_t align, uint64_t *offset, std::string *why) {
  bool too_many = false;
  if (mask == 0) {
    Arena &a = *shards[0];
    std::lock_guard<HeapMutex> lock(a.mu);
    const mc_status_t c = a.alloc(size, align, offset, &too_many);
    if (c == MC_OK) [[likely]]
      return MC_OK;
    if (too_many) return too_many_ranges(why);
    return no_room(why, size, align, capacity, a.len - a.used, a.largest());
  }
  const uint32_t home = thread_number() & mask;
  for (uint32_t i = 0; i <= mask; ++i) {
    Arena &a = *shards[(home + i) & mask];
    std::lock_guard<HeapMutex> lock(a.mu);
    const mc_status_t c = a.alloc(size, align, offset, &too_many);
    if (c == MC_OK) [[likely]]
      return MC_OK;
    if (too_many) return too_many_ranges(why);
  }
  all_locks all(*this);
  return alloc_all(size, align, offset, why);
}

mc_status_t MemHeap::Impl::free_span(uint64_t offset, std::string *why) {
  auto it = spans.find(offset);
  if (it == spans.end()) return not_live(why, offset);  // freed by another thread meanwhile
  const uint64_t size = it->second;
  const uint32_t first = shard_of(offset), last = shard_of(offset + size - 1);
  spans.erase(it);
  for (uint32_t k = first; k <= last; ++k) {
    Arena &a = *shards[k];
    a.free_piece(std::max(offset, a.lo));
  }
  span_parts -= last - first;
  return MC_OK;
}

mc_status_t MemHeap::Impl::free(uint64_t offset, std::string *why) {
  // offset >= capacity can never be live, and is kept from the tables, whose empty key is the
  // one offset no heap can hand out (UINT64_MAX).
  if (offset >= capacity) [[unlikely]]
    return not_live(why, offset);
  bool span_head = false;
  {
    Arena &a = *shards[shard_of(offset)];
    std::lock_guard<HeapMutex> lock(a.mu);
    const mc_status_t c = a.free(offset, &span_head);
    if (c == MC_OK) [[likely]]
      return MC_OK;
  }
  if (!span_head) return not_live(why, offset);
  all_locks all(*this);
  return free_span(offset, why);
}

MemHeap::Stats MemHeap::Impl::stats_all() const {
  Stats s;
  s.capacity = capacity;
  for (const auto &a : shards) {
    s.used += a->used;
    s.allocations += a->allocations;
    s.largest_free = std::max(s.largest_free, a->largest());
  }
  s.allocations -= span_parts;
  s.free = capacity - s.used;
  for_each_boundary_run(
      [&](uint64_t start, uint64_t end) { s.largest_free = std::max(s.largest_free, end - start); });
  return s;
}

MemHeap::Stats MemHeap::Impl::get_stats() const {
  all_locks all(*this);
  return stats_all();
}

Status MemHeap::Impl::check() const {
  all_locks all(*this);
  Status st = Status::Ok();
  uint64_t heads = 0, parts = 0;
  for (const auto &a : shards) {
    st = a->check(&heads, &parts);
    if (!st.ok()) break;
  }
  if (st.ok()) {
    uint64_t want_parts = 0;
    for (const auto &[off, size] : spans) {
      const uint32_t first = shard_of(off), last = shard_of(off + size - 1);
      bool ok = first != last;
      for (uint32_t k = first; ok && k <= last; ++k) {
        const Arena &a = *shards[k];
        const uint64_t from = std::max(off, a.lo);
        const uint64_t to = k == last ? off + size : a.lo + a.len;
        ok = a.has_block(from, to - from, k == first ? kSpanHead : kSpanPart);
      }
      if (!ok) {
        st = Err(MC_ERR_INTERNAL,
                 "memheap: the pieces of the spanning allocation at " + U(off) + " do not match the shards");
        break;
      }
      want_parts += last - first;
    }
    if (st.ok() && (heads != spans.size() || parts != want_parts || parts != span_parts))
      st = Err(MC_ERR_INTERNAL, "memheap: span pieces in the shards disagree with the span table");
  }
  return st;
}

namespace {
// The live heaps, for process_totals. Never destroyed: heaps may outlive static destruction.
std::mutex &live_mu() {
  static auto *m = new std::mutex;
  return *m;
}
std::vector<const MemHeap *> &live_heaps() {
  static auto *v = new std::vector<const MemHeap *>;
  return *v;
}
}  // namespace

MemHeap::MemHeap(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  std::lock_guard<std::mutex> lk(live_mu());
  live_heaps().push_back(this);
}
MemHeap::~MemHeap() {
  std::lock_guard<std::mutex> lk(live_mu());
  auto &v = live_heaps();
  v.erase(std::find(v.begin(), v.end(), this));
}

MemHeap::Totals MemHeap::process_totals() {
  Totals t;
  std::lock_guard<std::mutex> lk(live_mu());
  for (const MemHeap *h : live_heaps()) {
    Stats s = h->stats();
    t.heaps++;
    t.capacity += s.capacity;
    t.used += s.used;
    t.allocations += s.allocations;
  }
  return t;
}

unsigned MemHeap::auto_shards(uint64_t capacity) {
  unsigned hw = std::thread::hardware_concurrency();
  if (hw == 0) hw = 1;
  uint64_t n = std::bit_ceil(uint64_t(std::min(hw, 8u)) * 2);  // a few more than threads
  while (n > 1 && capacity / n < kMinShardBytes) n /= 2;
  return unsigned(n);
}

Status MemHeap::create(uint64_t capacity, std::unique_ptr<MemHeap> *out, unsigned shards) {
  if (out == nullptr) return Err(MC_ERR_INVALID_ARG, "out is NULL");
  if (capacity == 0) return Err(MC_ERR_INVALID_ARG, "capacity is 0; a heap needs at least 1 byte");
  if (shards == 0) shards = auto_shards(capacity);
  if (!std::has_single_bit(shards) || shards > kMaxShards || shards > capacity)
    return Err(MC_ERR_INVALID_ARG, "shards " + U(shards) + " is not a power of two from 1 to " +
                                       U(kMaxShards) + " and at most the capacity");
  auto impl = std::make_unique<Impl>(capacity, shards);
  // The constructor is private (create is the only way in), so make_unique cannot reach it.
  out->reset(new MemHeap(std::move(impl)));
  return Status::Ok();
}

unsigned MemHeap::shards() const { return unsigned(impl_->shards.size()); }

mc_status_t MemHeap::try_alloc(uint64_t size, uint64_t align, uint64_t *offset, std::string *why) {
  if (size == 0) [[unlikely]]
    return bad_arg(why, "size is 0; ask for at least 1 byte");
  // Not std::has_single_bit: without -mpopcnt it becomes a libgcc call on every alloc.
  if (align == 0 || (align & (align - 1)) != 0) [[unlikely]]
    return bad_arg(why, "align " + U(align) + " is not a power of two (1, 2, 4, ...)");
  if (offset == nullptr) [[unlikely]]
    return bad_arg(why, "offset is NULL");
  return impl_->alloc(size, align, offset, why);
}

mc_status_t MemHeap::try_free(uint64_t offset, std::string *why) { return impl_->free(offset, why); }

Status MemHeap::alloc(uint64_t size, uint64_t align, uint64_t *offset) {
  std::string why;
  const mc_status_t c = try_alloc(size, align, offset, &why);
  return c == MC_OK ? Status::Ok() : Err(c, std::move(why));
}

Status MemHeap::free(uint64_t offset) {
  std::string why;
  const mc_status_t c = try_free(offset, &why);
  return c == MC_OK ? Status::Ok() : Err(c, std::move(why));
}

MemHeap::Stats MemHeap::stats() const { return impl_->get_stats(); }

Status MemHeap::check_invariants() const { return impl_->check(); }

}  // namespace mc
