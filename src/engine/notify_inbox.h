// The receiving side of notifications: the bounded queue mc_notify_recv reads, and the engine's
// event fd (mc_engine_event_fd).
#pragma once
#include <mc.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

#include "util/status.h"

namespace mc {

class NotifyInbox {
 public:
  explicit NotifyInbox(size_t capacity) : capacity_(capacity) {}
  ~NotifyInbox() { close_fd(); }
  NotifyInbox(const NotifyInbox &) = delete;
  NotifyInbox &operator=(const NotifyInbox &) = delete;

  // Queues one notification and wakes the event fd; MC_ERR_BUSY (nothing queued) when full.
  Status push(std::string sender, uint64_t incarnation, std::string body);
  // mc_notify_recv: see mc.h.
  mc_status_t recv(mc_notification_t *info, void *buf, size_t capacity, std::string *err);
  // The event fd, created on first use (an engine nobody polls pays no system call per batch).
  Status event_fd(int *fd);
  // One tick on the event fd, if it exists. Thread-safe, never blocks.
  void wake();
  // Closes the event fd (engine shutdown, once no thread can wake it any more).
  void close_fd();

  void count_stale() { refused_stale_.fetch_add(1, std::memory_order_relaxed); }
  // Counters for the engine's stats.
  uint64_t received() const { return received_.load(); }
  uint64_t refused_busy() const { return refused_busy_.load(); }
  uint64_t refused_stale() const { return refused_stale_.load(); }
  size_t queued();

 private:
  struct Item {
    std::string sender;
    uint64_t incarnation;
    std::string body;
  };
  const size_t capacity_;
  std::mutex mu_;  // guards q_ and the creation and closing of efd_
  std::deque<Item> q_;
  std::atomic<int> efd_{-1};
  std::atomic<uint64_t> received_{0}, refused_busy_{0}, refused_stale_{0};
};

}  // namespace mc
