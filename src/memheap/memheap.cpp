// MemHeap internals.
//
// Every range, free or allocated, is a Block in one pool (a vector indexed by uint32), linked to
// its address neighbours. The links make merging on free O(1) without an address-ordered tree.
//
// Free ranges are indexed by size the way TLSF does it (two-level segregated fit): a size class
// is (fl, sl) where fl is the power of two of the size and sl one of 64 equal steps inside it, so
// a class spans less than 1/64 of its sizes (sizes below 128 have a class each). Two bitmaps say
// which classes hold ranges, so "the first class at or above X that holds a range" is a couple
// of bit scans. Unlike plain TLSF, each class is a max-heap by size rather than a list: its top
// answers "does any range in the request's own class fit?" in O(1). Without it a request could
// fail while a range of its own class would hold it (TLSF only looks in classes whose every
// range fits), which breaks the "no room means no room" promise of the header, and exact fits
// (the common fixed-size pool case) would split larger ranges instead of reusing freed ones.
//
// Live allocations are found by offset in an open-addressing hash table (linear probing with
// backward-shift deletion), so neither alloc nor free allocates a node; the pool, the class
// heaps and the table grow geometrically and are reserved before anything changes, so a
// bad_alloc leaves the heap as it was.
#include "memheap/memheap.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

// The heap steps below are small and called from few places; inlining them into Alloc and Free
// saved a fifth of the instructions of an alloc+free pair (measured with callgrind).
#define MC_HOT_INLINE [[gnu::always_inline]] inline

namespace mc {
namespace {

constexpr uint32_t kNil = UINT32_MAX;
// Block::pos of an allocated block and of a recycled pool slot; free blocks hold their heap index.
constexpr uint32_t kUsed = UINT32_MAX;
constexpr uint32_t kDead = UINT32_MAX - 1;
// Block indices stay below this so that they never collide with the markers above.
constexpr uint64_t kMaxBlocks = UINT32_MAX - 2;

constexpr unsigned kSlLog = 6;
constexpr uint32_t kSl = 1u << kSlLog;

struct Class {
  uint32_t fl;
  uint32_t sl;
};

// The class holding ranges of `size` (> 0) bytes.
inline Class ClassOf(uint64_t size) {
  if (size < kSl) return {0, uint32_t(size)};
  const unsigned l = unsigned(std::bit_width(size)) - 1;  // >= kSlLog
  return {l - kSlLog + 1, uint32_t(size >> (l - kSlLog)) - kSl};
}

// The smallest size in class c.
inline uint64_t ClassLow(Class c) {
  return c.fl == 0 ? c.sl : (uint64_t(kSl + c.sl) << (c.fl - 1));
}

// Classes numbered fl * kSl + sl: the index of a class heap, and what a free Block keeps.
inline uint32_t ClassIndex(uint64_t size) {
  const Class c = ClassOf(size);
  return c.fl * kSl + c.sl;
}

// The first class whose every range is >= size. fl may come out one past the last class.
inline Class ClassUp(uint64_t size) {
  Class c = ClassOf(size);
  if (ClassLow(c) == size) return c;
  if (++c.sl == kSl) return {c.fl + 1, 0};
  return c;
}

// Padding that brings start up to a multiple of align (a power of two); never overflows.
inline uint64_t PadFor(uint64_t start, uint64_t align) { return (0 - start) & (align - 1); }

// Grows v geometrically so that `extra` more elements fit without reallocating.
// (vector::reserve(size()+1) would allocate exactly that much every time: quadratic.)
template <class T>
[[gnu::noinline]] void Grow(std::vector<T> &v, size_t extra) {
  v.reserve(std::max(v.size() + extra, std::max<size_t>(8, v.capacity() * 2)));
}
template <class T>
inline void ReserveMore(std::vector<T> &v, size_t extra) {
  if (v.capacity() - v.size() < extra) [[unlikely]] Grow(v, extra);
}

// Live allocations: offset -> block index.
class LiveTable {
 public:
  LiveTable() { Rehash(16); }

  // Makes room for one more Insert; may throw bad_alloc, changes nothing visible.
  void ReserveOne() {
    if ((size_ + 1) * 2 > slots_.size()) Rehash(slots_.size() * 2);
  }
  // key must be absent and room reserved.
  void Insert(uint64_t key, uint32_t val) {
    size_t i = Home(key);
    while (slots_[i].val != kNil) i = (i + 1) & mask_;
    slots_[i] = {key, val};
    ++size_;
  }
  // The slot holding key, or npos.
  size_t Find(uint64_t key) const {
    for (size_t i = Home(key);; i = (i + 1) & mask_) {
      if (slots_[i].val == kNil) return npos;
      if (slots_[i].key == key) return i;
    }
  }
  uint32_t ValueAt(size_t slot) const { return slots_[slot].val; }
  // Backward-shift deletion: later entries of the probe run move up so that no tombstones build
  // up and lookups stay short however many allocations come and go.
  void EraseAt(size_t i) {
    size_t j = i;
    for (;;) {
      j = (j + 1) & mask_;
      if (slots_[j].val == kNil) break;
      const size_t home = Home(slots_[j].key);
      // The entry at j may fill the hole at i only if i lies between its home and j.
      if (((j - home) & mask_) >= ((j - i) & mask_)) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i].val = kNil;
    --size_;
  }
  size_t size() const { return size_; }
  static constexpr size_t npos = SIZE_MAX;

 private:
  struct Slot {
    uint64_t key;
    uint32_t val;  // kNil: empty
  };
  // Fibonacci hashing: offsets are often multiples of a large alignment, and the multiply
  // spreads those low-zero keys over the top bits taken here.
  size_t Home(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  void Rehash(size_t n) {
    std::vector<Slot> old(n, Slot{0, kNil});
    old.swap(slots_);
    mask_ = n - 1;
    shift_ = 64 - unsigned(std::countr_zero(n));
    size_ = 0;
    for (const Slot &s : old)
      if (s.val != kNil) Insert(s.key, s.val);
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  unsigned shift_ = 0;
  size_t size_ = 0;
};

std::string U(uint64_t v) { return std::to_string(v); }

// The heap's lock: a mutex that spins briefly before it sleeps. Heap calls hold it for a
// fraction of a microsecond, so a thread that finds it taken usually gets it a few hundred
// cycles later, while sleeping in the kernel and being woken costs several microseconds: with
// a plain std::mutex two threads on one heap ran ten times slower than one. (std::mutex has
// no "is it taken" test to spin on, and its try_lock costs more than the lock itself here.)
// States: 0 free, 1 taken, 2 taken and a thread may be asleep on it (Drepper, "Futexes are
// tricky", mutex #2), with C++20 atomic wait/notify as the futex.
class HeapMutex {
 public:
  void lock() {
    uint32_t c = 0;
    if (state_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    // Spin on a plain load with exponential backoff: polling with writes would pull the lock's
    // cache line away from the owner on every try, and backing off lets the owner run several
    // calls in a row while the heap's lines are in its cache, instead of handing them back and
    // forth between cores on every call.
    for (int pauses = 1; pauses <= kMaxBackoff; pauses *= 2) {
      for (int i = 0; i < pauses; ++i) Pause();
      c = 0;
      if (state_.load(std::memory_order_relaxed) == 0 &&
          state_.compare_exchange_strong(c, 1, std::memory_order_acquire))
        return;
    }
    while (state_.exchange(2, std::memory_order_acquire) != 0)
      state_.wait(2, std::memory_order_relaxed);
  }
  void unlock() {
    if (state_.exchange(0, std::memory_order_release) == 2) state_.notify_one();
  }

 private:
  static void Pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  static constexpr int kMaxBackoff = 256;  // about 500 pauses in all, a few microseconds
  std::atomic<uint32_t> state_{0};
};

}  // namespace

struct MemHeap::Impl {
  struct Block {
    uint64_t start;
    uint64_t size;
    uint32_t prev;  // address neighbours, kNil at the ends; `next` chains recycled slots too
    uint32_t next;
    uint32_t pos;  // index in its class heap when free; kUsed; kDead
    uint32_t cls;  // its class (ClassIndex(size)) while free: fills what would be padding
  };
  struct Entry {
    uint64_t size;  // copied from the block so that heap steps stay inside the heap's array
    uint32_t block;
  };

  explicit Impl(uint64_t cap)
      : capacity(cap), fl_count(ClassOf(cap).fl + 1),
        classes(size_t(fl_count) * kSl) {
    blocks.push_back(Block{0, cap, kNil, kNil, kUsed, 0});
    const uint32_t k = ClassIndex(cap);
    ReserveMore(classes[k], 1);
    ClassInsert(0, k);
  }

  Status Alloc(uint64_t size, uint64_t align, uint64_t *offset);
  Status Free(uint64_t offset);
  Stats GetStats() const;
  Status Check() const;

  uint32_t FindFit(uint64_t size, uint64_t align) const;
  uint32_t FirstFrom(Class c) const;  // index of the first non-empty class at or after c, or kNil
  uint64_t Largest() const;
  // Whether the range of class entry e holds size bytes at align. With align 1 the entry alone
  // answers, which spares a visit to the block.
  bool Fits(const Entry &e, uint64_t size, uint64_t align) const {
    if (align == 1) return e.size >= size;
    const uint64_t pad = PadFor(blocks[e.block].start, align);
    return pad <= e.size && size <= e.size - pad;
  }
  static size_t IndexOf(Class c) { return size_t(c.fl) * kSl + c.sl; }
  // Makes room for `extra` more ranges in class k unless block b (kNil: none) moves within k.
  void ReserveClass(uint32_t k, size_t extra, uint32_t b = kNil) {
    if (b == kNil || blocks[b].cls != k) ReserveMore(classes[k], extra);
  }
  void ReserveSlots(size_t n) {
    if (dead_slots + (blocks.capacity() - blocks.size()) < n) ReserveMore(blocks, n);
  }
  uint32_t NewSlot() {
    if (free_slot != kNil) {
      const uint32_t i = free_slot;
      free_slot = blocks[i].next;
      --dead_slots;
      return i;
    }
    blocks.push_back(Block{});  // capacity reserved by ReserveSlots: cannot throw
    return uint32_t(blocks.size() - 1);
  }
  void Recycle(uint32_t i) {
    blocks[i].pos = kDead;
    blocks[i].next = free_slot;
    free_slot = i;
    ++dead_slots;
  }
  // Class heap steps; the target class must have room (ReserveClass): they never allocate.
  void ClassInsert(uint32_t b, uint32_t k);
  void ClassRemove(uint32_t b);
  // Moves free block b to [start, start+size) of class k, in place in its class heap when k is
  // its class already.
  void Reshape(uint32_t b, uint64_t start, uint64_t size, uint32_t k);
  void SiftUp(std::vector<Entry> &h, size_t i);
  void SiftDown(std::vector<Entry> &h, size_t i);

  mutable HeapMutex mu;  // guards everything below
  const uint64_t capacity;
  const uint32_t fl_count;
  uint64_t used = 0;
  uint64_t allocations = 0;
  uint64_t free_ranges = 0;
  std::vector<Block> blocks;
  uint32_t free_slot = kNil;  // recycled pool slots, chained through Block::next
  size_t dead_slots = 0;
  uint64_t fl_bitmap = 0;           // bit fl: some class (fl, *) holds a range
  std::array<uint64_t, 64> sl_bitmap{};  // [fl] bit sl: class (fl, sl) holds a range
  std::vector<std::vector<Entry>> classes;  // max-heaps by size, fl_count * kSl of them
  LiveTable live;
};

MC_HOT_INLINE void MemHeap::Impl::SiftUp(std::vector<Entry> &h, size_t i) {
  const Entry e = h[i];
  while (i > 0) {
    const size_t p = (i - 1) / 2;
    if (h[p].size >= e.size) break;
    h[i] = h[p];
    blocks[h[i].block].pos = uint32_t(i);
    i = p;
  }
  h[i] = e;
  blocks[e.block].pos = uint32_t(i);
}

MC_HOT_INLINE void MemHeap::Impl::SiftDown(std::vector<Entry> &h, size_t i) {
  const Entry e = h[i];
  const size_t n = h.size();
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && h[c + 1].size > h[c].size) ++c;
    if (h[c].size <= e.size) break;
    h[i] = h[c];
    blocks[h[i].block].pos = uint32_t(i);
    i = c;
  }
  h[i] = e;
  blocks[e.block].pos = uint32_t(i);
}

MC_HOT_INLINE void MemHeap::Impl::ClassInsert(uint32_t b, uint32_t k) {
  std::vector<Entry> &h = classes[k];
  blocks[b].cls = k;
  h.push_back(Entry{blocks[b].size, b});
  SiftUp(h, h.size() - 1);
  sl_bitmap[k / kSl] |= uint64_t(1) << (k % kSl);
  fl_bitmap |= uint64_t(1) << (k / kSl);
  ++free_ranges;
}

MC_HOT_INLINE void MemHeap::Impl::ClassRemove(uint32_t b) {
  const uint32_t k = blocks[b].cls;
  std::vector<Entry> &h = classes[k];
  const size_t i = blocks[b].pos;
  const Entry last = h.back();
  h.pop_back();
  if (i < h.size()) {
    h[i] = last;
    if (i > 0 && h[(i - 1) / 2].size < last.size)
      SiftUp(h, i);
    else
      SiftDown(h, i);
  }
  if (h.empty()) {
    sl_bitmap[k / kSl] &= ~(uint64_t(1) << (k % kSl));
    if (sl_bitmap[k / kSl] == 0) fl_bitmap &= ~(uint64_t(1) << (k / kSl));
  }
  blocks[b].pos = kUsed;
  --free_ranges;
}

MC_HOT_INLINE void MemHeap::Impl::Reshape(uint32_t b, uint64_t start, uint64_t size, uint32_t k) {
  if (blocks[b].cls != k) {
    ClassRemove(b);
    blocks[b].start = start;
    blocks[b].size = size;
    ClassInsert(b, k);
    return;
  }
  std::vector<Entry> &h = classes[k];
  const uint32_t i = blocks[b].pos;
  const bool grew = size > blocks[b].size;
  blocks[b].start = start;
  blocks[b].size = size;
  h[i].size = size;
  if (grew)
    SiftUp(h, i);
  else
    SiftDown(h, i);
}

MC_HOT_INLINE uint32_t MemHeap::Impl::FirstFrom(Class c) const {
  if (c.fl >= fl_count) return kNil;
  const uint64_t here = sl_bitmap[c.fl] & (~uint64_t(0) << c.sl);
  if (here) return uint32_t(IndexOf({c.fl, uint32_t(std::countr_zero(here))}));
  const uint64_t above = (c.fl + 1 < 64) ? fl_bitmap & (~uint64_t(0) << (c.fl + 1)) : 0;
  if (!above) return kNil;
  const uint32_t fl = uint32_t(std::countr_zero(above));
  return uint32_t(IndexOf({fl, uint32_t(std::countr_zero(sl_bitmap[fl]))}));
}

// Returns the block to carve, or kNil. Checked in this order, each O(1):
//  1. the largest range of the request's own class: the closest fit there is, and the only way
//     to reach ranges of that class that are >= size (the class also holds smaller ones);
//  2. any range of the first class above whose ranges are all >= size (the pick is the last
//     heap element: removing it needs no heap step);
//  3. for align > 1 only, the same two steps for size + align - 1, which fits at any alignment.
// With align 1, steps 1-2 see every range >= size; with align > 1, step 3 sees every range
// >= size + align - 1: that is the promise in the header.
MC_HOT_INLINE uint32_t MemHeap::Impl::FindFit(uint64_t size, uint64_t align) const {
  if (size > capacity - used) return kNil;
  const std::vector<Entry> &own = classes[IndexOf(ClassOf(size))];
  if (!own.empty() && Fits(own[0], size, align)) return own[0].block;
  uint32_t k = FirstFrom(ClassUp(size));
  if (k != kNil) {
    const Entry &e = classes[k].back();
    if (align == 1 || Fits(e, size, align)) return e.block;
  }
  if (align == 1) return kNil;
  if (align - 1 > capacity - size) return kNil;  // size + align - 1 > capacity
  const uint64_t need = size + align - 1;
  k = FirstFrom(ClassUp(need));
  if (k != kNil) return classes[k].back().block;
  const std::vector<Entry> &own_need = classes[IndexOf(ClassOf(need))];
  if (!own_need.empty() && own_need[0].size >= need) return own_need[0].block;
  return kNil;
}

uint64_t MemHeap::Impl::Largest() const {
  if (fl_bitmap == 0) return 0;
  const uint32_t fl = uint32_t(63 - std::countl_zero(fl_bitmap));
  const uint32_t sl = uint32_t(63 - std::countl_zero(sl_bitmap[fl]));
  return classes[IndexOf({fl, sl})][0].size;
}

Status MemHeap::Impl::Alloc(uint64_t size, uint64_t align, uint64_t *offset) {
  std::lock_guard<HeapMutex> lock(mu);
  const uint32_t f = FindFit(size, align);
  if (f == kNil) {
    return Err(MC_ERR_NO_MEMORY, "no free range holds " + U(size) + " bytes aligned to " +
                                     U(align) + " (capacity " + U(capacity) + ", " +
                                     U(capacity - used) + " bytes free in " + U(free_ranges) +
                                     " ranges, the largest " + U(Largest()) + ")");
  }
  // The free range [start, start+n) becomes padding [start, a), the allocation [a, a+size) and
  // a tail [a+size, start+n); padding and tail stay free. The range's own slot keeps the tail
  // (or else the padding) so that, when its size class does not change, as when a small block
  // is cut from a large range, its class heap only needs an in-place step.
  const uint64_t start = blocks[f].start;
  const uint64_t n = blocks[f].size;
  const uint64_t pad = PadFor(start, align);
  const uint64_t a = start + pad;
  const uint64_t tail = n - pad - size;
  const size_t new_slots = (pad || tail ? 1 : 0) + (pad && tail ? 1 : 0);
  if (blocks.size() - dead_slots + new_slots > kMaxBlocks)
    return Err(MC_ERR_NO_MEMORY, "too many ranges in one heap (" + U(kMaxBlocks) + ")");

  // Everything that may allocate happens before the first change: room in each class that
  // gains a range (none where the range f only moves inside its own class heap).
  ReserveSlots(new_slots);
  live.ReserveOne();
  const uint32_t k_pad = pad ? ClassIndex(pad) : 0;
  const uint32_t k_tail = tail ? ClassIndex(tail) : 0;
  if (pad && tail) {
    ReserveClass(k_pad, 2);  // 2: the tail may land in the same class
    ReserveClass(k_tail, 1, f);
  } else if (pad) {
    ReserveClass(k_pad, 1, f);
  } else if (tail) {
    ReserveClass(k_tail, 1, f);
  }

  uint32_t al;  // the allocation's block
  if (!pad && !tail) {
    ClassRemove(f);
    al = f;
  } else if (!tail) {
    al = NewSlot();  // [a, a+size) after the padding, which keeps f's slot
    const uint32_t next = blocks[f].next;
    blocks[al] = Block{a, size, f, next, kUsed, 0};
    if (next != kNil) blocks[next].prev = al;
    blocks[f].next = al;
    Reshape(f, start, pad, k_pad);
  } else {
    al = NewSlot();  // [a, a+size) before the tail, which keeps f's slot
    uint32_t left = blocks[f].prev;
    if (pad) {
      const uint32_t p = NewSlot();
      blocks[p] = Block{start, pad, left, al, kUsed, 0};
      if (left != kNil) blocks[left].next = p;
      left = p;
      ClassInsert(p, k_pad);
    } else if (left != kNil) {
      blocks[left].next = al;
    }
    blocks[al] = Block{a, size, left, f, kUsed, 0};
    blocks[f].prev = al;
    Reshape(f, a + size, tail, k_tail);
  }
  live.Insert(a, al);
  used += size;
  ++allocations;
  *offset = a;
  return Status::Ok();
}

Status MemHeap::Impl::Free(uint64_t offset) {
  std::lock_guard<HeapMutex> lock(mu);
  const size_t slot = live.Find(offset);
  if (slot == LiveTable::npos)
    return Err(MC_ERR_NOT_FOUND, "offset " + U(offset) +
                                     " is not the start of a live allocation (already freed, "
                                     "never allocated, or inside an allocation)");
  const uint32_t al = live.ValueAt(slot);
  const Block blk = blocks[al];
  const bool merge_prev = blk.prev != kNil && blocks[blk.prev].pos != kUsed;
  const bool merge_next = blk.next != kNil && blocks[blk.next].pos != kUsed;
  const uint64_t merged = blk.size + (merge_prev ? blocks[blk.prev].size : 0) +
                          (merge_next ? blocks[blk.next].size : 0);
  // The only step that may allocate, before any change; none is needed when the neighbour that
  // grows stays in its class.
  const uint32_t k = ClassIndex(merged);
  ReserveClass(k, 1, merge_prev ? blk.prev : merge_next ? blk.next : kNil);

  live.EraseAt(slot);
  used -= blk.size;
  --allocations;
  // A free neighbour grows over the freed range in place (keeping its slot and, when its size
  // class holds, its heap entry) instead of all three ranges leaving and re-entering the index.
  if (merge_prev) {
    const uint32_t p = blk.prev;
    uint32_t after = blk.next;
    if (merge_next) {
      ClassRemove(blk.next);
      after = blocks[blk.next].next;
      Recycle(blk.next);
    }
    blocks[p].next = after;
    if (after != kNil) blocks[after].prev = p;
    Reshape(p, blocks[p].start, merged, k);
    Recycle(al);
  } else if (merge_next) {
    const uint32_t nx = blk.next;
    blocks[nx].prev = blk.prev;
    if (blk.prev != kNil) blocks[blk.prev].next = nx;
    Reshape(nx, blk.start, merged, k);
    Recycle(al);
  } else {
    ClassInsert(al, k);
  }
  return Status::Ok();
}

MemHeap::Stats MemHeap::Impl::GetStats() const {
  std::lock_guard<HeapMutex> lock(mu);
  Stats s;
  s.capacity = capacity;
  s.used = used;
  s.free = capacity - used;
  s.largest_free = Largest();
  s.allocations = allocations;
  return s;
}

Status MemHeap::Impl::Check() const {
  std::lock_guard<HeapMutex> lock(mu);
  auto bad = [](const std::string &what) { return Err(MC_ERR_INTERNAL, "memheap: " + what); };

  // The pool: exactly one live block has no left neighbour; recycled slots are counted.
  uint32_t head = kNil;
  size_t dead = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i].pos == kDead) {
      ++dead;
    } else if (blocks[i].prev == kNil) {
      if (head != kNil) return bad("two blocks without a left neighbour");
      head = uint32_t(i);
    }
  }
  if (dead != dead_slots) return bad("recycled slot count is off");
  size_t chained = 0;
  for (uint32_t i = free_slot; i != kNil; i = blocks[i].next) {
    if (blocks[i].pos != kDead || ++chained > dead) return bad("recycled slot chain is broken");
  }
  if (chained != dead) return bad("recycled slot chain misses slots");
  if (head == kNil) return bad("no first block");

  // The ranges tile [0, capacity) in address order.
  uint64_t at = 0, used_sum = 0, allocs = 0, frees = 0;
  size_t walked = 0;
  bool prev_free = false;
  for (uint32_t i = head, prev = kNil; i != kNil; prev = i, i = blocks[i].next) {
    const Block &k = blocks[i];
    if (++walked > blocks.size() - dead) return bad("address chain loops");
    if (k.pos == kDead) return bad("recycled slot in the address chain");
    if (k.prev != prev) return bad("broken left link at offset " + U(k.start));
    if (k.start != at) return bad("gap or overlap at offset " + U(at));
    if (k.size == 0 || k.size > capacity - at) return bad("bad size at offset " + U(at));
    at += k.size;
    const bool is_free = k.pos != kUsed;
    const size_t slot = live.Find(k.start);
    if (is_free) {
      if (prev_free) return bad("two free ranges touch at offset " + U(k.start));
      const std::vector<Entry> &h = classes[IndexOf(ClassOf(k.size))];
      if (k.cls != ClassIndex(k.size) || k.pos >= h.size() || h[k.pos].block != i ||
          h[k.pos].size != k.size)
        return bad("free range at " + U(k.start) + " is not where its class says");
      if (slot != LiveTable::npos) return bad("free range at " + U(k.start) + " is live");
      ++frees;
    } else {
      if (slot == LiveTable::npos || live.ValueAt(slot) != i)
        return bad("allocation at " + U(k.start) + " is missing from the live table");
      used_sum += k.size;
      ++allocs;
    }
    prev_free = is_free;
  }
  if (walked != blocks.size() - dead) return bad("blocks outside the address chain");
  if (at != capacity) return bad("ranges end at " + U(at) + ", not at the capacity");
  if (used_sum != used) return bad("used is " + U(used) + ", ranges say " + U(used_sum));
  if (allocs != allocations || live.size() != allocations)
    return bad("allocation count disagrees with the ranges or the live table");
  if (frees != free_ranges) return bad("free range count is off");

  // The class heaps: right class, heap order, back links, bitmaps.
  size_t entries = 0;
  for (uint32_t fl = 0; fl < fl_count; ++fl) {
    for (uint32_t sl = 0; sl < kSl; ++sl) {
      const std::vector<Entry> &h = classes[IndexOf({fl, sl})];
      const bool bit = (sl_bitmap[fl] >> sl) & 1;
      if (bit != !h.empty()) return bad("class bitmap disagrees with class contents");
      for (size_t j = 0; j < h.size(); ++j) {
        const Class c = ClassOf(h[j].size);
        if (c.fl != fl || c.sl != sl) return bad("range in the wrong class");
        if (blocks[h[j].block].pos != j || blocks[h[j].block].size != h[j].size)
          return bad("class entry does not match its block");
        if (j > 0 && h[(j - 1) / 2].size < h[j].size) return bad("class heap out of order");
      }
      entries += h.size();
    }
    if (((fl_bitmap >> fl) & 1) != (sl_bitmap[fl] != 0)) return bad("first-level bitmap is off");
  }
  if (entries != frees) return bad("class heaps hold ranges that are not free");
  return Status::Ok();
}

MemHeap::MemHeap(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MemHeap::~MemHeap() = default;

Status MemHeap::Create(uint64_t capacity, std::unique_ptr<MemHeap> *out) {
  if (out == nullptr) return Err(MC_ERR_INVALID_ARG, "out is NULL");
  if (capacity == 0) return Err(MC_ERR_INVALID_ARG, "capacity is 0; a heap needs at least 1 byte");
  auto impl = std::make_unique<Impl>(capacity);
  // The constructor is private (Create is the only way in), so make_unique cannot reach it.
  out->reset(new MemHeap(std::move(impl)));
  return Status::Ok();
}

Status MemHeap::Alloc(uint64_t size, uint64_t align, uint64_t *offset) {
  if (size == 0) return Err(MC_ERR_INVALID_ARG, "size is 0; ask for at least 1 byte");
  // Not std::has_single_bit: without -mpopcnt it becomes a libgcc call on every alloc.
  if (align == 0 || (align & (align - 1)) != 0)
    return Err(MC_ERR_INVALID_ARG, "align " + U(align) + " is not a power of two (1, 2, 4, ...)");
  if (offset == nullptr) return Err(MC_ERR_INVALID_ARG, "offset is NULL");
  return impl_->Alloc(size, align, offset);
}

Status MemHeap::Free(uint64_t offset) { return impl_->Free(offset); }

MemHeap::Stats MemHeap::stats() const { return impl_->GetStats(); }

Status MemHeap::CheckInvariants() const { return impl_->Check(); }

}  // namespace mc
