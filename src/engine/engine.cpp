// The engine's life: start (transports from the registry, metadata, health), readiness and
// shutdown.
#include "engine/engine.h"

#include <unistd.h>
#include <algorithm>
#include <random>

#include "control/listener.h"
#include "control/pool.h"
#include "metrics/http_server.h"
#include "transport/registry.h"
#include "util/log.h"
#include "util/net.h"

namespace mc {

Status EngineCore::create(const EngineOptions &opts, std::shared_ptr<EngineCore> *out) {
  std::shared_ptr<EngineCore> e(new EngineCore(opts));
  // log_level is process-wide: start() logs at it, and a failed create puts the old one back
  // (mc.h: a failed mc_engine_create changes no process-wide state).
  int old_level = log_level();
  Status st = e->start();
  if (!st.ok()) {
    e->shutdown();
    log_set_level(old_level);
    return st;
  }
  *out = std::move(e);
  return Status::Ok();
}

Status EngineCore::start() {
  if (opts_.log_level >= 0) log_set_level(opts_.log_level);
  start_notify();  // before the listener: a peer's NOTIFY may come as soon as it runs
  std::random_device rd;
  do {
    incarnation_ = (uint64_t(rd()) << 32) ^ rd();
  } while (incarnation_ == 0);

  // The listener comes first: the engine's name derives from its address, and the transports
  // created after it may read that name.
  Status st = start_listener();
  if (!st.ok()) return st;
  std::vector<std::pair<int, Transport *>> data;  // (preference, transport)
  for (auto &e : transport_registry())
    if ((e.role == TransportEntry::Role::kSelf || opts_.transport_allowed(e.name)) &&
        !(st = start_transport(e, &data)).ok())
      return st;
  // Data transports in order of preference, fastest first (the registry says which is which).
  std::stable_sort(data.begin(), data.end(), [](auto &a, auto &b) { return a.first < b.first; });
  for (auto &d : data) data_transports_.push_back(d.second);
  st = make_metadata_store(opts_.metadata, name_, opts_.timeout_ms, opts_.metadata_ttl_ms, opts_.auth_token,
                           &metadata_);
  if (!st.ok()) return st;
  st = metadata_->publish(local_descriptor());
  if (!st.ok()) return st;
  // Two threads probe every open segment however many there are (a probe step is bounded by
  // 250 ms, so one silent peer delays no other for longer than that).
  // A healthy peer costs one batched PING a heartbeat; an unanswered one goes back to a probe
  // step after 250 ms, as a step's own attempt would.
  HealthMonitor::Batch batch{
      opts_.auth_token, opts_.heartbeat_ms, 250,
      [this](const std::shared_ptr<Peer> &p, HostPort *a, uint64_t *i) { return probe_target(p, a, i); }};
  health_ = std::make_unique<HealthMonitor>(
      kHealthThreads,
      [this](const std::shared_ptr<Peer> &p, HealthMonitor::Step *s) { return probe_peer(p, s); }, &batch);
  st = start_metrics();
  if (!st.ok()) return st;
  MC_LOGI("engine " << name_ << " started, incarnation " << std::hex << incarnation_);
  set_ready();
  return Status::Ok();
}

// Creates one registered transport and files it: as the self transport, or as a data transport.
Status EngineCore::start_transport(const TransportEntry &e, std::vector<std::pair<int, Transport *>> *data) {
  Status st;
  auto t = e.create(*this, &st);
  if (!st.ok()) return st;
  if (!t) return Status::Ok();  // not available here; the factory said why
  if (e.role == TransportEntry::Role::kSelf)
    self_transport_ = t.get();
  else if (opts_.transport_allowed(e.name))
    data->push_back({e.preference, t.get()});
  transports_.push_back(std::move(t));
  return Status::Ok();
}

Status EngineCore::start_listener() {
  control::ListenerOptions lo;
  Status st = parse_host_port(opts_.listen, &lo.listen);
  if (!st.ok()) return st;
  lo.timeout_ms = opts_.timeout_ms;
  lo.auth_token = opts_.auth_token;
  HostPort bound;
  st = control::Listener::start(lo, this, &listener_, &bound);
  if (!st.ok()) return st;
  return name_from_listener(bound);
}

Status EngineCore::start_metrics() {
  if (opts_.metrics_listen.empty()) return Status::Ok();
  return metrics::HttpServer::start(
      opts_.metrics_listen, [this](const metrics::HttpServer::Counters &c) { return metrics_text(c); },
      &metrics_);
}

void EngineCore::serve_data(std::function<void(Fd fd, std::string readahead)> h) {
  if (listener_) listener_->set_data_handler(std::move(h));
}

// Our name and the address peers dial, from where the listener bound.
Status EngineCore::name_from_listener(const HostPort &bound) {
  std::string host = bound.host == "0.0.0.0" ? "127.0.0.1" : bound.host == "::" ? "::1" : bound.host;
  std::string self = HostPort{host, bound.port, 0}.str();
  bool p2p = opts_.metadata.empty() || opts_.metadata == "p2p";
  if (!opts_.name.empty() && p2p) {
    HostPort np;
    if (!parse_host_port(opts_.name, &np).ok() || np.port != bound.port)
      return Err(MC_ERR_INVALID_ARG, "with metadata=p2p the engine's name is its HOST:PORT (" + self +
                                         "); \"" + opts_.name + "\" does not match");
    self = np.str();
  }
  tcp_addr_ = self;
  // With a metadata server the name is free-form; peers find our address in the descriptor.
  name_ = (!p2p && !opts_.name.empty()) ? opts_.name : self;
  if (bound.host != "127.0.0.1" && bound.host != "::1" && opts_.auth_token.empty())
    MC_LOGW("engine " << name_ << " listens on " << bound.str()
                      << " without an auth_token: any host that reaches this port can read and write "
                         "every registered buffer (set auth_token or MC_AUTH_TOKEN on every engine "
                         "of the cluster, or listen on 127.0.0.1)");
  if (!opts_.auth_token.empty() && opts_.auth_token.size() < 16)
    MC_LOGW("engine " << name_ << ": auth_token has only " << opts_.auth_token.size()
                      << " characters; use 32 or more random ones");
  return Status::Ok();
}

void EngineCore::set_ready() {
  std::lock_guard<std::mutex> lk(ready_mu_);
  ready_ = true;
  ready_cv_.notify_all();
}

bool EngineCore::wait_started() {
  std::unique_lock<std::mutex> lk(ready_mu_);
  ready_cv_.wait_for(lk, std::chrono::milliseconds(opts_.timeout_ms), [&] { return ready_; });
  return ready_ && !stopping_.load();
}

EngineCore::EngineCore(const EngineOptions &o) : opts_(o) {}

EngineCore::~EngineCore() { shutdown(); }

void EngineCore::shutdown() {
  if (stopping_.exchange(true)) return;
  set_ready();       // wakes listener threads waiting in wait_started (they answer "being destroyed")
  metrics_.reset();  // joins its thread: no scrape reads the engine from here on
  // Stop the health probes first (outside every engine lock: a probe takes segs_mu_).
  if (health_) health_->stop();
  stop_notify();  // NOTIFYs not sent yet fail with MC_ERR_PEER_DOWN
  if (metadata_) metadata_->unpublish();
  // The listener first: no request or data connection reaches a transport that stops.
  if (listener_) listener_->shutdown();
  stream_gate_.stop();  // requests still waiting for a caller's stream fail, releasing it
  for (auto &t : transports_) t->shutdown();
  // The control pool is the process's: an engine going away closes every idle connection in it
  // (the others only reconnect once), so none of this engine's sockets outlives it.
  control_pool::clear();
  std::unordered_map<mc_segment_t, std::shared_ptr<Peer>> segs;
  {
    std::unique_lock<ReadMostlyMutex> lk(segs_mu_);
    segs.swap(segs_);
    peers_.clear();
  }
  segs.clear();                    // peers die here, outside the lock
  if (inbox_) inbox_->close_fd();  // mc.h: mc_engine_destroy closes the event fd
}

}  // namespace mc
