// Batched PINGs over kept connections (control/prober.h). A PING goes out with one non-blocking
// send; its PONG is read when epoll says the connection is readable. Anything else readable on
// a kept connection (its end, an RST, an ERROR, bytes nobody asked for) closes it: the caller
// then probes the slow way on a fresh connection, which tells a dead peer (refused) from one
// that only dropped this connection.
#include "control/prober.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "control/pool.h"
#include "proto/wire.h"

namespace mc {

Prober::Prober() : ep_(::epoll_create1(EPOLL_CLOEXEC)), wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (!ok()) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) ep_.reset();
}

Prober::~Prober() = default;

void Prober::wait(int timeout_ms, std::vector<uint64_t> *ids) {
  ids->clear();
  if (!ok()) return;
  epoll_event evs[256];
  int n = ::epoll_wait(ep_.get(), evs, 256, timeout_ms);
  for (int i = 0; i < n; i++) {
    if (evs[i].data.u64 == 0) {
      uint64_t v;
      while (::read(wake_.get(), &v, sizeof v) == sizeof v) {
      }
    }
    ids->push_back(evs[i].data.u64);
  }
}

void Prober::wake() {
  uint64_t one = 1;
  if (wake_.valid()) (void)!::write(wake_.get(), &one, sizeof one);
}

void Prober::adopt(const std::string &key, Fd fd) {
  close(key);
  if (!ok() || !fd.valid()) return;
  uint64_t id = next_id_++;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = id;
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) return;  // fd closes here
  Conn &c = conns_[id];
  c.key = key;
  c.fd = std::move(fd);
  c.generation = control_pool::generation();
  by_key_[key] = id;
}

void Prober::close(const std::string &key) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return;
  conns_.erase(it->second);  // closing the fd takes it out of the epoll set
  by_key_.erase(it);
}

void Prober::release(const std::string &key) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return;
  Conn &c = conns_[it->second];
  ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  // A PING still unanswered leaves its PONG to come: the pool's take() finds the connection
  // readable and drops it.
  control_pool::give(key, std::move(c.fd), c.generation);
  close(key);
}

void Prober::clear() {
  sent_.clear();
  conns_.clear();
  by_key_.clear();
}

bool Prober::ping(const std::string &key, uint64_t now) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return false;
  Conn &c = conns_[it->second];
  if (c.sent_ms != 0) return true;  // one PING at a time: its PONG answers every asker
  wire::Header h = wire::make(wire::PING, 1, 0, 0);
  if (::send(c.fd.get(), &h, sizeof h, MSG_DONTWAIT | MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof h)) {
    close(key);  // a short send of 40 bytes on an idle connection only happens when it broke
    control_pool::count_discard();
    return false;
  }
  c.sent_ms = now;
  sent_.emplace_back(now, it->second);
  pings_++;
  control_pool::count_reuse();  // a call served over a kept connection, as the pool counts them
  return true;
}

uint64_t Prober::last_pong_ms(const std::string &key, uint64_t *incarnation) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return 0;
  const Conn &c = conns_.at(it->second);
  *incarnation = c.incarnation;
  return c.pong_ms;
}

std::vector<std::pair<std::string, uint64_t>> Prober::expire(uint64_t before, uint64_t *oldest) {
  std::vector<std::pair<std::string, uint64_t>> gone;
  *oldest = 0;
  while (!sent_.empty()) {
    auto [when, id] = sent_.front();
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.sent_ms != when) {  // answered or closed since
      sent_.pop_front();
      continue;
    }
    if (when >= before) {
      *oldest = when;
      break;
    }
    sent_.pop_front();
    gone.emplace_back(it->second.key, when);
    close(gone.back().first);
    control_pool::count_discard();
  }
  return gone;
}

Prober::Got Prober::read(uint64_t id, std::string *key, uint64_t *incarnation, std::string *why,
                         uint64_t now) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return Got::kNothing;
  Conn &c = it->second;
  *key = c.key;
  ssize_t n = ::recv(c.fd.get(), c.buf + c.have, sizeof(wire::Header) - c.have, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return Got::kNothing;
  if (n <= 0) {
    *why = n == 0 ? "connection closed by peer" : std::strerror(errno);
    close(*key);
    control_pool::count_discard();
    return Got::kEnded;
  }
  c.have += static_cast<size_t>(n);
  if (c.have < sizeof(wire::Header)) return Got::kNothing;
  wire::Header h;
  std::memcpy(&h, c.buf, sizeof h);
  c.have = 0;
  if (h.magic != wire::kMagic || h.version != wire::kVersion || h.type != wire::PONG || h.len != 0 ||
      c.sent_ms == 0) {
    *why = "sent something other than the PONG awaited";
    close(*key);
    control_pool::count_discard();
    return Got::kEnded;
  }
  c.sent_ms = 0;
  c.pong_ms = now;
  c.incarnation = h.addr;  // a PONG carries the incarnation in its addr field
  *incarnation = h.addr;
  return Got::kPong;
}

}  // namespace mc
