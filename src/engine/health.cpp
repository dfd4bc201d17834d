#include "engine/health.h"

#include <chrono>

namespace mc {
namespace {
uint64_t mono_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}
}  // namespace

// mu guards everything here. Each watched peer has one entry, keyed by its address (a peer
// destroyed and another made at the same address replaces the entry in watch()). An entry is
// either queued in `due` or being probed (busy), never both, so a peer is probed by one thread
// at a time.
struct HealthMonitor::Shared {
  struct Entry {
    std::weak_ptr<Peer> peer;
    std::multimap<uint64_t, const Peer *>::iterator at;
    bool queued = false;
    bool busy = false;
    bool kicked = false;  // kicked while busy: due again as soon as the probe returns
  };
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::multimap<uint64_t, const Peer *> due;
  std::map<const Peer *, Entry> entries;
  Probe probe;

  void queue_locked(const Peer *key, Entry &e, uint64_t when) {
    if (e.queued) due.erase(e.at);
    e.at = due.emplace(when, key);
    e.queued = true;
  }
};

HealthMonitor::HealthMonitor(size_t threads, Probe probe) : s_(std::make_shared<Shared>()) {
  s_->probe = std::move(probe);
  handle_ = std::make_shared<Handle>(s_);
  for (size_t i = 0; i < threads; i++) threads_.emplace_back([this] { run(); });
}

HealthMonitor::~HealthMonitor() { stop(); }

void HealthMonitor::stop() {
  {
    std::lock_guard<std::mutex> lk(s_->mu);
    s_->stop = true;
    s_->cv.notify_all();
  }
  for (auto &t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  std::map<const Peer *, Shared::Entry> gone;
  {
    std::lock_guard<std::mutex> lk(s_->mu);
    s_->due.clear();
    gone.swap(s_->entries);
  }
}

std::weak_ptr<HealthMonitor::Handle> HealthMonitor::handle() const { return handle_; }

size_t HealthMonitor::watched() const {
  std::lock_guard<std::mutex> lk(s_->mu);
  return s_->entries.size();
}

void HealthMonitor::watch(const std::shared_ptr<Peer> &p, uint64_t delay_ms) {
  std::lock_guard<std::mutex> lk(s_->mu);
  if (s_->stop) return;
  const Peer *key = p.get();
  auto &e = s_->entries[key];
  e.peer = p;
  if (!e.busy) s_->queue_locked(key, e, mono_ms() + delay_ms);
  s_->cv.notify_one();
}

void HealthMonitor::Handle::kick(const Peer *p) {
  auto s = s_.lock();
  if (!s) return;
  std::lock_guard<std::mutex> lk(s->mu);
  auto it = s->entries.find(p);
  if (it == s->entries.end() || s->stop) return;
  if (it->second.busy) {
    it->second.kicked = true;
    return;
  }
  s->queue_locked(p, it->second, mono_ms());
  s->cv.notify_one();
}

void HealthMonitor::run() {
  Shared &s = *s_;
  std::unique_lock<std::mutex> lk(s.mu);
  while (!s.stop) {
    if (s.due.empty()) {
      s.cv.wait(lk);
      continue;
    }
    auto first = s.due.begin();
    uint64_t now = mono_ms();
    if (first->first > now) {
      s.cv.wait_for(lk, std::chrono::milliseconds(first->first - now));
      continue;
    }
    const Peer *key = first->second;
    s.due.erase(first);
    auto &e = s.entries[key];
    e.queued = false;
    std::shared_ptr<Peer> p = e.peer.lock();
    if (!p) {  // every handle of the segment was closed
      s.entries.erase(key);
      continue;
    }
    e.busy = true;
    lk.unlock();
    uint64_t delay = s.probe(p);
    p.reset();  // may destroy the peer: outside the lock
    lk.lock();
    auto it = s.entries.find(key);
    if (it == s.entries.end()) continue;  // stop() cleared it
    it->second.busy = false;
    if (it->second.peer.expired()) {
      s.entries.erase(it);
      continue;
    }
    if (it->second.kicked) delay = 0;
    it->second.kicked = false;
    s.queue_locked(key, it->second, mono_ms() + delay);
    if (delay == 0) s.cv.notify_one();
  }
}

}  // namespace mc
