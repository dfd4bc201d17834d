// White-box tests of util/cpu_crowding.h: the rule that turns a thread's scheduler figures into
// "the CPUs are crowded", and a live case where this test crowds the CPUs itself.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "util/cpu_crowding.h"

extern "C" {
#include <cmocka.h>

#include "testutil.h"
}

namespace {

namespace cc = mc::cpu_crowding;

void rule(void **) {
  assert_false(cc::crowded_by(1'000'000, 0, 1));        // ran whenever it wanted
  assert_false(cc::crowded_by(1'000'000, 200'000, 1));  // waited a sixth of the time: not crowded
  assert_true(cc::crowded_by(1'000'000, 300'000, 1));   // waited 23% of the time, one long wait
  assert_true(cc::crowded_by(200'000, 800'000, 2));
  assert_false(cc::crowded_by(100'000, 300'000, 1));  // too short a time to decide
  // Woken often for short work: 40% of its time waiting, but 60 us a wake-up, not a time slice
  // of other work (the shm workers on a quiet 2-CPU VM).
  assert_false(cc::crowded_by(37'600'000, 25'600'000, 425));
  // Beside two busy loops: 34% waiting, 1 ms each time.
  assert_true(cc::crowded_by(651'000'000, 336'800'000, 333));
}

// More spinning threads than CPUs: a thread among them waits for a CPU most of the time, and
// its own readings say so within a few of them.
void live(void **) {
  if (access("/proc/thread-self/schedstat", R_OK) != 0) {
    std::printf("MC-SKIP: /proc/thread-self/schedstat cannot be read here: the library never counts the CPUs as crowded\n");
    std::fflush(stdout);
    skip();
  }
  const unsigned ncpu = std::max(1u, std::thread::hardware_concurrency());
  std::atomic<bool> stop{false}, seen{false};
  std::vector<std::thread> hogs;
  for (unsigned i = 0; i < 3 * ncpu; i++)
    hogs.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
  const uint64_t before = cc::crowded_readings();
  std::thread asker([&] {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(tu_slack_ms(5000));
    while (!seen.load() && std::chrono::steady_clock::now() < until)
      if (cc::crowded()) seen = true;
  });
  asker.join();
  stop = true;
  for (auto &t : hogs) t.join();
  assert_true(seen.load());
  assert_true(cc::crowded_readings() > before);
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {cmocka_unit_test(rule), cmocka_unit_test(live)};
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
