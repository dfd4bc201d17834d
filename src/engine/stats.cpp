// The engine's statistics as JSON: its counters, each transport's object, one object per peer.
#include "engine/engine.h"

#include "control/listener.h"
#include "gpu/gpu_staging.h"
#include "memheap/memheap.h"
#include "metrics/http_server.h"
#include "util/cpu_crowding.h"
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

// Requests by transport and direction, one flat object each (no member named after a
// transport, so "tcp":{ still finds the tcp transport's own object):
// [{"transport":"tcp","direction":"read","completed":..,"failed":..,"bytes":..},..].
std::string requests_json(const Figures &f) {
  static const char *const kOp[] = {"read", "write", "notify"};
  std::string a = "[";
  for (auto &t : f.tx)
    for (size_t op = 0; op < EngineCounters::kOps; op++) {
      if ((t.transport == "notify") != (op == MC_NOTIFY)) continue;
      JsonObject d;
      d.str("transport", t.transport);
      d.str("direction", kOp[op]);
      d.num("completed", t.completed[op]);
      d.num("failed", t.failed[op]);
      d.num("bytes", t.bytes[op]);
      if (a.size() > 1) a += ',';
      a += d.done();
    }
  return a + "]";
}

std::string latency_json(const Histogram::Snapshot &h) {
  JsonObject o;
  o.num("count", h.count);
  o.num("sum_ns", h.sum_ns);
  return o.done();
}

}  // namespace

std::string EngineCore::health_json() {
  HealthMonitor::Counters hc = health_->counters();
  JsonObject ho;
  ho.num("batched_pings", hc.batched_pings);
  ho.num("probe_steps", hc.slow_steps);
  ho.num("connections_ended", hc.ended);
  ho.num("connections_kept", hc.kept);
  ho.num("connections_watched", hc.watched);
  ho.num("beats", hc.beats);
  return ho.done();
}

Figures EngineCore::figures() {
  Figures f;
  std::vector<std::string> names;
  for (auto &t : transports_) names.push_back(t->name());
  counters_.read(names, &f);
  {
    std::shared_lock<ReadMostlyMutex> lk(segs_mu_);
    f.segments_open = segs_.size();
    for (auto &[h, p] : segs_) (p->state.load() == MC_SEGMENT_OK ? f.segments_ok : f.segments_unreachable)++;
  }
  {
    std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
    f.buffers = buffers_.size();
    for (auto &[a, b] : buffers_) f.buffer_bytes += b->length;
  }
  MemHeap::Totals ht = MemHeap::process_totals();
  f.heaps = ht.heaps;
  f.heap_capacity = ht.capacity;
  f.heap_used = ht.used;
  gpu::StagingStats ss = gpu::staging_stats();
  f.staging_pool_bytes = ss.pool_bytes;
  f.staging_pool_used = ss.pool_used;
  f.staging_bytes_in = ss.bytes_in;
  f.staging_bytes_out = ss.bytes_out;
  f.notify_sent = notify_sender_->sent();
  f.notify_failed = notify_sender_->failed();
  f.notify_received = inbox_->received();
  f.notify_refused_busy = inbox_->refused_busy();
  f.notify_refused_stale = inbox_->refused_stale();
  f.notify_queued = inbox_->queued();
  f.descriptor_deltas_served = deltas_served_.load();
  f.failover_requests = failover_requests_.load();
  f.failover_slices = failover_slices_.load();
  return f;
}

std::string EngineCore::stats_json() {
  Figures f = figures();
  JsonObject o;
  o.str("name", name_);
  o.num("incarnation", incarnation_);
  o.num("requests_completed", f.requests_completed);
  // The adaptive watch of waits (util/spin.h): its budget now, and how often it ran out.
  o.num("wait_spin_us", wait_spin_.current_us());
  o.num("wait_spins_wasted", wait_spin_.wasted_count());
  // Readings that found this process's threads waiting for CPUs (util/cpu_crowding.h): each
  // turned the adaptive watch and shm's shared copies off for a while.
  o.num("cpu_crowded_readings", cpu_crowding::crowded_readings());
  o.num("requests_failed", f.requests_failed);
  o.num("failover_requests", f.failover_requests);
  o.num("failover_slices", f.failover_slices);
  o.num("bytes_read", f.bytes_read);
  o.num("bytes_written", f.bytes_written);
  o.raw("requests_by_transport", requests_json(f));
  JsonObject fo;
  for (auto &[st, n] : f.failures) fo.num(status_name(st), n);
  o.raw("failures", fo.done());
  JsonObject bo;
  bo.raw("completed", latency_json(f.batch_completed));
  bo.raw("failed", latency_json(f.batch_failed));
  o.raw("batch_latency", bo.done());
  o.num("descriptor_deltas_served", f.descriptor_deltas_served);
  o.num("notify_sent", f.notify_sent);
  o.num("notify_failed", f.notify_failed);
  o.num("notify_received", f.notify_received);
  o.num("notify_refused_busy", f.notify_refused_busy);
  o.num("notify_refused_stale", f.notify_refused_stale);
  o.num("notify_queued", f.notify_queued);
  o.num("buffers", f.buffers);
  o.num("buffer_bytes", f.buffer_bytes);
  o.num("segments_open", f.segments_open);
  JsonObject so;
  so.num("ok", f.segments_ok);
  so.num("unreachable", f.segments_unreachable);
  o.raw("segments", so.done());
  o.num("rejoins_total", f.rejoins);
  JsonObject mo;
  mo.num("heaps", f.heaps);
  mo.num("heap_capacity", f.heap_capacity);
  mo.num("heap_used", f.heap_used);
  mo.num("staging_pool_bytes", f.staging_pool_bytes);
  mo.num("staging_pool_used", f.staging_pool_used);
  mo.num("staging_bytes_in", f.staging_bytes_in);
  mo.num("staging_bytes_out", f.staging_bytes_out);
  o.raw("memory", mo.done());
  if (metrics_) {
    metrics::HttpServer::Counters mc = metrics_->counters();
    JsonObject m;
    m.str("listen", metrics_->bound());
    m.num("scrapes", mc.scrapes);
    m.num("not_found", mc.not_found);
    m.num("bad_method", mc.bad_method);
    o.raw("metrics", m.done());
  }
  std::vector<std::shared_ptr<Peer>> peers;
  {
    std::shared_lock<ReadMostlyMutex> lk(segs_mu_);
    for (auto &[n, w] : peers_)
      if (auto p = w.lock()) peers.push_back(std::move(p));
  }
  if (listener_) o.raw("control", listener_->stats_json());
  if (health_) o.raw("health", health_json());
  for (auto &t : transports_) o.raw(t->name(), t->stats_json());
  // One flat object per open peer, keyed by its name.
  JsonObject po;
  for (auto &p : peers) po.raw(p->name, peer_json(*p));
  o.raw("peers", po.done());
  return o.done();
}

}  // namespace mc
