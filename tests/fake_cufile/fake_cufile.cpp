// A fake libcufile.so.0 (cuFile, GPUDirect Storage) for testing the file transport's cuFile path
// on a machine without a GPU, beside tests/fake_cuda (whose "device" memory is host memory, so
// a read or write here is a pread or pwrite into it). It keeps cuFile's rules that matter to mc:
// no I/O before cuFileDriverOpen, a handle per registered descriptor, an O_DIRECT descriptor
// refusing what is not aligned to 4096 (EINVAL, as the kernel does in compatibility mode), -1
// with errno or a negative cuFile error on failure. Faults are set by the test through
// fake_cufile_set (dlsym): the driver refusing to open, registration refused, every I/O
// failing, I/O moving at most N bytes per call, or each call sleeping.
//   make build/tests/fake_cufile/libcufile.so.0
//   build/tests/wb_file_gds_fake   (wb_gpu's file cases against fake_cuda and this)
#include <errno.h>
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace {

struct Error {
  int err;
  int cu_err;
};
struct Descr {
  int type;
  union {
    int fd;
    void *handle;
  } handle;
  const void *fs_ops;
};
struct Handle {
  int fd;
  bool direct;
};

enum : unsigned { kOpenFails = 1, kRegisterFails = 2, kIoFails = 4, kDirectRegisterFails = 8 };
std::atomic<unsigned> g_faults{0};
std::atomic<uint64_t> g_max_io{0};  // 0: no limit
std::atomic<int> g_delay_ms{0};
std::atomic<bool> g_open{false};
std::atomic<uint64_t> g_calls{0}, g_bytes{0};
std::atomic<int64_t> g_handles{0};

ssize_t io(void *fh, void *buf, size_t n, off_t off, off_t boff, bool read) {
  if (!g_open) return -5001;  // CU_FILE_DRIVER_NOT_INITIALIZED
  g_calls++;
  if (int d = g_delay_ms.load()) std::this_thread::sleep_for(std::chrono::milliseconds(d));
  if (g_faults & kIoFails) return errno = EIO, -1;
  auto *h = static_cast<Handle *>(fh);
  char *p = static_cast<char *>(buf) + boff;
  if (h->direct && ((off | n | reinterpret_cast<uintptr_t>(p)) & 4095)) return errno = EINVAL, -1;
  if (uint64_t m = g_max_io.load(); m && n > m) n = m;
  ssize_t r = read ? pread(h->fd, p, n, off) : pwrite(h->fd, p, n, off);
  if (r > 0) g_bytes += static_cast<uint64_t>(r);
  return r;
}

}  // namespace

extern "C" {

Error cuFileDriverOpen() {
  if (g_faults & kOpenFails) return {5018, 0};  // CU_FILE_NVFS_SETUP_ERROR-like
  g_open = true;
  return {0, 0};
}
Error cuFileDriverClose_v2() { return g_open = false, Error{0, 0}; }

Error cuFileHandleRegister(void **fh, Descr *d) {
  if (!g_open) return {5001, 0};
  if (d->type != 1 || d->handle.fd < 0) return {5005, 0};  // CU_FILE_INVALID_VALUE-like
  int fl = fcntl(d->handle.fd, F_GETFL);
  if (fl < 0) return {5005, 0};
  bool direct = fl & O_DIRECT;
  if ((g_faults & kRegisterFails) || (direct && (g_faults & kDirectRegisterFails))) return {5030, 0};
  *fh = new Handle{d->handle.fd, direct};
  g_handles++;
  return {0, 0};
}
void cuFileHandleDeregister(void *fh) {
  delete static_cast<Handle *>(fh);
  g_handles--;
}
ssize_t cuFileRead(void *fh, void *buf, size_t n, off_t off, off_t boff) { return io(fh, buf, n, off, boff, true); }
ssize_t cuFileWrite(void *fh, const void *buf, size_t n, off_t off, off_t boff) {
  return io(fh, const_cast<void *>(buf), n, off, boff, false);
}

// The test's controls and counters (not cuFile's API).
void fake_cufile_set(unsigned faults, uint64_t max_io, int delay_ms) {
  g_faults = faults;
  g_max_io = max_io;
  g_delay_ms = delay_ms;
}
void fake_cufile_counts(uint64_t *calls, uint64_t *bytes, int64_t *handles) {
  *calls = g_calls;
  *bytes = g_bytes;
  *handles = g_handles;
}
}
