// HealthMonitor: a fixed set of threads probes every watched peer when due; a kick makes a peer
// due at once; a slow probe does not hold the others back; a peer nobody holds is dropped; stop
// joins and later kicks are harmless.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

// Before cmocka.h, whose skip() macro would clash with BufferedReader::skip (util/net.h).
#include "engine/engine.h"
#include "engine/health.h"

extern "C" {
#include <cmocka.h>
}

using namespace mc;
using Clock = std::chrono::steady_clock;

namespace {
struct Counts {
  std::mutex mu;
  std::map<const Peer *, int> probes;
  int total() {
    std::lock_guard<std::mutex> lk(mu);
    int t = 0;
    for (auto &[p, n] : probes) t += n;
    return t;
  }
  int of(const Peer *p) {
    std::lock_guard<std::mutex> lk(mu);
    return probes[p];
  }
};
}  // namespace

static void test_many_peers_two_threads(void **) {
  Counts c;
  const Peer *slow = nullptr;
  HealthMonitor m(2, [&](const std::shared_ptr<Peer> &p, HealthMonitor::Step *) -> uint64_t {
    {
      std::lock_guard<std::mutex> lk(c.mu);
      c.probes[p.get()]++;
    }
    if (p.get() == slow) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return 50;
  });
  std::vector<std::shared_ptr<Peer>> peers;
  for (int i = 0; i < 500; i++) peers.push_back(std::make_shared<Peer>());
  slow = peers[0].get();
  for (auto &p : peers) m.watch(p, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  // Every peer was probed several times although one probe takes 200 ms each time.
  for (size_t i = 1; i < peers.size(); i++) assert_true(c.of(peers[i].get()) >= 3);
  assert_int_equal(m.watched(), 500);
  // A peer nobody holds any more is dropped at its next step.
  peers.resize(100);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  assert_int_equal(m.watched(), 100);
  m.stop();
  int after = c.total();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  assert_int_equal(c.total(), after);  // no probe after stop
}

static void test_kick(void **) {
  Counts c;
  HealthMonitor m(2, [&](const std::shared_ptr<Peer> &p, HealthMonitor::Step *) -> uint64_t {
    std::lock_guard<std::mutex> lk(c.mu);
    c.probes[p.get()]++;
    return 60000;  // next step in a minute unless kicked
  });
  auto p = std::make_shared<Peer>();
  p->monitor = m.handle();
  m.watch(p, 60000);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  assert_int_equal(c.of(p.get()), 0);
  auto t0 = Clock::now();
  p->kick();
  while (c.of(p.get()) == 0 && Clock::now() - t0 < std::chrono::seconds(2))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  assert_int_equal(c.of(p.get()), 1);
  assert_true(Clock::now() - t0 < std::chrono::milliseconds(500));
  m.stop();
  p->kick();  // after stop: nothing happens
  assert_int_equal(c.of(p.get()), 1);
}

int main() {
  const CMUnitTest tests[] = {
      cmocka_unit_test(test_many_peers_two_threads),
      cmocka_unit_test(test_kick),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
