#include "engine/engine.h"

#include "util/echo.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "control/client.h"
#include "gpu/cuda_loader.h"
#include "util/log.h"
#include "util/net.h"
#include "transport/registry.h"

namespace mc {

// ------------------------------------------------------------------------------ completion

void EngineCore::complete(const Slice &s, mc_status_t status) {
  // A merged slice covers `count` whole requests with consecutive slots, all ending now.
  if (s.count > 1 && status == MC_OK) {
    finish_merged(s);
    return;
  }
  for (uint32_t k = 0; k < s.count; k++) {
    RequestSlot *r = s.slot + k;
    if (status != MC_OK) {
      int32_t expect = MC_OK;
      r->error.compare_exchange_strong(expect, status);
    } else {
      r->bytes.fetch_add(s.count == 1 ? s.len : r->length, std::memory_order_relaxed);
    }
    if (r->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1)
      finish_request(r, r->error.load());
  }
}

void EngineCore::complete(const Slice *s, const mc_status_t *st, size_t n) {
  for (size_t i = 0; i < n;) {
    // A run of slices that moved whole one-slice requests (a request's slices add up to its
    // length, so len == length means one slice) of one batch.
    size_t j = i;
    while (j < n && st[j] == MC_OK && s[j].count == 1 && s[j].len == s[j].slot->length &&
           s[j].slot->batch == s[i].slot->batch)
      j++;
    if (j - i > 1) {
      finish_whole(s + i, j - i);
      i = j;
    } else {
      complete(s[i], st[i]);
      i++;
    }
  }
}

bool EngineCore::canceled(const Slice &s) const { return s.slot->batch->canceled(); }

void EngineCore::finish_request(RequestSlot *r, mc_status_t err) {
  BatchCore *b = r->batch;
  b->finishing_.fetch_add(1, std::memory_order_acq_rel);
  if (err == MC_ERR_PEER_DOWN || err == MC_ERR_TRANSPORT) {
    if (r->peer) r->peer->kick();
  }
  // A request still pending when its batch was canceled ends canceled, whatever its slices did.
  if (b->canceled()) {
    err = MC_ERR_CANCELED;
    r->error.store(MC_ERR_CANCELED);
  }
  r->peer.reset();
  if (r->lbuf) {
    // Within one buffer (the common case): no lock, no lookup. The buffer cannot go away
    // while pinned.
    r->lbuf->in_use.fetch_sub(1, std::memory_order_release);
  } else {
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

// Ends n requests that all moved every byte at once, each the whole of one slice: what
// finish_request does per request, with the engine's counters, the local buffers' pins (per run
// of requests in one buffer) and the batch's pending count changed once for all of them. A
// request that failed or was canceled meanwhile ends through finish_request as before.
// slot_at(k) gives request k; all are of batch b.
template <class SlotAt>
void EngineCore::finish_together(BatchCore *b, size_t n, SlotAt slot_at) {
  b->finishing_.fetch_add(1, std::memory_order_acq_rel);
  int64_t ended = 0;
  uint64_t bytes_r = 0, bytes_w = 0;
  LocalBuffer *run_buf = nullptr;
  uint32_t run_n = 0;
  for (size_t k = 0; k < n; k++) {
    RequestSlot *r = slot_at(k);
    // Each request lies wholly in one reported slice, and a slice is reported exactly once: no
    // read-modify-write needed.
    r->bytes.store(r->length, std::memory_order_relaxed);
    r->remaining.store(0, std::memory_order_relaxed);
    mc_status_t err = r->error.load();
    if (err != MC_OK || b->canceled()) {
      finish_request(r, err);
      continue;
    }
    r->peer.reset();
    if (r->lbuf && r->lbuf == run_buf) {
      run_n++;
    } else {
      if (run_n) run_buf->in_use.fetch_sub(run_n, std::memory_order_release);
      run_buf = r->lbuf;
      run_n = 0;
      if (r->lbuf) {
        run_n = 1;
      } else {
        std::shared_lock<std::shared_mutex> lk(buffers_mu_);
        unpin_locked(r->local, r->length);
      }
    }
    (r->op == MC_READ ? bytes_r : bytes_w) += r->length;
    ended++;
  }
  if (run_n) run_buf->in_use.fetch_sub(run_n, std::memory_order_release);
  if (ended > 0) {
    requests_completed_.fetch_add(static_cast<uint64_t>(ended), std::memory_order_relaxed);
    if (bytes_r) bytes_read_.fetch_add(bytes_r, std::memory_order_relaxed);
    if (bytes_w) bytes_written_.fetch_add(bytes_w, std::memory_order_relaxed);
    // States last, as in finish_request: a request seen COMPLETED is already counted. Those
    // that ended through finish_request are no longer PENDING.
    for (size_t k = 0; k < n; k++) {
      RequestSlot *r = slot_at(k);
      if (r->state.load(std::memory_order_relaxed) == MC_REQUEST_PENDING)
        r->state.store(MC_REQUEST_COMPLETED, std::memory_order_release);
    }
    b->requests_done(ended);
  }
  b->finishing_.fetch_sub(1, std::memory_order_acq_rel);
}

// A merged slice (many small adjacent requests, one copy) that succeeded: its requests have
// consecutive slots.
void EngineCore::finish_merged(const Slice &s) {
  finish_together(s.slot->batch, s.count, [&](size_t k) { return s.slot + k; });
}

// n slices of one batch that each carried one whole request (see slices_done).
void EngineCore::finish_whole(const Slice *s, size_t n) {
  finish_together(s[0].slot->batch, n, [&](size_t k) { return s[k].slot; });
}

// ------------------------------------------------------------------------------ batches

BatchCore::BatchCore(std::shared_ptr<EngineCore> e, size_t cap) : engine(std::move(e)), capacity(cap) {}
BatchCore::~BatchCore() = default;

void BatchCore::requests_done(int64_t n) {
  if (pending_.fetch_sub(n, std::memory_order_acq_rel) == n) {
    std::lock_guard<std::mutex> lk(mu_);
    cv_.notify_all();
  }
}

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
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  // A short watch first (at most kWaitSpin and timeout_ms): a batch whose last part another
  // thread is finishing (an shm worker's share of a large copy) ends within microseconds, and
  // being put to sleep and woken would cost tens of microseconds on a VM.
  if (!done() && timeout_ms != 0) {
    const auto until = std::chrono::steady_clock::now() +
                       std::min<std::chrono::microseconds>(
                           kWaitSpin, std::chrono::microseconds(timeout_ms < 0 ? kWaitSpin.count()
                                                                               : int64_t(timeout_ms) * 1000));
    for (unsigned i = 1; !done(); i++) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      if ((i & 63) == 0 && std::chrono::steady_clock::now() >= until) break;
    }
  }
  std::unique_lock<std::mutex> lk(mu_);
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
  std::lock_guard<std::mutex> lk(submit_mu);  // no submit slips in between
  canceled_.store(true);
  // Every slice ends within the engine's timeout of no progress (the transports' reapers), so
  // this wait is bounded.
  wait(-1);
  canceled_.store(false);
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
  // log_level is process-wide: start() logs at it, and a failed create puts the old one back
  // (mc.h: a failed mc_engine_create changes no process-wide state).
  int old_level = log_level();
  Status st = e->start();
  if (!st.ok()) {
    e->shutdown();
    log_set_level(old_level);
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

  // The control listener comes first: the engine's name derives from its address, and the
  // transports created after it may read that name.
  const auto &reg = transport_registry();
  std::vector<std::pair<int, Transport *>> data;  // (preference, transport)
  Status st;
  for (auto &e : reg)
    if (e.control_listener && !(st = start_transport(e, &data)).ok()) return st;
  st = name_from_listener();
  if (!st.ok()) return st;
  for (auto &e : reg)
    if (!e.control_listener && (e.role == TransportEntry::Role::kSelf || opts_.transport_allowed(e.name)) &&
        !(st = start_transport(e, &data)).ok())
      return st;
  // Data transports in order of preference, fastest first (TCP reaches everything: last).
  std::stable_sort(data.begin(), data.end(), [](auto &a, auto &b) { return a.first < b.first; });
  for (auto &d : data) data_transports_.push_back(d.second);
  st = make_metadata_store(opts_.metadata, name_, opts_.timeout_ms, opts_.metadata_ttl_ms, opts_.auth_token,
                           &metadata_);
  if (!st.ok()) return st;
  st = metadata_->publish(local_descriptor());
  if (!st.ok()) return st;
  // Two threads probe every open segment however many there are (a probe step is bounded by
  // 250 ms, so one silent peer delays no other for longer than that).
  health_ = std::make_unique<HealthMonitor>(kHealthThreads, [this](const std::shared_ptr<Peer> &p) { return probe_peer(p); });
  MC_LOGI("engine " << name_ << " started, incarnation " << std::hex << incarnation_);
  set_ready();
  return Status::Ok();
}

// Creates one registered transport and files it: as the self transport, as a data transport
// (when `transports` allows it), or only kept running (the control listener when tcp is not
// allowed to carry data).
Status EngineCore::start_transport(const TransportEntry &e, std::vector<std::pair<int, Transport *>> *data) {
  Status st;
  auto t = e.create(*this, &st);
  if (!st.ok()) return st;
  if (!t) return Status::Ok();  // not available here; the factory said why
  if (e.role == TransportEntry::Role::kSelf) self_transport_ = t.get();
  else if (opts_.transport_allowed(e.name)) data->push_back({e.preference, t.get()});
  transports_.push_back(std::move(t));
  return Status::Ok();
}

void EngineCore::control_listening(const HostPort &bound) {
  listen_host_ = bound.host;
  listen_port_ = bound.port;
}

// Our name and the address peers dial, from where the control listener bound.
Status EngineCore::name_from_listener() {
  HostPort bound{listen_host_, listen_port_};
  if (bound.port == 0) return Err(MC_ERR_INTERNAL, "no transport opened the control listener");
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
  if ((bound.host == "0.0.0.0" || bound.host != "127.0.0.1") && opts_.auth_token.empty())
    MC_LOGW("engine " << name_ << " listens on " << bound.str()
                      << " without an auth_token: any host that reaches this port can read and write "
                         "every registered buffer (set auth_token or MC_AUTH_TOKEN on every engine "
                         "of the cluster, or listen on 127.0.0.1)");
  if (!opts_.auth_token.empty() && opts_.auth_token.size() < 16)
    MC_LOGW("engine " << name_ << ": auth_token has only " << opts_.auth_token.size()
                      << " characters; use 32 or more random ones");
  return Status::Ok();
}

void EngineCore::set_ready() {
  std::lock_guard<std::mutex> lk(ready_mu_);
  ready_ = true;
  ready_cv_.notify_all();
}

bool EngineCore::wait_started() {
  std::unique_lock<std::mutex> lk(ready_mu_);
  ready_cv_.wait_for(lk, std::chrono::milliseconds(opts_.timeout_ms), [&] { return ready_; });
  return ready_ && !stopping_.load();
}

EngineCore::~EngineCore() { shutdown(); }

void EngineCore::shutdown() {
  if (stopping_.exchange(true)) return;
  set_ready();  // wakes listener threads waiting in wait_started (they answer "being destroyed")
  // Stop the health probes first (outside every engine lock: a probe takes segs_mu_).
  if (health_) health_->stop();
  if (metadata_) metadata_->unpublish();
  for (auto &t : transports_) t->shutdown();
  std::unordered_map<mc_segment_t, std::shared_ptr<Peer>> segs;
  {
    std::unique_lock<std::shared_mutex> lk(segs_mu_);
    segs.swap(segs_);
    peers_.clear();
  }
  segs.clear();  // peers die here, outside the lock
}

// ------------------------------------------------------------------------------ buffers

// Validates a location string (NULL: detect) and returns the one to record.
Status EngineCore::resolve_location(uint64_t addr, const char *location, std::string *out) {
  if (!location) {
    // Detect: only a process that loaded the CUDA driver can hold device memory.
    cuda::PointerInfo pi;
    if (cuda::driver_in_process()) pi = cuda::pointer_info(reinterpret_cast<const void *>(addr));
    *out = pi.device ? "cuda:" + std::to_string(pi.ordinal) : "cpu";
    return Status::Ok();
  }
  std::string loc = location;
  if (loc.rfind("cuda", 0) == 0) {
    int64_t dev;
    if (loc.rfind("cuda:", 0) != 0 || !parse_int(loc.substr(5), 0, 1023, &dev))
      return Err(MC_ERR_INVALID_ARG, "location " + echo(loc) + " is not \"cpu\", \"cpu:N\" or \"cuda:N\"");
    if (!cuda::api())
      return Err(MC_ERR_UNSUPPORTED, "location \"" + loc + "\": no CUDA driver: " + cuda::why_unavailable());
    cuda::PointerInfo pi = cuda::pointer_info(reinterpret_cast<const void *>(addr));
    if (!pi.device || pi.ordinal != dev)
      return Err(MC_ERR_INVALID_ARG, "location \"" + loc + "\": the address is not device memory of GPU " +
                                         std::to_string(dev) +
                                         (pi.device ? " (it is on GPU " + std::to_string(pi.ordinal) + ")" : ""));
    *out = std::move(loc);
    return Status::Ok();
  }
  if (loc != "cpu") {
    int64_t node;
    if (loc.rfind("cpu:", 0) != 0 || !parse_int(loc.substr(4), 0, 4095, &node))
      return Err(MC_ERR_INVALID_ARG, "location " + echo(loc) + " is not \"cpu\", \"cpu:N\" or \"cuda:N\"");
  }
  *out = std::move(loc);
  return Status::Ok();
}

Status EngineCore::register_buffer(void *addr, size_t len, const char *location, int memfd) {
  NewBuffer nb{reinterpret_cast<uint64_t>(addr), len, location, memfd};
  return register_buffers(&nb, 1);
}

// All or nothing: every buffer is checked (location, overlap with registered buffers and with
// each other) and every transport accepts it, or nothing changes. The descriptor is published
// once per call.
// Checks each new buffer alone (address, length, location) and the set for overlaps among
// themselves; fills regions in the caller's order.
Status EngineCore::check_new_buffers(const NewBuffer *bufs, size_t n, std::vector<LocalRegion> *regions) {
  regions->resize(n);
  for (size_t i = 0; i < n; i++) {
    uint64_t a = bufs[i].addr;
    if (a == 0) return Err(MC_ERR_INVALID_ARG, "buffer " + std::to_string(i) + ": addr is NULL");
    if (bufs[i].length == 0) return Err(MC_ERR_INVALID_ARG, "buffer " + std::to_string(i) + ": length must be > 0");
    if (a + bufs[i].length < a) return Err(MC_ERR_INVALID_ARG, "buffer " + std::to_string(i) + " wraps around the address space");
    std::string loc;
    Status st = resolve_location(a, bufs[i].location, &loc);
    if (st.ok() && loc.rfind("cuda", 0) == 0) {
      // The last byte must be device memory of the same GPU too (one allocation or adjacent ones).
      cuda::PointerInfo end = cuda::pointer_info(reinterpret_cast<const void *>(a + bufs[i].length - 1));
      if (!end.device || "cuda:" + std::to_string(end.ordinal) != loc)
        st = Err(MC_ERR_INVALID_ARG, "the range is not all device memory of " + loc);
      else
        cuda::note_device_buffer();
    }
    if (!st.ok()) return n == 1 ? st : Err(st.code(), "buffer " + std::to_string(i) + ": " + st.message());
    (*regions)[i] = LocalRegion{a, bufs[i].length, std::move(loc), bufs[i].memfd};
  }
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return (*regions)[x].addr < (*regions)[y].addr; });
  for (size_t k = 1; k < n; k++) {
    auto &p = (*regions)[order[k - 1]], &c = (*regions)[order[k]];
    if (p.addr + p.length > c.addr)
      return Err(MC_ERR_EXISTS, "buffers " + std::to_string(order[k - 1]) + " and " + std::to_string(order[k]) + " overlap");
  }
  return Status::Ok();
}

namespace {
// The entry of an address-keyed map of ranges that overlaps [a, a+len), or end().
template <class Map, class LenOf>
typename Map::const_iterator overlapping(const Map &m, uint64_t a, uint64_t len, LenOf len_of) {
  auto it = m.lower_bound(a);
  if (it != m.end() && it->first < a + len) return it;
  if (it != m.begin() && std::prev(it)->first + len_of(std::prev(it)->second) > a) return std::prev(it);
  return m.end();
}
}  // namespace

// Reserves the ranges against registered buffers and other registrations in progress, so the
// transports can register them with no engine lock held (NIC registration and IPC export may
// take seconds; submits must not wait for them).
Status EngineCore::reserve_ranges(const std::vector<LocalRegion> &regions) {
  std::shared_lock<std::shared_mutex> lk(buffers_mu_);
  std::lock_guard<std::mutex> rk(reserve_mu_);
  for (size_t i = 0; i < regions.size(); i++) {
    uint64_t a = regions[i].addr, len = regions[i].length;
    uint64_t at = 0;
    auto b = overlapping(buffers_, a, len, [](const std::unique_ptr<LocalBuffer> &x) { return x->length; });
    auto r = overlapping(reserved_, a, len, [](uint64_t l) { return l; });
    if (b != buffers_.end()) at = b->first;
    else if (r != reserved_.end()) at = r->first;
    else continue;
    char h[32];
    std::snprintf(h, sizeof h, "%" PRIx64, at);
    return Err(MC_ERR_EXISTS, (regions.size() == 1 ? std::string("buffer") : "buffer " + std::to_string(i)) +
                                  " overlaps the " + (b != buffers_.end() ? "registered" : "being registered") +
                                  " buffer at 0x" + h);
  }
  for (auto &r : regions) reserved_.emplace(r.addr, r.length);
  return Status::Ok();
}

void EngineCore::release_ranges(const std::vector<LocalRegion> &regions) {
  std::lock_guard<std::mutex> rk(reserve_mu_);
  for (auto &r : regions) reserved_.erase(r.addr);
}

Status EngineCore::register_buffers(const NewBuffer *bufs, size_t n) {
  std::vector<LocalRegion> regions;
  Status st = check_new_buffers(bufs, n, &regions);
  if (!st.ok()) return st;
  st = reserve_ranges(regions);
  if (!st.ok()) return st;
  for (size_t i = 0; i < n && st.ok(); i++) {
    for (size_t t = 0; t < data_transports_.size(); t++) {
      st = data_transports_[t]->on_register(regions[i]);
      if (st.ok()) continue;
      for (size_t u = 0; u < t; u++) data_transports_[u]->on_unregister(regions[i]);
      for (size_t j = 0; j < i; j++)
        for (auto *tr : data_transports_) tr->on_unregister(regions[j]);
      break;
    }
  }
  if (!st.ok()) {
    release_ranges(regions);
    return st;
  }
  {
    // The exclusive lock only to make the buffers visible at once, with one version bump.
    std::unique_lock<std::shared_mutex> lk(buffers_mu_);
    for (auto &r : regions) {
      auto b = std::make_unique<LocalBuffer>();
      b->addr = r.addr;
      b->length = r.length;
      b->location = r.location;
      b->memfd = r.memfd;
      buffers_.emplace(b->addr, std::move(b));
    }
    desc_version_++;
    for (auto &r : regions) note_change(r.addr);
  }
  release_ranges(regions);
  return publish();
}

Status EngineCore::unregister_buffer(void *addr, bool memfd_ok) {
  void *const one[1] = {addr};
  return unregister_buffers(one, 1, memfd_ok);
}

// All or nothing, like register_buffers.
Status EngineCore::unregister_buffers(void *const *addrs, size_t n, bool memfd_ok) {
  std::unique_lock<std::shared_mutex> lk(buffers_mu_);
  std::vector<std::map<uint64_t, std::unique_ptr<LocalBuffer>>::iterator> its;
  its.reserve(n);
  for (size_t i = 0; i < n; i++) {
    std::string who = n == 1 ? std::string() : "buffer " + std::to_string(i) + ": ";
    if (!addrs[i]) return Err(MC_ERR_INVALID_ARG, who + "address is NULL");
    auto it = buffers_.find(reinterpret_cast<uint64_t>(addrs[i]));
    if (it == buffers_.end()) return Err(MC_ERR_NOT_FOUND, who + "no registered buffer starts at this address");
    if (it->second->in_use.load() != 0)
      return Err(MC_ERR_BUSY, who + "the buffer is used by " + std::to_string(it->second->in_use.load()) +
                                  " pending request(s); wait for them first");
    if (it->second->memfd >= 0 && !memfd_ok)
      return Err(MC_ERR_INVALID_ARG, who + "this buffer came from mc_buffer_alloc: release it with mc_buffer_free");
    its.push_back(it);
  }
  if (n > 1) {
    std::vector<uint64_t> sorted(n);
    for (size_t i = 0; i < n; i++) sorted[i] = its[i]->first;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
      return Err(MC_ERR_INVALID_ARG, "the same buffer is listed twice");
  }
  desc_version_++;
  for (auto &it : its) {
    LocalRegion region{it->first, it->second->length, it->second->location, it->second->memfd};
    for (auto *t : data_transports_) t->on_unregister(region);
    note_change(it->first);
    buffers_.erase(it);
  }
  lk.unlock();
  return publish();
}

Status EngineCore::alloc_buffer(size_t len, const char *location, void **out) {
  std::string loc = location ? location : "cpu";
  if (loc.rfind("cpu", 0) != 0)
    return Err(MC_ERR_UNSUPPORTED, "mc_buffer_alloc gives host memory only (location " + echo(loc) + ")");
  int fd = ::memfd_create("mc-buffer", MFD_CLOEXEC);
  if (fd < 0) return Err(MC_ERR_NO_MEMORY, std::string("memfd_create: ") + std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(len)) != 0) {
    int e = errno;
    ::close(fd);
    return Err(MC_ERR_NO_MEMORY, "cannot size a " + std::to_string(len) + "-byte memfd: " + std::strerror(e));
  }
  void *p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    ::close(fd);
    return Err(MC_ERR_NO_MEMORY, "cannot map " + std::to_string(len) + " bytes: " + std::strerror(e));
  }
  Status st = register_buffer(p, len, loc.c_str(), fd);
  if (!st.ok()) {
    ::munmap(p, len);
    ::close(fd);
    return st;
  }
  *out = p;
  return Status::Ok();
}

Status EngineCore::free_buffer(void *addr) {
  uint64_t a = reinterpret_cast<uint64_t>(addr);
  int fd;
  uint64_t len;
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    auto it = buffers_.find(a);
    if (it == buffers_.end() || it->second->memfd < 0)
      return Err(MC_ERR_NOT_FOUND, "no buffer from mc_buffer_alloc starts at this address");
    fd = it->second->memfd;
    len = it->second->length;
  }
  Status st = unregister_buffer(addr, true);
  if (!st.ok()) return st;
  // Same-host peers that mapped it keep their own mapping of the memfd (no SIGBUS for them);
  // the engine's epoch protocol keeps them from writing into it any more.
  ::munmap(addr, len);
  ::close(fd);
  return Status::Ok();
}

Status EngineCore::publish() {
  // Serialized so that a slower publish of an older descriptor never overwrites a newer one.
  if (!metadata_->needs_publish()) return Status::Ok();
  std::lock_guard<std::mutex> lk(publish_mu_);
  Status st = metadata_->publish(local_descriptor());
  if (!st.ok()) MC_LOGW("engine " << name_ << ": publishing the descriptor failed: " << st.message());
  // The buffer change itself stands: peers that already know us keep working, and the store
  // gets the newest descriptor with the next publish.
  return Status::Ok();
}

const LocalBuffer *EngineCore::pin_locked(uint64_t addr, uint64_t len) {
  if (len == 0 || addr + len < addr) return nullptr;
  auto it = buffers_.upper_bound(addr);
  if (it == buffers_.begin()) return nullptr;
  --it;
  uint64_t end = addr + len;
  if (it->first + it->second->length <= addr) return nullptr;
  // Check the whole run first, then pin: a failed check pins nothing.
  auto first = it;
  uint64_t covered = it->first + it->second->length;
  int n = 1;
  while (covered < end) {
    ++it;
    if (it == buffers_.end() || it->first != covered) return nullptr;
    covered = it->first + it->second->length;
    n++;
  }
  for (it = first; n > 0; ++it, --n) it->second->in_use.fetch_add(1, std::memory_order_relaxed);
  return first->second.get();
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

// A peer's request: the run must be registered and every buffer of it must allow op.
mc_status_t EngineCore::pin(uint64_t addr, uint64_t len, uint32_t op) {
  uint32_t need = op == MC_WRITE ? MC_ACCESS_WRITE : MC_ACCESS_READ;
  std::shared_lock<std::shared_mutex> lk(buffers_mu_);
  if (len == 0 || addr + len < addr) return MC_ERR_OUT_OF_RANGE;
  auto it = buffers_.upper_bound(addr);
  if (it == buffers_.begin()) return MC_ERR_OUT_OF_RANGE;
  --it;
  if (it->first + it->second->length <= addr) return MC_ERR_OUT_OF_RANGE;
  bool denied = false;
  for (auto c = it; c != buffers_.end() && c->first < addr + len; ++c)
    if (!(c->second->access.load(std::memory_order_relaxed) & need)) denied = true;
  if (!pin_locked(addr, len)) return MC_ERR_OUT_OF_RANGE;
  if (denied) {
    unpin_locked(addr, len);
    return MC_ERR_DENIED;
  }
  for (auto c = it; c != buffers_.end() && c->first < addr + len; ++c)
    c->second->peer_in_use.fetch_add(1, std::memory_order_relaxed);
  return MC_OK;
}

void EngineCore::unpin(uint64_t addr, uint64_t len) {
  std::shared_lock<std::shared_mutex> lk(buffers_mu_);
  auto it = buffers_.upper_bound(addr);
  --it;  // pinned buffers cannot be unregistered, so the run is still there
  for (auto c = it; c != buffers_.end() && c->first < addr + len; ++c)
    c->second->peer_in_use.fetch_sub(1, std::memory_order_release);
  unpin_locked(addr, len);
}

// Takes effect for new requests at once (pins and the shm epoch see it under the exclusive
// lock); then waits for peer requests pinned under the old rights, outside the lock (their
// unpin takes it shared). Peers learn it from the descriptor (version bump).
Status EngineCore::set_access(void *addr, uint32_t access) {
  if (access & ~uint32_t(MC_ACCESS_READ | MC_ACCESS_WRITE))
    return Err(MC_ERR_INVALID_ARG, "access must be 0 or a combination of MC_ACCESS_READ (1) and MC_ACCESS_WRITE (2)");
  uint64_t a = reinterpret_cast<uint64_t>(addr);
  bool narrowed;
  Status failed;
  {
    std::unique_lock<std::shared_mutex> lk(buffers_mu_);
    auto it = buffers_.find(a);
    if (it == buffers_.end()) return Err(MC_ERR_NOT_FOUND, "no registered buffer starts at this address");
    uint32_t old = it->second->access.load();
    if (old == access) return Status::Ok();
    narrowed = (old & ~access) != 0;
    it->second->access.store(access);
    LocalRegion region{it->first, it->second->length, it->second->location, it->second->memfd, access};
    // A transport that cannot put the new rights in place fails the change: the ones already
    // changed get the old rights back and the buffer keeps them.
    // (A failed transport may have withdrawn that buffer from itself: the descriptor changed.)
    size_t changed = 0;
    Status st;
    for (auto *t : data_transports_) {
      st = t->on_access_change(region);
      if (!st.ok()) break;
      changed++;
    }
    if (!st.ok()) {
      it->second->access.store(old);
      region.access = old;
      for (size_t i = 0; i < changed; i++) {
        Status rb = data_transports_[i]->on_access_change(region);
        if (!rb.ok()) MC_LOGW("engine " << name_ << ": restoring the old access after a failed change: " << rb.message());
      }
      failed = st;
    }
    desc_version_++;
    note_change(a);
  }
  if (!failed.ok()) {
    publish();  // the descriptor changed (a transport may have withdrawn the buffer's keys)
    return failed;
  }
  if (narrowed) {
    uint64_t deadline = now_ms() + opts_.timeout_ms;
    for (;;) {
      {
        std::shared_lock<std::shared_mutex> lk(buffers_mu_);
        auto it = buffers_.find(a);
        if (it == buffers_.end() || it->second->peer_in_use.load(std::memory_order_acquire) == 0) break;
      }
      if (now_ms() > deadline) {
        // The new rights hold for every new request; the caller must know that an old one may
        // still be moving bytes under the old rights.
        Status pub = publish();
        std::string m = "a peer request admitted before the access change still runs after " +
                        std::to_string(opts_.timeout_ms) + " ms (timeout_ms); the new rights hold for new requests";
        if (!pub.ok()) m += "; publishing the descriptor failed too: " + pub.message();
        return Err(MC_ERR_TIMEOUT, std::move(m));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return publish();
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
  for (auto &[a, b] : buffers_) d.buffers.push_back({a, b->length, b->location, {}, b->access.load()});
  d.set_min_access();
  for (auto *t : data_transports_) t->describe(d);
  return d;
}

Status EngineCore::control(const std::string &channel, const std::string &request, std::string *reply) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is being destroyed");
  for (auto *t : data_transports_)
    if (channel == t->name()) return t->handle_control(request, reply);
  return Err(MC_ERR_UNSUPPORTED, "no transport \"" + channel + "\" in this engine");
}

// Records that the buffer at addr changed in the current descriptor version (caller holds
// buffers_mu_ exclusively). The log lets a peer that knows version V fetch only what changed
// since V; it keeps the last kChangeLog changes.
void EngineCore::note_change(uint64_t addr) {
  changes_.emplace_back(desc_version_, addr);
  if (changes_.size() > kChangeLog) {
    log_floor_ = changes_.front().first;  // changes of this version may be partly gone
    changes_.pop_front();
  }
}

// An incremental descriptor (see proto/descriptor.h, "delta") for a peer that knows version
// `since` of this incarnation, or the full one when the log cannot tell what changed.
std::string EngineCore::descriptor_delta_json(uint64_t inc, uint64_t since) {
  Descriptor d;
  std::vector<uint64_t> removed;
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    if (inc != incarnation_ || since == 0 || since > desc_version_ || since < log_floor_) {
      lk.unlock();
      return descriptor_json();
    }
    d.name = name_;
    d.incarnation = incarnation_;
    d.host_id = host_boot_id();
    d.pid = getpid();
    d.tcp = tcp_addr_;
    d.version = desc_version_;
    std::vector<uint64_t> touched;
    auto it = std::upper_bound(changes_.begin(), changes_.end(), since,
                               [](uint64_t v, const std::pair<uint64_t, uint64_t> &c) { return v < c.first; });
    for (; it != changes_.end(); ++it) touched.push_back(it->second);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t a : touched) {
      auto b = buffers_.find(a);
      if (b == buffers_.end()) {
        removed.push_back(a);
      } else {
        BufferDesc bd{a, b->second->length, b->second->location, {}};
        bd.access = b->second->access.load();
        d.buffers.push_back(std::move(bd));
      }
    }
    for (auto *t : data_transports_) t->describe(d);
  }
  deltas_served_.fetch_add(1, std::memory_order_relaxed);
  return d.to_delta_json(since, removed);
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

Peer::~Peer() {
  std::lock_guard<std::mutex> lk(alive->mu);
  alive->ok = false;
}

void Peer::kick() {
  if (auto m = monitor.lock()) m->kick(this);
}

Status EngineCore::refresh_peer(Peer &p, bool *rejoined) {
  Descriptor d;
  if (p.self) {
    d = local_descriptor();
  } else {
    std::shared_ptr<const Descriptor> have;
    {
      std::lock_guard<std::mutex> lk(p.mu);
      have = p.desc;
    }
    Status st = have ? metadata_->fetch_update(p.name, opts_.timeout_ms, *have, &d)
                     : metadata_->fetch(p.name, opts_.timeout_ms, &d);
    if (!st.ok()) return st;
  }
  if (!p.self)
    for (auto *t : data_transports_) {
      Status cs = t->check_descriptor(d);
      if (!cs.ok()) return cs;
    }
  auto nd = std::make_shared<const Descriptor>(std::move(d));
  std::vector<Route> dropped;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    bool new_peer = !p.desc || p.desc->incarnation != nd->incarnation;
    if (new_peer || p.routes.empty()) {
      std::vector<Route> routes;
      // The engine's own name always opens (mc.h): in process when "local" is allowed, else
      // over the allowed transports like any peer (tcp to its own listener, shm to itself).
      if (p.self && self_transport_ && opts_.transport_allowed(self_transport_->name())) {
        routes.push_back({self_transport_, self_transport_->connect(*nd)});
      } else {
        for (auto *t : data_transports_) {
          if (!t->reachable(*nd)) continue;
          auto path = t->connect(*nd);
          if (!path) continue;
          Peer *raw = &p;
          // The path may outlive the peer only inside the transport's own threads, which the
          // peer's destructor (joining nothing of theirs) cannot see: guard with a flag.
          auto alive = p.alive;
          path->set_on_down([raw, alive] {
            std::lock_guard<std::mutex> lk(alive->mu);
            if (alive->ok) raw->kick();
          });
          routes.push_back({t, std::move(path)});
        }
      }
      if (routes.empty())
        return Err(MC_ERR_UNSUPPORTED, "no allowed transport reaches segment " + p.name);
      if (p.desc && new_peer) {
        MC_LOGI("segment " << p.name << ": new incarnation " << std::hex << nd->incarnation
                           << " (was " << p.desc->incarnation << "); rebuilding its routes");
        p.rejoins.fetch_add(1);
        if (rejoined) *rejoined = true;
      }
      dropped.swap(p.routes);
      p.routes = std::move(routes);
    } else {
      for (auto &r : p.routes) r.transport->update(*r.path, *nd);
    }
    p.desc = std::move(nd);
  }
  // The old incarnation's routes: fail what is still queued or in flight on them, then let
  // them go (their destructors tear that peer's connections, mappings and QPs down).
  for (auto &r : dropped) r.transport->fail_path(*r.path, MC_ERR_PEER_DOWN, "peer " + p.name + " restarted");
  return Status::Ok();
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
    auto path = r.transport->connect(*d);
    if (!path) continue;
    Peer *raw = &p;
    auto alive = p.alive;
    path->set_on_down([raw, alive] {
      std::lock_guard<std::mutex> lk(alive->mu);
      if (alive->ok) raw->kick();
    });
    r.path = std::move(path);
    changed = true;
  }
  if (!changed) return;
  std::lock_guard<std::mutex> lk(p.mu);
  if (p.desc == d) p.routes = std::move(routes);
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
    for (auto &r : routes) r.transport->fail_path(*r.path, MC_ERR_PEER_DOWN, "segment " + p.name + " is unreachable: " + why);
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
    std::shared_lock<std::shared_mutex> lk(segs_mu_);
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

// Probes one peer every heartbeat_ms (at once when a transfer to it failed). No answer within
// peer_timeout_ms, or a refused connection, makes it UNREACHABLE and fails its in-flight work;
// an answer with the known incarnation makes it OK again; a new incarnation rebuilds it.
uint64_t EngineCore::probe_peer(const std::shared_ptr<Peer> &sp) {
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
  if (p.silent_since_ms != 0) left = start - p.silent_since_ms < left ? left - (start - p.silent_since_ms) : 1;
  Status st = control_ping(addr, opts_.auth_token, static_cast<uint32_t>(std::clamp<uint64_t>(left, 1, 250)), &inc);
  if (stopping_.load()) return opts_.heartbeat_ms;
  bool changed = false;
  if (!st.ok()) {
    uint64_t now = now_ms();
    if (p.silent_since_ms == 0) p.silent_since_ms = start;  // silent since the attempt began
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
    changed = rs.ok() || p.state.load() != MC_SEGMENT_UNREACHABLE;
    set_state(p, rs.ok() ? MC_SEGMENT_OK : MC_SEGMENT_UNREACHABLE, rs.ok() ? "" : rs.message());
  }
  if (changed) notify(p);
  return next();
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
    p->state_changed_ms.store(now_ms());
    // Set before anything can reach the peer (a route's on_down kicks it from a transport
    // thread); a kick before watch() below finds no entry and does nothing.
    if (!p->self) p->monitor = health_->handle();
    Status st = refresh_peer(*p);
    if (!st.ok()) return Err(st.code(), "cannot open segment " + name + ": " + st.message());
    std::unique_lock<std::shared_mutex> lk(segs_mu_);
    auto it = peers_.find(name);
    std::shared_ptr<Peer> other = it != peers_.end() ? it->second.lock() : nullptr;
    if (other) {
      peer = other;  // another thread opened it meanwhile: share its state
    } else {
      peers_[name] = p;
      peer = p;
      if (!p->self) health_->watch(p, opts_.heartbeat_ms);
    }
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
  std::shared_ptr<Peer> gone;  // released after the lock: its destructor joins a thread
  std::unique_lock<std::shared_mutex> lk(segs_mu_);
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
    std::snprintf(v.transport, sizeof v.transport, "%s", p->routes.empty() ? "" : p->routes[0].transport->name());
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

  // Pass 1: everything but the local pins. Peers whose descriptor lacks a range are refreshed
  // once per call (this may block up to timeout_ms).
  struct Target {
    std::shared_ptr<Peer> peer;
    std::shared_ptr<const Descriptor> desc;
    std::vector<Route> routes;
    bool refreshed = false;
  };
  std::vector<Target> targets;  // distinct peers of this call, few
  std::vector<uint32_t> tix(n);
  mc_segment_t last_seg = 0;
  uint32_t last_t = 0;
  auto snapshot = [](Target &t) {
    std::lock_guard<std::mutex> lk(t.peer->mu);
    t.desc = t.peer->desc;
    t.routes = t.peer->routes;
  };
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
        if (p->state.load() == MC_SEGMENT_UNREACHABLE)
          return Err(MC_ERR_PEER_DOWN, req_prefix(i) + "segment " + p->name + " is unreachable");
        Target t;
        t.peer = std::move(p);
        snapshot(t);
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
        snapshot(t);
      }
      if (!t.desc->covers(r.remote, r.length))
        return Err(MC_ERR_OUT_OF_RANGE, req_prefix(i) + "remote range is not inside segment " +
                                            t.peer->name + "'s registered buffers");
    }
    // The peer's buffers say what peers may do (mc_buffer_set_access); its target enforces it
    // too. A descriptor that forbids it may be stale: refreshed once.
    uint32_t need = r.opcode == MC_READ ? MC_ACCESS_READ : MC_ACCESS_WRITE;
    if (!(t.desc->min_access & need) && !(t.desc->access_of(r.remote, r.length) & need)) {
      if (!t.refreshed) {
        t.refreshed = true;
        Status st = refresh_peer(*t.peer);
        if (!st.ok()) return Err(st.code(), req_prefix(i) + "refreshing segment " + t.peer->name + ": " + st.message());
        snapshot(t);
      }
      if (!t.desc->covers(r.remote, r.length) || !(t.desc->access_of(r.remote, r.length) & need))
        return Err(MC_ERR_DENIED, req_prefix(i) + "segment " + t.peer->name + " does not let peers " +
                                      (r.opcode == MC_READ ? "read" : "write") + " the remote range");
    }
  }

  // Pass 2: pin the local ranges and pick each request's route (the first transport of its
  // peer that moves data between the two memory kinds). Any failure unpins what was pinned.
  thread_local std::vector<uint8_t> route_of;
  thread_local std::vector<LocalBuffer *> single_buf;  // the one local buffer a request lies in
  route_of.resize(n);
  single_buf.resize(n);
  const LocalBuffer *last_lb = nullptr;
  const BufferDesc *last_rb = nullptr;
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    auto undo = [&](size_t upto) {
      for (size_t j = 0; j < upto; j++) unpin_locked(reinterpret_cast<uint64_t>(reqs[j].local), reqs[j].length);
    };
    for (size_t i = 0; i < n; i++) {
      uint64_t a = reinterpret_cast<uint64_t>(reqs[i].local);
      const LocalBuffer *lb = pin_locked(a, reqs[i].length);
      if (!lb) {
        undo(i);
        return Err(MC_ERR_OUT_OF_RANGE,
                   req_prefix(i) + "local range is not inside this engine's registered buffers");
      }
      Target &t = targets[tix[i]];
      single_buf[i] = a + reqs[i].length <= lb->addr + lb->length ? const_cast<LocalBuffer *>(lb) : nullptr;
      const BufferDesc *rb = t.desc->find(reqs[i].remote);
      if (i > 0 && lb == last_lb && rb == last_rb && tix[i] == tix[i - 1]) {
        route_of[i] = route_of[i - 1];  // same pair of buffers as the previous request
        continue;
      }
      last_lb = lb;
      last_rb = rb;
      size_t k = 0;
      while (k < t.routes.size() && !(t.routes[k].transport->accepts(lb->location, rb->location) &&
                                       t.routes[k].transport->accepts_buffer(*t.routes[k].path, *rb)))
        k++;
      if (k == t.routes.size()) {
        undo(i + 1);
        return Err(MC_ERR_UNSUPPORTED, req_prefix(i) + "no transport to segment " + t.peer->name +
                                           " moves data from " + lb->location + " to " + rb->location);
      }
      route_of[i] = static_cast<uint8_t>(k);
    }
  }

  // Pass 3: slots and slices, then one hand-off per (peer, route).
  size_t need_chunks = (base + n + BatchCore::kChunk - 1) / BatchCore::kChunk;
  // A small batch (mc_transfer's internal one, typically) gets a chunk of its own size, not
  // 4096 slots: the per-call cost of a small transfer stays a few hundred nanoseconds.
  while (b.chunks_.size() < need_chunks)
    b.chunks_.emplace_back(new RequestSlot[std::min(b.capacity, BatchCore::kChunk)]);
  struct Group {
    uint32_t target;
    uint8_t route;
    std::vector<Slice> slices;
  };
  thread_local std::vector<Group> groups;
  size_t ngroups = 0;
  // Reserved up front: group_for hands out references that must stay valid for the whole call.
  size_t max_groups = 0;
  for (auto &t : targets) max_groups += t.routes.size();
  if (groups.size() < max_groups) groups.resize(max_groups);
  auto group_for = [&](uint32_t t, uint8_t r) -> std::vector<Slice> & {
    for (size_t g = 0; g < ngroups; g++)
      if (groups[g].target == t && groups[g].route == r) return groups[g].slices;
    Group &g = groups[ngroups++];
    g.target = t;
    g.route = r;
    g.slices.clear();
    return g.slices;
  };
  uint64_t ss = opts_.slice_size;
  std::vector<Slice> *prev_group = nullptr;  // the group request i-1 went to
  for (size_t i = 0; i < n; i++) {
    const mc_request_t &r = reqs[i];
    RequestSlot *s = b.slot(base + i);
    auto &v = group_for(tix[i], route_of[i]);
    // Merge a small request into the previous slice when both sides are adjacent: a batch of
    // many small pages of one block then costs a few large slices on the wire.
    if (&v == prev_group && !v.empty() && r.length < ss) {
      Slice &last = v.back();
      if (last.op == r.opcode && static_cast<char *>(last.local) + last.len == r.local &&
          last.remote + last.len == r.remote && last.len + r.length <= ss &&
          last.slot + last.count == s && (base + i) % BatchCore::kChunk != 0 &&
          (last.count > 1 || last.slot->length == last.len)) {
        s->state.store(MC_REQUEST_PENDING, std::memory_order_relaxed);
        s->error.store(MC_OK, std::memory_order_relaxed);
        s->bytes.store(0, std::memory_order_relaxed);
        s->remaining.store(1, std::memory_order_relaxed);
        s->length = r.length;
        s->local = reinterpret_cast<uint64_t>(r.local);
        s->op = r.opcode;
        s->batch = &b;
        s->peer.reset();  // the slice's first request holds the peer for all of them
        s->lbuf = single_buf[i];
        last.len += r.length;
        last.count++;
        continue;
      }
    }
    prev_group = &v;
    uint32_t nsl = static_cast<uint32_t>((r.length + ss - 1) / ss);
    s->state.store(MC_REQUEST_PENDING, std::memory_order_relaxed);
    s->error.store(MC_OK, std::memory_order_relaxed);
    s->bytes.store(0, std::memory_order_relaxed);
    s->remaining.store(nsl, std::memory_order_relaxed);
    s->length = r.length;
    s->local = reinterpret_cast<uint64_t>(r.local);
    s->op = r.opcode;
    s->batch = &b;
    s->peer = targets[tix[i]].peer;
    s->lbuf = single_buf[i];
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
  for (size_t g = 0; g < ngroups; g++) {
    Route &rt = targets[groups[g].target].routes[groups[g].route];
    rt.transport->submit(*rt.path, groups[g].slices.data(), groups[g].slices.size());
  }
  return Status::Ok();
}

// ------------------------------------------------------------------------------ stats

std::string EngineCore::stats_json() {
  std::string s = "{\"name\":" + nlohmann::json(name_).dump();
  s += ",\"incarnation\":" + std::to_string(incarnation_);
  s += ",\"requests_completed\":" + std::to_string(requests_completed_.load());
  s += ",\"requests_failed\":" + std::to_string(requests_failed_.load());
  s += ",\"bytes_read\":" + std::to_string(bytes_read_.load());
  s += ",\"bytes_written\":" + std::to_string(bytes_written_.load());
  s += ",\"descriptor_deltas_served\":" + std::to_string(deltas_served_.load());
  {
    std::shared_lock<std::shared_mutex> lk(buffers_mu_);
    s += ",\"buffers\":" + std::to_string(buffers_.size());
  }
  {
    std::shared_lock<std::shared_mutex> lk(segs_mu_);
    s += ",\"segments_open\":" + std::to_string(segs_.size());
  }
  for (auto &t : transports_) s += ",\"" + std::string(t->name()) + "\":" + t->stats_json();
  // One flat object per open peer, keyed by its name.
  std::vector<std::shared_ptr<Peer>> peers;
  {
    std::shared_lock<std::shared_mutex> lk(segs_mu_);
    for (auto &[n, w] : peers_)
      if (auto p = w.lock()) peers.push_back(std::move(p));
  }
  s += ",\"peers\":{";
  bool first = true;
  for (auto &p : peers) {
    std::vector<Route> routes;
    uint64_t inc;
    {
      std::lock_guard<std::mutex> lk(p->mu);
      routes = p->routes;
      inc = p->desc->incarnation;
    }
    if (!first) s += ",";
    first = false;
    s += nlohmann::json(p->name).dump() + ":{\"transport\":\"" +
         std::string(routes.empty() ? "" : routes[0].transport->name()) + "\"";
    s += ",\"incarnation\":" + std::to_string(inc);
    s += ",\"state\":\"" + std::string(p->state.load() == MC_SEGMENT_OK ? "ok" : "unreachable") + "\"";
    s += ",\"rejoins\":" + std::to_string(p->rejoins.load());
    for (auto &r : routes) {
      std::string extra = r.transport->peer_stats(p->name, *r.path);
      if (!extra.empty()) s += "," + extra;
    }
    s += "}";
  }
  s += "}}";
  return s;
}

}  // namespace mc
