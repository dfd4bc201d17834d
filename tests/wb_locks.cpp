// White-box tests of the per-thread counting and locking the request path uses:
// util/thread_sums.h (sums added by many threads, each in a row of its own) and
// util/read_mostly_mutex.h (a reader-writer lock whose readers mark a slot of their own), and
// util/asym_fence.h (the barriers it splits between its readers and writers).
// Each case also runs with no rows at all, where every thread takes the shared row or count.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "util/asym_fence.h"
#include "util/read_mostly_mutex.h"
#include "util/thread_sums.h"

extern "C" {
#include <cmocka.h>

#include "testutil.h"
}

namespace {

using mc::ReadMostlyMutex;
using mc::ThreadSums;
using namespace std::chrono_literals;

void sums_are_whole(size_t rows) {
  ThreadSums<3> s(rows);
  constexpr int kThreads = 8, kAdds = 100000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kAdds; i++) {
        s.add(0, 1);
        s.add(2, static_cast<uint64_t>(t));
      }
    });
  for (auto &t : ts) t.join();
  assert_int_equal(s.sum(0), uint64_t(kThreads) * kAdds);
  assert_int_equal(s.sum(1), 0);
  assert_int_equal(s.sum(2), uint64_t(kAdds) * (kThreads * (kThreads - 1) / 2));
  // Threads that end hand their index on, with what they counted: 200 threads one after the
  // other use few indexes, and nothing is lost.
  uint32_t most = 0;
  for (int k = 0; k < 200; k++) {
    std::thread([&] {
      s.add(1, 3);
      most = std::max(most, mc::thread_index());
    }).join();
  }
  assert_int_equal(s.sum(1), 600);
  assert_true(most < 8);
}

void thread_sums_rows(void **) { sums_are_whole(4096); }
void thread_sums_shared_row(void **) { sums_are_whole(0); }

// Writers keep a == b; readers must never see them differ; both sides run together.
void excludes(size_t rows, ReadMostlyMutex::Barrier barrier = ReadMostlyMutex::Barrier::kReaders) {
  ReadMostlyMutex mu(rows, barrier);
  uint64_t a = 0, b = 0;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, bad{0};
  std::vector<std::thread> ts;
  for (int r = 0; r < 3; r++)
    ts.emplace_back([&] {
      while (!stop.load()) {
        std::shared_lock<ReadMostlyMutex> lk(mu);
        if (a != b) bad++;
        {
          std::shared_lock<ReadMostlyMutex> again(mu);  // nested
          if (a != b) bad++;
        }
        reads++;
      }
    });
  for (int w = 0; w < 2; w++)
    ts.emplace_back([&] {
      for (int i = 0; i < 2000; i++) {
        std::unique_lock<ReadMostlyMutex> lk(mu);
        a++;
        std::this_thread::yield();
        b++;
      }
    });
  ts[3].join();
  ts[4].join();
  stop = true;
  for (int r = 0; r < 3; r++) ts[r].join();
  assert_int_equal(a, 4000);
  assert_int_equal(b, 4000);
  assert_int_equal(bad.load(), 0);
  assert_true(reads.load() > 0);
}

void mutex_excludes(void **) { excludes(4096); }
void mutex_excludes_writers_pay(void **) { excludes(4096, ReadMostlyMutex::Barrier::kWriters); }
void mutex_excludes_shared_count(void **) { excludes(0); }

// A reader that already holds the lock takes it again while a writer waits, and so does another
// reader (readers are preferred, as with glibc's rwlock): neither waits for the writer.
void readers_preferred(size_t rows, ReadMostlyMutex::Barrier barrier = ReadMostlyMutex::Barrier::kReaders) {
  ReadMostlyMutex mu(rows, barrier);
  mu.lock_shared();
  std::atomic<bool> wrote{false};
  std::thread w([&] {
    std::unique_lock<ReadMostlyMutex> lk(mu);
    wrote = true;
  });
  std::this_thread::sleep_for(20ms);  // the writer is waiting now
  assert_false(wrote.load());
  assert_false(mu.try_lock());
  mu.lock_shared();  // nested
  std::atomic<bool> other{false};
  std::thread r([&] {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(tu_slack_ms(2000));
    while (!mu.try_lock_shared()) {  // in the writer's brief looks, it may fail: try again
      if (std::chrono::steady_clock::now() > until) return;
    }
    other = true;
    mu.unlock_shared();
  });
  r.join();
  assert_true(other.load());
  mu.unlock_shared();
  assert_false(wrote.load());
  mu.unlock_shared();
  w.join();
  assert_true(wrote.load());
  // A writer that holds it: no reader gets in.
  mu.lock();
  std::thread r2([&] { other = mu.try_lock_shared(); });
  r2.join();
  assert_false(other.load());
  mu.unlock();
  assert_true(mu.try_lock());
  mu.unlock();
}

void mutex_readers_preferred(void **) { readers_preferred(4096); }
void mutex_readers_preferred_writers_pay(void **) { readers_preferred(4096, ReadMostlyMutex::Barrier::kWriters); }
void mutex_readers_preferred_shared_count(void **) { readers_preferred(0); }

// The handshake asym_fence serves, on two threads at once, many times: one side stores x and
// loads y with only light() between, the other stores y and loads x with heavy() between. At
// least one of them must see the other's store. Without a barrier on either side the CPU's store
// buffer lets both see 0: on the project's 2-vCPU EPYC VM this round structure shows it in about
// 4% of rounds. Where membarrier is not available both sides take full barriers instead, as
// ReadMostlyMutex does.
void asym_fence_dekker(void **) {
  const bool asym = mc::asym::available();
  print_message("membarrier: %s\n", asym ? "registered (light/heavy fences)" : "not available (full fences)");
  constexpr int kRounds = 20000;
  std::atomic<int> x{0}, y{0}, arrived{0};
  std::vector<int> seen_x(kRounds), seen_y(kRounds);
  auto meet = [&](int k) {  // both threads pass meeting k together
    arrived.fetch_add(1);
    while (arrived.load() < 2 * (k + 1)) {
    }
  };
  auto side = [&](std::atomic<int> &mine, std::atomic<int> &theirs, std::vector<int> &seen, bool heavy) {
    for (int i = 0; i < kRounds; i++) {
      meet(2 * i);
      if (!asym) {  // a locked exchange: a full barrier
        mine.exchange(1, std::memory_order_seq_cst);
      } else {
        mine.store(1, std::memory_order_relaxed);
        if (heavy)
          mc::asym::heavy();
        else
          mc::asym::light();
      }
      seen[i] = theirs.load(asym ? std::memory_order_relaxed : std::memory_order_seq_cst);
      meet(2 * i + 1);
      mine.store(0);
    }
  };
  std::thread a([&] { side(x, y, seen_y, false); });
  std::thread b([&] { side(y, x, seen_x, true); });
  a.join();
  b.join();
  int both_zero = 0;
  for (int i = 0; i < kRounds; i++) both_zero += seen_x[i] == 0 && seen_y[i] == 0;
  print_message("%d rounds, %d where neither side saw the other\n", kRounds, both_zero);
  assert_int_equal(both_zero, 0);
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(thread_sums_rows),
      cmocka_unit_test(thread_sums_shared_row),
      cmocka_unit_test(mutex_excludes),
      cmocka_unit_test(mutex_excludes_writers_pay),
      cmocka_unit_test(mutex_excludes_shared_count),
      cmocka_unit_test(mutex_readers_preferred),
      cmocka_unit_test(mutex_readers_preferred_writers_pay),
      cmocka_unit_test(mutex_readers_preferred_shared_count),
      cmocka_unit_test(asym_fence_dekker),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
