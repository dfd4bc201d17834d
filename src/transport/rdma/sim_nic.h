// The simulated RDMA fabric: every engine of this process that uses rdma_devices=sim[:N] gets N
// new NICs on one shared fabric, addressed like RoCE v2 ports (a GID per NIC, LID = NIC id).
//
// What it enforces, as hardware does:
//  - QP states RESET/INIT/RTR/RTS/ERR with the legal transitions only; posting to a QP that is
//    not in RTS fails (in ERR it is accepted and flushed, as on real NICs).
//  - An MR has an lkey and a distinct rkey; an access change (rereg) gives it a new rkey.
//  - Every WR: lkey and rkey exist on their NIC, the ranges lie inside their MRs, the MRs grant
//    the access (local write for a READ's sink, remote read/write), the responder QP is in
//    RTR/RTS, connected back to the requester, and allows the operation. A remote violation
//    completes with kRemAccessErr and moves the QP to ERR; a local one with kLocProtErr.
//  - A QP whose peer QP, NIC or port is gone, whose first PSN is not the one the responder's
//    RTR expects, or whose path MTU disagrees with the responder's (for a message larger than
//    the smaller one) completes with kRetryExcErr - only after its ACK timeout ran out
//    retry_cnt + 1 times - and goes to ERR.
//  - RTR: a RoCE port needs a GRH; an InfiniBand port routes by LID; PSNs are 24 bits;
//    max_rd_atomic / max_dest_rd_atomic within the device's limit (16).
//  - A CQ holds `depth` completions: more WRs outstanding on its QPs is an overrun (a kCqErr
//    event, its QPs to ERR).
//  - Completions in order per QP; on ERR every outstanding WR completes with kWrFlushErr.
//  - Each QP's send and completion rings live in the NIC's control region, carved with a
//    MemHeap: destroying a QP returns its block, creating one reuses it. Ring headers, WQEs and
//    CQEs carry a seal; a corrupted ring is detected, the QP goes to ERR with kFatalErr
//    completions (from the NIC's own shadow of the outstanding wr_ids) and a kQpFatal event.
// Work requests execute when the QP's CQ is polled (the poller plays the NIC's engine), so
// completions are asynchronous to the poster as on hardware.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memheap/memheap.h"
#include "transport/rdma/nic.h"

namespace mc::rdma::sim {

// n new NICs named "mcsimK" (K unique in the process), or one per entry of names (each must not
// be open already: MC_ERR_EXISTS); RoCE v2 ports, or InfiniBand ones (routed by LID, GRH
// optional) when infiniband is set. RoCE and IB ports cannot talk. Each NIC's max_mr_size is
// MC_SIM_MAX_MR_SIZE (a size, 4K or more) when set, else unlimited.
Status open(int n, uint64_t ctrl_bytes, std::vector<std::unique_ptr<Device>> *out, bool infiniband = false,
            const std::vector<std::string> *names = nullptr);

// Fault injection and inspection, for white-box tests. Each returns false for an unknown NIC.
bool kill_nic(const std::string &nic);    // port down: its QPs to ERR, a kPortError event
bool revive_nic(const std::string &nic);  // port up again: a kPortActive event
bool fail_next_modify(const std::string &nic, int count = 1);      // the next modify_qp calls fail
bool set_completion_delay(const std::string &nic, uint32_t us);    // every WR runs this late
bool fail_next_set_access(const std::string &nic, int count = 1);  // the next rereg (access) calls fail
// Its engine hangs (on) or runs again (off): WQEs to or from it neither run nor complete; a
// QP moved to ERR still flushes. What a wedged NIC or a black-holed path looks like.
bool stall_nic(const std::string &nic, bool on);
// Scribbles on the ring header (what=0) or the oldest outstanding WQE (what=1) of a QP.
bool corrupt_ring(const std::string &nic, uint32_t qpn, int what = 0);

struct HeapReport {
  MemHeap::Stats stats;
  uint64_t live_qps = 0;
  uint64_t block_bytes = 0;    // control bytes per QP
  bool invariants_ok = false;  // MemHeap::check_invariants
  bool overlap = false;        // two live QPs' blocks overlap
  std::string why;
};
bool heap_report(const std::string &nic, HeapReport *out);
// Names of the live simulated NICs.
std::vector<std::string> nic_names();

}  // namespace mc::rdma::sim
