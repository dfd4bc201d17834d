// Failover: when every path a transport has to a peer is down (Transport::carries is false) and
// another of the peer's transports moves the same memory, new requests take that one, slices
// already handed to the broken transport come back through Host::fail_over and go over it too,
// and requests return to the first transport once it carries again. Each change is logged once
// per peer and counted (failover_requests, failover_slices).
#include "engine/engine.h"

#include "util/log.h"

namespace mc {

int EngineCore::pick_route(Peer &p, const std::vector<Route> &routes, const std::string &lloc,
                           const BufferDesc &rb) {
  int first = -1;
  for (size_t k = 0; k < routes.size(); k++) {
    const Route &r = routes[k];
    if (!r.transport->accepts(lloc, rb.location) || !r.transport->accepts_buffer(*r.path, rb)) continue;
    if (first < 0) first = static_cast<int>(k);
    if (!r.transport->carries(*r.path)) continue;
    if (static_cast<int>(k) != first) {
      failover_requests_.fetch_add(1, std::memory_order_relaxed);
      note_failover(p, true, routes[first].transport->name(), r.transport->name());
    } else if (p.failed_over.load(std::memory_order_relaxed) && later_accepts(routes, k, lloc, rb)) {
      note_failover(p, false, r.transport->name(), nullptr);  // it could have failed over, and did not
    }
    return static_cast<int>(k);
  }
  return first;  // nothing carries: the first that accepts fails it as before
}

// Whether a route after k moves a request between these locations.
bool EngineCore::later_accepts(const std::vector<Route> &routes, size_t k, const std::string &lloc,
                               const BufferDesc &rb) {
  for (size_t j = k + 1; j < routes.size(); j++)
    if (routes[j].transport->accepts(lloc, rb.location) &&
        routes[j].transport->accepts_buffer(*routes[j].path, rb))
      return true;
  return false;
}

void EngineCore::note_failover(Peer &p, bool on, const char *from, const char *to) {
  if (p.failed_over.exchange(on) == on) return;
  if (on)
    MC_LOGW("segment " << p.name << ": " << from
                       << " cannot carry its transfers (every path down or failing); "
                       << "they go over " << to << " until it can again");
  else
    MC_LOGI("segment " << p.name << ": " << from << " carries its transfers again");
}

std::string EngineCore::location_at(uint64_t addr) {
  std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
  auto it = buffers_.upper_bound(addr);
  if (it == buffers_.begin()) return "";
  --it;
  return addr - it->first < it->second->length ? it->second->location : std::string();
}

bool EngineCore::fail_over(const Transport &from, Slice *s, size_t n) {
  if (n == 0) return true;
  // Held here: the slices may end, and their batch be reset, before this returns. (Pending, they
  // keep the batch from resetting, and the batch holds the peer: BatchCore::hold.)
  std::shared_ptr<Peer> peer = s[0].slot->peer ? s[0].slot->peer->shared_from_this() : nullptr;
  if (stopping_.load() || !peer) return false;
  Peer &p = *peer;
  std::vector<Route> routes;
  std::shared_ptr<const Descriptor> desc;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    routes = p.routes;
    desc = p.desc;
  }
  // Every slice must fit the route taken: slices of one peer normally share their buffers'
  // memory kinds; where they do not, this hands back false and they fail as before.
  const Route *to = nullptr;
  for (size_t i = 0; i < n; i++) {
    const BufferDesc *rb = desc ? desc->find(s[i].remote) : nullptr;
    const LocalBuffer *lb = s[i].slot->lbuf;  // the request's one buffer, when it lies in one
    std::string lloc = lb ? lb->location : location_at(reinterpret_cast<uint64_t>(s[i].local));
    if (!rb || lloc.empty()) return false;
    const Route *r = nullptr;
    for (auto &c : routes)
      if (c.transport != &from && c.transport->accepts(lloc, rb->location) &&
          c.transport->accepts_buffer(*c.path, *rb) && c.transport->carries(*c.path)) {
        r = &c;
        break;
      }
    if (!r || (to && r != to)) return false;
    to = r;
  }
  failover_slices_.fetch_add(n, std::memory_order_relaxed);
  note_failover(p, true, from.name(), to->transport->name());
  to->transport->submit(*to->path, s, n);
  return true;
}

}  // namespace mc
