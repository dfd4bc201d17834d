// GET /metrics: the engine's Figures (the same snapshot stats_json renders) and every
// transport's, the control listener's and the health monitor's counters in the Prometheus text
// format. Transport counters are taken from their stats JSON objects, so the two views cannot
// disagree and a transport (or plugin) adds metrics by adding stats members.
#include <nlohmann/json.hpp>

#include "control/listener.h"
#include "engine/engine.h"
#include "metrics/http_server.h"
#include "util/prom_text.h"

namespace mc {

namespace {

using json = nlohmann::json;
using L = PromText::Labels;

void requests(PromText &m, const Figures &f) {
  static const char *const kOp[] = {"read", "write", "notify"};
  for (auto &t : f.tx)
    for (size_t op = 0; op < EngineCounters::kOps; op++) {
      if ((t.transport == "notify") != (op == MC_NOTIFY)) continue;
      m.add("mc_requests_total", "counter", "requests ended, by transport, direction and outcome",
            {{"transport", t.transport}, {"direction", kOp[op]}, {"outcome", "completed"}}, t.completed[op]);
      m.add("mc_requests_total", "counter", "requests ended, by transport, direction and outcome",
            {{"transport", t.transport}, {"direction", kOp[op]}, {"outcome", "failed"}}, t.failed[op]);
      m.add("mc_bytes_total", "counter", "bytes of completed requests, by transport and direction",
            {{"transport", t.transport}, {"direction", kOp[op]}}, t.bytes[op]);
    }
  for (auto &[st, n] : f.failures)
    m.add("mc_request_failures_total", "counter", "failed requests by the status they ended with",
          {{"status", status_name(st)}}, n);
  const char *bh = "batch latency: from a submit on an idle batch to the end of its last request";
  m.histogram("mc_batch_duration_seconds", bh, {{"outcome", "completed"}}, f.batch_completed);
  m.histogram("mc_batch_duration_seconds", bh, {{"outcome", "failed"}}, f.batch_failed);
}

void engine_gauges(PromText &m, const Figures &f) {
  m.add("mc_segments", "gauge", "open segments by state", {{"state", "ok"}}, f.segments_ok);
  m.add("mc_segments", "gauge", "open segments by state", {{"state", "unreachable"}}, f.segments_unreachable);
  m.add("mc_rejoins_total", "counter", "peers seen back with a new incarnation", {}, f.rejoins);
  m.add("mc_buffers", "gauge", "registered local buffers", {}, f.buffers);
  m.add("mc_buffer_bytes", "gauge", "bytes of registered local buffers", {}, f.buffer_bytes);
  m.add("mc_heaps", "gauge", "offset-allocator heaps alive in the process", {}, f.heaps);
  m.add("mc_heap_capacity_bytes", "gauge", "capacity of every heap in the process", {}, f.heap_capacity);
  m.add("mc_heap_used_bytes", "gauge", "bytes allocated from every heap in the process", {}, f.heap_used);
  m.add("mc_staging_pool_bytes", "gauge", "pinned GPU staging pool size (0 until used)", {},
        f.staging_pool_bytes);
  m.add("mc_staging_pool_used_bytes", "gauge", "pinned GPU staging pool lent out now", {},
        f.staging_pool_used);
  m.add("mc_staging_bytes_total", "counter", "bytes staged between GPU and host", {{"direction", "in"}},
        f.staging_bytes_in);
  m.add("mc_staging_bytes_total", "counter", "bytes staged between GPU and host", {{"direction", "out"}},
        f.staging_bytes_out);
  m.add("mc_notify_queue_depth", "gauge", "notifications received and not read yet", {}, f.notify_queued);
  const char *nh = "MC_NOTIFY messages by event";
  m.add("mc_notify_total", "counter", nh, {{"event", "sent"}}, f.notify_sent);
  m.add("mc_notify_total", "counter", nh, {{"event", "failed"}}, f.notify_failed);
  m.add("mc_notify_total", "counter", nh, {{"event", "received"}}, f.notify_received);
  m.add("mc_notify_total", "counter", nh, {{"event", "refused_busy"}}, f.notify_refused_busy);
  m.add("mc_notify_total", "counter", nh, {{"event", "refused_stale"}}, f.notify_refused_stale);
  m.add("mc_descriptor_deltas_served_total", "counter", "descriptor deltas served to peers", {},
        f.descriptor_deltas_served);
  m.add("mc_failover_requests_total", "counter",
        "requests routed off rdma because every rdma path to the peer was down", {}, f.failover_requests);
  m.add("mc_failover_slices_total", "counter", "slices in flight moved off rdma to another transport", {},
        f.failover_slices);
}

// A number or boolean of a stats object as a sample; other kinds are skipped.
void stat_sample(PromText &m, const std::string &name, const L &labels, const std::string &key,
                 const json &v) {
  std::string help = "\"" + key + "\" of mc_engine_stats_json";
  if (v.is_boolean())
    m.add(name, "gauge", help, labels, v.get<bool>() ? 1 : 0);
  else if (v.is_number_unsigned())
    m.add(name, "untyped", help, labels, v.get<uint64_t>());
  else if (v.is_number())
    m.add_double(name, "untyped", help, labels, v.get<double>());
}

// One stats object (a transport's, the listener's): each numeric member K becomes
// PREFIX_K{labels}; an array of objects with a "name" under key "nics" becomes
// PREFIX_nic_FIELD{labels, nic=NAME} (the rdma NICs).
void stats_object(PromText &m, const std::string &prefix, const L &labels, const std::string &text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return;
  for (auto &[k, v] : j.items()) {
    if (!v.is_array()) {
      stat_sample(m, prefix + "_" + k, labels, k, v);
      continue;
    }
    std::string one = k.size() > 1 && k.back() == 's' ? k.substr(0, k.size() - 1) : k;
    for (auto &e : v) {
      if (!e.is_object() || !e.contains("name") || !e["name"].is_string()) continue;
      L l = labels;
      l.push_back({one, e["name"].get<std::string>()});
      for (auto &[ek, ev] : e.items()) stat_sample(m, prefix + "_" + one + "_" + ek, l, k + "[]." + ek, ev);
    }
  }
}

}  // namespace

std::string EngineCore::metrics_text(const metrics::HttpServer::Counters &c) {
  Figures f = figures();
  PromText m;
  m.add("mc_engine_info", "gauge", "this engine (value 1)",
        {{"name", name_}, {"incarnation", std::to_string(incarnation_)}}, 1);
  requests(m, f);
  engine_gauges(m, f);
  m.add("mc_metrics_scrapes_total", "counter", "GET /metrics answered before this one", {}, c.scrapes);
  if (listener_) stats_object(m, "mc_control", {}, listener_->stats_json());
  if (health_) stats_object(m, "mc_health", {}, health_json());
  for (auto &t : transports_) stats_object(m, "mc_transport", {{"transport", t->name()}}, t->stats_json());
  return m.text();
}

}  // namespace mc
