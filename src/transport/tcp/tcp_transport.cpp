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
#include "gpu/gpu_staging.h"
#include "util/json_writer.h"
#include "util/log.h"
#include "proto/wire.h"

namespace mc {
namespace {

constexpr size_t kMaxSendBatch = 64;          // slices per writev
constexpr uint64_t kProgressChunk = 8 << 20;  // payloads move in chunks so progress is seen

class TcpTransport;

// The connections to one peer that broke with WRITEs unanswered, whose bytes may still be on the
// way (proto/wire.h, Fencing). Every connection opened later names them in its BIND; the peer
// ends them before serving it. epoch grows with each breakage: a connection opened before the
// latest one takes no new work. mu guards dead and epoch.
struct Fences {
  std::mutex mu;
  std::deque<uint64_t> dead;  // oldest first; at most wire::kMaxFence
  uint64_t epoch = 0;
  void add(uint64_t seq, const std::string &peer);
  // What a new connection carries and the epoch it was opened in, taken together.
  void snapshot(std::vector<uint64_t> *seqs, uint64_t *epoch_out);
  uint64_t current() {
    std::lock_guard<std::mutex> lk(mu);
    return epoch;
  }
  // The peer ended these (a reply came on the connection that named them).
  void confirmed(const std::vector<uint64_t> &seqs);
};

// One client connection to a peer. The sender thread connects, then writes requests in order;
// the receiver thread reads replies in the same order. Whoever sees an error breaks the
// connection; the receiver (or the sender, if no receiver was started) then fails every slice
// still owned by the connection, after the other thread stopped touching memory.
class TcpConn : public std::enable_shared_from_this<TcpConn> {
 public:
  TcpConn(TcpTransport *t, HostPort addr, uint64_t incarnation, std::shared_ptr<Fences> fences);
  // Queues slices; false (nothing queued) when the connection is broken or retired.
  bool enqueue(const Slice *s, size_t n);
  // Opened before the latest breakage of a connection to this peer: takes no new work.
  bool stale() const { return epoch_ < fences_->current(); }
  // Finishes what it has, then closes cleanly (nothing fails).
  void retire();
  void start();
  void fail(mc_status_t st, const std::string &why);
  bool broken() {
    std::lock_guard<std::mutex> lk(mu_);
    return broken_;
  }
  // Called by the reaper: breaks the connection when work made no progress for timeout_ms.
  void check_progress(uint64_t now, uint32_t timeout_ms);

 private:
  struct Inflight {
    Slice s;
    uint64_t id;
  };
  void run_sender();
  bool send_bind();
  void run_receiver();
  void fail_all();

  TcpTransport *t_;
  HostPort addr_;
  uint64_t incarnation_;
  std::shared_ptr<Fences> fences_;
  uint64_t seq_;                        // this connection's number in its BIND
  uint64_t epoch_ = 0;                  // fences_->epoch when it was opened
  std::vector<uint64_t> carried_;       // broken connections its BIND names (set once, in the ctor)
  std::atomic<bool> confirmed_{false};  // receiver only: the fence was confirmed
  Fd fd_;
  std::atomic<uint64_t> last_progress_{0};
  // mu_ guards everything below it.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Slice> queue_;        // not sent yet
  std::deque<Inflight> inflight_;  // sent or being sent, replies expected in this order
  bool broken_ = false;
  bool retired_ = false;
  mc_status_t status_ = MC_OK;
  std::string why_;
  bool sender_done_ = false;
  bool receiver_started_ = false;
  uint64_t next_id_ = 1;
};

class TcpPeer : public PeerPath {
 public:
  TcpPeer(TcpTransport *t, HostPort a, uint64_t inc, uint32_t n)
      : t_(t), addr(std::move(a)), incarnation(inc), conns(n), fences(std::make_shared<Fences>()) {}
  std::shared_ptr<TcpConn> conn(size_t i);
  void fail(mc_status_t st, const std::string &why) {
    std::lock_guard<std::mutex> lk(mu);
    for (auto &c : conns)
      if (c) c->fail(st, why);
  }
  TcpTransport *t_;
  HostPort addr;
  uint64_t incarnation;
  std::mutex mu;  // guards conns
  std::vector<std::shared_ptr<TcpConn>> conns;
  std::shared_ptr<Fences> fences;
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
  void track(const std::shared_ptr<TcpConn> &c);
  uint32_t timeout_ms() const { return opts_.timeout_ms; }
  const std::string &token() const { return opts_.auth_token; }
  bool stopping() const { return stopping_.load(); }
  uint64_t nonce() const { return nonce_; }
  uint64_t next_conn_seq() { return next_seq_.fetch_add(1); }

  std::atomic<uint64_t> bytes_sent{0}, bytes_received{0}, slices_ok{0}, slices_failed{0};
  std::atomic<uint64_t> conns_opened{0}, conns_failed{0}, served_requests{0}, served_refused{0};
  // Connections this engine's peers had it end (BIND fences), and fences sent by this engine.
  std::atomic<uint64_t> served_fenced{0}, fences_sent{0};

 private:
  // Serves one data connection handed over by the engine's listener (a thread each, for now).
  void adopt(Fd fd, std::string readahead);
  void serve(int fd, std::string readahead);
  // A BIND on connection fd: ends the connections it names, then records fd under (nonce, seq).
  Status bind(int fd, uint64_t nonce, uint64_t seq, const std::vector<uint64_t> &dead);
  void unbind(uint64_t nonce, uint64_t seq);
  void reaper_loop();

  TcpOptions opts_;
  Host *target_;
  std::atomic<bool> stopping_{false};
  // threads_mu_ guards threads_ and the cv used by shutdown() to wait for detached threads.
  std::mutex threads_mu_;
  std::condition_variable threads_cv_;
  int threads_ = 0;
  // conns_mu_ guards conns_ (every client connection, for the reaper and shutdown) and
  // served_fds_ (server-side sockets, shut down on stop).
  std::mutex conns_mu_;
  std::list<std::weak_ptr<TcpConn>> conns_;
  std::list<int> served_fds_;
  std::thread reaper_;
  std::mutex reaper_mu_;
  std::condition_variable reaper_cv_;
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

void Fences::add(uint64_t seq, const std::string &peer) {
  std::lock_guard<std::mutex> lk(mu);
  if (dead.size() >= wire::kMaxFence) {
    MC_LOGW("tcp: " << dead.size() << " broken connections to " << peer
                    << " not yet fenced; the oldest is no longer named");
    dead.pop_front();
  }
  dead.push_back(seq);
  epoch++;
}

void Fences::snapshot(std::vector<uint64_t> *seqs, uint64_t *epoch_out) {
  std::lock_guard<std::mutex> lk(mu);
  seqs->assign(dead.begin(), dead.end());
  *epoch_out = epoch;
}

void Fences::confirmed(const std::vector<uint64_t> &seqs) {
  std::lock_guard<std::mutex> lk(mu);
  for (uint64_t s : seqs)
    for (auto it = dead.begin(); it != dead.end(); ++it)
      if (*it == s) {
        dead.erase(it);
        break;
      }
}

TcpConn::TcpConn(TcpTransport *t, HostPort addr, uint64_t incarnation, std::shared_ptr<Fences> fences)
    : t_(t),
      addr_(std::move(addr)),
      incarnation_(incarnation),
      fences_(std::move(fences)),
      seq_(t->next_conn_seq()) {
  fences_->snapshot(&carried_, &epoch_);
}

void TcpConn::retire() {
  std::lock_guard<std::mutex> lk(mu_);
  retired_ = true;
  cv_.notify_all();
}

bool TcpConn::enqueue(const Slice *s, size_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  if (broken_ || retired_) return false;
  if (queue_.empty() && inflight_.empty()) last_progress_.store(now_ms());
  for (size_t i = 0; i < n; i++) queue_.push_back(s[i]);
  cv_.notify_one();
  return true;
}

void TcpConn::start() {
  last_progress_.store(now_ms());
  auto self = shared_from_this();
  t_->track(self);
  t_->spawn([self] { self->run_sender(); });
}

void TcpConn::fail(mc_status_t st, const std::string &why) {
  std::lock_guard<std::mutex> lk(mu_);
  if (broken_) return;
  broken_ = true;
  status_ = st;
  why_ = why;
  if (fd_.valid()) {
    // Closed with a reset, not a FIN behind the queued bytes: the kernel stops sending them.
    linger l{1, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::shutdown(fd_.get(), SHUT_RDWR);
  }
  cv_.notify_all();
}

void TcpConn::check_progress(uint64_t now, uint32_t timeout_ms) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    // A retired connection with nothing left waits for the peer to close: that wait is timed too.
    if (broken_ || (!retired_ && queue_.empty() && inflight_.empty())) return;
  }
  uint64_t last = last_progress_.load();
  if (now > last && now - last > timeout_ms)
    fail(MC_ERR_PEER_DOWN,
         "peer " + addr_.str() + " made no progress for " + std::to_string(now - last) + " ms");
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

static mc_status_t io_status(int err) {
  return (err == 0 || err == ECONNRESET || err == EPIPE || err == ECONNABORTED) ? MC_ERR_PEER_DOWN
                                                                                : MC_ERR_TRANSPORT;
}
static std::string io_text(int err) {
  return err == 0 ? std::string("connection closed by peer") : std::string(std::strerror(err));
}

void TcpConn::fail_all() {
  std::deque<Slice> q;
  std::deque<Inflight> f;
  mc_status_t st;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return sender_done_; });
    q.swap(queue_);
    f.swap(inflight_);
    st = status_;
  }
  // WRITEs sent and not answered may still land: fence this connection before anyone learns
  // they failed (the next connection to the peer names it; proto/wire.h).
  for (auto &x : f)
    if (x.s.op == MC_WRITE) {
      fences_->add(seq_, addr_.str());
      break;
    }
  if (!q.empty() || !f.empty())
    MC_LOGI("tcp: failing " << (q.size() + f.size()) << " slices to " << addr_.str() << ": " << why_);
  for (auto &x : f) {
    t_->slices_failed++;
    t_->host().complete(x.s, st);
  }
  for (auto &s : q) {
    t_->slices_failed++;
    t_->host().complete(s, st);
  }
}

void TcpConn::run_sender() {
  Fd fd;
  Status st = t_->stopping() ? Err(MC_ERR_PEER_DOWN, "engine is shutting down")
                             : tcp_connect(addr_, t_->timeout_ms(), &fd);
  if (!st.ok()) {
    t_->conns_failed++;
    fail(st.code(), st.message());
    {
      std::lock_guard<std::mutex> lk(mu_);
      sender_done_ = true;
    }
    fail_all();
    return;
  }
  t_->conns_opened++;
  {
    std::lock_guard<std::mutex> lk(mu_);
    fd_ = std::move(fd);
    if (broken_) ::shutdown(fd_.get(), SHUT_RDWR);
    receiver_started_ = true;
  }
  last_progress_.store(now_ms());
  // Admission before any request (proto/wire.h): with a token this waits for the server's
  // challenge (one round trip); without one it only sends HELLO. Reads are bounded here; the
  // data path itself has no socket timeout (the reaper watches progress instead).
  set_io_timeout(fd_.get(), t_->timeout_ms());
  st = auth::client_handshake(fd_.get(), t_->token(), incarnation_, "peer " + addr_.str(), nullptr, 0);
  if (st.ok() && !send_bind()) {
    int e = errno;
    st = Err(io_status(e), "send to " + addr_.str() + ": " + io_text(e));
  }
  set_io_timeout(fd_.get(), 0);
  if (!st.ok()) {
    t_->conns_failed++;
    if (st.code() == MC_ERR_DENIED) MC_LOGW("tcp: " << st.message());
    fail(st.code(), st.message());
    {
      std::lock_guard<std::mutex> lk(mu_);
      sender_done_ = true;
    }
    fail_all();
    return;
  }
  auto self = shared_from_this();
  t_->spawn([self] { self->run_receiver(); });

  std::vector<Slice> batch;
  std::vector<Slice> canceled;
  std::vector<wire::Header> hdrs(kMaxSendBatch);
  std::vector<iovec> iov(kMaxSendBatch * 2);
  for (;;) {
    batch.clear();
    canceled.clear();
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return broken_ || retired_ || !queue_.empty(); });
      if (broken_) break;
      if (queue_.empty()) {  // retired and everything sent: the peer answers the rest, then closes
        ::shutdown(fd_.get(), SHUT_WR);
        break;
      }
      while (!queue_.empty() && batch.size() < kMaxSendBatch) {
        Slice s = queue_.front();
        queue_.pop_front();
        if (t_->host().canceled(s)) {
          canceled.push_back(s);
          continue;
        }
        inflight_.push_back({s, next_id_});
        hdrs[batch.size()] =
            wire::make(s.op == MC_WRITE ? wire::WRITE : wire::READ, next_id_, s.remote, s.len);
        next_id_++;
        batch.push_back(s);
      }
    }
    for (auto &s : canceled) t_->host().complete(s, MC_ERR_CANCELED);
    int n = 0;
    uint64_t payload = 0;
    if (batch.empty()) continue;
    bool sent = true;
    for (size_t i = 0; i < batch.size() && sent; i++) {
      iov[n++] = {&hdrs[i], sizeof(wire::Header)};
      if (batch[i].op == MC_WRITE) {
        if (gpu::is_device_memory(batch[i].local)) {  // what is gathered goes first, then staged
          sent = writev_all(fd_.get(), iov.data(), n) && send_device(fd_.get(), batch[i].local, batch[i].len);
          n = 0;
        } else {
          iov[n++] = {batch[i].local, batch[i].len};
        }
        payload += batch[i].len;
      }
    }
    if (!sent || (n > 0 && !writev_all(fd_.get(), iov.data(), n))) {
      int e = errno;
      fail(io_status(e), "send to " + addr_.str() + ": " + io_text(e));
      break;
    }
    t_->bytes_sent += payload;
    last_progress_.store(now_ms());
  }
  std::lock_guard<std::mutex> lk(mu_);
  sender_done_ = true;
  cv_.notify_all();
}

void TcpConn::run_receiver() {
  BufferedReader rd;
  rd.attach(fd_.get());
  bool need_ok = !t_->token().empty();  // with a token, the server's verdict (AUTH_OK) comes first
  for (;;) {
    wire::Header h;
    if (!rd.read(&h, sizeof h)) {
      int e = errno;
      fail(io_status(e), "receive from " + addr_.str() + ": " + io_text(e));
      break;
    }
    last_progress_.store(now_ms());
    if (h.magic != wire::kMagic || h.version != wire::kVersion) {
      fail(MC_ERR_TRANSPORT, "peer " + addr_.str() + " sent a bad header (wrong magic or version)");
      break;
    }
    if (need_ok && h.type != wire::ERROR) {
      need_ok = false;
      if (h.type == wire::AUTH_OK && h.len == 0) continue;
      fail(MC_ERR_TRANSPORT, "peer " + addr_.str() + " did not confirm the auth_token handshake");
      break;
    }
    Inflight f{};  // id 0 never matches: a reply with nothing in flight is a protocol error
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!inflight_.empty()) f = inflight_.front();
    }
    if (h.type == wire::ERROR) {
      std::string msg(std::min<uint64_t>(h.len, 4096), '\0');
      mc_status_t est =
          (h.status == MC_ERR_PEER_DOWN || h.status == MC_ERR_DENIED || h.status == MC_ERR_OUT_OF_RANGE)
              ? mc_status_t(h.status)
              : MC_ERR_TRANSPORT;
      if (est == MC_ERR_DENIED && h.len <= 4096 && rd.read(msg.data(), msg.size())) {
        MC_LOGW("tcp: peer " << addr_.str() << " denied access: " << msg);
        fail(est, "peer " + addr_.str() + " denied access: " + msg);
      } else if (h.len <= 4096 && rd.read(msg.data(), msg.size()))
        fail(est, "peer " + addr_.str() + " refused: " + msg);
      else
        fail(est, "peer " + addr_.str() + " sent an error");
      break;
    }
    if (f.id == 0 || h.id != f.id || (h.type != wire::WRITE_ACK && h.type != wire::READ_DATA) ||
        (h.type == wire::WRITE_ACK) != (f.s.op == MC_WRITE)) {
      fail(MC_ERR_TRANSPORT, "peer " + addr_.str() + " sent an unexpected reply");
      break;
    }
    if (!confirmed_.load(std::memory_order_relaxed)) {  // the peer ended what our BIND named
      confirmed_.store(true, std::memory_order_relaxed);
      if (!carried_.empty()) fences_->confirmed(carried_);
    }
    mc_status_t st = MC_OK;
    if (h.status != MC_OK) {
      // The target's access and range checks are reported as such; other refusals are
      // transport errors.
      st = (h.status == MC_ERR_DENIED || h.status == MC_ERR_OUT_OF_RANGE) ? mc_status_t(h.status)
                                                                          : MC_ERR_TRANSPORT;
      MC_LOGI("tcp: peer " << addr_.str() << " refused a request at 0x" << std::hex << f.s.remote << std::dec
                           << " (" << mc_status_str(h.status) << ")");
    }
    if (h.type == wire::READ_DATA && h.status == MC_OK) {
      if (h.len != f.s.len) {
        fail(MC_ERR_TRANSPORT, "peer " + addr_.str() + " returned a wrong READ length");
        break;
      }
      bool ok = true;
      if (t_->host().canceled(f.s)) {
        ok = rd.skip(h.len);
        st = MC_ERR_CANCELED;
      } else {
        char *dst = static_cast<char *>(f.s.local);
        bool staged = gpu::is_device_memory(dst);
        if (staged) ok = recv_device(rd, dst, h.len);
        for (uint64_t off = 0; ok && !staged && off < h.len; off += kProgressChunk) {
          uint64_t n = std::min<uint64_t>(kProgressChunk, h.len - off);
          ok = rd.read(dst + off, n);
          last_progress_.store(now_ms());
        }
      }
      if (!ok) {
        int e = errno;
        fail(io_status(e), "receive from " + addr_.str() + ": " + io_text(e));
        break;
      }
      t_->bytes_received += h.len;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      inflight_.pop_front();
    }
    if (st == MC_OK)
      t_->slices_ok++;
    else
      t_->slices_failed++;
    t_->host().complete(f.s, st);
  }
  fail_all();
}

// A connection opened before the latest breakage is retired (it finishes its work) and
// replaced by one whose BIND fences the broken ones.
std::shared_ptr<TcpConn> TcpPeer::conn(size_t i) {
  std::lock_guard<std::mutex> lk(mu);
  auto &c = conns[i];
  if (!c || c->broken() || c->stale()) {
    if (c) c->retire();
    c = std::make_shared<TcpConn>(t_, addr, incarnation, fences);
    c->start();
  }
  return c;
}

bool TcpConn::send_bind() {
  wire::Header h = wire::make(wire::BIND, t_->nonce(), seq_, carried_.size() * sizeof(uint64_t));
  iovec iov[2] = {{&h, sizeof h}, {carried_.data(), carried_.size() * sizeof(uint64_t)}};
  if (!carried_.empty()) t_->fences_sent++;
  return writev_all(fd_.get(), iov, carried_.empty() ? 1 : 2);
}

// ------------------------------------------------------------------------------ transport

Status TcpTransport::start() {
  target_->serve_data([this](Fd fd, std::string readahead) { adopt(std::move(fd), std::move(readahead)); });
  reaper_ = std::thread([this] { reaper_loop(); });
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

void TcpTransport::track(const std::shared_ptr<TcpConn> &c) {
  std::lock_guard<std::mutex> lk(conns_mu_);
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (it->expired())
      it = conns_.erase(it);
    else
      ++it;
  }
  conns_.push_back(c);
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
        if (ok) bytes_received += h.len;
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
    bytes_sent += h.len;
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

void TcpTransport::reaper_loop() {
  std::unique_lock<std::mutex> lk(reaper_mu_);
  while (!stopping_.load()) {
    reaper_cv_.wait_for(lk, std::chrono::milliseconds(50));
    std::vector<std::shared_ptr<TcpConn>> live;
    {
      std::lock_guard<std::mutex> cl(conns_mu_);
      for (auto &w : conns_)
        if (auto c = w.lock()) live.push_back(std::move(c));
    }
    uint64_t now = now_ms();
    for (auto &c : live) c->check_progress(now, opts_.timeout_ms);
  }
}

void TcpTransport::shutdown() {
  if (stopping_.exchange(true)) {
    // Already stopping (or stopped): just wait for the threads.
  } else {
    target_->serve_data(nullptr);  // no connection is handed over any more
    {
      std::lock_guard<std::mutex> lk(reaper_mu_);
      reaper_cv_.notify_all();
    }
    if (reaper_.joinable()) reaper_.join();
  }
  // Keep breaking connections until every thread is gone: a submit racing with shutdown may
  // still create one.
  for (;;) {
    std::vector<std::shared_ptr<TcpConn>> live;
    {
      std::lock_guard<std::mutex> lk(conns_mu_);
      for (auto &w : conns_)
        if (auto c = w.lock()) live.push_back(std::move(c));
      for (int fd : served_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto &c : live) c->fail(MC_ERR_PEER_DOWN, "engine is shutting down");
    live.clear();
    std::unique_lock<std::mutex> lk(threads_mu_);
    if (threads_cv_.wait_for(lk, std::chrono::milliseconds(20), [&] { return threads_ == 0; })) break;
  }
}

std::string TcpTransport::stats_json() {
  JsonObject o;
  o.num("bytes_sent", bytes_sent.load());
  o.num("bytes_received", bytes_received.load());
  o.num("slices_completed", slices_ok.load());
  o.num("slices_failed", slices_failed.load());
  o.num("connections_opened", conns_opened.load());
  o.num("connections_failed", conns_failed.load());
  o.num("served_requests", served_requests.load());
  o.num("served_refused", served_refused.load());
  o.num("fences_sent", fences_sent.load());
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
