// A batch: its request slots, waiting, canceling, resetting.
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "util/cpu_crowding.h"
#include "util/tsc_clock.h"

namespace mc {

BatchCore::BatchCore(std::shared_ptr<EngineCore> e, size_t cap) : engine_(std::move(e)), capacity_(cap) {
  if (cap > kInlineSlots) chunks_.reserve((cap + kChunk - 1) / kChunk);
}
BatchCore::~BatchCore() = default;

// The last request's completer wakes sleepers only where there are any: most waits end in
// wait()'s watch, or find the batch done, and a lock and notify per batch would cost them.
// seq_cst on pending_ and sleepers_ on both sides: either the completer sees the sleeper, or the
// sleeper sees pending_ at 0 before it sleeps.
void BatchCore::wake_sleepers() {
  if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
  std::lock_guard<std::mutex> lk(mu_);
  cv_.notify_all();
}

bool BatchCore::requests_done(int64_t n) {
  if (pending_.fetch_sub(n, std::memory_order_seq_cst) == n) {
    wake_sleepers();
    return true;
  }
  return false;
}

bool BatchCore::request_done(mc_status_t err) {
  if (err != MC_OK) {
    int32_t expect = MC_OK;
    first_error_.compare_exchange_strong(expect, err);
  }
  if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1) {
    wake_sleepers();
    return true;
  }
  return false;
}

void BatchCore::quiesce() {
  while (finishing_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

mc_status_t BatchCore::wait(int timeout_ms) {
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  // Already ended (an in-process or same-host copy finishes inside submit): no lock, no clock.
  if (done()) {
    quiesce();
    return first_error_.load();
  }
  // A short watch first (the engine's adaptive budget, at most kWaitSpin, and timeout_ms): a
  // batch whose last part another thread is finishing (an shm worker's share of a large copy)
  // ends within microseconds, and being put to sleep and woken would cost tens of microseconds
  // on a VM; but where no core is idle the watch takes the core that thread needs
  // (util/spin.h): none while the CPUs are crowded (util/cpu_crowding.h).
  if (timeout_ms != 0) {
    AdaptiveSpin &spin = engine_->wait_spin();
    auto budget = cpu_crowding::crowded() ? std::chrono::microseconds(0) : spin.budget();
    if (timeout_ms > 0)
      budget = std::min<std::chrono::microseconds>(budget, std::chrono::milliseconds(timeout_ms));
    if (budget.count() > 0) {
      const auto until = std::chrono::steady_clock::now() + budget;
      for (unsigned i = 1; !done(); i++) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
        if ((i & 63) == 0 && std::chrono::steady_clock::now() >= until) break;
      }
      done() ? spin.paid() : spin.wasted();
    }
  }
  std::unique_lock<std::mutex> lk(mu_);
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  auto drained = [&] { return pending_.load(std::memory_order_seq_cst) == 0; };
  bool ended = true;
  if (timeout_ms < 0)
    cv_.wait(lk, drained);
  else
    ended = cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), drained);
  sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  if (!ended) return MC_ERR_TIMEOUT;
  lk.unlock();
  quiesce();
  return first_error_.load();
}

void BatchCore::cancel_and_wait() {
  std::lock_guard<std::mutex> lk(submit_mu_);  // no submit slips in between
  canceled_.store(true);
  if (notifies_waiting()) engine_->poke_notifies();  // its waiting NOTIFYs end now, unsent
  // Every slice ends within the engine's timeout of no progress (the transports' reapers), so
  // this wait is bounded.
  wait(-1);
  canceled_.store(false);
}

void BatchCore::reserve_slots(size_t end) {
  if (capacity_ <= kInlineSlots) return;
  size_t need = (end + kChunk - 1) / kChunk;
  // A small batch (mc_transfer's internal one, typically) gets a chunk of its own size, not
  // kChunk slots: the per-call cost of a small transfer stays a few hundred nanoseconds.
  while (chunks_.size() < need) chunks_.emplace_back(new RequestSlot[std::min(capacity_, kChunk)]);
}

void BatchCore::add_submitted(size_t base, size_t n) {
  // Before the slices are handed off (EngineCore::submit), so no completion precedes it.
  if (pending_.load(std::memory_order_acquire) == 0)
    busy_since_ticks_.store(TscClock::ticks(), std::memory_order_relaxed);
  pending_.fetch_add(static_cast<int64_t>(n), std::memory_order_acq_rel);
  submitted_.store(base + n, std::memory_order_release);
}

void BatchCore::hold(const std::shared_ptr<Peer> &p) {
  // Newest first: a batch's submits mostly go to the peer of the one before.
  for (size_t k = holds_.size(); k-- > 0;)
    if (holds_[k] == p) return;
  holds_.push_back(p);
}

void BatchCore::reset() {
  quiesce();
  holds_.clear();  // nothing pending (mc_batch_reset checks): no request points at them
  // Release stores, not seq_cst ones (each of those a locked exchange): reset runs alone on the
  // batch, and whatever runs next on it is ordered after this call by its caller.
  submitted_.store(0, std::memory_order_release);
  first_error_.store(MC_OK, std::memory_order_release);
  canceled_.store(false, std::memory_order_release);
}

}  // namespace mc
