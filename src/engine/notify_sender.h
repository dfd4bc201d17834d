// The sending side of notifications: NOTIFY requests wait in one FIFO per destination engine
// and go out, one at a time per destination, once every earlier request of their batch ended.
#pragma once
#include <mc.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mc {

class BatchCore;
struct RequestSlot;
struct Peer;

struct NotifyJob {
  RequestSlot *slot = nullptr;
  BatchCore *batch = nullptr;
  size_t index = 0;    // the NOTIFY's index in its batch: requests [0, index) go first
  size_t scanned = 0;  // requests [0, scanned) of the batch are known to have COMPLETED
  std::shared_ptr<Peer> peer;
  std::string addr;         // the peer's control address (HOST:PORT) from its descriptor
  uint64_t target_inc = 0;  // the peer's incarnation in that descriptor
  std::string body;         // the message, copied at submit
};

class NotifySender {
 public:
  // send: delivers one job (blocking, bounded by the engine's timeout) and returns its status.
  // finish: ends the job's request with a status (the engine's completion path).
  using Send = std::function<mc_status_t(NotifyJob &)>;
  using Finish = std::function<void(NotifyJob &, mc_status_t)>;
  NotifySender(Send send, Finish finish);
  ~NotifySender() { stop(); }

  // Queues jobs in submit order (called under the batch's submit lock, so the FIFO order is
  // the order of submits). Never blocks on the network.
  void enqueue(std::vector<NotifyJob> jobs);
  // Something a waiting job may depend on changed (a request ended, a batch was canceled).
  void poke() {
    if (!poked_.exchange(true, std::memory_order_acq_rel)) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_.notify_one();
    }
  }
  // Joins the thread and fails every job not sent with MC_ERR_PEER_DOWN (idempotent).
  void stop();

  uint64_t sent() const { return sent_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  void run();
  // One pass over every FIFO: drops doomed jobs, sends ready heads. Returns whether anything
  // ended (another pass may find more ready).
  bool pass();
  // 1: every predecessor COMPLETED; 0: some still pending; < 0: the job must fail with that.
  static int ready(NotifyJob &j);
  void end(NotifyJob &j, mc_status_t st);

  Send send_;
  Finish finish_;
  std::mutex mu_;  // guards fifos_ and stop_; never held while a job is sent or finished
  std::condition_variable cv_;
  std::map<std::string, std::deque<NotifyJob>> fifos_;  // by destination engine name
  bool stop_ = false;
  std::atomic<bool> poked_{false};
  std::atomic<uint64_t> sent_{0}, failed_{0};
  std::thread thread_;
};

}  // namespace mc
