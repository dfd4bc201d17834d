// ReadMostlyMutex's slow parts (read_mostly_mutex.h): slots, writers, waits.
#include "util/read_mostly_mutex.h"

#include <sched.h>
#include <time.h>

#include <chrono>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace mc {
namespace {

// How long a writer keeps new readers out while the ones in flight finish (see lock()).
constexpr auto kDrain = std::chrono::milliseconds(1);

// Spins a little, then yields, then sleeps 50 us a round: for a writer waiting for readers
// (held for a lookup) and readers waiting for a writer (held for a table change).
void backoff(unsigned round) {
  if (round < 64) {
#if defined(__x86_64__)
    _mm_pause();
#endif
  } else if (round < 128) {
    sched_yield();
  } else {
    struct timespec ts = {0, 50 * 1000};
    nanosleep(&ts, nullptr);
  }
}

// Read holds of the threads past the slots: per lock, this thread's depth.
thread_local std::vector<std::pair<const void *, uint32_t>> t_shared_depth;

uint32_t &shared_depth(const void *lock) {
  for (auto &d : t_shared_depth)
    if (d.first == lock) return d.second;
  t_shared_depth.push_back({lock, 0});
  return t_shared_depth.back().second;
}

}  // namespace

void ReadMostlyMutex::wait_writer() {
  for (unsigned i = 0; writer_.load(std::memory_order_acquire); i++) backoff(i);
}

bool ReadMostlyMutex::readers_gone() {
  if (shared_.n.load(std::memory_order_seq_cst)) return false;
  bool gone = true;
  slots_.each([&](const Slot &s) { gone = gone && !s.n.load(std::memory_order_seq_cst); });
  return gone;
}

void ReadMostlyMutex::lock() {
  wmu_.lock();
  for (unsigned round = 0;; round++) {
    // With the flag up, readers in flight finish and new ones wait: for up to kDrain. Then the
    // flag goes down a moment, and readers that waited get in, as glibc's rwlock would let them
    // (one of them may hold what a reader in flight waits for).
    writer_.store(1, std::memory_order_seq_cst);
    if (writers_pay()) asym::heavy();  // readers that marked without a barrier are seen now
    const auto until = std::chrono::steady_clock::now() + kDrain;
    for (unsigned i = 0;; i++) {
      if (readers_gone()) return;
      if ((i & 15) == 15 && std::chrono::steady_clock::now() > until) break;
      backoff(i);
    }
    writer_.store(0, std::memory_order_seq_cst);
    backoff(round < 64 ? 64 : round);  // a yield, or a sleep from the 65th round on
  }
}

bool ReadMostlyMutex::try_lock() {
  if (!wmu_.try_lock()) return false;
  writer_.store(1, std::memory_order_seq_cst);
  if (writers_pay()) asym::heavy();
  if (readers_gone()) return true;
  writer_.store(0, std::memory_order_seq_cst);
  wmu_.unlock();
  return false;
}

void ReadMostlyMutex::lock_shared_shared_slot() {
  uint32_t &depth = shared_depth(this);
  if (depth++) {
    shared_.n.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  for (;;) {
    shared_.n.fetch_add(1, std::memory_order_seq_cst);
    if (!writer_.load(std::memory_order_seq_cst)) return;
    shared_.n.fetch_sub(1, std::memory_order_release);
    wait_writer();
  }
}

bool ReadMostlyMutex::try_lock_shared_shared_slot() {
  uint32_t &depth = shared_depth(this);
  shared_.n.fetch_add(1, std::memory_order_seq_cst);
  if (depth || !writer_.load(std::memory_order_seq_cst)) {
    depth++;
    return true;
  }
  shared_.n.fetch_sub(1, std::memory_order_release);
  return false;
}

void ReadMostlyMutex::unlock_shared_shared_slot() {
  shared_depth(this)--;
  shared_.n.fetch_sub(1, std::memory_order_release);
}

}  // namespace mc
