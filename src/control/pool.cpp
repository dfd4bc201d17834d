// Idle admitted control connections (control/pool.h). No thread of its own: take() and give()
// sweep out what idled too long, at most once every kSweepMs (a sweep walks every peer's queue,
// so sweeping on every call made each probe cost O(peers)), and clear() (run when an engine's TCP transport
// shuts down) closes the rest, so an engine destroyed leaves no socket behind.
#include "control/pool.h"

#include <poll.h>

#include <atomic>
#include <deque>
#include <map>
#include <mutex>

namespace mc::control_pool {
namespace {

struct Idle {
  Fd fd;
  uint64_t since_ms;
};

struct Pool {
  std::mutex mu;                                 // guards idle and generation
  std::map<std::string, std::deque<Idle>> idle;  // per key, most recently returned last
  uint64_t generation = 1;
  uint64_t swept_ms = 0;  // when expire() last walked the whole map
  std::atomic<uint64_t> connects{0}, reuses{0}, discarded{0};
};

Pool &pool() {
  static Pool *p = new Pool;  // never destroyed: calls may run during static destruction
  return *p;
}

// Anything readable on an idle connection (its end, or bytes nobody asked for) makes it unusable.
bool ended(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) != 0;
}

// How often take()/give() walk the whole pool: an idle connection closes within
// kIdleMs + kSweepMs of its last use.
constexpr uint64_t kSweepMs = 1000;

// Drops what idled too long, when the last sweep is kSweepMs old. Caller holds mu.
void expire(Pool &p, uint64_t now) {
  if (now - p.swept_ms < kSweepMs) return;
  p.swept_ms = now;
  for (auto it = p.idle.begin(); it != p.idle.end();) {
    auto &q = it->second;
    while (!q.empty() && now - q.front().since_ms >= kIdleMs) {
      q.pop_front();
      p.discarded++;
    }
    it = q.empty() ? p.idle.erase(it) : std::next(it);
  }
}

}  // namespace

std::string key(const HostPort &addr, const std::string &token) { return addr.str() + '\0' + token; }

Fd take(const std::string &k, uint64_t *generation) {
  Pool &p = pool();
  std::lock_guard<std::mutex> lk(p.mu);
  *generation = p.generation;
  expire(p, now_ms());
  auto it = p.idle.find(k);
  while (it != p.idle.end() && !it->second.empty()) {
    Fd fd = std::move(it->second.back().fd);
    it->second.pop_back();
    if (!ended(fd.get())) {
      p.reuses++;
      return fd;
    }
    p.discarded++;
  }
  return Fd();
}

void give(const std::string &k, Fd fd, uint64_t generation) {
  Pool &p = pool();
  std::lock_guard<std::mutex> lk(p.mu);
  uint64_t now = now_ms();
  expire(p, now);
  auto &q = p.idle[k];
  if (generation != p.generation || q.size() >= kMaxIdlePerPeer) {
    p.discarded++;
    if (q.empty()) p.idle.erase(k);
    return;  // fd closes here
  }
  q.push_back(Idle{std::move(fd), now});
}

void clear() {
  Pool &p = pool();
  std::lock_guard<std::mutex> lk(p.mu);
  p.generation++;
  for (auto &[k, q] : p.idle) p.discarded += q.size();
  p.idle.clear();
}

uint64_t generation() {
  Pool &p = pool();
  std::lock_guard<std::mutex> lk(p.mu);
  return p.generation;
}

void count_connect() { pool().connects++; }

void count_reuse() { pool().reuses++; }

void count_discard() { pool().discarded++; }

Counters counters() {
  Pool &p = pool();
  return Counters{p.connects.load(), p.reuses.load(), p.discarded.load()};
}

}  // namespace mc::control_pool
