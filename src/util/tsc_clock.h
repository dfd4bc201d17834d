// A clock for short durations on a hot path: the CPU's time-stamp counter where it is invariant
// (x86 with the "invariant TSC" CPUID bit: same rate on every core, in every power state),
// scaled to nanoseconds with a rate measured against steady_clock; elsewhere steady_clock itself.
//
// Why: on the VMs here a steady_clock read (vDSO clock_gettime) costs about 26 ns and rdtsc
// about 10; the fast path of one small request (engine/fast_path.cpp) takes two readings for
// the batch latency histogram, and 30 ns was a fifth of its whole cost.
//
// The rate comes from a reading taken when the library is loaded and a later one: from 10 ms
// apart it is kept; before that each conversion uses the estimate so far (its error is the two
// reads' cost over the time between them: under 1e-4 once 1 ms passed, which engine creation
// alone takes).
#pragma once
#include <cstdint>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace mc {

class TscClock {
 public:
  // A reading, in ticks (TSC) or ns (steady_clock): only for ns_between.
  static uint64_t ticks() {
#if defined(__x86_64__)
    if (invariant()) return __rdtsc();
#endif
    return steady_ns();
  }
  // Nanoseconds from reading a to the later reading b.
  static uint64_t ns_between(uint64_t a, uint64_t b) {
    if (b <= a) return 0;
    if (!invariant()) return b - a;
    return static_cast<uint64_t>(static_cast<double>(b - a) * ns_per_tick());
  }
  static uint64_t steady_ns();

 private:
  static bool invariant();
  static double ns_per_tick();
};

}  // namespace mc
