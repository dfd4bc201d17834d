// The host table a plugin calls. Each op catches everything: a C caller must never see an
// exception, and a plugin's bad argument (NULL, junk) becomes an error status or nothing.
#include "transport/plugin/plugin_host.h"

#include <cstdlib>
#include <cstring>

#include "control/client.h"
#include "util/log.h"
#include "util/net.h"

namespace mc {

mc_tp_slice_t to_c_slice(const Slice &s) {
  return mc_tp_slice_t{s.local, s.remote, s.len, s.op, s.count, s.slot};
}

Slice from_c_slice(const mc_tp_slice_t &s) {
  return Slice{s.local, s.remote, s.len, static_cast<RequestSlot *>(s.slot), s.op, s.count};
}

namespace {

void h_complete(mc_tp_host_t *h, const mc_tp_slice_t *s, mc_status_t status) {
  if (!h || !s) return;
  try {
    h->host->complete(from_c_slice(*s), status);
  } catch (...) {
    MC_LOGE("plugin " << h->name << ": completing a slice failed");
  }
}

int h_canceled(mc_tp_host_t *h, const mc_tp_slice_t *s) {
  if (!h || !s) return 0;
  try {
    return h->host->canceled(from_c_slice(*s)) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

mc_status_t h_pin(mc_tp_host_t *h, uint64_t addr, uint64_t len, uint32_t op) {
  if (!h || (op != MC_READ && op != MC_WRITE)) return MC_ERR_INVALID_ARG;
  try {
    return h->host->pin(addr, len, op);
  } catch (...) {
    return MC_ERR_INTERNAL;
  }
}

void h_unpin(mc_tp_host_t *h, uint64_t addr, uint64_t len) {
  if (!h) return;
  try {
    h->host->unpin(addr, len);
  } catch (...) {
    MC_LOGE("plugin " << h->name << ": unpin failed");
  }
}

mc_status_t h_control_call(mc_tp_host_t *h, const char *peer_addr, const void *request, size_t request_len,
                           void **reply, size_t *reply_len, uint64_t *peer_incarnation) {
  if (!h || !peer_addr || (!request && request_len) || !reply || !reply_len) return MC_ERR_INVALID_ARG;
  *reply = nullptr;
  *reply_len = 0;
  try {
    HostPort addr;
    Status st = parse_host_port(peer_addr, &addr);
    if (!st.ok()) return st.code();
    std::string req(static_cast<const char *>(request), request_len), rep;
    st = control_call(addr, h->host->auth_token(), h->name, req, h->host->options().timeout_ms, &rep,
                      peer_incarnation);
    if (!st.ok()) {
      MC_LOGD("plugin " << h->name << ": control call to " << peer_addr << ": " << st.message());
      return st.code();
    }
    void *p = std::malloc(rep.size() + 1);
    if (!p) return MC_ERR_NO_MEMORY;
    std::memcpy(p, rep.data(), rep.size());
    static_cast<char *>(p)[rep.size()] = 0;
    *reply = p;
    *reply_len = rep.size();
    return MC_OK;
  } catch (...) {
    return MC_ERR_INTERNAL;
  }
}

void h_free_buffer(void *p) { std::free(p); }

// The engine keys a plugin may read, with the engine's defaults applied.
bool engine_value(const EngineOptions &o, const std::string &key, std::string *v) {
  if (key == "timeout_ms")
    *v = std::to_string(o.timeout_ms);
  else if (key == "workers")
    *v = std::to_string(o.workers);
  else if (key == "slice_size")
    *v = std::to_string(o.slice_size);
  else if (key == "listen")
    *v = o.listen;
  else
    return false;
  return true;
}

int64_t h_config(mc_tp_host_t *h, const char *key, char *buf, size_t cap) {
  if (!h || !key) return -1;
  try {
    std::string v;
    if (!engine_value(h->host->options(), key, &v)) {
      v = h->host->options().value(h->prefix + key);
      if (v.empty()) return -1;
    }
    if (buf && cap) {
      size_t n = std::min(cap - 1, v.size());
      std::memcpy(buf, v.data(), n);
      buf[n] = 0;
    }
    return static_cast<int64_t>(v.size());
  } catch (...) {
    return -1;
  }
}

void h_log(mc_tp_host_t *h, int32_t level, const char *message) {
  if (!message) return;
  try {
    int lv = level < MC_TP_LOG_ERROR ? MC_TP_LOG_ERROR : level > MC_TP_LOG_DEBUG ? MC_TP_LOG_DEBUG : level;
    MC_LOG(lv, (h ? h->name : std::string("plugin")) << ": " << message);
  } catch (...) {
  }
}

uint64_t h_incarnation(mc_tp_host_t *h) { return h ? h->host->incarnation() : 0; }
const char *h_auth_token(mc_tp_host_t *h) { return h ? h->host->auth_token().c_str() : ""; }
const char *h_engine_name(mc_tp_host_t *h) { return h ? h->host->engine_name().c_str() : ""; }

void h_path_down(mc_tp_host_t *h, void *path) {
  if (!h || !path || !h->path_down) return;
  try {
    h->path_down(path);
  } catch (...) {
  }
}

}  // namespace

const mc_tp_host_ops_t *plugin_host_ops() {
  static const mc_tp_host_ops_t ops = {
      MC_TRANSPORT_PLUGIN_VERSION,
      sizeof(mc_tp_host_ops_t),
      h_complete,
      h_canceled,
      h_pin,
      h_unpin,
      h_control_call,
      h_free_buffer,
      h_config,
      h_log,
      h_incarnation,
      h_auth_token,
      h_engine_name,
      h_path_down,
  };
  return &ops;
}

}  // namespace mc
