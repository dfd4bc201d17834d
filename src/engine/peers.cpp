// Peers: opening segments, routes, rejoin, health probes, state changes and the callback.
#include "engine/engine.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "control/client.h"
#include "util/log.h"

namespace mc {

Peer::~Peer() {
  std::lock_guard<std::mutex> lk(alive->mu);
  alive->ok = false;
}

void Peer::kick() {
  if (auto m = monitor.lock()) m->kick(this);
}

// t's path to p (descriptor d), whose failure kicks p's probe; nullptr when t cannot connect.
std::shared_ptr<PeerPath> EngineCore::connect_path(Peer &p, Transport &t, const Descriptor &d) {
  auto path = t.connect(d);
  if (!path) return nullptr;
  Peer *raw = &p;
  // The path may outlive the peer only inside the transport's own threads, which the peer's
  // destructor (joining nothing of theirs) cannot see: guard with a flag.
  auto alive = p.alive;
  path->set_on_down([raw, alive] {
    std::lock_guard<std::mutex> lk(alive->mu);
    if (alive->ok) raw->kick();
  });
  return path;
}

// The routes to a peer whose descriptor is d, one per allowed transport that reaches it (the
// engine's own name: the self transport where it is allowed). Takes no lock of the peer: a
// transport's connect may do a same-host handshake or an RDMA exchange.
Status EngineCore::make_routes(Peer &p, const Descriptor &d, std::vector<Route> *routes) {
  // The engine's own name always opens (mc.h): in process when the self transport is allowed,
  // else over the allowed transports like any peer (to its own listener or its own same-host
  // server).
  if (p.self && self_transport_ && opts_.transport_allowed(self_transport_->name())) {
    routes->push_back({self_transport_, self_transport_->connect(d)});
    return Status::Ok();
  }
  for (auto *t : data_transports_) {
    if (!t->reachable(d)) continue;
    auto path = connect_path(p, *t, d);
    if (!path) continue;
    routes->push_back({t, std::move(path)});
  }
  if (routes->empty()) return Err(MC_ERR_UNSUPPORTED, "no allowed transport reaches segment " + p.name);
  return Status::Ok();
}

// The peer's current descriptor from its metadata (or this engine's own), checked by every
// data transport.
Status EngineCore::fetch_peer(Peer &p, Descriptor *d) {
  if (p.self) {
    *d = local_descriptor();
    return Status::Ok();
  }
  std::shared_ptr<const Descriptor> have;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    have = p.desc;
  }
  Status st = have ? metadata_->fetch_update(p.name, opts_.timeout_ms, *have, d)
                   : metadata_->fetch(p.name, opts_.timeout_ms, d);
  if (!st.ok()) return st;
  for (auto *t : data_transports_) {
    Status cs = t->check_descriptor(*d);
    if (!cs.ok()) return cs;
  }
  return Status::Ok();
}

// Fetches the peer's descriptor and brings its routes to it: new routes for a new incarnation
// (or a peer without any), else each route told of the new descriptor. The peer's lock is held
// only to read and to publish, never across a transport's connect or update, so mc_segment_query
// and submits to the peer never wait for a handshake. A refresh that lost a race to another is
// dropped (its routes unused): the newer descriptor of an incarnation wins.
Status EngineCore::refresh_peer(Peer &p, bool *rejoined) {
  if (p.uri) return Status::Ok();  // its transport fixed its descriptor when it opened it
  Descriptor d;
  Status st = fetch_peer(p, &d);
  if (!st.ok()) return st;
  auto nd = std::make_shared<const Descriptor>(std::move(d));
  std::vector<Route> current;
  bool rebuild;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    rebuild = !p.desc || p.desc->incarnation != nd->incarnation || p.routes.empty();
    current = p.routes;
  }
  std::vector<Route> routes;
  if (rebuild) {
    st = make_routes(p, *nd, &routes);
    if (!st.ok()) return st;
  } else {
    // Before the descriptor is published: a submit that sees it finds paths that know it.
    for (auto &r : current) r.transport->update(*r.path, *nd);
  }
  std::vector<Route> dropped;
  publish_peer(p, nd, &routes, &dropped, rejoined);
  // The old incarnation's routes: fail what is still queued or in flight on them, then let
  // them go (their destructors tear that peer's connections, mappings and QPs down).
  for (auto &r : dropped) r.transport->fail_path(*r.path, MC_ERR_PEER_DOWN, "peer " + p.name + " restarted");
  return Status::Ok();
}

// Publishes nd as p's descriptor, with *routes (made for nd) as its routes where nd is a new
// incarnation or p has none; the routes replaced go to *dropped. A descriptor older than the one
// p holds (another refresh published a newer version of the same incarnation meanwhile) is not
// published, and routes nobody needs are left in *routes for the caller to let go.
void EngineCore::publish_peer(Peer &p, const std::shared_ptr<const Descriptor> &nd,
                              std::vector<Route> *routes, std::vector<Route> *dropped, bool *rejoined) {
  std::lock_guard<std::mutex> lk(p.mu);
  bool new_peer = !p.desc || p.desc->incarnation != nd->incarnation;
  if (!routes->empty() && (new_peer || p.routes.empty())) {
    if (p.desc && new_peer) {
      MC_LOGI("segment " << p.name << ": new incarnation " << std::hex << nd->incarnation << " (was "
                         << p.desc->incarnation << "); rebuilding its routes");
      p.rejoins.fetch_add(1);
      counters_.rejoin();
      if (rejoined) *rejoined = true;
    }
    std::unique_lock<ReadMostlyMutex> view(p.view_mu);
    dropped->swap(p.routes);
    p.routes = std::move(*routes);
    p.desc = nd;
    return;
  }
  // Routes for nd are in place (or nd needs none): a newer version of the same incarnation
  // replaces the descriptor; another incarnation without routes of its own never does.
  if (new_peer || nd->version < p.desc->version) return;
  std::shared_ptr<const Descriptor> old = nd;
  std::unique_lock<ReadMostlyMutex> view(p.view_mu);
  p.desc.swap(old);  // the old one goes once the fast path is let in again
}

// Back from UNREACHABLE with the same incarnation: nothing is rebuilt, except routes whose
// transport gave up on its path while the peer was away (e.g. a closed same-host socket).
void EngineCore::revive_routes(Peer &p) {
  std::shared_ptr<const Descriptor> d;
  std::vector<Route> routes;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    d = p.desc;
    routes = p.routes;
  }
  bool changed = false;
  for (auto &r : routes) {
    if (r.transport->usable(*r.path)) continue;
    auto path = connect_path(p, *r.transport, *d);
    if (!path) continue;
    r.path = std::move(path);
    changed = true;
  }
  if (!changed) return;
  std::lock_guard<std::mutex> lk(p.mu);
  if (p.desc != d) return;
  std::unique_lock<ReadMostlyMutex> view(p.view_mu);
  p.routes.swap(routes);  // the old ones go once the fast path is let in again
}

void EngineCore::set_state(Peer &p, uint32_t state, const std::string &why) {
  uint32_t old = p.state.exchange(state);
  if (old == state) return;
  p.state_changed_ms.store(now_ms());
  if (state == MC_SEGMENT_UNREACHABLE) {
    MC_LOGW("segment " << p.name << " is unreachable: " << why);
    std::vector<Route> routes;
    {
      std::lock_guard<std::mutex> lk(p.mu);
      routes = p.routes;
    }
    for (auto &r : routes)
      r.transport->fail_path(*r.path, MC_ERR_PEER_DOWN, "segment " + p.name + " is unreachable: " + why);
  } else {
    MC_LOGI("segment " << p.name << " is reachable again");
  }
}

void EngineCore::notify(Peer &p) {
  void (*fn)(mc_segment_t, uint32_t, uint64_t, void *);
  void *user;
  {
    std::lock_guard<std::mutex> lk(cb_mu_);
    fn = cb_;
    user = cb_user_;
  }
  if (!fn) return;
  std::vector<mc_segment_t> handles;
  {
    std::shared_lock<ReadMostlyMutex> lk(segs_mu_);
    for (auto &[h, peer] : segs_)
      if (peer.get() == &p) handles.push_back(h);
  }
  uint64_t inc;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    inc = p.desc->incarnation;
  }
  for (auto h : handles) fn(h, p.state.load(), inc, user);
}

void EngineCore::set_segment_callback(void (*fn)(mc_segment_t, uint32_t, uint64_t, void *), void *user) {
  std::lock_guard<std::mutex> lk(cb_mu_);
  cb_ = fn;
  cb_user_ = user;
}

// A peer whose bytes arrive on a route is alive, whatever its pings: on a loaded machine (or
// under valgrind) its listener may answer late while the transfer itself goes on. Its silence
// starts after the last bytes heard, so peer_timeout_ms without bytes and without an answer
// still makes it unreachable.
void EngineCore::count_heard(Peer &p) {
  if (p.silent_since_ms == 0) return;
  uint64_t heard = 0;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    for (auto &r : p.routes)
      if (r.path) heard = std::max(heard, r.path->heard_ms->load(std::memory_order_relaxed));
  }
  if (heard > p.silent_since_ms) p.silent_since_ms = heard;
}

// Probes one peer every heartbeat_ms (at once when a transfer to it failed). No answer within
// peer_timeout_ms, or a refused connection, makes it UNREACHABLE and fails its in-flight work;
// an answer with the known incarnation makes it OK again; a new incarnation rebuilds it.
uint64_t EngineCore::probe_peer(const std::shared_ptr<Peer> &sp, HealthMonitor::Step *step) {
  Peer &p = *sp;
  // While unreachable, probe more often so that a peer that answers again is used within
  // about 100 ms rather than a whole heartbeat.
  auto next = [&] {
    return p.state.load() == MC_SEGMENT_UNREACHABLE ? std::min<uint64_t>(opts_.heartbeat_ms, 100)
                                                    : opts_.heartbeat_ms;
  };
  if (stopping_.load()) return opts_.heartbeat_ms;
  HostPort addr;
  uint64_t known;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    known = p.desc->incarnation;
    if (!parse_host_port(p.desc->tcp, &addr).ok()) return opts_.heartbeat_ms;
  }
  // One short attempt: a silent peer is tried again by the next step at once, so it never
  // holds a monitor thread for its whole peer_timeout_ms; it is unreachable once no attempt
  // answered for peer_timeout_ms, or at once when its port refuses.
  uint64_t inc = 0;
  uint64_t start = now_ms();
  uint64_t left = opts_.peer_timeout_ms;
  // A batched PING went unanswered: the peer has been silent since it was sent.
  if (p.silent_since_ms == 0 && step) p.silent_since_ms = std::min(step->silent_since_ms, start);
  count_heard(p);
  if (p.silent_since_ms != 0)
    left = start - p.silent_since_ms < left ? left - (start - p.silent_since_ms) : 1;
  Status st =
      control_ping_keep(addr, opts_.auth_token, static_cast<uint32_t>(std::clamp<uint64_t>(left, 1, 250)),
                        &inc, step ? &step->conn : nullptr);
  if (step) step->addr = addr;
  if (stopping_.load()) return opts_.heartbeat_ms;
  bool changed = false;
  if (!st.ok()) {
    uint64_t now = now_ms();
    if (p.silent_since_ms == 0) p.silent_since_ms = start;  // silent since the attempt began
    count_heard(p);
    bool final = st.code() != MC_ERR_PEER_DOWN || st.message().find("refused") != std::string::npos ||
                 now - p.silent_since_ms >= opts_.peer_timeout_ms;
    if (!final) return 0;
    changed = p.state.load() != MC_SEGMENT_UNREACHABLE;
    set_state(p, MC_SEGMENT_UNREACHABLE, st.message());
  } else if (inc == known) {
    p.silent_since_ms = 0;
    changed = p.state.load() != MC_SEGMENT_OK;
    if (changed) revive_routes(p);
    set_state(p, MC_SEGMENT_OK, "");
  } else {
    p.silent_since_ms = 0;
    bool rejoined = false;
    Status rs;
    // A backstop: the peer's bytes are read through codecs that return a Status, but nothing
    // that escapes them may end the process on this thread.
    try {
      rs = refresh_peer(p, &rejoined);
    } catch (const std::exception &e) {
      rs = Err(MC_ERR_INTERNAL, std::string("refreshing the segment failed: ") + e.what());
      MC_LOGE("segment " << p.name << ": " << rs.message());
    }
    // A metadata store may still hold the descriptor of the incarnation that answered before
    // (the restarted engine publishes its own a moment after it listens): that one is not OK,
    // its addresses are the dead engine's. The next probe (within 100 ms) reads it again.
    if (rs.ok()) rs = check_incarnation(p, inc);
    changed = rs.ok() || p.state.load() != MC_SEGMENT_UNREACHABLE;
    set_state(p, rs.ok() ? MC_SEGMENT_OK : MC_SEGMENT_UNREACHABLE, rs.ok() ? "" : rs.message());
  }
  if (changed) notify(p);
  return next();
}

Status EngineCore::check_incarnation(Peer &p, uint64_t answered) {
  std::lock_guard<std::mutex> lk(p.mu);
  if (p.desc->incarnation == answered) return Status::Ok();
  char buf[96];
  snprintf(buf, sizeof buf, "answered as incarnation %016llx, its descriptor still names %016llx",
           static_cast<unsigned long long>(answered), static_cast<unsigned long long>(p.desc->incarnation));
  return Err(MC_ERR_PEER_DOWN, "segment " + p.name + " " + buf + "; waiting for the new one");
}

bool EngineCore::probe_target(const std::shared_ptr<Peer> &p, HostPort *addr, uint64_t *incarnation) {
  if (stopping_.load() || p->state.load() != MC_SEGMENT_OK) return false;
  std::lock_guard<std::mutex> lk(p->mu);
  *incarnation = p->desc->incarnation;
  return parse_host_port(p->desc->tcp, addr).ok();
}

// The transport that claims the scheme of a name "<scheme>://..." (file:///...), or nullptr;
// MC_ERR_UNSUPPORTED in *st when one claims it but `transports` leaves it out.
Transport *EngineCore::scheme_transport(const std::string &name, Status *st) {
  size_t pos = name.find("://");
  if (pos == std::string::npos || pos == 0) return nullptr;
  std::string scheme = name.substr(0, pos);
  for (auto *t : data_transports_)
    if (t->scheme() == scheme) return t;
  for (auto &t : transports_)
    if (t->scheme() == scheme)
      *st = Err(MC_ERR_UNSUPPORTED, std::string("the transport that serves ") + scheme + ":// segments (" +
                                        t->name() + ") is not in this engine's `transports`");
  return nullptr;
}

// A segment a transport serves itself (a file): its descriptor and route come from the
// transport once; nothing probes it, as no engine behind it can go away or come back.
Status EngineCore::open_uri_segment(Transport *t, Peer &p) {
  Descriptor d;
  std::shared_ptr<PeerPath> path;
  Status st = t->open_uri(p.name, &d, &path);
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> lk(p.mu);
  p.uri = true;
  std::unique_lock<ReadMostlyMutex> view(p.view_mu);
  p.desc = std::make_shared<const Descriptor>(std::move(d));
  p.routes = {{t, std::move(path)}};
  return Status::Ok();
}

Status EngineCore::open_segment(const std::string &name, mc_segment_t *out) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is being destroyed");
  std::shared_ptr<Peer> peer;
  {
    std::shared_lock<ReadMostlyMutex> lk(segs_mu_);
    auto it = peers_.find(name);
    if (it != peers_.end()) peer = it->second.lock();
  }
  if (!peer) {
    auto p = std::make_shared<Peer>();
    p->name = name;
    p->self = (name == name_);
    p->state_changed_ms.store(now_ms());
    // Set before anything can reach the peer (a route's on_down kicks it from a transport
    // thread); a kick before watch() below finds no entry and does nothing.
    Status st;
    Transport *ut = p->self ? nullptr : scheme_transport(name, &st);
    if (!st.ok()) return Err(st.code(), "cannot open segment " + name + ": " + st.message());
    if (ut) {
      st = open_uri_segment(ut, *p);
      if (!st.ok()) return Err(st.code(), "cannot open segment " + st.message());
    } else {
      if (!p->self) p->monitor = health_->handle();
      st = refresh_peer(*p);
      if (!st.ok()) return Err(st.code(), "cannot open segment " + name + ": " + st.message());
    }
    std::unique_lock<ReadMostlyMutex> lk(segs_mu_);
    auto it = peers_.find(name);
    std::shared_ptr<Peer> other = it != peers_.end() ? it->second.lock() : nullptr;
    if (other) {
      peer = other;  // another thread opened it meanwhile: share its state
    } else {
      peers_[name] = p;
      peer = p;
      if (!p->self && !p->uri) health_->watch(p, opts_.heartbeat_ms);
    }
  }
  std::unique_lock<ReadMostlyMutex> lk(segs_mu_);
  mc_segment_t h = next_seg_++;
  segs_[h] = peer;
  *out = h;
  return Status::Ok();
}

std::shared_ptr<Peer> EngineCore::find_segment(mc_segment_t seg) {
  std::shared_lock<ReadMostlyMutex> lk(segs_mu_);
  auto it = segs_.find(seg);
  return it == segs_.end() ? nullptr : it->second;
}

Status EngineCore::close_segment(mc_segment_t seg) {
  std::shared_ptr<Peer> gone;  // released after the lock: its destructor joins a thread
  std::unique_lock<ReadMostlyMutex> lk(segs_mu_);
  auto it = segs_.find(seg);
  if (it == segs_.end()) return Err(MC_ERR_NOT_FOUND, "unknown or closed segment handle");
  gone = std::move(it->second);
  segs_.erase(it);
  bool last = true;
  for (auto &[h, p] : segs_)
    if (p == gone) last = false;
  if (last) peers_.erase(gone->name);
  lk.unlock();
  return Status::Ok();
}

Status EngineCore::segment_query(mc_segment_t seg, mc_segment_info_t *info) {
  auto p = find_segment(seg);
  if (!p) return Err(MC_ERR_NOT_FOUND, "unknown or closed segment handle");
  mc_segment_info_t v{};
  {
    std::lock_guard<std::mutex> lk(p->mu);
    v.state = p->state.load();
    v.buffer_count = static_cast<uint32_t>(p->desc->buffers.size());
    v.incarnation = p->desc->incarnation;
    v.total_bytes = p->desc->total_bytes();
    std::snprintf(v.transport, sizeof v.transport, "%s",
                  p->routes.empty() ? "" : p->routes[0].transport->name());
    v.rejoins = p->rejoins.load();
    v.state_changed_ms = p->state_changed_ms.load();
  }
  size_t n = std::min(info->size, sizeof v);
  v.size = info->size;
  std::memcpy(info, &v, n);
  return Status::Ok();
}

Status EngineCore::segment_buffers(mc_segment_t seg, std::vector<BufferDesc> *out) {
  auto p = find_segment(seg);
  if (!p) return Err(MC_ERR_NOT_FOUND, "unknown or closed segment handle");
  std::lock_guard<std::mutex> lk(p->mu);
  *out = p->desc->buffers;
  return Status::Ok();
}

}  // namespace mc
