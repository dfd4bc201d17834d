#include "engine/health.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <set>
#include <thread>

#include "control/pool.h"
#include "control/prober.h"

namespace mc {
namespace {
constexpr int kGatherMs = 2;

uint64_t mono_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}
}  // namespace

// mu guards everything here but the prober's wait() (see control/prober.h). Each watched peer
// has one entry, keyed by its address (a peer destroyed and another made at the same address
// replaces the entry in watch()). An entry is in exactly one place at a time: idle, due (in
// `due`), waiting for a PONG on its kept connection, queued for a worker (`slow`), or busy on
// one, so a peer is probed by one thread at a time. Peers are only held (weak) here: the
// pinger never locks one, so no peer is destroyed under mu.
struct HealthMonitor::Shared {
  enum class Mode { kIdle, kDue, kWaiting, kSlow, kBusy };
  struct Entry {
    std::weak_ptr<Peer> peer;
    std::multimap<uint64_t, const Peer *>::iterator at;
    Mode mode = Mode::kIdle;
    bool kicked = false;  // kicked while busy: due again as soon as the probe returns
    // Filled after each slow step: whether the batched way may check it, on which connection
    // (key), expecting which incarnation.
    bool batched = false;
    std::string key;
    uint64_t known = 0;
    uint64_t last_ok_ms = 0;       // its last answer with the known incarnation
    uint64_t silent_since_ms = 0;  // handed to the next slow step
  };
  std::mutex mu;
  std::condition_variable cv;    // workers wait here for `slow`
  std::condition_variable tick;  // the pinger waits here instead when the prober has no epoll
  bool stop = false;
  std::multimap<uint64_t, const Peer *> due;
  std::deque<const Peer *> slow;
  std::map<const Peer *, Entry> entries;
  std::map<std::string, std::set<const Peer *>> users;  // kept-connection key -> its peers
  Prober prober;
  Probe probe;
  bool batch_on = false;
  Batch batch{};
  uint64_t slow_steps = 0, ended = 0;

  void unqueue(Entry &e) {
    if (e.mode == Mode::kDue) due.erase(e.at);
    e.mode = Mode::kIdle;
  }
  void queue_due(const Peer *key, Entry &e, uint64_t when) {
    unqueue(e);
    e.at = due.emplace(when, key);
    e.mode = Mode::kDue;
    if (e.at == due.begin()) {
      prober.wake();
      tick.notify_one();
    }
  }
  void to_slow(const Peer *key, Entry &e) {
    if (e.mode == Mode::kSlow || e.mode == Mode::kBusy) return;
    unqueue(e);
    e.mode = Mode::kSlow;
    slow.push_back(key);
    cv.notify_one();
  }
  void set_key(const Peer *pk, Entry &e, const std::string &key) {
    if (e.key == key) return;
    if (!e.key.empty()) {
      auto it = users.find(e.key);
      if (it != users.end() && (it->second.erase(pk), it->second.empty())) {
        users.erase(it);
        prober.release(e.key);  // nobody probes that address any more: back to the pool
      }
    }
    e.key = key;
    if (!key.empty()) users[key].insert(pk);
  }
  void forget(const Peer *pk) {
    auto it = entries.find(pk);
    if (it == entries.end()) return;
    unqueue(it->second);
    set_key(pk, it->second, "");
    entries.erase(it);
  }
  std::vector<std::pair<std::string, uint64_t>> beaten;  // collect()'s scratch
  std::vector<std::pair<std::string, std::string>> gone;
  void collect(uint64_t now);
  void answered(const std::string &key, uint64_t inc, uint64_t now);
  void lost(const std::string &key, uint64_t silent_since);
  void check(const Peer *pk, Entry &e, uint64_t now);
  int dispatch(uint64_t now);
  void after_step(const Peer *pk, Step &step, bool batched, const HostPort &addr, uint64_t inc,
                  uint64_t delay);
};

// A PONG (or a slow step's answer) on key's connection answers every peer waiting on it.
void HealthMonitor::Shared::answered(const std::string &key, uint64_t inc, uint64_t now) {
  auto u = users.find(key);
  if (u == users.end()) return;
  for (const Peer *pk : u->second) {
    Entry &e = entries[pk];
    if (e.mode != Mode::kWaiting) continue;
    e.mode = Mode::kIdle;
    if (inc != e.known) {
      to_slow(pk, e);  // someone new answers there: the slow step refreshes the descriptor
      continue;
    }
    e.last_ok_ms = now;
    e.silent_since_ms = 0;
    queue_due(pk, e, now + batch.heartbeat_ms);
  }
}

// key's connection ended or its PING went unanswered: its peers go the slow way now.
void HealthMonitor::Shared::lost(const std::string &key, uint64_t silent_since) {
  auto u = users.find(key);
  if (u == users.end()) return;
  for (const Peer *pk : u->second) {
    Entry &e = entries[pk];
    if (e.mode != Mode::kWaiting && e.mode != Mode::kDue) continue;
    if (e.mode == Mode::kWaiting) e.silent_since_ms = silent_since;
    to_slow(pk, e);
  }
}

// One due peer, the batched way when it can: no PING when its address answered within the
// last heartbeat (another peer there asked), else one PING on the kept connection.
void HealthMonitor::Shared::check(const Peer *pk, Entry &e, uint64_t now) {
  if (!batch_on || !e.batched || !prober.has(e.key)) return to_slow(pk, e);
  uint64_t inc = 0, pong = prober.last_pong_ms(e.key, &inc);
  if (pong > e.last_ok_ms && pong + batch.heartbeat_ms > now && inc == e.known) {
    e.last_ok_ms = pong;
    return queue_due(pk, e, pong + batch.heartbeat_ms);
  }
  if (!prober.ping(e.key, now)) {
    ended++;
    lost(e.key, 0);
    return to_slow(pk, e);
  }
  e.mode = Mode::kWaiting;
}

// Probes what is due (and what falls due within a small slack, so a thousand peers cost tens
// of wake-ups a second rather than a thousand; early is always safe) and closes connections
// whose PING went unanswered. Returns the ms until the next thing to do (-1: none).
int HealthMonitor::Shared::dispatch(uint64_t now) {
  const uint64_t slack = batch_on ? std::min<uint64_t>(batch.heartbeat_ms / 16, 50) : 0;
  while (!due.empty() && due.begin()->first <= now + slack) {
    const Peer *pk = due.begin()->second;
    Entry &e = entries[pk];
    due.erase(due.begin());
    e.mode = Mode::kIdle;
    if (e.peer.expired()) {  // every handle of the segment was closed
      forget(pk);
      continue;
    }
    check(pk, e, now);
  }
  // After the sends, so that the PING just sent bounds the wait.
  uint64_t oldest = 0;
  if (batch_on)
    for (auto &[key, sent] : prober.expire(now >= batch.answer_ms ? now - batch.answer_ms + 1 : 0, &oldest))
      lost(key, sent);
  int64_t wait = -1;
  if (!due.empty()) wait = static_cast<int64_t>(due.begin()->first - now);
  if (oldest != 0) {
    int64_t w = static_cast<int64_t>(oldest + batch.answer_ms) - static_cast<int64_t>(now);
    wait = wait < 0 ? std::max<int64_t>(w, 0) : std::max<int64_t>(std::min(wait, w), 0);
  }
  return static_cast<int>(std::min<int64_t>(wait, 60000));
}

// Files what a slow step found: how the batched way checks the peer from now on, the
// connection it was answered on, and when it is due next.
void HealthMonitor::Shared::after_step(const Peer *pk, Step &step, bool batched, const HostPort &addr,
                                       uint64_t inc, uint64_t delay) {
  auto it = entries.find(pk);
  if (it == entries.end()) return;  // stop() cleared it
  Entry &e = it->second;
  e.mode = Mode::kIdle;
  if (e.peer.expired()) return forget(pk);
  uint64_t now = mono_ms();
  e.batched = batch_on && batched;
  e.known = inc;
  set_key(pk, e, e.batched ? control_pool::key(addr, batch.token) : "");
  if (e.batched && step.conn.valid()) {
    std::string key = control_pool::key(step.addr, batch.token);
    prober.adopt(key, std::move(step.conn), now);
    e.last_ok_ms = now;
    answered(key, inc, now);  // peers that waited on the connection it replaces
  }
  if (e.kicked) delay = 0;
  e.kicked = false;
  if (delay == 0)
    to_slow(pk, e);
  else
    queue_due(pk, e, now + delay);
}

HealthMonitor::HealthMonitor(size_t threads, Probe probe, const Batch *batch)
    : s_(std::make_shared<Shared>()) {
  s_->probe = std::move(probe);
  if (batch && s_->prober.ok()) {
    s_->batch = *batch;
    s_->batch_on = true;
    s_->prober.set_period(batch->heartbeat_ms);  // kept connections are watched: BEATs every heartbeat
  }
  handle_ = std::make_shared<Handle>(s_);
  threads_.emplace_back([this] { pinger(); });
  for (size_t i = 0; i < threads; i++) threads_.emplace_back([this] { worker(); });
}

HealthMonitor::~HealthMonitor() { stop(); }

void HealthMonitor::stop() {
  {
    std::lock_guard<std::mutex> lk(s_->mu);
    s_->stop = true;
    s_->cv.notify_all();
    s_->tick.notify_all();
    s_->prober.wake();
  }
  for (auto &t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  std::map<const Peer *, Shared::Entry> gone;
  {
    std::lock_guard<std::mutex> lk(s_->mu);
    s_->due.clear();
    s_->slow.clear();
    s_->users.clear();
    s_->prober.clear();
    gone.swap(s_->entries);
  }
}

std::weak_ptr<HealthMonitor::Handle> HealthMonitor::handle() const { return handle_; }

size_t HealthMonitor::watched() const {
  std::lock_guard<std::mutex> lk(s_->mu);
  return s_->entries.size();
}

HealthMonitor::Counters HealthMonitor::counters() const {
  std::lock_guard<std::mutex> lk(s_->mu);
  return Counters{s_->prober.pings_sent(), s_->slow_steps,          s_->ended,
                  s_->prober.size(),       s_->prober.beats_seen(), s_->prober.watching()};
}

void HealthMonitor::watch(const std::shared_ptr<Peer> &p, uint64_t delay_ms) {
  std::lock_guard<std::mutex> lk(s_->mu);
  if (s_->stop) return;
  const Peer *key = p.get();
  // An entry left by a destroyed peer that had the same address: nothing of it applies.
  auto old = s_->entries.find(key);
  if (old != s_->entries.end() && old->second.peer.expired()) s_->forget(key);
  auto &e = s_->entries[key];
  e.peer = p;
  if (e.mode == Shared::Mode::kIdle || e.mode == Shared::Mode::kDue)
    s_->queue_due(key, e, mono_ms() + delay_ms);
}

void HealthMonitor::Handle::kick(const Peer *p) {
  auto s = s_.lock();
  if (!s) return;
  std::lock_guard<std::mutex> lk(s->mu);
  auto it = s->entries.find(p);
  if (it == s->entries.end() || s->stop) return;
  if (it->second.mode == Shared::Mode::kBusy) {
    it->second.kicked = true;
    return;
  }
  s->to_slow(p, it->second);
}

// The BEATs that came on watched connections since the last look, and the watched
// connections found ended meanwhile.
void HealthMonitor::Shared::collect(uint64_t now) {
  prober.collect(now, &beaten, &gone);
  for (auto &[key, inc] : beaten) answered(key, inc, now);
  for (auto &g : gone) {
    ended++;
    lost(g.first, 0);
  }
}

// The one thread of the batched way: looks at the BEATs that came, sends the PINGs that are
// due (to peers that do not take WATCH), then waits on every kept connection's end, the PONGs
// and the wake-up at once. BEATs never wake it: it looks at them when something is due.
void HealthMonitor::pinger() {
  Shared &s = *s_;
  std::vector<uint64_t> ids;
  std::unique_lock<std::mutex> lk(s.mu);
  while (!s.stop) {
    uint64_t sent = s.prober.pings_sent();
    uint64_t now = mono_ms();
    s.collect(now);
    int wait = s.dispatch(now);
    if (!s.prober.ok()) {  // no epoll (descriptors exhausted at start): a plain timer
      s.tick.wait_for(lk, std::chrono::milliseconds(wait < 0 ? 1000 : wait));
      continue;
    }
    // BEATs are seen only when this thread looks: at least every quarter heartbeat while any
    // connection is watched, so that a BEAT is timed within that of its arrival and a peer
    // that stops is seen within peer_timeout_ms + heartbeat_ms + a quarter (one wake-up for all
    // peers, four a second at heartbeat_ms=1000).
    const int look = static_cast<int>(std::max<uint64_t>(s.batch.heartbeat_ms / 4, 1));
    if (s.prober.watching() && (wait < 0 || wait > look)) wait = look;
    // The PONGs of a burst of PINGs come back within a round trip: reading them together costs
    // one wake-up for the burst instead of one for each peer.
    bool burst = s.prober.pings_sent() != sent;
    lk.unlock();
    if (burst) std::this_thread::sleep_for(std::chrono::milliseconds(kGatherMs));
    s.prober.wait(wait, &ids);
    lk.lock();
    if (s.stop) break;
    now = mono_ms();
    for (uint64_t id : ids) {
      if (id == 0) continue;
      std::string key, why;
      uint64_t inc = 0;
      Prober::Got got = s.prober.read(id, &key, &inc, &why, now);
      if (got == Prober::Got::kPong) s.answered(key, inc, now);
      if (got == Prober::Got::kEnded) {
        s.ended++;
        s.lost(key, 0);
      }
    }
  }
}

void HealthMonitor::worker() {
  Shared &s = *s_;
  std::unique_lock<std::mutex> lk(s.mu);
  while (!s.stop) {
    if (s.slow.empty()) {
      s.cv.wait(lk);
      continue;
    }
    const Peer *key = s.slow.front();
    s.slow.pop_front();
    auto it = s.entries.find(key);
    if (it == s.entries.end() || it->second.mode != Shared::Mode::kSlow) continue;
    std::shared_ptr<Peer> p = it->second.peer.lock();
    if (!p) {  // every handle of the segment was closed
      s.forget(key);
      continue;
    }
    it->second.mode = Shared::Mode::kBusy;
    Step step;
    step.silent_since_ms = std::exchange(it->second.silent_since_ms, 0);
    s.slow_steps++;
    lk.unlock();
    uint64_t delay = s.probe(p, &step);
    HostPort addr;
    uint64_t inc = 0;
    bool batched = s.batch_on && s.batch.target(p, &addr, &inc);
    p.reset();  // may destroy the peer: outside the lock
    lk.lock();
    s.after_step(key, step, batched, addr, inc, delay);
  }
}

}  // namespace mc
