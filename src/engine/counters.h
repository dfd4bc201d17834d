// The engine's request counters (by transport, direction and outcome; failures by status; batch
// latency) and the Figures snapshot that mc_engine_stats_json and GET /metrics both render, so
// the two always come from the same numbers. Counting is lock-free: each thread adds to a row of
// its own on the completion path (util/thread_sums.h), no lock, no locked instruction, and no
// allocation but a thread's first count.
#pragma once
#include <mc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "util/histogram.h"
#include "util/thread_sums.h"

namespace mc {

class EngineCounters {
 public:
  // A request's transport slot: the index of its transport in the engine's list, or
  // kNotifySlot for MC_NOTIFY (sent over the control channel).
  static constexpr size_t kSlots = 16;
  static constexpr uint8_t kNotifySlot = kSlots - 1;
  static constexpr size_t kOps = 3;        // MC_READ, MC_WRITE, MC_NOTIFY
  static constexpr size_t kStatuses = 32;  // -status; anything beyond lands in the last

  // me: the counting thread's index, where the caller has it (util/thread_sums.h ThreadIx).
  void completed(uint8_t slot, uint32_t op, uint64_t n, uint64_t bytes) {
    completed(ThreadIx::mine(), slot, op, n, bytes);
  }
  void completed(ThreadIx me, uint8_t slot, uint32_t op, uint64_t n, uint64_t bytes) {
    cells_.add(me, cell(slot, op, kCompleted), n);
    cells_.add(me, cell(slot, op, kBytes), bytes);
  }
  void failed(uint8_t slot, uint32_t op, mc_status_t err) { failed(ThreadIx::mine(), slot, op, err); }
  void failed(ThreadIx me, uint8_t slot, uint32_t op, mc_status_t err) {
    cells_.add(me, cell(slot, op, kFailed), 1);
    size_t i = err < 0 ? std::min<size_t>(size_t(-int64_t(err)), kStatuses - 1) : 0;
    cells_.add(me, kTxCells + i, 1);
  }
  void batch_done(uint64_t ns, bool ok) { batch_done(ThreadIx::mine(), ns, ok); }
  void batch_done(ThreadIx me, uint64_t ns, bool ok) { (ok ? batch_ok_ : batch_failed_).observe(me, ns); }
  void rejoin() { rejoins_.fetch_add(1, std::memory_order_relaxed); }

  struct TxFigures {
    std::string transport;  // "notify" for the notify slot
    uint64_t completed[kOps] = {}, failed[kOps] = {}, bytes[kOps] = {};
  };
  // Fills the request part of a snapshot; names[i] is slot i's transport (empty: unused).
  void read(const std::vector<std::string> &names, struct Figures *f) const;

 private:
  // One row a counting thread (util/thread_sums.h): per slot and op completed, failed and bytes,
  // then the failures by status.
  enum Kind : size_t { kCompleted, kFailed, kBytes, kKinds };
  static constexpr size_t kTxCells = kSlots * kOps * kKinds;
  static size_t cell(size_t slot, size_t op, Kind k) {
    return ((slot % kSlots) * kOps + op % kOps) * kKinds + k;
  }
  ThreadSums<kTxCells + kStatuses> cells_;
  Histogram batch_ok_, batch_failed_;
  std::atomic<uint64_t> rejoins_{0};
};

// "MC_ERR_TIMEOUT" for MC_ERR_TIMEOUT: the stable name stats and metrics label failures with.
const char *status_name(mc_status_t s);

// One reading of everything the engine reports about itself.
struct Figures {
  // Requests.
  std::vector<EngineCounters::TxFigures> tx;               // transports that carried any, and notify
  uint64_t requests_completed = 0, requests_failed = 0;    // sums over tx
  uint64_t bytes_read = 0, bytes_written = 0;              // sums over tx (READ, WRITE)
  std::vector<std::pair<mc_status_t, uint64_t>> failures;  // by status, those seen
  Histogram::Snapshot batch_completed, batch_failed;       // submit on an idle batch -> its last end
  // Segments.
  uint64_t segments_open = 0, segments_ok = 0, segments_unreachable = 0, rejoins = 0;
  // Memory: registered buffers, every MemHeap of the process, the pinned GPU staging pool.
  uint64_t buffers = 0, buffer_bytes = 0;
  uint64_t heaps = 0, heap_capacity = 0, heap_used = 0;
  uint64_t staging_pool_bytes = 0, staging_pool_used = 0, staging_bytes_in = 0, staging_bytes_out = 0;
  // Notifications.
  uint64_t notify_sent = 0, notify_failed = 0, notify_received = 0, notify_refused_busy = 0,
           notify_refused_stale = 0, notify_queued = 0;
  uint64_t descriptor_deltas_served = 0;
  // RDMA -> TCP failover (engine/failover.cpp): requests routed, and slices moved, off rdma.
  uint64_t failover_requests = 0, failover_slices = 0;
};

}  // namespace mc
