// Whether the calling thread waits for a CPU lately: the kernel's run-queue delay of the thread
// (/proc/thread-self/schedstat, second field: nanoseconds spent runnable but not running),
// against the time that passed. A thread that watches for work uses it to stop watching when no
// core is idle (the watch then takes the core that another thread needs) even though what it
// watched for came in time. One per thread; reads the file at most once per kInterval.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>

namespace mc {

class RunDelay {
 public:
  static constexpr auto kInterval = std::chrono::milliseconds(1);

  RunDelay() : fd_(::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC)) {}
  ~RunDelay() {
    if (fd_ >= 0) ::close(fd_);
  }
  RunDelay(const RunDelay &) = delete;
  RunDelay &operator=(const RunDelay &) = delete;

  // True when, over the last interval read, this thread waited for a CPU 30% of the time
  // or more. False where the kernel does not say (no schedstat).
  bool crowded() {
    if (fd_ < 0) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < kInterval) return crowded_;
    char buf[96];
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    if (n <= 0) return crowded_;
    buf[n] = '\0';
    char *p = nullptr;
    std::strtoull(buf, &p, 10);
    const uint64_t delay = std::strtoull(p, nullptr, 10);
    const uint64_t wall = static_cast<uint64_t>(std::chrono::nanoseconds(now - last_).count());
    if (seen_) crowded_ = (delay - delay_) * 10 >= wall * 3;
    seen_ = true;
    delay_ = delay;
    last_ = now;
    return crowded_;
  }

 private:
  int fd_;
  bool seen_ = false, crowded_ = false;
  uint64_t delay_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace mc
