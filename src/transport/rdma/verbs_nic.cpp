// The NIC interface on rdma-core's libibverbs, loaded with dlopen("libibverbs.so.1") so that
// libmc starts (and links) where no RDMA stack is installed. The real functions are looked up
// with dlsym; the verbs.h inline wrappers that dispatch through the context's ops
// (ibv_post_send, ibv_poll_cq, ibv_req_notify_cq) need no symbol and are used as they are.
//
// Not exercised on the machines this was written on (no RDMA device, no soft-RoCE); it is
// compiled in CI and run by tests/test_rdma_hw.c where MC_TEST_RDMA_DEVICE names a device.
#include <dlfcn.h>
#include <fcntl.h>
// verbs.h ORs enumerators of different enums (IBV_CREATE_CQ_SUP_WC_FLAGS), which C++20
// deprecates: g++ 13 warns about it in rdma-core 44's header.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#endif
#include <infiniband/verbs.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>

#include "transport/rdma/nic.h"
#include "transport/rdma/nic_select.h"
#include "transport/rdma/sim_nic.h"
#include "util/config.h"

namespace mc::rdma {
namespace {

struct Api {
  void *lib = nullptr;
  std::string error;
  decltype(&::ibv_get_device_list) get_device_list = nullptr;
  decltype(&::ibv_free_device_list) free_device_list = nullptr;
  decltype(&::ibv_get_device_name) get_device_name = nullptr;
  decltype(&::ibv_open_device) open_device = nullptr;
  decltype(&::ibv_close_device) close_device = nullptr;
  decltype(&::ibv_query_device) query_device = nullptr;
  int (*query_port)(ibv_context *, uint8_t, ibv_port_attr *) = nullptr;
  decltype(&::ibv_query_gid) query_gid = nullptr;
  int (*query_gid_ex)(ibv_context *, uint32_t, uint32_t, ibv_gid_entry *, uint32_t, size_t) = nullptr;
  decltype(&::ibv_alloc_pd) alloc_pd = nullptr;
  decltype(&::ibv_dealloc_pd) dealloc_pd = nullptr;
  ibv_mr *(*reg_mr)(ibv_pd *, void *, size_t, int) = nullptr;
  // rdma-core 34+ (Linux 5.12+): absent in older libraries, then GPU memory is not registered.
  ibv_mr *(*reg_dmabuf_mr)(ibv_pd *, uint64_t, size_t, uint64_t, int, int) = nullptr;
  decltype(&::ibv_rereg_mr) rereg_mr = nullptr;
  decltype(&::ibv_dereg_mr) dereg_mr = nullptr;
  decltype(&::ibv_create_comp_channel) create_comp_channel = nullptr;
  decltype(&::ibv_destroy_comp_channel) destroy_comp_channel = nullptr;
  decltype(&::ibv_create_cq) create_cq = nullptr;
  decltype(&::ibv_destroy_cq) destroy_cq = nullptr;
  decltype(&::ibv_get_cq_event) get_cq_event = nullptr;
  decltype(&::ibv_ack_cq_events) ack_cq_events = nullptr;
  decltype(&::ibv_create_qp) create_qp = nullptr;
  decltype(&::ibv_modify_qp) modify_qp = nullptr;
  decltype(&::ibv_destroy_qp) destroy_qp = nullptr;
  decltype(&::ibv_get_async_event) get_async_event = nullptr;
  decltype(&::ibv_ack_async_event) ack_async_event = nullptr;
};

// Loaded once per process and never unloaded (providers keep threads and state).
const Api &api() {
  static Api *a = [] {
    auto *x = new Api;
    x->lib = ::dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!x->lib) {
      const char *e = ::dlerror();
      x->error =
          std::string("cannot load libibverbs.so.1 (install rdma-core's libibverbs1): ") + (e ? e : "");
      return x;
    }
    bool ok = true;
    auto sym = [&](auto &fn, const char *name, bool required = true) {
      void *p = ::dlsym(x->lib, name);
      if (!p && required) {
        ok = false;
        x->error = std::string("libibverbs.so.1 lacks ") + name;
      }
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    sym(x->get_device_list, "ibv_get_device_list");
    sym(x->free_device_list, "ibv_free_device_list");
    sym(x->get_device_name, "ibv_get_device_name");
    sym(x->open_device, "ibv_open_device");
    sym(x->close_device, "ibv_close_device");
    sym(x->query_device, "ibv_query_device");
    sym(x->query_port, "ibv_query_port");
    sym(x->query_gid, "ibv_query_gid");
    sym(x->query_gid_ex, "_ibv_query_gid_ex", false);
    sym(x->alloc_pd, "ibv_alloc_pd");
    sym(x->dealloc_pd, "ibv_dealloc_pd");
    sym(x->reg_mr, "ibv_reg_mr");
    sym(x->reg_dmabuf_mr, "ibv_reg_dmabuf_mr", false);
    sym(x->rereg_mr, "ibv_rereg_mr", false);
    sym(x->dereg_mr, "ibv_dereg_mr");
    sym(x->create_comp_channel, "ibv_create_comp_channel");
    sym(x->destroy_comp_channel, "ibv_destroy_comp_channel");
    sym(x->create_cq, "ibv_create_cq");
    sym(x->destroy_cq, "ibv_destroy_cq");
    sym(x->get_cq_event, "ibv_get_cq_event");
    sym(x->ack_cq_events, "ibv_ack_cq_events");
    sym(x->create_qp, "ibv_create_qp");
    sym(x->modify_qp, "ibv_modify_qp");
    sym(x->destroy_qp, "ibv_destroy_qp");
    sym(x->get_async_event, "ibv_get_async_event");
    sym(x->ack_async_event, "ibv_ack_async_event");
    if (!ok) {
      ::dlclose(x->lib);
      x->lib = nullptr;
    }
    return x;
  }();
  return *a;
}

Status verr(const std::string &what, int err) {
  return Err(MC_ERR_TRANSPORT, what + ": " + std::strerror(err ? err : EIO));
}

uint8_t clamp_u8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

// The port a device is used on: `want` (rdma_port) when given, which must exist; else the first
// ACTIVE one (1 when none is: the device is then skipped or reported down like any other).
Status pick_port(const Api &a, ibv_context *ctx, const ibv_device_attr &attr, const std::string &nm, int want,
                 uint8_t *out) {
  if (want > 0) {
    if (want > attr.phys_port_cnt)
      return Err(MC_ERR_INVALID_ARG, "rdma_port " + std::to_string(want) + ": " + nm + " has " +
                                         std::to_string(attr.phys_port_cnt) + " port(s)");
    *out = static_cast<uint8_t>(want);
    return Status::Ok();
  }
  *out = 1;
  for (int p = 1; p <= attr.phys_port_cnt; p++) {
    ibv_port_attr pa{};
    if (a.query_port(ctx, static_cast<uint8_t>(p), &pa) == 0 && pa.state == IBV_PORT_ACTIVE) {
      *out = static_cast<uint8_t>(p);
      break;
    }
  }
  return Status::Ok();
}

ibv_mtu to_ibv_mtu(uint32_t bytes) {
  switch (bytes) {
    case 256:
      return IBV_MTU_256;
    case 512:
      return IBV_MTU_512;
    case 1024:
      return IBV_MTU_1024;
    case 2048:
      return IBV_MTU_2048;
    default:
      return IBV_MTU_4096;
  }
}
uint32_t mtu_bytes(ibv_mtu m) { return 128u << static_cast<int>(m); }

WcStatus to_status(ibv_wc_status s) {
  switch (s) {
    case IBV_WC_SUCCESS:
      return WcStatus::kSuccess;
    case IBV_WC_LOC_LEN_ERR:
      return WcStatus::kLocLenErr;
    case IBV_WC_LOC_PROT_ERR:
      return WcStatus::kLocProtErr;
    case IBV_WC_WR_FLUSH_ERR:
      return WcStatus::kWrFlushErr;
    case IBV_WC_REM_ACCESS_ERR:
      return WcStatus::kRemAccessErr;
    case IBV_WC_REM_INV_REQ_ERR:
      return WcStatus::kRemInvReqErr;
    case IBV_WC_RETRY_EXC_ERR:
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return WcStatus::kRetryExcErr;
    default:
      return WcStatus::kFatalErr;
  }
}

class VerbsMr : public Mr {
 public:
  VerbsMr(ibv_mr *m, ibv_pd *pd) : m_(m), pd_(pd) {}
  ~VerbsMr() override { api().dereg_mr(m_); }
  uint32_t lkey() const override { return m_->lkey; }
  uint32_t rkey() const override { return m_->rkey; }
  Status set_access(uint32_t access) override {
    // ibv_rereg_mr returns once the HCA uses the new rights (the MR is invalid in between).
    if (!api().rereg_mr) return Err(MC_ERR_UNSUPPORTED, "libibverbs lacks ibv_rereg_mr");
    int rc = api().rereg_mr(m_, IBV_REREG_MR_CHANGE_ACCESS, pd_, nullptr, 0,
                            static_cast<int>(access | kLocalWrite));
    return rc ? verr("ibv_rereg_mr", rc) : Status::Ok();
  }

 private:
  ibv_mr *m_;
  ibv_pd *pd_;
};

// A dma-buf MR. Access changes register a new MR with the new rights and then deregister the
// old one (keys change), rather than ibv_rereg_mr, which not every provider supports for
// dma-buf MRs; after set_access returns, the old rights are gone with the old MR.
class VerbsDmabufMr : public Mr {
 public:
  VerbsDmabufMr(ibv_mr *m, ibv_pd *pd, int fd, uint64_t offset, uint64_t len, uint64_t iova)
      : m_(m), pd_(pd), fd_(fd), offset_(offset), len_(len), iova_(iova) {}
  ~VerbsDmabufMr() override {
    api().dereg_mr(m_);
    ::close(fd_);
  }
  uint32_t lkey() const override { return m_->lkey; }
  uint32_t rkey() const override { return m_->rkey; }
  Status set_access(uint32_t access) override {
    ibv_mr *n = api().reg_dmabuf_mr(pd_, offset_, len_, iova_, fd_, static_cast<int>(access | kLocalWrite));
    if (!n) return verr("ibv_reg_dmabuf_mr (access change)", errno);
    api().dereg_mr(m_);
    m_ = n;
    return Status::Ok();
  }

 private:
  ibv_mr *m_;
  ibv_pd *pd_;
  int fd_;  // our dup of the dma-buf, for re-registration
  uint64_t offset_, len_, iova_;
};

class VerbsCq : public Cq {
 public:
  VerbsCq(ibv_cq *cq, ibv_comp_channel *ch) : cq_(cq), ch_(ch) {
    ::fcntl(ch_->fd, F_SETFL, ::fcntl(ch_->fd, F_GETFL) | O_NONBLOCK);
    // Without the wake pipe the poller only sleeps its bounded timeout between checks.
    if (::pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) wake_[0] = wake_[1] = -1;
    ibv_req_notify_cq(cq_, 0);
  }
  // Only the NIC's poller thread calls poll() and wait().
  ~VerbsCq() override {
    if (unacked_) api().ack_cq_events(cq_, unacked_);
    api().destroy_cq(cq_);
    api().destroy_comp_channel(ch_);
    if (wake_[0] >= 0) ::close(wake_[0]);
    if (wake_[1] >= 0) ::close(wake_[1]);
  }
  ibv_cq *raw() { return cq_; }
  int poll(Wc *out, int max) override {
    ibv_wc wc[64];
    int got = 0;
    while (got < max && stash_n_ > 0) {  // what wait() found after arming
      const ibv_wc &w = stash_[stash_i_++];
      out[got++] = {w.wr_id, w.qp_num, w.byte_len, to_status(w.status)};
      if (stash_i_ == stash_n_) stash_i_ = stash_n_ = 0;
    }
    while (got < max) {
      int n = ibv_poll_cq(cq_, std::min(64, max - got), wc);
      if (n <= 0) break;
      for (int i = 0; i < n; i++)
        out[got++] = {wc[i].wr_id, wc[i].qp_num, wc[i].byte_len, to_status(wc[i].status)};
    }
    return got;
  }
  void wait(int timeout_ms) override {
    // Arm, then poll once more before sleeping: a completion that landed after the caller's
    // last poll but before the arming raises no event, and would wait out the whole timeout.
    // What that poll finds is kept for the next poll().
    if (stash_n_ > 0) return;
    ibv_req_notify_cq(cq_, 0);
    int n = ibv_poll_cq(cq_, kStash, stash_);
    if (n > 0) {
      stash_i_ = 0;
      stash_n_ = n;
      return;
    }
    pollfd p[2] = {{ch_->fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(p, 2, timeout_ms) <= 0) return;
    if (p[1].revents) {
      char b[64];
      while (::read(wake_[0], b, sizeof b) > 0) {
      }
    }
    ibv_cq *ev_cq;
    void *ctx;
    while (api().get_cq_event(ch_, &ev_cq, &ctx) == 0) {
      if (++unacked_ >= 256) {
        api().ack_cq_events(cq_, unacked_);
        unacked_ = 0;
      }
    }
  }
  void wake() override { (void)!::write(wake_[1], "w", 1); }

 private:
  static constexpr int kStash = 64;
  ibv_cq *cq_;
  ibv_comp_channel *ch_;
  int wake_[2] = {-1, -1};
  unsigned unacked_ = 0;
  ibv_wc stash_[kStash];
  int stash_i_ = 0, stash_n_ = 0;
};

class VerbsQp : public Qp {
 public:
  VerbsQp(ibv_qp *qp, uint8_t port) : qp_(qp), port_(port) {}
  ~VerbsQp() override { api().destroy_qp(qp_); }
  uint32_t qpn() const override { return qp_->qp_num; }
  QpState state() const override { return state_; }
  Status to_init(uint32_t access) override {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = port_;
    a.qp_access_flags = access;
    return mod(a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, QpState::kInit,
               "INIT");
  }
  Status to_rtr(const ConnAttr &c) override {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = to_ibv_mtu(c.mtu);
    a.dest_qp_num = c.remote.qpn;
    a.rq_psn = c.remote.psn;
    a.max_dest_rd_atomic = c.max_dest_rd_atomic;
    a.min_rnr_timer = c.min_rnr_timer;
    a.ah_attr.dlid = c.remote.lid;
    a.ah_attr.sl = 0;
    a.ah_attr.src_path_bits = 0;
    a.ah_attr.port_num = port_;
    if (c.use_grh) {
      a.ah_attr.is_global = 1;
      std::memcpy(a.ah_attr.grh.dgid.raw, c.remote.gid, 16);
      a.ah_attr.grh.sgid_index = static_cast<uint8_t>(c.gid_index < 0 ? 0 : c.gid_index);
      a.ah_attr.grh.hop_limit = 64;
      a.ah_attr.grh.traffic_class = 0;
    }
    return mod(a,
               IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                   IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
               QpState::kRtr, "RTR");
  }
  Status to_rts(const ConnAttr &c) override {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTS;
    a.sq_psn = c.local_psn;
    a.timeout = c.timeout;
    a.retry_cnt = c.retry_cnt;
    a.rnr_retry = c.rnr_retry;
    a.max_rd_atomic = c.max_rd_atomic;
    return mod(a,
               IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                   IBV_QP_MAX_QP_RD_ATOMIC,
               QpState::kRts, "RTS");
  }
  Status to_err() override {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_ERR;
    return mod(a, IBV_QP_STATE, QpState::kErr, "ERR");
  }
  Status to_reset() override {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RESET;
    return mod(a, IBV_QP_STATE, QpState::kReset, "RESET");
  }
  Status post(const SendWr *wrs, size_t n, size_t *posted) override {
    *posted = 0;
    constexpr size_t kMax = 32;
    while (*posted < n) {
      size_t k = std::min(kMax, n - *posted);
      ibv_sge sge[kMax];
      ibv_send_wr wr[kMax];
      for (size_t i = 0; i < k; i++) {
        const SendWr &w = wrs[*posted + i];
        sge[i] = {w.local, w.len, w.lkey};
        wr[i] = {};
        wr[i].wr_id = w.wr_id;
        wr[i].next = i + 1 < k ? &wr[i + 1] : nullptr;
        wr[i].sg_list = &sge[i];
        wr[i].num_sge = 1;
        wr[i].opcode = w.op == Opcode::kRead ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
        wr[i].send_flags = IBV_SEND_SIGNALED;
        wr[i].wr.rdma.remote_addr = w.remote;
        wr[i].wr.rdma.rkey = w.rkey;
      }
      ibv_send_wr *bad = nullptr;
      int rc = ibv_post_send(qp_, wr, &bad);
      if (rc) {
        *posted += bad ? static_cast<size_t>(bad - wr) : 0;
        return verr("ibv_post_send", rc);
      }
      *posted += k;
    }
    return Status::Ok();
  }

 private:
  Status mod(ibv_qp_attr &a, int mask, QpState to, const char *what) {
    int rc = api().modify_qp(qp_, &a, mask);
    if (rc) return verr(std::string("ibv_modify_qp(") + what + ")", rc);
    state_ = to;
    return Status::Ok();
  }
  ibv_qp *qp_;
  uint8_t port_;
  QpState state_ = QpState::kReset;
};

class VerbsDevice : public Device {
 public:
  VerbsDevice(std::string name, ibv_context *ctx, ibv_pd *pd, const ibv_device_attr &attr, uint8_t port)
      : name_(std::move(name)), ctx_(ctx), pd_(pd), attr_(attr), port_(port) {
    ::fcntl(ctx_->async_fd, F_SETFL, ::fcntl(ctx_->async_fd, F_GETFL) | O_NONBLOCK);
  }
  ~VerbsDevice() override {
    api().dealloc_pd(pd_);
    api().close_device(ctx_);
  }
  const std::string &name() const override { return name_; }
  std::string fabric() const override { return "verbs"; }

  // GID choice: the override when given; else the first RoCE v2 GID with an IPv4-mapped
  // address, then any RoCE v2 GID, then index 0 (IB, or RoCE v1 only).
  Status query_port(int gid_index, PortInfo *out) override {
    ibv_port_attr pa{};
    int rc = api().query_port(ctx_, port_, &pa);
    if (rc) return verr("ibv_query_port(" + name_ + ")", rc);
    PortInfo p;
    p.active = pa.state == IBV_PORT_ACTIVE;
    p.ethernet = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
    p.lid = pa.lid;
    p.mtu = mtu_bytes(pa.active_mtu);
    int best = -1, rank = -1;
    bool v2 = false;
    for (int i = 0; i < pa.gid_tbl_len; i++) {
      if (gid_index >= 0 && i != gid_index) continue;
      ibv_gid g{};
      if (api().query_gid(ctx_, port_, i, &g) != 0) continue;
      static const uint8_t zero[16] = {};
      if (std::memcmp(g.raw, zero, 16) == 0) continue;
      bool is_v2 = gid_is_v2(i);
      bool v4 = std::memcmp(g.raw, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0;
      int r = (gid_index >= 0) ? 9 : (is_v2 && v4) ? 3 : is_v2 ? 2 : (i == 0) ? 1 : 0;
      if (r > rank) {
        rank = r;
        best = i;
        v2 = is_v2;
        std::memcpy(p.gid, g.raw, 16);
      }
    }
    if (gid_index >= 0 && best < 0)
      return Err(MC_ERR_INVALID_ARG,
                 "rdma_gid_index " + std::to_string(gid_index) + " is not a valid GID of " + name_);
    p.gid_index = best;
    p.roce_v2 = v2;
    *out = p;
    return Status::Ok();
  }
  Status reg_mr(void *addr, uint64_t len, uint32_t access, std::unique_ptr<Mr> *out) override {
    ibv_mr *m = api().reg_mr(pd_, addr, len, static_cast<int>(access));
    if (!m) return verr("ibv_reg_mr on " + name_, errno);
    *out = std::make_unique<VerbsMr>(m, pd_);
    return Status::Ok();
  }
  bool dmabuf_capable(std::string *why) const override {
    if (api().reg_dmabuf_mr) return true;
    *why =
        "libibverbs.so.1 lacks ibv_reg_dmabuf_mr (rdma-core 34 or newer is needed for GPU memory over RDMA)";
    return false;
  }
  Status reg_dmabuf_mr(int fd, uint64_t offset, uint64_t len, uint64_t iova, uint32_t access,
                       std::unique_ptr<Mr> *out) override {
    std::string why;
    if (!dmabuf_capable(&why)) return Err(MC_ERR_UNSUPPORTED, why);
    int mine = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (mine < 0) return verr("dup of a dma-buf fd", errno);
    ibv_mr *m = api().reg_dmabuf_mr(pd_, offset, len, iova, mine, static_cast<int>(access));
    if (!m) {
      int e = errno;
      ::close(mine);
      if (e == EOPNOTSUPP || e == EPROTONOSUPPORT || e == ENOSYS)
        return Err(MC_ERR_UNSUPPORTED, "ibv_reg_dmabuf_mr on " + name_ + ": " + std::strerror(e) +
                                           " (the kernel or the NIC driver cannot register dma-bufs)");
      return verr("ibv_reg_dmabuf_mr on " + name_, e);
    }
    *out = std::make_unique<VerbsDmabufMr>(m, pd_, mine, offset, len, iova);
    return Status::Ok();
  }
  Status create_cq(uint32_t depth, std::unique_ptr<Cq> *out) override {
    ibv_comp_channel *ch = api().create_comp_channel(ctx_);
    if (!ch) return verr("ibv_create_comp_channel", errno);
    ibv_cq *cq =
        api().create_cq(ctx_, static_cast<int>(std::min<uint32_t>(depth, max_cqe())), nullptr, ch, 0);
    if (!cq) {
      int e = errno;
      api().destroy_comp_channel(ch);
      return verr("ibv_create_cq", e);
    }
    *out = std::make_unique<VerbsCq>(cq, ch);
    return Status::Ok();
  }
  Status create_qp(Cq *cq, uint32_t max_wr, std::unique_ptr<Qp> *out) override {
    auto *vcq = dynamic_cast<VerbsCq *>(cq);
    if (!vcq) return Err(MC_ERR_INVALID_ARG, "create_qp: the CQ is not a verbs CQ");
    ibv_qp_init_attr ia{};
    ia.send_cq = vcq->raw();
    ia.recv_cq = vcq->raw();
    ia.qp_type = IBV_QPT_RC;
    ia.sq_sig_all = 1;
    ia.cap.max_send_wr = std::min<uint32_t>(max_wr, static_cast<uint32_t>(attr_.max_qp_wr));
    ia.cap.max_recv_wr = 1;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    ibv_qp *qp = api().create_qp(pd_, &ia);
    if (!qp) return verr("ibv_create_qp on " + name_, errno);
    *out = std::make_unique<VerbsQp>(qp, port_);
    return Status::Ok();
  }
  uint32_t max_cqe() const override { return static_cast<uint32_t>(attr_.max_cqe); }
  uint64_t max_mr_size() const override { return attr_.max_mr_size ? attr_.max_mr_size : UINT64_MAX; }
  uint8_t max_init_rd_atom() const override { return clamp_u8(attr_.max_qp_init_rd_atom); }
  uint8_t max_dest_rd_atom() const override { return clamp_u8(attr_.max_qp_rd_atom); }
  bool next_event(AsyncEvent *ev, int timeout_ms) override {
    pollfd p{ctx_->async_fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    ibv_async_event e;
    if (api().get_async_event(ctx_, &e) != 0) return false;
    AsyncEvent out;
    switch (e.event_type) {
      case IBV_EVENT_PORT_ACTIVE:
        out.kind = AsyncEvent::kPortActive;
        break;
      case IBV_EVENT_PORT_ERR:
        out.kind = AsyncEvent::kPortError;
        break;
      case IBV_EVENT_DEVICE_FATAL:
        out.kind = AsyncEvent::kDeviceFatal;
        break;
      case IBV_EVENT_CQ_ERR:
        out.kind = AsyncEvent::kCqErr;
        break;  // overrun: the CQ is lost
      case IBV_EVENT_QP_FATAL:
      case IBV_EVENT_QP_ACCESS_ERR:
      case IBV_EVENT_QP_REQ_ERR:
        out.kind = AsyncEvent::kQpFatal;
        out.qpn = e.element.qp ? e.element.qp->qp_num : 0;
        break;
      default:
        out.kind = AsyncEvent::kOther;
    }
    api().ack_async_event(&e);
    *ev = out;
    return true;
  }

 private:
  bool gid_is_v2(int i) {
    if (api().query_gid_ex) {
      ibv_gid_entry ge{};
      if (api().query_gid_ex(ctx_, port_, static_cast<uint32_t>(i), &ge, 0, sizeof ge) == 0)
        return ge.gid_type == IBV_GID_TYPE_ROCE_V2;
    }
    std::ifstream f("/sys/class/infiniband/" + name_ + "/ports/" + std::to_string(port_) +
                    "/gid_attrs/types/" + std::to_string(i));
    std::string t;
    std::getline(f, t);
    return t.find("v2") != std::string::npos;
  }
  std::string name_;
  ibv_context *ctx_;
  ibv_pd *pd_;
  ibv_device_attr attr_;
  uint8_t port_;
};

}  // namespace

Status open_verbs_devices(const std::vector<std::string> &names, bool all, int port,
                          std::vector<std::unique_ptr<Device>> *out) {
  const Api &a = api();
  if (!a.lib) return Err(MC_ERR_UNSUPPORTED, a.error);
  int n = 0;
  ibv_device **list = a.get_device_list(&n);
  if (!list) {
    int e = errno;
    return Err(MC_ERR_UNSUPPORTED, std::string("ibv_get_device_list: ") + std::strerror(e ? e : ENODEV));
  }
  std::vector<std::unique_ptr<Device>> devs;
  Status st;
  auto open_one = [&](ibv_device *d) -> Status {
    std::string nm = a.get_device_name(d);
    ibv_context *ctx = a.open_device(d);
    if (!ctx) return verr("ibv_open_device(" + nm + ")", errno);
    ibv_device_attr attr{};
    int rc = a.query_device(ctx, &attr);
    if (rc) {
      a.close_device(ctx);
      return verr("ibv_query_device(" + nm + ")", rc);
    }
    uint8_t pn = 1;
    Status ps = pick_port(a, ctx, attr, nm, port, &pn);
    if (!ps.ok()) {
      a.close_device(ctx);
      return ps;
    }
    ibv_pd *pd = a.alloc_pd(ctx);
    if (!pd) {
      int e = errno;
      a.close_device(ctx);
      return verr("ibv_alloc_pd(" + nm + ")", e);
    }
    devs.push_back(std::make_unique<VerbsDevice>(nm, ctx, pd, attr, pn));
    return Status::Ok();
  };
  if (all) {
    for (int i = 0; i < n; i++) {
      Status s = open_one(list[i]);
      if (!s.ok()) continue;  // auto: skip what cannot be opened
      PortInfo p;
      if (!devs.back()->query_port(-1, &p).ok() || !p.active) devs.pop_back();
    }
  } else {
    for (auto &want : names) {
      ibv_device *found = nullptr;
      for (int i = 0; i < n; i++)
        if (want == a.get_device_name(list[i])) found = list[i];
      if (!found) {
        st = Err(MC_ERR_NOT_FOUND, "rdma_devices: no RDMA device \"" + want + "\" on this host");
        break;
      }
      st = open_one(found);
      if (!st.ok()) break;
    }
  }
  a.free_device_list(list);
  if (!st.ok()) return st;
  for (auto &d : devs) out->push_back(std::move(d));
  return Status::Ok();
}

Status list_verbs_devices(std::vector<std::string> *names) {
  const Api &a = api();
  if (!a.lib) return Err(MC_ERR_UNSUPPORTED, a.error);
  int n = 0;
  ibv_device **list = a.get_device_list(&n);
  if (!list) {
    int e = errno;
    return Err(MC_ERR_UNSUPPORTED, std::string("ibv_get_device_list: ") + std::strerror(e ? e : ENODEV));
  }
  for (int i = 0; i < n; i++) names->push_back(a.get_device_name(list[i]));
  a.free_device_list(list);
  return Status::Ok();
}

// "sim:PATTERNS": of the simulated NICs named in MC_SIM_NIC_NAMES (comma-separated), the ones
// PATTERNS pick are opened.
static Status open_sim_named(const std::string &patterns, uint64_t ctrl_bytes,
                             std::vector<std::unique_ptr<Device>> *out) {
  const char *env = std::getenv("MC_SIM_NIC_NAMES");
  if (!env || !*env)
    return Err(MC_ERR_INVALID_ARG,
               "rdma_devices: sim:PATTERNS selects among the simulated NICs named in "
               "MC_SIM_NIC_NAMES, which is not set");
  std::vector<std::string> seen, chosen;
  for (auto &nm : split(env, ','))
    if (!nm.empty()) seen.push_back(nm);
  Status st = select_devices(patterns, seen, &chosen);
  if (!st.ok()) return st;
  return sim::open(0, ctrl_bytes, out, false, &chosen);
}

Status open_devices(const std::string &spec, uint64_t ctrl_bytes, int port,
                    std::vector<std::unique_ptr<Device>> *out) {
  if (spec.rfind("sim", 0) == 0 && port > 1)
    return Err(MC_ERR_INVALID_ARG,
               "rdma_port " + std::to_string(port) + ": a simulated NIC has one port (1)");
  if (spec == "sim") return sim::open(1, ctrl_bytes, out);
  if (spec == "sim-ib") return sim::open(1, ctrl_bytes, out, true);
  if (spec.rfind("sim:", 0) == 0 && is_device_pattern(spec.substr(4)))
    return open_sim_named(spec.substr(4), ctrl_bytes, out);
  if (spec.rfind("sim:", 0) == 0) {
    int n = std::atoi(spec.c_str() + 4);
    if (n < 1 || n > 16) return Err(MC_ERR_INVALID_ARG, "rdma_devices: sim:N takes N in 1..16");
    return sim::open(n, ctrl_bytes, out);
  }
  if (spec.empty() || spec == "auto") {
    // No kernel RDMA stack, no devices: do not even load the library.
    struct stat sb;
    if (::stat("/sys/class/infiniband", &sb) != 0) return Status::Ok();
    Status st = open_verbs_devices({}, true, port, out);
    return st.code() == MC_ERR_UNSUPPORTED ? Status::Ok() : st;
  }
  std::vector<std::string> names;
  if (is_device_pattern(spec)) {
    std::vector<std::string> seen;
    Status st = list_verbs_devices(&seen);
    if (st.ok()) st = select_devices(spec, seen, &names);
    if (!st.ok()) return st;
    return open_verbs_devices(names, false, port, out);
  }
  size_t p = 0;
  while (p <= spec.size()) {
    size_t c = spec.find(',', p);
    if (c == std::string::npos) c = spec.size();
    if (c > p) names.push_back(spec.substr(p, c - p));
    p = c + 1;
  }
  return open_verbs_devices(names, false, port, out);
}

}  // namespace mc::rdma
