// The engine's statistics as JSON: its counters, each transport's object, one object per peer.
#include "engine/engine.h"

#include "control/listener.h"
#include "util/json_writer.h"

namespace mc {

namespace {

// One peer's flat object: the transport it uses first, its incarnation, state and rejoins, and
// what each of its routes' transports adds.
std::string peer_json(Peer &p) {
  std::vector<Route> routes;
  uint64_t inc;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    routes = p.routes;
    inc = p.desc->incarnation;
  }
  JsonObject o;
  o.str("transport", routes.empty() ? "" : routes[0].transport->name());
  o.num("incarnation", inc);
  o.str("state", p.state.load() == MC_SEGMENT_OK ? "ok" : "unreachable");
  o.num("rejoins", p.rejoins.load());
  o.raw("failed_over", p.failed_over.load() ? "true" : "false");  // a later route carries (failover.cpp)
  for (auto &r : routes) o.members(r.transport->peer_stats(p.name, *r.path));
  return o.done();
}

}  // namespace

std::string EngineCore::stats_json() {
  JsonObject o;
  o.str("name", name_);
  o.num("incarnation", incarnation_);
  o.num("requests_completed", requests_completed_.load());
  // The adaptive watch of waits (util/spin.h): its budget now, and how often it ran out.
  o.num("wait_spin_us", wait_spin_.current_us());
  o.num("wait_spins_wasted", wait_spin_.wasted_count());
  o.num("requests_failed", requests_failed_.load());
  o.num("failover_requests", failover_requests_.load());
  o.num("failover_slices", failover_slices_.load());
  o.num("bytes_read", bytes_read_.load());
  o.num("bytes_written", bytes_written_.load());
  o.num("descriptor_deltas_served", deltas_served_.load());
  o.num("notify_sent", notify_sender_->sent());
  o.num("notify_failed", notify_sender_->failed());
  o.num("notify_received", inbox_->received());
  o.num("notify_refused_busy", inbox_->refused_busy());
  o.num("notify_refused_stale", inbox_->refused_stale());
  o.num("notify_queued", inbox_->queued());
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    o.num("buffers", buffers_.size());
  }
  std::vector<std::shared_ptr<Peer>> peers;
  {
    std::shared_lock<std::shared_mutex> lk(segs_mu_);
    o.num("segments_open", segs_.size());
    for (auto &[n, w] : peers_)
      if (auto p = w.lock()) peers.push_back(std::move(p));
  }
  if (listener_) o.raw("control", listener_->stats_json());
  if (health_) {
    HealthMonitor::Counters hc = health_->counters();
    JsonObject ho;
    ho.num("batched_pings", hc.batched_pings);
    ho.num("probe_steps", hc.slow_steps);
    ho.num("connections_ended", hc.ended);
    ho.num("connections_kept", hc.kept);
    o.raw("health", ho.done());
  }
  for (auto &t : transports_) o.raw(t->name(), t->stats_json());
  // One flat object per open peer, keyed by its name.
  JsonObject po;
  for (auto &p : peers) po.raw(p->name, peer_json(*p));
  o.raw("peers", po.done());
  return o.done();
}

}  // namespace mc
