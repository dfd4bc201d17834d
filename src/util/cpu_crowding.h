// Whether other work holds the CPUs: the process's threads wait to run. Watching for work
// (AdaptiveSpin) and sharing one copy between two threads (the shm transport) pay only while a
// core is idle; when none is, the watcher takes the core the thread it waits for needs, and a
// helper thread preempted in the middle of its share makes the copy wait a whole time slice.
//
// Measured, not guessed: a thread that asks reads its own scheduler figures
// (/proc/thread-self/schedstat: time on a CPU, time runnable but waiting for one) at most once
// every kSampleNs; if, since its last reading, it waited for a CPU for more than a fifth of the
// time it wanted one, and kMinWaitNs or more on average each time it got one, the process counts
// as crowded for kHoldNs from then on. The second part tells other work holding the CPUs (a
// thread waits out a time slice of it: a millisecond or more) from wake-ups (tens of
// microseconds on a VM, and a thread woken often for short work waits them a large fraction of
// the time: the transport's own workers on a quiet 2-CPU VM wait 60-90 us a wake-up, 40-70% of
// their time; the submitting thread beside two busy loops, 1 ms a slice, 34%). Asking costs a
// thread-local read and a TSC read; a reading, about 3 us (an open, a read, a close). Where
// schedstat cannot be read, never crowded.
#pragma once
#include <cstdint>

namespace mc {
namespace cpu_crowding {

constexpr uint64_t kSampleNs = 2'000'000;  // a thread reads its figures at most this often
constexpr uint64_t kHoldNs = 20'000'000;   // a crowded reading holds this long
constexpr uint64_t kMinWantNs = 500'000;   // readings over less CPU-wanting time decide nothing
constexpr uint64_t kMinWaitNs = 250'000;   // mean wait for a CPU each time a thread got one

// True while a recent reading (any thread's) found this process waiting for CPUs; may take a
// reading of the calling thread first (read false: never; for threads whose waits are the
// process's own doing, such as copy workers that outnumber the CPUs). Thread-safe, never blocks.
bool crowded(bool read = true);
// The rule, for tests: since the last reading, d_run ns on a CPU, d_delay ns waiting for one,
// d_slices times run.
bool crowded_by(uint64_t d_run, uint64_t d_delay, uint64_t d_slices);
// How many readings found the process crowded (for stats).
uint64_t crowded_readings();

}  // namespace cpu_crowding
}  // namespace mc
