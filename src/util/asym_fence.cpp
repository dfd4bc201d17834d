// The membarrier(2) side of util/asym_fence.h.
#include "util/asym_fence.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace mc::asym {
namespace detail {

std::atomic<int> g_mode{0};

namespace {
long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }
}  // namespace

// Registering twice is harmless: two threads that ask at once get the same answer.
int init_mode() {
  const long mask = membarrier(MEMBARRIER_CMD_QUERY);
  int mode = 2;
  if (mask >= 0 && (mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
      (mask & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) &&
      membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0)
    mode = 1;
  g_mode.store(mode, std::memory_order_relaxed);
  return mode;
}

}  // namespace detail

namespace {

// The last resort, where membarrier itself is refused after it was allowed (a seccomp filter
// installed later): taking write access away from a present page makes the kernel flush it
// from the TLB of every CPU that may hold it, each by an interrupt, which is a full barrier
// there too.
void tlb_barrier() {
  static std::mutex mu;
  static char *page = nullptr;
  std::lock_guard<std::mutex> lk(mu);
  if (!page) {
    void *p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    page = static_cast<char *>(p);
  }
  *static_cast<volatile char *>(page) = 1;
  mprotect(page, 4096, PROT_READ);
  mprotect(page, 4096, PROT_READ | PROT_WRITE);
}

}  // namespace

// A process made by fork() after the registration may not inherit it (EPERM): it registers
// again. Should the expedited command still fail, the global one is a full barrier on every
// CPU too, only slower (it waits for a grace period).
void heavy() {
  if (detail::membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return;
  if (errno == EPERM && detail::membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
      detail::membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
    return;
  for (;;) {
    if (detail::membarrier(MEMBARRIER_CMD_GLOBAL) == 0) return;
    if (errno != EINTR) break;
  }
  tlb_barrier();
}

}  // namespace mc::asym
