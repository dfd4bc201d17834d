// How long a thread watches for work another thread is about to finish before it goes to sleep,
// learned from what watching bought lately. Watching pays on a machine with an idle core (the
// other thread ends within microseconds, and sleeping and being woken would cost tens of them
// on a VM); it costs when no core is idle, because the watcher then holds the core the other
// thread needs. So: a watch that saw its condition restores the full budget, one that ran out
// halves it, down to nothing; with nothing, every kProbeEvery-th wait tries a full watch again,
// so the budget comes back once the machine has room. Shared by the threads of one owner
// (relaxed atomics: a stale budget only costs one wait a little).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>

namespace mc {

class AdaptiveSpin {
 public:
  static constexpr uint32_t kProbeEvery = 32;
  explicit AdaptiveSpin(uint32_t max_us) : max_us_(max_us), budget_us_(max_us) {}

  // The watch to try now (0: sleep at once).
  std::chrono::microseconds budget() {
    uint32_t b = budget_us_.load(std::memory_order_relaxed);
    if (b == 0 && calls_.fetch_add(1, std::memory_order_relaxed) % kProbeEvery == kProbeEvery - 1)
      b = max_us_;
    return std::chrono::microseconds(b);
  }
  // The watch saw the condition.
  void paid() {
    if (budget_us_.load(std::memory_order_relaxed) != max_us_)
      budget_us_.store(max_us_, std::memory_order_relaxed);
  }
  // The watch ran its whole budget out.
  void wasted() {
    uint32_t b = budget_us_.load(std::memory_order_relaxed);
    budget_us_.store(b < 4 ? 0 : b / 2, std::memory_order_relaxed);
    wasted_.fetch_add(1, std::memory_order_relaxed);
  }
  uint32_t current_us() const { return budget_us_.load(std::memory_order_relaxed); }
  uint64_t wasted_count() const { return wasted_.load(std::memory_order_relaxed); }

 private:
  const uint32_t max_us_;
  std::atomic<uint32_t> budget_us_;
  std::atomic<uint32_t> calls_{0};
  std::atomic<uint64_t> wasted_{0};
};

// Whether to share a large copy with worker threads now, learned from how the workers' parts
// went lately. Sharing pays on a machine with an idle core; where none is idle, a worker is
// preempted in the middle of its part now and then, and the request waits a scheduler slice
// (milliseconds) for bytes the submitting thread would have copied in microseconds: one such
// wait costs more than hundreds of shared copies gain. So a part that ran far longer than a copy
// of its size takes (lost) makes the next 16, 32, ... up to 8192 large copies run on the
// submitting thread alone (each loss in a row doubles the pause); after a pause one copy is shared
// again, and every kPaidToForgive parts in a row that ran in time (paid) take one doubling back.
// Relaxed atomics: a stale answer only shares, or not, one copy.
class AdaptiveShare {
 public:
  static constexpr uint32_t kMaxLevel = 10;  // a pause of 2^(level+3) large copies
  static constexpr uint32_t kPaidToForgive = 64;

  // Share this large copy?
  bool now() {
    uint32_t p = pause_.load(std::memory_order_relaxed);
    while (p > 0)
      if (pause_.compare_exchange_weak(p, p - 1, std::memory_order_relaxed)) return false;
    return true;
  }
  void paid() {
    if (level_.load(std::memory_order_relaxed) == 0) return;
    if (paid_.fetch_add(1, std::memory_order_relaxed) + 1 < kPaidToForgive) return;
    paid_.store(0, std::memory_order_relaxed);
    level_.fetch_sub(1, std::memory_order_relaxed);
  }
  void lost() {
    uint32_t l = level_.load(std::memory_order_relaxed);
    if (l < kMaxLevel) level_.store(++l, std::memory_order_relaxed);
    paid_.store(0, std::memory_order_relaxed);
    pause_.store(1u << (l + 3), std::memory_order_relaxed);
    lost_.fetch_add(1, std::memory_order_relaxed);
  }
  uint32_t pause() const { return pause_.load(std::memory_order_relaxed); }
  uint64_t lost_count() const { return lost_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint32_t> level_{0}, pause_{0}, paid_{0};
  std::atomic<uint64_t> lost_{0};
};

}  // namespace mc
