// memheap_bench: alloc+free pairs per second through the public mc_heap_* API with 10,000 live
// blocks of mixed sizes, beside glibc malloc/free of the same sizes in the same order, with 1
// and 2 threads. Prints a table and writes it to a file (default bench/results/memheap.txt).
//
// Each step frees a random live block and allocates a new one in its place, so the number of
// live blocks stays at 10,000 (split between the threads) and both allocators see the same
// sequence of sizes and victims. The sequences are generated before timing so that the random
// number generator is not measured. Each case runs 3 times and the fastest run is reported,
// because this runs on shared machines. The mc_heap rows share one heap between the threads,
// except "mc_heap per thread" (align 1), which gives each thread a heap of its own.
#include <mc.h>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kLive = 10000;     // live blocks in total, over all threads
constexpr size_t kSeq = 1 << 20;    // length of the pre-generated size/victim sequences
constexpr uint64_t kCapacity = 1ull << 30;  // never the limit: mean live bytes are ~14 MB

struct Sequence {
  std::vector<uint32_t> sizes;    // bytes to allocate at step i
  std::vector<uint32_t> victims;  // live slot to free at step i
};

// 60% 16..256 bytes, 30% 257..2048, 10% 2049..16384: small control structures next to larger
// pool buffers, and past glibc's tcache limit (1032 bytes) for 40% of the requests.
uint32_t MixedSize(std::mt19937_64 &rng) {
  const uint64_t r = rng() % 100;
  if (r < 60) return uint32_t(16 + rng() % 241);
  if (r < 90) return uint32_t(257 + rng() % 1792);
  return uint32_t(2049 + rng() % 14336);
}

Sequence MakeSequence(uint64_t seed, size_t live) {
  std::mt19937_64 rng(seed);
  Sequence s;
  s.sizes.resize(kSeq);
  s.victims.resize(kSeq);
  for (size_t i = 0; i < kSeq; ++i) {
    s.sizes[i] = MixedSize(rng);
    s.victims[i] = uint32_t(rng() % live);
  }
  return s;
}

struct HeapDeleter {
  void operator()(mc_heap_t *h) const { mc_heap_destroy(h); }
};
using HeapPtr = std::unique_ptr<mc_heap_t, HeapDeleter>;

using Clock = std::chrono::steady_clock;

struct Run {
  double seconds = 0;  // the timed steps only: fill and drain are not counted
  uint64_t failures = 0;
};

// One thread's share: fill `live` blocks, wait for the other threads, then time `pairs`
// free+alloc steps.
Run RunHeap(mc_heap_t *heap, const Sequence &seq, size_t live, uint64_t pairs, uint64_t align,
            std::barrier<> &start) {
  std::vector<uint64_t> offs(live);
  Run run;
  uint64_t &failures = run.failures;
  for (size_t i = 0; i < live; ++i)
    if (mc_heap_alloc(heap, seq.sizes[i], align, &offs[i]) != MC_OK) std::abort();
  start.arrive_and_wait();
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < pairs; ++i) {
    const size_t k = i & (kSeq - 1);
    uint64_t &slot = offs[seq.victims[k]];
    if (mc_heap_free(heap, slot) != MC_OK) std::abort();
    if (mc_heap_alloc(heap, seq.sizes[k], align, &slot) != MC_OK) {
      ++failures;  // cannot happen at this capacity; counted rather than trusted
      if (mc_heap_alloc(heap, 1, 1, &slot) != MC_OK) std::abort();
    }
  }
  run.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (size_t i = 0; i < live; ++i)
    if (mc_heap_free(heap, offs[i]) != MC_OK) std::abort();
  return run;
}

Run RunMalloc(const Sequence &seq, size_t live, uint64_t pairs, std::barrier<> &start) {
  std::vector<void *> ptrs(live);
  for (size_t i = 0; i < live; ++i) ptrs[i] = std::malloc(seq.sizes[i]);
  start.arrive_and_wait();
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < pairs; ++i) {
    const size_t k = i & (kSeq - 1);
    void *&slot = ptrs[seq.victims[k]];
    std::free(slot);
    slot = std::malloc(seq.sizes[k]);
    if (slot == nullptr) std::abort();
    // Keep the compiler from pairing the free and the malloc away.
    asm volatile("" : : "r"(slot) : "memory");
  }
  Run run;
  run.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (size_t i = 0; i < live; ++i) std::free(ptrs[i]);
  return run;
}

struct Result {
  std::string name;
  int threads;
  double seconds;    // the slowest thread's timed steps
  uint64_t pairs;    // over all threads
  uint64_t failures;
};

// Runs fn(thread index, barrier) on `threads` threads; returns the slowest thread's timed
// seconds and the sum of the failures.
template <class Fn>
Run RunThreads(int threads, Fn fn) {
  std::barrier<> start(threads);
  std::vector<Run> runs(static_cast<size_t>(threads));
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] { runs[size_t(t)] = fn(t, start); });
  for (auto &t : ts) t.join();
  Run all;
  for (const Run &r : runs) {
    all.seconds = std::max(all.seconds, r.seconds);
    all.failures += r.failures;
  }
  return all;
}

// One case of the table. heap false: glibc malloc/free. heap true: mc_heap_*, on one heap that
// all threads share, or with own_heaps on a heap per thread (each as large as the shared one).
struct Case {
  std::string name;
  int threads;
  bool heap;
  uint64_t align;
  bool own_heaps;
};

Run MeasureOnce(const Case &c, uint64_t pairs_per_thread, const std::vector<Sequence> &seqs) {
  const size_t live = kLive / size_t(c.threads);
  if (!c.heap)
    return RunThreads(c.threads, [&](int t, std::barrier<> &start) {
      return RunMalloc(seqs[size_t(t)], live, pairs_per_thread, start);
    });
  std::vector<HeapPtr> hs;
  for (int i = 0; i < (c.own_heaps ? c.threads : 1); ++i) {
    mc_heap_t *raw = nullptr;
    if (mc_heap_create(kCapacity, &raw) != MC_OK) std::abort();
    hs.emplace_back(raw);
  }
  const Run run = RunThreads(c.threads, [&](int t, std::barrier<> &start) {
    return RunHeap(hs[c.own_heaps ? size_t(t) : 0].get(), seqs[size_t(t)], live,
                   pairs_per_thread, c.align, start);
  });
  for (const HeapPtr &h : hs) {
    mc_heap_stats_t st;
    st.size = sizeof st;
    if (mc_heap_stats(h.get(), &st) != MC_OK || st.allocations != 0 ||
        st.largest_free != kCapacity)
      std::abort();
  }
  return run;
}

}  // namespace

int main(int argc, char **argv) {
  const std::string out_path = argc > 1 ? argv[1] : "bench/results/memheap.txt";
  const uint64_t pairs = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 4000000;
  constexpr int kReps = 3;

  std::vector<Sequence> one = {MakeSequence(1, kLive)};
  std::vector<Sequence> two = {MakeSequence(1, kLive / 2), MakeSequence(2, kLive / 2)};

  const std::vector<Case> cases = {
      {"glibc malloc/free", 1, false, 1, false},
      {"mc_heap align 1", 1, true, 1, false},
      {"mc_heap align 64", 1, true, 64, false},
      {"glibc malloc/free", 2, false, 1, false},
      {"mc_heap align 1", 2, true, 1, false},
      {"mc_heap align 64", 2, true, 64, false},
      // Not the goal's case (one heap shared by both threads), for comparison: what a caller
      // gets who gives each thread a heap of its own, as glibc gives each thread its own arena.
      {"mc_heap per thread", 2, true, 1, true},
  };
  std::vector<Result> rs;
  for (const Case &c : cases)
    rs.push_back(Result{c.name, c.threads, 1e30, pairs * uint64_t(c.threads), 0});
  // The repetitions go round all cases, rather than one case three times and then the next, so
  // that a burst of load from elsewhere on a shared machine hits malloc and mc_heap alike.
  for (int rep = 0; rep < kReps; ++rep)
    for (size_t i = 0; i < cases.size(); ++i) {
      const Run run = MeasureOnce(cases[i], pairs, cases[i].threads == 1 ? one : two);
      if (run.seconds < rs[i].seconds) {
        rs[i].seconds = run.seconds;
        rs[i].failures = run.failures;
      }
    }

  std::string text;
  char line[256];
  std::snprintf(line, sizeof line,
                "memheap bench: %zu live blocks of 16..16384 bytes (60%% <=256, 30%% <=2048), "
                "%llu alloc+free pairs per thread, best of 3, %u hardware threads\n",
                kLive, (unsigned long long)pairs, std::thread::hardware_concurrency());
  text += line;
  std::snprintf(line, sizeof line, "%-20s %7s %12s %14s %10s %9s\n", "allocator", "threads",
                "Mpairs/s", "ns/pair/thread", "vs malloc", "failures");
  text += line;
  for (const Result &r : rs) {
    const Result *base = nullptr;
    for (const Result &b : rs)
      if (b.threads == r.threads && b.name == "glibc malloc/free") base = &b;
    const double mps = double(r.pairs) / r.seconds / 1e6;
    const double ns = r.seconds * 1e9 / double(r.pairs / uint64_t(r.threads));
    const double ratio = r.seconds / base->seconds;
    std::snprintf(line, sizeof line, "%-20s %7d %12.2f %14.1f %9.2fx %9llu\n", r.name.c_str(),
                  r.threads, mps, ns, ratio, (unsigned long long)r.failures);
    text += line;
  }
  std::fputs(text.c_str(), stdout);
  FILE *f = std::fopen(out_path.c_str(), "w");
  if (f == nullptr) {
    std::perror(out_path.c_str());
    return 1;
  }
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return 0;
}
