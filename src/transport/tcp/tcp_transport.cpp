#include "transport/tcp/tcp_transport.h"

#include <algorithm>
#include <atomic>
#include <list>
#include <mutex>
#include <random>
#include <vector>

#include "proto/auth.h"
#include "transport/tcp/client_conn.h"
#include "transport/tcp/fences.h"
#include "transport/tcp/io_loop.h"
#include "transport/tcp/served_binds.h"
#include "transport/tcp/served_conn.h"
#include "util/json_writer.h"
#include "util/log.h"
#include "proto/wire.h"

namespace mc {
namespace {

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
  // Host and GPU memory alike: GPU memory is staged on the loops.
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

  // A new client connection on the next loop (round robin), connecting.
  std::shared_ptr<tcp::ClientConn> open_conn(const HostPort &addr, uint64_t incarnation,
                                             std::shared_ptr<tcp::Fences> fences,
                                             std::shared_ptr<std::atomic<uint64_t>> heard);

  tcp::Counters ctr_;

 private:
  // A data connection handed over by the engine's listener: served on the next loop.
  void adopt(Fd fd, std::string readahead);

  TcpOptions opts_;
  Host *target_;
  std::atomic<bool> stopping_{false};
  tcp::ServedBinds binds_;  // declared before loops_: outlives every served connection
  tcp::ServedEnv served_env_;
  // conns_mu_ guards conns_ (every client connection, for shutdown).
  std::mutex conns_mu_;
  std::list<std::weak_ptr<tcp::ClientConn>> conns_;
  // The event loops serving every connection, client and served; fixed in number (tcp_io_threads).
  std::vector<std::unique_ptr<tcp::IoLoop>> loops_;
  std::atomic<uint32_t> next_loop_{0};
  tcp::ClientEnv env_;
  uint64_t nonce_ = 1;
  std::atomic<uint64_t> next_seq_{1};
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

// ------------------------------------------------------------------------------ transport

Status TcpTransport::start() {
  env_.host = target_;
  env_.counters = &ctr_;
  env_.timeout_ms = opts_.timeout_ms;
  env_.token = opts_.auth_token;
  env_.nonce = nonce_;
  served_env_.host = target_;
  served_env_.counters = &ctr_;
  served_env_.binds = &binds_;
  served_env_.timeout_ms = opts_.timeout_ms;
  for (uint32_t i = 0; i < std::max<uint32_t>(1, opts_.io_threads); i++) {
    loops_.push_back(std::make_unique<tcp::IoLoop>());
    Status st = loops_.back()->start("tcp-io-" + std::to_string(i));
    if (!st.ok()) return st;
  }
  target_->serve_data([this](Fd fd, std::string readahead) { adopt(std::move(fd), std::move(readahead)); });
  return Status::Ok();
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
  tcp::IoLoop *loop = loops_[next_loop_.fetch_add(1) % loops_.size()].get();
  if (!tcp::ServedConn::adopt(&served_env_, loop, std::move(fd), std::move(readahead)))
    MC_LOGI("tcp: refused a data connection: the transport is shutting down");
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
}

std::string TcpTransport::stats_json() {
  JsonObject o;
  o.num("bytes_sent", ctr_.bytes_sent.load());
  o.num("bytes_received", ctr_.bytes_received.load());
  o.num("slices_completed", ctr_.slices_ok.load());
  o.num("slices_failed", ctr_.slices_failed.load());
  o.num("connections_opened", ctr_.conns_opened.load());
  o.num("connections_failed", ctr_.conns_failed.load());
  o.num("served_requests", served_env_.requests.load());
  o.num("served_refused", served_env_.refused.load());
  o.num("fences_sent", ctr_.fences_sent.load());
  o.num("served_fenced", binds_.fenced_count.load());
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
