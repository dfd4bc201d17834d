#include "transport/tcp/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "proto/auth.h"
#include "transport/tcp/client_conn.h"
#include "transport/tcp/fences.h"
#include "transport/tcp/io_loop.h"
#include "gpu/gpu_staging.h"
#include "util/json_writer.h"
#include "util/log.h"
#include "proto/wire.h"

namespace mc {
namespace {

constexpr uint64_t kProgressChunk = 8 << 20;  // payloads move in chunks so progress is seen

class TcpTransport;

class TcpPeer : public PeerPath {
 public:
  TcpPeer(TcpTransport *t, HostPort a, uint64_t inc, uint32_t n)
      : t_(t), addr(std::move(a)), incarnation(inc), conns(n), fences(std::make_shared<tcp::Fences>()) {}
  std::shared_ptr<tcp::ClientConn> conn(size_t i);
  void fail(mc_status_t st, const std::string &why) {
    std::lock_guard<std::mutex> lk(mu);
    for (auto &c : conns)
      if (c) c->fail(st, why);
  }
  TcpTransport *t_;
  HostPort addr;
  uint64_t incarnation;
  std::mutex mu;  // guards conns
  std::vector<std::shared_ptr<tcp::ClientConn>> conns;
  std::shared_ptr<tcp::Fences> fences;
  std::atomic<uint32_t> rr{0};
};

class TcpTransport : public Transport {
 public:
  TcpTransport(const TcpOptions &o, Host *target) : opts_(o), target_(target) {
    std::random_device rd;
    nonce_ = (static_cast<uint64_t>(rd()) << 32 | rd()) | 1;  // never 0
  }
  ~TcpTransport() override { shutdown(); }
  Status start();
  const char *name() const override { return "tcp"; }
  Host &host() const { return *target_; }  // the engine; the connections complete slices through it
  // Host and GPU memory alike: GPU memory is staged (send_device / recv_device).
  bool accepts(const std::string &, const std::string &) const override { return true; }
  // A peer serves TCP data only where its `transports` allow tcp: its descriptor says so.
  bool reachable(const Descriptor &d) override { return !d.tcp.empty() && d.transports.count("tcp"); }
  void describe(Descriptor &d) override { d.transports["tcp"] = "{}"; }
  std::shared_ptr<PeerPath> connect(const Descriptor &d) override;
  void submit(PeerPath &peer, Slice *slices, size_t n) override;
  void shutdown() override;
  std::string stats_json() override;
  void fail_path(PeerPath &peer, mc_status_t st, const std::string &why) override {
    static_cast<TcpPeer &>(peer).fail(st, why);
  }

  // Runs fn on a detached thread that shutdown() waits for.
  void spawn(std::function<void()> fn);
  // A new client connection on the next loop (round robin), connecting.
  std::shared_ptr<tcp::ClientConn> open_conn(const HostPort &addr, uint64_t incarnation,
                                             std::shared_ptr<tcp::Fences> fences,
                                             std::shared_ptr<std::atomic<uint64_t>> heard);

  tcp::Counters ctr_;
  std::atomic<uint64_t> served_requests{0}, served_refused{0};
  // Connections this engine's peers had it end (BIND fences), and fences sent by this engine.
  std::atomic<uint64_t> served_fenced{0};

 private:
  // Serves one data connection handed over by the engine's listener (a thread each, for now).
  void adopt(Fd fd, std::string readahead);
  void serve(int fd, std::string readahead);
  // A BIND on connection fd: ends the connections it names, then records fd under (nonce, seq).
  Status bind(int fd, uint64_t nonce, uint64_t seq, const std::vector<uint64_t> &dead);
  void unbind(uint64_t nonce, uint64_t seq);

  TcpOptions opts_;
  Host *target_;
  std::atomic<bool> stopping_{false};
  // threads_mu_ guards threads_ and the cv used by shutdown() to wait for detached threads.
  std::mutex threads_mu_;
  std::condition_variable threads_cv_;
  int threads_ = 0;
  // conns_mu_ guards conns_ (every client connection, for shutdown) and served_fds_
  // (server-side sockets, shut down on stop).
  std::mutex conns_mu_;
  std::list<std::weak_ptr<tcp::ClientConn>> conns_;
  std::list<int> served_fds_;
  // The event loops serving every client connection; fixed in number (tcp_io_threads).
  std::vector<std::unique_ptr<tcp::IoLoop>> loops_;
  std::atomic<uint32_t> next_loop_{0};
  tcp::ClientEnv env_;
  uint64_t nonce_ = 1;
  std::atomic<uint64_t> next_seq_{1};
  // bind_mu_ guards bound_ (served connections that sent BIND, by (nonce, number): their fd)
  // and fenced_ (connections a BIND named, refused if they come later; the oldest forgotten
  // past kMaxFenced); bind_cv_ is signalled when a bound connection ends.
  using ConnKey = std::pair<uint64_t, uint64_t>;
  static constexpr size_t kMaxFenced = 4096;
  std::mutex bind_mu_;
  std::condition_variable bind_cv_;
  std::map<ConnKey, int> bound_;
  std::set<ConnKey> fenced_;
  std::deque<ConnKey> fenced_order_;
};

// ------------------------------------------------------------------------------ client side

// A connection opened before the latest breakage is retired (it finishes its work) and
// replaced by one whose BIND fences the broken ones.
std::shared_ptr<tcp::ClientConn> TcpPeer::conn(size_t i) {
  std::lock_guard<std::mutex> lk(mu);
  auto &c = conns[i];
  if (!c || c->broken() || c->stale()) {
    if (c) c->retire();
    c = t_->open_conn(addr, incarnation, fences, heard_ms);
  }
  return c;
}

// GPU memory ("cuda:N" buffers, at either end) cannot meet a socket directly: it moves through
// pinned host staging buffers, one chunk copied while the previous one is sent or received
// (gpu/gpu_staging.h). A CUDA failure reads as EIO.
static bool send_device(int fd, const void *dev, uint64_t len) {
  std::string why;
  bool ok = gpu::stage_out(
      dev, len, [&](const char *p, uint64_t n) { return write_all(fd, p, n); }, &why);
  if (!ok && !why.empty()) {
    MC_LOGW("tcp: staging GPU memory: " << why);
    errno = EIO;
  }
  return ok;
}
static bool recv_device(BufferedReader &rd, void *dev, uint64_t len) {
  std::string why;
  bool ok = gpu::stage_in(
      dev, len, [&](char *p, uint64_t n) { return rd.read(p, n); }, &why);
  if (!ok && !why.empty()) {
    MC_LOGW("tcp: staging GPU memory: " << why);
    errno = EIO;
  }
  return ok;
}

// ------------------------------------------------------------------------------ transport

Status TcpTransport::start() {
  env_.host = target_;
  env_.counters = &ctr_;
  env_.timeout_ms = opts_.timeout_ms;
  env_.token = opts_.auth_token;
  env_.nonce = nonce_;
  for (uint32_t i = 0; i < std::max<uint32_t>(1, opts_.io_threads); i++) {
    loops_.push_back(std::make_unique<tcp::IoLoop>());
    Status st = loops_.back()->start("tcp-io-" + std::to_string(i));
    if (!st.ok()) return st;
  }
  target_->serve_data([this](Fd fd, std::string readahead) { adopt(std::move(fd), std::move(readahead)); });
  return Status::Ok();
}

void TcpTransport::spawn(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lk(threads_mu_);
    threads_++;
  }
  std::thread([this, fn = std::move(fn)] {
    try {
      fn();
    } catch (const std::exception &e) {
      MC_LOGE("tcp: thread ended by exception: " << e.what());
    }
    std::lock_guard<std::mutex> lk(threads_mu_);
    threads_--;
    threads_cv_.notify_all();
  }).detach();
}

std::shared_ptr<tcp::ClientConn> TcpTransport::open_conn(const HostPort &addr, uint64_t incarnation,
                                                         std::shared_ptr<tcp::Fences> fences,
                                                         std::shared_ptr<std::atomic<uint64_t>> heard) {
  tcp::IoLoop *loop = loops_[next_loop_.fetch_add(1) % loops_.size()].get();
  auto c = std::make_shared<tcp::ClientConn>(&env_, loop, addr, incarnation, next_seq_.fetch_add(1),
                                             std::move(fences), std::move(heard));
  {
    std::lock_guard<std::mutex> lk(conns_mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (it->expired())
        it = conns_.erase(it);
      else
        ++it;
    }
    conns_.push_back(c);
  }
  c->start();
  return c;
}

std::shared_ptr<PeerPath> TcpTransport::connect(const Descriptor &d) {
  HostPort hp;
  if (!parse_host_port(d.tcp, &hp).ok()) return nullptr;
  return std::make_shared<TcpPeer>(this, hp, d.incarnation, opts_.connections);
}

void TcpTransport::submit(PeerPath &path, Slice *slices, size_t n) {
  auto &peer = static_cast<TcpPeer &>(path);
  size_t nc = peer.conns.size();
  if (stopping_.load()) {
    for (size_t i = 0; i < n; i++) target_->complete(slices[i], MC_ERR_PEER_DOWN);
    return;
  }
  // Few slices: one connection each, round robin. Many: one contiguous run per connection, so
  // every connection stays busy and each lock is taken once.
  size_t runs = n < nc ? n : nc;
  size_t start = peer.rr.fetch_add(static_cast<uint32_t>(runs));
  size_t done = 0;
  for (size_t r = 0; r < runs; r++) {
    size_t cnt = n / runs + (r < n % runs ? 1 : 0);
    size_t ci = (start + r) % nc;
    for (int attempt = 0;; attempt++) {
      auto c = peer.conn(ci);
      if (c->enqueue(slices + done, cnt)) break;
      if (attempt > 3) {  // connections keep breaking as we queue: give up on these slices
        for (size_t i = 0; i < cnt; i++) target_->complete(slices[done + i], MC_ERR_TRANSPORT);
        break;
      }
    }
    done += cnt;
  }
}

void TcpTransport::adopt(Fd fd, std::string readahead) {
  int raw = fd.release();
  int fl = ::fcntl(raw, F_GETFL);
  if (fl >= 0) ::fcntl(raw, F_SETFL, fl & ~O_NONBLOCK);
  {
    std::lock_guard<std::mutex> lk(conns_mu_);
    served_fds_.push_back(raw);
  }
  spawn([this, raw, ra = std::move(readahead)]() mutable { serve(raw, std::move(ra)); });
}

// Serves one data connection: BIND, then READ/WRITE against registered memory (control
// messages belong to the engine's listener, control/listener.h). readahead: bytes the listener
// already read from it. Replies are gathered in `out` and flushed when no further request is
// already buffered, so a burst of small requests costs one send per burst, not per request.
void TcpTransport::serve(int fd, std::string readahead) {
  BufferedReader rd;
  rd.attach(fd);
  rd.preload(readahead);
  readahead.clear();
  std::vector<char> out;
  out.reserve(64 * 1024);
  auto flush = [&]() -> bool {
    if (out.empty()) return true;
    bool ok = write_all(fd, out.data(), out.size());
    out.clear();
    return ok;
  };
  auto put = [&](const void *p, size_t n) {
    const char *c = static_cast<const char *>(p);
    out.insert(out.end(), c, c + n);
  };
  auto refuse = [&](const std::string &why, mc_status_t code = MC_ERR_TRANSPORT, bool warn = true) {
    if (warn)
      MC_LOGW("tcp: closing a connection that " << why);
    else
      MC_LOGI("tcp: closing a connection that " << why);
    wire::Header h = wire::make(wire::ERROR, 0, 0, why.size(), code);
    put(&h, sizeof h);
    put(why.data(), why.size());
    flush();
  };
  bool bound = false;  // a BIND named this connection: key is its (nonce, number)
  ConnKey key{0, 0};
  for (;;) {
    wire::Header h;
    if (rd.buffered() < sizeof(wire::Header) && !flush()) break;
    if (!rd.read(&h, sizeof h)) break;
    if (h.magic != wire::kMagic || h.version != wire::kVersion) {
      refuse("sent bytes that are not an mc message of this wire version");
      break;
    }
    if (h.type == wire::BIND) {
      if (bound || h.len % sizeof(uint64_t) != 0 || h.len > wire::kMaxFence * sizeof(uint64_t)) {
        refuse("sent a malformed BIND");
        break;
      }
      std::vector<uint64_t> dead(h.len / sizeof(uint64_t));
      if (!rd.read(dead.data(), h.len)) break;
      Status bst = bind(fd, h.id, h.addr, dead);
      if (!bst.ok()) {
        refuse(bst.message(), bst.code(), false);
        break;
      }
      bound = true;
      key = {h.id, h.addr};
      continue;
    }
    if (h.type == wire::PING && h.len == 0) {  // answers on the data connection itself
      wire::Header r = wire::make(wire::PONG, h.id, target_->incarnation(), 0);
      put(&r, sizeof r);
      continue;
    }
    if (h.type != wire::WRITE && h.type != wire::READ) {
      refuse("sent a message of type " + std::to_string(h.type) + " on a data connection");
      break;
    }
    served_requests++;
    // The pin checks the buffer's access too: a READ of a buffer peers may not read, or a
    // WRITE of one they may not write, is refused (MC_ERR_DENIED) and nothing is written.
    mc_status_t st = h.len == 0 ? MC_ERR_INVALID_ARG
                                : target_->pin(h.addr, h.len, h.type == wire::WRITE ? MC_WRITE : MC_READ);
    if (h.type == wire::WRITE) {
      bool ok = true;
      if (st == MC_OK) {
        char *dst = reinterpret_cast<char *>(h.addr);
        bool staged = gpu::is_device_memory(dst);
        if (staged) ok = recv_device(rd, dst, h.len);
        for (uint64_t off = 0; ok && !staged && off < h.len; off += kProgressChunk)
          ok = rd.read(dst + off, std::min<uint64_t>(kProgressChunk, h.len - off));
        target_->unpin(h.addr, h.len);
        if (ok) ctr_.bytes_received += h.len;
      } else {
        served_refused++;
        MC_LOGI("tcp: refused a WRITE of " << h.len << " bytes at 0x" << std::hex << h.addr << std::dec
                                           << ": " << mc_status_str(st));
        if (h.len > wire::kMaxDrain) {
          // Not worth draining (and maybe garbage): answer, then close.
          wire::Header r = wire::make(wire::WRITE_ACK, h.id, h.addr, 0, st);
          put(&r, sizeof r);
          flush();
          break;
        }
        ok = rd.skip(h.len);
      }
      if (!ok) break;
      wire::Header r = wire::make(wire::WRITE_ACK, h.id, h.addr, 0, st);
      put(&r, sizeof r);
      continue;
    }
    // READ
    if (st != MC_OK) {
      served_refused++;
      wire::Header r = wire::make(wire::READ_DATA, h.id, h.addr, 0, st);
      put(&r, sizeof r);
      continue;
    }
    wire::Header r = wire::make(wire::READ_DATA, h.id, h.addr, h.len);
    bool ok;
    if (gpu::is_device_memory(reinterpret_cast<const void *>(h.addr))) {
      ok = flush() && write_all(fd, &r, sizeof r) &&
           send_device(fd, reinterpret_cast<const void *>(h.addr), h.len);
    } else if (h.len <= 16 * 1024) {
      put(&r, sizeof r);
      put(reinterpret_cast<const void *>(h.addr), h.len);
      ok = true;
      if (out.size() >= 256 * 1024) ok = flush();
    } else {
      ok = flush();
      iovec iov[2] = {{&r, sizeof r}, {reinterpret_cast<void *>(h.addr), h.len}};
      ok = ok && writev_all(fd, iov, 2);
    }
    target_->unpin(h.addr, h.len);
    if (!ok) break;
    ctr_.bytes_sent += h.len;
  }
  if (bound) unbind(key.first, key.second);
  {
    std::lock_guard<std::mutex> lk(conns_mu_);
    served_fds_.remove(fd);
  }
  ::close(fd);
}

Status TcpTransport::bind(int fd, uint64_t nonce, uint64_t seq, const std::vector<uint64_t> &dead) {
  std::unique_lock<std::mutex> lk(bind_mu_);
  if (fenced_.count({nonce, seq}))
    return Err(MC_ERR_PEER_DOWN, "came after a newer connection of the same engine ended it");
  for (uint64_t d : dead) {
    ConnKey k{nonce, d};
    auto it = bound_.find(k);
    if (it != bound_.end()) {
      ::shutdown(it->second, SHUT_RDWR);  // its handler stops at its next read or write
      served_fenced++;
    }
    if (fenced_.insert(k).second) {
      fenced_order_.push_back(k);
      if (fenced_order_.size() > kMaxFenced) {
        fenced_.erase(fenced_order_.front());
        fenced_order_.pop_front();
      }
    }
  }
  auto gone = [&] {
    for (uint64_t d : dead)
      if (bound_.count({nonce, d})) return false;
    return true;
  };
  if (!bind_cv_.wait_for(lk, std::chrono::milliseconds(opts_.timeout_ms), gone))
    return Err(MC_ERR_PEER_DOWN, "named an older connection that did not end within timeout_ms");
  bound_[{nonce, seq}] = fd;
  return Status::Ok();
}

void TcpTransport::unbind(uint64_t nonce, uint64_t seq) {
  std::lock_guard<std::mutex> lk(bind_mu_);
  bound_.erase({nonce, seq});
  bind_cv_.notify_all();
}

void TcpTransport::shutdown() {
  if (!stopping_.exchange(true)) target_->serve_data(nullptr);  // no connection is handed over any more
  // The loops end every client connection they serve (on_stop: its slices fail); one that a
  // submit racing with shutdown created after its loop stopped is ended here.
  for (auto &l : loops_) l->stop();
  {
    std::vector<std::shared_ptr<tcp::ClientConn>> live;
    {
      std::lock_guard<std::mutex> lk(conns_mu_);
      for (auto &w : conns_)
        if (auto c = w.lock()) live.push_back(std::move(c));
    }
    for (auto &c : live) c->abandon();
  }
  // Keep shutting served sockets until every serving thread is gone.
  for (;;) {
    {
      std::lock_guard<std::mutex> lk(conns_mu_);
      for (int fd : served_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    std::unique_lock<std::mutex> lk(threads_mu_);
    if (threads_cv_.wait_for(lk, std::chrono::milliseconds(20), [&] { return threads_ == 0; })) break;
  }
}

std::string TcpTransport::stats_json() {
  JsonObject o;
  o.num("bytes_sent", ctr_.bytes_sent.load());
  o.num("bytes_received", ctr_.bytes_received.load());
  o.num("slices_completed", ctr_.slices_ok.load());
  o.num("slices_failed", ctr_.slices_failed.load());
  o.num("connections_opened", ctr_.conns_opened.load());
  o.num("connections_failed", ctr_.conns_failed.load());
  o.num("served_requests", served_requests.load());
  o.num("served_refused", served_refused.load());
  o.num("fences_sent", ctr_.fences_sent.load());
  o.num("served_fenced", served_fenced.load());
  return o.done();
}

}  // namespace

Status make_tcp_transport(const TcpOptions &opts, Host *target, std::unique_ptr<Transport> *out) {
  auto t = std::make_unique<TcpTransport>(opts, target);
  Status st = t->start();
  if (!st.ok()) return st;
  *out = std::move(t);
  return Status::Ok();
}

}  // namespace mc
