// A batch of requests: their slots, and how a caller waits for, cancels or reuses them.
#pragma once
#include <mc.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace mc::cuda {
struct StreamHold;
}

namespace mc {

class EngineCore;
class BatchCore;
struct LocalBuffer;
struct Peer;

// Per-request bookkeeping, kept in fixed chunks inside its batch (no allocation per request).
struct RequestSlot {
  std::atomic<uint32_t> state{MC_REQUEST_PENDING};
  std::atomic<int32_t> error{MC_OK};
  std::atomic<uint32_t> remaining{0};  // slices not yet reported
  std::atomic<uint64_t> bytes{0};      // bytes of slices that completed
  uint64_t length = 0;
  uint64_t local = 0;
  uint32_t op = 0;
  uint8_t tx = 0;  // its transport's counters slot (EngineCounters)
  BatchCore *batch = nullptr;
  LocalBuffer *lbuf = nullptr;  // the local buffer pinned, when the range lies in one
  Peer *peer = nullptr;         // told about transport failures; kept alive by the batch (BatchCore::hold)
  // mc_batch_submit_on_stream: the caller's stream waits for this request (and the others of
  // its call) to end; told once when it did.
  cuda::StreamHold *hold = nullptr;
};

class BatchCore {
 public:
  static constexpr size_t kChunk = 4096;
  // A batch of at most this many requests (mc_transfer of one request, typically) keeps its
  // slots inside itself: no allocation per call.
  static constexpr size_t kInlineSlots = 4;
  // wait() spins up to kWaitSpin (bounded by timeout_ms) before it sleeps.
  static constexpr std::chrono::microseconds kWaitSpin{30};

  BatchCore(std::shared_ptr<EngineCore> e, size_t capacity);
  ~BatchCore();
  const std::shared_ptr<EngineCore> &engine() const { return engine_; }
  size_t capacity() const { return capacity_; }
  RequestSlot *slot(size_t i) {
    return capacity_ <= kInlineSlots ? &inline_[i] : &chunks_[i / kChunk][i % kChunk];
  }
  size_t submitted() const { return submitted_.load(std::memory_order_acquire); }
  // Waits for every submitted request to end; MC_OK, the first failure, or MC_ERR_TIMEOUT.
  mc_status_t wait(int timeout_ms);
  // Every pending request ends FAILED with MC_ERR_CANCELED: queued slices are dropped, READ
  // data in flight is drained instead of written; returns once nothing pending can touch memory.
  void cancel_and_wait();
  bool canceled() const { return canceled_.load(std::memory_order_relaxed); }
  bool pending() const { return pending_.load() != 0; }
  // Waits until no completing thread still touches this batch.
  void quiesce();
  void reset();

  // The submit side. Submits on one batch are serialized by the lock this returns.
  std::unique_lock<std::mutex> lock_submits() { return std::unique_lock<std::mutex>(submit_mu_); }
  // Keeps p alive until the next reset or the batch's end: its requests point at it without a
  // count of their own (two locked instructions a request less). Caller holds lock_submits().
  void hold(const std::shared_ptr<Peer> &p);
  // Makes slots [0, end) exist (caller holds lock_submits()).
  void reserve_slots(size_t end);
  // Requests [base, base + n) were filled in: they count as pending and become visible.
  void add_submitted(size_t base, size_t n);

  // The completion side. A completing thread brackets its touches of the batch with these
  // (quiesce waits for them).
  void enter_finish() { finishing_.fetch_add(1, std::memory_order_acq_rel); }
  void leave_finish() { finishing_.fetch_sub(1, std::memory_order_acq_rel); }
  // Both return true when they ended the batch's last pending request.
  bool request_done(mc_status_t err);
  bool requests_done(int64_t n);  // n requests ended MC_OK at once
  // When the batch last went from idle to busy (a TscClock reading), and whether a request of it
  // failed: what the batch latency histogram records when its last request ends.
  uint64_t busy_since_ticks() const { return busy_since_ticks_.load(std::memory_order_relaxed); }
  bool failed() const { return first_error_.load(std::memory_order_relaxed) != MC_OK; }

  // NOTIFY requests of this batch waiting in the engine's sender for earlier requests to end:
  // while there are any, each ending request pokes the sender.
  void notify_waiting(int32_t d) { notify_waiting_.fetch_add(d, std::memory_order_acq_rel); }
  bool notifies_waiting() const { return notify_waiting_.load(std::memory_order_acquire) != 0; }

 private:
  std::shared_ptr<EngineCore> engine_;
  size_t capacity_;
  std::mutex submit_mu_;                      // serializes submits (index assignment) on one batch
  std::vector<std::shared_ptr<Peer>> holds_;  // the peers of requests since the last reset (hold)
  // Reserved whole at creation so that it never moves: the NOTIFY sender reads slots of a batch
  // while another thread may submit more into it.
  std::vector<std::unique_ptr<RequestSlot[]>> chunks_;  // capacity_ > kInlineSlots
  RequestSlot inline_[kInlineSlots];                    // capacity_ <= kInlineSlots
  std::atomic<size_t> submitted_{0};
  std::atomic<int64_t> pending_{0};
  std::atomic<int32_t> first_error_{MC_OK};
  std::atomic<bool> canceled_{false};
  std::atomic<int32_t> finishing_{0};  // completers between their last touch and their exit
  std::atomic<int32_t> notify_waiting_{0};
  std::atomic<uint64_t> busy_since_ticks_{0};
  std::mutex mu_;  // pairs with cv_ for waiters
  std::condition_variable cv_;
  std::atomic<int32_t> sleepers_{0};  // waiters in (or about to enter) cv_
  void wake_sleepers();
};

}  // namespace mc
