// The NOTIFY sender thread (see notify_sender.h).
#include "engine/notify_sender.h"

#include <vector>

#include "engine/engine.h"

namespace mc {

NotifySender::NotifySender(Send send, Finish finish) : send_(std::move(send)), finish_(std::move(finish)) {
  thread_ = std::thread([this] { run(); });
}

void NotifySender::enqueue(std::vector<NotifyJob> jobs) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!stop_) {
      for (auto &j : jobs) {
        j.batch->notify_waiting(1);
        fifos_[j.peer->name].push_back(std::move(j));
      }
      jobs.clear();
    }
  }
  for (auto &j : jobs) end(j, MC_ERR_PEER_DOWN);  // the engine is being destroyed
  poke();
}

int NotifySender::ready(NotifyJob &j) {
  if (j.batch->canceled()) return MC_ERR_CANCELED;
  for (; j.scanned < j.index; j.scanned++) {
    uint32_t s = j.batch->slot(j.scanned)->state.load(std::memory_order_acquire);
    if (s == MC_REQUEST_PENDING) return 0;
    if (s != MC_REQUEST_COMPLETED) return MC_ERR_CANCELED;
  }
  return 1;
}

void NotifySender::end(NotifyJob &j, mc_status_t st) {
  (st == MC_OK ? sent_ : failed_).fetch_add(1, std::memory_order_relaxed);
  finish_(j, st);
}

bool NotifySender::pass() {
  std::vector<std::pair<NotifyJob, mc_status_t>> doomed;
  std::vector<NotifyJob> heads;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto it = fifos_.begin(); it != fifos_.end();) {
      auto &q = it->second;
      // A job behind the head whose batch was canceled is never delivered: it ends now rather
      // than when it reaches the head (mc_batch_cancel waits for it).
      for (size_t k = 1; k < q.size();) {
        if (q[k].batch->canceled()) {
          q[k].batch->notify_waiting(-1);
          doomed.emplace_back(std::move(q[k]), MC_ERR_CANCELED);
          q.erase(q.begin() + static_cast<std::ptrdiff_t>(k));
        } else {
          k++;
        }
      }
      int r = q.empty() ? 0 : ready(q.front());
      if (r != 0) {
        q.front().batch->notify_waiting(-1);
        if (r < 0)
          doomed.emplace_back(std::move(q.front()), r);
        else
          heads.push_back(std::move(q.front()));
        q.pop_front();
      }
      it = q.empty() ? fifos_.erase(it) : std::next(it);
    }
  }
  for (auto &[j, st] : doomed) end(j, st);
  // One head per destination, sent in turn: the next job of a destination is looked at only
  // after its predecessor's send ended, which keeps each destination's order.
  for (auto &j : heads) end(j, send_(j));
  return !doomed.empty() || !heads.empty();
}

void NotifySender::run() {
  for (;;) {
    poked_.store(false, std::memory_order_release);
    bool progressed = pass();
    std::unique_lock<std::mutex> lk(mu_);
    if (stop_) return;
    if (progressed) continue;
    cv_.wait(lk, [&] { return stop_ || poked_.load(std::memory_order_acquire); });
    if (stop_) return;
  }
}

void NotifySender::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  std::map<std::string, std::deque<NotifyJob>> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    left.swap(fifos_);
  }
  for (auto &[name, q] : left)
    for (auto &j : q) {
      j.batch->notify_waiting(-1);
      end(j, MC_ERR_PEER_DOWN);
    }
}

}  // namespace mc
