// TscClock (tsc_clock.h): the TSC check and the rate.
#include "util/tsc_clock.h"

#include <atomic>
#include <chrono>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace mc {

namespace {

struct Base {
  bool invariant = false;
  uint64_t ns = 0, tsc = 0;
};

// Taken when the library is loaded, so that the first conversions already span milliseconds.
const Base kBase = [] {
  Base x;
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  x.invariant = __get_cpuid(0x80000007u, &a, &b, &c, &d) && (d & (1u << 8));
  x.ns = TscClock::steady_ns();
  x.tsc = __rdtsc();
#endif
  return x;
}();

std::atomic<double> g_kept{0};  // ns per tick, once measured over 10 ms or more

}  // namespace

uint64_t TscClock::steady_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

bool TscClock::invariant() { return kBase.invariant; }

double TscClock::ns_per_tick() {
  double r = g_kept.load(std::memory_order_relaxed);
  if (r > 0) return r;
#if defined(__x86_64__)
  uint64_t ns = steady_ns(), tsc = __rdtsc();
  if (tsc <= kBase.tsc || ns <= kBase.ns) return 1.0;
  r = static_cast<double>(ns - kBase.ns) / static_cast<double>(tsc - kBase.tsc);
  if (ns - kBase.ns >= 10'000'000) g_kept.store(r, std::memory_order_relaxed);
  return r;
#else
  return 1.0;
#endif
}

}  // namespace mc
