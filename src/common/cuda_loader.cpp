#include "common/cuda_loader.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/log.h"

namespace mc::cuda {
namespace {

// Functions whose absence does not make the driver unusable (older drivers): callers check the
// pointer before use.
bool optional_fn(const char *name) {
  static const char *const opt[] = {"cuEventElapsedTime", "cuMemAddressReserve", "cuMemAddressFree",
                                     "cuMemCreate", "cuMemRelease", "cuMemMap", "cuMemUnmap",
                                     "cuMemSetAccess", "cuMemGetAllocationGranularity",
                                     "cuMemRetainAllocationHandle", "cuMemExportToShareableHandle",
                                     "cuMemImportFromShareableHandle"};
  for (auto *o : opt)
    if (std::strcmp(o, name) == 0) return true;
  return false;
}

struct Loaded {
  Api api;
  bool ok = false;
  std::string why;
  std::mutex mu;  // guards ctx
  std::vector<CUcontext> ctx;
};

Loaded &loaded() {
  static Loaded *l = [] {
    auto *x = new Loaded;  // never freed: the driver is not unloaded while threads may use it
    const char *off = std::getenv("MC_CUDA_DISABLE");
    if (off && *off && std::strcmp(off, "0") != 0) {
      x->why = "CUDA disabled by MC_CUDA_DISABLE";
      return x;
    }
    void *h = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *e = ::dlerror();
      x->why = std::string("no CUDA driver (libcuda.so.1 not loadable: ") + (e ? e : "?") + ")";
      return x;
    }
#define MC_CUDA_LOAD(name, sym, params)                                                        \
  x->api.name = reinterpret_cast<decltype(x->api.name)>(::dlsym(h, sym));                     \
  if (!x->api.name && !optional_fn(#name)) {                                                   \
    x->why = std::string("the CUDA driver lacks ") + sym + " (driver too old)";                \
    return x;                                                                                  \
  }
    MC_CUDA_FUNCS(MC_CUDA_LOAD)
#undef MC_CUDA_LOAD
    CUresult r = x->api.cuInit(0);
    if (r != CUDA_SUCCESS) {
      x->why = "no usable GPU: " + error_text("cuInit", r);
      return x;
    }
    x->api.cuDriverGetVersion(&x->api.driver_version);
    r = x->api.cuDeviceGetCount(&x->api.device_count);
    if (r != CUDA_SUCCESS || x->api.device_count <= 0) {
      x->why = "no GPU visible to the CUDA driver";
      return x;
    }
    x->ctx.assign(static_cast<size_t>(x->api.device_count), nullptr);
    x->ok = true;
    MC_LOGI("cuda: driver " << x->api.driver_version << ", " << x->api.device_count << " GPU(s)");
    return x;
  }();
  return *l;
}

std::atomic<bool> g_seen{false};

}  // namespace

const Api *api() {
  Loaded &l = loaded();
  return l.ok ? &l.api : nullptr;
}

bool driver_in_process() {
  void *h = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!h) return false;
  ::dlclose(h);  // drops only the reference RTLD_NOLOAD took
  return api() != nullptr;
}

const std::string &why_unavailable() { return loaded().why; }

std::string error_text(const char *what, CUresult r) {
  const char *s = nullptr;
  Loaded &l = loaded();
  if (l.api.cuGetErrorString) l.api.cuGetErrorString(r, &s);
  return std::string(what) + ": CUDA error " + std::to_string(r) + (s ? std::string(" (") + s + ")" : "");
}

CUcontext primary_context(int dev) {
  Loaded &l = loaded();
  if (!l.ok || dev < 0 || dev >= l.api.device_count) return nullptr;
  std::lock_guard<std::mutex> lk(l.mu);
  return l.ctx[static_cast<size_t>(dev)];
}

Status use_device(int dev) {
  Loaded &l = loaded();
  if (!l.ok) return Err(MC_ERR_UNSUPPORTED, l.why);
  if (dev < 0 || dev >= l.api.device_count)
    return Err(MC_ERR_INVALID_ARG, "no GPU " + std::to_string(dev) + " (this process sees " +
                                       std::to_string(l.api.device_count) + ")");
  CUcontext c;
  {
    std::lock_guard<std::mutex> lk(l.mu);
    c = l.ctx[static_cast<size_t>(dev)];
    if (!c) {
      CUdevice d;
      CUresult r = l.api.cuDeviceGet(&d, dev);
      if (r == CUDA_SUCCESS) r = l.api.cuDevicePrimaryCtxRetain(&c, d);
      if (r != CUDA_SUCCESS) return check("cuDevicePrimaryCtxRetain", r, MC_ERR_UNSUPPORTED);
      l.ctx[static_cast<size_t>(dev)] = c;
    }
  }
  thread_local CUcontext current = nullptr;
  if (current == c) return Status::Ok();
  Status st = check("cuCtxSetCurrent", l.api.cuCtxSetCurrent(c));
  if (st.ok()) current = c;
  return st;
}

PointerInfo pointer_info(const void *p) {
  PointerInfo info;
  const Api *a = api();
  if (!a || !p) return info;
  unsigned type = 0;
  if (a->cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, reinterpret_cast<CUdeviceptr>(p)) !=
      CUDA_SUCCESS)
    return info;  // not known to CUDA: ordinary host memory
  if (type != CU_MEMORYTYPE_DEVICE) return info;
  int ord = -1;
  if (a->cuPointerGetAttribute(&ord, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, reinterpret_cast<CUdeviceptr>(p)) !=
      CUDA_SUCCESS)
    return info;
  // Managed memory is host-accessible: treat it as host memory (plain loads and stores work).
  int managed = 0;
  a->cuPointerGetAttribute(&managed, 8 /* CU_POINTER_ATTRIBUTE_IS_MANAGED */, reinterpret_cast<CUdeviceptr>(p));
  if (managed) return info;
  info.device = true;
  info.ordinal = ord;
  return info;
}

bool device_buffers_seen() { return g_seen.load(std::memory_order_relaxed); }
void note_device_buffer() { g_seen.store(true, std::memory_order_relaxed); }

}  // namespace mc::cuda
