// A latency histogram with fixed bounds that any thread may add to without a lock or a locked
// instruction: each thread counts in a row of its own (thread_sums.h), a bucket and the sum. Read as a
// snapshot whose count is the sum of its buckets, so a reader never sees a +Inf bucket that disagrees with
// the count (Prometheus requires them equal).
#pragma once
#include <array>
#include <atomic>
#include <cstdint>

#include "util/thread_sums.h"

namespace mc {

class Histogram {
 public:
  // Upper bounds in nanoseconds (10 us .. 10 s, roughly 1-2.5-5 per decade); one more bucket
  // takes everything above the last.
  static constexpr std::array<uint64_t, 15> kBoundsNs = {
      10'000,    25'000,     50'000,     100'000,     250'000,     500'000,       1'000'000,     2'500'000,
      5'000'000, 10'000'000, 25'000'000, 100'000'000, 500'000'000, 1'000'000'000, 10'000'000'000};
  static constexpr size_t kBuckets = kBoundsNs.size() + 1;

  struct Snapshot {
    std::array<uint64_t, kBuckets> cumulative{};  // observations <= each bound; the last is +Inf
    uint64_t count = 0;
    uint64_t sum_ns = 0;
  };

  void observe(uint64_t ns) { observe(ThreadIx::mine(), ns); }
  void observe(ThreadIx me, uint64_t ns) {
    size_t i = 0;
    while (i < kBoundsNs.size() && ns > kBoundsNs[i]) i++;
    cells_.add(me, i, 1);
    cells_.add(me, kBuckets, ns);
  }

  Snapshot snapshot() const {
    Snapshot s;
    uint64_t run = 0;
    for (size_t i = 0; i < kBuckets; i++) {
      run += cells_.sum(i);
      s.cumulative[i] = run;
    }
    s.count = run;
    s.sum_ns = cells_.sum(kBuckets);
    return s;
  }

 private:
  ThreadSums<kBuckets + 1> cells_;  // the buckets, then the sum of the observations
};

}  // namespace mc
