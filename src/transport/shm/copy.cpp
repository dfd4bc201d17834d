#include "transport/shm/copy.h"

#include <chrono>
#include <cstring>
#include <memory>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace mc {
namespace shmcopy {
namespace {

#if defined(__x86_64__)
// Runs in this range may be copied with an AVX2 loop. Which copy is faster depends on the CPU:
// on the Xeon VMs here glibc's memcpy (`rep movsb`) was about 10% slower than 32-byte vector
// moves for data in L2 (64 KiB-512 KiB: 49.8 against 54.9 GB/s); on the AMD EPYC VMs (FSRM,
// AVX-512) memcpy was faster at 64 KiB (115-120 against 87-92 GB/s) and equal from 256 KiB.
// So the process measures both once (avx2_wins), below and above 32 KiB: at 4-16 KiB the loop
// won on both (EPYC: 161-167 against 126-155 GB/s). From 2 MiB on the two are equal.
constexpr uint64_t kVecMin = 1u << 10;
constexpr uint64_t kVecMax = 2u << 20;

__attribute__((target("avx2"))) void copy_avx2(char *dst, const char *src, uint64_t len) {
  uint64_t i = 0;
  for (; i + 128 <= len; i += 128) {
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i));
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i + 32));
    __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i + 64));
    __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i + 96));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), a);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i + 32), b);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i + 64), c);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i + 96), e);
  }
  std::memcpy(dst + i, src + i, len - i);
}

// glibc's memcpy through a pointer the compiler cannot see through (it would inline it).
void *(*volatile g_memcpy)(void *, const void *, size_t) = std::memcpy;

// Whether the AVX2 loop beats memcpy for a copy of len bytes with data in L1/L2, as a batch of
// reused blocks has it: the shortest of 15 alternated timings of each (after a warm-up), AVX2
// only where it wins by 3% or more. 8 MiB copied per size: about 0.2 ms for both, once a process.
bool avx2_wins(uint64_t len) {
  __builtin_cpu_init();  // this may run before libgcc's own constructor
  if (!__builtin_cpu_supports("avx2")) return false;
  std::unique_ptr<char[]> buf(new (std::nothrow) char[2 * len + 64]);
  if (!buf) return true;
  char *src = buf.get(), *dst = buf.get() + len + 64;
  std::memset(src, 0x5a, len);
  std::memset(dst, 0, len);
  using clk = std::chrono::steady_clock;
  clk::duration best[2] = {clk::duration::max(), clk::duration::max()};
  const int reps = static_cast<int>((256u << 10) / len);
  for (int t = 0; t < 32; t++) {
    const int way = t & 1;
    const auto t0 = clk::now();
    for (int k = 0; k < reps; k++) way ? copy_avx2(dst, src, len) : (void)g_memcpy(dst, src, len);
    const auto d = clk::now() - t0;
    if (t >= 2 && d < best[way]) best[way] = d;
  }
  return best[1].count() * 103 < best[0].count() * 100;
}

// Runs below kSplit and from kSplit on may be copied with different loops.
constexpr uint64_t kSplit = 32u << 10;
struct Choice {
  bool small = avx2_wins(16u << 10), large = avx2_wins(64u << 10);
};
const Choice &choice() {
  static const Choice c;
  return c;
}
bool use_avx2(uint64_t len) { return len < kSplit ? choice().small : choice().large; }
#endif

}  // namespace

const char *loop_name() {
#if defined(__x86_64__)
  static const char *const names[2][2] = {{"memcpy", "memcpy below 32 KiB, avx2 from 32 KiB"},
                                          {"avx2 below 32 KiB, memcpy from 32 KiB", "avx2"}};
  return names[choice().small][choice().large];
#else
  return "memcpy";
#endif
}

// The streaming loop copies two pages side by side with prefetches, as glibc's own large copy
// does (it keeps that for copies of hundreds of MiB, which a transfer cut into parts never
// reaches). The sfence orders the streaming stores before the completion that publishes them.
void run(char *dst, const char *src, uint64_t len, bool stream) {
#if defined(__x86_64__)
  if (stream && len >= (64u << 10)) {
    uint64_t head = (64 - (reinterpret_cast<uintptr_t>(dst) & 63)) & 63;
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    len -= head;
    auto line = [](char *d, const char *s) {
      __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i *>(s));
      __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + 16));
      __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + 32));
      __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + 48));
      _mm_stream_si128(reinterpret_cast<__m128i *>(d), a);
      _mm_stream_si128(reinterpret_cast<__m128i *>(d + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i *>(d + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i *>(d + 48), e);
    };
    uint64_t i = 0;
    for (; i + 8192 <= len; i += 8192)
      for (uint64_t k = 0; k < 4096; k += 64) {
        _mm_prefetch(src + i + k + 256, _MM_HINT_T0);
        _mm_prefetch(src + i + 4096 + k + 256, _MM_HINT_T0);
        line(dst + i + k, src + i + k);
        line(dst + i + 4096 + k, src + i + 4096 + k);
      }
    for (; i + 64 <= len; i += 64) line(dst + i, src + i);
    _mm_sfence();
    std::memcpy(dst + i, src + i, len - i);
    return;
  }
  if (len >= kVecMin && len <= kVecMax && use_avx2(len)) {
    copy_avx2(dst, src, len);
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst, src, len);
}

}  // namespace shmcopy
}  // namespace mc
