#include "transport/samehost/watch_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mc::samehost {

std::shared_ptr<WatchLoop> WatchLoop::create(Status *st) {
  std::shared_ptr<WatchLoop> w(new WatchLoop());
  w->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  w->wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epoll_event we{EPOLLIN, {.u64 = 0}};
  if (!w->epoll_.valid() || !w->wake_.valid() ||
      ::epoll_ctl(w->epoll_.get(), EPOLL_CTL_ADD, w->wake_.get(), &we) != 0) {
    *st = Err(MC_ERR_INTERNAL, std::string("same-host watch loop: ") + std::strerror(errno));
    return nullptr;
  }
  WatchLoop *raw = w.get();
  w->thread_ = std::thread([raw] { raw->loop(); });
  return w;
}

WatchLoop::~WatchLoop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
  if (!thread_.joinable()) return;
  // The last owner may be a peer dropped from one of our own callbacks: the thread ends by itself.
  if (thread_.get_id() == std::this_thread::get_id())
    thread_.detach();
  else
    thread_.join();
}

void WatchLoop::loop() {
  epoll_event ev[64];
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), ev, 64, -1);
    if (n < 0 && errno != EINTR) return;
    for (int i = 0; i < n; i++) {
      std::function<void()> fn;
      uint64_t id = ev[i].data.u64;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) return;
        auto it = cbs_.find(id);
        if (id == 0 || it == cbs_.end()) continue;
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
        fn = std::move(it->second.fn);
        cbs_.erase(it);
        running_ = id;
      }
      fn();
      {
        std::lock_guard<std::mutex> lk(mu_);
        running_ = 0;
      }
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) return;
  }
}

bool WatchLoop::watch(int fd, std::function<void()> on_close, uint64_t *id) {
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t k = next_++;
  // The peer never writes on this connection: any readiness is its end (EOF, reset, error).
  epoll_event e{EPOLLIN | EPOLLRDHUP, {.u64 = k}};
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e) != 0) return false;
  cbs_[k] = {fd, std::move(on_close)};
  *id = k;
  return true;
}

void WatchLoop::unwatch(uint64_t id) {
  std::unique_lock<std::mutex> lk(mu_);
  auto it = cbs_.find(id);
  if (it != cbs_.end()) {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
    cbs_.erase(it);
  }
  if (std::this_thread::get_id() == thread_.get_id()) return;
  cv_.wait(lk, [&] { return running_ != id; });
}

size_t WatchLoop::watched() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cbs_.size();
}

}  // namespace mc::samehost
