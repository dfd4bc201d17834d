// A fixed set of event-loop threads for the TCP transport: each owns an epoll instance, runs the
// functions posted to it in order, dispatches socket readiness to the handlers registered with
// it and calls on_tick() every kTickMs of the handlers that asked for ticks (the progress and
// handshake deadlines of connections with work). An idle connection costs no tick, so an idle
// engine's loops wake kTickMs apart whatever the number of peers, and touch nothing per peer.
// The number of loops is fixed by configuration (tcp_io_threads), never by the number of peers.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "util/net.h"

namespace mc::tcp {

// A socket served by a loop. Its methods run on that loop's thread only.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  virtual void on_events(uint32_t events) = 0;  // EPOLLIN / EPOLLOUT / EPOLLERR / EPOLLHUP
  virtual void on_tick(uint64_t now_ms) = 0;
  // The loop is stopping with the handler still registered: end everything now.
  virtual void on_stop() = 0;
};

class IoLoop {
 public:
  static constexpr uint64_t kTickMs = 50;
  IoLoop() = default;
  ~IoLoop() { stop(); }
  IoLoop(const IoLoop &) = delete;
  IoLoop &operator=(const IoLoop &) = delete;

  Status start(const std::string &name);
  // Runs the functions already posted, calls on_stop() of every handler still registered and
  // joins the thread. Later posts are refused.
  void stop();
  // Runs fn on the loop thread, in posting order. False (fn dropped) once the loop stopped.
  bool post(std::function<void()> fn);
  bool on_loop_thread() const { return std::this_thread::get_id() == tid_.load(); }

  // Loop thread only. The loop keeps h alive while it is registered.
  bool add(int fd, uint32_t events, std::shared_ptr<IoHandler> h);
  void modify(int fd, uint32_t events, IoHandler *h);
  // Forgets fd (the caller closes it). h stays alive until the current dispatch round ends.
  void remove(int fd, IoHandler *h);
  // Whether h's on_tick() is called (a handler added is ticked until it says otherwise).
  void set_ticking(IoHandler *h, bool on);
  size_t handlers() const { return live_.size(); }
  // Rounds of the loop so far (one per epoll_wait), from any thread: an idle loop adds none.
  uint64_t rounds() const { return rounds_.load(std::memory_order_relaxed); }

 private:
  void run();
  void run_posted(bool woken);
  void tick();

  Fd ep_, wake_;
  std::thread th_;
  std::atomic<std::thread::id> tid_{};
  std::mutex mu_;  // guards posted_ and stopped_
  std::vector<std::function<void()>> posted_;
  bool stopped_ = false;
  std::atomic<bool> quit_{false};
  // Loop thread only: registered handlers, and removed ones kept until the round ends.
  std::unordered_map<IoHandler *, std::shared_ptr<IoHandler>> live_;
  std::unordered_set<IoHandler *> ticking_;  // a subset of live_
  std::vector<std::shared_ptr<IoHandler>> graveyard_;
  uint64_t next_tick_ = 0;
  std::atomic<uint64_t> rounds_{0};
};

}  // namespace mc::tcp
