// The control page of a same-host target (shm and nvlink): a 4 KiB memfd that the target maps
// and hands to every admitted initiator, which maps it too.
//
// Why: an initiator copies without asking the target, so it must never use a buffer the
// target already unregistered (or whose rights changed). Each copy runs inside an active window
// (EpochWindow, epoch_window.h):
//   initiator: active++ ; if epoch != the epoch of its buffer list -> leave, refresh the list;
//              else copy ; active--
//   target unregister / access change: epoch++ ; wait until active == 0 (bounded)
// Both sides use sequentially consistent atomics on the shared page, so either the initiator
// sees the new epoch, or the target waits for the copy to finish before the memory goes.
//
// `alive` is a robust, process-shared mutex that the target's same-host server thread holds
// for as long as it runs (UnixServer). When that thread ends (engine destroyed, process killed)
// the mutex is released, or the kernel marks it FUTEX_OWNER_DIED as the thread exits, which is
// before the process closes its files. So an initiator learns that the target is gone with one
// load of the lock word, no system call (CtrlView::target_alive).
#pragma once
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "util/net.h"
#include "util/status.h"

namespace mc::samehost {

struct CtrlPage {
  uint64_t magic;  // per transport, so a page of one is never taken for the other's
  uint64_t incarnation;
  std::atomic<uint64_t> epoch;   // bumped on every unregister and access change
  std::atomic<uint64_t> active;  // initiator copies in progress, all peers together
  pthread_mutex_t alive;
};
static_assert(sizeof(CtrlPage) <= 4096, "the control page is one page");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared-memory atomics need lock-free u64");

// The target's side: owns the memfd and its mapping.
class CtrlOwner {
 public:
  CtrlOwner() = default;
  CtrlOwner(const CtrlOwner &) = delete;
  CtrlOwner &operator=(const CtrlOwner &) = delete;
  ~CtrlOwner();
  // Makes the page (epoch 1, nobody active, the alive mutex unlocked).
  Status create(const char *memfd_name, uint64_t magic, uint64_t incarnation);
  CtrlPage *page() const { return page_; }
  int fd() const { return fd_.get(); }
  // epoch++: copies that start after it see it. Call under the lock that guards what LIST reads.
  void bump_epoch() { page_->epoch.fetch_add(1, std::memory_order_seq_cst); }
  // After bump_epoch: waits until no initiator copy that may have missed it still runs, at most
  // timeout_ms (a peer that died mid-copy leaves `active` up); logs when it gave up.
  void wait_for_copies(uint32_t timeout_ms, const char *tag, const char *why) const;

 private:
  Fd fd_;
  CtrlPage *page_ = nullptr;
};

// The initiator's side: its mapping of a target's page, received over the admission.
class CtrlView {
 public:
  CtrlView() = default;
  CtrlView(const CtrlView &) = delete;
  CtrlView &operator=(const CtrlView &) = delete;
  ~CtrlView();
  // Maps fd (the caller keeps ownership of it) and checks its magic and incarnation. `who`
  // starts error messages ("same-host peer NAME").
  Status map(int fd, uint64_t magic, uint64_t incarnation, const std::string &who);
  CtrlPage *page() const { return page_; }
  // Whether the target's server thread still runs, as seen after the copies that precede it.
  bool target_alive() const;

 private:
  CtrlPage *page_ = nullptr;
};

}  // namespace mc::samehost
