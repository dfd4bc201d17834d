// The health monitor: a fixed set of threads that probe every open segment's peer when its
// probe is due, so an engine with a thousand open segments runs the same few threads as one
// with ten (the costs of a peer are an entry here, not a thread).
//
// Two ways to probe. The batched way (when a Batch is given): one thread keeps an admitted
// connection per peer address (control/prober.h) on which the peer sends a BEAT every
// heartbeat (WATCH; a peer older than that is sent PINGs instead), and looks at all of them at
// once when a peer is due: a BEAT with the known incarnation is all a healthy peer costs, and
// it wakes no thread here. Everything else goes the slow way: a probe step (Probe) on one of the worker
// threads: one ping attempt on a pooled or fresh connection, at most a few hundred ms, plus a
// descriptor refresh when the peer came back as someone new. A peer goes the slow way when it
// is new, not OK, kicked (a transfer to it failed), when its PING stays unanswered for
// answer_ms, and at once when its kept connection ends (a killed peer process), so a dead
// peer is seen by its refused connect rather than by a missed PONG. A slow step that got an
// answer hands its connection back here to be kept.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "util/net.h"

namespace mc {

struct Peer;

class HealthMonitor {
 public:
  // What a slow step gets and gives back.
  struct Step {
    uint64_t silent_since_ms = 0;  // in: a batched PING to the peer unanswered since then (0: none)
    Fd conn;                       // out: the admitted connection a ping was answered on, to keep
    HostPort addr;                 // out: where conn leads
  };
  // Runs one probe step of a peer; returns the delay in ms until its next step.
  using Probe = std::function<uint64_t(const std::shared_ptr<Peer> &, Step *)>;
  // Whether the batched way may check the peer now (it is OK), and where and as whom.
  using Target = std::function<bool(const std::shared_ptr<Peer> &, HostPort *addr, uint64_t *incarnation)>;
  struct Batch {
    std::string token;      // this engine's auth_token: connections are kept per (address, token)
    uint64_t heartbeat_ms;  // a healthy peer's BEAT (or PING) period
    uint64_t answer_ms;     // a PING unanswered (a BEAT late) this long goes the slow way
    Target target;
  };
  struct Counters {
    uint64_t batched_pings;  // PINGs sent on kept connections
    uint64_t slow_steps;     // probe steps run on the worker threads
    uint64_t ended;          // kept connections that ended or broke
    uint64_t kept;           // kept connections now
    uint64_t beats;          // BEATs seen on watched connections
    uint64_t watched;        // kept connections watched now (the others are pinged)
  };
  // What a peer keeps to ask for a probe now; safe to use after the monitor stopped.
  class Handle;

  // Without a Batch every probe goes the slow way.
  HealthMonitor(size_t threads, Probe probe, const Batch *batch = nullptr);
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor &) = delete;
  HealthMonitor &operator=(const HealthMonitor &) = delete;

  // Starts probing p, first after delay_ms; p is dropped once no one else holds it.
  void watch(const std::shared_ptr<Peer> &p, uint64_t delay_ms);
  std::weak_ptr<Handle> handle() const;
  // Stops the threads (waits for running probes), forgets every peer and closes the kept
  // connections. Idempotent.
  void stop();
  size_t watched() const;
  Counters counters() const;

 private:
  struct Shared;
  void pinger();
  void worker();
  std::shared_ptr<Shared> s_;
  std::shared_ptr<Handle> handle_;
  std::vector<std::thread> threads_;
};

class HealthMonitor::Handle {
 public:
  explicit Handle(std::weak_ptr<HealthMonitor::Shared> s) : s_(std::move(s)) {}
  // The peer's next probe is due now, the slow way (a transfer to it failed).
  void kick(const Peer *p);

 private:
  std::weak_ptr<HealthMonitor::Shared> s_;
};

}  // namespace mc
