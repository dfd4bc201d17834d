// Whether handing part of a copy to helper threads pays now, judged from the shared calls
// themselves, per size of call.
//
// Sharing a copy between the calling thread and a helper doubles its rate when a core is idle
// for the helper, and costs it a time slice when none is: the helper, woken onto a core that
// other work holds, or onto the caller's own, finishes its part long after the caller. The
// caller's own scheduler figures (util/cpu_crowding.h) cannot always tell: with two busy loops
// on two CPUs the caller can hold a core of its own and never wait, while every helper waits
// (bench/busy.sh: 1 MiB WRITEs at 27 GB/s shared against 34-36 alone and for memcpy).
//
// So each shared call is judged by its own times: it paid if it ended within kPaidNum/kPaidDen
// of the time the caller took for its own share (alone, the caller would have needed about
// twice that: the parts are cut equal). Comparing two calls' times instead (one shared, one
// alone) misled on a VM, where one preempted call costs as much as a hundred others. A score
// per class of call size counts the verdicts (+2 paid, -1 not, from kScoreMin to kScoreMax:
// sharing goes off after a run of calls that did not pay, and a probe that paid turns it on at
// once); while it is negative the calls of that class are copied alone, except for a run of
// kBurst shared calls in every kProbeEvery (3% of the calls), which keeps judging. On the 2-CPU
// VM, quiet, 8-11% of shared 1 MiB calls did not pay; beside two busy loops 66-99%. The first call of a run
// is not judged: its helper slept since the last run and takes a wake-up (60-90 us on a VM, as long as
// copying a MiB) that a helper watching for the next part of a steady stream does not.
//
// Thread-safe without locks (relaxed atomics: two verdicts at the same moment may count once).
#pragma once
#include <atomic>
#include <cstdint>

namespace mc {

class SharePayoff {
 public:
  static constexpr unsigned kMinLog2 = 16;  // 64 KiB: class 0
  static constexpr unsigned kClasses = 8;   // up to 16 MiB (one class a power of two)
  static constexpr uint32_t kProbeEvery = 128;
  static constexpr uint32_t kBurst = 4;
  static constexpr int32_t kScoreMax = 8, kScoreMin = -2;
  static constexpr uint64_t kPaidNum = 8, kPaidDen = 5;  // 1.6x the caller's own share

  // The class of a call of `bytes`: -1 outside [64 KiB, 16 MiB).
  static int class_of(uint64_t bytes);
  struct Choice {
    bool share;  // share the call
    bool judge;  // and judge it (judge())
  };
  // How the next call of class cls (class_of) should go. Never blocks.
  Choice choose(int cls);
  // A shared call of class cls took all_ns from its start to its last part's end; the calling
  // thread's own share took mine_ns of it; one_cpu: its helper ran on the calling thread's CPU
  // (taking turns with it: never paid, however the times came out).
  void judge(int cls, uint64_t all_ns, uint64_t mine_ns, bool one_cpu);
  // The class's score now (stats, tests).
  int32_t score(int cls) const;
  // Verdicts so far, all classes (stats).
  uint64_t paid() const { return paid_.load(std::memory_order_relaxed); }
  uint64_t unpaid() const { return unpaid_.load(std::memory_order_relaxed); }

 private:
  struct Class {
    std::atomic<int32_t> score{kScoreMax / 2};  // start by sharing
    std::atomic<uint32_t> calls{0};
  };
  Class c_[kClasses];
  std::atomic<uint64_t> paid_{0}, unpaid_{0};
};

}  // namespace mc
