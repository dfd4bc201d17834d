// The engine: local buffers, open segments, batches, slicing, transport choice and health.
#pragma once
#include <mc.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "util/config.h"
#include "util/read_mostly_mutex.h"
#include "proto/descriptor.h"
#include "util/spin.h"
#include "util/status.h"
#include "engine/batch.h"
#include "engine/counters.h"
#include "control/server.h"
#include "engine/health.h"
#include "engine/notify_inbox.h"
#include "engine/notify_sender.h"
#include "gpu/stream_gate.h"
#include "metadata/metadata.h"
#include "metrics/http_server.h"
#include "transport/host.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace mc {

struct HostPort;  // util/net.h
namespace control {
class Listener;  // control/listener.h
}

class EngineCore;
class BatchCore;
struct Peer;

struct LocalBuffer {
  uint64_t addr = 0;
  uint64_t length = 0;
  std::string location;
  int memfd = -1;  // mc_buffer_alloc memory: the memfd behind the mapping (owned), else -1
  // Requests of this engine and requests served for peers that use the buffer right now.
  std::atomic<int64_t> in_use{0};
  // Of those, the ones served for peers (Host::pin), which mc_buffer_set_access waits for.
  std::atomic<int64_t> peer_in_use{0};
  // What peers may do (MC_ACCESS_* bits); written with buffers_mu_ held exclusively.
  std::atomic<uint32_t> access{MC_ACCESS_READ | MC_ACCESS_WRITE};
};

// One way to reach a peer: a transport and its per-peer state.
struct Route {
  Transport *transport = nullptr;
  std::shared_ptr<PeerPath> path;
};

// A peer engine as seen from here: its descriptor as last known, the routes to it, its health.
// Shared by every segment handle opened on the same name.
struct Peer : std::enable_shared_from_this<Peer> {
  ~Peer();
  void kick();  // probe now (a transfer to it failed)

  // Lets transport callbacks (PeerPath::on_down) reach the peer only while it lives.
  struct Alive {
    std::mutex mu;
    bool ok = true;
  };
  std::shared_ptr<Alive> alive = std::make_shared<Alive>();

  std::string name;
  bool self = false;
  bool uri = false;  // a segment its transport serves itself (file://): fixed descriptor, no probes
  // mu guards desc and routes. view_mu too, for the fast path (engine/fast_path.cpp), which
  // reads them holding view_mu shared, not mu, and uses a route's path without a count while
  // it holds it: every change of desc or routes holds mu and takes view_mu exclusively.
  std::mutex mu;
  ReadMostlyMutex view_mu{ReadMostlyMutex::Barrier::kWriters};  // changed after a fetch only
  std::shared_ptr<const Descriptor> desc;
  std::vector<Route> routes;  // in preference order
  std::atomic<uint32_t> state{MC_SEGMENT_OK};
  std::atomic<uint64_t> rejoins{0};
  std::atomic<uint64_t> state_changed_ms{0};
  // Set while its requests go over a later route because an earlier one does not carry
  // (engine/failover.cpp): logged once when it begins and once when it ends.
  std::atomic<bool> failed_over{false};
  // Where kick() asks for a probe (empty for the engine's own segment).
  std::weak_ptr<HealthMonitor::Handle> monitor;
  // When the current run of unanswered probes began (0: the last probe was answered). Touched
  // only by the probe step, which the monitor runs on one thread at a time per peer.
  uint64_t silent_since_ms = 0;
};

// The engine serves transports (Host) and its listener (control::Target) with the same methods.
class EngineCore : public Host, public control::Target, public std::enable_shared_from_this<EngineCore> {
 public:
  static Status create(const EngineOptions &opts, std::shared_ptr<EngineCore> *out);
  // How long BatchCore::wait watches before it sleeps (util/spin.h).
  AdaptiveSpin &wait_spin() { return wait_spin_; }
  ~EngineCore() override;
  // Fails everything pending and stops all threads (idempotent).
  void shutdown();

  const std::string &name() const { return name_; }
  uint64_t incarnation() const override { return incarnation_; }
  bool wait_started() override;
  uint32_t timeout_ms() const { return opts_.timeout_ms; }

  struct NewBuffer {
    uint64_t addr;
    uint64_t length;
    const char *location;
    int memfd;
  };
  // The buffer registry (engine/buffers.cpp).
  Status register_buffer(void *addr, size_t len, const char *location, int memfd = -1);
  Status register_buffers(const NewBuffer *bufs, size_t n);
  Status unregister_buffer(void *addr, bool memfd_ok = false);
  Status unregister_buffers(void *const *addrs, size_t n, bool memfd_ok = false);
  // mc_buffer_alloc / mc_buffer_free: host memory backed by a memfd that same-host peers map.
  Status alloc_buffer(size_t len, const char *location, void **out);
  Status free_buffer(void *addr);
  // mc_buffer_set_access.
  Status set_access(void *addr, uint32_t access);

  // Peers and their segments (engine/peers.cpp).
  Status open_segment(const std::string &name, mc_segment_t *out);
  Status close_segment(mc_segment_t seg);
  Status segment_query(mc_segment_t seg, mc_segment_info_t *info);
  Status segment_buffers(mc_segment_t seg, std::vector<BufferDesc> *out);
  void set_segment_callback(void (*fn)(mc_segment_t, uint32_t, uint64_t, void *), void *user);

  // The submit planner (engine/submit.cpp) and the statistics (engine/stats.cpp).
  Status submit(BatchCore &b, const mc_request_t *reqs, size_t n);
  // mc_transfer of one request (engine/fast_path.cpp): a small READ or WRITE over a transport
  // that can copy it on the calling thread ends here, true with *st its status (counted as the
  // normal path counts it); false, nothing done, for anything else: submit it as usual.
  bool transfer_one(const mc_request_t &r, mc_status_t *st);
  // mc_batch_submit_on_stream (engine/stream_submit.cpp).
  Status submit_on_stream(BatchCore &b, const mc_request_t *reqs, size_t n, void *stream);
  std::string stats_json();
  // GET /metrics (engine/metrics.cpp): the same figures as stats_json, in the Prometheus text
  // format, with every transport's counters.
  // c: the metrics server's own counters (the page is built on its thread).
  std::string metrics_text(const metrics::HttpServer::Counters &c);
  // A batch's busy period ended (engine/completion.cpp).
  void batch_done(uint64_t ns, bool ok) { counters_.batch_done(ns, ok); }

  // Notifications (engine/notify_engine.cpp): mc_notify_recv, mc_engine_event_fd, and the
  // sender's wake-up when a batch with waiting NOTIFYs was canceled.
  mc_status_t notify_recv(mc_notification_t *info, void *buf, size_t capacity, std::string *err);
  Status event_fd(int *fd);
  void poke_notifies();

  // Host: completion in engine/completion.cpp, pins in engine/buffers.cpp, the descriptor and
  // control in engine/descriptor.cpp, the rest in engine/engine.cpp.
  void complete(const Slice &s, mc_status_t status) override;
  void complete(const Slice *s, const mc_status_t *st, size_t n) override;
  bool canceled(const Slice &s) const override;
  bool fail_over(const Transport &from, Slice *s, size_t n) override;
  const EngineOptions &options() const override { return opts_; }
  const std::string &engine_name() const override { return name_; }
  void serve_data(std::function<void(Fd fd, std::string readahead)> h) override;
  mc_status_t pin(uint64_t addr, uint64_t len, uint32_t op) override;
  void unpin(uint64_t addr, uint64_t len) override;
  mc_status_t copy_registered(uint64_t addr, uint64_t len, uint32_t op, void *local) override;
  std::string descriptor_json() override;
  std::string descriptor_delta_json(uint64_t incarnation, uint64_t since) override;
  Status control(const std::string &channel, const std::string &request, std::string *reply) override;

 private:
  // Completion (engine/completion.cpp). finish_request: once per request when its last slice
  // was reported. finish_merged: a merged slice that succeeded. finish_whole: n > 1 slices of
  // one batch, each a whole one-slice request, that all succeeded.
  void finish_request(RequestSlot *s, mc_status_t err);
  void finish_merged(const Slice &s);
  void finish_whole(const Slice *s, size_t n);
  template <class SlotAt>
  void finish_together(BatchCore *b, size_t n, SlotAt slot_at);
  // After a request of b ended (last: it was b's last pending one): pokes the NOTIFY sender
  // when b has NOTIFYs waiting, ticks the event fd when b is idle.
  void after_request_done(BatchCore *b, bool last);
  // Ends a NOTIFY request (it holds no pin and no slices).
  void finish_notify(RequestSlot *r, mc_status_t err);
  // engine/notify_engine.cpp: the sender's delivery and the "notify" control channel.
  mc_status_t send_notify(NotifyJob &j);
  Status receive_notify(const std::string &request, std::string *reply);
  void start_notify();
  void stop_notify();

  // The fast path's steps (engine/fast_path.cpp).
  struct FastRoute {
    Transport *transport = nullptr;
    PeerPath *path = nullptr;  // kept by the peer's route while its view_mu is held
  };
  const LocalBuffer *find_one_locked(uint64_t addr, uint64_t len) const;
  bool fast_route(const Peer &p, const mc_request_t &r, const LocalBuffer &lb, FastRoute *out);
  void count_one(ThreadIx me, Peer *p, const Transport &t, const mc_request_t &r, mc_status_t st,
                 uint64_t t0);

  friend class SubmitPlanner;  // engine/submit.cpp: reads segments, pins, slice_size
  friend class StreamStart;    // engine/stream_submit.cpp
  explicit EngineCore(const EngineOptions &o);
  Status start();
  Status start_transport(const TransportEntry &e, std::vector<std::pair<int, Transport *>> *data);
  Status start_listener();
  Status start_metrics();
  // One reading of the engine's figures (engine/stats.cpp), rendered by stats_json and
  // metrics_text.
  Figures figures();
  std::string health_json();  // the health monitor's counters (stats "health", mc_health_*)
  // The counters slot of a transport: its index in transports_ (fixed after start()).
  uint8_t slot_of(const Transport *t) const {
    for (size_t i = 0; i < transports_.size() && i < EngineCounters::kNotifySlot; i++)
      if (transports_[i].get() == t) return static_cast<uint8_t>(i);
    return EngineCounters::kNotifySlot;
  }
  Status name_from_listener(const HostPort &bound);
  std::shared_ptr<Peer> find_segment(mc_segment_t seg);
  Transport *scheme_transport(const std::string &name, Status *st);
  Status open_uri_segment(Transport *t, Peer &p);
  // Fetches the peer's descriptor and (re)builds its routes. A new incarnation drops every
  // old route (failing what is in flight on it) and counts a rejoin.
  Status refresh_peer(Peer &p, bool *rejoined = nullptr);
  Status fetch_peer(Peer &p, Descriptor *d);
  Status make_routes(Peer &p, const Descriptor &d, std::vector<Route> *routes);
  std::shared_ptr<PeerPath> connect_path(Peer &p, Transport &t, const Descriptor &d);
  void publish_peer(Peer &p, const std::shared_ptr<const Descriptor> &nd, std::vector<Route> *routes,
                    std::vector<Route> *dropped, bool *rejoined);
  // One health step of a peer (HealthMonitor::Probe): one ping attempt, the state changes it
  // implies, a refresh when the peer answers with another incarnation. Returns the delay until
  // the next step.
  uint64_t probe_peer(const std::shared_ptr<Peer> &p, HealthMonitor::Step *step);
  // Where the batched probes reach p and as whom (HealthMonitor::Target): only while it is OK.
  bool probe_target(const std::shared_ptr<Peer> &p, HostPort *addr, uint64_t *incarnation);
  void set_state(Peer &p, uint32_t state, const std::string &why);
  void revive_routes(Peer &p);
  // OK when the peer's descriptor names the incarnation that answered its ping, else why not.
  Status check_incarnation(Peer &p, uint64_t answered);
  // Moves p.silent_since_ms past the last bytes any of its routes received from the peer.
  void count_heard(Peer &p);
  void notify(Peer &p);
  // Failover (engine/failover.cpp): the route a request between these locations takes among
  // routes (the first that accepts it and carries, else the first that accepts; -1: none),
  // noting on p when that is not the first one.
  int pick_route(Peer &p, const std::vector<Route> &routes, const std::string &lloc, const BufferDesc &rb);
  void note_failover(Peer &p, bool on, const char *from, const char *to);
  static bool later_accepts(const std::vector<Route> &routes, size_t k, const std::string &lloc,
                            const BufferDesc &rb);
  std::string location_at(uint64_t addr);
  Descriptor local_descriptor();
  Status publish();
  void note_change(uint64_t addr);
  Status resolve_location(uint64_t addr, const char *location, std::string *out);
  Status check_new_buffers(const NewBuffer *bufs, size_t n, std::vector<LocalRegion> *regions);
  Status reserve_ranges(const std::vector<LocalRegion> &regions);
  void release_ranges(const std::vector<LocalRegion> &regions);
  // Pins the local buffers covering a range; caller holds buffers_mu_ (shared).
  const LocalBuffer *pin_locked(uint64_t addr, uint64_t len);
  // Whether [addr, addr+len) lies in registered buffers end to end, each allowing `need` (an
  // MC_ACCESS_* bit): MC_OK, MC_ERR_OUT_OF_RANGE or MC_ERR_DENIED; caller holds buffers_mu_.
  // *first (when given): the buffer holding addr, once it is known to exist.
  mc_status_t check_run_locked(uint64_t addr, uint64_t len, uint32_t need,
                               LocalBuffer **first = nullptr) const;
  void unpin_locked(uint64_t addr, uint64_t len);

  EngineOptions opts_;
  std::string name_;
  std::string tcp_addr_;  // HOST:PORT of our listener, as peers dial it
  uint64_t incarnation_ = 0;
  std::atomic<bool> stopping_{false};
  // ready_mu_ guards ready_: set when start() returned or shutdown() began, so that a peer's
  // request served by the listener during start() sees name_, data_transports_ and metadata_
  // only once they are final (wait_started).
  std::mutex ready_mu_;
  std::condition_variable ready_cv_;
  bool ready_ = false;
  void set_ready();
  std::unique_ptr<MetadataStore> metadata_;
  static constexpr size_t kHealthThreads = 2;
  std::unique_ptr<HealthMonitor> health_;  // probes every open segment's peer
  // The engine's one port: control channel, and data connections for the tcp transport.
  std::unique_ptr<control::Listener> listener_;
  // Every transport created, in creation order; fixed after start().
  std::vector<std::unique_ptr<Transport>> transports_;
  Transport *self_transport_ = nullptr;  // serves the engine's own segment in process
  // The ones that may carry data to other engines, in order of preference (fastest first).
  std::vector<Transport *> data_transports_;

  // buffers_mu_ guards buffers_ and desc_version_; pins take it shared, (un)register exclusive.
  ReadMostlyMutex buffers_mu_;
  std::map<uint64_t, std::unique_ptr<LocalBuffer>> buffers_;
  uint64_t desc_version_ = 1;
  // (version, buffer address) of recent changes, oldest first; also guarded by buffers_mu_.
  static constexpr size_t kChangeLog = 1 << 16;
  std::deque<std::pair<uint64_t, uint64_t>> changes_;
  uint64_t log_floor_ = 1;  // deltas are served only to peers that know at least this version
  std::atomic<uint64_t> deltas_served_{0};
  // reserve_mu_ guards reserved_: ranges being registered with the transports (addr -> length),
  // outside buffers_mu_. Taken after buffers_mu_ (shared) when both are held.
  std::mutex reserve_mu_;
  std::map<uint64_t, uint64_t> reserved_;
  std::mutex publish_mu_;  // serializes metadata_->publish calls

  // desc_mu_ guards the cached descriptor text.
  std::mutex desc_mu_;
  std::string desc_cache_;
  uint64_t desc_cache_version_ = 0;

  // segs_mu_ guards segs_, peers_ and next_seg_.
  ReadMostlyMutex segs_mu_{ReadMostlyMutex::Barrier::kWriters};  // changed by open and close only
  std::unordered_map<mc_segment_t, std::shared_ptr<Peer>> segs_;
  std::map<std::string, std::weak_ptr<Peer>> peers_;
  mc_segment_t next_seg_ = 1;

  // cb_mu_ guards cb_ and cb_user_ (never held while the callback runs).
  std::mutex cb_mu_;
  void (*cb_)(mc_segment_t, uint32_t, uint64_t, void *) = nullptr;
  void *cb_user_ = nullptr;

  std::unique_ptr<NotifyInbox> inbox_;
  std::unique_ptr<NotifySender> notify_sender_;
  // mc_batch_submit_on_stream's waits on callers' streams; stopped before the transports.
  cuda::StreamGate stream_gate_;

  // Requests by transport, direction and outcome, failures by status, batch latency, rejoins.
  EngineCounters counters_;
  // GET /metrics on metrics_listen (null when unset); stopped first at shutdown.
  std::unique_ptr<metrics::HttpServer> metrics_;
  AdaptiveSpin wait_spin_{static_cast<uint32_t>(BatchCore::kWaitSpin.count())};  // BatchCore::wait
  // Failover (engine/failover.cpp): requests routed past a transport that did not carry, and
  // slices a transport handed back to go over another one.
  std::atomic<uint64_t> failover_requests_{0}, failover_slices_{0};
};

}  // namespace mc
