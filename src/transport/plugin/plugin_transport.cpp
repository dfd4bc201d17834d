// Every call into the plugin is guarded: a C++ plugin that throws through its C table becomes an
// error status (or a logged error where the op returns nothing), never an exception in libmc.
#include "transport/plugin/plugin_transport.h"

#include <atomic>
#include <map>
#include <mutex>
#include <vector>

#include "proto/codec.h"
#include "transport/plugin/plugin_host.h"
#include "util/log.h"

namespace mc {

namespace {

// What a path and its transport share: whether the instance is gone (destroy frees every path
// it still has, so a path dropped later must not call disconnect).
struct Shared {
  std::mutex mu;  // guards destroyed; held across disconnect and destroy so they never overlap
  bool destroyed = false;
  // Set before destroy: a buffer (un)registered while or after the engine shuts down must not
  // reach the freed instance (the hooks run under the engine's buffer lock, not mu).
  std::atomic<bool> gone{false};
  const mc_tp_ops_t *ops = nullptr;
  void *t = nullptr;
};

class PluginPath : public PeerPath {
 public:
  PluginPath(std::shared_ptr<Shared> s, void *p) : s_(std::move(s)), p_(p) {}
  ~PluginPath() override {
    std::lock_guard<std::mutex> lk(s_->mu);
    if (s_->destroyed) return;
    try {
      s_->ops->disconnect(s_->t, p_);
    } catch (...) {
      MC_LOGE("transport plugin " << s_->ops->name << ": disconnect threw");
    }
  }
  void *p() const { return p_; }

 private:
  std::shared_ptr<Shared> s_;
  void *p_;
};

mc_tp_region_t c_region(const LocalRegion &r) {
  return mc_tp_region_t{sizeof(mc_tp_region_t), r.access, r.addr, r.length, r.location.c_str(), r.memfd, 0};
}

class PluginTransport : public Transport {
 public:
  PluginTransport(const PluginLib &lib, Host &host) : lib_(lib), o_(lib.ops), s_(std::make_shared<Shared>()) {
    h_.host = &host;
    h_.name = o_.name;
    h_.prefix = h_.name + "_";
    h_.path_down = [this](void *p) { path_down(p); };
    s_->ops = &lib_.ops;
  }
  ~PluginTransport() override { shutdown(); }

  Status create() {
    char *why = nullptr;
    mc_status_t st;
    void *t = nullptr;
    try {
      st = o_.create(&h_, plugin_host_ops(), &t, &why);
    } catch (...) {
      st = MC_ERR_INTERNAL;
    }
    std::string reason = take(why);
    if (st != MC_OK)
      return Err(MC_ERR_UNSUPPORTED,
                 "transport plugin " + h_.name + " (" + lib_.path +
                     ") failed to start: " + (reason.empty() ? mc_status_str(st) : reason));
    if (!t) {
      MC_LOGI("transport plugin " << h_.name
                                  << " unavailable: " << (reason.empty() ? "no reason given" : reason));
      return Status::Ok();
    }
    s_->t = t;
    return Status::Ok();
  }
  bool started() const { return s_->t != nullptr; }

  const char *name() const override { return o_.name; }
  bool reachable(const Descriptor &d) override { return d.transports.count(h_.name) != 0; }
  void describe(Descriptor &d) override {
    if (!o_.describe) return;
    std::string s;
    try {
      s = take(o_.describe(s_->t));
    } catch (...) {
      MC_LOGE("transport plugin " << h_.name << ": describe threw");
    }
    if (s.empty()) return;
    // The text is embedded in the descriptor as JSON: anything but an object would make the
    // whole descriptor unreadable to every peer, so it is left out (and said, once).
    proto::Reader r("transport plugin " + h_.name + "'s describe()", "", MC_ERR_INTERNAL);
    if (r.parse(s)) {
      d.transports[h_.name] = s;
    } else if (!bad_describe_.exchange(true)) {
      MC_LOGE(r.status().message() << "; this transport is left out of the descriptor");
    }
  }
  Status on_register(const LocalRegion &r) override { return region_op(o_.on_register, r, "on_register"); }
  void on_unregister(const LocalRegion &r) override {
    if (!o_.on_unregister || s_->gone.load()) return;
    mc_tp_region_t c = c_region(r);
    try {
      o_.on_unregister(s_->t, &c);
    } catch (...) {
      MC_LOGE("transport plugin " << h_.name << ": on_unregister threw");
    }
  }
  Status on_access_change(const LocalRegion &r) override {
    return region_op(o_.on_access_change, r, "on_access_change");
  }
  std::shared_ptr<PeerPath> connect(const Descriptor &d) override;
  void fail_path(PeerPath &peer, mc_status_t status, const std::string &why) override {
    if (!o_.fail_path) return;
    try {
      o_.fail_path(s_->t, static_cast<PluginPath &>(peer).p(), status, why.c_str());
    } catch (...) {
      MC_LOGE("transport plugin " << h_.name << ": fail_path threw");
    }
  }
  bool usable(PeerPath &peer) override {
    try {
      return !o_.usable || o_.usable(s_->t, static_cast<PluginPath &>(peer).p()) != 0;
    } catch (...) {
      return false;
    }
  }
  bool accepts(const std::string &l, const std::string &r) const override {
    if (!o_.accepts) return Transport::accepts(l, r);
    try {
      return o_.accepts(s_->t, l.c_str(), r.c_str()) != 0;
    } catch (...) {
      return false;
    }
  }
  void submit(PeerPath &peer, Slice *slices, size_t n) override {
    std::vector<mc_tp_slice_t> c(n);
    for (size_t i = 0; i < n; i++) c[i] = to_c_slice(slices[i]);
    try {
      o_.submit(s_->t, static_cast<PluginPath &>(peer).p(), c.data(), n);
    } catch (...) {
      MC_LOGE("transport plugin " << h_.name << ": submit threw; its slices may never complete");
    }
  }
  Status handle_control(const std::string &request, std::string *reply) override;
  std::string scheme() const override { return o_.scheme && o_.open_segment ? o_.scheme : ""; }
  Status open_uri(const std::string &uri, Descriptor *d, std::shared_ptr<PeerPath> *path) override;
  void shutdown() override {
    std::lock_guard<std::mutex> lk(s_->mu);
    if (s_->destroyed || !s_->t) return;
    s_->destroyed = true;
    s_->gone.store(true);
    try {
      o_.destroy(s_->t);
    } catch (...) {
      MC_LOGE("transport plugin " << h_.name << ": destroy threw");
    }
  }
  std::string stats_json() override {
    std::string s;
    try {
      if (o_.stats_json) s = take(o_.stats_json(s_->t));
    } catch (...) {
    }
    return s.empty() ? "{}" : s;
  }

 private:
  // A string the plugin returned, copied and given back to its free_string.
  std::string take(char *s) const {
    if (!s) return "";
    std::string v(s);
    try {
      o_.free_string(s);
    } catch (...) {
    }
    return v;
  }
  Status region_op(mc_status_t (*fn)(void *, const mc_tp_region_t *), const LocalRegion &r,
                   const char *what) {
    if (!fn || s_->gone.load()) return Status::Ok();
    mc_tp_region_t c = c_region(r);
    mc_status_t st;
    try {
      st = fn(s_->t, &c);
    } catch (...) {
      st = MC_ERR_INTERNAL;
    }
    if (st == MC_OK) return Status::Ok();
    return Err(st, "transport plugin " + h_.name + ": " + what + " failed (" + mc_status_str(st) + ")");
  }
  std::shared_ptr<PluginPath> keep_path(void *p);
  void path_down(void *p) {
    std::shared_ptr<PluginPath> path;
    {
      std::lock_guard<std::mutex> lk(paths_mu_);
      auto it = paths_.find(p);
      if (it != paths_.end()) path = it->second.lock();
    }
    if (path) path->fire_down();
  }

  const PluginLib &lib_;
  const mc_tp_ops_t &o_;
  mc_tp_host h_;
  std::shared_ptr<Shared> s_;
  std::atomic<bool> bad_describe_{false};  // describe() returned junk once (logged once)
  std::mutex paths_mu_;                    // guards paths_
  std::map<void *, std::weak_ptr<PluginPath>> paths_;
};

std::shared_ptr<PeerPath> PluginTransport::connect(const Descriptor &d) {
  auto it = d.transports.find(h_.name);
  if (it == d.transports.end()) return nullptr;
  std::string inc_name = d.name, ctl = d.tcp;
  mc_tp_peer_t peer{sizeof(mc_tp_peer_t),
                    !d.host_id.empty() && d.host_id == host_boot_id(),
                    inc_name.c_str(),
                    d.incarnation,
                    d.pid,
                    ctl.c_str(),
                    it->second.c_str()};
  void *p = nullptr;
  mc_status_t st;
  try {
    st = o_.connect(s_->t, &peer, &p);
  } catch (...) {
    st = MC_ERR_INTERNAL;
  }
  if (st != MC_OK || !p) {
    if (st != MC_OK)
      MC_LOGW("transport plugin " << h_.name << ": connect to " << d.name << ": " << mc_status_str(st));
    return nullptr;
  }
  return keep_path(p);
}

std::shared_ptr<PluginPath> PluginTransport::keep_path(void *p) {
  auto path = std::make_shared<PluginPath>(s_, p);
  std::lock_guard<std::mutex> lk(paths_mu_);
  for (auto i = paths_.begin(); i != paths_.end();) i = i->second.expired() ? paths_.erase(i) : std::next(i);
  paths_[p] = path;
  return path;
}

// The plugin's segment becomes a descriptor of one buffer [0, length) at address 0, named by
// its URI, with no endpoint: nothing probes it and no other transport reaches it.
Status PluginTransport::open_uri(const std::string &uri, Descriptor *d, std::shared_ptr<PeerPath> *path) {
  if (scheme().empty()) return Transport::open_uri(uri, d, path);
  mc_tp_segment_t info{};
  info.size = sizeof info;
  void *p = nullptr;
  char *why = nullptr;
  mc_status_t st;
  try {
    st = o_.open_segment(s_->t, uri.c_str(), &info, &p, &why);
  } catch (...) {
    st = MC_ERR_INTERNAL;
  }
  std::string reason = take(why);
  if (st != MC_OK) return Err(st, reason.empty() ? uri + ": " + mc_status_str(st) : reason);
  if (!p || info.length == 0) {
    if (p) keep_path(p);  // disconnected at once
    return Err(MC_ERR_INTERNAL,
               "transport plugin " + h_.name + " opened " + uri + " without a path or length");
  }
  info.location[sizeof info.location - 1] = 0;
  d->name = uri;
  BufferDesc b;
  b.addr = 0;
  b.length = info.length;
  b.location = info.location[0] ? info.location : h_.name.c_str();
  b.access = info.access & (MC_ACCESS_READ | MC_ACCESS_WRITE);
  d->buffers = {b};
  d->transports[h_.name] = "{}";
  d->set_min_access();
  *path = keep_path(p);
  return Status::Ok();
}

Status PluginTransport::handle_control(const std::string &request, std::string *reply) {
  if (!o_.handle_control) return Transport::handle_control(request, reply);
  char *r = nullptr;
  size_t len = 0;
  mc_status_t st;
  try {
    st = o_.handle_control(s_->t, request.data(), request.size(), &r, &len);
  } catch (...) {
    st = MC_ERR_INTERNAL;
  }
  if (r) {
    reply->assign(r, len);
    take(r);
  }
  if (st == MC_OK) return Status::Ok();
  return Err(st, "transport plugin " + h_.name + " refused the control request: " + mc_status_str(st));
}

}  // namespace

std::unique_ptr<Transport> make_plugin_transport(const PluginLib &lib, Host &host, Status *st) {
  auto t = std::make_unique<PluginTransport>(lib, host);
  *st = t->create();
  if (!st->ok() || !t->started()) return nullptr;
  return t;
}

}  // namespace mc
