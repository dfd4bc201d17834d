#include "control/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "control/pool.h"
#include "proto/auth.h"
#include "util/json_writer.h"
#include "util/log.h"

namespace mc::control {
namespace {

// One incoming connection in its admission handshake: an fd, no thread.
struct Pending {
  Fd fd;
  uint64_t serial;  // tells a reused fd number from this one in the deadline queue
  uint64_t deadline;
  uint64_t last_us;  // when it last sent something (accept, or a handshake message)
  std::string peer;  // "HOST:PORT" of the client, for the log
  std::unique_ptr<auth::ServerHandshake> hs;
};

// An admitted control connection between its requests.
struct Conn {
  Fd fd;
  std::string in;  // read, not yet served
  Session session;
  uint64_t partial = 0;       // when an incomplete request began arriving (0: none)
  uint64_t watch_serial = 0;  // its place in the BEAT schedule once it sent WATCH (0: none)
};

std::string peer_text(const sockaddr_storage &sa) {
  char ip[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (sa.ss_family == AF_INET6) {
    auto *s6 = reinterpret_cast<const sockaddr_in6 *>(&sa);
    ::inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    port = ntohs(s6->sin6_port);
    return "[" + std::string(ip) + "]:" + std::to_string(port);
  }
  auto *s4 = reinterpret_cast<const sockaddr_in *>(&sa);
  ::inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(s4->sin_port));
}

// Sends all of out on a non-blocking socket within timeout_ms.
bool send_within(int fd, const std::string &out, uint32_t timeout_ms) {
  size_t off = 0;
  uint64_t until = now_ms() + timeout_ms;
  while (off < out.size()) {
    ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    uint64_t now = now_ms();
    if (now >= until) return false;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(until - now)) < 0 && errno != EINTR) return false;
  }
  return true;
}

// After an ERROR: read what the client already pipelined (bounded), so that closing does not
// reset the connection before the client read it.
void close_gently(int fd) {
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  for (int i = 0; i < 16 && ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; i++) {
  }
}

// A thread's body: an exception (bad_alloc while buffering a request) ends that thread with a
// log line, never the process.
void guarded(const char *what, const std::function<void()> &fn) {
  try {
    fn();
  } catch (const std::exception &e) {
    MC_LOGE("control: the listener's " << what << " thread ended by exception: " << e.what());
  }
}

}  // namespace

struct Listener::Impl {
  ListenerOptions opts;
  Target *target = nullptr;
  Fd listen_fd, wake_fd, ep;
  std::atomic<bool> stopping{false};
  std::thread loop_thread;
  std::vector<std::thread> workers;
  // Event loop only.
  std::unordered_map<int, Pending> pending;
  std::deque<std::pair<int, uint64_t>> pending_order;  // (fd, serial), oldest first
  uint64_t serial = 0;
  std::unordered_map<int, std::unique_ptr<Conn>> conns;
  // Watched connections' next BEATs: (due ms, (fd, watch serial)); an entry whose connection
  // closed (or whose fd now holds another) finds no match and is dropped.
  std::multimap<uint64_t, std::pair<int, uint64_t>> beats;
  uint64_t watch_serials = 0;
  uint64_t refusals_logged_ms = 0, refusals_quiet = 0, last_sweep_ms = 0;
  // mu guards jobs (whole requests for the workers), back (connections the workers are done
  // with, for the loop) and busy (fds the workers hold, shut down on stop).
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Conn>> jobs;
  std::vector<std::unique_ptr<Conn>> back;
  std::set<int> busy;
  std::shared_mutex handler_mu;  // guards handler; held shared while a connection is handed over
  DataHandler handler;
  std::atomic<uint64_t> admitted{0}, denied{0}, expired{0}, evicted{0}, requests{0}, handed{0},
      refused_data{0}, beats_sent{0}, beats_skipped{0}, watches{0};

  uint32_t hs_ms() const { return std::min<uint32_t>(opts.timeout_ms, wire::kHandshakeMs); }
  void wake();
  void watch(int fd);
  void run();
  void expire(uint64_t now);
  void accept_some();
  void add_pending(int fd, const sockaddr_storage &sa);
  bool advance(Pending &p);
  void log_refusal(const Pending &p);
  void admit(Pending &p);
  void on_readable(int fd);
  void dispatch(std::unique_ptr<Conn> c);
  void take_back();
  void sweep(uint64_t now);
  void schedule_beats(Conn &c, uint64_t now);
  void send_beats(uint64_t now);
  int next_timeout(uint64_t now) const;
  void work();
  void serve_one(std::unique_ptr<Conn> c);
  void hand_over(std::unique_ptr<Conn> c);
  void refuse(std::unique_ptr<Conn> c, const std::string &why, mc_status_t code);
  void finish(std::unique_ptr<Conn> c);
};

void Listener::Impl::wake() {
  uint64_t one = 1;
  if (::write(wake_fd.get(), &one, sizeof one) < 0) {
    // Already signalled; the loop also wakes within a second on its own.
  }
}

void Listener::Impl::watch(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = fd;
  ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev);
}

void Listener::Impl::run() {
  std::vector<epoll_event> evs(256);
  while (!stopping.load()) {
    uint64_t now = now_ms();
    expire(now);
    send_beats(now);
    int n = ::epoll_wait(ep.get(), evs.data(), static_cast<int>(evs.size()), next_timeout(now));
    if (stopping.load()) break;
    if (n < 0) {
      if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == wake_fd.get()) {
        uint64_t v;
        if (::read(fd, &v, sizeof v) < 0) {
          // Nothing to drain: another wake-up already did.
        }
      } else if (fd == listen_fd.get()) {
        accept_some();
      } else {
        on_readable(fd);
      }
    }
    take_back();
    sweep(now_ms());
  }
}

// Until the oldest handshake's deadline or the next BEAT, at most a second.
int Listener::Impl::next_timeout(uint64_t now) const {
  uint64_t t = 1000;
  if (!pending_order.empty()) {
    auto it = pending.find(pending_order.front().first);
    if (it != pending.end())
      t = std::min<uint64_t>(t, it->second.deadline > now ? it->second.deadline - now + 1 : 0);
  }
  if (!beats.empty()) t = std::min<uint64_t>(t, beats.begin()->first > now ? beats.begin()->first - now : 0);
  return static_cast<int>(t);
}

// A connection that just sent WATCH (its reply, the first BEAT, is out): its next BEAT is due
// one period from now.
void Listener::Impl::schedule_beats(Conn &c, uint64_t now) {
  if (c.session.watch_ms == 0 || c.watch_serial != 0) return;
  c.watch_serial = ++watch_serials;
  watches++;
  beats.emplace(now + c.session.watch_ms, std::make_pair(c.fd.get(), c.watch_serial));
}

// The BEATs due now, one non-blocking send of 40 bytes each; those due within 1/16 of their
// period (at most 50 ms) go too, so that a thousand watchers cost tens of wake-ups a second, not
// a thousand (early is always safe). A full socket buffer (a watcher that stopped draining) skips
// that BEAT: the watcher sees silence. A failed send closes.
void Listener::Impl::send_beats(uint64_t now) {
  auto early = [&](uint64_t due, int fd) {
    auto it = conns.find(fd);
    uint64_t slack = it == conns.end() ? 0 : std::min<uint64_t>(it->second->session.watch_ms / 16, 50);
    return due <= now + slack;
  };
  while (!beats.empty() && early(beats.begin()->first, beats.begin()->second.first)) {
    auto [due, at] = *beats.begin();
    beats.erase(beats.begin());
    auto it = conns.find(at.first);
    if (it == conns.end() || it->second->watch_serial != at.second) continue;  // closed since
    Conn &c = *it->second;
    wire::Header h = wire::make(wire::BEAT, c.session.watch_id, target->incarnation(), 0);
    ssize_t r = ::send(at.first, &h, sizeof h, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r == static_cast<ssize_t>(sizeof h)) {
      beats_sent++;
    } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      beats_skipped++;
    } else {  // broken (or a short send: the stream is no longer whole messages)
      conns.erase(it);
      continue;
    }
    uint64_t next = due + c.session.watch_ms;
    beats.emplace(next > now ? next : now + c.session.watch_ms, at);
  }
}

// Handshakes past their deadline are closed (all share hs_ms, so the queue is in order).
void Listener::Impl::expire(uint64_t now) {
  while (!pending_order.empty()) {
    auto [fd, ser] = pending_order.front();
    auto it = pending.find(fd);
    if (it != pending.end() && it->second.serial == ser) {
      if (it->second.deadline > now) return;
      expired++;
      MC_LOGD("control: closing a connection from "
              << it->second.peer << " that did not finish its handshake within " << hs_ms() << " ms");
      pending.erase(it);  // closes; epoll forgets a closed fd by itself
    }
    pending_order.pop_front();
  }
}

// Accepts a few at a time, so a burst cannot push out a connection before its HELLO was read.
void Listener::Impl::accept_some() {
  for (uint32_t k = 0; k < wire::kMaxPending / 4; k++) {
    sockaddr_storage sa{};
    socklen_t sl = sizeof sa;
    int fd = ::accept4(listen_fd.get(), reinterpret_cast<sockaddr *>(&sa), &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        MC_LOGW("control: cannot accept a connection: " << std::strerror(errno)
                                                        << " (raise the file descriptor limit)");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && !stopping.load()) {
        MC_LOGE("control: accept failed: " << std::strerror(errno));
      }
      return;
    }
    tune_socket(fd);
    add_pending(fd, sa);
  }
}

// At most kMaxPending handshakes: one more pushes out the one silent longest, so a flood of
// silent or stalled connections holds a bounded number of fds, while a real peer, whose
// handshake moves every few dozen microseconds, still gets through.
void Listener::Impl::add_pending(int fd, const sockaddr_storage &sa) {
  if (pending.size() >= wire::kMaxPending) {
    auto victim = pending.begin();
    for (auto it = pending.begin(); it != pending.end(); ++it)
      if (it->second.last_us < victim->second.last_us) victim = it;
    evicted++;
    MC_LOGD("control: " << wire::kMaxPending
                        << " connections in their handshake; closing the longest silent, from "
                        << victim->second.peer);
    pending.erase(victim);
  }
  Pending p;
  p.fd.reset(fd);
  p.serial = ++serial;
  p.deadline = now_ms() + hs_ms();
  p.last_us = now_us();
  p.peer = peer_text(sa);
  p.hs = std::make_unique<auth::ServerHandshake>(opts.auth_token, target->incarnation());
  pending_order.push_back({fd, p.serial});
  pending.emplace(fd, std::move(p));
  watch(fd);
}

void Listener::Impl::on_readable(int fd) {
  auto pit = pending.find(fd);
  if (pit != pending.end()) {
    if (!advance(pit->second)) pending.erase(pit);
    return;
  }
  auto cit = conns.find(fd);
  if (cit == conns.end()) return;
  Conn &c = *cit->second;
  if (c.watch_serial != 0) {  // a watcher sends nothing more: anything readable (or its end) closes
    conns.erase(cit);
    return;
  }
  char buf[64 * 1024];
  bool closed = false;
  for (int i = 0; i < 16; i++) {  // bounded: one busy client cannot starve the others
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r > 0) {
      c.in.append(buf, static_cast<size_t>(r));
      if (static_cast<size_t>(r) < sizeof buf) break;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    closed = !(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    break;
  }
  Next next = scan(c.in);
  if (closed && next == Next::kNeedMore) {  // the client hung up between requests (or mid-way)
    conns.erase(cit);
    return;
  }
  if (next == Next::kNeedMore) {
    if (!c.in.empty() && c.partial == 0) c.partial = now_ms();
    return;
  }
  ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);
  std::unique_ptr<Conn> own = std::move(cit->second);
  conns.erase(cit);
  dispatch(std::move(own));
}

void Listener::Impl::dispatch(std::unique_ptr<Conn> c) {
  c->partial = 0;
  std::lock_guard<std::mutex> lk(mu);
  busy.insert(c->fd.get());
  jobs.push_back(std::move(c));
  cv.notify_one();
}

// Connections the workers served go back to waiting for their next request.
void Listener::Impl::take_back() {
  std::vector<std::unique_ptr<Conn>> got;
  {
    std::lock_guard<std::mutex> lk(mu);
    got.swap(back);
  }
  for (auto &c : got) {
    int fd = c->fd.get();
    Next next = scan(c->in);
    if (next != Next::kNeedMore) {  // a pipelined request already read: serve it at once
      dispatch(std::move(c));
      continue;
    }
    if (!c->in.empty()) c->partial = now_ms();
    schedule_beats(*c, now_ms());
    conns[fd] = std::move(c);
    watch(fd);
  }
}

// Once a second: a request that began arriving and did not complete within timeout_ms ends its
// connection (idle connections between requests stay: pooled clients keep them).
void Listener::Impl::sweep(uint64_t now) {
  if (now - last_sweep_ms < 1000) return;
  last_sweep_ms = now;
  for (auto it = conns.begin(); it != conns.end();) {
    if (it->second->partial != 0 && now - it->second->partial > opts.timeout_ms)
      it = conns.erase(it);
    else
      ++it;
  }
}

bool Listener::Impl::advance(Pending &p) {
  uint8_t buf[wire::kMaxErrorText];
  for (;;) {
    size_t want = std::min(p.hs->want(), sizeof buf);
    ssize_t r = ::recv(p.fd.get(), buf, want, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (r <= 0) return false;  // closed or reset before the handshake ended
    p.last_us = now_us();
    auto state = p.hs->feed(buf, static_cast<size_t>(r));
    std::string out = p.hs->take_output();
    if (!out.empty() && ::send(p.fd.get(), out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT) !=
                            static_cast<ssize_t>(out.size()))
      return false;  // a few dozen bytes on a fresh socket: a short send means a dead peer
    if (state == auth::ServerHandshake::kAdmitted) {
      admit(p);
      return false;
    }
    if (state == auth::ServerHandshake::kRefused) {
      denied++;
      log_refusal(p);
      close_gently(p.fd.get());
      return false;
    }
  }
}

// Refusals are logged at most once a second (a scan of the port must not flood the log).
void Listener::Impl::log_refusal(const Pending &p) {
  uint64_t now = now_ms();
  if (now - refusals_logged_ms < 1000) {
    refusals_quiet++;
    return;
  }
  std::string more = refusals_quiet ? " (and " + std::to_string(refusals_quiet) + " more refusals)" : "";
  if (p.hs->code() == MC_ERR_DENIED)
    MC_LOGW("control: denied a connection from " << p.peer << ": " << p.hs->why() << more);
  else
    MC_LOGI("control: refused a connection from " << p.peer << ": " << p.hs->why() << more);
  refusals_logged_ms = now;
  refusals_quiet = 0;
}

// An admitted connection waits for its first request like an idle one; a bare first request
// (a token-less engine admits one without HELLO) is already read.
void Listener::Impl::admit(Pending &p) {
  admitted++;
  auto c = std::make_unique<Conn>();
  int fd = p.fd.get();
  ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);
  c->fd = std::move(p.fd);
  if (p.hs->has_first()) {
    wire::Header first = p.hs->first();
    c->in.assign(reinterpret_cast<const char *>(&first), sizeof first);
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    back.push_back(std::move(c));  // take_back() files it (or dispatches the bare request)
  }
}

// ------------------------------------------------------------------------------ workers

void Listener::Impl::work() {
  for (;;) {
    std::unique_ptr<Conn> c;
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return stopping.load() || !jobs.empty(); });
      if (stopping.load()) return;
      c = std::move(jobs.front());
      jobs.pop_front();
    }
    serve_one(std::move(c));
  }
}

void Listener::Impl::serve_one(std::unique_ptr<Conn> c) {
  std::string out;
  Next next = serve(*target, c->session, c->in, out);
  bool sent = out.empty() || send_within(c->fd.get(), out, opts.timeout_ms);
  if (!out.empty()) requests++;
  if (next == Next::kBad || !sent) {  // c closes on return
    if (sent) close_gently(c->fd.get());
    std::lock_guard<std::mutex> lk(mu);
    busy.erase(c->fd.get());
    return;
  }
  if (next == Next::kData) {
    hand_over(std::move(c));
    return;
  }
  finish(std::move(c));
}

// Back to the loop, to wait for its next request.
void Listener::Impl::finish(std::unique_ptr<Conn> c) {
  {
    std::lock_guard<std::mutex> lk(mu);
    busy.erase(c->fd.get());
    if (stopping.load()) return;  // c closes here
    back.push_back(std::move(c));
  }
  wake();
}

void Listener::Impl::hand_over(std::unique_ptr<Conn> c) {
  for (int attempt = 0; attempt < 2; attempt++) {
    {
      std::shared_lock<std::shared_mutex> lk(handler_mu);
      if (handler && !stopping.load()) {
        {
          std::lock_guard<std::mutex> bl(mu);
          busy.erase(c->fd.get());
        }
        handed++;
        handler(std::move(c->fd), std::move(c->in));
        return;
      }
    }
    // The TCP transport registers during start: a data connection that came in meanwhile waits.
    if (attempt == 0 && !target->wait_started()) break;
  }
  if (stopping.load() || !target->wait_started())
    refuse(std::move(c), "came in while this engine was starting or being destroyed", MC_ERR_PEER_DOWN);
  else
    refuse(std::move(c), "sent a data request to an engine whose transports leave tcp out",
           MC_ERR_UNSUPPORTED);
}

void Listener::Impl::refuse(std::unique_ptr<Conn> c, const std::string &why, mc_status_t code) {
  refused_data++;
  std::string out;
  put_error(out, why, code);
  if (send_within(c->fd.get(), out, opts.timeout_ms)) close_gently(c->fd.get());
  std::lock_guard<std::mutex> lk(mu);
  busy.erase(c->fd.get());
}

// ------------------------------------------------------------------------------ Listener

Listener::Listener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Listener::~Listener() { shutdown(); }

Status Listener::start(const ListenerOptions &o, Target *t, std::unique_ptr<Listener> *out, HostPort *bound) {
  auto im = std::make_unique<Impl>();
  im->opts = o;
  im->target = t;
  Status st = tcp_listen(o.listen, &im->listen_fd, bound);
  if (!st.ok()) return st;
  int fl = ::fcntl(im->listen_fd.get(), F_GETFL);
  if (fl < 0 || ::fcntl(im->listen_fd.get(), F_SETFL, fl | O_NONBLOCK) != 0)
    return Err(MC_ERR_TRANSPORT, std::string("fcntl(O_NONBLOCK) on the listener: ") + std::strerror(errno));
  im->wake_fd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  im->ep.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!im->wake_fd.valid() || !im->ep.valid())
    return Err(MC_ERR_TRANSPORT, std::string("eventfd/epoll: ") + std::strerror(errno));
  im->watch(im->wake_fd.get());
  im->watch(im->listen_fd.get());
  Impl *raw = im.get();
  im->loop_thread = std::thread([raw] { guarded("event loop", [raw] { raw->run(); }); });
  for (uint32_t i = 0; i < std::max<uint32_t>(1, o.workers); i++)
    im->workers.emplace_back([raw] { guarded("worker", [raw] { raw->work(); }); });
  out->reset(new Listener(std::move(im)));
  return Status::Ok();
}

void Listener::set_data_handler(DataHandler h) {
  std::unique_lock<std::shared_mutex> lk(impl_->handler_mu);
  impl_->handler = std::move(h);
}

void Listener::shutdown() {
  Impl &im = *impl_;
  if (im.stopping.exchange(true)) return;
  if (im.listen_fd.valid()) ::shutdown(im.listen_fd.get(), SHUT_RDWR);
  im.wake();
  {
    std::lock_guard<std::mutex> lk(im.mu);
    for (int fd : im.busy) ::shutdown(fd, SHUT_RDWR);  // a worker's send or read ends now
    im.cv.notify_all();
  }
  if (im.loop_thread.joinable()) im.loop_thread.join();
  for (auto &w : im.workers)
    if (w.joinable()) w.join();
  im.workers.clear();
  std::lock_guard<std::mutex> lk(im.mu);
  im.jobs.clear();
  im.back.clear();
  im.conns.clear();
  im.pending.clear();
  im.listen_fd.reset();
}

std::string Listener::stats_json() {
  Impl &im = *impl_;
  JsonObject o;
  o.num("handshakes_admitted", im.admitted.load());
  o.num("handshakes_denied", im.denied.load());
  o.num("handshakes_expired", im.expired.load());
  o.num("handshakes_evicted", im.evicted.load());
  o.num("requests_served", im.requests.load());
  o.num("data_connections", im.handed.load());
  o.num("data_connections_refused", im.refused_data.load());
  o.num("watches", im.watches.load());
  o.num("beats_sent", im.beats_sent.load());
  o.num("beats_skipped", im.beats_skipped.load());
  // The control client's pool is shared by every engine of the process: its figures are too.
  control_pool::Counters pc = control_pool::counters();
  o.num("control_connects", pc.connects);
  o.num("control_reuses", pc.reuses);
  o.num("control_discarded", pc.discarded);
  return o.done();
}

}  // namespace mc::control
