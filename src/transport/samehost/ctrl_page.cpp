#include "transport/samehost/ctrl_page.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <new>
#include <thread>

#include "util/log.h"

namespace mc::samehost {

#if defined(__GLIBC__)
static_assert(offsetof(pthread_mutex_t, __data.__lock) == 0, "glibc's mutex starts with its futex word");
#endif

CtrlOwner::~CtrlOwner() {
  if (page_) ::munmap(page_, 4096);
}

Status CtrlOwner::create(const char *memfd_name, uint64_t magic, uint64_t incarnation) {
  int fd = ::memfd_create(memfd_name, MFD_CLOEXEC);
  if (fd < 0) return Err(MC_ERR_UNSUPPORTED, std::string("memfd_create: ") + std::strerror(errno));
  fd_.reset(fd);
  if (::ftruncate(fd, 4096) != 0)
    return Err(MC_ERR_NO_MEMORY, std::string("ftruncate: ") + std::strerror(errno));
  void *p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Err(MC_ERR_NO_MEMORY, std::string("mmap: ") + std::strerror(errno));
  page_ = static_cast<CtrlPage *>(p);
  page_->magic = magic;
  page_->incarnation = incarnation;
  new (&page_->epoch) std::atomic<uint64_t>(1);
  new (&page_->active) std::atomic<uint64_t>(0);
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  int me = pthread_mutex_init(&page_->alive, &ma);
  pthread_mutexattr_destroy(&ma);
  if (me != 0) return Err(MC_ERR_INTERNAL, std::string("robust mutex: ") + std::strerror(me));
  return Status::Ok();
}

void CtrlOwner::wait_for_copies(uint32_t timeout_ms, const char *tag, const char *why) const {
  uint64_t deadline = now_ms() + timeout_ms;
  while (page_->active.load(std::memory_order_seq_cst) != 0) {
    if (now_ms() > deadline) {
      MC_LOGW(tag << ": a peer's copy did not finish within " << timeout_ms << " ms of " << why
                  << " (peer died mid-copy?)");
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

CtrlView::~CtrlView() {
  if (page_) ::munmap(page_, 4096);
}

Status CtrlView::map(int fd, uint64_t magic, uint64_t incarnation, const std::string &who) {
  void *p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return Err(MC_ERR_NO_MEMORY, std::string("mmap of a peer's control page: ") + std::strerror(errno));
  page_ = static_cast<CtrlPage *>(p);
  if (page_->magic != magic || page_->incarnation != incarnation)
    return Err(MC_ERR_TRANSPORT, who + " sent a foreign control page");
  return Status::Ok();
}

bool CtrlView::target_alive() const {
#if defined(__GLIBC__)
  // glibc keeps a mutex's futex word first; a robust one holds the owner's thread id, and
  // FUTEX_OWNER_DIED once the kernel released it for a dead thread.
  uint32_t w = __atomic_load_n(reinterpret_cast<const uint32_t *>(&page_->alive), __ATOMIC_SEQ_CST);
  return (w & FUTEX_TID_MASK) != 0 && !(w & FUTEX_OWNER_DIED);
#else
  return true;  // the watch connection (WatchLoop) still tells
#endif
}

}  // namespace mc::samehost
