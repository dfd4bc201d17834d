// The fast path of one small request (mc_transfer with count 1): the copy runs on the calling
// thread, at once, without a batch, slots, slices or the planner's per-thread vectors.
//
// Why: over local and shm one small request is a memcpy of a few bytes, and the normal path's
// fixed cost (batch, validate, route, slice, hand-off, completion chain, wait) was ten times
// the copy (bench/results/small.txt). Here the same checks run in one pass and the request ends
// where it started.
//
// What it takes: a READ or WRITE of at most kFastMax bytes whose local range lies in one
// registered buffer, to a segment that is not UNREACHABLE, whose descriptor (as last known)
// covers the remote range and allows the operation, and whose first route accepts the memory
// and carries now (no failover under way). Anything else, and anything the transport cannot
// settle at once (Transport::copy_now returns false), takes the normal path untouched: the
// planner then gives the same errors, messages and refreshes as ever. What it counts is what the
// normal path counts for the request: requests and bytes (or failures by status) of its
// transport, the batch latency histogram (the private batch of mc_transfer), the event fd tick,
// a probe of the peer after a transport failure; the transport counts its slice.
#include <mutex>
#include <shared_mutex>

#include "engine/engine.h"
#include "util/tsc_clock.h"

namespace mc {

namespace {

// The largest request the fast path takes. Over shm the normal path copies up to 256 KiB on the
// calling thread too, over local up to 64 KiB, so up to here the fast path only saves the fixed
// cost; the window a target's unregister may wait for stays a few microseconds.
constexpr uint64_t kFastMax = 64 * 1024;

// The fields the planner checks first (check_fields), as it would pass them.
bool plain(const mc_request_t &r) {
  return (r.opcode == MC_READ || r.opcode == MC_WRITE) && r.flags == 0 && r.length > 0 &&
         r.length <= kFastMax && r.local != nullptr;
}

}  // namespace

bool EngineCore::transfer_one(const mc_request_t &r, mc_status_t *st) {
  if (!plain(r) || stopping_.load(std::memory_order_relaxed)) return false;
  const uint64_t t0 = TscClock::ticks();  // the private batch's busy period begins
  // The segment table stays read-locked until the copy ended: the peer cannot go meanwhile, so
  // no reference count is taken (two locked instructions). Nothing below blocks: copy_now
  // settles at once or declines.
  std::shared_lock<ReadMostlyMutex> segs(segs_mu_);
  auto it = segs_.find(r.segment);
  if (it == segs_.end()) return false;
  Peer &p = *it->second;
  if (p.state.load() == MC_SEGMENT_UNREACHABLE) return false;
  LocalBuffer *lb = pin_one(reinterpret_cast<uint64_t>(r.local), r.length);
  if (!lb) return false;
  FastRoute fr;
  bool done = fast_route(p, r, *lb, &fr) &&
              fr.transport->copy_now(*fr.path, r.opcode, r.local, r.remote, r.length, st);
  lb->in_use.fetch_sub(1, std::memory_order_release);  // as finish_request unpins
  if (!done) return false;
  // A failure kicks the peer's probe (count_one): outside the table's lock, with the peer held.
  std::shared_ptr<Peer> failed = *st == MC_OK ? nullptr : p.shared_from_this();
  segs.unlock();
  count_one(failed.get(), *fr.transport, r, *st, t0);
  return true;
}

// Pins the local buffer [addr, addr+len) lies in whole (the planner's pin_locked for the one
// buffer case); nullptr, nothing pinned, when it is not inside one registered buffer.
LocalBuffer *EngineCore::pin_one(uint64_t addr, uint64_t len) {
  std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
  auto it = buffers_.upper_bound(addr);
  if (it == buffers_.begin()) return nullptr;
  LocalBuffer *b = std::prev(it)->second.get();
  if (addr + len < addr || addr + len > b->addr + b->length) return nullptr;
  b->in_use.fetch_add(1, std::memory_order_relaxed);
  return b;
}

// The route the planner would pick (check_remote, then pick_route's first route when it accepts
// and carries and the peer is not failed over), with its transport and path; false otherwise
// (nothing changed: the planner then checks, refreshes and routes as usual).
bool EngineCore::fast_route(Peer &p, const mc_request_t &r, const LocalBuffer &lb, FastRoute *out) {
  const uint32_t need = r.opcode == MC_READ ? MC_ACCESS_READ : MC_ACCESS_WRITE;
  std::lock_guard<std::mutex> lk(p.mu);
  // One buffer of the descriptor holds the whole remote range (the planner's covers() and
  // access_of() for that case); a range across buffers takes the normal path.
  const BufferDesc *rb = p.desc->find(r.remote);
  const uint64_t end = r.remote + r.length;
  if (!rb || end < r.remote || end > rb->addr + rb->length || !(rb->access & need)) return false;
  if (p.routes.empty() || p.failed_over.load(std::memory_order_relaxed)) return false;
  const Route &rt = p.routes[0];
  if (!rt.transport->accepts(lb.location, rb->location) || !rt.transport->accepts_buffer(*rt.path, *rb) ||
      !rt.transport->carries(*rt.path))
    return false;
  out->transport = rt.transport;
  out->path = rt.path;
  return true;
}

// What finish_request and after_request_done count for a request of a batch of one (p: its peer
// where it failed).
void EngineCore::count_one(Peer *p, const Transport &t, const mc_request_t &r, mc_status_t st, uint64_t t0) {
  const uint8_t slot = slot_of(&t);
  if (st == MC_OK) {
    counters_.completed(slot, r.opcode, 1, r.length);
  } else {
    if (p && (st == MC_ERR_PEER_DOWN || st == MC_ERR_TRANSPORT)) p->kick();
    counters_.failed(slot, r.opcode, st);
  }
  counters_.batch_done(TscClock::ns_between(t0, TscClock::ticks()), st == MC_OK);
  inbox_->wake();
}

}  // namespace mc
