// A reader-writer lock for tables that every request reads and few calls change (the engine's
// segment table and buffer table, a peer's view): a reader takes it with one locked instruction
// on a line of its own (or a plain store, Barrier::kWriters) and lets go with a plain store,
// where a shared_mutex costs two locked instructions on one line that every reader shares
// (measured on the project's 2-vCPU EPYC VM: 12 ns a read lock and unlock, a third of an 8-byte
// local mc_transfer).
//
// Each thread has a slot per lock (made on a thread's first read, 16 at a time): a reader marks
// its slot, then looks for a writer; a writer, one at a time, raises its flag, then waits until no
// slot is marked. A lock made with Barrier::kWriters has the writer pay the barrier a reader
// needs between its mark and its look, where the kernel allows (util/asym_fence.h). A reader
// that met the flag unmarks its slot and waits until it is down. A writer keeps new readers out
// for at most a millisecond while the ones in flight finish, then lowers the flag a moment and
// tries again: a cycle where a reader in flight waits for something a new reader holds cannot
// hang (with glibc's default rwlock, what std::shared_mutex is there, new readers never wait for
// a waiting writer). A thread that holds the lock shared takes it again at once, so nested reads
// never wait behind a writer. Meets the SharedMutex requirements that std::shared_lock and
// std::unique_lock use. A writer pays a pass over the slots of the threads that ever read this
// lock (and, Barrier::kWriters, a membarrier: a few microseconds); waits spin briefly, then
// yield, then sleep.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "util/asym_fence.h"
#include "util/thread_sums.h"

namespace mc {

class ReadMostlyMutex {
 public:
  // Who pays the barrier between a reader's mark and its look for a writer (see above).
  enum class Barrier {
    kReaders,  // each reader: a locked instruction (a few ns); a writer pays nothing more
    kWriters,  // each writer: a membarrier (a few us) where the kernel has it; readers none.
               // For locks whose writers are rare next to their readers (a table changed
               // by a network round trip, not by a local call a program may make in a loop)
  };
  ReadMostlyMutex() = default;
  explicit ReadMostlyMutex(Barrier b) : writers_pay_(b == Barrier::kWriters) {}
  // rows: threads with a slot of their own (tests pass fewer to reach the shared count).
  ReadMostlyMutex(size_t rows, Barrier b) : slots_(rows), writers_pay_(b == Barrier::kWriters) {}
  ReadMostlyMutex(const ReadMostlyMutex &) = delete;
  ReadMostlyMutex &operator=(const ReadMostlyMutex &) = delete;

  void lock_shared() { lock_shared(ThreadIx::mine()); }
  // For the caller's own thread index (SharedHold): a path that takes several locks reads it once.
  void lock_shared(ThreadIx me) {
    std::atomic<uint32_t> *s = slot(me);
    if (!s) return lock_shared_shared_slot();
    const uint32_t depth = s->load(std::memory_order_relaxed);
    if (depth) {  // held shared by this thread already: a writer waits for us, not we for it
      s->store(depth + 1, std::memory_order_relaxed);
      return;
    }
    while (!try_mark(*s)) wait_writer();
  }
  bool try_lock_shared() {
    std::atomic<uint32_t> *s = slot();
    if (!s) return try_lock_shared_shared_slot();
    const uint32_t depth = s->load(std::memory_order_relaxed);
    if (depth) {
      s->store(depth + 1, std::memory_order_relaxed);
      return true;
    }
    return try_mark(*s);
  }
  void unlock_shared() { unlock_shared(ThreadIx::mine()); }
  void unlock_shared(ThreadIx me) {
    std::atomic<uint32_t> *s = slot(me);
    if (!s) return unlock_shared_shared_slot();
    s->store(s->load(std::memory_order_relaxed) - 1, std::memory_order_release);
  }

  void lock();
  bool try_lock();
  void unlock() {
    writer_.store(0, std::memory_order_release);
    wmu_.unlock();
  }

 private:
  struct alignas(64) Slot {
    std::atomic<uint32_t> n{0};  // this thread's read holds
  };
  // Marks s (first hold), then looks for a writer: the writer raises its flag, then looks at the
  // slots, so one of the two sees the other (seq_cst). False, s unmarked: a writer holds it.
  // Where the kernel allows (util/asym_fence.h), the full barrier between the two is the
  // writer's: the reader's side is a plain store and a compiler barrier.
  bool try_mark(std::atomic<uint32_t> &s) {
    if (writers_pay()) {
      s.store(1, std::memory_order_relaxed);
      asym::light();
      if (!writer_.load(std::memory_order_acquire)) return true;
    } else {
      s.exchange(1, std::memory_order_seq_cst);
      if (!writer_.load(std::memory_order_seq_cst)) return true;
    }
    s.store(0, std::memory_order_release);
    return false;
  }
  // This thread's slot; nullptr: past the rows, the shared count (shared_).
  std::atomic<uint32_t> *slot(ThreadIx me = ThreadIx::mine()) {
    Slot *s = slots_.row(me);
    return s ? &s->n : nullptr;
  }
  void wait_writer();   // until no writer holds the lock
  bool readers_gone();  // a writer's look at every slot
  void lock_shared_shared_slot();
  bool try_lock_shared_shared_slot();
  void unlock_shared_shared_slot();

  bool writers_pay() const { return writers_pay_ && asym::available(); }

  std::atomic<uint32_t> writer_{0};  // 1: a writer holds the lock, or is looking at the slots
  std::mutex wmu_;                   // one writer at a time (readers never wait on it)
  ThreadRows<Slot> slots_;
  Slot shared_;                     // the holds of threads past the rows, counted together
  const bool writers_pay_ = false;  // Barrier::kWriters
};

// std::shared_lock for a thread that read its index already (ThreadIx): holds mu shared from
// construction until unlock() or the end of its scope.
class SharedHold {
 public:
  SharedHold(ReadMostlyMutex &mu, ThreadIx me) : mu_(&mu), me_(me) { mu.lock_shared(me); }
  SharedHold(const SharedHold &) = delete;
  SharedHold &operator=(const SharedHold &) = delete;
  ~SharedHold() { unlock(); }
  void unlock() {
    if (mu_) mu_->unlock_shared(me_);
    mu_ = nullptr;
  }

 private:
  ReadMostlyMutex *mu_;
  ThreadIx me_;
};

}  // namespace mc
