// Kept connections of the health monitor (control/prober.h): watched ones (WATCH once, BEATs
// seen without waking) and pinged ones (PING, PONG wakes wait()).
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

Prober::Prober()
    : ep_(::epoll_create1(EPOLL_CLOEXEC)),
      beats_ep_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
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

Prober::Conn *Prober::find(const std::string &key) {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : &conns_[it->second];
}

bool Prober::watched(const std::string &key) const {
  auto it = by_key_.find(key);
  return it != by_key_.end() && conns_.at(it->second).watched;
}

// A watched connection wakes wait() only when it ends (EPOLLRDHUP: a BEAT's EPOLLIN is not in
// its mask, so the kernel wakes nobody for it) and shows up in beats_ep_ once per arrival.
void Prober::adopt(const std::string &key, Fd fd, uint64_t now) {
  close(key);
  if (!ok() || !fd.valid()) return;
  uint64_t id = next_id_++;
  bool watch = period_ms_ != 0 && !no_watch_.count(key);
  if (watch) {
    wire::Header h = wire::make(wire::WATCH, id, period_ms_, 0);
    if (::send(fd.get(), &h, sizeof h, MSG_DONTWAIT | MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof h)) return;
  }
  epoll_event ev{};
  ev.events = watch ? EPOLLRDHUP : EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = id;
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) return;  // fd closes here
  ev.events = EPOLLIN | EPOLLET;
  if (watch && ::epoll_ctl(beats_ep_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) return;
  Conn &c = conns_[id];
  c.key = key;
  c.fd = std::move(fd);
  c.generation = control_pool::generation();
  c.watched = watch;
  watched_ += watch;
  c.watch_id = id;
  if (watch) c.pong_ms = now;  // the first BEAT is due at once: silence is counted from here
  by_key_[key] = id;
}

void Prober::close(const std::string &key) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return;
  auto c = conns_.find(it->second);
  if (c != conns_.end() && c->second.watched) watched_--;
  conns_.erase(c);  // closing the fd takes it out of both epoll sets
  by_key_.erase(it);
}

void Prober::release(const std::string &key) {
  Conn *c = find(key);
  if (!c) return;
  if (!c->watched) {
    ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c->fd.get(), nullptr);
    // A PING still unanswered leaves its PONG to come: the pool's take() finds the connection
    // readable and drops it.
    control_pool::give(key, std::move(c->fd), c->generation);
  }
  close(key);
}

void Prober::clear() {
  watched_ = 0;
  sent_.clear();
  conns_.clear();
  by_key_.clear();
}

bool Prober::ping(const std::string &key, uint64_t now) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return false;
  Conn &c = conns_[it->second];
  if (c.watched || c.sent_ms != 0) return true;  // BEATs come anyway / one PING answers every asker
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
  return c.watched && !c.confirmed ? 0 : c.pong_ms;
}

std::vector<std::pair<std::string, uint64_t>> Prober::expire(uint64_t before, uint64_t *next) {
  std::vector<std::pair<std::string, uint64_t>> gone;
  *next = 0;
  while (!sent_.empty()) {
    auto [when, id] = sent_.front();
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.sent_ms != when) {  // answered or closed since
      sent_.pop_front();
      continue;
    }
    if (when >= before) {
      *next = when;
      break;
    }
    sent_.pop_front();
    gone.emplace_back(it->second.key, when);
  }
  for (auto &[id, c] : conns_) {
    if (!c.watched) continue;
    uint64_t due = c.pong_ms + period_ms_;  // the BEAT after the last one heard
    if (due < before)
      gone.emplace_back(c.key, due);
    else if (*next == 0 || due < *next)
      *next = due;
  }
  for (auto &g : gone) {
    close(g.first);
    control_pool::count_discard();
  }
  return gone;
}

// One whole header out of c.buf (c.have bytes) checked against what the connection awaits:
// true when it was a BEAT (or PONG) for it, else false with *why.
bool Prober::take_header(Conn &c, std::string *why) {
  wire::Header h;
  std::memcpy(&h, c.buf, sizeof h);
  c.have = 0;
  if (h.magic == wire::kMagic && h.version == wire::kVersion && h.type == wire::ERROR && c.watched &&
      !c.confirmed) {
    no_watch_.insert(c.key);  // an engine older than WATCH: PINGs from now on
    *why = "does not take WATCH (an older engine): pinged from now on";
    return false;
  }
  uint16_t want = c.watched ? wire::BEAT : wire::PONG;
  bool first = c.watched && !c.confirmed;
  if (h.magic != wire::kMagic || h.version != wire::kVersion || h.type != want || h.len != 0 ||
      (c.watched ? h.id != c.watch_id || (!first && h.addr != c.incarnation) : c.sent_ms == 0)) {
    *why = c.watched ? "sent something other than the BEATs awaited"
                     : "sent something other than the PONG awaited";
    return false;
  }
  c.incarnation = h.addr;  // a PONG or BEAT carries the incarnation in its addr field
  c.confirmed = c.confirmed || c.watched;
  c.sent_ms = 0;
  return true;
}

// Reads everything the connection holds (a watched one: its BEATs so far).
Prober::Drained Prober::drain(Conn &c, std::string *why) {
  c.unread = 0;
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), c.buf + c.have, sizeof(wire::Header) - c.have, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Drained::kOpen;
    if (n <= 0) {
      *why = n == 0 ? "connection closed by peer" : std::strerror(errno);
      return Drained::kEnded;
    }
    c.have += static_cast<size_t>(n);
    if (c.have == sizeof(wire::Header) && !take_header(c, why)) return Drained::kEnded;
    if (!c.watched && c.have == 0) return Drained::kOpen;  // one PONG at a time
  }
}

void Prober::end(Conn &c, std::vector<std::pair<std::string, std::string>> *ended, const std::string &why) {
  ended->emplace_back(c.key, why);
  control_pool::count_discard();
  close(std::string(c.key));
}

// One epoll_wait that does not block: each watched connection that got bytes since the last
// look, once. Its BEATs are read (checked, the buffer emptied) at the first and then every 16th
// arrival: the kernel holds the others meanwhile (40 bytes each).
void Prober::collect(uint64_t now, std::vector<std::pair<std::string, uint64_t>> *beaten,
                     std::vector<std::pair<std::string, std::string>> *ended) {
  beaten->clear();
  ended->clear();
  if (!ok()) return;
  epoll_event evs[256];
  for (;;) {
    int n = ::epoll_wait(beats_ep_.get(), evs, 256, 0);
    for (int i = 0; i < n; i++) {
      auto it = conns_.find(evs[i].data.u64);
      if (it == conns_.end()) continue;
      Conn &c = it->second;
      std::string why;
      if ((!c.confirmed || ++c.unread >= 16) && drain(c, &why) == Drained::kEnded) {
        end(c, ended, why);
        continue;
      }
      if (!c.confirmed) continue;
      c.pong_ms = now;
      beats_++;
      beaten->emplace_back(c.key, c.incarnation);
    }
    if (n < 256) return;
  }
}

Prober::Got Prober::read(uint64_t id, std::string *key, uint64_t *incarnation, std::string *why,
                         uint64_t now) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return Got::kNothing;
  Conn &c = it->second;
  *key = c.key;
  bool was_pinged = !c.watched && c.sent_ms != 0;
  Drained d = drain(c, why);
  if (d == Drained::kOpen && c.watched) {  // woken for a watched one: it ended (EPOLLRDHUP)
    *why = "connection closed by peer";
    d = Drained::kEnded;
  }
  if (d == Drained::kEnded) {
    close(*key);
    control_pool::count_discard();
    return Got::kEnded;
  }
  if (!was_pinged || c.sent_ms != 0) return Got::kNothing;  // the PONG is not whole yet
  c.pong_ms = now;
  *incarnation = c.incarnation;
  return Got::kPong;
}

}  // namespace mc
