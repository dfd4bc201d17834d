// The notification queue and the event fd (see notify_inbox.h).
#include "engine/notify_inbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mc {

Status NotifyInbox::push(std::string sender, uint64_t incarnation, std::string body) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (q_.size() >= capacity_) {
      refused_busy_.fetch_add(1, std::memory_order_relaxed);
      return Err(MC_ERR_BUSY,
                 "notification queue full (" + std::to_string(capacity_) + " unread; notify_queue)");
    }
    q_.push_back({std::move(sender), incarnation, std::move(body)});
  }
  received_.fetch_add(1, std::memory_order_relaxed);
  wake();
  return Status::Ok();
}

mc_status_t NotifyInbox::recv(mc_notification_t *info, void *buf, size_t capacity, std::string *err) {
  mc_notification_t v{};
  v.size = info->size;
  std::lock_guard<std::mutex> lk(mu_);
  if (q_.empty()) {
    *err = "no notification queued";
    return MC_ERR_NOT_FOUND;
  }
  Item &it = q_.front();
  std::snprintf(v.peer, sizeof v.peer, "%s", it.sender.c_str());
  v.incarnation = it.incarnation;
  v.length = it.body.size();
  std::memcpy(info, &v, std::min(info->size, sizeof v));
  if (capacity < it.body.size()) {
    *err = "the notification's message has " + std::to_string(it.body.size()) + " bytes, capacity is " +
           std::to_string(capacity);
    return MC_ERR_BUFFER_TOO_SMALL;
  }
  std::memcpy(buf, it.body.data(), it.body.size());
  q_.pop_front();
  return MC_OK;
}

size_t NotifyInbox::queued() {
  std::lock_guard<std::mutex> lk(mu_);
  return q_.size();
}

Status NotifyInbox::event_fd(int *fd) {
  std::lock_guard<std::mutex> lk(mu_);
  int f = efd_.load();
  if (f < 0) {
    f = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f < 0) return Err(MC_ERR_UNSUPPORTED, std::string("eventfd: ") + std::strerror(errno));
    efd_.store(f);
    // Notifications that came before anyone asked must still wake the first poll.
    if (!q_.empty()) {
      uint64_t one = 1;
      (void)!write(f, &one, sizeof one);
    }
  }
  *fd = f;
  return Status::Ok();
}

void NotifyInbox::wake() {
  int f = efd_.load(std::memory_order_acquire);
  if (f < 0) return;
  uint64_t one = 1;
  // EAGAIN only when the counter is at its maximum: it is readable then anyway.
  (void)!write(f, &one, sizeof one);
}

void NotifyInbox::close_fd() {
  std::lock_guard<std::mutex> lk(mu_);
  int f = efd_.exchange(-1);
  if (f >= 0) close(f);
}

}  // namespace mc
