#include "gpu/cuda_loader.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "util/log.h"

namespace mc::cuda {
namespace {

// Functions whose absence does not make the driver unusable (older drivers): callers check the
// pointer before use.
bool optional_fn(const char *name) {
  static const char *const opt[] = {"cuEventElapsedTime",
                                    "cuMemAddressReserve",
                                    "cuMemAddressFree",
                                    "cuMemCreate",
                                    "cuMemRelease",
                                    "cuMemMap",
                                    "cuMemUnmap",
                                    "cuMemSetAccess",
                                    "cuMemGetAllocationGranularity",
                                    "cuMemRetainAllocationHandle",
                                    "cuMemExportToShareableHandle",
                                    "cuMemImportFromShareableHandle",
                                    "cuMemGetHandleForAddressRange",
                                    "cuStreamWaitValue32",
                                    "cuMemsetD32Async"};
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
#define MC_CUDA_LOAD(name, sym, params)                                         \
  x->api.name = reinterpret_cast<decltype(x->api.name)>(::dlsym(h, sym));       \
  if (!x->api.name && !optional_fn(#name)) {                                    \
    x->why = std::string("the CUDA driver lacks ") + sym + " (driver too old)"; \
    return x;                                                                   \
  }
    MC_CUDA_FUNCS(MC_CUDA_LOAD)
#undef MC_CUDA_LOAD
    if (!x->api.cuStreamWaitValue32)  // drivers before CUDA 11.7 have only the first version
      x->api.cuStreamWaitValue32 =
          reinterpret_cast<decltype(x->api.cuStreamWaitValue32)>(::dlsym(h, "cuStreamWaitValue32"));
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
// The context this library last made current on this thread (use_device, swap_context).
thread_local CUcontext t_current = nullptr;

}  // namespace

const Api *api() {
  Loaded &l = loaded();
  return l.ok ? &l.api : nullptr;
}

namespace {

// How many objects were ever loaded and unloaded in this process (glibc counts both in the
// link map): unchanged means no library came or went since a given moment. One call of the
// callback (it stops the walk), no file touched.
uint64_t link_map_generation() {
  uint64_t gen = 0;
  dl_iterate_phdr(
      [](dl_phdr_info *info, size_t size, void *out) {
        if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
          *static_cast<uint64_t *>(out) = info->dlpi_adds + (uint64_t(info->dlpi_subs) << 32);
        return 1;
      },
      &gen);
  return gen;
}

}  // namespace

// dlopen with RTLD_NOLOAD of a bare name still searches the library path (tens of opens and
// stats, ~18 us here), and registration asks once per buffer: 10,000 buffers took 190 ms. So an
// answer of "no" holds until the link map changes (a framework that loads the driver later
// changes it), and "yes" holds for good: api() then holds its own reference to the driver.
bool driver_in_process() {
  static std::atomic<bool> loaded_seen{false};
  static std::atomic<uint64_t> absent_at{0};  // generation + 1 at the last "no"; 0: none yet
  if (!loaded_seen.load(std::memory_order_acquire)) {
    const uint64_t gen = link_map_generation();  // read before the look: a load after it shows
    if (gen != 0 && absent_at.load(std::memory_order_relaxed) == gen + 1) return false;
    void *h = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h) {
      if (gen != 0) absent_at.store(gen + 1, std::memory_order_relaxed);
      return false;
    }
    ::dlclose(h);  // drops only the reference RTLD_NOLOAD took
    api();         // loads once; its answer never changes after
    loaded_seen.store(true, std::memory_order_release);
  }
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
  if (t_current == c) return Status::Ok();
  Status st = check("cuCtxSetCurrent", l.api.cuCtxSetCurrent(c));
  if (st.ok()) t_current = c;
  return st;
}

CUcontext swap_context(CUcontext c, Status *st) {
  Loaded &l = loaded();
  *st = Status::Ok();
  if (!l.ok) {
    *st = Err(MC_ERR_UNSUPPORTED, l.why);
    return nullptr;
  }
  CUcontext prev = nullptr;
  l.api.cuCtxGetCurrent(&prev);  // the application may have changed it since use_device
  if (prev != c) {
    *st = check("cuCtxSetCurrent", l.api.cuCtxSetCurrent(c));
    t_current = st->ok() ? c : prev;
  } else {
    t_current = c;
  }
  return prev;
}

void restore_context(CUcontext prev) {
  Loaded &l = loaded();
  if (!l.ok || t_current == prev) return;
  if (l.api.cuCtxSetCurrent(prev) == CUDA_SUCCESS) t_current = prev;
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
  a->cuPointerGetAttribute(&managed, 8 /* CU_POINTER_ATTRIBUTE_IS_MANAGED */,
                           reinterpret_cast<CUdeviceptr>(p));
  if (managed) return info;
  info.device = true;
  info.ordinal = ord;
  return info;
}

// ------------------------------------------------------------------------------ dma-buf

namespace {
struct DmabufRec {
  int dev;
  uint64_t base, length;
};
std::mutex g_dmabuf_mu;                                        // guards g_dmabufs
std::map<std::pair<uint64_t, uint64_t>, DmabufRec> g_dmabufs;  // (st_dev, st_ino) -> range

bool inode_of(int fd, std::pair<uint64_t, uint64_t> *key) {
  struct stat sb;
  if (::fstat(fd, &sb) != 0) return false;
  *key = {static_cast<uint64_t>(sb.st_dev), static_cast<uint64_t>(sb.st_ino)};
  return true;
}
}  // namespace

bool pci_address(int dev, std::string *out) {
  const Api *a = api();
  CUdevice d;
  if (!a || a->cuDeviceGet(&d, dev) != CUDA_SUCCESS) return false;
  int v[3] = {0, 0, 0};
  const int attrs[3] = {CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID,
                        CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID};
  for (int k = 0; k < 3; k++)
    if (a->cuDeviceGetAttribute(&v[k], attrs[k], d) != CUDA_SUCCESS) return false;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.0", v[0] & 0xffff, v[1] & 0xff, v[2] & 0x1f);
  *out = buf;
  return true;
}

bool dmabuf_supported(int dev, std::string *why) {
  const Api *a = api();
  if (!a) {
    *why = why_unavailable();
    return false;
  }
  if (!a->cuMemGetHandleForAddressRange) {
    *why = "the CUDA driver lacks cuMemGetHandleForAddressRange (CUDA 11.7 or newer is needed for dma-buf)";
    return false;
  }
  CUdevice d;
  CUresult r = a->cuDeviceGet(&d, dev);
  if (r != CUDA_SUCCESS) {
    *why = error_text("cuDeviceGet", r);
    return false;
  }
  int v = 0;
  r = a->cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, d);
  if (r != CUDA_SUCCESS) {
    *why = error_text("cuDeviceGetAttribute(CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED)", r);
    return false;
  }
  if (!v) {
    *why = "GPU " + std::to_string(dev) +
           " cannot export dma-bufs (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 0: the kernel or the GPU driver "
           "lacks dma-buf support)";
    return false;
  }
  return true;
}

Status export_dmabuf(int dev, CUdeviceptr p, uint64_t len, DmabufRange *out) {
  std::string why;
  if (!dmabuf_supported(dev, &why)) return Err(MC_ERR_UNSUPPORTED, why);
  Status st = use_device(dev);
  if (!st.ok()) return st;
  const Api *a = api();
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  auto try_range = [&](uint64_t base, uint64_t end, CUresult *r) {
    int fd = -1;
    *r = a->cuMemGetHandleForAddressRange(&fd, base, end - base, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
    if (*r != CUDA_SUCCESS || fd < 0) return false;
    out->fd = fd;
    out->base = base;
    out->length = end - base;
    out->offset = p - base;
    return true;
  };
  uint64_t b = p & ~(page - 1), e = (p + len + page - 1) & ~(page - 1);
  CUresult r1 = CUDA_SUCCESS, r2 = CUDA_SUCCESS;
  bool ok = try_range(b, e, &r1);
  if (!ok) {
    // The whole allocation (cuMemAlloc) or mapping (VMM), page-aligned, as NCCL registers it.
    CUdeviceptr ab = 0;
    size_t as = 0;
    if (a->cuMemGetAddressRange(&ab, &as, p) == CUDA_SUCCESS && (ab & (page - 1)) == 0 && ab <= p &&
        p + len <= ab + as) {
      uint64_t ae = (ab + as + page - 1) & ~(page - 1);
      if (ab != b || ae != e) ok = try_range(ab, ae, &r2);
    }
  }
  if (!ok)
    return Err(MC_ERR_UNSUPPORTED,
               error_text("cuMemGetHandleForAddressRange(DMA_BUF_FD)", r2 != CUDA_SUCCESS ? r2 : r1) +
                   " (the page-aligned range must be device memory of one allocation)");
  std::pair<uint64_t, uint64_t> key;
  if (inode_of(out->fd, &key)) {
    std::lock_guard<std::mutex> lk(g_dmabuf_mu);
    g_dmabufs[key] = {dev, out->base, out->length};
  }
  return Status::Ok();
}

bool dmabuf_lookup(int fd, int *dev, uint64_t *base, uint64_t *length) {
  std::pair<uint64_t, uint64_t> key;
  if (!inode_of(fd, &key)) return false;
  std::lock_guard<std::mutex> lk(g_dmabuf_mu);
  auto it = g_dmabufs.find(key);
  if (it == g_dmabufs.end()) return false;
  *dev = it->second.dev;
  *base = it->second.base;
  *length = it->second.length;
  return true;
}

void dmabuf_forget(int fd) {
  std::pair<uint64_t, uint64_t> key;
  if (!inode_of(fd, &key)) return;
  std::lock_guard<std::mutex> lk(g_dmabuf_mu);
  g_dmabufs.erase(key);
}

bool device_buffers_seen() { return g_seen.load(std::memory_order_relaxed); }
void note_device_buffer() { g_seen.store(true, std::memory_order_relaxed); }

}  // namespace mc::cuda
