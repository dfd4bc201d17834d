#include "transport/file/file_gds.h"

#include <dlfcn.h>
#include <errno.h>
#include <sys/types.h>

#include <cstring>

namespace mc::file {

// The types and entry points below are those of cufile.h (CUDA 12/13, "cuFile API Reference
// Guide"), declared here so that mc builds where no CUDA header exists: a C ABI NVIDIA keeps
// stable (CUfileError_t is two ints; CUfileDescr_t a handle type, a union of an fd and a
// pointer, and a pointer to file-system ops).
struct CuFileError {
  int err;     // CUfileOpError: 0 success, 5000 + n a cuFile error
  int cu_err;  // CUresult, when err says a CUDA call failed
};
struct CuFileDescr {
  int type;  // CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1
  union {
    int fd;
    void *handle;
  } handle;
  const void *fs_ops;
};

struct CuFileApi {
  CuFileError (*driver_open)();
  CuFileError (*handle_register)(void **fh, CuFileDescr *descr);
  void (*handle_deregister)(void *fh);
  ssize_t (*read)(void *fh, void *buf, size_t size, off_t file_offset, off_t buf_offset);
  ssize_t (*write)(void *fh, const void *buf, size_t size, off_t file_offset, off_t buf_offset);
  std::string name;  // the library's file name
};

namespace {

std::string op_error(const char *call, const CuFileError &e) {
  std::string s = std::string(call) + " failed: cuFile error " + std::to_string(e.err);
  if (e.cu_err) s += " (CUDA error " + std::to_string(e.cu_err) + ")";
  return s;
}

template <class F>
bool sym(void *h, const char *name, F *out, std::string *why) {
  *out = reinterpret_cast<F>(dlsym(h, name));
  if (!*out) *why = std::string("it has no ") + name;
  return *out != nullptr;
}

CuFileApi *load_once(std::string *why) {
  std::string tried;
  for (const char *name : {"libcufile.so.0", "libcufile.so"}) {
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *e = dlerror();
      tried += std::string(tried.empty() ? "" : "; ") + (e ? e : name);
      continue;
    }
    auto *a = new CuFileApi;
    a->name = name;
    std::string miss;
    if (sym(h, "cuFileDriverOpen", &a->driver_open, &miss) &&
        sym(h, "cuFileHandleRegister", &a->handle_register, &miss) &&
        sym(h, "cuFileHandleDeregister", &a->handle_deregister, &miss) &&
        sym(h, "cuFileRead", &a->read, &miss) && sym(h, "cuFileWrite", &a->write, &miss))
      return a;  // kept for the life of the process, as the library
    *why = std::string(name) + " found, but " + miss;
    delete a;
    dlclose(h);
    return nullptr;
  }
  *why = "libcufile not found (" + tried + ")";
  return nullptr;
}

}  // namespace

const CuFileApi *cufile_load(std::string *why) {
  static std::string s_why;
  static const CuFileApi *s_api = load_once(&s_why);  // once per process, thread-safe
  if (!s_api) *why = s_why;
  return s_api;
}

bool cufile_driver_open(const CuFileApi *a, std::string *why) {
  static std::mutex mu;  // guards opened: one open at a time, once it succeeded never again
  static bool opened = false;
  std::lock_guard<std::mutex> lk(mu);
  if (opened) return true;
  CuFileError e = a->driver_open();
  if (e.err != 0) {
    *why = op_error("cuFileDriverOpen", e);
    return false;
  }
  // Never closed: other engines of the process may use it, and cuFile closes it at exit.
  opened = true;
  return true;
}

int64_t cufile_io(const CuFileApi *a, void *h, bool read, void *dev, uint64_t n, uint64_t off,
                  std::string *why) {
  errno = 0;
  ssize_t r =
      read ? a->read(h, dev, n, static_cast<off_t>(off), 0) : a->write(h, dev, n, static_cast<off_t>(off), 0);
  if (r >= 0) return r;
  const char *call = read ? "cuFileRead" : "cuFileWrite";
  if (r == -1)
    *why = std::string(call) + " failed: " + std::strerror(errno) + " (errno " + std::to_string(errno) + ")";
  else
    *why = std::string(call) + " failed: cuFile error " + std::to_string(-r);
  return -1;
}

void *GdsFile::handle(const CuFileApi *a, int fd, bool direct, std::string *why) {
  std::lock_guard<std::mutex> lk(mu_);
  int k = direct ? 1 : 0;
  if (!tried_[k]) {
    tried_[k] = true;
    a_ = a;
    CuFileDescr d{};
    d.type = 1;  // CU_FILE_HANDLE_TYPE_OPAQUE_FD
    d.handle.fd = fd;
    CuFileError e = a->handle_register(&h_[k], &d);
    if (e.err != 0) {
      h_[k] = nullptr;
      why_[k] = op_error(direct ? "cuFileHandleRegister (O_DIRECT descriptor)" : "cuFileHandleRegister", e);
    }
  }
  if (!h_[k]) *why = why_[k];
  return h_[k];
}

void GdsFile::close() {
  std::lock_guard<std::mutex> lk(mu_);
  for (void *&h : h_) {
    if (h) a_->handle_deregister(h);
    h = nullptr;
  }
}

bool parse_gds_mode(const char *v, GdsMode *out) {
  if (std::strcmp(v, "auto") == 0) return *out = GdsMode::kAuto, true;
  if (std::strcmp(v, "off") == 0) return *out = GdsMode::kOff, true;
  if (std::strcmp(v, "on") == 0) return *out = GdsMode::kOn, true;
  return false;
}

// Runs before any ring (create, or the start of the rings under the instance's lock): nothing
// else reads the state yet. "on" opens the driver here, so that engine creation fails with it.
bool GdsEnv::setup(const Log &log, std::string *why) {
  std::string miss;
  api_ = cufile_load(&miss);
  if (!api_) {
    *why = "file_gds=on, but cuFile (GPUDirect Storage) is not available: " + miss;
    return mode != GdsMode::kOn;
  }
  if (mode == GdsMode::kOff) {
    disable("file_gds=off");
    log(2, api_->name + " found; not used (file_gds=off): GPU memory goes through the pinned staging pool");
    return true;
  }
  state_ = kFound;
  if (mode == GdsMode::kAuto) {
    log(2, api_->name + " found: GPU memory moves to and from files through cuFile (GPUDirect Storage)");
    return true;
  }
  if (!usable(log)) {
    *why = "file_gds=on, but cuFile (GPUDirect Storage) cannot be used: " + state();
    return false;
  }
  return true;
}

void GdsEnv::disable(const std::string &why) {
  std::lock_guard<std::mutex> lk(mu_);
  why_ = why;
  state_.store(kDisabled, std::memory_order_release);
}

// The driver is opened by the first request of any ring (the others wait for it in
// cufile_driver_open: once per process, a one-time cost like the staging pool's pinning).
bool GdsEnv::usable(const Log &log) {
  int s = state_.load(std::memory_order_acquire);
  if (s != kFound) return s == kInUse;
  std::string why;
  if (cufile_driver_open(api_, &why)) {
    int was = kFound;
    if (state_.compare_exchange_strong(was, kInUse))
      log(2, api_->name + ": driver open; GPU memory moves to and from files through cuFile");
    return state_.load() == kInUse;
  }
  disable(why);
  log(1, "cuFile (GPUDirect Storage) disabled for this engine: " + why +
             "; GPU memory goes through the pinned staging pool");
  return false;
}

void GdsEnv::fallback(const Log &log, const std::string &what) {
  fallbacks.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(mu_);
    last_ = what;
  }
  if (!logged_.exchange(true))
    log(1,
        what + "; the request goes through the pinned staging pool (logged once; stats: cufile_fallbacks)");
}

std::string GdsEnv::state() const {
  std::lock_guard<std::mutex> lk(mu_);
  switch (state_.load()) {
    case kFound:
      return "found";
    case kInUse:
      return "in use";
    case kDisabled:
      return "found, disabled (" + why_ + ")";
    default:
      return "absent";
  }
}

std::string GdsEnv::last_error() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_;
}

}  // namespace mc::file
