// The buffer registry: registering, unregistering, allocating local memory; pins; access.
#include "engine/engine.h"

#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <thread>

#include "gpu/cuda_loader.h"
#include "util/echo.h"
#include "util/log.h"
#include "util/net.h"

namespace mc {

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
      return Err(MC_ERR_INVALID_ARG,
                 "location \"" + loc + "\": the address is not device memory of GPU " + std::to_string(dev) +
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
    if (bufs[i].length == 0)
      return Err(MC_ERR_INVALID_ARG, "buffer " + std::to_string(i) + ": length must be > 0");
    if (a + bufs[i].length < a)
      return Err(MC_ERR_INVALID_ARG, "buffer " + std::to_string(i) + " wraps around the address space");
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
  std::sort(order.begin(), order.end(),
            [&](size_t x, size_t y) { return (*regions)[x].addr < (*regions)[y].addr; });
  for (size_t k = 1; k < n; k++) {
    auto &p = (*regions)[order[k - 1]], &c = (*regions)[order[k]];
    if (p.addr + p.length > c.addr)
      return Err(MC_ERR_EXISTS,
                 "buffers " + std::to_string(order[k - 1]) + " and " + std::to_string(order[k]) + " overlap");
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
  std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
  std::lock_guard<std::mutex> rk(reserve_mu_);
  for (size_t i = 0; i < regions.size(); i++) {
    uint64_t a = regions[i].addr, len = regions[i].length;
    uint64_t at = 0;
    auto b = overlapping(buffers_, a, len, [](const std::unique_ptr<LocalBuffer> &x) { return x->length; });
    auto r = overlapping(reserved_, a, len, [](uint64_t l) { return l; });
    if (b != buffers_.end())
      at = b->first;
    else if (r != reserved_.end())
      at = r->first;
    else
      continue;
    char h[32];
    std::snprintf(h, sizeof h, "%" PRIx64, at);
    return Err(MC_ERR_EXISTS, (regions.size() == 1 ? std::string("buffer") : "buffer " + std::to_string(i)) +
                                  " overlaps the " +
                                  (b != buffers_.end() ? "registered" : "being registered") +
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
    std::unique_lock<ReadMostlyMutex> lk(buffers_mu_);
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
  std::unique_lock<ReadMostlyMutex> lk(buffers_mu_);
  std::vector<std::map<uint64_t, std::unique_ptr<LocalBuffer>>::iterator> its;
  its.reserve(n);
  for (size_t i = 0; i < n; i++) {
    std::string who = n == 1 ? std::string() : "buffer " + std::to_string(i) + ": ";
    if (!addrs[i]) return Err(MC_ERR_INVALID_ARG, who + "address is NULL");
    auto it = buffers_.find(reinterpret_cast<uint64_t>(addrs[i]));
    if (it == buffers_.end())
      return Err(MC_ERR_NOT_FOUND, who + "no registered buffer starts at this address");
    if (it->second->in_use.load() != 0)
      return Err(MC_ERR_BUSY, who + "the buffer is used by " + std::to_string(it->second->in_use.load()) +
                                  " pending request(s); wait for them first");
    if (it->second->memfd >= 0 && !memfd_ok)
      return Err(MC_ERR_INVALID_ARG,
                 who + "this buffer came from mc_buffer_alloc: release it with mc_buffer_free");
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
    std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
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
  const uint32_t need = op == MC_WRITE ? MC_ACCESS_WRITE : MC_ACCESS_READ;
  std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
  LocalBuffer *first = nullptr;
  mc_status_t s = check_run_locked(addr, len, need, &first);
  if (s != MC_OK) return s;
  if (addr + len <= first->addr + first->length) {  // inside one buffer: the common case
    first->in_use.fetch_add(1, std::memory_order_relaxed);
    first->peer_in_use.fetch_add(1, std::memory_order_relaxed);
    return MC_OK;
  }
  pin_locked(addr, len);
  for (auto c = buffers_.find(first->addr); c != buffers_.end() && c->first < addr + len; ++c)
    c->second->peer_in_use.fetch_add(1, std::memory_order_relaxed);
  return MC_OK;
}

mc_status_t EngineCore::check_run_locked(uint64_t addr, uint64_t len, uint32_t need,
                                         LocalBuffer **first) const {
  if (len == 0 || addr + len < addr) return MC_ERR_OUT_OF_RANGE;
  auto it = buffers_.upper_bound(addr);
  if (it == buffers_.begin()) return MC_ERR_OUT_OF_RANGE;
  --it;
  if (it->first + it->second->length <= addr) return MC_ERR_OUT_OF_RANGE;
  if (first) *first = it->second.get();
  bool denied = false;
  for (const uint64_t end = addr + len;;) {
    if (!(it->second->access.load(std::memory_order_relaxed) & need)) denied = true;
    const uint64_t covered = it->first + it->second->length;
    if (covered >= end) break;
    if (++it == buffers_.end() || it->first != covered) return MC_ERR_OUT_OF_RANGE;
  }
  return denied ? MC_ERR_DENIED : MC_OK;
}

// Under the read lock for the copy's time: an unregister, or an access change, waits for it to
// end (a few microseconds at most; the callers copy at most 64 KiB), so no pin is needed.
mc_status_t EngineCore::copy_registered(uint64_t addr, uint64_t len, uint32_t op, void *local) {
  std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
  mc_status_t s = check_run_locked(addr, len, op == MC_WRITE ? MC_ACCESS_WRITE : MC_ACCESS_READ);
  if (s != MC_OK) return s;
  void *r = reinterpret_cast<void *>(addr);
  std::memmove(op == MC_WRITE ? r : local, op == MC_WRITE ? local : r, len);
  return MC_OK;
}

void EngineCore::unpin(uint64_t addr, uint64_t len) {
  std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
  auto it = buffers_.upper_bound(addr);
  --it;  // pinned buffers cannot be unregistered, so the run is still there
  if (addr + len <= it->first + it->second->length) {  // inside one buffer
    it->second->peer_in_use.fetch_sub(1, std::memory_order_release);
    it->second->in_use.fetch_sub(1, std::memory_order_release);
    return;
  }
  for (auto c = it; c != buffers_.end() && c->first < addr + len; ++c)
    c->second->peer_in_use.fetch_sub(1, std::memory_order_release);
  unpin_locked(addr, len);
}

// Takes effect for new requests at once (pins and the shm epoch see it under the exclusive
// lock); then waits for peer requests pinned under the old rights, outside the lock (their
// unpin takes it shared). Peers learn it from the descriptor (version bump).
Status EngineCore::set_access(void *addr, uint32_t access) {
  if (access & ~uint32_t(MC_ACCESS_READ | MC_ACCESS_WRITE))
    return Err(MC_ERR_INVALID_ARG,
               "access must be 0 or a combination of MC_ACCESS_READ (1) and MC_ACCESS_WRITE (2)");
  uint64_t a = reinterpret_cast<uint64_t>(addr);
  bool narrowed;
  Status failed;
  {
    std::unique_lock<ReadMostlyMutex> lk(buffers_mu_);
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
        if (!rb.ok())
          MC_LOGW("engine " << name_ << ": restoring the old access after a failed change: " << rb.message());
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
        std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
        auto it = buffers_.find(a);
        if (it == buffers_.end() || it->second->peer_in_use.load(std::memory_order_acquire) == 0) break;
      }
      if (now_ms() > deadline) {
        // The new rights hold for every new request; the caller must know that an old one may
        // still be moving bytes under the old rights.
        Status pub = publish();
        std::string m = "a peer request admitted before the access change still runs after " +
                        std::to_string(opts_.timeout_ms) +
                        " ms (timeout_ms); the new rights hold for new requests";
        if (!pub.ok()) m += "; publishing the descriptor failed too: " + pub.message();
        return Err(MC_ERR_TIMEOUT, std::move(m));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return publish();
}

}  // namespace mc
