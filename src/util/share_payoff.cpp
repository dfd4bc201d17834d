// SharePayoff (share_payoff.h): per size class, the verdicts of recent shared calls and the
// choice they make.
#include "util/share_payoff.h"

namespace mc {

int SharePayoff::class_of(uint64_t bytes) {
  if (bytes < (uint64_t(1) << kMinLog2)) return -1;
  const unsigned log2 = 63u - static_cast<unsigned>(__builtin_clzll(bytes));
  return log2 - kMinLog2 < kClasses ? static_cast<int>(log2 - kMinLog2) : -1;
}

SharePayoff::Choice SharePayoff::choose(int cls) {
  Class &c = c_[cls];
  if (c.score.load(std::memory_order_relaxed) >= 0) return {true, true};
  const uint32_t n = c.calls.fetch_add(1, std::memory_order_relaxed) % kProbeEvery;
  const uint32_t first = kProbeEvery - kBurst;
  return {n >= first, n > first};
}

void SharePayoff::judge(int cls, uint64_t all_ns, uint64_t mine_ns, bool one_cpu) {
  if (cls < 0 || static_cast<unsigned>(cls) >= kClasses) return;
  std::atomic<int32_t> &s = c_[cls].score;
  const bool paid = !one_cpu && all_ns * kPaidDen <= mine_ns * kPaidNum;
  (paid ? paid_ : unpaid_).fetch_add(1, std::memory_order_relaxed);
  const int32_t v = s.load(std::memory_order_relaxed) + (paid ? 2 : -1);
  s.store(v > kScoreMax ? kScoreMax : v < kScoreMin ? kScoreMin : v, std::memory_order_relaxed);
}

int32_t SharePayoff::score(int cls) const {
  if (cls < 0 || static_cast<unsigned>(cls) >= kClasses) return 0;
  return c_[cls].score.load(std::memory_order_relaxed);
}

}  // namespace mc
