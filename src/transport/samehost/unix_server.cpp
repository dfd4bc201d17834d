#include "transport/samehost/unix_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "proto/unix_msg.h"
#include "proto/wire.h"
#include "util/log.h"

namespace mc::samehost {

namespace {
// epoll data for the two descriptors that are not connections.
constexpr uint64_t kListenTag = ~0ull;
constexpr uint64_t kWakeTag = ~0ull - 1;
}  // namespace

Status UnixServer::start(const Options &o, std::string hello, int hello_fd, Handler h,
                         pthread_mutex_t *alive) {
  o_ = o;
  hello_ = std::move(hello);
  hello_fd_ = hello_fd;
  handler_ = std::move(h);
  alive_ = alive;
  Status st = unix_listen(o_.name, &listen_);
  if (!st.ok()) return st;
  int fl = ::fcntl(listen_.get(), F_GETFL);
  ::fcntl(listen_.get(), F_SETFL, fl | O_NONBLOCK);  // accept until EAGAIN; never blocks the loop
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll_.valid() || !wake_.valid())
    return Err(MC_ERR_INTERNAL, std::string("epoll/eventfd: ") + std::strerror(errno));
  epoll_event le{EPOLLIN, {.u64 = kListenTag}}, we{EPOLLIN, {.u64 = kWakeTag}};
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listen_.get(), &le) != 0 ||
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &we) != 0)
    return Err(MC_ERR_INTERNAL, std::string("epoll_ctl: ") + std::strerror(errno));
  loop_ = std::thread([this] { loop(); });
  return Status::Ok();
}

void UnixServer::loop() {
  // Held until this thread returns (ctrl_page.h); it serves no peer before.
  if (alive_) pthread_mutex_lock(alive_);
  epoll_event ev[64];
  std::vector<int> closing;
  while (!stopping_.load()) {
    int n = ::epoll_wait(epoll_.get(), ev, 64, -1);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n && !stopping_.load(); i++) {
      uint64_t tag = ev[i].data.u64;
      if (tag == kWakeTag) continue;
      if (tag == kListenTag) {
        accept_ready();
        continue;
      }
      int fd = static_cast<int>(tag);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!conns_.count(fd)) continue;  // dropped earlier in this batch
      }
      if (!serve_one(fd)) drop(fd, &closing);
    }
    // Closed only now: a number freed in the middle of a batch could come back from accept()
    // while a stale event of the batch still names it.
    for (int fd : closing) ::close(fd);
    closing.clear();
  }
  std::set<int> conns;
  {
    std::lock_guard<std::mutex> lk(mu_);
    conns.swap(conns_);
  }
  for (int fd : conns) ::close(fd);
  if (alive_) pthread_mutex_unlock(alive_);
}

void UnixServer::accept_ready() {
  for (;;) {
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return;  // EAGAIN: all taken; anything else: retried at the next readiness
    }
    // Unadmitted connections are capped; each holds a thread only until its handshake deadline.
    if (pending_.load() >= wire::kMaxPending) {
      hs_dropped++;
      ::close(fd);
      continue;
    }
    pending_++;
    std::vector<std::thread> finished;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (auto it = shakes_.begin(); it != shakes_.end();) {
        if (it->done->load()) {
          finished.push_back(std::move(it->t));
          it = shakes_.erase(it);
        } else {
          ++it;
        }
      }
      shaking_.insert(fd);
      auto done = std::make_shared<std::atomic<bool>>(false);
      shakes_.push_back({std::thread([this, fd, done] { handshake(fd, done); }), done});
    }
    for (auto &t : finished) t.join();
  }
}

void UnixServer::handshake(int fd, std::shared_ptr<std::atomic<bool>> done) {
  uint32_t io_ms = std::min<uint32_t>(o_.timeout_ms, wire::kHandshakeMs);
  set_io_timeout(fd, io_ms);
  Status adm = unix_admit(fd, o_.token, o_.incarnation, o_.max_msg);
  if (adm.code() == MC_ERR_DENIED) {
    hs_denied++;
    MC_LOGW(o_.tag << ": denied a same-host connection: " << adm.message());
  }
  // Nothing is handed over before the admission: no control page, no memfd, no handle.
  bool ok = adm.ok() && unix_send_msg(fd, hello_, hello_fd_);
  pending_--;
  {
    std::lock_guard<std::mutex> lk(mu_);
    shaking_.erase(fd);
    epoll_event e{EPOLLIN | EPOLLRDHUP, {.u64 = static_cast<uint64_t>(fd)}};
    // An admitted request must arrive whole once it starts: its reads and the replies are
    // bounded by io_ms, so one stuck peer delays the others by that at most.
    if (ok && !stopping_.load() && ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e) == 0)
      conns_.insert(fd);
    else
      ::close(fd);
  }
  done->store(true);
}

bool UnixServer::serve_one(int fd) {
  std::string req, reply;
  if (!unix_recv_msg(fd, &req, nullptr, o_.max_msg)) return false;
  Fd pass;
  bool keep = handler_(req, &reply, &pass);
  if (!reply.empty() && !unix_send_msg(fd, reply, pass.get())) return false;
  return keep;
}

void UnixServer::drop(int fd, std::vector<int> *closing) {
  std::lock_guard<std::mutex> lk(mu_);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  conns_.erase(fd);
  closing->push_back(fd);
}

void UnixServer::stop() {
  if (stopping_.exchange(true)) return;
  if (wake_.valid()) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(wake_.get(), &one, sizeof one);
  }
  if (loop_.joinable()) loop_.join();
  std::vector<Shake> shakes;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (int fd : shaking_) ::shutdown(fd, SHUT_RDWR);
    shakes.swap(shakes_);
  }
  for (auto &s : shakes) s.t.join();
}

}  // namespace mc::samehost
