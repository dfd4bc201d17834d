#include "transport/tcp/io_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/log.h"

namespace mc::tcp {

Status IoLoop::start(const std::string &name) {
  ep_.reset(::epoll_create1(EPOLL_CLOEXEC));
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!ep_.valid() || !wake_.valid())
    return Err(MC_ERR_TRANSPORT, "tcp: cannot create an event loop: " + std::string(std::strerror(errno)));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0)
    return Err(MC_ERR_TRANSPORT, "tcp: epoll_ctl: " + std::string(std::strerror(errno)));
  th_ = std::thread([this, name] {
    tid_.store(std::this_thread::get_id());
    try {
      run();
    } catch (const std::exception &e) {
      MC_LOGE("tcp: event loop " << name << " ended by exception: " << e.what());
    }
  });
  return Status::Ok();
}

bool IoLoop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopped_ || !th_.joinable()) return false;
    posted_.push_back(std::move(fn));
    if (posted_.size() > 1) return true;  // a wake-up is already pending
  }
  uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) < 0) {
    // The counter is only ever far from overflow; a failure leaves the previous wake-up pending.
  }
  return true;
}

void IoLoop::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  quit_.store(true);
  uint64_t one = 1;
  if (wake_.valid() && ::write(wake_.get(), &one, sizeof one) < 0) {
    // See post().
  }
  if (th_.joinable()) th_.join();
}

bool IoLoop::add(int fd, uint32_t events, std::shared_ptr<IoHandler> h) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h.get();
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  live_[h.get()] = std::move(h);
  set_ticking(static_cast<IoHandler *>(ev.data.ptr), true);
  return true;
}

void IoLoop::modify(int fd, uint32_t events, IoHandler *h) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  ::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, fd, &ev);
}

void IoLoop::remove(int fd, IoHandler *h) {
  ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr);
  ticking_.erase(h);
  auto it = live_.find(h);
  if (it == live_.end()) return;
  graveyard_.push_back(std::move(it->second));
  live_.erase(it);
}

void IoLoop::set_ticking(IoHandler *h, bool on) {
  if (!on) {
    ticking_.erase(h);
  } else if (live_.count(h)) {
    // The first ticking handler starts the cadence: the loop waited without a timeout before.
    if (ticking_.empty()) next_tick_ = now_ms() + kTickMs;
    ticking_.insert(h);
  }
}

void IoLoop::run_posted(bool woken) {
  // Drained before taking the list (a post after the swap writes a new wake-up), and only when
  // epoll reported it: no read per round that finds nothing.
  uint64_t v;
  if (woken && ::read(wake_.get(), &v, sizeof v) < 0) {
    // Already drained by an earlier round.
  }
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard<std::mutex> lk(mu_);
    fns.swap(posted_);
  }
  for (auto &f : fns) f();
}

void IoLoop::tick() {
  uint64_t now = now_ms();
  if (now < next_tick_) return;
  next_tick_ = now + kTickMs;
  if (ticking_.empty()) return;
  // A handler's on_tick may remove or un-tick itself or others: walk a copy.
  std::vector<std::shared_ptr<IoHandler>> due;
  due.reserve(ticking_.size());
  for (IoHandler *h : ticking_) due.push_back(live_.at(h));
  for (auto &h : due)
    if (ticking_.count(h.get())) h->on_tick(now);
}

void IoLoop::run() {
  std::vector<epoll_event> evs(256);
  next_tick_ = now_ms() + kTickMs;
  for (;;) {
    // Nothing ticking (every connection idle): no timeout, so an idle engine's loops sleep until
    // an event or a post instead of waking every kTickMs.
    uint64_t now = now_ms();
    int wait = ticking_.empty() ? -1 : next_tick_ > now ? static_cast<int>(next_tick_ - now) : 0;
    int n = ::epoll_wait(ep_.get(), evs.data(), static_cast<int>(evs.size()), wait);
    rounds_.fetch_add(1, std::memory_order_relaxed);
    if (n < 0 && errno != EINTR) {
      MC_LOGE("tcp: epoll_wait failed: " << std::strerror(errno));
      break;
    }
    bool woken = false;
    for (int i = 0; i < n; i++) {
      auto *h = static_cast<IoHandler *>(evs[i].data.ptr);
      if (!h) {  // the wake-up: posted functions run below
        woken = true;
        continue;
      }
      if (live_.count(h)) h->on_events(evs[i].events);
    }
    run_posted(woken);
    tick();
    graveyard_.clear();
    if (quit_.load()) break;
  }
  run_posted(true);  // what was posted before stop() (stop refuses later posts)
  std::vector<std::shared_ptr<IoHandler>> all;
  for (auto &kv : live_) all.push_back(kv.second);
  for (auto &h : all)
    if (live_.count(h.get())) h->on_stop();
  live_.clear();
  ticking_.clear();
  graveyard_.clear();
}

}  // namespace mc::tcp
