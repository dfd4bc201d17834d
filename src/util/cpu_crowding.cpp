// cpu_crowding (cpu_crowding.h): a thread's schedstat readings and the process's crowded mark.
#include "util/cpu_crowding.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>

#include "util/tsc_clock.h"

namespace mc {
namespace cpu_crowding {
namespace {

struct Reading {
  uint64_t at = 0;  // TscClock ticks of the last reading; 0: none yet
  uint64_t run = 0, delay = 0, slices = 0;
  bool unreadable = false;
};
thread_local Reading t_last;

std::atomic<uint64_t> g_crowded_at{0};  // TscClock ticks of the last crowded reading; 0: never
std::atomic<uint64_t> g_readings{0};

// /proc/thread-self/schedstat: ns on a CPU, ns runnable and waiting, times run on a CPU.
bool read_schedstat(uint64_t *run, uint64_t *delay, uint64_t *slices) {
  int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[128];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  unsigned long long r = 0, d = 0, c = 0;
  if (std::sscanf(buf, "%llu %llu %llu", &r, &d, &c) != 3) return false;
  *run = r;
  *delay = d;
  *slices = c;
  return true;
}

void take_reading(Reading &t, uint64_t now) {
  uint64_t run, delay, slices;
  if (!read_schedstat(&run, &delay, &slices)) {
    t.unreadable = true;
    return;
  }
  if (t.at != 0 && run >= t.run && delay >= t.delay && slices >= t.slices &&
      crowded_by(run - t.run, delay - t.delay, slices - t.slices)) {
    g_crowded_at.store(now, std::memory_order_relaxed);
    g_readings.fetch_add(1, std::memory_order_relaxed);
  }
  t.at = now;
  t.run = run;
  t.delay = delay;
  t.slices = slices;
}

}  // namespace

bool crowded_by(uint64_t d_run, uint64_t d_delay, uint64_t d_slices) {
  const uint64_t want = d_run + d_delay;
  return want >= kMinWantNs && d_delay * 5 > want && d_delay >= kMinWaitNs * std::max<uint64_t>(d_slices, 1);
}

bool crowded(bool read) {
  const uint64_t now = TscClock::ticks();
  if (read) {
    Reading &t = t_last;
    if (!t.unreadable && (t.at == 0 || TscClock::ns_between(t.at, now) >= kSampleNs)) take_reading(t, now);
  }
  const uint64_t at = g_crowded_at.load(std::memory_order_relaxed);
  return at != 0 && TscClock::ns_between(at, now) < kHoldNs;
}

uint64_t crowded_readings() { return g_readings.load(std::memory_order_relaxed); }

}  // namespace cpu_crowding
}  // namespace mc
