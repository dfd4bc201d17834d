// The submit planner: one submit call validates its requests, routes them, cuts them into
// slices, merges small adjacent ones and hands each (peer, route) group to its transport once.
#include "engine/submit_planner.h"

#include <algorithm>

namespace mc {

namespace {

std::string req_prefix(size_t i) { return "request " + std::to_string(i) + ": "; }

// Kept per thread across calls so that a submit allocates nothing in the steady state. A
// submit never runs inside another on one thread (transports complete, they do not submit).
// One thread_local for all of them: in a shared library each lookup of one is a call.
struct PlanVectors {
  std::vector<uint8_t> route_of;
  std::vector<LocalBuffer *> single_buf;  // the one local buffer a request lies in
  std::vector<PlanGroup> groups;
  std::vector<PlanTarget> targets;  // see SubmitPlanner::targets_
  std::vector<uint32_t> tix;
};
thread_local PlanVectors t_plan;

}  // namespace

SubmitPlanner::SubmitPlanner(EngineCore &e, BatchCore &b, const mc_request_t *reqs, size_t n, size_t base)
    : e_(e),
      b_(b),
      reqs_(reqs),
      n_(n),
      base_(base),
      route_of_(t_plan.route_of),
      single_buf_(t_plan.single_buf),
      groups_(t_plan.groups),
      targets_(t_plan.targets),
      tix_(t_plan.tix) {
  tix_.resize(n);
}

SubmitPlanner::~SubmitPlanner() {
  for (size_t k = 0; k < ntargets_; k++) {
    targets_[k].peer.reset();
    targets_[k].desc.reset();
    targets_[k].routes.clear();
    targets_[k].refreshed = false;
  }
}

Status EngineCore::submit(BatchCore &b, const mc_request_t *reqs, size_t n) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is being destroyed");
  auto submit_lk = b.lock_submits();
  size_t base = b.submitted();
  if (n > b.capacity() - base)
    return Err(MC_ERR_INVALID_ARG, "batch capacity " + std::to_string(b.capacity()) + " exceeded: " +
                                       std::to_string(base) + " submitted, " + std::to_string(n) + " more");
  SubmitPlanner plan(*this, b, reqs, n, base);
  Status st = plan.validate();
  if (!st.ok()) return st;
  st = plan.route();
  if (!st.ok()) return st;
  plan.slice();
  b.add_submitted(base, n);
  plan.hand_off();
  // Still under the submit lock: the sender's per-destination order is the order of submits.
  if (!plan.jobs().empty()) notify_sender_->enqueue(std::move(plan.jobs()));
  return Status::Ok();
}

// ------------------------------------------------------------------------------ validate

Status SubmitPlanner::validate() {
  for (size_t i = 0; i < n_; i++) {
    if (plain_like_last(i)) continue;
    Status st = check_fields(i);
    if (st.ok()) st = resolve_target(i);
    if (st.ok() && reqs_[i].opcode != MC_NOTIFY) st = check_remote(i);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

// The common case of a batch, checked without building a Status: a READ or WRITE like the
// request before, on the same segment handle, whose remote range lies in the buffer the request
// before was found in and that buffer allows it. False: the full checks run (they set tix_[i]).
bool SubmitPlanner::plain_like_last(size_t i) {
  const mc_request_t &r = reqs_[i];
  if (i == 0 || r.segment != last_seg_ || !last_rb_ || last_rb_t_ != last_t_) return false;
  if ((r.opcode != MC_READ && r.opcode != MC_WRITE) || r.flags != 0 || r.length == 0 || !r.local)
    return false;
  const BufferDesc &b = *last_rb_;
  const uint64_t end = r.remote + r.length;
  const uint32_t need = r.opcode == MC_READ ? MC_ACCESS_READ : MC_ACCESS_WRITE;
  if (r.remote < b.addr || end < r.remote || end > b.addr + b.length || !(b.access & need)) return false;
  tix_[i] = last_t_;
  return true;
}

Status SubmitPlanner::check_fields(size_t i) const {
  const mc_request_t &r = reqs_[i];
  if (r.opcode == MC_NOTIFY) return check_notify(i);
  if (r.opcode != MC_READ && r.opcode != MC_WRITE)
    return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "opcode must be MC_READ, MC_WRITE or MC_NOTIFY");
  if (r.flags != 0) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "flags must be 0");
  if (r.length == 0) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "length must be > 0");
  if (!r.local) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "local is NULL");
  return Status::Ok();
}

Status SubmitPlanner::check_notify(size_t i) const {
  const mc_request_t &r = reqs_[i];
  if (r.flags != 0) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "flags must be 0");
  if (r.remote != 0) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "a NOTIFY's remote must be 0");
  if (r.length == 0 || r.length > MC_NOTIFY_MAX_BYTES)
    return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "a NOTIFY's length must be 1.." +
                                       std::to_string(MC_NOTIFY_MAX_BYTES) + ", got " +
                                       std::to_string(r.length));
  if (!r.local) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "local is NULL");
  if (e_.name_.size() > 255)
    return Err(MC_ERR_INVALID_ARG,
               req_prefix(i) + "this engine's name is longer than a notification names (255)");
  return Status::Ok();
}

void SubmitPlanner::snapshot(Target &t) {
  std::lock_guard<std::mutex> lk(t.peer->mu);
  t.desc = t.peer->desc;
  t.routes = t.peer->routes;
}

// The peer of request i, looked up once per run of requests on one segment handle.
Status SubmitPlanner::resolve_target(size_t i) {
  const mc_request_t &r = reqs_[i];
  if (i == 0 || r.segment != last_seg_) {
    auto p = e_.find_segment(r.segment);
    if (!p) return Err(MC_ERR_NOT_FOUND, req_prefix(i) + "unknown or closed segment handle");
    uint32_t k = 0;
    while (k < ntargets_ && targets_[k].peer != p) k++;
    if (k == ntargets_) {
      if (p->state.load() == MC_SEGMENT_UNREACHABLE)
        return Err(MC_ERR_PEER_DOWN, req_prefix(i) + "segment " + p->name + " is unreachable");
      if (ntargets_ == targets_.size()) targets_.emplace_back();
      Target &t = targets_[ntargets_++];
      t.peer = std::move(p);
      b_.hold(t.peer);
      snapshot(t);
    }
    last_seg_ = r.segment;
    last_t_ = k;
  }
  tix_[i] = last_t_;
  return Status::Ok();
}

Status SubmitPlanner::refresh_once(Target &t, size_t i) {
  if (t.refreshed) return Status::Ok();
  t.refreshed = true;
  last_rb_ = nullptr;  // it may point into the descriptor the refresh replaces
  Status st = e_.refresh_peer(*t.peer);
  if (!st.ok())
    return Err(st.code(), req_prefix(i) + "refreshing segment " + t.peer->name + ": " + st.message());
  snapshot(t);
  return Status::Ok();
}

// The remote range lies in the peer's registered buffers, which let peers do the operation.
// A descriptor that says otherwise may be stale: it is refreshed once per call.
Status SubmitPlanner::check_remote(size_t i) {
  const mc_request_t &r = reqs_[i];
  Target &t = targets_[tix_[i]];
  uint32_t need = r.opcode == MC_READ ? MC_ACCESS_READ : MC_ACCESS_WRITE;
  // The common case in one lookup, or none: the range inside one buffer that allows the
  // operation, often the buffer of the request before.
  const BufferDesc *one = last_rb_ && tix_[i] == last_rb_t_ && r.remote >= last_rb_->addr &&
                                  r.remote - last_rb_->addr < last_rb_->length
                              ? last_rb_
                              : t.desc->find(r.remote);
  if (one && r.remote + r.length >= r.remote && r.remote + r.length <= one->addr + one->length &&
      (one->access & need)) {
    last_rb_ = one;
    last_rb_t_ = tix_[i];
    return Status::Ok();
  }
  if (!t.desc->covers(r.remote, r.length)) {
    Status st = refresh_once(t, i);
    if (!st.ok()) return st;
    if (!t.desc->covers(r.remote, r.length))
      return Err(MC_ERR_OUT_OF_RANGE, req_prefix(i) + "remote range is not inside segment " + t.peer->name +
                                          "'s registered buffers");
  }
  // The peer's buffers say what peers may do (mc_buffer_set_access); its target enforces it too.
  if (!(t.desc->min_access & need) && !(t.desc->access_of(r.remote, r.length) & need)) {
    Status st = refresh_once(t, i);
    if (!st.ok()) return st;
    if (!t.desc->covers(r.remote, r.length) || !(t.desc->access_of(r.remote, r.length) & need))
      return Err(MC_ERR_DENIED, req_prefix(i) + "segment " + t.peer->name + " does not let peers " +
                                    (r.opcode == MC_READ ? "read" : "write") + " the remote range");
  }
  return Status::Ok();
}

// ------------------------------------------------------------------------------ route

Status SubmitPlanner::route() {
  route_of_.resize(n_);
  single_buf_.resize(n_);
  const LocalBuffer *last_lb = nullptr;
  const BufferDesc *last_rb = nullptr;
  std::shared_lock<ReadMostlyMutex> lk(e_.buffers_mu_);
  // Requests in the buffer of the one before are pinned together, once the run ends (still
  // under the lock): one atomic add a run, not one a request.
  LocalBuffer *run_buf = nullptr;
  int64_t run_pins = 0;
  auto flush = [&] {
    if (run_pins) run_buf->in_use.fetch_add(run_pins, std::memory_order_relaxed);
    run_pins = 0;
  };
  auto undo = [&](size_t upto) {
    flush();
    for (size_t j = 0; j < upto; j++)
      if (reqs_[j].opcode != MC_NOTIFY)
        e_.unpin_locked(reinterpret_cast<uint64_t>(reqs_[j].local), reqs_[j].length);
  };
  for (size_t i = 0; i < n_; i++) {
    if (reqs_[i].opcode == MC_NOTIFY) {  // no pin, no route: its message is copied at submit
      single_buf_[i] = nullptr;
      last_lb = nullptr;
      last_rb = nullptr;
      continue;
    }
    uint64_t a = reinterpret_cast<uint64_t>(reqs_[i].local), end = a + reqs_[i].length;
    const LocalBuffer *lb;
    if (run_buf && a >= run_buf->addr && end >= a && end <= run_buf->addr + run_buf->length) {
      lb = run_buf;
      run_pins++;
    } else {
      flush();
      lb = e_.pin_locked(a, reqs_[i].length);
      if (!lb) {
        undo(i);
        return Err(MC_ERR_OUT_OF_RANGE,
                   req_prefix(i) + "local range is not inside this engine's registered buffers");
      }
      run_buf = end <= lb->addr + lb->length ? const_cast<LocalBuffer *>(lb) : nullptr;
    }
    single_buf_[i] = end <= lb->addr + lb->length ? const_cast<LocalBuffer *>(lb) : nullptr;
    const BufferDesc *rb = last_rb && tix_[i] == tix_[i - 1] && reqs_[i].remote >= last_rb->addr &&
                                   reqs_[i].remote < last_rb->addr + last_rb->length
                               ? last_rb
                               : targets_[tix_[i]].desc->find(reqs_[i].remote);
    if (i > 0 && lb == last_lb && rb == last_rb && tix_[i] == tix_[i - 1]) {
      route_of_[i] = route_of_[i - 1];  // same pair of buffers as the previous request
      continue;
    }
    last_lb = lb;
    last_rb = rb;
    Status st = route_one(i, lb, rb);
    if (!st.ok()) {
      undo(i + 1);
      return st;
    }
  }
  flush();
  return Status::Ok();
}

// The first route that moves the request and carries now; past one that does not carry (every
// path it has is down) to the next that accepts: failover (engine/failover.cpp).
Status SubmitPlanner::route_one(size_t i, const LocalBuffer *lb, const BufferDesc *rb) {
  Target &t = targets_[tix_[i]];
  int k = e_.pick_route(*t.peer, t.routes, lb->location, *rb);
  if (k < 0)
    return Err(MC_ERR_UNSUPPORTED, req_prefix(i) + "no transport to segment " + t.peer->name +
                                       " moves data from " + lb->location + " to " + rb->location);
  route_of_[i] = static_cast<uint8_t>(k);
  return Status::Ok();
}

// ------------------------------------------------------------------------------ slice, merge, group

void SubmitPlanner::slice() {
  b_.reserve_slots(base_ + n_);
  // Reserved up front: group_for hands out references that must stay valid for the whole call.
  size_t max_groups = 0;
  for (size_t k = 0; k < ntargets_; k++) max_groups += targets_[k].routes.size();
  if (groups_.size() < max_groups) groups_.resize(max_groups);
  PlanGroup *prev_group = nullptr;  // the group request i-1 went to
  for (size_t i = 0; i < n_; i++) {
    RequestSlot *s = b_.slot(base_ + i);
    if (reqs_[i].opcode == MC_NOTIFY) {
      add_job(i, s);
      prev_group = nullptr;
      continue;
    }
    PlanGroup &g = group_for(tix_[i], route_of_[i]);
    if (&g == prev_group && merge(i, g, s)) continue;
    prev_group = &g;
    cut(i, g, s);
  }
}

PlanGroup &SubmitPlanner::group_for(uint32_t t, uint8_t r) {
  for (size_t g = 0; g < ngroups_; g++)
    if (groups_[g].target == t && groups_[g].route == r) return groups_[g];
  PlanGroup &g = groups_[ngroups_++];
  g.target = t;
  g.route = r;
  g.tx = e_.slot_of(targets_[t].routes[r].transport);
  g.slices.clear();
  return g;
}

void SubmitPlanner::fill_slot(RequestSlot *s, size_t i, uint32_t remaining, uint8_t tx,
                              const std::shared_ptr<Peer> &peer) {
  const mc_request_t &r = reqs_[i];
  s->state.store(MC_REQUEST_PENDING, std::memory_order_relaxed);
  s->error.store(MC_OK, std::memory_order_relaxed);
  s->bytes.store(0, std::memory_order_relaxed);
  s->remaining.store(remaining, std::memory_order_relaxed);
  s->length = r.length;
  s->local = reinterpret_cast<uint64_t>(r.local);
  s->op = r.opcode;
  s->tx = tx;
  s->batch = &b_;
  s->peer = peer.get();  // held by the batch (resolve_target)
  s->lbuf = single_buf_[i];
  s->hold = nullptr;
}

void SubmitPlanner::add_job(size_t i, RequestSlot *s) {
  const mc_request_t &r = reqs_[i];
  const Target &t = targets_[tix_[i]];
  fill_slot(s, i, 1, EngineCounters::kNotifySlot, t.peer);
  NotifyJob j;
  j.slot = s;
  j.batch = &b_;
  j.index = base_ + i;
  j.peer = t.peer;
  j.addr = t.desc->tcp;
  j.target_inc = t.desc->incarnation;
  j.body.assign(static_cast<const char *>(r.local), r.length);
  jobs_.push_back(std::move(j));
}

// Merges a small request into the previous slice of its group when both sides are adjacent:
// a batch of many small pages of one block then costs a few large slices on the wire.
bool SubmitPlanner::merge(size_t i, PlanGroup &g, RequestSlot *s) {
  const mc_request_t &r = reqs_[i];
  std::vector<Slice> &v = g.slices;
  uint64_t ss = e_.opts_.slice_size;
  if (v.empty() || r.length >= ss) return false;
  Slice &last = v.back();
  if (last.op != r.opcode || static_cast<char *>(last.local) + last.len != r.local ||
      last.remote + last.len != r.remote || last.len + r.length > ss || last.slot + last.count != s ||
      (base_ + i) % BatchCore::kChunk == 0 || !(last.count > 1 || last.slot->length == last.len))
    return false;
  static const std::shared_ptr<Peer> kNone;
  fill_slot(s, i, 1, g.tx, kNone);  // the slice's first request holds the peer for all of them
  last.len += r.length;
  last.count++;
  return true;
}

// Cuts request i into slices of at most slice_size.
void SubmitPlanner::cut(size_t i, PlanGroup &g, RequestSlot *s) {
  const mc_request_t &r = reqs_[i];
  std::vector<Slice> &v = g.slices;
  uint64_t ss = e_.opts_.slice_size;
  fill_slot(s, i, static_cast<uint32_t>((r.length + ss - 1) / ss), g.tx, targets_[tix_[i]].peer);
  for (uint64_t off = 0; off < r.length; off += ss) {
    Slice sl;
    sl.local = static_cast<char *>(r.local) + off;
    sl.remote = r.remote + off;
    sl.len = std::min(ss, r.length - off);
    sl.slot = s;
    sl.op = r.opcode;
    v.push_back(sl);
  }
}

void SubmitPlanner::hand_off() {
  for (size_t g = 0; g < ngroups_; g++) {
    Route &rt = targets_[groups_[g].target].routes[groups_[g].route];
    rt.transport->submit(*rt.path, groups_[g].slices.data(), groups_[g].slices.size());
  }
}

void SubmitPlanner::hand_off_on_stream(void *stream, std::vector<StreamGroup> *later) {
  for (size_t g = 0; g < ngroups_; g++) {
    Route &rt = targets_[groups_[g].target].routes[groups_[g].route];
    auto &v = groups_[g].slices;
    if (!rt.transport->submit_on_stream(*rt.path, v.data(), v.size(), stream))
      later->push_back({rt.transport, rt.path, v});
  }
}

}  // namespace mc
