#include "gpu/stream_gate.h"

#include <chrono>
#include <cstring>

#include "util/log.h"

namespace mc::cuda {
namespace {

constexpr size_t kWordsPerPage = 1024;  // one 4 KiB pinned page of 32-bit words

// The process's holds. g_hold_mu guards g_free and g_arrays; the pages and the holds are never
// freed (see the header), g_arrays keeps them reachable.
std::mutex g_hold_mu;
std::vector<StreamHold *> g_free;
std::vector<StreamHold *> *g_arrays = new std::vector<StreamHold *>;

uint64_t mono_us() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

void StreamHold::ended() {
  if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) StreamGate::release(this);
}

Status StreamGate::hold(int64_t n, StreamHold **out) {
  std::lock_guard<std::mutex> lk(g_hold_mu);
  if (g_free.empty()) {
    void *p = nullptr;
    Status st = check(
        "cuMemHostAlloc",
        api()->cuMemHostAlloc(&p, kWordsPerPage * 4, CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP),
        MC_ERR_NO_MEMORY);
    if (!st.ok()) return st;
    std::memset(p, 0, kWordsPerPage * 4);
    auto *holds = new StreamHold[kWordsPerPage];  // never freed, as the page
    g_arrays->push_back(holds);
    for (size_t k = 0; k < kWordsPerPage; k++) {
      holds[k].word = static_cast<volatile uint32_t *>(p) + k;
      g_free.push_back(&holds[k]);
    }
  }
  StreamHold *h = g_free.back();
  g_free.pop_back();
  h->value++;  // above every value written to the word before
  h->left.store(n, std::memory_order_relaxed);
  *out = h;
  return Status::Ok();
}

void StreamGate::release(StreamHold *h) {
  // The value is read before the hold goes back to the pool (another call may take it at once).
  __atomic_store_n(const_cast<uint32_t *>(h->word), h->value, __ATOMIC_RELEASE);
  std::lock_guard<std::mutex> lk(g_hold_mu);
  g_free.push_back(h);
}

Status StreamGate::begin(void *stream, Call *c) {
  const Api *a = api();
  if (!a) return Err(MC_ERR_UNSUPPORTED, "no CUDA: " + why_unavailable());
  if (!a->cuStreamWaitValue32)
    return Err(MC_ERR_UNSUPPORTED, "the CUDA driver lacks cuStreamWaitValue32 (stream memory operations)");
  c->stream = static_cast<CUstream>(stream);
  CUcontext ctx = nullptr;
  if (!stream) {
    a->cuCtxGetCurrent(&ctx);
    if (!ctx)
      return Err(MC_ERR_INVALID_ARG,
                 "stream is NULL (the legacy default stream) but no CUDA context is current on this thread");
  } else {
    CUresult r = a->cuStreamGetCtx(c->stream, &ctx);
    if (r != CUDA_SUCCESS || !ctx)
      return Err(MC_ERR_INVALID_ARG, error_text("cuStreamGetCtx", r) + " (is stream a CUDA stream?)");
  }
  Status st;
  c->prev = swap_context(ctx, &st);
  if (!st.ok()) return st;
  c->ctx = ctx;
  c->mark = take_event(ctx, &st);
  if (st.ok()) st = check("cuEventRecord", a->cuEventRecord(c->mark, c->stream), MC_ERR_INVALID_ARG);
  if (!st.ok()) {
    if (c->mark) give_event(ctx, c->mark);
    c->mark = nullptr;
    restore_context(c->prev);
    return st;
  }
  return Status::Ok();
}

Status StreamGate::wait_for(Call &c, uint32_t value, volatile uint32_t *word) {
  const Api *a = api();
  CUdeviceptr d = 0;
  Status st = check("cuMemHostGetDevicePointer",
                    a->cuMemHostGetDevicePointer(&d, const_cast<uint32_t *>(word), 0), MC_ERR_UNSUPPORTED);
  if (st.ok())
    st = check("cuStreamWaitValue32", a->cuStreamWaitValue32(c.stream, d, value, CU_STREAM_WAIT_VALUE_GEQ),
               MC_ERR_UNSUPPORTED);
  if (st.ok()) waits++;
  return st;
}

void StreamGate::end(Call &c, std::unique_ptr<StreamWaiter> w) {
  restore_context(c.prev);
  if (!w) {
    give_event(c.ctx, c.mark);
    c.mark = nullptr;
    return;
  }
  std::unique_lock<std::mutex> lk(mu_);
  if (stop_) {
    lk.unlock();
    w->run(MC_ERR_PEER_DOWN);
    give_event(c.ctx, c.mark);
    return;
  }
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  jobs_.push_back({c.ctx, c.mark, std::move(w)});
  c.mark = nullptr;
  cv_.notify_one();
}

void StreamGate::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::vector<std::pair<CUcontext, CUevent>> ev;
  {
    std::lock_guard<std::mutex> lk(mu_);
    ev.swap(events_);
  }
  if (const Api *a = api())
    for (auto &[ctx, e] : ev) a->cuEventDestroy(e);
}

CUevent StreamGate::take_event(CUcontext ctx, Status *st) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = events_.size(); i-- > 0;)
      if (events_[i].first == ctx) {
        CUevent e = events_[i].second;
        events_.erase(events_.begin() + static_cast<long>(i));
        return e;
      }
  }
  CUevent e = nullptr;
  *st = check("cuEventCreate", api()->cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
  return st->ok() ? e : nullptr;
}

void StreamGate::give_event(CUcontext ctx, CUevent e) {
  if (!e) return;
  std::lock_guard<std::mutex> lk(mu_);
  events_.push_back({ctx, e});
}

// Polls each job's mark once; true when one ended its wait.
bool StreamGate::poll(std::vector<Job> &mine) {
  const Api *a = api();
  bool any = false;
  size_t keep = 0;
  for (auto &j : mine) {
    Status st;
    swap_context(j.ctx, &st);  // this thread's own: no restore
    CUresult r = a->cuEventQuery(j.mark);
    mc_status_t how = MC_OK;
    if (r == CUDA_ERROR_NOT_READY) {
      how = j.w->abandoned();
      if (how == MC_OK) {
        mine[keep++] = std::move(j);
        continue;
      }
      abandoned++;
    } else if (r != CUDA_SUCCESS) {
      MC_LOGW("stream gate: " << error_text("the stream's work failed (cuEventQuery)", r));
      how = MC_ERR_TRANSPORT;
    } else {
      started++;
    }
    j.w->run(how);
    j.w.reset();
    give_event(j.ctx, j.mark);
    any = true;
  }
  mine.resize(keep);
  return any;
}

// The stream's earlier work usually ends within microseconds to milliseconds: spin (yielding)
// for 2 ms after the last progress, then poll every 20 us, then every 200 us after 100 ms.
void StreamGate::loop() {
  std::vector<Job> mine;
  uint64_t since = mono_us();
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (mine.empty()) cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
      if (!jobs_.empty()) since = mono_us();
      for (auto &j : jobs_) mine.push_back(std::move(j));
      jobs_.clear();
      if (stop_) {
        lk.unlock();
        for (auto &j : mine) {
          j.w->run(MC_ERR_PEER_DOWN);
          give_event(j.ctx, j.mark);
        }
        return;
      }
    }
    if (poll(mine)) {
      since = mono_us();
      continue;
    }
    uint64_t idle = mono_us() - since;
    if (idle < 2000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(idle < 100000 ? 20 : 200));
  }
}

}  // namespace mc::cuda
