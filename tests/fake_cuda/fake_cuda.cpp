// A fake libcuda.so.1 for testing mc's stream ordering on a machine without a GPU: "device"
// memory is host memory (the pointer attribute query fails, so mc sees host buffers), and each
// stream is a thread running its queue in order (event records, cuStreamWaitValue32 spins on
// host words, memsets, copies). Enough of the driver API for mc_batch_submit_on_stream's
// deferred path (engine waits for an event, stream waits on a word); every other entry point
// mc looks up fails with CUDA_ERROR_NOT_SUPPORTED (801).
// With MC_FAKE_CUDA_DEVICE=1 in the environment, memory from cuMemAlloc is reported as device
// memory of GPU 0 (cuPointerGetAttribute), so that mc takes its GPU paths (the file transport's
// cuFile and staging paths, with tests/fake_cufile); every other pointer stays host memory.
//   make build/tests/fake_cuda/libcuda.so.1
//   LD_LIBRARY_PATH=build/tests/fake_cuda MC_FAKE_CUDA=1 WB_GPU_ONLY=stream build/tests/wb_gpu
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace {

struct Stream {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> q;
  int running = 0;
  bool stop = false;
  std::thread t;
  Stream() {
    t = std::thread([this] {
      std::unique_lock<std::mutex> lk(mu);
      for (;;) {
        cv.wait(lk, [&] { return stop || !q.empty(); });
        if (q.empty()) return;
        auto f = std::move(q.front());
        q.pop_front();
        running = 1;
        lk.unlock();
        f();
        lk.lock();
        running = 0;
        cv.notify_all();
      }
    });
  }
  ~Stream() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
      cv.notify_all();
    }
    t.join();
  }
  void push(std::function<void()> f) {
    std::lock_guard<std::mutex> lk(mu);
    q.push_back(std::move(f));
    cv.notify_all();
  }
  void sync() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return q.empty() && !running; });
  }
  bool idle() {
    std::lock_guard<std::mutex> lk(mu);
    return q.empty() && !running;
  }
};

// An event is a handle on the state of its latest record. A record queued on a stream holds
// that state itself, as the real driver does: cuEventDestroy of an event whose record is still
// pending returns at once and the record completes later without touching freed memory (the
// engine's stream gate destroys the marks of abandoned calls when its engine goes away, and
// reuses them while an older record may still be queued; a query sees the latest record only).
struct Event {
  std::mutex mu;
  std::shared_ptr<std::atomic<bool>> done = std::make_shared<std::atomic<bool>>(true);
  std::shared_ptr<std::atomic<bool>> latest() {
    std::lock_guard<std::mutex> lk(mu);
    return done;
  }
};

Stream *legacy() {
  static Stream *s = new Stream;
  return s;
}
Stream *S(void *s) { return s ? static_cast<Stream *>(s) : legacy(); }
void *const kCtx = reinterpret_cast<void *>(0x1000);
thread_local void *t_cur = nullptr;

// MC_FAKE_CUDA_DEVICE: cuMemAlloc's blocks (base -> length), reported as device memory.
std::mutex g_alloc_mu;  // guards g_allocs
std::map<uintptr_t, size_t> g_allocs;
bool device_mode() {
  static const bool on = [] {
    const char *v = std::getenv("MC_FAKE_CUDA_DEVICE");
    return v && *v == '1';
  }();
  return on;
}
bool find_alloc(uintptr_t p, uintptr_t *base, size_t *len) {
  std::lock_guard<std::mutex> lk(g_alloc_mu);
  auto it = g_allocs.upper_bound(p);
  if (it == g_allocs.begin()) return false;
  --it;
  if (p - it->first >= it->second) return false;
  *base = it->first;
  *len = it->second;
  return true;
}

}  // namespace

extern "C" {
#define NS(name) \
  int name() { return 801; }
NS(cuDeviceCanAccessPeer)
NS(cuDeviceGetAttribute)
NS(cuDevicePrimaryCtxRelease_v2)
NS(cuCtxEnablePeerAccess)
NS(cuMemGetAddressRange_v2)
NS(cuMemcpy)
NS(cuMemcpyAsync)
NS(cuMemcpyPeerAsync)
NS(cuIpcGetMemHandle)
NS(cuIpcOpenMemHandle_v2)
NS(cuIpcCloseMemHandle)
NS(cuEventElapsedTime)

int cuInit(unsigned) { return 0; }
int cuDriverGetVersion(int *v) { return *v = 12000, 0; }
int cuGetErrorString(int, const char **s) { return *s = "fake CUDA error", 0; }
int cuDeviceGetCount(int *n) { return *n = 1, 0; }
int cuDeviceGet(int *d, int i) { return *d = i, i == 0 ? 0 : 101; }
int cuDevicePrimaryCtxRetain(void **c, int) { return *c = kCtx, 0; }
int cuCtxSetCurrent(void *c) { return t_cur = c, 0; }
int cuCtxGetCurrent(void **c) { return *c = t_cur, 0; }
int cuCtxSynchronize() { return legacy()->sync(), 0; }
int cuMemAlloc_v2(uintptr_t *p, size_t n) {
  void *m = std::aligned_alloc(4096, (n + 4095) / 4096 * 4096);
  if (!m) return 2;
  *p = reinterpret_cast<uintptr_t>(m);
  std::lock_guard<std::mutex> lk(g_alloc_mu);
  g_allocs[*p] = n;
  return 0;
}
int cuMemFree_v2(uintptr_t p) {
  {
    std::lock_guard<std::mutex> lk(g_alloc_mu);
    g_allocs.erase(p);
  }
  return std::free(reinterpret_cast<void *>(p)), 0;
}
// "Not CUDA memory" (mc treats the pointer as host memory), but for cuMemAlloc's blocks with
// MC_FAKE_CUDA_DEVICE=1: device memory of GPU 0, not managed.
int cuPointerGetAttribute(void *data, int attr, uintptr_t p) {
  uintptr_t base;
  size_t len;
  if (!device_mode() || !find_alloc(p, &base, &len)) return 801;
  switch (attr) {
    case 2:  // CU_POINTER_ATTRIBUTE_MEMORY_TYPE
      return *static_cast<unsigned *>(data) = 2, 0;
    case 8:  // IS_MANAGED
    case 9:  // DEVICE_ORDINAL
      return *static_cast<int *>(data) = 0, 0;
    case 11:  // RANGE_START_ADDR
      return *static_cast<uintptr_t *>(data) = base, 0;
    case 12:  // RANGE_SIZE
      return *static_cast<size_t *>(data) = len, 0;
    default:
      return 801;
  }
}
int cuMemcpyHtoDAsync_v2(uintptr_t d, const void *s, size_t n, void *st) {
  S(st)->push([=] { std::memcpy(reinterpret_cast<void *>(d), s, n); });
  return 0;
}
int cuMemHostAlloc(void **p, size_t n, unsigned) { return (*p = std::calloc(1, n)) ? 0 : 2; }
int cuMemFreeHost(void *p) { return std::free(p), 0; }
int cuMemHostGetDevicePointer_v2(uintptr_t *d, void *p, unsigned) { return *d = reinterpret_cast<uintptr_t>(p), 0; }
int cuMemsetD8_v2(uintptr_t p, unsigned char v, size_t n) { return std::memset(reinterpret_cast<void *>(p), v, n), 0; }
int cuMemcpyHtoD_v2(uintptr_t d, const void *s, size_t n) { return std::memcpy(reinterpret_cast<void *>(d), s, n), 0; }
int cuMemcpyDtoH_v2(void *d, uintptr_t s, size_t n) { return std::memcpy(d, reinterpret_cast<void *>(s), n), 0; }
int cuMemcpyDtoHAsync_v2(void *d, uintptr_t s, size_t n, void *st) {
  S(st)->push([=] { std::memcpy(d, reinterpret_cast<void *>(s), n); });
  return 0;
}
int cuMemsetD32Async(uintptr_t p, unsigned v, size_t n, void *st) {
  S(st)->push([=] {
    auto *w = reinterpret_cast<uint32_t *>(p);
    for (size_t i = 0; i < n; i++) w[i] = v;
  });
  return 0;
}
int cuStreamCreate(void **s, unsigned) { return *s = new Stream, 0; }
int cuStreamDestroy_v2(void *s) { return delete static_cast<Stream *>(s), 0; }
int cuStreamSynchronize(void *s) { return S(s)->sync(), 0; }
int cuStreamQuery(void *s) { return S(s)->idle() ? 0 : 600; }
int cuStreamGetCtx(void *, void **c) { return *c = kCtx, 0; }
int cuStreamWaitValue32_v2(void *st, uintptr_t addr, unsigned v, unsigned) {
  S(st)->push([=] {
    // Acquire, as the GPU's wait orders the work after it behind the engine's release store.
    auto *w = reinterpret_cast<uint32_t *>(addr);
    while (static_cast<int32_t>(__atomic_load_n(w, __ATOMIC_ACQUIRE) - v) < 0) std::this_thread::yield();
  });
  return 0;
}
int cuEventCreate(void **e, unsigned) { return *e = new Event, 0; }
int cuEventDestroy_v2(void *e) { return delete static_cast<Event *>(e), 0; }
int cuEventRecord(void *e, void *st) {
  auto *ev = static_cast<Event *>(e);
  auto rec = std::make_shared<std::atomic<bool>>(false);
  {
    std::lock_guard<std::mutex> lk(ev->mu);
    ev->done = rec;
  }
  S(st)->push([rec] { *rec = true; });  // never ev: it may be destroyed meanwhile
  return 0;
}
int cuEventQuery(void *e) { return *static_cast<Event *>(e)->latest() ? 0 : 600; }
int cuEventSynchronize(void *e) {
  auto rec = static_cast<Event *>(e)->latest();
  while (!*rec) std::this_thread::yield();
  return 0;
}
}
