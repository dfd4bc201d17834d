// White-box tests of the TCP transport's event loop (src/transport/tcp/io_loop.h): handlers are
// ticked only while they ask for it, so idle connections cost an idle engine nothing per peer.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "transport/tcp/io_loop.h"

extern "C" {
#include <cmocka.h>
}

namespace {

using mc::tcp::IoHandler;
using mc::tcp::IoLoop;

struct Counting : IoHandler {
  std::atomic<int> ticks{0}, stops{0};
  void on_events(uint32_t) override {}
  void on_tick(uint64_t) override { ticks++; }
  void on_stop() override { stops++; }
};

// Runs fn on the loop thread and waits for it.
void on_loop(IoLoop &loop, const std::function<void()> &fn) {
  std::promise<void> done;
  assert_true(loop.post([&] {
    fn();
    done.set_value();
  }));
  done.get_future().wait();
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// 200 handlers: ticked while they ask, not at all once they stop asking, again when they ask.
void ticks_only_while_asked(void **) {
  IoLoop loop;
  assert_true(loop.start("wb").ok());
  constexpr int kN = 200;
  std::vector<std::shared_ptr<Counting>> hs;
  std::vector<int> fds;
  for (int i = 0; i < kN; i++) {
    int sv[2];
    assert_int_equal(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fds.push_back(sv[0]);
    fds.push_back(sv[1]);
    auto h = std::make_shared<Counting>();
    hs.push_back(h);
    on_loop(loop, [&] { assert_true(loop.add(sv[0], 0, h)); });
  }
  sleep_ms(4 * IoLoop::kTickMs);
  for (auto &h : hs) assert_true(h->ticks.load() >= 1);  // added: ticked

  on_loop(loop, [&] {
    for (auto &h : hs) loop.set_ticking(h.get(), false);
  });
  std::vector<int> quiet;
  for (auto &h : hs) quiet.push_back(h->ticks.load());
  uint64_t r0 = loop.rounds();
  sleep_ms(5 * IoLoop::kTickMs);
  for (int i = 0; i < kN; i++) assert_int_equal(hs[i]->ticks.load(), quiet[i]);  // nobody asked
  // Nothing ticking: the loop sleeps without a timeout (at most the round that ran the post
  // above ends after r0 was read), so idle engines cost nothing.
  print_message("loop rounds while nothing ticks for %d ms: %llu\n", int(5 * IoLoop::kTickMs),
                static_cast<unsigned long long>(loop.rounds() - r0));
  assert_true(loop.rounds() - r0 <= 1);

  on_loop(loop, [&] { loop.set_ticking(hs[7].get(), true); });
  sleep_ms(4 * IoLoop::kTickMs);
  assert_true(hs[7]->ticks.load() > quiet[7]);
  for (int i = 0; i < kN; i++)
    if (i != 7) assert_int_equal(hs[i]->ticks.load(), quiet[i]);  // only the one that asked

  // Removed while ticking: never ticked again, and stop() does not reach it.
  on_loop(loop, [&] { loop.remove(fds[14], hs[7].get()); });
  int t7 = hs[7]->ticks.load();
  sleep_ms(3 * IoLoop::kTickMs);
  assert_int_equal(hs[7]->ticks.load(), t7);
  loop.stop();
  assert_int_equal(hs[7]->stops.load(), 0);
  assert_int_equal(hs[0]->stops.load(), 1);  // still registered at stop, ticking or not
  for (int fd : fds) ::close(fd);
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {cmocka_unit_test(ticks_only_while_asked)};
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
