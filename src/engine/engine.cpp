#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <random>
#include <thread>

#include "common/log.h"
#include "common/net.h"
#include "transport/local/local_transport.h"
#include "transport/tcp/tcp_transport.h"

namespace mc {

// ------------------------------------------------------------------------------ completion

void slice_done(const Slice &s, mc_status_t status) {
  RequestSlot *r = s.slot;
  if (status != MC_OK) {
    int32_t expect = MC_OK;
    r->error.compare_exchange_strong(expect, status);
  } else {
    r->bytes.fetch_add(s.len, std::memory_order_relaxed);
  }
  if (r->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1)
    r->batch->engine->finish_request(r, r->error.load());
}

bool slice_canceled(const Slice &s) { return s.slot->batch->canceled(); }

void EngineCore::finish_request(RequestSlot *r, mc_status_t err) {
  BatchCore *b = r->batch;
  b->finishing_.fetch_add(1, std::memory_order_acq_rel);
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    unpin_locked(r->local, r->length);
  }
  if (err == MC_OK) {
    requests_completed_.fetch_add(1, std::memory_order_relaxed);
    (r->op == MC_READ ? bytes_read_ : bytes_written_).fetch_add(r->length, std::memory_order_relaxed);
    r->state.store(MC_REQUEST_COMPLETED, std::memory_order_release);
  } else {
    requests_failed_.fetch_add(1, std::memory_order_relaxed);
    r->state.store(MC_REQUEST_FAILED, std::memory_order_release);
  }
  b->request_done(err);
  b->finishing_.fetch_sub(1, std::memory_order_acq_rel);
}

// ------------------------------------------------------------------------------ batches

BatchCore::BatchCore(std::shared_ptr<EngineCore> e, size_t cap) : engine(std::move(e)), capacity(cap) {}
BatchCore::~BatchCore() = default;

void BatchCore::request_done(mc_status_t err) {
  if (err != MC_OK) {
    int32_t expect = MC_OK;
    first_error_.compare_exchange_strong(expect, err);
  }
  if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard<std::mutex> lk(mu_);
    cv_.notify_all();
  }
}

void BatchCore::quiesce() {
  while (finishing_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

mc_status_t BatchCore::wait(int timeout_ms) {
  std::unique_lock<std::mutex> lk(mu_);
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (timeout_ms < 0) {
    cv_.wait(lk, done);
  } else if (!cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), done)) {
    return MC_ERR_TIMEOUT;
  }
  lk.unlock();
  quiesce();
  return first_error_.load();
}

void BatchCore::cancel_and_wait() {
  canceled_.store(true);
  // Every slice ends within the engine's timeout of no progress (the transports' reapers), so
  // this wait is bounded.
  wait(-1);
}

void BatchCore::reset() {
  quiesce();
  submitted_.store(0);
  first_error_.store(MC_OK);
  canceled_.store(false);
}

// ------------------------------------------------------------------------------ engine

Status EngineCore::create(const EngineOptions &opts, std::shared_ptr<EngineCore> *out) {
  std::shared_ptr<EngineCore> e(new EngineCore(opts));
  Status st = e->start();
  if (!st.ok()) {
    e->shutdown();
    return st;
  }
  *out = std::move(e);
  return Status::Ok();
}

Status EngineCore::start() {
  if (opts_.log_level >= 0) log_set_level(opts_.log_level);
  std::random_device rd;
  do {
    incarnation_ = (uint64_t(rd()) << 32) ^ rd();
  } while (incarnation_ == 0);

  TcpOptions to;
  Status st = parse_host_port(opts_.listen, &to.listen);
  if (!st.ok()) return st;
  to.connections = opts_.tcp_connections;
  to.timeout_ms = opts_.timeout_ms;
  HostPort bound;
  // The TCP listener is also the control channel, so it runs even when tcp is not an allowed
  // data transport.
  st = make_tcp_transport(to, this, &tcp_, &bound);
  if (!st.ok()) return st;
  std::string host = bound.host == "0.0.0.0" ? "127.0.0.1" : bound.host;
  std::string self = host + ":" + std::to_string(bound.port);
  bool p2p = opts_.metadata.empty() || opts_.metadata == "p2p";
  if (!opts_.name.empty() && p2p) {
    HostPort np;
    if (!parse_host_port(opts_.name, &np).ok() || np.port != bound.port)
      return Err(MC_ERR_INVALID_ARG,
                 "with metadata=p2p the engine's name is its HOST:PORT (" + self + "); \"" +
                     opts_.name + "\" does not match");
    self = np.str();
  }
  tcp_addr_ = self;
  // With a metadata server the name is free-form; peers find our address in the descriptor.
  name_ = (!p2p && !opts_.name.empty()) ? opts_.name : self;
  if (bound.host == "0.0.0.0" || bound.host != "127.0.0.1")
    MC_LOGW("engine " << name_ << " listens on " << bound.str()
                      << ": any host that reaches it can read and write its registered buffers");
  local_ = make_local_transport(this, opts_.workers);
  st = make_metadata_store(opts_.metadata, name_, opts_.timeout_ms, &metadata_);
  if (!st.ok()) return st;
  st = metadata_->publish(local_descriptor());
  if (!st.ok()) return st;
  MC_LOGI("engine " << name_ << " started, incarnation " << std::hex << incarnation_);
  return Status::Ok();
}

EngineCore::~EngineCore() { shutdown(); }

void EngineCore::shutdown() {
  if (stopping_.exchange(true)) return;
  if (metadata_) metadata_->unpublish();
  if (tcp_) tcp_->shutdown();
  if (local_) local_->shutdown();
  std::unique_lock<std::shared_mutex> lk(segs_mu_);
  segs_.clear();
  peers_.clear();
}

// ------------------------------------------------------------------------------ buffers

Status EngineCore::register_buffer(void *addr, size_t len, const char *location) {
  std::string loc = location ? location : "cpu";
  if (loc.rfind("cuda", 0) == 0)
    return Err(MC_ERR_UNSUPPORTED, "location \"" + loc + "\": GPU memory is not supported by this build");
  if (loc != "cpu") {
    int64_t node;
    if (loc.rfind("cpu:", 0) != 0 || !parse_int(loc.substr(4), 0, 4095, &node))
      return Err(MC_ERR_INVALID_ARG, "location \"" + loc + "\" is not \"cpu\", \"cpu:N\" or \"cuda:N\"");
  }
  uint64_t a = reinterpret_cast<uint64_t>(addr);
  if (a + len < a) return Err(MC_ERR_INVALID_ARG, "buffer wraps around the address space");
  std::unique_lock<std::shared_mutex> lk(buffers_mu_);
  auto it = buffers_.lower_bound(a);
  if (it != buffers_.end() && it->first < a + len)
    return Err(MC_ERR_EXISTS, "buffer overlaps the registered buffer at " + std::to_string(it->first));
  if (it != buffers_.begin()) {
    auto p = std::prev(it);
    if (p->first + p->second->length > a)
      return Err(MC_ERR_EXISTS, "buffer overlaps the registered buffer at " + std::to_string(p->first));
  }
  auto b = std::make_unique<LocalBuffer>();
  b->addr = a;
  b->length = len;
  b->location = loc;
  buffers_.emplace(a, std::move(b));
  desc_version_++;
  lk.unlock();
  return publish();
}

Status EngineCore::unregister_buffer(void *addr) {
  uint64_t a = reinterpret_cast<uint64_t>(addr);
  std::unique_lock<std::shared_mutex> lk(buffers_mu_);
  auto it = buffers_.find(a);
  if (it == buffers_.end())
    return Err(MC_ERR_NOT_FOUND, "no registered buffer starts at this address");
  if (it->second->in_use.load() != 0)
    return Err(MC_ERR_BUSY, "the buffer is used by " + std::to_string(it->second->in_use.load()) +
                                " pending request(s); wait for them first");
  buffers_.erase(it);
  desc_version_++;
  lk.unlock();
  return publish();
}

Status EngineCore::publish() {
  // Serialized so that a slower publish of an older descriptor never overwrites a newer one.
  std::lock_guard<std::mutex> lk(publish_mu_);
  Status st = metadata_->publish(local_descriptor());
  if (!st.ok()) MC_LOGW("engine " << name_ << ": publishing the descriptor failed: " << st.message());
  // The buffer change itself stands: peers that already know us keep working, and the store
  // gets the newest descriptor with the next publish.
  return Status::Ok();
}

bool EngineCore::pin_locked(uint64_t addr, uint64_t len) {
  if (len == 0 || addr + len < addr) return false;
  auto it = buffers_.upper_bound(addr);
  if (it == buffers_.begin()) return false;
  --it;
  uint64_t end = addr + len;
  if (it->first + it->second->length <= addr) return false;
  // Check the whole run first, then pin: a failed check pins nothing.
  auto first = it;
  uint64_t covered = it->first + it->second->length;
  int n = 1;
  while (covered < end) {
    ++it;
    if (it == buffers_.end() || it->first != covered) return false;
    covered = it->first + it->second->length;
    n++;
  }
  for (it = first; n > 0; ++it, --n) it->second->in_use.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void EngineCore::unpin_locked(uint64_t addr, uint64_t len) {
  auto it = buffers_.upper_bound(addr);
  --it;  // pinned buffers cannot be unregistered, so the run is still there
  uint64_t end = addr + len;
  for (;;) {
    it->second->in_use.fetch_sub(1, std::memory_order_release);
    uint64_t covered = it->first + it->second->length;
    if (covered >= end) break;
    ++it;
  }
}

mc_status_t EngineCore::pin(uint64_t addr, uint64_t len) {
  std::shared_lock<std::shared_mutex> lk(buffers_mu_);
  return pin_locked(addr, len) ? MC_OK : MC_ERR_OUT_OF_RANGE;
}

void EngineCore::unpin(uint64_t addr, uint64_t len) {
  std::shared_lock<std::shared_mutex> lk(buffers_mu_);
  unpin_locked(addr, len);
}

Descriptor EngineCore::local_descriptor() {
  Descriptor d;
  d.name = name_;
  d.incarnation = incarnation_;
  d.host_id = host_boot_id();
  d.pid = getpid();
  d.tcp = tcp_addr_;
  std::shared_lock<std::shared_mutex> lk(buffers_mu_);
  d.version = desc_version_;
  d.buffers.reserve(buffers_.size());
  for (auto &[a, b] : buffers_) d.buffers.push_back({a, b->length, b->location});
  return d;
}

std::string EngineCore::descriptor_json() {
  uint64_t v;
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    v = desc_version_;
  }
  {
    std::lock_guard<std::mutex> lk(desc_mu_);
    if (desc_cache_version_ == v) return desc_cache_;
  }
  Descriptor d = local_descriptor();
  std::string j = d.to_json();
  std::lock_guard<std::mutex> lk(desc_mu_);
  if (d.version >= desc_cache_version_) {
    desc_cache_ = j;
    desc_cache_version_ = d.version;
  }
  return j;
}

// ------------------------------------------------------------------------------ segments

Status EngineCore::refresh_peer(Peer &p) {
  Descriptor d;
  if (p.self) {
    d = local_descriptor();
  } else {
    Status st = metadata_->fetch(p.name, opts_.timeout_ms, &d);
    if (!st.ok()) return st;
  }
  auto nd = std::make_shared<const Descriptor>(std::move(d));
  std::lock_guard<std::mutex> lk(p.mu);
  bool new_peer = !p.desc || p.desc->incarnation != nd->incarnation;
  if (new_peer || !p.path) {
    if (p.desc && new_peer)
      MC_LOGI("segment " << p.name << ": new incarnation " << std::hex << nd->incarnation
                         << " (was " << p.desc->incarnation << "); reconnecting");
    auto path = p.transport->connect(*nd);
    if (!path) return Err(MC_ERR_METADATA, "segment " + p.name + ": descriptor has no usable address");
    p.path = std::move(path);
  }
  p.desc = std::move(nd);
  p.state.store(MC_SEGMENT_OK);
  return Status::Ok();
}

Status EngineCore::open_segment(const std::string &name, mc_segment_t *out) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is being destroyed");
  std::shared_ptr<Peer> peer;
  {
    std::shared_lock<std::shared_mutex> lk(segs_mu_);
    auto it = peers_.find(name);
    if (it != peers_.end()) peer = it->second.lock();
  }
  if (!peer) {
    auto p = std::make_shared<Peer>();
    p->name = name;
    p->self = (name == name_);
    std::string tname = p->self ? "local" : "tcp";
    if (!opts_.transport_allowed(tname))
      return Err(MC_ERR_UNSUPPORTED, "segment " + name + " needs transport \"" + tname +
                                         "\", which the engine's transports setting excludes");
    p->transport = p->self ? local_.get() : tcp_.get();
    Status st = refresh_peer(*p);
    if (!st.ok()) return Err(st.code(), "cannot open segment " + name + ": " + st.message());
    std::unique_lock<std::shared_mutex> lk(segs_mu_);
    auto it = peers_.find(name);
    std::shared_ptr<Peer> other = it != peers_.end() ? it->second.lock() : nullptr;
    if (other)
      peer = other;  // another thread opened it meanwhile: share its state
    else
      peers_[name] = p, peer = p;
  }
  std::unique_lock<std::shared_mutex> lk(segs_mu_);
  mc_segment_t h = next_seg_++;
  segs_[h] = peer;
  *out = h;
  return Status::Ok();
}

std::shared_ptr<Peer> EngineCore::find_segment(mc_segment_t seg) {
  std::shared_lock<std::shared_mutex> lk(segs_mu_);
  auto it = segs_.find(seg);
  return it == segs_.end() ? nullptr : it->second;
}

Status EngineCore::close_segment(mc_segment_t seg) {
  std::unique_lock<std::shared_mutex> lk(segs_mu_);
  auto it = segs_.find(seg);
  if (it == segs_.end()) return Err(MC_ERR_NOT_FOUND, "unknown or closed segment handle");
  segs_.erase(it);
  for (auto p = peers_.begin(); p != peers_.end();) {
    if (p->second.expired())
      p = peers_.erase(p);
    else
      ++p;
  }
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
    std::snprintf(v.transport, sizeof v.transport, "%s", p->transport->name());
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

// ------------------------------------------------------------------------------ submit

namespace {
std::string req_prefix(size_t i) { return "request " + std::to_string(i) + ": "; }
}  // namespace

Status EngineCore::submit(BatchCore &b, const mc_request_t *reqs, size_t n) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is being destroyed");
  std::lock_guard<std::mutex> submit_lk(b.submit_mu);
  size_t base = b.submitted();
  if (n > b.capacity - base)
    return Err(MC_ERR_INVALID_ARG, "batch capacity " + std::to_string(b.capacity) + " exceeded: " +
                                       std::to_string(base) + " submitted, " + std::to_string(n) +
                                       " more");
  if (b.pending() == false && b.canceled()) b.canceled_.store(false);

  // Pass 1: everything but the local pins. Peers whose descriptor lacks a range are refreshed
  // once per call (this may block up to timeout_ms).
  struct Target {
    std::shared_ptr<Peer> peer;
    std::shared_ptr<const Descriptor> desc;
    bool refreshed = false;
  };
  std::vector<Target> targets;  // distinct peers of this call, few
  std::vector<uint32_t> tix(n);
  mc_segment_t last_seg = 0;
  uint32_t last_t = 0;
  for (size_t i = 0; i < n; i++) {
    const mc_request_t &r = reqs[i];
    if (r.opcode != MC_READ && r.opcode != MC_WRITE)
      return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "opcode must be MC_READ or MC_WRITE");
    if (r.flags != 0) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "flags must be 0");
    if (r.length == 0) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "length must be > 0");
    if (!r.local) return Err(MC_ERR_INVALID_ARG, req_prefix(i) + "local is NULL");
    if (i == 0 || r.segment != last_seg) {
      auto p = find_segment(r.segment);
      if (!p) return Err(MC_ERR_NOT_FOUND, req_prefix(i) + "unknown or closed segment handle");
      uint32_t k = 0;
      while (k < targets.size() && targets[k].peer != p) k++;
      if (k == targets.size()) {
        Target t;
        {
          std::lock_guard<std::mutex> lk(p->mu);
          t.desc = p->desc;
        }
        t.peer = std::move(p);
        targets.push_back(std::move(t));
      }
      last_seg = r.segment;
      last_t = k;
    }
    tix[i] = last_t;
    Target &t = targets[last_t];
    if (!t.desc->covers(r.remote, r.length)) {
      if (!t.refreshed) {
        t.refreshed = true;
        Status st = refresh_peer(*t.peer);
        if (!st.ok()) return Err(st.code(), req_prefix(i) + "refreshing segment " + t.peer->name + ": " + st.message());
        std::lock_guard<std::mutex> lk(t.peer->mu);
        t.desc = t.peer->desc;
      }
      if (!t.desc->covers(r.remote, r.length))
        return Err(MC_ERR_OUT_OF_RANGE, req_prefix(i) + "remote range is not inside segment " +
                                            t.peer->name + "'s registered buffers");
    }
  }

  // Pass 2: pin the local ranges; any failure unpins what this call pinned.
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    for (size_t i = 0; i < n; i++) {
      uint64_t a = reinterpret_cast<uint64_t>(reqs[i].local);
      if (!pin_locked(a, reqs[i].length)) {
        for (size_t j = 0; j < i; j++) unpin_locked(reinterpret_cast<uint64_t>(reqs[j].local), reqs[j].length);
        return Err(MC_ERR_OUT_OF_RANGE,
                   req_prefix(i) + "local range is not inside this engine's registered buffers");
      }
    }
  }

  // Pass 3: slots and slices, then one hand-off per peer.
  size_t need_chunks = (base + n + BatchCore::kChunk - 1) / BatchCore::kChunk;
  while (b.chunks_.size() < need_chunks) b.chunks_.emplace_back(new RequestSlot[BatchCore::kChunk]);
  std::vector<std::shared_ptr<PeerPath>> paths(targets.size());
  for (size_t k = 0; k < targets.size(); k++) {
    std::lock_guard<std::mutex> lk(targets[k].peer->mu);
    paths[k] = targets[k].peer->path;
  }
  thread_local std::vector<std::vector<Slice>> per_peer;
  if (per_peer.size() < targets.size()) per_peer.resize(targets.size());
  for (size_t k = 0; k < targets.size(); k++) per_peer[k].clear();
  uint64_t ss = opts_.slice_size;
  for (size_t i = 0; i < n; i++) {
    const mc_request_t &r = reqs[i];
    RequestSlot *s = b.slot(base + i);
    uint32_t nsl = static_cast<uint32_t>((r.length + ss - 1) / ss);
    s->state.store(MC_REQUEST_PENDING, std::memory_order_relaxed);
    s->error.store(MC_OK, std::memory_order_relaxed);
    s->bytes.store(0, std::memory_order_relaxed);
    s->remaining.store(nsl, std::memory_order_relaxed);
    s->length = r.length;
    s->local = reinterpret_cast<uint64_t>(r.local);
    s->op = r.opcode;
    s->batch = &b;
    auto &v = per_peer[tix[i]];
    for (uint64_t off = 0; off < r.length; off += ss) {
      Slice sl;
      sl.local = static_cast<char *>(r.local) + off;
      sl.remote = r.remote + off;
      sl.len = std::min(ss, r.length - off);
      sl.slot = s;
      sl.op = r.opcode;
      v.push_back(sl);
    }
  }
  b.pending_.fetch_add(static_cast<int64_t>(n), std::memory_order_acq_rel);
  b.submitted_.store(base + n, std::memory_order_release);
  for (size_t k = 0; k < targets.size(); k++)
    if (!per_peer[k].empty()) targets[k].peer->transport->submit(*paths[k], per_peer[k].data(), per_peer[k].size());
  return Status::Ok();
}

// ------------------------------------------------------------------------------ stats

std::string EngineCore::stats_json() {
  std::string s = "{\"name\":\"" + name_ + "\"";
  s += ",\"incarnation\":" + std::to_string(incarnation_);
  s += ",\"requests_completed\":" + std::to_string(requests_completed_.load());
  s += ",\"requests_failed\":" + std::to_string(requests_failed_.load());
  s += ",\"bytes_read\":" + std::to_string(bytes_read_.load());
  s += ",\"bytes_written\":" + std::to_string(bytes_written_.load());
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    s += ",\"buffers\":" + std::to_string(buffers_.size());
  }
  {
    std::shared_lock<std::shared_mutex> lk(segs_mu_);
    s += ",\"segments_open\":" + std::to_string(segs_.size());
  }
  s += ",\"tcp\":" + tcp_->stats_json() + ",\"local\":" + local_->stats_json();
  s += "}";
  return s;
}

}  // namespace mc
