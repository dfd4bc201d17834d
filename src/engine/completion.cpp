// Completion: slices reported by transports end their requests and batches.
#include "engine/engine.h"
#include "gpu/stream_gate.h"
#include "util/tsc_clock.h"

#include <chrono>
#include <mutex>
#include <shared_mutex>

namespace mc {

namespace {
// mc_batch_submit_on_stream: the hold a stream waits on, taken from the slot while the request
// is still pending. Told (StreamHold::ended) only after the batch counted the request ended:
// the caller's stream may go on at once, and its next work may be a host function or a thread
// that waits for the stream and then finds the batch not pending (mc_batch_wait(b, 0),
// mc_batch_reset, mc_batch_destroy). Still inside enter_finish/leave_finish.
inline cuda::StreamHold *take_hold(RequestSlot *r) {
  cuda::StreamHold *h = r->hold;
  r->hold = nullptr;
  return h;
}
inline void release_hold(cuda::StreamHold *h) {
  if (h) h->ended();
}
}  // namespace

void EngineCore::complete(const Slice &s, mc_status_t status) {
  // A merged slice covers `count` whole requests with consecutive slots, all ending now.
  if (s.count > 1 && status == MC_OK) {
    finish_merged(s);
    return;
  }
  for (uint32_t k = 0; k < s.count; k++) {
    RequestSlot *r = s.slot + k;
    if (status != MC_OK) {
      int32_t expect = MC_OK;
      r->error.compare_exchange_strong(expect, status);
    } else {
      r->bytes.fetch_add(s.count == 1 ? s.len : r->length, std::memory_order_relaxed);
    }
    if (r->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) finish_request(r, r->error.load());
  }
}

void EngineCore::complete(const Slice *s, const mc_status_t *st, size_t n) {
  for (size_t i = 0; i < n;) {
    // A run of slices that moved whole one-slice requests (a request's slices add up to its
    // length, so len == length means one slice) of one batch.
    size_t j = i;
    while (j < n && st[j] == MC_OK && s[j].count == 1 && s[j].len == s[j].slot->length &&
           s[j].slot->batch == s[i].slot->batch)
      j++;
    if (j - i > 1) {
      finish_whole(s + i, j - i);
      i = j;
    } else {
      complete(s[i], st[i]);
      i++;
    }
  }
}

bool EngineCore::canceled(const Slice &s) const { return s.slot->batch->canceled(); }

void EngineCore::finish_request(RequestSlot *r, mc_status_t err) {
  BatchCore *b = r->batch;
  b->enter_finish();
  if (err == MC_ERR_PEER_DOWN || err == MC_ERR_TRANSPORT) {
    if (r->peer) r->peer->kick();
  }
  // A request still pending when its batch was canceled ends canceled, whatever its slices did.
  if (b->canceled()) {
    err = MC_ERR_CANCELED;
    r->error.store(MC_ERR_CANCELED);
  }
  r->peer = nullptr;
  if (r->lbuf) {
    // Within one buffer (the common case): no lock, no lookup. The buffer cannot go away
    // while pinned.
    r->lbuf->in_use.fetch_sub(1, std::memory_order_release);
  } else {
    std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
    unpin_locked(r->local, r->length);
  }
  if (err == MC_OK) {
    counters_.completed(r->tx, r->op, 1, r->length);
    r->state.store(MC_REQUEST_COMPLETED, std::memory_order_release);
  } else {
    counters_.failed(r->tx, r->op, err);
    r->state.store(MC_REQUEST_FAILED, std::memory_order_release);
  }
  cuda::StreamHold *h = take_hold(r);
  bool last = b->request_done(err);
  release_hold(h);
  after_request_done(b, last);
  b->leave_finish();
}

void EngineCore::after_request_done(BatchCore *b, bool last) {
  if (b->notifies_waiting()) notify_sender_->poke();
  if (last) {
    // The batch's busy period ended: its latency, from the submit that found it idle.
    counters_.batch_done(TscClock::ns_between(b->busy_since_ticks(), TscClock::ticks()), !b->failed());
    inbox_->wake();
  }
}

// A NOTIFY ends as its send did: one already delivered stays COMPLETED even if its batch was
// canceled meanwhile (its message is in the peer's queue).
void EngineCore::finish_notify(RequestSlot *r, mc_status_t err) {
  BatchCore *b = r->batch;
  b->enter_finish();
  if (err == MC_ERR_PEER_DOWN && r->peer) r->peer->kick();
  r->peer = nullptr;
  r->error.store(err);
  if (err == MC_OK) {
    r->bytes.store(r->length, std::memory_order_relaxed);
    counters_.completed(r->tx, r->op, 1, r->length);
    r->state.store(MC_REQUEST_COMPLETED, std::memory_order_release);
  } else {
    counters_.failed(r->tx, r->op, err);
    r->state.store(MC_REQUEST_FAILED, std::memory_order_release);
  }
  cuda::StreamHold *h = take_hold(r);
  bool last = b->request_done(err);
  release_hold(h);
  after_request_done(b, last);
  b->leave_finish();
}

// Ends n requests that all moved every byte at once, each the whole of one slice: what
// finish_request does per request, with the engine's counters, the local buffers' pins (per run
// of requests in one buffer) and the batch's pending count changed once for all of them. A
// request that failed or was canceled meanwhile ends through finish_request as before.
// slot_at(k) gives request k; all are of batch b.
template <class SlotAt>
void EngineCore::finish_together(BatchCore *b, size_t n, SlotAt slot_at) {
  b->enter_finish();
  int64_t ended = 0;
  // Counted per run of requests of one transport and direction (usually the whole call).
  uint8_t run_tx = 0;
  uint32_t run_op = 0;
  uint64_t run_reqs = 0, run_bytes = 0;
  auto flush = [&] {
    if (run_reqs) counters_.completed(run_tx, run_op, run_reqs, run_bytes);
    run_reqs = run_bytes = 0;
  };
  LocalBuffer *run_buf = nullptr;
  uint32_t run_n = 0;
  for (size_t k = 0; k < n; k++) {
    RequestSlot *r = slot_at(k);
    // Each request lies wholly in one reported slice, and a slice is reported exactly once: no
    // read-modify-write needed.
    r->bytes.store(r->length, std::memory_order_relaxed);
    r->remaining.store(0, std::memory_order_relaxed);
    mc_status_t err = r->error.load();
    if (err != MC_OK || b->canceled()) {
      finish_request(r, err);
      continue;
    }
    r->peer = nullptr;
    if (r->lbuf && r->lbuf == run_buf) {
      run_n++;
    } else {
      if (run_n) run_buf->in_use.fetch_sub(run_n, std::memory_order_release);
      run_buf = r->lbuf;
      run_n = 0;
      if (r->lbuf) {
        run_n = 1;
      } else {
        std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
        unpin_locked(r->local, r->length);
      }
    }
    if (run_reqs && (r->tx != run_tx || r->op != run_op)) flush();
    run_tx = r->tx;
    run_op = r->op;
    run_reqs++;
    run_bytes += r->length;
    ended++;
  }
  if (run_n) run_buf->in_use.fetch_sub(run_n, std::memory_order_release);
  if (ended > 0) {
    flush();
    // States last, as in finish_request: a request seen COMPLETED is already counted. Those
    // that ended through finish_request are no longer PENDING.
    bool holds = false;
    for (size_t k = 0; k < n; k++) {
      RequestSlot *r = slot_at(k);
      if (r->state.load(std::memory_order_relaxed) == MC_REQUEST_PENDING) {
        r->state.store(MC_REQUEST_COMPLETED, std::memory_order_release);
        holds |= r->hold != nullptr;
      }
    }
    bool last = b->requests_done(ended);
    // Holds after the count, as in finish_request; those that ended there are already taken.
    for (size_t k = 0; holds && k < n; k++) release_hold(take_hold(slot_at(k)));
    after_request_done(b, last);
  }
  b->leave_finish();
}

// A merged slice (many small adjacent requests, one copy) that succeeded: its requests have
// consecutive slots.
void EngineCore::finish_merged(const Slice &s) {
  finish_together(s.slot->batch, s.count, [&](size_t k) { return s.slot + k; });
}

// n slices of one batch that each carried one whole request (see complete(const Slice *, ...)).
void EngineCore::finish_whole(const Slice *s, size_t n) {
  finish_together(s[0].slot->batch, n, [&](size_t k) { return s[k].slot; });
}

}  // namespace mc
