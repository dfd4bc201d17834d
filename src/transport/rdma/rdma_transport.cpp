// The RDMA transport. Pieces, from the bottom:
//  - Nic: one opened device (nic.h), its port, one CQ and one poller thread that plays the
//    completion side: it polls, ends slices, retries failed ones and posts queued work.
//  - Endpoint: the connection to one peer over one (local NIC, peer NIC) pair, with
//    rdma_qps_per_endpoint RC QPs; it queues slices while it connects or its send queues are
//    full. Endpoints are cached per peer, capped at rdma_max_endpoints, least recently used
//    evicted (an evicted endpoint drains its work, then its QPs are destroyed).
//  - PeerState: one incarnation of one peer name: its NICs and rkeys (from its descriptor),
//    its endpoints. A new incarnation replaces it: the old one's endpoints are torn down (QPs
//    to ERR, outstanding work FAILED through the flushes, QPs destroyed) and new ones are made
//    on the next use. Nothing else is rebuilt.
//
// Connection setup (over the engine's control channel, channel "rdma", JSON both ways; the
// messages and the descriptor blobs are decoded only through src/proto/rdma_msg.h):
//   initiator -> target {"op":"connect","from":NAME,"inc":INC,"to_inc":TARGET_INC,
//                        "lnic":INITIATOR_NIC,"rnic":TARGET_NIC,"lid":L,"gid":HEX,"mtu":M,
//                        "qps":[{"qpn":Q,"psn":P},...]}
//   target -> initiator {"lid":L,"gid":HEX,"mtu":PATH_MTU,"qps":[{"qpn":Q,"psn":P},...]}
// The target refuses a request meant for another incarnation of itself (MC_ERR_PEER_DOWN:
// nothing is ever connected to a stale peer), a NIC that is down (MC_ERR_UNSUPPORTED), and
// the losing half of a simultaneous open (MC_ERR_BUSY): when both engines connect the same
// pair at once, the request of the engine whose name sorts first wins, and the other one
// waits for that connection to arrive instead of building its own, so one connection results.
//
// A second request on the same channel, {"op":"keys","from":NAME,"to_inc":INC,"addr":A}, answers
// the current rkeys of the buffer holding A: a WR refused with a remote access error (the target
// changed that buffer's access, and rereg gave it new keys) refreshes them once and is posted
// again; refused again, it fails with MC_ERR_DENIED and nothing written.
//
// QP attributes (RESET -> INIT -> RTR -> RTS), and why:
//   INIT: port rdma_port (default: the device's first ACTIVE port), pkey index 0, access
//   REMOTE_READ|REMOTE_WRITE|LOCAL_WRITE: the QP itself
//         allows both directions; what a peer may touch is decided per buffer by the MR's
//         rights (mc_buffer_set_access changes them with rereg), which the NIC enforces.
//   RTR:  path MTU = min(local port's active MTU, peer port's active MTU, rdma_mtu of both
//         engines) - the target takes the min of the initiator's proposal and its own limits
//         and answers the result, so both ends use one value. Addressing by GID (a GRH) on
//         RoCE, by LID on InfiniBand; the local GID is rdma_gid_index when set, else the first
//         RoCE v2 GID with an IPv4-mapped address, then any RoCE v2 GID, then index 0.
//         PSN: rq_psn = the peer's sq_psn from the exchange (a responder drops packets out of
//         sequence). max_dest_rd_atomic 16 (outstanding READs we answer), clamped to the
//         device's max_qp_rd_atom (above it modify_qp fails), min_rnr_timer 12 (unused: no
//         receives are ever posted).
//   RTS:  retry_cnt 7 and a local ACK timeout exponent t chosen so that (retry_cnt + 1) *
//         4.096 us * 2^t stays under half the engine's timeout_ms: a dead peer or NIC
//         completes our work with a retry-exceeded error well before the engine's timeout
//         (hardware may stretch the timer up to 4x; half leaves room for that and the retry).
//         rnr_retry 0 (RNR cannot happen without SENDs), max_rd_atomic 16 clamped to the
//         device's max_qp_init_rd_atom, random 24-bit PSNs.
//   Deadline: ACK timeouts cover a peer that stops answering, not a NIC that never completes;
//         so every posted WR is also bounded by timeout_ms (check_deadlines): past it the
//         endpoint's QPs go to ERR and its work fails with MC_ERR_TIMEOUT. A CQ error event
//         (overrun) takes the NIC out of use for good; posts never exceed the CQ's depth.
// GPU memory ("cuda:N" buffers): registered with every NIC through dma-buf: the CUDA driver
// exports the buffer's page-aligned span as a dma-buf fd (cuMemGetHandleForAddressRange) and
// each NIC registers [offset, offset+length) of it at iova = the buffer's device address
// (ibv_reg_dmabuf_mr), so work requests address GPU memory exactly as host memory and the NIC
// moves it with no host bounce. Where that cannot work (libibverbs without ibv_reg_dmabuf_mr,
// a driver or kernel without dma-buf, the NIC refusing it) the buffer still registers, the GPU
// is marked as not reachable by RDMA here (logged once), and its transfers take another
// transport (tcp through staging). Remote GPU buffers are used when their descriptor has rkeys.
// Untested on real NICs (none here): the simulated NIC checks the same arguments and moves the
// bytes through the CUDA driver (sim_nic.cpp).
//
// Work requests are all signaled, one SGE each; completions of a QP come in order, so each QP
// keeps its posted slices in a FIFO and a lost or shutting-down QP can still fail them all.
#include "transport/rdma/rdma_transport.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <functional>

#include <nlohmann/json.hpp>

#include "control/client.h"
#include "gpu/cuda_loader.h"
#include "util/log.h"
#include "util/net.h"
#include "proto/rdma_msg.h"
#include "util/hex.h"
#include "transport/rdma/nic.h"
#include "transport/rdma/nic_topo.h"

namespace mc {
namespace {

using json = nlohmann::json;
using namespace rdma;

constexpr uint32_t kSqDepth = 256;  // WRs per QP
constexpr uint32_t kAttempts = 4;   // a slice is posted at most this many times
constexpr int kPollBatch = 64;
constexpr size_t kPostBatch = 32;
constexpr uint64_t kNicBackoffMs = 500;  // a peer NIC that refused setup is skipped this long
constexpr uint32_t kMaxWr = 1u << 30;
constexpr uint64_t kParallelRegBytes = 4ull << 20;  // a buffer this large registers on the NICs at once

class RdmaTransport;
struct Endpoint;
struct PeerState;
struct QpCtx;

// One slice, or one piece of a slice cut at a buffer boundary (its own keys).
struct Op {
  Slice s;
  Op *parent = nullptr;                // a piece's slice
  std::atomic<uint32_t> pieces{0};     // a parent's pieces still running
  std::atomic<int32_t> status{MC_OK};  // a parent's first failure
  uint32_t attempts = 0;
  bool refreshed = false;  // its rkey was refused once and refreshed from the target
  uint64_t posted_ms = 0;  // when it was last posted (the deadline's start)
  uint32_t lkey = 0, rkey = 0;
  std::shared_ptr<PeerState> peer;  // where a retry goes
  QpCtx *qp = nullptr;              // where it is posted
  const Slice &root() const { return parent ? parent->s : s; }
};

struct QpCtx {
  std::unique_ptr<Qp> qp;
  Endpoint *ep = nullptr;
  uint32_t psn = 0;
  std::atomic<uint32_t> posted{0};  // in the FIFO
  std::mutex mu;                    // guards fifo
  std::deque<Op *> fifo;            // posted, in posting order
};

struct Endpoint : std::enable_shared_from_this<Endpoint> {
  enum St { kConnecting, kReady, kDead };
  std::weak_ptr<PeerState> peer;
  std::string peer_name;
  uint64_t peer_inc = 0;
  uint32_t lnic = 0;
  std::string rnic;
  // mu guards everything below.
  std::mutex mu;
  std::condition_variable cv;
  St st = kConnecting;
  bool draining = false;  // evicted: finishes what it holds, takes nothing new
  bool reaped = false;
  std::deque<Op *> backlog;
  std::vector<std::unique_ptr<QpCtx>> qps;
  uint32_t rr = 0;
  int64_t inflight = 0;
  mc_status_t fail_status = MC_OK;
  std::string fail_why;
  bool retry = true;  // whether work failing here is tried again elsewhere
  // Retired for no fault of the work it held: a WR refused with a remote access error (a stale
  // rkey: the target changed a buffer's rights; the QP went to ERR for that op alone), or
  // replaced by a newer connection of the same pair. What it held is posted again without
  // counting an attempt (each refusal ends its own op within two tries, and a replacement is
  // another connection that works, so the reposts are bounded).
  bool free_retry = false;
  // Guarded by the transport's lru_mu_.
  bool in_lru = false;
  std::list<Endpoint *>::iterator lru_it;
};

struct RemoteNic {
  std::string name;
  uint16_t lid = 0;
  uint8_t gid[16] = {};
  uint32_t mtu = 0;
};
struct RemoteBuf {
  uint64_t addr = 0, len = 0;
  std::vector<uint32_t> rkeys;  // per remote NIC
};
struct RemoteInfo {
  std::string fabric;
  std::vector<RemoteNic> nics;
  std::vector<RemoteBuf> bufs;  // sorted by addr
  const RemoteBuf *find(uint64_t a) const {
    auto it = std::upper_bound(bufs.begin(), bufs.end(), a,
                               [](uint64_t x, const RemoteBuf &b) { return x < b.addr; });
    if (it == bufs.begin()) return nullptr;
    --it;
    return a - it->addr < it->len ? &*it : nullptr;
  }
};

struct PeerState {
  std::string name;
  uint64_t inc = 0;
  // mu guards everything below.
  std::mutex mu;
  HostPort addr;
  bool has_addr = false;
  std::shared_ptr<const RemoteInfo> info;
  std::map<std::pair<uint32_t, std::string>, std::shared_ptr<Endpoint>> eps;
  std::map<std::string, uint64_t> rnic_down_until;
  bool retired = false;
  mc_status_t retire_status = MC_ERR_PEER_DOWN;
  std::string retire_why;
  int paths = 0;
  uint32_t rr = 0;
};

class RdmaPeer : public PeerPath {
 public:
  RdmaPeer(RdmaTransport *t, std::shared_ptr<PeerState> ps) : t_(t), ps(std::move(ps)) {}
  ~RdmaPeer() override;
  RdmaTransport *t_;
  std::shared_ptr<PeerState> ps;
};

struct Nic {
  uint32_t idx = 0;
  std::unique_ptr<Device> dev;
  PortInfo port;
  std::unique_ptr<Cq> cq;
  std::thread poller;
  std::atomic<bool> up{true};
  std::atomic<bool> cq_lost{false};  // the CQ overran (CQ error event): never used again
  std::atomic<int64_t> outstanding{0};
  std::atomic<uint64_t> bytes{0};  // posted on this NIC (for the stats: which NICs carry what)
  int64_t cq_cap = 0;
  Place place;                                     // where it sits (nic_topo.h)
  std::mutex mu;                                   // guards starved
  std::vector<std::shared_ptr<Endpoint>> starved;  // waiting for room in the CQ
};

// The exporter's fd of a GPU buffer's dma-buf, kept while its MRs live.
struct Dmabuf {
  int fd = -1;
  explicit Dmabuf(int f) : fd(f) {}
  Dmabuf(const Dmabuf &) = delete;
  Dmabuf &operator=(const Dmabuf &) = delete;
  ~Dmabuf() {
    if (fd < 0) return;
    cuda::dmabuf_forget(fd);
    ::close(fd);
  }
};

// One memory region of a registered buffer (a buffer longer than the NICs' largest region is
// several, each in mrs_ under its own start).
struct LocalMr {
  uint64_t len = 0;
  uint64_t near = 0;                     // the NICs its transfers prefer (bit per NIC; 0: any)
  std::vector<std::unique_ptr<Mr>> mrs;  // per NIC
  std::shared_ptr<Dmabuf> dmabuf;        // GPU memory: the dma-buf behind mrs (shared by regions)
  ~LocalMr() { mrs.clear(); }            // the MRs go before the dma-buf's fd
  LocalMr() = default;
  LocalMr(LocalMr &&) = default;
  LocalMr &operator=(LocalMr &&) = default;
};

// A local NIC and the peer NIC it sends to (indices into nics_ and the peer's NICs).
struct NicPair {
  uint32_t l, r;
};

// The QP destinations of a connect message: one address, a QPN and PSN per QP.
std::vector<QpDest> dests_of(const proto::RdmaAddr &a, const std::vector<proto::RdmaQpInfo> &qps) {
  std::vector<QpDest> v;
  for (auto &q : qps) {
    QpDest d;
    d.qpn = q.qpn;
    d.psn = q.psn;
    d.lid = a.lid;
    std::memcpy(d.gid, a.gid, 16);
    v.push_back(d);
  }
  return v;
}

// Who sent a connect request, for the message when it does not decode: its "from" when that
// much is readable, else a placeholder.
std::string peek_from(const std::string &request) {
  json j = json::parse(request, nullptr, false);
  if (j.is_object()) {
    auto it = j.find("from");
    if (it != j.end() && it->is_string() && it->get_ref<const std::string &>().size() <= 256)
      return it->get<std::string>();
  }
  return "(unnamed: the request does not say)";
}

uint32_t mr_access(uint32_t mc_access) {
  return kLocalWrite | ((mc_access & MC_ACCESS_READ) ? kRemoteRead : 0u) |
         ((mc_access & MC_ACCESS_WRITE) ? kRemoteWrite : 0u);
}

class RdmaTransport : public Transport {
 public:
  RdmaTransport(const RdmaOptions &o, Host *target, std::string name)
      : opts_(o), target_(target), name_(std::move(name)) {}
  ~RdmaTransport() override { shutdown(); }
  Status start(std::vector<std::unique_ptr<Device>> devs);

  const char *name() const override { return "rdma"; }
  bool reachable(const Descriptor &d) override;
  void describe(Descriptor &d) override;
  Status on_register(const LocalRegion &r) override;
  void on_unregister(const LocalRegion &r) override;
  Status on_access_change(const LocalRegion &r) override;
  std::shared_ptr<PeerPath> connect(const Descriptor &d) override;
  void update(PeerPath &peer, const Descriptor &d) override;
  void fail_path(PeerPath &peer, mc_status_t status, const std::string &why) override;
  bool carries(PeerPath &peer) override;
  // Host memory on both sides, and GPU memory on either side where it has an MR: a local GPU's
  // buffers when dma-buf registration works for that GPU here, a remote buffer when its
  // descriptor carries rkeys (accepts_buffer).
  bool accepts(const std::string &l, const std::string &r) const override {
    bool lcpu = l.rfind("cpu", 0) == 0, rcpu = r.rfind("cpu", 0) == 0;
    bool lgpu = l.rfind("cuda", 0) == 0, rgpu = r.rfind("cuda", 0) == 0;
    if (!(lcpu || lgpu) || !(rcpu || rgpu)) return false;
    return !lgpu || gpu_ok(gpu_of(l));
  }
  bool accepts_buffer(PeerPath &peer, const BufferDesc &remote) const override {
    (void)peer;
    return remote.ext.count("rdma") != 0;
  }
  void submit(PeerPath &peer, Slice *slices, size_t n) override;
  Status handle_control(const std::string &request, std::string *reply) override;
  void shutdown() override;
  std::string stats_json() override;
  std::string peer_stats(const std::string &peer_name, PeerPath &peer) override;

  void release(const std::shared_ptr<PeerState> &ps);

 private:
  static int gpu_of(const std::string &loc) { return loc.size() > 5 ? std::atoi(loc.c_str() + 5) : 0; }
  bool gpu_ok(int dev) const {
    return gpu_capable_ && (dev < 0 || dev >= 64 || !(gpu_bad_.load() & (1ull << dev)));
  }
  Status register_gpu(const LocalRegion &r, std::vector<std::pair<uint64_t, LocalMr>> *regs);
  using RegFn = std::function<Status(Nic &, uint64_t addr, uint64_t len, std::unique_ptr<Mr> *)>;
  Status register_regions(const LocalRegion &r, const RegFn &reg, const std::shared_ptr<Dmabuf> &dmabuf,
                          std::vector<std::pair<uint64_t, LocalMr>> *regs);
  void per_nic(uint64_t len, const std::function<void(size_t)> &fn);
  Status set_affinity();
  uint64_t near_of(const std::string &location) const;
  std::vector<std::pair<uint64_t, uint64_t>> regions_of(uint64_t addr, uint64_t len) const;
  std::vector<LocalMr> take_regions(uint64_t addr, uint64_t len);
  void insert_regions(std::vector<std::pair<uint64_t, LocalMr>> regs);
  static Status add_regions(const std::string &peer, size_t nics, uint64_t addr, uint64_t len,
                            proto::RdmaBufExt ext, std::vector<RemoteBuf> *out);
  Status parse_remote(const Descriptor &d, std::shared_ptr<const RemoteInfo> *out) const;
  Status check_descriptor(const Descriptor &d) override {
    if (!d.transports.count("rdma")) return Status::Ok();
    std::shared_ptr<const RemoteInfo> info;
    return parse_remote(d, &info);
  }
  void dispatch(const std::shared_ptr<PeerState> &ps, Op **ops, size_t n);
  mc_status_t usable_pairs(PeerState &ps, std::shared_ptr<const RemoteInfo> *info,
                           std::vector<NicPair> *pairs, uint32_t *start, size_t n);
  static size_t pick_pair(const std::vector<NicPair> &pairs, uint64_t near, size_t turn);
  const LocalMr *local_mr(uint64_t a, uint64_t *end) const;
  bool cut_op(Op *op, const RemoteInfo &info, NicPair pr, std::vector<Op *> *pieces) const;
  void place_ops(const RemoteInfo &info, const std::vector<NicPair> &pairs, uint32_t start, Op **ops,
                 size_t n, std::vector<std::vector<Op *>> *per_pair, std::vector<Op *> *bad);
  void queue_on(const std::shared_ptr<PeerState> &ps, const std::string &rnic, uint32_t l,
                std::vector<Op *> &ops);
  void finish(Op *op, mc_status_t st);
  // counted: whether this try counts against kAttempts (not for a bystander of a refusal).
  void retry_or_fail(Op *op, mc_status_t st, bool counted = true);
  void hand_over(Op **ops, size_t n, mc_status_t st);
  bool peer_nic_for(PeerState &ps, Nic &nic, uint64_t *now, uint32_t *r) const;
  void refused(Op *op);
  void refresh_keys(Op *op);
  void drain_refreshes();
  void drain_refreshes_failed();
  // refresh_mu_ guards refresh_q_ (ops whose rkey was refused once, waiting for a keys
  // refresh) and refreshing_ (a drain_refreshes thread is running).
  std::mutex refresh_mu_;
  std::deque<Op *> refresh_q_;
  bool refreshing_ = false;
  Status handle_keys(const std::string &request, std::string *reply);
  std::shared_ptr<Endpoint> get_ep(const std::shared_ptr<PeerState> &ps, uint32_t l, const std::string &rnic,
                                   bool *created);
  std::shared_ptr<Endpoint> new_ep(const std::shared_ptr<PeerState> &ps, uint32_t l, const std::string &rnic);
  void enqueue(const std::shared_ptr<Endpoint> &ep, std::vector<Op *> &ops);
  void pump(const std::shared_ptr<Endpoint> &ep);
  void retire_ep(const std::shared_ptr<Endpoint> &ep, mc_status_t st, const std::string &why, bool retry);
  void retire_replaced(const std::shared_ptr<Endpoint> &ep, const std::string &why);
  void retire_peer(const std::shared_ptr<PeerState> &ps, mc_status_t st, const std::string &why);
  void reap(const std::shared_ptr<Endpoint> &ep, bool force);
  void maybe_evict();
  void touch(Endpoint *ep);
  void lru_remove(Endpoint *ep);
  void note_qps(const std::string &peer, uint64_t inc);
  Status make_qps(Nic &nic, std::vector<std::unique_ptr<QpCtx>> *out);
  Status connect_qps(Nic &nic, std::vector<std::unique_ptr<QpCtx>> &qps, const std::vector<QpDest> &dst,
                     uint32_t mtu);
  ConnAttr attr_for(Nic &nic, uint32_t mtu) const;
  void destroy_qps(std::vector<std::unique_ptr<QpCtx>> &qps);
  void install(const std::shared_ptr<PeerState> &ps, const std::shared_ptr<Endpoint> &ep,
               std::vector<std::unique_ptr<QpCtx>> qps);
  void run_connect(std::shared_ptr<Endpoint> ep, std::shared_ptr<PeerState> ps);
  bool spawn(std::function<void()> fn);
  void poll_loop(Nic *nic);
  void async_loop();
  void nic_down(Nic &nic, const std::string &why);
  void nic_back(Nic &nic);
  void check_deadlines();
  void check_nic(Nic &nic);
  std::shared_ptr<PeerState> passive_peer(const std::string &name, uint64_t inc);

  RdmaOptions opts_;
  Host *target_;
  std::string name_;
  uint64_t inc_ = 0;
  std::string fabric_;
  std::vector<std::unique_ptr<Nic>> nics_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> pollers_stop_{false};
  std::thread async_;
  std::mutex async_mu_;  // pairs with async_cv_
  std::condition_variable async_cv_;

  // mr_mu_ guards mrs_.
  mutable std::shared_mutex mr_mu_;
  std::map<uint64_t, LocalMr> mrs_;

  // peers_mu_ guards peers_ and name_stats_.
  std::mutex peers_mu_;
  std::map<std::string, std::shared_ptr<PeerState>> peers_;
  struct NameStats {
    uint64_t last_inc = 0;
    uint64_t recreations = 0;
  };
  std::map<std::string, NameStats> name_stats_;

  // lru_mu_ guards lru_ and every Endpoint::in_lru / lru_it.
  std::mutex lru_mu_;
  std::list<Endpoint *> lru_;
  // live_mu_ guards live_: every endpoint whose QPs are not destroyed yet.
  std::mutex live_mu_;
  std::condition_variable live_cv_;
  std::unordered_map<Endpoint *, std::shared_ptr<Endpoint>> live_;

  // threads_mu_ guards threads_ (setup threads running).
  std::mutex threads_mu_;
  std::condition_variable threads_cv_;
  int threads_ = 0;

  std::atomic<uint64_t> qps_created_{0}, qps_destroyed_{0}, wr_posted_{0}, wr_failed_{0}, retries_{0};
  std::atomic<uint64_t> access_failures_{0}, key_refreshes_{0}, deadline_expired_{0}, cq_errors_{0};
  std::atomic<uint64_t> evictions_{0}, connects_{0}, accepts_{0}, setup_failed_{0}, nic_failovers_{0};
  // GPU memory: whether every NIC can register dma-bufs (set in start), GPUs whose buffers could
  // not be registered (bit per ordinal), and counters.
  bool gpu_capable_ = false;
  std::string gpu_why_;
  std::atomic<uint64_t> gpu_bad_{0};
  std::atomic<uint64_t> gpu_mrs_{0}, gpu_mr_failures_{0};
  // The largest region a buffer is registered as (every NIC's max_mr_size and rdma_max_mr_size;
  // set in start), and how many regions are registered now.
  uint64_t region_ = UINT64_MAX;
  std::atomic<uint64_t> regions_{0};
  std::atomic<uint64_t> paths_closed_{0};  // endpoints closed because their peer went down
  std::atomic<uint64_t> handed_over_{0};   // slices given to another transport (failover)
  // rdma_affinity: the NICs (bit per NIC) pinned to a memory location; set in start.
  std::map<std::string, uint64_t> affinity_;
};

RdmaPeer::~RdmaPeer() { t_->release(ps); }

// ------------------------------------------------------------------------------ setup

Status RdmaTransport::start(std::vector<std::unique_ptr<Device>> devs) {
  inc_ = target_->incarnation();
  for (auto &d : devs) {
    auto n = std::make_unique<Nic>();
    n->idx = static_cast<uint32_t>(nics_.size());
    Status st = d->query_port(opts_.rdma_gid_index, &n->port);
    if (!st.ok()) return Err(st.code(), "RDMA device " + d->name() + ": " + st.message());
    if (fabric_.empty()) fabric_ = d->fabric();
    n->cq_cap = static_cast<int64_t>(std::min<uint32_t>(d->max_cqe(), 1u << 20));
    st = d->create_cq(static_cast<uint32_t>(n->cq_cap), &n->cq);
    if (!st.ok()) return Err(st.code(), "RDMA device " + d->name() + ": " + st.message());
    n->up.store(n->port.active);
    n->dev = std::move(d);
    nics_.push_back(std::move(n));
  }
  Status ast = set_affinity();
  if (!ast.ok()) return ast;
  gpu_capable_ = !nics_.empty();
  for (auto &n : nics_) region_ = std::min(region_, n->dev->max_mr_size());
  if (opts_.rdma_max_mr_size) region_ = std::min(region_, opts_.rdma_max_mr_size);
  for (auto &n : nics_)
    if (gpu_capable_ && !n->dev->dmabuf_capable(&gpu_why_)) {
      gpu_capable_ = false;
      gpu_why_ = n->dev->name() + ": " + gpu_why_;
    }
  for (auto &n : nics_) n->poller = std::thread([this, raw = n.get()] { poll_loop(raw); });
  async_ = std::thread([this] { async_loop(); });
  return Status::Ok();
}

// Where each NIC sits, and rdma_affinity's NICs by name (each must be one of ours).
Status RdmaTransport::set_affinity() {
  for (auto &n : nics_) n->place = nic_place(n->dev->name());
  std::map<std::string, std::vector<std::string>> aff;
  if (!parse_affinity(opts_.rdma_affinity, &aff))
    return Err(MC_ERR_INVALID_ARG, "rdma_affinity=" + opts_.rdma_affinity + " is malformed");
  for (auto &[loc, names] : aff) {
    uint64_t m = 0;
    for (auto &name : names) {
      size_t i = 0;
      while (i < nics_.size() && nics_[i]->dev->name() != name) i++;
      if (i == nics_.size() || i >= 64)
        return Err(MC_ERR_NOT_FOUND, "rdma_affinity names NIC " + name + " for " + loc +
                                         ", which is not one of the engine's RDMA devices");
      m |= 1ull << i;
    }
    affinity_[loc] = m;
  }
  return Status::Ok();
}

// The NICs a buffer at location prefers: rdma_affinity's, else the nearest ones (0: any).
uint64_t RdmaTransport::near_of(const std::string &location) const {
  auto it = affinity_.find(location);
  if (it != affinity_.end()) return it->second;
  std::vector<Place> places;
  for (auto &n : nics_) places.push_back(n->place);
  return nearest(memory_place(location), places);
}

ConnAttr RdmaTransport::attr_for(Nic &nic, uint32_t mtu) const {
  ConnAttr a;
  a.mtu = mtu;
  a.gid_index = nic.port.gid_index;
  a.use_grh = nic.port.ethernet;
  a.retry_cnt = 7;
  // (retry_cnt + 1) * 4.096 us * 2^t <= timeout_ms / 2
  uint64_t budget_ns = uint64_t(opts_.timeout_ms) * 1000000 / 2 / 8;
  uint8_t t = 1;
  while (t < 30 && (4096ull << (t + 1)) <= budget_ns) t++;
  a.timeout = t;
  a.rnr_retry = 0;
  // 16 READs in flight each way, or what the device allows (RTR/RTS fail above its limits).
  a.max_rd_atomic = std::min<uint8_t>(16, nic.dev->max_init_rd_atom());
  a.max_dest_rd_atomic = std::min<uint8_t>(16, nic.dev->max_dest_rd_atom());
  a.min_rnr_timer = 12;
  return a;
}

Status RdmaTransport::make_qps(Nic &nic, std::vector<std::unique_ptr<QpCtx>> *out) {
  static thread_local std::mt19937 rng(std::random_device{}());
  for (uint32_t i = 0; i < opts_.rdma_qps_per_endpoint; i++) {
    auto q = std::make_unique<QpCtx>();
    Status st = nic.dev->create_qp(nic.cq.get(), kSqDepth, &q->qp);
    if (!st.ok()) {
      destroy_qps(*out);
      return st;
    }
    qps_created_++;
    q->psn = rng() & 0xffffff;
    st = q->qp->to_init(kRemoteRead | kRemoteWrite | kLocalWrite);
    out->push_back(std::move(q));
    if (!st.ok()) {
      destroy_qps(*out);
      return st;
    }
  }
  return Status::Ok();
}

Status RdmaTransport::connect_qps(Nic &nic, std::vector<std::unique_ptr<QpCtx>> &qps,
                                  const std::vector<QpDest> &dst, uint32_t mtu) {
  if (dst.size() != qps.size())
    return Err(MC_ERR_TRANSPORT,
               "the peer answered " + std::to_string(dst.size()) + " QPs for " + std::to_string(qps.size()));
  for (size_t i = 0; i < qps.size(); i++) {
    ConnAttr a = attr_for(nic, mtu);
    a.remote = dst[i];
    a.local_psn = qps[i]->psn;
    Status st = qps[i]->qp->to_rtr(a);
    if (st.ok()) st = qps[i]->qp->to_rts(a);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

void RdmaTransport::destroy_qps(std::vector<std::unique_ptr<QpCtx>> &qps) {
  for (auto &q : qps) {
    if (!q) continue;
    std::deque<Op *> left;
    {
      std::lock_guard<std::mutex> lk(q->mu);
      left.swap(q->fifo);
    }
    q->qp.reset();  // the QP is gone: nothing of it touches memory any more
    qps_destroyed_++;
    for (Op *op : left) finish(op, stopping_.load() ? MC_ERR_PEER_DOWN : MC_ERR_TRANSPORT);
  }
  qps.clear();
}

// ------------------------------------------------------------------------------ descriptors

bool RdmaTransport::reachable(const Descriptor &d) {
  if (nics_.empty()) return false;
  auto it = d.transports.find("rdma");
  if (it == d.transports.end()) return false;
  proto::RdmaFabricDesc f;
  if (!proto::decode(it->second, d.name, MC_ERR_METADATA, &f).ok()) return false;
  return f.fabric == fabric_ && !f.nics.empty();
}

void RdmaTransport::describe(Descriptor &d) {
  proto::RdmaFabricDesc f;
  f.fabric = fabric_;
  for (auto &n : nics_) {
    proto::RdmaNicDesc nd;
    nd.name = n->dev->name();
    nd.addr.lid = n->port.lid;
    std::memcpy(nd.addr.gid, n->port.gid, 16);
    nd.addr.mtu = n->port.mtu;
    f.nics.push_back(std::move(nd));
  }
  d.transports["rdma"] = f.to_json();
  std::shared_lock<std::shared_mutex> lk(mr_mu_);
  for (auto &b : d.buffers) {
    auto it = mrs_.find(b.addr);
    if (it == mrs_.end()) continue;
    proto::RdmaBufExt e;
    for (auto &m : it->second.mrs) e.rkeys.push_back(m->rkey());
    for (++it; it != mrs_.end() && it->first - b.addr < b.length; ++it) {
      e.region = region_;
      e.more.emplace_back();
      for (auto &m : it->second.mrs) e.more.back().push_back(m->rkey());
    }
    b.ext["rdma"] = e.to_json();
  }
}

// Every field of the peer's rdma blobs goes through its codec: a malformed one is
// MC_ERR_METADATA naming the peer and the field, and only that peer loses RDMA.
Status RdmaTransport::parse_remote(const Descriptor &d, std::shared_ptr<const RemoteInfo> *out) const {
  auto it = d.transports.find("rdma");
  if (it == d.transports.end()) return Err(MC_ERR_UNSUPPORTED, "the peer has no RDMA NICs");
  proto::RdmaFabricDesc f;
  Status st = proto::decode(it->second, d.name, MC_ERR_METADATA, &f);
  if (!st.ok()) return st;
  auto ri = std::make_shared<RemoteInfo>();
  ri->fabric = std::move(f.fabric);
  for (auto &n : f.nics) {
    RemoteNic rn;
    rn.name = std::move(n.name);
    rn.lid = n.addr.lid;
    rn.mtu = n.addr.mtu;
    std::memcpy(rn.gid, n.addr.gid, 16);
    ri->nics.push_back(std::move(rn));
  }
  for (auto &b : d.buffers) {
    auto e = b.ext.find("rdma");
    if (e == b.ext.end()) {  // reachable over RDMA only through another transport: no keys
      ri->bufs.push_back(RemoteBuf{b.addr, b.length, {}});
      continue;
    }
    proto::RdmaBufExt ext;
    st = proto::decode(e->second, d.name, MC_ERR_METADATA, &ext);
    if (st.ok()) st = add_regions(d.name, ri->nics.size(), b.addr, b.length, std::move(ext), &ri->bufs);
    if (!st.ok()) return Err(st.code(), st.message() + " (buffer at " + std::to_string(b.addr) + ")");
  }
  std::sort(ri->bufs.begin(), ri->bufs.end(),
            [](const RemoteBuf &a, const RemoteBuf &b) { return a.addr < b.addr; });
  *out = std::move(ri);
  return Status::Ok();
}

// One buffer's regions from its ext.rdma: region i at addr + i * ext.region, the last one
// ending with the buffer, each with one key per NIC.
Status RdmaTransport::add_regions(const std::string &peer, size_t nics, uint64_t addr, uint64_t len,
                                  proto::RdmaBufExt ext, std::vector<RemoteBuf> *out) {
  std::string what = "rdma buffer keys from peer " + peer + ": ";
  if (ext.rkeys.size() != nics)
    return Err(MC_ERR_METADATA, what + "field 'rkeys' has " + std::to_string(ext.rkeys.size()) +
                                    " keys for " + std::to_string(nics) + " NICs");
  if (ext.more.empty()) {
    out->push_back(RemoteBuf{addr, len, std::move(ext.rkeys)});
    return Status::Ok();
  }
  uint64_t count = (len - 1) / ext.region + 1;  // the codec made region >= 4096
  if (count != ext.more.size() + 1)
    return Err(MC_ERR_METADATA, what + "field 'more' lists " + std::to_string(ext.more.size() + 1) +
                                    " regions where a buffer of " + std::to_string(len) + " bytes has " +
                                    std::to_string(count) + " of " + std::to_string(ext.region) + " bytes");
  out->push_back(RemoteBuf{addr, ext.region, std::move(ext.rkeys)});
  for (uint64_t i = 1; i < count; i++) {
    uint64_t a = addr + i * ext.region;
    out->push_back(RemoteBuf{a, std::min(ext.region, addr + len - a), std::move(ext.more[i - 1])});
  }
  return Status::Ok();
}

// ------------------------------------------------------------------------------ memory

// [addr, addr + len) as regions of at most region_ bytes: (start, length) each.
std::vector<std::pair<uint64_t, uint64_t>> RdmaTransport::regions_of(uint64_t addr, uint64_t len) const {
  std::vector<std::pair<uint64_t, uint64_t>> v;
  for (uint64_t off = 0; off < len; off += region_) v.emplace_back(addr + off, std::min(region_, len - off));
  return v;
}

// Every region of the buffer at addr (len bytes) moved out of mrs_; the caller holds mr_mu_.
std::vector<LocalMr> RdmaTransport::take_regions(uint64_t addr, uint64_t len) {
  std::vector<LocalMr> gone;
  auto it = mrs_.lower_bound(addr);
  while (it != mrs_.end() && it->first - addr < len) {
    gone.push_back(std::move(it->second));
    it = mrs_.erase(it);
  }
  return gone;
}

void RdmaTransport::insert_regions(std::vector<std::pair<uint64_t, LocalMr>> regs) {
  std::unique_lock<std::shared_mutex> lk(mr_mu_);
  for (auto &[a, lm] : regs) mrs_[a] = std::move(lm);
}

// Regions cut where the offset within the dma-buf and the iova move together, so each keeps
// the page offset the NIC needs.
Status RdmaTransport::register_gpu(const LocalRegion &r, std::vector<std::pair<uint64_t, LocalMr>> *regs) {
  int dev = gpu_of(r.location);
  if (!gpu_capable_) return Err(MC_ERR_UNSUPPORTED, gpu_why_);
  cuda::DmabufRange ex;
  Status st = cuda::export_dmabuf(dev, r.addr, r.length, &ex);
  if (!st.ok()) return st;
  auto dmabuf = std::make_shared<Dmabuf>(ex.fd);
  uint32_t access = mr_access(r.access);
  return register_regions(
      r,
      [&](Nic &n, uint64_t a, uint64_t l, std::unique_ptr<Mr> *m) {
        return n.dev->reg_dmabuf_mr(ex.fd, ex.offset + (a - r.addr), l, a, access, m);
      },
      dmabuf, regs);
}

// Runs fn(i) for every NIC i. A buffer of kParallelRegBytes or more is registered on the NICs at
// once, one thread per NIC (rdma_register_threads at most; the calling thread is one of them),
// all joined before this returns: a NIC's registration pins and maps every page, so N NICs
// cost about one NIC's time where there are cores for them. Smaller ones (and a thread that
// cannot be started) go one NIC after another: a thread costs more than their registration.
void RdmaTransport::per_nic(uint64_t len, const std::function<void(size_t)> &fn) {
  size_t n = nics_.size(), t = opts_.rdma_register_threads ? opts_.rdma_register_threads : n;
  t = std::min(t, n);
  if (t <= 1 || len < kParallelRegBytes) {
    for (size_t i = 0; i < n; i++) fn(i);
    return;
  }
  auto share = [&](size_t k) {
    for (size_t i = k; i < n; i += t) fn(i);
  };
  std::vector<std::thread> th;
  for (size_t k = 1; k < t; k++) {
    try {
      th.emplace_back(share, k);
    } catch (const std::system_error &) {
      share(k);
    }
  }
  share(0);
  for (auto &x : th) x.join();
}

// Each region of r registered with every NIC by reg, into regs (nothing on failure).
Status RdmaTransport::register_regions(const LocalRegion &r, const RegFn &reg,
                                       const std::shared_ptr<Dmabuf> &dmabuf,
                                       std::vector<std::pair<uint64_t, LocalMr>> *regs) {
  auto spans = regions_of(r.addr, r.length);
  size_t n = nics_.size();
  std::vector<std::vector<std::unique_ptr<Mr>>> mrs(n);  // per NIC, per region
  std::vector<Status> sts(n);
  per_nic(r.length, [&](size_t i) {
    try {
      for (auto [a, l] : spans) {
        std::unique_ptr<Mr> m;
        sts[i] = reg(*nics_[i], a, l, &m);
        if (!sts[i].ok()) return;
        mrs[i].push_back(std::move(m));
      }
    } catch (const std::bad_alloc &) {
      sts[i] = Err(MC_ERR_NO_MEMORY, "out of memory");
    }
  });
  for (size_t i = 0; i < n; i++)
    if (!sts[i].ok())
      return Err(sts[i].code(),
                 "registering memory on RDMA device " + nics_[i]->dev->name() + ": " + sts[i].message());
  uint64_t near = near_of(r.location);
  for (size_t k = 0; k < spans.size(); k++) {
    LocalMr lm;
    lm.len = spans[k].second;
    lm.near = near;
    lm.dmabuf = dmabuf;
    for (size_t i = 0; i < n; i++) lm.mrs.push_back(std::move(mrs[i][k]));
    regs->emplace_back(spans[k].first, std::move(lm));
  }
  return Status::Ok();
}

Status RdmaTransport::on_register(const LocalRegion &r) {
  if (r.location.rfind("cuda", 0) == 0) {
    if (nics_.empty()) return Status::Ok();
    int dev = gpu_of(r.location);
    if (!gpu_ok(dev)) return Status::Ok();  // known not to work here: other transports carry it
    std::vector<std::pair<uint64_t, LocalMr>> regs;
    Status st = register_gpu(r, &regs);
    if (!st.ok()) {
      // Still registered: its transfers take another transport. Every buffer of this GPU does
      // from now on, so a request never picks rdma for a GPU buffer without an MR.
      gpu_mr_failures_++;
      uint64_t bit = dev >= 0 && dev < 64 ? 1ull << dev : 0;
      if (bit && !(gpu_bad_.fetch_or(bit) & bit))
        MC_LOGW("rdma: GPU memory of " << r.location << " cannot be registered with the NICs ("
                                       << st.message()
                                       << "); its transfers go over other transports (tcp with staging)");
      return Status::Ok();
    }
    gpu_mrs_++;
    regions_ += regs.size();
    insert_regions(std::move(regs));
    return Status::Ok();
  }
  if (r.location.rfind("cpu", 0) != 0) return Status::Ok();
  std::vector<std::pair<uint64_t, LocalMr>> regs;
  uint32_t access = mr_access(r.access);
  Status st = register_regions(
      r,
      [&](Nic &n, uint64_t a, uint64_t l, std::unique_ptr<Mr> *m) {
        return n.dev->reg_mr(reinterpret_cast<void *>(a), l, access, m);
      },
      nullptr, &regs);
  if (!st.ok()) return st;
  regions_ += regs.size();
  insert_regions(std::move(regs));
  return Status::Ok();
}

void RdmaTransport::on_unregister(const LocalRegion &r) {
  std::vector<LocalMr> gone;
  {
    std::unique_lock<std::shared_mutex> lk(mr_mu_);
    gone = take_regions(r.addr, r.length);
  }
  regions_ -= gone.size();
  // Deregistered here: after this no NIC touches the memory.
}

// New rights on every NIC's MR (rereg: the NIC hands out new keys, so a peer's cached rkey
// stops working until it refreshes). When one NIC refuses, the buffer's MRs are deregistered:
// an MR whose rights are unknown must not stay reachable, and neither may the other NICs' MRs
// that already took the new rights (the engine rolls back to the old ones). The buffer then
// has no rkeys in the descriptor and its transfers take another transport.
Status RdmaTransport::on_access_change(const LocalRegion &r) {
  std::vector<LocalMr> gone;
  Status st;
  std::string nic;
  {
    std::unique_lock<std::shared_mutex> lk(mr_mu_);
    for (auto it = mrs_.lower_bound(r.addr); it != mrs_.end() && it->first - r.addr < r.length && st.ok();
         ++it)
      for (size_t i = 0; i < it->second.mrs.size() && st.ok(); i++) {
        st = it->second.mrs[i]->set_access(mr_access(r.access));
        if (!st.ok()) nic = nics_[i]->dev->name();
      }
    if (st.ok()) return Status::Ok();
    gone = take_regions(r.addr, r.length);
  }
  access_failures_++;
  regions_ -= gone.size();
  gone.clear();  // deregistered: no key of this buffer works on any NIC any more
  std::string why = "rdma: changing the access of the buffer at 0x" + hex::u64(r.addr) + " on NIC " + nic +
                    " failed (" + st.message() +
                    "); its memory regions were deregistered, so RDMA no longer reaches it";
  MC_LOGW(why);
  return Err(st.code() == MC_OK ? MC_ERR_TRANSPORT : st.code(), why);
}

// ------------------------------------------------------------------------------ peers

std::shared_ptr<PeerPath> RdmaTransport::connect(const Descriptor &d) {
  if (stopping_.load()) return nullptr;
  std::shared_ptr<const RemoteInfo> info;
  Status pst = parse_remote(d, &info);
  if (!pst.ok()) {
    if (pst.code() != MC_ERR_UNSUPPORTED)
      MC_LOGW("rdma: not using RDMA to " << d.name << ": " << pst.message());
    return nullptr;
  }
  if (info->fabric != fabric_ || info->nics.empty()) return nullptr;
  HostPort hp;
  if (!parse_host_port(d.tcp, &hp).ok()) return nullptr;
  std::shared_ptr<PeerState> ps, old;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    auto &slot = peers_[d.name];
    bool reuse = false;
    if (slot && slot->inc == d.incarnation) {
      std::lock_guard<std::mutex> pl(slot->mu);
      reuse = !slot->retired;
    }
    if (!reuse) {
      old = std::move(slot);
      slot = std::make_shared<PeerState>();
      slot->name = d.name;
      slot->inc = d.incarnation;
    }
    ps = slot;
    std::lock_guard<std::mutex> pl(ps->mu);
    ps->paths++;
    ps->addr = hp;
    ps->has_addr = true;
    ps->info = info;
  }
  if (old) retire_peer(old, MC_ERR_PEER_DOWN, "peer " + d.name + " came back with a new incarnation");
  return std::make_shared<RdmaPeer>(this, ps);
}

void RdmaTransport::update(PeerPath &peer, const Descriptor &d) {
  auto &p = static_cast<RdmaPeer &>(peer);
  std::shared_ptr<const RemoteInfo> info;
  Status pst = parse_remote(d, &info);
  if (!pst.ok()) {  // keep the last good view; the next update may be well formed again
    MC_LOGW("rdma: ignoring the new descriptor of " << d.name << ": " << pst.message());
    return;
  }
  std::lock_guard<std::mutex> lk(p.ps->mu);
  p.ps->info = std::move(info);
}

void RdmaTransport::release(const std::shared_ptr<PeerState> &ps) {
  bool last;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    {
      std::lock_guard<std::mutex> pl(ps->mu);
      last = --ps->paths == 0;
    }
    if (last) {
      auto it = peers_.find(ps->name);
      if (it != peers_.end() && it->second == ps) peers_.erase(it);
    }
  }
  if (last) retire_peer(ps, MC_ERR_PEER_DOWN, "the path to peer " + ps->name + " was dropped");
}

std::shared_ptr<PeerState> RdmaTransport::passive_peer(const std::string &name, uint64_t inc) {
  std::shared_ptr<PeerState> ps, old;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    auto &slot = peers_[name];
    bool reuse = false;
    if (slot && slot->inc == inc) {
      std::lock_guard<std::mutex> pl(slot->mu);
      reuse = !slot->retired;
    }
    if (!reuse) {
      old = std::move(slot);
      slot = std::make_shared<PeerState>();
      slot->name = name;
      slot->inc = inc;
    }
    ps = slot;
  }
  if (old) retire_peer(old, MC_ERR_PEER_DOWN, "peer " + name + " came back with a new incarnation");
  return ps;
}

void RdmaTransport::note_qps(const std::string &peer, uint64_t inc) {
  std::lock_guard<std::mutex> lk(peers_mu_);
  auto &ns = name_stats_[peer];
  if (ns.last_inc != 0 && ns.last_inc != inc) ns.recreations++;
  ns.last_inc = inc;
}

void RdmaTransport::retire_peer(const std::shared_ptr<PeerState> &ps, mc_status_t st,
                                const std::string &why) {
  std::map<std::pair<uint32_t, std::string>, std::shared_ptr<Endpoint>> eps;
  {
    std::lock_guard<std::mutex> lk(ps->mu);
    if (ps->retired) return;
    ps->retired = true;
    ps->retire_status = st;
    ps->retire_why = why;
    eps.swap(ps->eps);
  }
  for (auto &[k, ep] : eps) retire_ep(ep, st, why, false);
}

void RdmaTransport::fail_path(PeerPath &peer, mc_status_t status, const std::string &why) {
  auto &p = static_cast<RdmaPeer &>(peer);
  std::vector<std::shared_ptr<Endpoint>> eps;
  {
    std::lock_guard<std::mutex> lk(p.ps->mu);
    for (auto &[k, ep] : p.ps->eps) eps.push_back(ep);
  }
  // Every endpoint goes, idle ones too: a peer that went down may never answer again, and QPs
  // to it hold NIC resources (QP contexts, control memory) until something closes them. One that
  // comes back is reconnected by its next request (a QP exchange). Busy ones go to ERR first so
  // their work is failed.
  for (auto &ep : eps) retire_ep(ep, status, why, false);
  paths_closed_ += eps.size();
}

// ------------------------------------------------------------------------------ endpoints

std::shared_ptr<Endpoint> RdmaTransport::new_ep(const std::shared_ptr<PeerState> &ps, uint32_t l,
                                                const std::string &rnic) {
  auto ep = std::make_shared<Endpoint>();
  ep->peer = ps;
  ep->peer_name = ps->name;
  ep->peer_inc = ps->inc;
  ep->lnic = l;
  ep->rnic = rnic;
  {
    std::lock_guard<std::mutex> lk(live_mu_);
    live_[ep.get()] = ep;
  }
  {
    std::lock_guard<std::mutex> lk(lru_mu_);
    lru_.push_back(ep.get());
    ep->lru_it = std::prev(lru_.end());
    ep->in_lru = true;
  }
  return ep;
}

// Caller holds ps->mu.
std::shared_ptr<Endpoint> RdmaTransport::get_ep(const std::shared_ptr<PeerState> &ps, uint32_t l,
                                                const std::string &rnic, bool *created) {
  auto key = std::make_pair(l, rnic);
  auto it = ps->eps.find(key);
  if (it != ps->eps.end()) return it->second;
  auto ep = new_ep(ps, l, rnic);
  ps->eps[key] = ep;
  *created = true;
  return ep;
}

void RdmaTransport::touch(Endpoint *ep) {
  std::lock_guard<std::mutex> lk(lru_mu_);
  if (ep->in_lru) lru_.splice(lru_.end(), lru_, ep->lru_it);
}

void RdmaTransport::lru_remove(Endpoint *ep) {
  std::lock_guard<std::mutex> lk(lru_mu_);
  if (ep->in_lru) {
    lru_.erase(ep->lru_it);
    ep->in_lru = false;
  }
}

// Keeps the cached endpoints at rdma_max_endpoints: the least recently used connected one
// leaves the cache, finishes what it holds (no new work reaches it) and is then destroyed.
void RdmaTransport::maybe_evict() {
  for (;;) {
    std::shared_ptr<Endpoint> victim;
    {
      std::lock_guard<std::mutex> lk(lru_mu_);
      if (lru_.size() <= opts_.rdma_max_endpoints) return;
      for (auto it = lru_.begin(); it != lru_.end(); ++it) {
        Endpoint *e = *it;
        std::lock_guard<std::mutex> el(e->mu);
        if (e->st != Endpoint::kReady) continue;
        victim = e->shared_from_this();
        lru_.erase(it);
        e->in_lru = false;
        break;
      }
    }
    if (!victim) return;  // only endpoints still connecting: they count once connected
    if (auto ps = victim->peer.lock()) {
      std::lock_guard<std::mutex> lk(ps->mu);
      auto it = ps->eps.find({victim->lnic, victim->rnic});
      if (it != ps->eps.end() && it->second == victim) ps->eps.erase(it);
    }
    bool done;
    {
      std::lock_guard<std::mutex> lk(victim->mu);
      victim->draining = true;
      done = victim->st != Endpoint::kConnecting && victim->backlog.empty() && victim->inflight == 0;
    }
    evictions_++;
    if (done) reap(victim, false);
  }
}

void RdmaTransport::retire_ep(const std::shared_ptr<Endpoint> &ep, mc_status_t st, const std::string &why,
                              bool retry) {
  std::deque<Op *> queued;
  bool reap_now;
  {
    std::lock_guard<std::mutex> lk(ep->mu);
    if (ep->st == Endpoint::kDead) return;
    ep->st = Endpoint::kDead;
    ep->fail_status = st;
    ep->fail_why = why;
    ep->retry = retry;
    queued.swap(ep->backlog);
    for (auto &q : ep->qps) (void)q->qp->to_err();  // outstanding work comes back as flushes
    reap_now = ep->inflight == 0;
    ep->cv.notify_all();
  }
  lru_remove(ep.get());
  if (auto ps = ep->peer.lock()) {
    std::lock_guard<std::mutex> lk(ps->mu);
    auto it = ps->eps.find({ep->lnic, ep->rnic});
    if (it != ps->eps.end() && it->second == ep) ps->eps.erase(it);
  }
  for (Op *op : queued) {
    if (retry)
      retry_or_fail(op, st, !ep->free_retry);
    else
      finish(op, st);
  }
  if (reap_now) reap(ep, false);
}

// Destroys the endpoint's QPs once nothing is outstanding on them (force: at shutdown, after
// the pollers stopped; whatever is still posted is failed once the QP is gone).
// An endpoint a newer connection of the same pair replaced: what it held goes to the new one
// without counting an attempt.
void RdmaTransport::retire_replaced(const std::shared_ptr<Endpoint> &ep, const std::string &why) {
  {
    std::lock_guard<std::mutex> lk(ep->mu);
    ep->free_retry = true;
  }
  retire_ep(ep, MC_ERR_TRANSPORT, why, true);
}

void RdmaTransport::reap(const std::shared_ptr<Endpoint> &ep, bool force) {
  std::vector<std::unique_ptr<QpCtx>> qps;
  {
    std::lock_guard<std::mutex> lk(ep->mu);
    if (ep->reaped || (!force && ep->inflight > 0)) return;
    ep->reaped = true;
    qps.swap(ep->qps);
    if (ep->st != Endpoint::kDead) ep->st = Endpoint::kDead;
  }
  for (auto &q : qps) (void)q->qp->to_err();
  destroy_qps(qps);
  lru_remove(ep.get());
  std::lock_guard<std::mutex> lk(live_mu_);
  live_.erase(ep.get());
  live_cv_.notify_all();
}

void RdmaTransport::install(const std::shared_ptr<PeerState> &ps, const std::shared_ptr<Endpoint> &ep,
                            std::vector<std::unique_ptr<QpCtx>> qps) {
  std::shared_ptr<Endpoint> target = ep, replaced;
  {
    std::lock_guard<std::mutex> pl(ps->mu);
    std::unique_lock<std::mutex> lk(ep->mu);
    if (ep->st == Endpoint::kConnecting) {
      for (auto &q : qps) q->ep = ep.get();
      ep->qps = std::move(qps);
      ep->st = Endpoint::kReady;
      ep->cv.notify_all();
    } else if (ep->st == Endpoint::kReady && !ps->retired) {
      // The peer connected this pair meanwhile and then accepted ours too (it replaced its
      // side with ours): ours is the live one now.
      lk.unlock();
      target = new_ep(ps, ep->lnic, ep->rnic);
      std::lock_guard<std::mutex> tl(target->mu);
      for (auto &q : qps) q->ep = target.get();
      target->qps = std::move(qps);
      target->st = Endpoint::kReady;
      ps->eps[{ep->lnic, ep->rnic}] = target;
      replaced = ep;
    } else {
      lk.unlock();
      destroy_qps(qps);
      return;
    }
  }
  note_qps(ps->name, ps->inc);
  if (replaced) retire_replaced(replaced, "replaced by a newer connection");
  pump(target);
  maybe_evict();
}

bool RdmaTransport::spawn(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lk(threads_mu_);
    if (stopping_.load()) return false;  // shutdown() waits for threads_ after setting it
    threads_++;
  }
  std::thread([this, fn = std::move(fn)]() mutable {
    fn();
    fn = nullptr;  // drop what it captured before shutdown() may go on
    std::lock_guard<std::mutex> lk(threads_mu_);
    threads_--;
    threads_cv_.notify_all();
  }).detach();
  return true;
}

void RdmaTransport::run_connect(std::shared_ptr<Endpoint> ep, std::shared_ptr<PeerState> ps) {
  connects_++;
  Nic &nic = *nics_[ep->lnic];
  HostPort addr;
  RemoteNic rn;
  bool found = false;
  {
    std::lock_guard<std::mutex> lk(ps->mu);
    addr = ps->addr;
    if (ps->info && ps->has_addr)
      for (auto &n : ps->info->nics)
        if (n.name == ep->rnic) {
          rn = n;
          found = true;
        }
  }
  auto fail = [&](const Status &st, bool retry) {
    setup_failed_++;
    check_nic(nic);
    retire_ep(
        ep, st.code(),
        "connecting to " + ps->name + " over " + nic.dev->name() + " -> " + ep->rnic + ": " + st.message(),
        retry);
  };
  if (!found) return fail(Err(MC_ERR_PEER_DOWN, "the peer's NIC is not known"), false);
  std::vector<std::unique_ptr<QpCtx>> qps;
  Status st = make_qps(nic, &qps);
  if (!st.ok()) return fail(st, true);
  uint32_t mtu = std::min({nic.port.mtu, rn.mtu, opts_.rdma_mtu});
  proto::RdmaConnectReq req;
  req.from = name_;
  req.inc = inc_;
  req.to_inc = ps->inc;
  req.lnic = nic.dev->name();
  req.rnic = ep->rnic;
  req.addr.lid = nic.port.lid;
  std::memcpy(req.addr.gid, nic.port.gid, 16);
  req.addr.mtu = mtu;
  for (auto &q : qps) req.qps.push_back({q->qp->qpn(), q->psn});
  std::string reply;
  uint64_t their_inc = 0;
  st = control_call(addr, opts_.auth_token, "rdma", req.to_json(), opts_.timeout_ms, &reply, &their_inc);
  if (st.code() == MC_ERR_BUSY) {
    // Simultaneous open, and the peer's request wins: it arrives here and connects this
    // endpoint; wait for that instead of building a second connection.
    destroy_qps(qps);
    std::unique_lock<std::mutex> lk(ep->mu);
    ep->cv.wait_for(lk, std::chrono::milliseconds(opts_.timeout_ms),
                    [&] { return ep->st != Endpoint::kConnecting; });
    bool still = ep->st == Endpoint::kConnecting;
    lk.unlock();
    if (still) fail(Err(MC_ERR_TRANSPORT, "the peer's side of a simultaneous open never arrived"), true);
    return;
  }
  if (!st.ok()) {
    destroy_qps(qps);
    if (st.code() == MC_ERR_UNSUPPORTED) {  // that NIC of the peer is down: use another one for a while
      std::lock_guard<std::mutex> lk(ps->mu);
      ps->rnic_down_until[ep->rnic] = now_ms() + kNicBackoffMs;
    }
    bool retry = st.code() != MC_ERR_PEER_DOWN && st.code() != MC_ERR_DENIED && st.code() != MC_ERR_METADATA;
    return fail(st, retry);
  }
  proto::RdmaConnectReply rep;
  st = proto::decode(reply, ps->name, MC_ERR_TRANSPORT, &rep);
  if (!st.ok()) {
    destroy_qps(qps);
    return fail(st, true);
  }
  std::vector<QpDest> dst = dests_of(rep.addr, rep.qps);
  uint32_t path_mtu = rep.addr.mtu;
  if (path_mtu > mtu) path_mtu = mtu;
  st = connect_qps(nic, qps, dst, path_mtu);
  if (!st.ok()) {
    destroy_qps(qps);
    return fail(st, true);
  }
  install(ps, ep, std::move(qps));
}

Status RdmaTransport::handle_control(const std::string &request, std::string *reply) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is shutting down");
  proto::RdmaOp op;
  Status dst_st = proto::decode(request, peek_from(request), MC_ERR_TRANSPORT, &op);
  if (dst_st.ok() && op.op == "keys") return handle_keys(request, reply);
  proto::RdmaConnectReq req;
  if (dst_st.ok()) dst_st = proto::decode(request, peek_from(request), MC_ERR_TRANSPORT, &req);
  if (!dst_st.ok()) {
    MC_LOGW("rdma: refused a connect request: " << dst_st.message());
    return dst_st;
  }
  const std::string &from = req.from, &lnic = req.lnic, &rnic = req.rnic;
  uint64_t inc = req.inc, to_inc = req.to_inc;
  uint32_t mtu = req.addr.mtu;
  std::vector<QpDest> dst = dests_of(req.addr, req.qps);
  if (to_inc != inc_) return Err(MC_ERR_PEER_DOWN, "the request is for another incarnation of " + name_);
  Nic *nic = nullptr;
  for (auto &n : nics_)
    if (n->dev->name() == rnic) nic = n.get();
  if (!nic) return Err(MC_ERR_UNSUPPORTED, "no NIC " + rnic + " here");
  if (!nic->up.load()) return Err(MC_ERR_UNSUPPORTED, "NIC " + rnic + " is down");
  auto ps = passive_peer(from, inc);
  auto key = std::make_pair(nic->idx, lnic);
  {
    std::lock_guard<std::mutex> lk(ps->mu);
    auto it = ps->eps.find(key);
    if (it != ps->eps.end()) {
      std::lock_guard<std::mutex> el(it->second->mu);
      if (it->second->st == Endpoint::kConnecting && name_ < from)
        return Err(MC_ERR_BUSY, "simultaneous open: " + name_ + "'s own request for this pair wins");
    }
  }
  std::vector<std::unique_ptr<QpCtx>> qps;
  Status st = make_qps(*nic, &qps);
  if (!st.ok()) return st;
  uint32_t path_mtu = std::min({mtu, nic->port.mtu, opts_.rdma_mtu});
  if (dst.size() != qps.size()) {
    // The two engines differ in rdma_qps_per_endpoint: use the initiator's count.
    destroy_qps(qps);
    for (size_t i = 0; i < dst.size(); i++) {
      auto q = std::make_unique<QpCtx>();
      st = nic->dev->create_qp(nic->cq.get(), kSqDepth, &q->qp);
      if (!st.ok()) {
        destroy_qps(qps);
        return st;
      }
      qps_created_++;
      q->psn = static_cast<uint32_t>(std::random_device{}()) & 0xffffff;
      st = q->qp->to_init(kRemoteRead | kRemoteWrite | kLocalWrite);
      qps.push_back(std::move(q));
      if (!st.ok()) {
        destroy_qps(qps);
        return st;
      }
    }
  }
  st = connect_qps(*nic, qps, dst, path_mtu);
  if (!st.ok()) {
    destroy_qps(qps);
    return st;
  }
  proto::RdmaConnectReply out;
  out.addr.lid = nic->port.lid;
  std::memcpy(out.addr.gid, nic->port.gid, 16);
  out.addr.mtu = path_mtu;
  for (auto &q : qps) out.qps.push_back({q->qp->qpn(), q->psn});

  std::shared_ptr<Endpoint> target, replaced;
  {
    std::lock_guard<std::mutex> lk(ps->mu);
    if (ps->retired) {
      destroy_qps(qps);
      return Err(MC_ERR_PEER_DOWN, "this engine dropped peer " + from);
    }
    auto it = ps->eps.find(key);
    std::shared_ptr<Endpoint> ex = it != ps->eps.end() ? it->second : nullptr;
    std::unique_lock<std::mutex> el;
    if (ex) el = std::unique_lock<std::mutex>(ex->mu);
    if (ex && ex->st == Endpoint::kConnecting) {
      if (name_ < from) {  // became ours meanwhile
        el.unlock();
        destroy_qps(qps);
        return Err(MC_ERR_BUSY, "simultaneous open: " + name_ + "'s own request for this pair wins");
      }
      for (auto &q : qps) q->ep = ex.get();
      ex->qps = std::move(qps);
      ex->st = Endpoint::kReady;
      ex->cv.notify_all();
      target = ex;
    } else {
      if (ex) {
        el.unlock();
        replaced = ex;  // the peer no longer uses it (its side was evicted or failed)
      }
      target = new_ep(ps, nic->idx, lnic);
      std::lock_guard<std::mutex> tl(target->mu);
      for (auto &q : qps) q->ep = target.get();
      target->qps = std::move(qps);
      target->st = Endpoint::kReady;
      ps->eps[key] = target;
    }
  }
  accepts_++;
  note_qps(from, inc);
  if (replaced) retire_replaced(replaced, "the peer reconnected this pair");
  pump(target);
  maybe_evict();
  *reply = out.to_json();
  return Status::Ok();
}

// ------------------------------------------------------------------------------ data path

void RdmaTransport::finish(Op *op, mc_status_t st) {
  if (st != MC_OK) wr_failed_.fetch_add(1, std::memory_order_relaxed);
  if (Op *p = op->parent) {
    if (st != MC_OK) {
      int32_t expect = MC_OK;
      p->status.compare_exchange_strong(expect, st);
    }
    delete op;
    if (p->pieces.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      target_->complete(p->s, p->status.load());
      delete p;
    }
    return;
  }
  target_->complete(op->s, st);
  delete op;
}

void RdmaTransport::retry_or_fail(Op *op, mc_status_t st, bool counted) {
  if (target_->canceled(op->root())) return finish(op, MC_ERR_CANCELED);
  if (stopping_.load() || !op->peer) return finish(op, st);
  if (counted && ++op->attempts >= kAttempts) return hand_over(&op, 1, st);  // tried enough here
  retries_++;
  auto ps = op->peer;
  dispatch(ps, &op, 1);
}

// Whether local NIC nic has a peer NIC to pair with: the one of the same rank (rails), else
// any that is not backing off (*r: its index). Caller holds ps.mu; *now is read once, lazily.
bool RdmaTransport::peer_nic_for(PeerState &ps, Nic &nic, uint64_t *now, uint32_t *r) const {
  if (!nic.up.load() || !ps.info) return false;
  uint32_t R = static_cast<uint32_t>(ps.info->nics.size());
  for (uint32_t j = 0; j < R; j++) {
    uint32_t k = (nic.idx + j) % R;
    auto d = ps.rnic_down_until.find(ps.info->nics[k].name);
    if (d != ps.rnic_down_until.end()) {
      if (!*now) *now = now_ms();
      if (d->second > *now) continue;
    }
    *r = k;
    return true;
  }
  return false;
}

bool RdmaTransport::carries(PeerPath &peer) {
  auto &p = static_cast<RdmaPeer &>(peer);
  std::lock_guard<std::mutex> lk(p.ps->mu);
  if (p.ps->retired || !p.ps->info) return true;  // not a matter of NICs: as before
  uint64_t now = 0;
  uint32_t r;
  for (auto &nic : nics_)
    if (peer_nic_for(*p.ps, *nic, &now, &r)) return true;
  return false;
}

// Ops this transport cannot move (no NIC pair up, or out of attempts) go to another transport
// of their peer through the engine (Host::fail_over); what none takes fails with st. A piece of
// a slice cut at a buffer boundary cannot leave alone: it fails, and its slice with it.
void RdmaTransport::hand_over(Op **ops, size_t n, mc_status_t st) {
  std::vector<Slice> slices;
  std::vector<Op *> whole;
  for (size_t i = 0; i < n; i++) {
    if (ops[i]->parent || stopping_.load()) {
      finish(ops[i], st);
      continue;
    }
    slices.push_back(ops[i]->s);
    whole.push_back(ops[i]);
  }
  if (whole.empty()) return;
  if (target_->fail_over(*this, slices.data(), slices.size())) {
    handed_over_ += whole.size();
    for (Op *op : whole) delete op;  // the other transport reports them now
    return;
  }
  for (Op *op : whole) finish(op, st);
}

// The target's NIC refused op's rkey or range. The target gives a buffer new keys when its
// access changes, so a cached rkey may just be stale: the first refusal asks the target for
// the buffer's current keys (off the poller: it blocks on the control channel) and posts again
// with them; a second refusal, or keys that did not change, is MC_ERR_DENIED.
// Refused ops queue up for one refresher thread at a time, however many were refused at once
// (a batch after an access change): costs in threads do not grow with requests.
void RdmaTransport::refused(Op *op) {
  if (op->refreshed || !op->peer || stopping_.load()) return finish(op, MC_ERR_DENIED);
  op->refreshed = true;
  bool start;
  {
    std::lock_guard<std::mutex> lk(refresh_mu_);
    refresh_q_.push_back(op);
    start = !refreshing_;
    refreshing_ = true;
  }
  if (start && !spawn([this] { drain_refreshes(); })) drain_refreshes_failed();
}

void RdmaTransport::drain_refreshes() {
  for (;;) {
    Op *op;
    {
      std::lock_guard<std::mutex> lk(refresh_mu_);
      if (refresh_q_.empty()) {
        refreshing_ = false;
        return;
      }
      op = refresh_q_.front();
      refresh_q_.pop_front();
    }
    if (stopping_.load())
      finish(op, MC_ERR_DENIED);
    else
      refresh_keys(op);
  }
}

void RdmaTransport::drain_refreshes_failed() {
  std::deque<Op *> q;
  {
    std::lock_guard<std::mutex> lk(refresh_mu_);
    q.swap(refresh_q_);
    refreshing_ = false;
  }
  for (Op *op : q) finish(op, MC_ERR_DENIED);
}

void RdmaTransport::refresh_keys(Op *op) {
  auto ps = op->peer;
  HostPort addr;
  bool has_addr;
  std::shared_ptr<const RemoteInfo> info;
  {
    std::lock_guard<std::mutex> lk(ps->mu);
    if (ps->retired) return finish(op, ps->retire_status);
    addr = ps->addr;
    has_addr = ps->has_addr;
    info = ps->info;
  }
  const RemoteBuf *rb = info ? info->find(op->s.remote) : nullptr;
  if (!rb || !has_addr) return finish(op, MC_ERR_DENIED);
  auto holds = [&](const std::vector<uint32_t> &keys) {
    return std::find(keys.begin(), keys.end(), op->rkey) != keys.end();
  };
  if (!holds(rb->rkeys)) {  // an earlier refresh already brought new keys: post again with them
    key_refreshes_++;
    return dispatch(ps, &op, 1);
  }
  proto::RdmaKeysReq req;
  req.from = name_;
  req.to_inc = ps->inc;
  req.addr = op->s.remote;
  std::string reply;
  uint64_t their_inc = 0;
  Status st =
      control_call(addr, opts_.auth_token, "rdma", req.to_json(), opts_.timeout_ms, &reply, &their_inc);
  proto::RdmaKeysReply rep;
  if (st.ok()) st = proto::decode(reply, ps->name, MC_ERR_TRANSPORT, &rep);
  if (!st.ok()) {
    MC_LOGD("rdma: refreshing the keys of " << ps->name << " failed: " << st.message());
    return finish(op, MC_ERR_DENIED);  // the refusal stands
  }
  if (rep.addr != rb->addr || rep.len != rb->len || rep.rkeys.size() != info->nics.size() || holds(rep.rkeys))
    return finish(op, MC_ERR_DENIED);  // the key it used is still current (or another buffer now): meant
  {
    std::lock_guard<std::mutex> lk(ps->mu);
    if (ps->info == info) {  // else a newer descriptor came meanwhile: the retry uses it
      auto ni = std::make_shared<RemoteInfo>(*info);
      for (auto &b : ni->bufs)
        if (b.addr == rep.addr) b.rkeys = rep.rkeys;
      ps->info = std::move(ni);
    }
  }
  key_refreshes_++;
  dispatch(ps, &op, 1);
}

// A peer's keys request: the current rkeys (one per NIC) of the buffer holding addr.
Status RdmaTransport::handle_keys(const std::string &request, std::string *reply) {
  proto::RdmaKeysReq req;
  Status st = proto::decode(request, peek_from(request), MC_ERR_TRANSPORT, &req);
  if (!st.ok()) return st;
  if (req.to_inc != inc_)
    return Err(MC_ERR_PEER_DOWN, "the keys request is for another incarnation of " + name_);
  proto::RdmaKeysReply rep;
  {
    std::shared_lock<std::shared_mutex> lk(mr_mu_);
    auto it = mrs_.upper_bound(req.addr);
    if (it == mrs_.begin() || req.addr - std::prev(it)->first >= std::prev(it)->second.len)
      return Err(MC_ERR_DENIED,
                 "no buffer of " + name_ + " at 0x" + hex::u64(req.addr) + " is reachable over RDMA");
    --it;
    rep.addr = it->first;
    rep.len = it->second.len;
    for (auto &m : it->second.mrs) rep.rkeys.push_back(m->rkey());
  }
  *reply = rep.to_json();
  return Status::Ok();
}

void RdmaTransport::submit(PeerPath &path, Slice *slices, size_t n) {
  auto &p = static_cast<RdmaPeer &>(path);
  if (stopping_.load()) {
    for (size_t i = 0; i < n; i++) target_->complete(slices[i], MC_ERR_PEER_DOWN);
    return;
  }
  thread_local std::vector<Op *> ops;
  ops.resize(n);
  for (size_t i = 0; i < n; i++) {
    Op *op = new Op;
    op->s = slices[i];
    op->peer = p.ps;
    ops[i] = op;
  }
  dispatch(p.ps, ops.data(), n);
}

// The NIC pairs usable to ps now, one per local NIC that is up (into *pairs, with *info the
// peer's view); MC_OK, or the status ops to it fail with (MC_ERR_PEER_DOWN with *info set: no
// pair is up, the case for failover).
mc_status_t RdmaTransport::usable_pairs(PeerState &ps, std::shared_ptr<const RemoteInfo> *info,
                                        std::vector<NicPair> *pairs, uint32_t *start, size_t n) {
  std::lock_guard<std::mutex> lk(ps.mu);
  if (ps.retired) return ps.retire_status;
  if (!ps.info) return MC_ERR_INTERNAL;
  *info = ps.info;
  uint64_t now = 0;
  uint32_t r;
  for (auto &nic : nics_)
    if (peer_nic_for(ps, *nic, &now, &r)) pairs->push_back({nic->idx, r});
  if (pairs->empty()) return MC_ERR_PEER_DOWN;
  *start = ps.rr;
  ps.rr += static_cast<uint32_t>(n);
  return MC_OK;
}

// The turn-th of pairs among those whose local NIC is in near (the buffer's nearest or pinned
// NICs), or of all when none of those is up (or near is 0: no preference).
size_t RdmaTransport::pick_pair(const std::vector<NicPair> &pairs, uint64_t near, size_t turn) {
  size_t c = 0;
  for (auto &p : pairs) c += p.l < 64 && (near >> p.l & 1);
  if (!near || !c) return turn % pairs.size();
  size_t want = turn % c;
  for (size_t k = 0; k < pairs.size(); k++)
    if (pairs[k].l < 64 && (near >> pairs[k].l & 1) && want-- == 0) return k;
  return turn % pairs.size();
}

// The local MR holding a (*end: where it ends); caller holds mr_mu_.
const LocalMr *RdmaTransport::local_mr(uint64_t a, uint64_t *end) const {
  auto it = mrs_.upper_bound(a);
  if (it == mrs_.begin()) return nullptr;
  --it;
  if (a - it->first >= it->second.len) return nullptr;
  *end = it->first + it->second.len;
  return &it->second;
}

// op cut at every local and remote buffer boundary into *pieces, each with its own keys on
// pair pr; false (nothing made) when a part lies outside registered memory. Caller holds mr_mu_.
bool RdmaTransport::cut_op(Op *op, const RemoteInfo &info, NicPair pr, std::vector<Op *> *pieces) const {
  uint64_t la = reinterpret_cast<uint64_t>(op->s.local), ra = op->s.remote, len = op->s.len, off = 0;
  while (off < len) {
    uint64_t le = 0;
    const LocalMr *m = local_mr(la + off, &le);
    const RemoteBuf *b = info.find(ra + off);
    if (!m || !b || b->rkeys.empty()) {
      for (Op *pc : *pieces) delete pc;
      pieces->clear();
      return false;
    }
    uint64_t chunk = std::min({len - off, le - (la + off), b->addr + b->len - (ra + off)});
    Op *pc = new Op;
    pc->s = op->s;
    pc->s.local = reinterpret_cast<void *>(la + off);
    pc->s.remote = ra + off;
    pc->s.len = chunk;
    pc->parent = op;
    pc->peer = op->peer;
    pc->attempts = op->attempts;
    pc->lkey = m->mrs[pr.l]->lkey();
    pc->rkey = b->rkeys[pr.r];
    pieces->push_back(pc);
    off += chunk;
  }
  op->pieces.store(static_cast<uint32_t>(pieces->size()));
  return true;
}

// Sets each op's keys for its pair and puts it in per_pair (pieces for one that crosses a
// buffer boundary); ops outside registered memory go to bad.
void RdmaTransport::place_ops(const RemoteInfo &info, const std::vector<NicPair> &pairs, uint32_t start,
                              Op **ops, size_t n, std::vector<std::vector<Op *>> *per_pair,
                              std::vector<Op *> *bad) {
  std::shared_lock<std::shared_mutex> lk(mr_mu_);
  std::vector<Op *> pieces;
  for (size_t i = 0; i < n; i++) {
    Op *op = ops[i];
    uint64_t la = reinterpret_cast<uint64_t>(op->s.local), ra = op->s.remote, len = op->s.len;
    uint64_t lend = 0;
    const LocalMr *lm = local_mr(la, &lend);
    const RemoteBuf *rb = info.find(ra);
    if (!lm || !rb || rb->rkeys.empty() || len > kMaxWr) {
      bad->push_back(op);
      continue;
    }
    size_t k = pick_pair(pairs, lm->near, start + i);
    NicPair pr = pairs[k];
    if (la + len <= lend && ra + len <= rb->addr + rb->len) {  // the common case: one buffer each side
      op->lkey = lm->mrs[pr.l]->lkey();
      op->rkey = rb->rkeys[pr.r];
      (*per_pair)[k].push_back(op);
      continue;
    }
    pieces.clear();
    // A piece lies in one buffer on each side; those changed under it: it fails.
    if (op->parent || !cut_op(op, info, pr, &pieces)) {
      bad->push_back(op);
      continue;
    }
    for (Op *pc : pieces) (*per_pair)[k].push_back(pc);
  }
}

// Picks a NIC pair per op (round robin over usable pairs, the buffer's nearest NICs first),
// cuts ops at buffer boundaries, sets keys, and queues them on their endpoints. With no pair
// up, the ops go to another transport (hand_over).
void RdmaTransport::dispatch(const std::shared_ptr<PeerState> &ps, Op **ops, size_t n) {
  std::shared_ptr<const RemoteInfo> info;
  std::vector<NicPair> pairs;
  uint32_t start = 0;
  mc_status_t fail_st = usable_pairs(*ps, &info, &pairs, &start, n);
  if (fail_st == MC_ERR_PEER_DOWN && info) return hand_over(ops, n, fail_st);  // no NIC pair is up
  if (fail_st != MC_OK) {
    for (size_t i = 0; i < n; i++) finish(ops[i], fail_st);
    return;
  }
  // Not thread_local: retries dispatch again from inside this call (enqueue -> pump -> retire).
  std::vector<std::vector<Op *>> per_pair(pairs.size());
  std::vector<Op *> bad;
  place_ops(*info, pairs, start, ops, n, &per_pair, &bad);
  for (Op *op : bad) finish(op, MC_ERR_OUT_OF_RANGE);
  for (size_t k = 0; k < pairs.size(); k++)
    if (!per_pair[k].empty()) queue_on(ps, info->nics[pairs[k].r].name, pairs[k].l, per_pair[k]);
}

// Queues ops on ps's endpoint for (local NIC l, peer NIC rnic), connecting it first if new.
void RdmaTransport::queue_on(const std::shared_ptr<PeerState> &ps, const std::string &rnic, uint32_t l,
                             std::vector<Op *> &ops) {
  std::shared_ptr<Endpoint> ep;
  bool created = false;
  {
    std::lock_guard<std::mutex> lk(ps->mu);
    if (ps->retired) {
      for (Op *op : ops) finish(op, ps->retire_status);
      return;
    }
    ep = get_ep(ps, l, rnic, &created);
  }
  std::vector<Op *> mine;
  mine.swap(ops);
  if (created) {
    if (!spawn([this, ep, ps] { run_connect(ep, ps); }))
      retire_ep(ep, MC_ERR_PEER_DOWN, "the engine is shutting down", false);
    maybe_evict();
  } else {
    touch(ep.get());
  }
  enqueue(ep, mine);
}

void RdmaTransport::enqueue(const std::shared_ptr<Endpoint> &ep, std::vector<Op *> &ops) {
  {
    std::lock_guard<std::mutex> lk(ep->mu);
    if (ep->st != Endpoint::kDead && !ep->draining) {
      for (Op *op : ops) ep->backlog.push_back(op);
      ops.clear();
    }
  }
  if (!ops.empty()) {  // it died (or was evicted) between the lookup and here: try again (the
    // ops never reached it: no attempt counted)
    for (Op *op : ops) retry_or_fail(op, MC_ERR_TRANSPORT, false);
    return;
  }
  pump(ep);
}

// Posts queued work while the endpoint's QPs and its NIC's CQ have room.
void RdmaTransport::pump(const std::shared_ptr<Endpoint> &ep) {
  std::vector<Op *> canceled;
  bool drained = false, starved = false, broken = false;
  std::string broken_why;
  Nic &nic = *nics_[ep->lnic];
  {
    std::lock_guard<std::mutex> lk(ep->mu);
    if (ep->st != Endpoint::kReady) return;
    size_t nq = ep->qps.size();
    SendWr wrs[kPostBatch];
    Op *batch[kPostBatch];
    while (!ep->backlog.empty() && !broken) {
      QpCtx *q = nullptr;
      for (size_t k = 0; k < nq; k++) {
        QpCtx *c = ep->qps[(ep->rr + k) % nq].get();
        if (c->posted.load(std::memory_order_relaxed) < kSqDepth) {
          q = c;
          ep->rr = static_cast<uint32_t>((ep->rr + k + 1) % nq);
          break;
        }
      }
      if (!q) break;  // completions will pump again
      if (nic.outstanding.load(std::memory_order_relaxed) >= nic.cq_cap) {
        starved = true;
        break;
      }
      // Never more outstanding than the CQ holds: one more is an overrun, which loses the CQ.
      size_t room = std::min<size_t>(
          {kPostBatch, kSqDepth - q->posted.load(std::memory_order_relaxed),
           static_cast<size_t>(nic.cq_cap - nic.outstanding.load(std::memory_order_relaxed))});
      uint64_t now = now_ms();
      size_t k = 0;
      while (k < room && !ep->backlog.empty()) {
        Op *op = ep->backlog.front();
        ep->backlog.pop_front();
        if (target_->canceled(op->root())) {
          canceled.push_back(op);
          continue;
        }
        op->qp = q;
        op->posted_ms = now;
        batch[k] = op;
        wrs[k] = {reinterpret_cast<uint64_t>(op),
                  op->s.op == MC_READ ? Opcode::kRead : Opcode::kWrite,
                  reinterpret_cast<uint64_t>(op->s.local),
                  op->lkey,
                  static_cast<uint32_t>(op->s.len),
                  op->s.remote,
                  op->rkey};
        k++;
      }
      if (!k) continue;
      size_t posted = 0;
      Status st;
      {
        std::lock_guard<std::mutex> ql(q->mu);
        for (size_t i = 0; i < k; i++) q->fifo.push_back(batch[i]);
        st = q->qp->post(wrs, k, &posted);
        for (size_t i = posted; i < k; i++) q->fifo.pop_back();
      }
      q->posted.fetch_add(static_cast<uint32_t>(posted), std::memory_order_relaxed);
      ep->inflight += static_cast<int64_t>(posted);
      nic.outstanding.fetch_add(static_cast<int64_t>(posted), std::memory_order_relaxed);
      wr_posted_.fetch_add(posted, std::memory_order_relaxed);
      uint64_t b = 0;
      for (size_t i = 0; i < posted; i++) b += wrs[i].len;  // (the ops may have ended already)
      nic.bytes.fetch_add(b, std::memory_order_relaxed);
      if (posted < k) {
        for (size_t i = k; i-- > posted;) ep->backlog.push_front(batch[i]);
        broken = true;
        broken_why = st.message();
      }
    }
    drained = ep->draining && ep->backlog.empty() && ep->inflight == 0;
  }
  if (starved) {
    std::lock_guard<std::mutex> lk(nic.mu);
    nic.starved.push_back(ep);
  }
  for (Op *op : canceled) finish(op, MC_ERR_CANCELED);
  if (broken) retire_ep(ep, MC_ERR_TRANSPORT, "posting failed: " + broken_why, true);
  if (drained) reap(ep, false);
}

void RdmaTransport::check_nic(Nic &nic) {
  PortInfo p;
  if (!nic.dev->query_port(opts_.rdma_gid_index, &p).ok() || !p.active) nic_down(nic, "its port is down");
}

void RdmaTransport::nic_down(Nic &nic, const std::string &why) {
  if (!nic.up.exchange(false)) return;
  nic_failovers_++;
  MC_LOGW("rdma: NIC " << nic.dev->name() << " taken out of use (" << why
                       << "); its work moves to the other NICs");
  std::vector<std::shared_ptr<Endpoint>> eps;
  {
    std::lock_guard<std::mutex> lk(live_mu_);
    for (auto &[p, ep] : live_)
      if (ep->lnic == nic.idx) eps.push_back(ep);
  }
  for (auto &ep : eps) retire_ep(ep, MC_ERR_TRANSPORT, "NIC " + nic.dev->name() + " is down", true);
}

void RdmaTransport::poll_loop(Nic *nic) {
  Wc wcs[kPollBatch];
  std::vector<std::shared_ptr<Endpoint>> touched;
  int idle = 0;
  while (!pollers_stop_.load(std::memory_order_relaxed)) {
    int n = nic->cq->poll(wcs, kPollBatch);
    if (n == 0) {
      std::vector<std::shared_ptr<Endpoint>> starved;
      {
        std::lock_guard<std::mutex> lk(nic->mu);
        starved.swap(nic->starved);
      }
      for (auto &ep : starved) pump(ep);
      if (++idle < 64) {
        std::this_thread::yield();
        continue;
      }
      nic->cq->wait(100);
      idle = 0;
      continue;
    }
    idle = 0;
    touched.clear();
    for (int i = 0; i < n; i++) {
      Op *op = reinterpret_cast<Op *>(wcs[i].wr_id);
      QpCtx *q = op->qp;
      Endpoint *ep = q->ep;
      {
        std::lock_guard<std::mutex> lk(q->mu);
        if (!q->fifo.empty() && q->fifo.front() == op) {
          q->fifo.pop_front();
        } else {
          auto it = std::find(q->fifo.begin(), q->fifo.end(), op);
          if (it != q->fifo.end()) q->fifo.erase(it);
        }
      }
      q->posted.fetch_sub(1, std::memory_order_relaxed);
      nic->outstanding.fetch_sub(1, std::memory_order_relaxed);
      std::shared_ptr<Endpoint> self = ep->shared_from_this();
      if (wcs[i].status == WcStatus::kSuccess) {
        finish(op, MC_OK);
      } else {
        WcStatus ws = wcs[i].status;
        mc_status_t fst;
        bool ep_retry;
        bool dead;
        bool bystander;  // flushed because another op's key was refused on this endpoint
        mc_status_t dead_st;
        {
          std::lock_guard<std::mutex> lk(ep->mu);
          dead = ep->st == Endpoint::kDead;
          dead_st = ep->fail_status;
          ep_retry = ep->retry;
          bystander = ws == WcStatus::kWrFlushErr && ep->free_retry;
          if (ws == WcStatus::kRemAccessErr && !dead) ep->free_retry = true;
        }
        // An error on an endpoint we did not retire ourselves: is it our port? (A killed port
        // shows up as flushes only.) Checked before the retry so it goes to another NIC.
        if (!dead) check_nic(*nic);
        if (ws != WcStatus::kWrFlushErr) {
          MC_LOGD("rdma: " << nic->dev->name() << " QP " << wcs[i].qpn << " to " << ep->peer_name << ": "
                           << wc_status_name(ws));
        }
        if (!dead)
          retire_ep(self, MC_ERR_TRANSPORT, std::string("work request failed: ") + wc_status_name(ws), true);
        if (ws == WcStatus::kRemAccessErr) {
          refused(op);  // maybe a stale rkey: refreshed once, then DENIED
        } else if (ws == WcStatus::kRemInvReqErr) {
          fst = MC_ERR_DENIED;  // the target's QP refused the operation: no retry changes that
          finish(op, fst);
        } else if (ws == WcStatus::kLocProtErr || ws == WcStatus::kLocLenErr) {
          finish(op, MC_ERR_TRANSPORT);
        } else if (dead && !ep_retry) {
          finish(op, dead_st);
        } else if (bystander) {
          retry_or_fail(op, MC_ERR_TRANSPORT, false);
        } else {
          retry_or_fail(op, ws == WcStatus::kRetryExcErr ? MC_ERR_PEER_DOWN : MC_ERR_TRANSPORT);
        }
      }
      bool reap_now;
      {
        std::lock_guard<std::mutex> lk(ep->mu);
        ep->inflight--;
        reap_now = (ep->st == Endpoint::kDead || ep->draining) && ep->inflight == 0 && ep->backlog.empty();
      }
      if (reap_now)
        reap(self, false);
      else if (std::find(touched.begin(), touched.end(), self) == touched.end())
        touched.push_back(std::move(self));
    }
    for (auto &ep : touched) pump(ep);
    touched.clear();
  }
}

void RdmaTransport::nic_back(Nic &nic) {
  if (nic.cq_lost.load()) return;
  PortInfo p;
  if (nic.dev->query_port(opts_.rdma_gid_index, &p).ok() && p.active && !nic.up.exchange(true))
    MC_LOGI("rdma: NIC " << nic.dev->name() << " is back in use");
}

// Every posted WR is bounded by timeout_ms: a QP whose oldest WR has had no completion that
// long (a wedged NIC, a path that drops everything while the control channel still answers)
// fails its endpoint with MC_ERR_TIMEOUT and no retry - its QPs go to ERR, so what they hold
// comes back as flushes and fails with that status, and nothing waits on them forever.
void RdmaTransport::check_deadlines() {
  std::vector<std::shared_ptr<Endpoint>> eps, late;
  {
    std::lock_guard<std::mutex> lk(live_mu_);
    for (auto &[p, ep] : live_) eps.push_back(ep);
  }
  uint64_t now = now_ms();
  for (auto &ep : eps) {
    std::lock_guard<std::mutex> lk(ep->mu);
    if (ep->st != Endpoint::kReady) continue;
    for (auto &q : ep->qps) {
      std::lock_guard<std::mutex> ql(q->mu);
      // (posted_ms may be later than now: posted since now was read.)
      if (!q->fifo.empty() && q->fifo.front()->posted_ms + opts_.timeout_ms < now) {
        late.push_back(ep);
        break;
      }
    }
  }
  for (auto &ep : late) {
    deadline_expired_++;
    retire_ep(ep, MC_ERR_TIMEOUT,
              "no RDMA completion within timeout_ms (" + std::to_string(opts_.timeout_ms) + " ms) on NIC " +
                  nics_[ep->lnic]->dev->name() + " to " + ep->peer_name + "'s " + ep->rnic,
              false);
  }
}

void RdmaTransport::async_loop() {
  uint64_t last_check = 0;
  while (!pollers_stop_.load()) {
    for (auto &n : nics_) {
      AsyncEvent ev;
      while (n->dev->next_event(&ev, 0)) {
        if (ev.kind == AsyncEvent::kPortError || ev.kind == AsyncEvent::kDeviceFatal) {
          nic_down(*n, ev.kind == AsyncEvent::kPortError ? "port error event" : "device fatal event");
        } else if (ev.kind == AsyncEvent::kCqErr) {
          // The CQ overran: completions were lost and its QPs are in ERR. Work still posted
          // comes back as flushes or is failed when the endpoints are reaped; the NIC stays
          // out of use (its CQ cannot be trusted again).
          cq_errors_++;
          n->cq_lost.store(true);
          nic_down(*n, "its completion queue overran (CQ error event)");
        } else if (ev.kind == AsyncEvent::kPortActive) {
          check_nic(*n);
          nic_back(*n);
        }
      }
    }
    uint64_t now = now_ms();
    if (now - last_check >= 200) {  // a NIC that came back without an event
      last_check = now;
      for (auto &n : nics_)
        if (!n->up.load()) nic_back(*n);
    }
    check_deadlines();
    std::unique_lock<std::mutex> lk(async_mu_);
    async_cv_.wait_for(lk, std::chrono::milliseconds(20), [&] { return pollers_stop_.load(); });
  }
}

// ------------------------------------------------------------------------------ lifecycle

void RdmaTransport::shutdown() {
  if (stopping_.exchange(true)) return;
  {
    std::unique_lock<std::mutex> lk(threads_mu_);
    threads_cv_.wait(lk, [&] { return threads_ == 0; });
  }
  std::map<std::string, std::shared_ptr<PeerState>> peers;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    peers.swap(peers_);
  }
  for (auto &[n, ps] : peers) retire_peer(ps, MC_ERR_PEER_DOWN, "the engine is shutting down");
  std::vector<std::shared_ptr<Endpoint>> rest;
  {
    std::lock_guard<std::mutex> lk(live_mu_);
    for (auto &[p, ep] : live_) rest.push_back(ep);
  }
  for (auto &ep : rest) retire_ep(ep, MC_ERR_PEER_DOWN, "the engine is shutting down", false);
  rest.clear();
  {
    // The pollers collect the flushes; bounded, since ERR flushes at once.
    std::unique_lock<std::mutex> lk(live_mu_);
    live_cv_.wait_for(lk, std::chrono::milliseconds(std::max<uint32_t>(opts_.timeout_ms, 100)),
                      [&] { return live_.empty(); });
    for (auto &[p, ep] : live_) rest.push_back(ep);
  }
  pollers_stop_.store(true);
  async_cv_.notify_all();
  for (auto &n : nics_) {
    n->cq->wake();
    if (n->poller.joinable()) n->poller.join();
  }
  if (async_.joinable()) async_.join();
  for (auto &ep : rest) reap(ep, true);
  for (auto &n : nics_) n->starved.clear();
  {
    std::unique_lock<std::shared_mutex> lk(mr_mu_);
    mrs_.clear();
  }
  for (auto &n : nics_) n->cq.reset();
  for (auto &n : nics_) n->dev.reset();
}

std::string RdmaTransport::stats_json() {
  json devs = json::array(), nics = json::array(), nic_bytes = json::object();
  uint64_t up = 0;
  for (auto &n : nics_) {
    std::string name = n->dev ? n->dev->name() : std::string();
    devs.push_back(name);
    if (n->dev) nic_bytes[name] = n->bytes.load();
    up += n->up.load();
    // Per NIC (GET /metrics labels them nic=NAME): whether it carries traffic, work requests in
    // flight on its CQ, and whether that CQ was lost to an overrun.
    nics.push_back({{"name", name},
                    {"up", n->up.load()},
                    {"outstanding", std::max<int64_t>(0, n->outstanding.load())},
                    {"cq_lost", n->cq_lost.load()}});
  }
  size_t live;
  {
    std::lock_guard<std::mutex> lk(live_mu_);
    live = live_.size();
  }
  size_t cached;
  {
    std::lock_guard<std::mutex> lk(lru_mu_);
    cached = lru_.size();
  }
  uint64_t c = qps_created_.load(), d = qps_destroyed_.load();
  json j{{"devices", devs},
         {"nics", nics},
         {"devices_up", up},
         {"nic_bytes", nic_bytes},
         {"qps_live", c - d},
         {"qps_created", c},
         {"qps_destroyed", d},
         {"endpoints", live},
         {"endpoints_cached", cached},
         {"evictions", evictions_.load()},
         {"connects", connects_.load()},
         {"accepts", accepts_.load()},
         {"gpu_mrs", gpu_mrs_.load()},
         {"mr_regions", regions_.load()},
         {"mr_region_max", region_},
         {"paths_closed", paths_closed_.load()},
         {"handed_over", handed_over_.load()},
         {"gpu_mr_failures", gpu_mr_failures_.load()},
         {"gpu_direct", gpu_capable_ && gpu_bad_.load() == 0},
         {"setup_failed", setup_failed_.load()},
         {"wr_posted", wr_posted_.load()},
         {"wr_failed", wr_failed_.load()},
         {"retries", retries_.load()},
         {"nic_failovers", nic_failovers_.load()},
         {"access_failures", access_failures_.load()},
         {"key_refreshes", key_refreshes_.load()},
         {"deadline_expired", deadline_expired_.load()},
         {"cq_errors", cq_errors_.load()}};
  return j.dump();
}

std::string RdmaTransport::peer_stats(const std::string &peer_name, PeerPath &peer) {
  auto &p = static_cast<RdmaPeer &>(peer);
  uint64_t qps = 0;
  {
    std::lock_guard<std::mutex> lk(p.ps->mu);
    for (auto &[k, ep] : p.ps->eps) {
      std::lock_guard<std::mutex> el(ep->mu);
      if (ep->st == Endpoint::kReady) qps += ep->qps.size();
    }
  }
  uint64_t rec = 0;
  {
    std::lock_guard<std::mutex> lk(peers_mu_);
    auto it = name_stats_.find(peer_name);
    if (it != name_stats_.end()) rec = it->second.recreations;
  }
  return "\"qps\":" + std::to_string(qps) + ",\"qp_recreations\":" + std::to_string(rec);
}

}  // namespace

std::unique_ptr<Transport> make_rdma_transport(const RdmaOptions &opts, Host *target,
                                               const std::string &engine_name, Status *st) {
  *st = Status::Ok();
  std::vector<std::unique_ptr<Device>> devs;
  // The simulated NIC's control region: room for every QP of a full endpoint cache.
  uint64_t blk = 64 + uint64_t(kSqDepth) * 96;
  uint64_t ctrl = std::min<uint64_t>(
      blk * opts.rdma_max_endpoints * opts.rdma_qps_per_endpoint * 2 + (1 << 20), 1ull << 30);
  Status s = open_devices(opts.rdma_devices, ctrl, opts.rdma_port, &devs);
  bool named = opts.rdma_devices != "auto" && !opts.rdma_devices.empty();
  if (!s.ok()) {
    if (named) *st = Err(s.code(), "rdma_devices=" + opts.rdma_devices + ": " + s.message());
    return nullptr;
  }
  if (devs.empty()) {
    if (named) *st = Err(MC_ERR_UNSUPPORTED, "rdma_devices=" + opts.rdma_devices + ": no usable RDMA device");
    return nullptr;
  }
  auto t = std::make_unique<RdmaTransport>(opts, target, engine_name);
  s = t->start(std::move(devs));
  if (!s.ok()) {
    t->shutdown();
    if (named)
      *st = s;
    else
      MC_LOGW("rdma transport unavailable: " << s.message());
    return nullptr;
  }
  return t;
}

}  // namespace mc
