// The small NIC interface the RDMA transport talks to: a device with one port, a protection
// domain, memory regions, completion queues and RC queue pairs. Two implementations: libibverbs
// loaded at run time (verbs_nic.cpp) and an in-process simulated fabric (sim_nic.cpp) that
// enforces what hardware enforces, for tests and for machines without a NIC.
//
// Only what one-sided RDMA READ/WRITE over RC needs is here: every work request is signaled,
// there are no receive queues, no SRQ, no atomics.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

namespace mc::rdma {

// IB QP states that RC one-sided traffic goes through. Legal transitions (IB spec 10.3.1):
// RESET->INIT, INIT->INIT, INIT->RTR, RTR->RTS, RTS->RTS, any->RESET, any->ERR.
enum class QpState : uint8_t { kReset, kInit, kRtr, kRts, kErr };
const char *qp_state_name(QpState s);

// Access bits of memory regions and QPs (the same values as IBV_ACCESS_*).
enum : uint32_t { kLocalWrite = 1, kRemoteWrite = 2, kRemoteRead = 4 };

enum class Opcode : uint8_t { kRead, kWrite };

enum class WcStatus : uint8_t {
  kSuccess,
  kLocLenErr,     // a length the QP cannot carry
  kLocProtErr,    // lkey unknown, range outside the local MR, or missing local access
  kWrFlushErr,    // the QP went to ERR before this request ran
  kRemAccessErr,  // rkey unknown, range outside the remote MR, or missing remote access
  kRemInvReqErr,  // the responder QP does not allow the operation
  kRetryExcErr,   // the responder did not answer (peer QP, NIC or port gone)
  kFatalErr,      // the QP's rings are corrupted or the device failed
};
const char *wc_status_name(WcStatus s);

struct SendWr {
  uint64_t wr_id;
  Opcode op;
  uint64_t local;
  uint32_t lkey;
  uint32_t len;
  uint64_t remote;
  uint32_t rkey;
};

struct Wc {
  uint64_t wr_id;
  uint32_t qpn;
  uint32_t byte_len;
  WcStatus status;
};

struct PortInfo {
  bool active = false;
  bool ethernet = false;  // RoCE (addressed by GID) rather than InfiniBand (by LID)
  bool roce_v2 = false;   // the chosen GID is a RoCE v2 one
  uint16_t lid = 0;
  uint32_t mtu = 0;  // active MTU in bytes (256..4096)
  int gid_index = -1;
  uint8_t gid[16] = {};
};

// What one side tells the other to connect a QP (exchanged over the control channel).
struct QpDest {
  uint32_t qpn = 0;
  uint32_t psn = 0;
  uint16_t lid = 0;
  uint8_t gid[16] = {};
};

struct ConnAttr {
  QpDest remote;
  uint32_t local_psn = 0;
  uint32_t mtu = 1024;  // path MTU in bytes
  int gid_index = -1;   // local GID index (RoCE, or IB with a GRH)
  bool use_grh = false;
  uint8_t timeout = 14;  // local ACK timeout: 4.096 us * 2^timeout
  uint8_t retry_cnt = 7;
  uint8_t rnr_retry = 0;
  uint8_t max_rd_atomic = 16;       // READs we issue at once (RTS)
  uint8_t max_dest_rd_atomic = 16;  // READs we answer at once (RTR)
  uint8_t min_rnr_timer = 12;
};

// Deregisters itself when destroyed; after that no WR may touch the memory.
class Mr {
 public:
  virtual ~Mr() = default;
  virtual uint32_t lkey() const = 0;
  virtual uint32_t rkey() const = 0;
  // Changes what peers may do (kRemote* bits). Returns once no access that started under the
  // old rights still runs. Keys may change (re-read lkey()/rkey()).
  virtual Status set_access(uint32_t access) = 0;
};

class Cq {
 public:
  virtual ~Cq() = default;
  // Up to max completions, never blocks. Completions of one QP come in posting order.
  virtual int poll(Wc *out, int max) = 0;
  // Blocks until completions may be ready, wake() is called, or timeout_ms passed.
  virtual void wait(int timeout_ms) = 0;
  virtual void wake() = 0;
};

// Destroying a QP discards whatever it still had outstanding (no completions for it): move it
// to ERR and poll its flushes first.
class Qp {
 public:
  virtual ~Qp() = default;
  virtual uint32_t qpn() const = 0;
  virtual QpState state() const = 0;
  virtual Status to_init(uint32_t access) = 0;
  virtual Status to_rtr(const ConnAttr &a) = 0;
  virtual Status to_rts(const ConnAttr &a) = 0;
  virtual Status to_err() = 0;
  virtual Status to_reset() = 0;
  // Posts wrs in order; *posted gets how many went in (the rest failed: full, wrong state).
  virtual Status post(const SendWr *wrs, size_t n, size_t *posted) = 0;
};

struct AsyncEvent {
  // kCqErr: a CQ overran (IBV_EVENT_CQ_ERR); its QPs are in ERR and it cannot be trusted.
  enum Kind { kPortActive, kPortError, kDeviceFatal, kQpFatal, kCqErr, kOther } kind = kOther;
  uint32_t qpn = 0;
};

class Device {
 public:
  virtual ~Device() = default;
  virtual const std::string &name() const = 0;
  // "sim:<fabric>" or "verbs": two devices can talk only within one fabric.
  virtual std::string fabric() const = 0;
  // gid_index < 0: chosen automatically (RoCE v2 preferred).
  virtual Status query_port(int gid_index, PortInfo *out) = 0;
  virtual Status reg_mr(void *addr, uint64_t len, uint32_t access, std::unique_ptr<Mr> *out) = 0;
  // Registers bytes [offset, offset+len) of a dma-buf (GPU memory exported by the CUDA driver,
  // say) as an MR that work requests address at [iova, iova+len), as rdma-core's
  // ibv_reg_dmabuf_mr(pd, offset, len, iova, fd, access). The fd stays the caller's. iova and
  // offset must share their offset within a host page (the NIC maps whole pages).
  // MC_ERR_UNSUPPORTED where the library, kernel or device cannot.
  virtual Status reg_dmabuf_mr(int fd, uint64_t offset, uint64_t len, uint64_t iova, uint32_t access,
                               std::unique_ptr<Mr> *out) {
    (void)fd;
    (void)offset;
    (void)len;
    (void)iova;
    (void)access;
    (void)out;
    return Err(MC_ERR_UNSUPPORTED, "this RDMA device cannot register dma-bufs");
  }
  // Whether reg_dmabuf_mr can work at all here (the library has it); *why when not.
  virtual bool dmabuf_capable(std::string *why) const {
    *why = "this RDMA device cannot register dma-bufs";
    return false;
  }
  virtual Status create_cq(uint32_t depth, std::unique_ptr<Cq> *out) = 0;
  virtual Status create_qp(Cq *cq, uint32_t max_wr, std::unique_ptr<Qp> *out) = 0;
  // Largest memory region the device registers (ibv_device_attr.max_mr_size): a larger buffer
  // is registered as several regions.
  virtual uint64_t max_mr_size() const { return UINT64_MAX; }
  // Largest number of outstanding completions a CQ of this device can hold.
  virtual uint32_t max_cqe() const = 0;
  // Outstanding RDMA READs a QP may issue (max_qp_init_rd_atom, the limit of RTS's
  // max_rd_atomic) and answer (max_qp_rd_atom, the limit of RTR's max_dest_rd_atomic).
  virtual uint8_t max_init_rd_atom() const = 0;
  virtual uint8_t max_dest_rd_atom() const = 0;
  // Next asynchronous event, if one is ready within timeout_ms (0: just look).
  virtual bool next_event(AsyncEvent *ev, int timeout_ms) = 0;
};

// Opens the devices named by spec: "auto" (every verbs device with an active port; none when
// there is no RDMA stack: *out empty and OK), "sim" / "sim:N" (N new simulated NICs on the
// process's simulated fabric), "sim:PATTERNS" (the simulated NICs named in MC_SIM_NIC_NAMES
// that PATTERNS pick, as below), a comma-separated list of verbs device names (each must
// exist: MC_ERR_NOT_FOUND / MC_ERR_UNSUPPORTED naming it), or of patterns and exclusions
// (nic_select.h: "mlx5_*,!mlx5_3"; none matching is MC_ERR_NOT_FOUND listing the devices
// seen). ctrl_bytes sizes the simulated NIC's QP control region.
// "sim-ib" is one simulated InfiniBand NIC. port is the rdma_port key: 0 for each device's
// first ACTIVE port, else that port number (a simulated NIC has only port 1).
Status open_devices(const std::string &spec, uint64_t ctrl_bytes, int port,
                    std::vector<std::unique_ptr<Device>> *out);

// The names of the host's verbs devices (MC_ERR_UNSUPPORTED without an RDMA stack).
Status list_verbs_devices(std::vector<std::string> *names);

// libibverbs, loaded with dlopen on first use.
Status open_verbs_devices(const std::vector<std::string> &names, bool all, int port,
                          std::vector<std::unique_ptr<Device>> *out);

}  // namespace mc::rdma
