#include "gpu/gpu_staging.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "gpu/cuda_loader.h"
#include "util/log.h"
#include "memheap/memheap.h"

namespace mc::gpu {
namespace {

using namespace mc::cuda;

// 4 MiB chunks: large enough that a pinned copy runs near the PCIe/C2C rate (its fixed cost is
// ~10 us), small enough that the first bytes reach the socket early. Up to 3 in flight per
// transfer; the pool holds 16 chunks' worth so a handful of connections stage at once. When it
// is exhausted a transfer falls back to a private pageable buffer and synchronous copies: slower,
// but it never waits for another transfer (which could be the very one waiting on our socket).
constexpr uint64_t kChunk = 4ull << 20;
constexpr int kMaxBufs = 3;
constexpr uint64_t kPoolBytes = 16 * kChunk;

struct Lane {
  int dev;
  CUstream stream = nullptr;
  CUevent ev[kMaxBufs] = {};
};

class Pool {
 public:
  // Pinned memory and the heap over it; false (and a warning, once) when pinning fails.
  bool ready(std::string *why) {
    std::lock_guard<std::mutex> lk(mu_);
    if (base_) return true;
    if (failed_) {
      *why = why_;
      return false;
    }
    const Api *a = api();
    void *p = nullptr;
    CUresult r = a ? a->cuMemHostAlloc(&p, kPoolBytes, CU_MEMHOSTALLOC_PORTABLE) : CUDA_ERROR_NOT_INITIALIZED;
    Status st = r == CUDA_SUCCESS ? MemHeap::create(kPoolBytes, &heap_)
                                  : Err(MC_ERR_NO_MEMORY, error_text("cuMemHostAlloc", r));
    if (!st.ok()) {
      failed_ = true;
      why_ = st.message();
      MC_LOGW("gpu staging: no pinned pool (" << why_ << "); staging through pageable memory");
      *why = why_;
      return false;
    }
    base_ = static_cast<char *>(p);
    return true;
  }
  char *alloc(uint64_t n) {
    uint64_t off;
    if (!heap_->alloc(n, 4096, &off).ok()) return nullptr;
    return base_ + off;
  }
  void free(char *p) { heap_->free(static_cast<uint64_t>(p - base_)); }
  // The pinned pool's capacity and bytes lent out (0, 0 before first use).
  void usage(uint64_t *capacity, uint64_t *used) {
    std::lock_guard<std::mutex> lk(mu_);
    *capacity = *used = 0;
    if (!base_) return;
    MemHeap::Stats s = heap_->stats();
    *capacity = s.capacity;
    *used = s.used;
  }

  Lane *lane(int dev, std::string *why) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (size_t i = 0; i < lanes_.size(); i++)
        if (lanes_[i]->dev == dev) {
          Lane *l = lanes_[i];
          lanes_.erase(lanes_.begin() + static_cast<long>(i));
          return l;
        }
    }
    const Api *a = api();
    auto l = std::make_unique<Lane>();
    l->dev = dev;
    CUresult r = a->cuStreamCreate(&l->stream, CU_STREAM_NON_BLOCKING);
    for (int i = 0; r == CUDA_SUCCESS && i < kMaxBufs; i++)
      r = a->cuEventCreate(&l->ev[i], CU_EVENT_DISABLE_TIMING);
    if (r != CUDA_SUCCESS) {
      *why = error_text("creating a staging stream", r);
      for (auto e : l->ev)
        if (e) a->cuEventDestroy(e);
      if (l->stream) a->cuStreamDestroy(l->stream);
      return nullptr;
    }
    return l.release();
  }
  void put(Lane *l) {
    std::lock_guard<std::mutex> lk(mu_);
    lanes_.push_back(l);  // kept for the life of the process, like the pool
  }

  std::atomic<uint64_t> out{0}, in{0}, fallbacks{0};

 private:
  std::mutex mu_;  // guards everything below
  char *base_ = nullptr;
  bool failed_ = false;
  std::string why_;
  std::unique_ptr<MemHeap> heap_;
  std::vector<Lane *> lanes_;  // idle lanes, any device
};

Pool &pool() {
  static Pool *p = new Pool;  // lives as long as the process: threads may stage until exit
  return *p;
}

// The buffers of one transfer: from the pool, or one private pageable buffer.
struct Bufs {
  char *b[kMaxBufs] = {};
  int n = 0;
  bool pinned = false;
  std::vector<char> priv;
  ~Bufs() {
    if (pinned)
      for (int i = 0; i < n; i++) pool().free(b[i]);
  }
};

void get_bufs(uint64_t len, Bufs *out) {
  uint64_t chunk = std::min(kChunk, len);
  int want = len <= chunk ? 1 : (len <= 2 * chunk ? 2 : kMaxBufs);
  std::string why;
  if (pool().ready(&why)) {
    int got = 0;
    for (; got < want; got++) {
      out->b[got] = pool().alloc(chunk);
      if (!out->b[got]) break;
    }
    if (got == want) {
      out->n = want;
      out->pinned = true;
      return;
    }
    for (int i = 0; i < got; i++) pool().free(out->b[i]);
  }
  pool().fallbacks++;
  out->priv.resize(chunk);
  out->b[0] = out->priv.data();
  out->n = 1;
}

}  // namespace

bool is_device_memory(const void *p, int *ordinal) {
  if (!device_buffers_seen()) return false;
  PointerInfo pi = pointer_info(p);
  if (ordinal) *ordinal = pi.ordinal;
  return pi.device;
}

bool stage_out(const void *dev, uint64_t len, const std::function<bool(const char *, uint64_t)> &sink,
               std::string *why) {
  PointerInfo pi = pointer_info(dev);
  Status st = use_device(pi.ordinal);
  if (!st.ok()) {
    *why = st.message();
    return false;
  }
  const Api *a = api();
  CUdeviceptr src = reinterpret_cast<CUdeviceptr>(dev);
  uint64_t chunk = std::min(kChunk, len);
  uint64_t nchunks = (len + chunk - 1) / chunk;
  auto size_of = [&](uint64_t k) { return std::min(chunk, len - k * chunk); };
  Bufs bufs;
  get_bufs(len, &bufs);
  if (!bufs.pinned) {
    for (uint64_t k = 0; k < nchunks; k++) {
      CUresult r = a->cuMemcpyDtoH(bufs.b[0], src + k * chunk, size_of(k));
      if (r != CUDA_SUCCESS) {
        *why = error_text("cuMemcpyDtoH", r);
        return false;
      }
      if (!sink(bufs.b[0], size_of(k))) return false;
      pool().out += size_of(k);
    }
    return true;
  }
  Lane *lane = pool().lane(pi.ordinal, why);
  if (!lane) return false;
  bool ok = true;
  uint64_t issued = 0, done = 0;
  while (ok && done < nchunks) {
    while (issued < nchunks && issued - done < static_cast<uint64_t>(bufs.n)) {
      int b = static_cast<int>(issued % bufs.n);
      CUresult r = a->cuMemcpyDtoHAsync(bufs.b[b], src + issued * chunk, size_of(issued), lane->stream);
      if (r == CUDA_SUCCESS) r = a->cuEventRecord(lane->ev[b], lane->stream);
      if (r != CUDA_SUCCESS) {
        *why = error_text("cuMemcpyDtoHAsync", r);
        ok = false;
        break;
      }
      issued++;
    }
    if (!ok) break;
    int b = static_cast<int>(done % bufs.n);
    CUresult r = a->cuEventSynchronize(lane->ev[b]);
    if (r != CUDA_SUCCESS) {
      *why = error_text("cuEventSynchronize", r);
      ok = false;
      break;
    }
    if (!sink(bufs.b[b], size_of(done))) {
      ok = false;
      break;
    }
    pool().out += size_of(done);
    done++;
  }
  // Copies still running write into the buffers: let them land before the buffers go back.
  a->cuStreamSynchronize(lane->stream);
  pool().put(lane);
  return ok;
}

bool stage_in(void *dev, uint64_t len, const std::function<bool(char *, uint64_t)> &source,
              std::string *why) {
  PointerInfo pi = pointer_info(dev);
  Status st = use_device(pi.ordinal);
  if (!st.ok()) {
    *why = st.message();
    return false;
  }
  const Api *a = api();
  CUdeviceptr dst = reinterpret_cast<CUdeviceptr>(dev);
  uint64_t chunk = std::min(kChunk, len);
  uint64_t nchunks = (len + chunk - 1) / chunk;
  auto size_of = [&](uint64_t k) { return std::min(chunk, len - k * chunk); };
  Bufs bufs;
  get_bufs(len, &bufs);
  if (!bufs.pinned) {
    for (uint64_t k = 0; k < nchunks; k++) {
      if (!source(bufs.b[0], size_of(k))) return false;
      CUresult r = a->cuMemcpyHtoD(dst + k * chunk, bufs.b[0], size_of(k));
      if (r != CUDA_SUCCESS) {
        *why = error_text("cuMemcpyHtoD", r);
        return false;
      }
      pool().in += size_of(k);
    }
    // From pageable memory cuMemcpyHtoD may return before the bytes landed; the caller acks
    // the WRITE next, so wait for them.
    CUresult r = a->cuCtxSynchronize();
    if (r != CUDA_SUCCESS) {
      *why = error_text("cuCtxSynchronize", r);
      return false;
    }
    return true;
  }
  Lane *lane = pool().lane(pi.ordinal, why);
  if (!lane) return false;
  bool ok = true;
  for (uint64_t k = 0; ok && k < nchunks; k++) {
    int b = static_cast<int>(k % bufs.n);
    if (k >= static_cast<uint64_t>(bufs.n)) {
      CUresult r = a->cuEventSynchronize(lane->ev[b]);  // the copy out of this buffer is done
      if (r != CUDA_SUCCESS) {
        *why = error_text("cuEventSynchronize", r);
        ok = false;
        break;
      }
    }
    if (!source(bufs.b[b], size_of(k))) {
      ok = false;
      break;
    }
    CUresult r = a->cuMemcpyHtoDAsync(dst + k * chunk, bufs.b[b], size_of(k), lane->stream);
    if (r == CUDA_SUCCESS) r = a->cuEventRecord(lane->ev[b], lane->stream);
    if (r != CUDA_SUCCESS) {
      *why = error_text("cuMemcpyHtoDAsync", r);
      ok = false;
      break;
    }
    pool().in += size_of(k);
  }
  CUresult r = a->cuStreamSynchronize(lane->stream);
  if (ok && r != CUDA_SUCCESS) {
    *why = error_text("cuStreamSynchronize", r);
    ok = false;
  }
  pool().put(lane);
  return ok;
}

StagingStats staging_stats() {
  StagingStats s;
  s.bytes_out = pool().out.load();
  s.bytes_in = pool().in.load();
  s.fallbacks = pool().fallbacks.load();
  pool().usage(&s.pool_bytes, &s.pool_used);
  return s;
}

}  // namespace mc::gpu
