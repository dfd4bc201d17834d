// Sums that many threads add to and any thread reads (request counters, latency buckets): each
// thread adds to a row of its own with a plain load and store, no locked instruction (an atomic
// add costs about 5 ns on the project's VMs, the plain add under 1), and a read adds up the rows.
//
// Rows are made the first time a thread adds (kChunk rows at a time, under a lock) and kept until
// the object goes: memory grows with the threads that ever counted here, never with peers. A
// thread's index is handed to a later thread once it ended (thread_index()), with what it had
// counted, so the sums stay whole. Past kChunks * kChunk live threads, the rest share one row with
// atomic adds. A read is exact for every add that happens-before it; adds racing with it may or
// may not be in it, as with plain atomic counters.
#pragma once
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

namespace mc {

namespace detail {
// This thread's index + 1; 0: none yet; UINT32_MAX: the thread is ending (its index went back,
// and it counts in the shared row from then on). constinit: read without an init check. The
// default TLS model, not initial-exec: the library is dlopen'd (Python, Java), where a process
// may have no static TLS room left ("cannot allocate memory in static TLS block", seen in CI);
// the cost is a __tls_get_addr call, a few ns, per read.
extern constinit thread_local uint32_t t_thread_index;
uint32_t assign_thread_index();
}  // namespace detail

// This thread's index among the threads alive now: small, dense, reused after a thread ends.
inline uint32_t thread_index() {
  const uint32_t t = detail::t_thread_index;
  return t ? t - 1 : detail::assign_thread_index();  // ending: UINT32_MAX - 1, past every row
}

// thread_index() read once and handed down a hot path that counts and locks several times (the
// *_at / ThreadIx overloads below and in read_mostly_mutex.h): each read is a call otherwise.
// Only for the thread that read it.
struct ThreadIx {
  uint32_t v;
  static ThreadIx mine() { return ThreadIx{thread_index()}; }
};

// One Row for each thread that asks (row()), made kChunk at a time on a thread's first ask and
// kept until this goes; nullptr for threads past `rows` (tests pass fewer to reach that case).
template <class Row>
class ThreadRows {
 public:
  static constexpr size_t kChunk = 16, kChunks = 256;
  explicit ThreadRows(size_t rows = kChunk * kChunks)
      : rows_(rows < kChunk * kChunks ? rows : kChunk * kChunks) {}
  ThreadRows(const ThreadRows &) = delete;
  ThreadRows &operator=(const ThreadRows &) = delete;

  Row *row() { return row(ThreadIx::mine()); }
  Row *row(ThreadIx me) {
    const uint32_t t = me.v;
    if (t >= rows_) return nullptr;
    Row *c = chunks_[t / kChunk].load(std::memory_order_acquire);
    if (!c) c = make_chunk(t / kChunk);
    return &c[t % kChunk];
  }
  // f(const Row &) for every row made so far.
  template <class F>
  void each(F &&f) const {
    for (const auto &ch : chunks_) {
      const Row *c = ch.load(std::memory_order_acquire);
      if (!c) continue;
      for (size_t r = 0; r < kChunk; r++) f(c[r]);
    }
  }

 private:
  Row *make_chunk(size_t k) {
    std::lock_guard<std::mutex> lk(mu_);
    Row *c = chunks_[k].load(std::memory_order_relaxed);
    if (c) return c;
    owned_[k].reset(new Row[kChunk]);
    c = owned_[k].get();
    chunks_[k].store(c, std::memory_order_release);
    return c;
  }
  const size_t rows_;
  std::array<std::atomic<Row *>, kChunks> chunks_{};
  std::array<std::unique_ptr<Row[]>, kChunks> owned_{};
  std::mutex mu_;
};

template <size_t N>
class ThreadSums {
 public:
  ThreadSums() = default;
  explicit ThreadSums(size_t rows) : rows_(rows) {}

  void add(size_t i, uint64_t v) { add(ThreadIx::mine(), i, v); }
  void add(ThreadIx me, size_t i, uint64_t v) {
    Row *r = rows_.row(me);
    if (!r) {
      shared_.v[i].fetch_add(v, std::memory_order_relaxed);
      return;
    }
    std::atomic<uint64_t> &cell = r->v[i];
    cell.store(cell.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);  // one writer
  }

  uint64_t sum(size_t i) const {
    uint64_t s = shared_.v[i].load(std::memory_order_relaxed);
    rows_.each([&](const Row &r) { s += r.v[i].load(std::memory_order_relaxed); });
    return s;
  }

 private:
  struct alignas(64) Row {
    std::array<std::atomic<uint64_t>, N> v{};
  };
  ThreadRows<Row> rows_;
  Row shared_;  // threads past the rows add here, with atomic adds
};

}  // namespace mc
