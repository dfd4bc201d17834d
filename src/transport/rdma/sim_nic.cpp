// The simulated NIC and fabric (see sim_nic.h for what it enforces).
//
// Layout of one QP's block in its NIC's control region (carved with MemHeap, 64-byte aligned):
//   RingHdr (64 B) | Wqe[depth] (64 B each) | Cqe[depth] (32 B each)
// The send ring holds posted WQEs in [sq_head, sq_tail) and executed ones whose CQE was not
// consumed yet in [cq_head, sq_head); CQE i lives in slot i % depth of the completion ring, so
// a slot is reused only after its completion was polled. The NIC keeps its own copy of the
// indices and of the wr_ids (the shadow): a header that disagrees with it, or a WQE/CQE whose
// seal does not match, is corruption.
#include "transport/rdma/sim_nic.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include "gpu/cuda_loader.h"
#include "util/config.h"

namespace mc::rdma {

const char *qp_state_name(QpState s) {
  switch (s) {
    case QpState::kReset:
      return "RESET";
    case QpState::kInit:
      return "INIT";
    case QpState::kRtr:
      return "RTR";
    case QpState::kRts:
      return "RTS";
    case QpState::kErr:
      return "ERR";
  }
  return "?";
}

const char *wc_status_name(WcStatus s) {
  switch (s) {
    case WcStatus::kSuccess:
      return "success";
    case WcStatus::kLocLenErr:
      return "local length error";
    case WcStatus::kLocProtErr:
      return "local protection error";
    case WcStatus::kWrFlushErr:
      return "flushed";
    case WcStatus::kRemAccessErr:
      return "remote access error";
    case WcStatus::kRemInvReqErr:
      return "remote invalid request";
    case WcStatus::kRetryExcErr:
      return "transport retry counter exceeded";
    case WcStatus::kFatalErr:
      return "fatal error";
  }
  return "?";
}

namespace sim {
namespace {

// What ibv_reg_mr costs the host, when MC_SIM_REG_PAGE_NS models it (benchmarks): the kernel
// walks and pins every page (each is read here) and spends page_ns of CPU per page on it.
void pin_pages(void *addr, uint64_t len, uint64_t page_ns) {
  if (!page_ns) return;
  auto *p = static_cast<volatile const uint8_t *>(addr);
  uint64_t pages = (len + 4095) / 4096;
  auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(pages * page_ns);
  uint8_t x = 0;
  for (uint64_t off = 0; off < len; off += 4096) x ^= p[off];
  (void)x;
  while (std::chrono::steady_clock::now() < until) {
  }
}

constexpr uint64_t kHdrMagic = 0x4d4353494d515031ull;  // "MCSIMQP1"
constexpr uint32_t kMaxDepth = 1u << 15;
constexpr uint8_t kMaxRdAtomic = 16;  // the device's max_qp_rd_atom / max_qp_init_rd_atom

uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

struct RingHdr {
  uint64_t magic;
  uint32_t qpn;
  uint32_t depth;
  uint64_t sq_tail, sq_head, cq_head;
  uint64_t seal;
  uint64_t pad[2];
};
struct Wqe {
  uint64_t wr_id, local, remote, due_ns;
  uint32_t lkey, rkey, len;
  uint8_t op, pad[3];
  uint64_t seal, pad2;
};
struct Cqe {
  uint64_t wr_id;
  uint32_t byte_len;
  uint8_t status, pad[3];
  uint64_t seal, pad2;
};
static_assert(sizeof(RingHdr) == 64 && sizeof(Wqe) == 64 && sizeof(Cqe) == 32);

uint64_t seal_of(const RingHdr &h) { return mix64(h.magic ^ (uint64_t(h.qpn) << 32 | h.depth)); }
uint64_t seal_of(const Wqe &w) {
  return mix64(w.wr_id ^
               mix64(w.local ^ mix64(w.remote ^ mix64((uint64_t(w.lkey) << 32 | w.rkey) ^
                                                      mix64((uint64_t(w.len) << 8 | w.op) ^ w.due_ns)))));
}
uint64_t seal_of(const Cqe &c) {
  return mix64(c.wr_id ^ mix64((uint64_t(c.byte_len) << 8) | c.status) ^ 0x5a5a);
}

// An MR. addr is what work requests use (the VA of host memory, the iova of a dma-buf). Where
// its bytes are: host memory at addr itself; a dma-buf the sim could mmap (host-backed) at
// cpu + (a - addr); a dma-buf of GPU memory that this process exported through the CUDA driver
// at device address gpu + (a - addr), moved with the driver's copy engine, since neither the CPU
// nor the sim can reach GPU memory through the fd the way a NIC's DMA engine does.
struct SimMr {
  enum Kind : uint8_t { kHost, kDmabufMapped, kDmabufGpu };
  uint64_t addr = 0, len = 0;
  uint32_t lkey = 0, rkey = 0;  // distinct, as on hardware: an lkey is no rkey
  std::atomic<uint32_t> access{0};
  std::atomic<int64_t> users{0};
  Kind kind = kHost;
  uint8_t *cpu = nullptr;  // kDmabufMapped
  uint64_t gpu = 0;        // kDmabufGpu
  int gpu_dev = -1;
  void *map = nullptr;  // the mapping to undo
  size_t map_len = 0;
  int fd = -1;  // our reference on the dma-buf, as the kernel holds one
  ~SimMr() {
    if (map) ::munmap(map, map_len);
    if (fd >= 0) ::close(fd);
  }
  // Where the byte that work requests address at a lives; for kDmabufGpu a device address.
  uint64_t at(uint64_t a) const {
    switch (kind) {
      case kDmabufMapped:
        return reinterpret_cast<uint64_t>(cpu) + (a - addr);
      case kDmabufGpu:
        return gpu + (a - addr);
      default:
        return a;
    }
  }
};

// Copies between MRs where one side is GPU memory: through the CUDA driver on a stream of this
// thread's own, waited for, so the completion means the bytes landed (as a NIC's would).
bool gpu_copy(int dev, uint64_t dst, uint64_t src, uint64_t len) {
  const cuda::Api *a = cuda::api();
  if (!a || !cuda::use_device(dev).ok()) return false;
  thread_local std::unordered_map<int, cuda::CUstream> streams;  // kept for the thread's life
  auto &st = streams[dev];
  if (!st && a->cuStreamCreate(&st, cuda::CU_STREAM_NON_BLOCKING) != cuda::CUDA_SUCCESS) {
    st = nullptr;
    return false;
  }
  return a->cuMemcpyAsync(dst, src, len, st) == cuda::CUDA_SUCCESS &&
         a->cuStreamSynchronize(st) == cuda::CUDA_SUCCESS;
}

struct DevCore;

struct CqCore {
  std::mutex mu;  // guards active, sleeping and every QpCore::in_active of this CQ
  std::condition_variable cv;
  std::deque<std::shared_ptr<struct QpCore>> active;  // QPs with work or completions pending
  bool sleeping = false;
  bool woken = false;
  std::mutex exec_mu;                // one executor at a time; a QP's destroy waits for the running one
  std::atomic<bool> delayed{false};  // some WQE waits for its due time
  // Finite depth, as on hardware: more WRs outstanding (posted, completion not polled yet) on
  // the QPs of this CQ than it holds is an overrun: a CQ error event and its QPs go to ERR.
  uint32_t depth = 0;
  std::atomic<int64_t> outstanding{0};
  std::atomic<bool> overrun{false};
};

struct QpCore {
  DevCore *dev = nullptr;  // the device outlives its QPs
  std::shared_ptr<CqCore> cq;
  uint32_t qpn = 0;
  uint64_t off = 0, blk = 0;
  uint32_t depth = 0;
  RingHdr *hdr = nullptr;
  Wqe *sq = nullptr;
  Cqe *cqr = nullptr;
  // Read by remote executors without a lock.
  std::atomic<QpState> state{QpState::kReset};
  std::atomic<bool> destroyed{false};
  std::atomic<uint32_t> access{0};
  std::atomic<uint32_t> dest_qpn{0};
  std::atomic<uint32_t> dest_dev{0};
  // mu guards everything below.
  std::mutex mu;
  bool in_active = false;  // (CqCore::mu)
  bool fatal = false;
  uint64_t sq_tail = 0, sq_head = 0, cq_head = 0;  // the NIC's own copy of the indices
  std::vector<uint64_t> shadow;                    // wr_id by slot
  std::deque<Wc> fatal_wcs;                        // completions after corruption
  // Set by modify_qp, read by the peer's executor: what both ends must agree on.
  std::atomic<uint32_t> path_mtu{0};
  std::atomic<uint32_t> rq_psn{0};  // RTR: the PSN the responder expects first
  std::atomic<uint32_t> sq_psn{0};  // RTS: the PSN the requester sends first
  std::atomic<uint64_t> ack_ns{0};  // RTS: local ACK timeout (0: none, waits forever)
  std::atomic<uint32_t> retry_cnt{0};
  uint64_t stall_since = 0;  // (exec_mu) when the head WQE first went unanswered
  std::shared_ptr<DevCore> rdev;
  std::shared_ptr<QpCore> rqp;
};

struct DevCore {
  uint32_t id = 0;
  std::string name;
  uint64_t max_mr = UINT64_MAX;  // max_mr_size: MC_SIM_MAX_MR_SIZE when the NIC was opened
  uint64_t reg_page_ns = 0;      // MC_SIM_REG_PAGE_NS: CPU time reg_mr spends per 4 KiB page
  uint8_t gid[16] = {};
  std::atomic<bool> port_up{true};
  std::atomic<bool> gone{false};
  bool ib = false;                   // InfiniBand port (LID routed) rather than RoCE
  std::atomic<bool> stalled{false};  // its engine hangs: WQEs neither run nor complete
  std::atomic<int> fail_modify{0};
  std::atomic<int> fail_access{0};
  std::atomic<uint32_t> delay_us{0};
  // mr_mu guards lmrs, rmrs, next_key and every SimMr's keys.
  std::shared_mutex mr_mu;
  std::unordered_map<uint32_t, SimMr *> lmrs;  // by lkey
  std::unordered_map<uint32_t, SimMr *> rmrs;  // by rkey
  uint32_t next_key = 1;
  // qp_mu guards qps and next_qpn.
  std::mutex qp_mu;
  std::unordered_map<uint32_t, std::weak_ptr<QpCore>> qps;
  uint32_t next_qpn = 0x100;
  uint8_t *ctrl = nullptr;
  uint64_t ctrl_len = 0;
  std::unique_ptr<MemHeap> heap;
  // ev_mu guards events.
  std::mutex ev_mu;
  std::condition_variable ev_cv;
  std::deque<AsyncEvent> events;

  ~DevCore() {
    if (ctrl) ::munmap(ctrl, ctrl_len);
  }
  // The MR of a key, held against deregistration until unpin: local keys (the requester's
  // lkey) and remote keys (the responder's rkey) are looked up in their own tables.
  SimMr *pin(uint32_t key, bool remote) {
    std::shared_lock<std::shared_mutex> lk(mr_mu);
    auto &m = remote ? rmrs : lmrs;
    auto it = m.find(key);
    if (it == m.end()) return nullptr;
    it->second->users.fetch_add(1, std::memory_order_acquire);
    return it->second;
  }
  // A key no MR of this NIC uses yet: a fresh index in the upper 24 bits, a per-NIC byte in
  // the lower 8 (as mlx5 does), so that a key of one NIC is not valid on another. Caller holds
  // mr_mu exclusively.
  uint32_t new_key() {
    uint32_t k;
    do {
      k = (next_key++ << 8) | (id & 0xff);
    } while (k == 0 || lmrs.count(k) || rmrs.count(k));
    return k;
  }
  static void unpin(SimMr *m) { m->users.fetch_sub(1, std::memory_order_release); }
  void event(AsyncEvent::Kind k, uint32_t qpn = 0) {
    std::lock_guard<std::mutex> lk(ev_mu);
    AsyncEvent e;
    e.kind = k;
    e.qpn = qpn;
    events.push_back(e);
    ev_cv.notify_all();
  }
  std::shared_ptr<QpCore> find_qp(uint32_t qpn) {
    std::lock_guard<std::mutex> lk(qp_mu);
    auto it = qps.find(qpn);
    return it == qps.end() ? nullptr : it->second.lock();
  }
  std::vector<std::shared_ptr<QpCore>> live_qps() {
    std::vector<std::shared_ptr<QpCore>> v;
    std::lock_guard<std::mutex> lk(qp_mu);
    for (auto &[n, w] : qps)
      if (auto q = w.lock()) v.push_back(std::move(q));
    return v;
  }
};

struct Fabric {
  std::mutex mu;  // guards everything below
  std::unordered_map<uint32_t, std::weak_ptr<DevCore>> by_id;
  std::unordered_map<std::string, std::weak_ptr<DevCore>> by_name;
  uint32_t next_id = 1;
};
Fabric &the_fabric() {
  static Fabric *f = new Fabric;  // never destroyed: engines may outlive static destruction
  return *f;
}
std::shared_ptr<DevCore> dev_by_name(const std::string &n) {
  std::lock_guard<std::mutex> lk(the_fabric().mu);
  auto it = the_fabric().by_name.find(n);
  return it == the_fabric().by_name.end() ? nullptr : it->second.lock();
}
std::shared_ptr<DevCore> dev_by_id(uint32_t id) {
  std::lock_guard<std::mutex> lk(the_fabric().mu);
  auto it = the_fabric().by_id.find(id);
  return it == the_fabric().by_id.end() ? nullptr : it->second.lock();
}
std::string fabric_name() { return "sim:" + std::to_string(::getpid()); }

// Queues q on its CQ so the executor looks at it. Caller holds q->mu.
void schedule(const std::shared_ptr<QpCore> &q) {
  CqCore &c = *q->cq;
  std::lock_guard<std::mutex> lk(c.mu);
  if (!q->in_active) {
    q->in_active = true;
    c.active.push_back(q);
  }
  if (c.sleeping) c.cv.notify_one();
}

bool hdr_ok(const QpCore &q) {
  const RingHdr &h = *q.hdr;
  return h.magic == kHdrMagic && h.qpn == q.qpn && h.depth == q.depth && h.seal == seal_of(h) &&
         h.sq_tail == q.sq_tail && h.sq_head == q.sq_head && h.cq_head == q.cq_head;
}

// The ring cannot be trusted any more: every outstanding WR completes with kFatalErr from the
// NIC's shadow of the wr_ids. Caller holds q.mu.
void make_fatal(QpCore &q, const char *why) {
  (void)why;
  if (q.fatal) return;
  q.fatal = true;
  q.state.store(QpState::kErr);
  for (uint64_t i = q.cq_head; i < q.sq_tail; i++)
    q.fatal_wcs.push_back({q.shadow[i % q.depth], q.qpn, 0, WcStatus::kFatalErr});
  q.cq_head = q.sq_head = q.sq_tail;
  q.dev->event(AsyncEvent::kQpFatal, q.qpn);
}

bool inside(uint64_t a, uint64_t len, const SimMr &m) {
  return a >= m.addr && len <= m.len && a - m.addr <= m.len - len;
}

// Runs one WQE as the requester's and the responder's NICs would.
WcStatus execute(QpCore &q, const Wqe &w, const std::shared_ptr<DevCore> &rdev,
                 const std::shared_ptr<QpCore> &rq) {
  if (w.len > (1u << 31)) return WcStatus::kLocLenErr;
  bool read = w.op == static_cast<uint8_t>(Opcode::kRead);
  SimMr *lm = q.dev->pin(w.lkey, false);
  if (!lm) return WcStatus::kLocProtErr;
  if (!inside(w.local, w.len, *lm) || (read && !(lm->access.load() & kLocalWrite))) {
    DevCore::unpin(lm);
    return WcStatus::kLocProtErr;
  }
  WcStatus st = WcStatus::kSuccess;
  SimMr *rm = nullptr;
  QpState rs = rq ? rq->state.load() : QpState::kReset;
  if (!q.dev->port_up.load() || !rdev || rdev->gone.load() || !rdev->port_up.load() || !rq ||
      rq->destroyed.load() || (rs != QpState::kRtr && rs != QpState::kRts) || rq->dest_qpn.load() != q.qpn ||
      rq->dest_dev.load() != q.dev->id) {
    st = WcStatus::kRetryExcErr;
  } else if (rq->rq_psn.load() != q.sq_psn.load() ||
             (q.path_mtu.load() != rq->path_mtu.load() &&
              w.len > std::min(q.path_mtu.load(), rq->path_mtu.load()))) {
    // The responder drops packets out of sequence, or larger than its path MTU: the requester
    // hears nothing back and retries until its retry count runs out.
    st = WcStatus::kRetryExcErr;
  } else if (!(rq->access.load() & (read ? kRemoteRead : kRemoteWrite))) {
    st = WcStatus::kRemInvReqErr;
  } else {
    rm = rdev->pin(w.rkey, true);
    if (!rm || !inside(w.remote, w.len, *rm) || !(rm->access.load() & (read ? kRemoteRead : kRemoteWrite)))
      st = WcStatus::kRemAccessErr;
  }
  if (st == WcStatus::kSuccess && w.len) {
    uint64_t l = lm->at(w.local), r = rm->at(w.remote);
    uint64_t dst = read ? l : r, src = read ? r : l;
    if (lm->kind == SimMr::kDmabufGpu || rm->kind == SimMr::kDmabufGpu) {
      // Unified addressing: one driver copy handles device<->host and device<->device.
      int dev = lm->kind == SimMr::kDmabufGpu ? lm->gpu_dev : rm->gpu_dev;
      if (!gpu_copy(dev, dst, src, w.len)) st = WcStatus::kFatalErr;  // the device failed the DMA
    } else {
      std::memcpy(reinterpret_cast<void *>(dst), reinterpret_cast<const void *>(src), w.len);
    }
  }
  if (rm) DevCore::unpin(rm);
  DevCore::unpin(lm);
  return st;
}

// A request nobody answers completes with RETRY_EXC only after the requester's ACK timeout
// ran out retry_cnt + 1 times (4.096 us * 2^timeout each), as on hardware; true while that has
// not happened yet (the WQE stays queued). No ACK timeout (0) waits forever. Caller holds
// q.cq->exec_mu.
bool unanswered_wait(QpCore &q, uint64_t now) {
  uint64_t ack = q.ack_ns.load();
  if (!q.stall_since) q.stall_since = now;
  if (!ack || now - q.stall_since < ack * (uint64_t(q.retry_cnt.load()) + 1)) return true;
  q.stall_since = 0;
  return false;
}

// More completions pending than the CQ holds: as hardware, a CQ error event, and every QP that
// completes into this CQ goes to ERR (its outstanding work flushes).
void cq_overrun(QpCore &q) {
  for (auto &o : q.dev->live_qps()) {
    if (o->cq != q.cq) continue;
    o->state.store(QpState::kErr);
    if (o.get() == &q) continue;  // the caller's, scheduled by its own run
    std::lock_guard<std::mutex> lk(o->mu);
    schedule(o);
  }
  q.dev->event(AsyncEvent::kCqErr);
}

// Executes what is due on q and moves up to room completions to out. Returns whether q still
// has work or completions pending. out[*got] is the next free slot. Caller holds
// q.cq->exec_mu.
bool run_qp(const std::shared_ptr<QpCore> &qp, Wc *out, int room, int *got) {
  QpCore &q = *qp;
  std::unique_lock<std::mutex> lk(q.mu);
  if (q.destroyed.load()) return false;
  auto deliver_fatal = [&] {
    while (room > 0 && !q.fatal_wcs.empty()) {
      out[(*got)++] = q.fatal_wcs.front();
      q.fatal_wcs.pop_front();
      room--;
    }
    return !q.fatal_wcs.empty();
  };
  if (q.fatal) return deliver_fatal();
  if (!hdr_ok(q)) {
    make_fatal(q, "ring header corrupted");
    return deliver_fatal();
  }
  uint64_t head = q.sq_head, tail = q.sq_tail;
  // Completions not yet consumed take room first.
  uint64_t pending_cqes = head - q.cq_head;
  int exec_room = room - static_cast<int>(std::min<uint64_t>(pending_cqes, static_cast<uint64_t>(room)));
  if (!q.rqp && q.rdev) q.rqp = q.rdev->find_qp(q.dest_qpn.load());
  std::shared_ptr<DevCore> rdev = q.rdev;
  std::shared_ptr<QpCore> rq = q.rqp;
  lk.unlock();

  uint64_t now = 0;
  uint64_t i = head;
  bool corrupt = false, delayed = false;
  for (; i < tail && static_cast<int>(i - head) < exec_room; i++) {
    Wqe &w = q.sq[i % q.depth];
    if (w.seal != seal_of(w)) {
      corrupt = true;
      break;
    }
    WcStatus st;
    if (q.cq->outstanding.load() > q.cq->depth && !q.cq->overrun.exchange(true)) cq_overrun(q);
    if (q.state.load() == QpState::kErr) {
      st = WcStatus::kWrFlushErr;
      q.stall_since = 0;
    } else {
      if (!now) now = now_ns();
      if (w.due_ns && w.due_ns > now) {
        delayed = true;
        break;
      }
      if (q.dev->stalled.load() || (rdev && rdev->stalled.load())) {  // hung: looked at again later
        delayed = true;
        break;
      }
      st = execute(q, w, rdev, rq);
      if (st == WcStatus::kRetryExcErr && unanswered_wait(q, now)) {
        delayed = true;
        break;
      }
      if (st != WcStatus::kSuccess) q.state.store(QpState::kErr);
    }
    Cqe &c = q.cqr[i % q.depth];
    c.wr_id = w.wr_id;
    c.byte_len = st == WcStatus::kSuccess ? w.len : 0;
    c.status = static_cast<uint8_t>(st);
    c.seal = seal_of(c);
  }

  lk.lock();
  if (q.destroyed.load()) return false;
  if (q.fatal) return deliver_fatal();  // made fatal meanwhile: what ran is reported from the shadow
  if (corrupt) {
    make_fatal(q, "WQE seal mismatch");
    return deliver_fatal();
  }
  q.sq_head = i;
  q.hdr->sq_head = i;
  while (room > 0 && q.cq_head < q.sq_head) {
    Cqe &c = q.cqr[q.cq_head % q.depth];
    if (c.seal != seal_of(c)) {
      make_fatal(q, "CQE seal mismatch");
      return deliver_fatal();
    }
    out[(*got)++] = {c.wr_id, q.qpn, c.byte_len, static_cast<WcStatus>(c.status)};
    q.cq_head++;
    room--;
  }
  q.hdr->cq_head = q.cq_head;
  if (delayed) q.cq->delayed.store(true);
  return q.cq_head < q.sq_tail;
}

// ------------------------------------------------------------------------------ objects

class SimMrHandle : public Mr {
 public:
  SimMrHandle(std::shared_ptr<DevCore> d, SimMr *m) : dev_(std::move(d)), mr_(m) {}
  ~SimMrHandle() override {
    {
      std::unique_lock<std::shared_mutex> lk(dev_->mr_mu);
      dev_->lmrs.erase(mr_->lkey);
      dev_->rmrs.erase(mr_->rkey);
    }
    // No new access can find it; wait for the ones running (copies are short).
    while (mr_->users.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    delete mr_;
  }
  uint32_t lkey() const override {
    std::shared_lock<std::shared_mutex> lk(dev_->mr_mu);
    return mr_->lkey;
  }
  uint32_t rkey() const override {
    std::shared_lock<std::shared_mutex> lk(dev_->mr_mu);
    return mr_->rkey;
  }
  // As ibv_rereg_mr(IBV_REREG_MR_CHANGE_ACCESS): new rights and a new rkey (a peer holding the
  // old one gets a remote access error); the lkey stays, so local work posted before keeps
  // working. A failure (injected: fail_next_set_access) changes nothing.
  Status set_access(uint32_t access) override {
    int n = dev_->fail_access.load();
    while (n > 0 && !dev_->fail_access.compare_exchange_weak(n, n - 1)) {
    }
    if (n > 0) return Err(MC_ERR_TRANSPORT, "rereg_mr(access) on " + dev_->name + " failed (injected fault)");
    {
      std::unique_lock<std::shared_mutex> lk(dev_->mr_mu);
      dev_->rmrs.erase(mr_->rkey);
      mr_->rkey = dev_->new_key();
      dev_->rmrs[mr_->rkey] = mr_;
      mr_->access.store(access | kLocalWrite);
    }
    while (mr_->users.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    return Status::Ok();
  }

 private:
  std::shared_ptr<DevCore> dev_;
  SimMr *mr_;
};

class SimCq : public Cq {
 public:
  explicit SimCq(std::shared_ptr<CqCore> c) : c_(std::move(c)) {}
  std::shared_ptr<CqCore> core() const { return c_; }
  int poll(Wc *out, int max) override {
    std::lock_guard<std::mutex> ex(c_->exec_mu);
    c_->delayed.store(false);
    int got = 0;
    size_t rounds;
    {
      std::lock_guard<std::mutex> lk(c_->mu);
      rounds = c_->active.size();
    }
    while (got < max && rounds > 0) {
      std::shared_ptr<QpCore> q;
      {
        std::lock_guard<std::mutex> lk(c_->mu);
        if (c_->active.empty()) break;
        q = std::move(c_->active.front());
        c_->active.pop_front();
        q->in_active = false;
      }
      rounds--;
      if (run_qp(q, out, max - got, &got)) {
        std::lock_guard<std::mutex> lk(c_->mu);
        if (!q->in_active && !q->destroyed.load()) {
          q->in_active = true;
          c_->active.push_back(q);
        }
      }
    }
    c_->outstanding.fetch_sub(got);
    return got;
  }
  void wait(int timeout_ms) override {
    std::unique_lock<std::mutex> lk(c_->mu);
    if (c_->delayed.load()) {  // work waits for its due time: look again in a millisecond
      c_->cv.wait_for(lk, std::chrono::milliseconds(1), [&] { return c_->woken; });
      c_->woken = false;
      return;
    }
    if (!c_->active.empty() || c_->woken) {
      c_->woken = false;
      return;
    }
    c_->sleeping = true;
    c_->cv.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                    [&] { return !c_->active.empty() || c_->woken; });
    c_->sleeping = false;
    c_->woken = false;
  }
  void wake() override {
    std::lock_guard<std::mutex> lk(c_->mu);
    c_->woken = true;
    c_->cv.notify_all();
  }

 private:
  std::shared_ptr<CqCore> c_;
};

class SimQp : public Qp {
 public:
  explicit SimQp(std::shared_ptr<QpCore> q) : q_(std::move(q)) {}
  ~SimQp() override {
    QpCore &q = *q_;
    {
      std::lock_guard<std::mutex> lk(q.mu);
      q.cq->outstanding.fetch_sub(static_cast<int64_t>(q.sq_tail - q.cq_head + q.fatal_wcs.size()));
      q.destroyed.store(true);
      q.state.store(QpState::kErr);
      q.rqp.reset();
      q.rdev.reset();
    }
    {
      // The executor may be reading this QP's rings: wait for its round to end.
      std::lock_guard<std::mutex> ex(q.cq->exec_mu);
      std::lock_guard<std::mutex> lk(q.cq->mu);
      auto &a = q.cq->active;
      a.erase(std::remove(a.begin(), a.end(), q_), a.end());
    }
    {
      std::lock_guard<std::mutex> lk(q.dev->qp_mu);
      q.dev->qps.erase(q.qpn);
    }
    std::memset(q.hdr, 0, sizeof(RingHdr));
    (void)q.dev->heap->free(q.off);
  }
  uint32_t qpn() const override { return q_->qpn; }
  QpState state() const override { return q_->state.load(); }

  Status to_init(uint32_t access) override {
    return modify("INIT", [&](QpState cur) -> Status {
      if (cur != QpState::kReset && cur != QpState::kInit) return illegal(cur, "INIT");
      q_->access.store(access);
      q_->state.store(QpState::kInit);
      return Status::Ok();
    });
  }
  Status to_rtr(const ConnAttr &a) override {
    return modify("RTR", [&](QpState cur) -> Status {
      if (cur != QpState::kInit) return illegal(cur, "RTR");
      if (a.mtu < 256 || a.mtu > 4096 || (a.mtu & (a.mtu - 1)))
        return Err(MC_ERR_INVALID_ARG,
                   "modify_qp(RTR): path MTU " + std::to_string(a.mtu) + " is not 256..4096");
      if (a.remote.qpn == 0 || a.remote.qpn >= (1u << 24))
        return Err(MC_ERR_INVALID_ARG, "modify_qp(RTR): bad destination QP number");
      if (a.max_dest_rd_atomic > kMaxRdAtomic)
        return Err(MC_ERR_INVALID_ARG,
                   "modify_qp(RTR): max_dest_rd_atomic " + std::to_string(a.max_dest_rd_atomic) +
                       " is above the device's max_qp_rd_atom " + std::to_string(kMaxRdAtomic));
      if (a.remote.psn >= (1u << 24)) return Err(MC_ERR_INVALID_ARG, "modify_qp(RTR): rq_psn is not 24 bits");
      if (!q_->dev->port_up.load())
        return Err(MC_ERR_TRANSPORT, "modify_qp(RTR): port of " + q_->dev->name + " is down");
      // RoCE has no LIDs: every packet carries a GRH (ah_attr.is_global) with the GID. An
      // InfiniBand port routes by LID; a GRH is optional there.
      if (!a.use_grh && !q_->dev->ib)
        return Err(MC_ERR_INVALID_ARG,
                   "modify_qp(RTR): " + q_->dev->name + " is a RoCE port: the address needs a GRH");
      if (a.use_grh && a.gid_index != 0)
        return Err(MC_ERR_INVALID_ARG,
                   "modify_qp(RTR): sgid_index " + std::to_string(a.gid_index) + " is not in the GID table");
      uint32_t id;
      if (a.use_grh) {
        id = uint32_t(a.remote.gid[13]) << 16 | uint32_t(a.remote.gid[14]) << 8 | a.remote.gid[15];
        if (a.remote.lid && a.remote.lid != (id & 0xffff)) id = 0;
      } else {
        id = a.remote.lid;  // 0 is no LID
      }
      auto rdev = id ? dev_by_id(id) : nullptr;
      if (!rdev || rdev->ib != q_->dev->ib)
        return Err(MC_ERR_INVALID_ARG,
                   "modify_qp(RTR): the destination GID/LID is not on the fabric (or on another link layer)");
      q_->rdev = std::move(rdev);
      q_->rqp.reset();
      q_->path_mtu.store(a.mtu);
      q_->rq_psn.store(a.remote.psn);
      q_->dest_qpn.store(a.remote.qpn);
      q_->dest_dev.store(id);
      q_->state.store(QpState::kRtr);
      return Status::Ok();
    });
  }
  Status to_rts(const ConnAttr &a) override {
    return modify("RTS", [&](QpState cur) -> Status {
      if (cur != QpState::kRtr && cur != QpState::kRts) return illegal(cur, "RTS");
      if (a.retry_cnt > 7 || a.rnr_retry > 7 || a.timeout > 31)
        return Err(MC_ERR_INVALID_ARG, "modify_qp(RTS): timeout/retry out of range");
      if (a.local_psn >= (1u << 24)) return Err(MC_ERR_INVALID_ARG, "modify_qp(RTS): sq_psn is not 24 bits");
      if (a.max_rd_atomic > kMaxRdAtomic)
        return Err(MC_ERR_INVALID_ARG, "modify_qp(RTS): max_rd_atomic " + std::to_string(a.max_rd_atomic) +
                                           " is above the device's max_qp_init_rd_atom " +
                                           std::to_string(kMaxRdAtomic));
      q_->sq_psn.store(a.local_psn);
      q_->ack_ns.store(a.timeout ? 4096ull << a.timeout : 0);
      q_->retry_cnt.store(a.retry_cnt);
      q_->state.store(QpState::kRts);
      return Status::Ok();
    });
  }
  Status to_err() override {
    return modify("ERR", [&](QpState) -> Status {
      q_->state.store(QpState::kErr);
      schedule(q_);  // outstanding WRs flush
      return Status::Ok();
    });
  }
  Status to_reset() override {
    return modify("RESET", [&](QpState) -> Status {
      // RESET drops the queues without completions, as hardware does.
      q_->cq->outstanding.fetch_sub(static_cast<int64_t>(q_->sq_tail - q_->cq_head + q_->fatal_wcs.size()));
      q_->sq_head = q_->cq_head = q_->sq_tail;
      q_->hdr->sq_head = q_->hdr->cq_head = q_->sq_tail;
      q_->fatal_wcs.clear();
      q_->dest_qpn.store(0);
      q_->dest_dev.store(0);
      q_->rdev.reset();
      q_->rqp.reset();
      q_->access.store(0);
      q_->state.store(QpState::kReset);
      return Status::Ok();
    });
  }

  Status post(const SendWr *wrs, size_t n, size_t *posted) override {
    *posted = 0;
    QpCore &q = *q_;
    std::lock_guard<std::mutex> lk(q.mu);
    if (q.destroyed.load()) return Err(MC_ERR_INTERNAL, "post_send on a destroyed QP");
    if (!q.fatal && !hdr_ok(q)) {
      make_fatal(q, "ring header corrupted");
      schedule(q_);
    }
    if (q.fatal)
      return Err(MC_ERR_TRANSPORT, "post_send: QP " + std::to_string(q.qpn) + "'s rings are corrupted");
    QpState st = q.state.load();
    if (st != QpState::kRts && st != QpState::kErr)
      return Err(MC_ERR_INVALID_ARG,
                 std::string("post_send on a QP in state ") + qp_state_name(st) + " (needs RTS)");
    uint32_t delay = q.dev->delay_us.load(std::memory_order_relaxed);
    uint64_t due = delay ? now_ns() + uint64_t(delay) * 1000 : 0;
    size_t k = 0;
    for (; k < n && q.sq_tail - q.cq_head < q.depth; k++) {
      uint64_t slot = q.sq_tail % q.depth;
      Wqe &w = q.sq[slot];
      w.wr_id = wrs[k].wr_id;
      w.local = wrs[k].local;
      w.remote = wrs[k].remote;
      w.due_ns = due;
      w.lkey = wrs[k].lkey;
      w.rkey = wrs[k].rkey;
      w.len = wrs[k].len;
      w.op = static_cast<uint8_t>(wrs[k].op);
      w.seal = seal_of(w);
      q.shadow[slot] = wrs[k].wr_id;
      q.sq_tail++;
    }
    q.hdr->sq_tail = q.sq_tail;
    q.cq->outstanding.fetch_add(static_cast<int64_t>(k));
    *posted = k;
    if (k) schedule(q_);
    if (k < n)
      return Err(MC_ERR_NO_MEMORY, "post_send: send queue of QP " + std::to_string(q.qpn) + " is full");
    return Status::Ok();
  }

  const std::shared_ptr<QpCore> &core() const { return q_; }

 private:
  static Status illegal(QpState cur, const char *to) {
    return Err(MC_ERR_INVALID_ARG,
               std::string("modify_qp: ") + qp_state_name(cur) + " -> " + to + " is not a legal transition");
  }
  template <class F>
  Status modify(const char *what, F f) {
    std::lock_guard<std::mutex> lk(q_->mu);
    if (q_->destroyed.load()) return Err(MC_ERR_INTERNAL, "modify_qp on a destroyed QP");
    int n = q_->dev->fail_modify.load();
    while (n > 0 && !q_->dev->fail_modify.compare_exchange_weak(n, n - 1)) {
    }
    if (n > 0) return Err(MC_ERR_TRANSPORT, std::string("modify_qp(") + what + ") failed (injected fault)");
    return f(q_->state.load());
  }
  std::shared_ptr<QpCore> q_;
};

class SimDevice : public Device {
 public:
  explicit SimDevice(std::shared_ptr<DevCore> d) : d_(std::move(d)) {}
  ~SimDevice() override {
    d_->gone.store(true);
    std::lock_guard<std::mutex> lk(the_fabric().mu);
    the_fabric().by_id.erase(d_->id);
    the_fabric().by_name.erase(d_->name);
  }
  const std::string &name() const override { return d_->name; }
  std::string fabric() const override { return fabric_name(); }
  Status query_port(int gid_index, PortInfo *out) override {
    if (gid_index > 0) return Err(MC_ERR_INVALID_ARG, "simulated NIC " + d_->name + " has one GID (index 0)");
    PortInfo p;
    p.active = d_->port_up.load();
    p.ethernet = !d_->ib;
    p.roce_v2 = !d_->ib;
    p.lid = static_cast<uint16_t>(d_->id & 0xffff);
    p.mtu = 4096;
    p.gid_index = 0;
    std::memcpy(p.gid, d_->gid, 16);
    *out = p;
    return Status::Ok();
  }
  uint64_t max_mr_size() const override { return d_->max_mr; }
  Status reg_mr(void *addr, uint64_t len, uint32_t access, std::unique_ptr<Mr> *out) override {
    if (!addr || !len) return Err(MC_ERR_INVALID_ARG, "reg_mr: empty range");
    if (len > d_->max_mr) return too_large("reg_mr", len);
    if ((access & (kRemoteWrite)) && !(access & kLocalWrite))
      return Err(MC_ERR_INVALID_ARG, "reg_mr: remote write needs local write (as in verbs)");
    pin_pages(addr, len, d_->reg_page_ns);
    auto *m = new SimMr;
    m->addr = reinterpret_cast<uint64_t>(addr);
    m->len = len;
    m->access.store(access);
    return install(m, out);
  }
  bool dmabuf_capable(std::string *why) const override {
    (void)why;
    return true;
  }
  // As ibv_reg_dmabuf_mr: the fd must be a dma-buf (here: any file with a size, lseek(SEEK_END),
  // as a dma-buf has), [offset, offset+len) inside it, iova and offset on the same page offset.
  // Where the bytes are: a dma-buf this process exported from GPU memory through the CUDA driver
  // (cuda::dmabuf_lookup), else whatever mmap of the fd gives (a host-backed dma-buf such as
  // udmabuf, or a memfd standing in for one in tests).
  Status reg_dmabuf_mr(int fd, uint64_t offset, uint64_t len, uint64_t iova, uint32_t access,
                       std::unique_ptr<Mr> *out) override {
    if (fd < 0 || !len) return Err(MC_ERR_INVALID_ARG, "reg_dmabuf_mr: no fd or an empty range");
    if (len > d_->max_mr) return too_large("reg_dmabuf_mr", len);
    if ((access & kRemoteWrite) && !(access & kLocalWrite))
      return Err(MC_ERR_INVALID_ARG, "reg_dmabuf_mr: remote write needs local write (as in verbs)");
    off_t size = ::lseek(fd, 0, SEEK_END);
    if (size < 0)
      return Err(MC_ERR_INVALID_ARG,
                 std::string("reg_dmabuf_mr: the fd is not a dma-buf (lseek: ") + std::strerror(errno) + ")");
    uint64_t sz = static_cast<uint64_t>(size);
    if (offset > sz || len > sz - offset)
      return Err(MC_ERR_INVALID_ARG, "reg_dmabuf_mr: [offset, offset+length) lies outside the dma-buf (" +
                                         std::to_string(sz) + " bytes)");
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    if (((iova ^ offset) & (page - 1)) != 0)
      return Err(MC_ERR_INVALID_ARG, "reg_dmabuf_mr: iova and offset lie at different offsets within a page");
    if (iova + len < iova) return Err(MC_ERR_INVALID_ARG, "reg_dmabuf_mr: iova range wraps");
    auto m = std::make_unique<SimMr>();
    m->addr = iova;
    m->len = len;
    m->access.store(access);
    int dev = -1;
    uint64_t gbase = 0, glen = 0;
    if (cuda::dmabuf_lookup(fd, &dev, &gbase, &glen)) {
      if (offset > glen || len > glen - offset)
        return Err(MC_ERR_INVALID_ARG, "reg_dmabuf_mr: range outside the exported GPU memory");
      m->kind = SimMr::kDmabufGpu;
      m->gpu = gbase + offset;
      m->gpu_dev = dev;
    } else {
      uint64_t moff = offset & ~(page - 1);
      size_t mlen = static_cast<size_t>(offset + len - moff);
      void *p = ::mmap(nullptr, mlen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(moff));
      if (p == MAP_FAILED)
        return Err(MC_ERR_UNSUPPORTED,
                   std::string("reg_dmabuf_mr: the simulated NIC cannot reach this dma-buf's "
                               "memory (not exported by this process's CUDA driver, and mmap "
                               "failed: ") +
                       std::strerror(errno) + ")");
      m->kind = SimMr::kDmabufMapped;
      m->map = p;
      m->map_len = mlen;
      m->cpu = static_cast<uint8_t *>(p) + (offset - moff);
    }
    m->fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (m->fd < 0) return Err(MC_ERR_NO_MEMORY, std::string("reg_dmabuf_mr: dup: ") + std::strerror(errno));
    return install(m.release(), out);
  }
  Status install(SimMr *m, std::unique_ptr<Mr> *out) {
    {
      std::unique_lock<std::shared_mutex> lk(d_->mr_mu);
      m->lkey = d_->new_key();
      d_->lmrs[m->lkey] = m;
      m->rkey = d_->new_key();
      d_->rmrs[m->rkey] = m;
    }
    *out = std::make_unique<SimMrHandle>(d_, m);
    return Status::Ok();
  }
  Status create_cq(uint32_t depth, std::unique_ptr<Cq> *out) override {
    if (depth == 0 || depth > max_cqe())
      return Err(MC_ERR_INVALID_ARG, "create_cq: depth " + std::to_string(depth) + " is not 1..max_cqe");
    auto c = std::make_shared<CqCore>();
    c->depth = depth;
    *out = std::make_unique<SimCq>(std::move(c));
    return Status::Ok();
  }
  Status create_qp(Cq *cq, uint32_t max_wr, std::unique_ptr<Qp> *out) override {
    auto *scq = dynamic_cast<SimCq *>(cq);
    if (!scq) return Err(MC_ERR_INVALID_ARG, "create_qp: the CQ is not on a simulated NIC");
    if (max_wr == 0 || max_wr > kMaxDepth) return Err(MC_ERR_INVALID_ARG, "create_qp: max_wr out of range");
    uint32_t depth = 1;
    while (depth < max_wr) depth <<= 1;
    uint64_t blk = sizeof(RingHdr) + uint64_t(depth) * (sizeof(Wqe) + sizeof(Cqe));
    uint64_t off;
    Status st = d_->heap->alloc(blk, 64, &off);
    if (!st.ok())
      return Err(MC_ERR_NO_MEMORY,
                 "create_qp: the control region of " + d_->name + " is full: " + st.message());
    auto q = std::make_shared<QpCore>();
    q->dev = d_.get();
    q->cq = scq->core();
    q->off = off;
    q->blk = blk;
    q->depth = depth;
    q->hdr = reinterpret_cast<RingHdr *>(d_->ctrl + off);
    q->sq = reinterpret_cast<Wqe *>(d_->ctrl + off + sizeof(RingHdr));
    q->cqr = reinterpret_cast<Cqe *>(d_->ctrl + off + sizeof(RingHdr) + uint64_t(depth) * sizeof(Wqe));
    q->shadow.assign(depth, 0);
    {
      std::lock_guard<std::mutex> lk(d_->qp_mu);
      do {
        d_->next_qpn = (d_->next_qpn + 1) & 0xffffff;
      } while (d_->next_qpn < 0x100 || d_->qps.count(d_->next_qpn));
      q->qpn = d_->next_qpn;
      d_->qps[q->qpn] = q;
    }
    std::memset(q->hdr, 0, sizeof(RingHdr));
    q->hdr->magic = kHdrMagic;
    q->hdr->qpn = q->qpn;
    q->hdr->depth = depth;
    q->hdr->seal = seal_of(*q->hdr);
    *out = std::make_unique<SimQp>(std::move(q));
    return Status::Ok();
  }
  uint32_t max_cqe() const override { return 1u << 22; }
  uint8_t max_init_rd_atom() const override { return kMaxRdAtomic; }
  uint8_t max_dest_rd_atom() const override { return kMaxRdAtomic; }
  bool next_event(AsyncEvent *ev, int timeout_ms) override {
    std::unique_lock<std::mutex> lk(d_->ev_mu);
    if (d_->events.empty() && timeout_ms > 0)
      d_->ev_cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return !d_->events.empty(); });
    if (d_->events.empty()) return false;
    *ev = d_->events.front();
    d_->events.pop_front();
    return true;
  }

 private:
  // As verbs: a region above the device's max_mr_size is EINVAL.
  Status too_large(const char *what, uint64_t len) const {
    return Err(MC_ERR_INVALID_ARG, std::string(what) + ": " + std::to_string(len) + " bytes is above " +
                                       d_->name + "'s max_mr_size " + std::to_string(d_->max_mr));
  }
  std::shared_ptr<DevCore> d_;
};

}  // namespace

Status open(int n, uint64_t ctrl_bytes, std::vector<std::unique_ptr<Device>> *out, bool infiniband,
            const std::vector<std::string> *names) {
  if (names) n = static_cast<int>(names->size());
  ctrl_bytes = std::max<uint64_t>(ctrl_bytes, 1 << 20);
  ctrl_bytes = (ctrl_bytes + 4095) & ~uint64_t(4095);
  std::vector<std::unique_ptr<Device>> v;
  uint64_t max_mr = UINT64_MAX;
  if (const char *e = std::getenv("MC_SIM_MAX_MR_SIZE"); e && *e) {
    if (!parse_size(e, &max_mr) || max_mr < 4096)
      return Err(MC_ERR_INVALID_ARG, std::string("MC_SIM_MAX_MR_SIZE=") + e + " is not a size of 4K or more");
  }
  uint64_t page_ns = 0;
  if (const char *e = std::getenv("MC_SIM_REG_PAGE_NS"); e && *e) {
    int64_t v;
    if (!parse_int(e, 0, 1000000, &v))
      return Err(MC_ERR_INVALID_ARG,
                 std::string("MC_SIM_REG_PAGE_NS=") + e + " is not an integer 0..1000000");
    page_ns = static_cast<uint64_t>(v);
  }
  for (int i = 0; i < n; i++) {
    auto d = std::make_shared<DevCore>();
    d->max_mr = max_mr;
    d->reg_page_ns = page_ns;
    void *p = ::mmap(nullptr, ctrl_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (p == MAP_FAILED) return Err(MC_ERR_NO_MEMORY, "cannot map a simulated NIC's control region");
    d->ctrl = static_cast<uint8_t *>(p);
    d->ctrl_len = ctrl_bytes;
    Status st = MemHeap::create(ctrl_bytes, &d->heap);
    if (!st.ok()) return st;
    {
      std::lock_guard<std::mutex> lk(the_fabric().mu);
      d->id = the_fabric().next_id++;
      if (the_fabric().next_id >= (1u << 24)) the_fabric().next_id = 1;
      d->name = names ? (*names)[i] : "mcsim" + std::to_string(d->id);
      if (the_fabric().by_name.count(d->name))
        return Err(MC_ERR_EXISTS, "a simulated NIC named " + d->name + " is already open in this process");
      d->ib = infiniband;
      if (infiniband) {  // link-local prefix fe80::/64 and a GUID carrying the NIC id
        d->gid[0] = 0xfe;
        d->gid[1] = 0x80;
      } else {  // a RoCE v2 GID: the IPv4-mapped address 10.x.y.z carrying the NIC id
        d->gid[10] = d->gid[11] = 0xff;
        d->gid[12] = 10;
      }
      d->gid[13] = static_cast<uint8_t>(d->id >> 16);
      d->gid[14] = static_cast<uint8_t>(d->id >> 8);
      d->gid[15] = static_cast<uint8_t>(d->id);
      the_fabric().by_id[d->id] = d;
      the_fabric().by_name[d->name] = d;
    }
    v.push_back(std::make_unique<SimDevice>(std::move(d)));
  }
  for (auto &d : v) out->push_back(std::move(d));
  return Status::Ok();
}

bool kill_nic(const std::string &nic) {
  auto d = dev_by_name(nic);
  if (!d) return false;
  d->port_up.store(false);
  for (auto &q : d->live_qps()) {
    std::lock_guard<std::mutex> lk(q->mu);
    if (q->destroyed.load()) continue;
    q->state.store(QpState::kErr);
    schedule(q);
  }
  d->event(AsyncEvent::kPortError);
  return true;
}

bool revive_nic(const std::string &nic) {
  auto d = dev_by_name(nic);
  if (!d) return false;
  d->port_up.store(true);
  d->event(AsyncEvent::kPortActive);
  return true;
}

bool fail_next_modify(const std::string &nic, int count) {
  auto d = dev_by_name(nic);
  if (!d) return false;
  d->fail_modify.store(count);
  return true;
}

bool stall_nic(const std::string &nic, bool on) {
  auto d = dev_by_name(nic);
  if (!d) return false;
  d->stalled.store(on);
  return true;
}

bool fail_next_set_access(const std::string &nic, int count) {
  auto d = dev_by_name(nic);
  if (!d) return false;
  d->fail_access.store(count);
  return true;
}

bool set_completion_delay(const std::string &nic, uint32_t us) {
  auto d = dev_by_name(nic);
  if (!d) return false;
  d->delay_us.store(us);
  return true;
}

bool corrupt_ring(const std::string &nic, uint32_t qpn, int what) {
  auto d = dev_by_name(nic);
  if (!d) return false;
  auto q = d->find_qp(qpn);
  if (!q) return false;
  std::lock_guard<std::mutex> ex(q->cq->exec_mu);
  std::lock_guard<std::mutex> lk(q->mu);
  if (what == 0) {
    q->hdr->sq_tail += 7;  // a stray store into the header
  } else {
    if (q->sq_head == q->sq_tail) return false;
    q->sq[q->sq_head % q->depth].len ^= 0x1000;  // a flipped bit in a WQE
  }
  return true;
}

bool heap_report(const std::string &nic, HeapReport *out) {
  auto d = dev_by_name(nic);
  if (!d) return false;
  HeapReport r;
  auto qps = d->live_qps();
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto &q : qps) {
    if (q->destroyed.load()) continue;
    ranges.push_back({q->off, q->blk});
    r.block_bytes = q->blk;
  }
  r.live_qps = ranges.size();
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); i++)
    if (ranges[i - 1].first + ranges[i - 1].second > ranges[i].first) {
      r.overlap = true;
      r.why = "QP blocks at " + std::to_string(ranges[i - 1].first) + " and " +
              std::to_string(ranges[i].first) + " overlap";
    }
  r.stats = d->heap->stats();
  Status st = d->heap->check_invariants();
  r.invariants_ok = st.ok();
  if (!st.ok()) r.why = st.message();
  *out = r;
  return true;
}

std::vector<std::string> nic_names() {
  std::vector<std::string> v;
  std::lock_guard<std::mutex> lk(the_fabric().mu);
  for (auto &[n, w] : the_fabric().by_name)
    if (!w.expired()) v.push_back(n);
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace sim
}  // namespace mc::rdma
