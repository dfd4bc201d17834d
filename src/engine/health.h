// The health monitor: a fixed set of threads that probe every open segment's peer when its
// probe is due, so an engine with a thousand open segments runs the same few threads as one
// with ten (the costs of a peer are an entry here, not a thread).
//
// A probe is one bounded step (one ping attempt, at most a few hundred ms, plus a descriptor
// refresh when the peer came back as someone new); it returns when the peer's next probe is
// due. A peer that fails to answer is retried at once by the next free thread, so a silent
// peer never holds a thread for its whole peer_timeout_ms and never delays the others.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mc {

struct Peer;

class HealthMonitor {
 public:
  // Runs one probe step of a peer; returns the delay in ms until its next step.
  using Probe = std::function<uint64_t(const std::shared_ptr<Peer> &)>;
  // What a peer keeps to ask for a probe now; safe to use after the monitor stopped.
  class Handle;

  HealthMonitor(size_t threads, Probe probe);
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor &) = delete;
  HealthMonitor &operator=(const HealthMonitor &) = delete;

  // Starts probing p, first after delay_ms; p is dropped once no one else holds it.
  void watch(const std::shared_ptr<Peer> &p, uint64_t delay_ms);
  std::weak_ptr<Handle> handle() const;
  // Stops the threads (waits for running probes) and forgets every peer. Idempotent.
  void stop();
  size_t watched() const;

 private:
  struct Shared;
  void run();
  std::shared_ptr<Shared> s_;
  std::shared_ptr<Handle> handle_;
  std::vector<std::thread> threads_;
};

class HealthMonitor::Handle {
 public:
  explicit Handle(std::weak_ptr<HealthMonitor::Shared> s) : s_(std::move(s)) {}
  // The peer's next probe is due now (a transfer to it failed).
  void kick(const Peer *p);

 private:
  std::weak_ptr<HealthMonitor::Shared> s_;
};

}  // namespace mc
