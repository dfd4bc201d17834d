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

}  // namespace mc
