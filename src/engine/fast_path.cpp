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
  // The segment table, the buffer table and the peer's view stay read-locked until the copy
  // ended: the peer cannot go meanwhile, nor the local buffer (nor, over local, the target
  // range), nor the route's path, so no reference count or pin is taken (two locked
  // instructions each), and the peer's mutex is not taken. Nothing below blocks: copy_now
  // settles at once or declines. Lock order: segments, buffers, then the peer's view.
  const ThreadIx me = ThreadIx::mine();  // for every lock and count below: one TLS read
  SharedHold segs(segs_mu_, me);
  auto it = segs_.find(r.segment);
  if (it == segs_.end()) return false;
  Peer &p = *it->second;
  if (p.state.load() == MC_SEGMENT_UNREACHABLE) return false;
  SharedHold bufs(buffers_mu_, me);
  const LocalBuffer *lb = find_one_locked(reinterpret_cast<uint64_t>(r.local), r.length);
  if (!lb) return false;
  SharedHold view(p.view_mu, me);  // the peer's desc and routes stay
  FastRoute fr;
  const bool done = fast_route(p, r, *lb, &fr) &&
                    fr.transport->copy_now(*fr.path, r.opcode, r.local, r.remote, r.length, st);
  view.unlock();
  bufs.unlock();
  if (!done) return false;
  // A failure kicks the peer's probe (count_one): outside the table's lock, with the peer held.
  std::shared_ptr<Peer> failed = *st == MC_OK ? nullptr : p.shared_from_this();
  segs.unlock();
  count_one(me, failed.get(), *fr.transport, r, *st, t0);
  return true;
}

// The local buffer [addr, addr+len) lies in whole (the planner's pin_locked for the one buffer
// case, without the pin); nullptr when it is not inside one registered buffer.
const LocalBuffer *EngineCore::find_one_locked(uint64_t addr, uint64_t len) const {
  auto it = buffers_.upper_bound(addr);
  if (it == buffers_.begin()) return nullptr;
  const LocalBuffer *b = std::prev(it)->second.get();
  if (addr + len < addr || addr + len > b->addr + b->length) return nullptr;
  return b;
}

// The route the planner would pick (check_remote, then pick_route's first route when it accepts
// and carries and the peer is not failed over), with its transport and path; false otherwise
// (nothing changed: the planner then checks, refreshes and routes as usual). Caller holds
// p.view_mu shared.
bool EngineCore::fast_route(const Peer &p, const mc_request_t &r, const LocalBuffer &lb, FastRoute *out) {
  const uint32_t need = r.opcode == MC_READ ? MC_ACCESS_READ : MC_ACCESS_WRITE;
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
  out->path = rt.path.get();
  return true;
}

// What finish_request and after_request_done count for a request of a batch of one (p: its peer
// where it failed).
void EngineCore::count_one(ThreadIx me, Peer *p, const Transport &t, const mc_request_t &r, mc_status_t st,
                           uint64_t t0) {
  const uint8_t slot = slot_of(&t);
  if (st == MC_OK) {
    counters_.completed(me, slot, r.opcode, 1, r.length);
  } else {
    if (p && (st == MC_ERR_PEER_DOWN || st == MC_ERR_TRANSPORT)) p->kick();
    counters_.failed(me, slot, r.opcode, st);
  }
  counters_.batch_done(me, TscClock::ns_between(t0, TscClock::ticks()), st == MC_OK);
  inbox_->wake();
}

}  // namespace mc
