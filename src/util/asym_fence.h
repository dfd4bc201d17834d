// Asymmetric fences, for a Dekker-style handshake whose one side runs often and the other
// rarely (ReadMostlyMutex: a reader marks its slot, then looks for a writer; a writer raises its
// flag, then looks at the slots). The frequent side pays only a compiler barrier (light()); the
// rare side asks the kernel for a full memory barrier on every thread of this process that runs
// at that moment (heavy(): membarrier(2), MEMBARRIER_CMD_PRIVATE_EXPEDITED), so a store of the
// frequent side that was still in its CPU's store buffer is visible once heavy() returns, and a
// load it makes afterwards sees what the rare side stored before. A thread that was not running
// passed a context switch, itself a full barrier.
//
// Why: on the project's EPYC VM the frequent side's full barrier (a locked exchange) cost about
// 7 ns, three of them a third of an 8-byte local mc_transfer; heavy() costs a few microseconds,
// once per table change.
//
// available() says, once per process, whether the kernel lets us (Linux 4.14 and later, and no
// seccomp filter refusing membarrier; valgrind does not know it): where it does not, callers keep
// their full barrier on both sides.
#pragma once
#include <atomic>

namespace mc::asym {

namespace detail {
extern std::atomic<int> g_mode;  // 0: not asked yet; 1: membarrier registered; 2: not available
int init_mode();
}  // namespace detail

// Whether light()/heavy() may replace full barriers in this process; the same answer always.
inline bool available() {
  const int m = detail::g_mode.load(std::memory_order_relaxed);
  return (m ? m : detail::init_mode()) == 1;
}
// The frequent side: orders nothing in the CPU, only keeps the compiler from moving accesses
// across it; heavy() on the other side does the rest. Only where available().
inline void light() { std::atomic_signal_fence(std::memory_order_seq_cst); }
// The rare side: a full barrier on every running thread of this process. Blocks for a few
// microseconds (an interrupt to each CPU running one of them). Only where available().
void heavy();

}  // namespace mc::asym
