// The submit planner (engine/submit.cpp): one submit call validates its requests, routes them,
// cuts them into slices, merges small adjacent ones and hands each (peer, route) group to its
// transport once.
#pragma once
#include "engine/engine.h"

namespace mc {

// One group of slices: everything of this call that goes to one peer over one route.
struct PlanGroup {
  uint32_t target;
  uint8_t route;
  uint8_t tx;  // the counters slot of its route's transport
  std::vector<Slice> slices;
};

// A group handed off later (mc_batch_submit_on_stream): its transport, path and slices.
struct StreamGroup {
  Transport *transport;
  std::shared_ptr<PeerPath> path;
  std::vector<Slice> slices;
};

// A distinct peer of one submit call: its descriptor and routes as they were at the call.
struct PlanTarget {
  std::shared_ptr<Peer> peer;
  std::shared_ptr<const Descriptor> desc;
  std::vector<Route> routes;
  bool refreshed = false;
};

class SubmitPlanner {
 public:
  SubmitPlanner(EngineCore &e, BatchCore &b, const mc_request_t *reqs, size_t n, size_t base);
  // Releases the call's targets; their per-thread vectors keep their capacity.
  ~SubmitPlanner();
  // Pass 1: everything but the local pins. Peers whose descriptor lacks a range are refreshed
  // once per call (this may block up to timeout_ms).
  Status validate();
  // Pass 2: pins the local ranges and picks each request's route (the first transport of its
  // peer that moves data between the two memory kinds). Any failure unpins what was pinned.
  Status route();
  // Pass 3: slots and slices, merged and grouped per (peer, route); then one hand-off each.
  void slice();
  void hand_off();
  // hand_off for mc_batch_submit_on_stream: each group whose transport queues it on stream
  // itself goes there; the others are moved to *later, to start once the stream's earlier work
  // finished.
  void hand_off_on_stream(void *stream, std::vector<StreamGroup> *later);
  // The NOTIFY requests of this call, in order, for the engine's sender.
  std::vector<NotifyJob> &jobs() { return jobs_; }

 private:
  using Target = PlanTarget;
  bool plain_like_last(size_t i);
  Status check_fields(size_t i) const;
  Status check_notify(size_t i) const;
  void add_job(size_t i, RequestSlot *s);
  Status resolve_target(size_t i);
  Status check_remote(size_t i);
  Status refresh_once(Target &t, size_t i);
  static void snapshot(Target &t);
  Status route_one(size_t i, const LocalBuffer *lb, const BufferDesc *rb);
  PlanGroup &group_for(uint32_t t, uint8_t r);
  bool merge(size_t i, PlanGroup &g, RequestSlot *s);
  void cut(size_t i, PlanGroup &g, RequestSlot *s);
  // tx: the request's counters slot (its group's, or the notify slot).
  void fill_slot(RequestSlot *s, size_t i, uint32_t remaining, uint8_t tx, const std::shared_ptr<Peer> &peer);

  EngineCore &e_;
  BatchCore &b_;
  const mc_request_t *reqs_;
  size_t n_, base_;
  size_t ntargets_ = 0;  // targets_[0, ntargets_): the distinct peers of this call, few
  mc_segment_t last_seg_ = 0;
  uint32_t last_t_ = 0;
  size_t ngroups_ = 0;
  // check_remote's one-entry cache: the remote buffer the last request found, of target
  // last_rb_t_ (reset when a refresh replaces a descriptor).
  const BufferDesc *last_rb_ = nullptr;
  uint32_t last_rb_t_ = 0;
  std::vector<NotifyJob> jobs_;  // a vector: constructing an empty one allocates nothing
  // The per-thread vectors, looked up once per call (in a shared library each lookup of a
  // thread_local is a call).
  std::vector<uint8_t> &route_of_;
  std::vector<LocalBuffer *> &single_buf_;
  std::vector<PlanGroup> &groups_;
  // Reused like the vectors above: a call's targets are released when it ends, but their
  // vectors keep their capacity, so a steady stream of submits allocates nothing.
  std::vector<Target> &targets_;
  std::vector<uint32_t> &tix_;  // request -> its target
};

}  // namespace mc
