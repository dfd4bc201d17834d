// mc_batch_submit_on_stream: a submit ordered on a caller's CUDA stream. The call is planned and
// validated as mc_batch_submit's; then each (peer, route) group goes either onto the stream
// itself (a transport that queues copies there: nvlink) or waits in the engine's stream gate
// for the work queued on the stream before the call, and the stream waits on the device for
// every request of the call to end (gpu/stream_gate.h).
#include "engine/submit_planner.h"
#include "util/log.h"

namespace mc {

// Groups that start once the stream's earlier work finished (run on the gate's thread).
class StreamStart : public cuda::StreamWaiter {
 public:
  StreamStart(EngineCore *e, BatchCore *b, std::vector<StreamGroup> g)
      : e_(e), b_(b), groups_(std::move(g)) {}
  mc_status_t abandoned() override {
    if (b_->canceled()) return MC_ERR_CANCELED;
    if (e_->stopping_.load()) return MC_ERR_PEER_DOWN;
    return MC_OK;
  }
  void run(mc_status_t st) override {
    if (st == MC_OK) st = abandoned();
    for (auto &g : groups_) {
      if (st == MC_OK) {
        g.transport->submit(*g.path, g.slices.data(), g.slices.size());
      } else {
        for (auto &s : g.slices) e_->complete(s, st);
      }
    }
  }

 private:
  EngineCore *e_;  // the engine stops its gate (running this) before it goes away
  BatchCore *b_;   // lives while it has pending requests
  std::vector<StreamGroup> groups_;
};

Status EngineCore::submit_on_stream(BatchCore &b, const mc_request_t *reqs, size_t n, void *stream) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is being destroyed");
  for (size_t i = 0; i < n; i++)
    if (reqs[i].opcode == MC_NOTIFY)
      return Err(MC_ERR_INVALID_ARG, "request " + std::to_string(i) +
                                         ": MC_NOTIFY is not ordered on a stream (submit it with "
                                         "mc_batch_submit after synchronizing the stream)");
  cuda::StreamGate::Call call;
  Status st = stream_gate_.begin(stream, &call);
  if (!st.ok()) return st;
  auto submit_lk = b.lock_submits();
  size_t base = b.submitted();
  if (n > b.capacity() - base) {
    stream_gate_.end(call, nullptr);
    return Err(MC_ERR_INVALID_ARG, "batch capacity " + std::to_string(b.capacity()) + " exceeded: " +
                                       std::to_string(base) + " submitted, " + std::to_string(n) + " more");
  }
  cuda::StreamHold *hold = nullptr;
  st = cuda::StreamGate::hold(static_cast<int64_t>(n), &hold);
  if (!st.ok()) {
    stream_gate_.end(call, nullptr);
    return st;
  }
  SubmitPlanner plan(*this, b, reqs, n, base);
  st = plan.validate();
  if (st.ok()) st = plan.route();
  if (!st.ok()) {
    cuda::StreamGate::release(hold);  // nothing waits on its word yet: back to the pool
    stream_gate_.end(call, nullptr);
    return st;
  }
  plan.slice();
  // Read before any request can end and hand the hold back to the pool.
  const uint32_t value = hold->value;
  volatile uint32_t *const word = hold->word;
  for (size_t i = 0; i < n; i++) b.slot(base + i)->hold = hold;
  b.add_submitted(base, n);
  std::vector<StreamGroup> later;
  plan.hand_off_on_stream(call.stream, &later);
  if (later.empty()) {
    stream_gate_.end(call, nullptr);  // all on the stream itself: its order is the contract
    return Status::Ok();
  }
  // After the copies queued on the stream (nvlink): they end before the word is written.
  st = stream_gate_.wait_for(call, value, word);
  if (!st.ok()) {
    MC_LOGW("mc_batch_submit_on_stream: " << st.message() << "; the requests that wait for it fail");
    StreamStart(this, &b, std::move(later)).run(st.code());
    stream_gate_.end(call, nullptr);
    return Status::Ok();  // the batch reports them FAILED
  }
  stream_gate_.end(call, std::make_unique<StreamStart>(this, &b, std::move(later)));
  return Status::Ok();
}

}  // namespace mc
