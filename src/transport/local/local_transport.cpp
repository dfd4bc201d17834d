#include "transport/local/local_transport.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "util/json_writer.h"
#include "util/log.h"
#include "util/thread_sums.h"

namespace mc {
namespace {

constexpr uint64_t kInline = 64 * 1024;  // slices up to this size are copied by the submitter

class LocalPeer : public PeerPath {};

class LocalTransport : public Transport {
 public:
  LocalTransport(Host *t, uint32_t workers) : target_(t) {
    for (uint32_t i = 0; i < workers; i++) threads_.emplace_back([this] { run(); });
  }
  ~LocalTransport() override { shutdown(); }
  const char *name() const override { return "local"; }
  std::shared_ptr<PeerPath> connect(const Descriptor &) override { return std::make_shared<LocalPeer>(); }

  void submit(PeerPath &, Slice *s, size_t n) override {
    std::unique_lock<std::mutex> lk(mu_, std::defer_lock);
    for (size_t i = 0; i < n; i++) {
      if (s[i].len <= kInline) {
        copy(s[i]);
        continue;
      }
      if (!lk.owns_lock()) lk.lock();
      if (stopping_) {
        target_->complete(s[i], MC_ERR_PEER_DOWN);
        continue;
      }
      queue_.push_back(s[i]);
    }
    if (lk.owns_lock()) cv_.notify_all();
  }

  // One small request on the calling thread: copy() without the Slice and its completion.
  bool copy_now(PeerPath &, uint32_t op, void *local, uint64_t remote, uint64_t len,
                mc_status_t *st) override {
    mc_status_t ps = target_->copy_registered(remote, len, op, local);
    if (ps != MC_OK) {
      sums_.add(kFailed, 1);
      *st = (ps == MC_ERR_DENIED || ps == MC_ERR_OUT_OF_RANGE) ? ps : MC_ERR_TRANSPORT;
      return true;
    }
    sums_.add(kBytes, len);
    sums_.add(kOk, 1);
    *st = MC_OK;
    return true;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_ && threads_.empty()) return;
      stopping_ = true;
      cv_.notify_all();
    }
    for (auto &t : threads_) t.join();
    threads_.clear();
    std::deque<Slice> q;
    {
      std::lock_guard<std::mutex> lk(mu_);
      q.swap(queue_);
    }
    for (auto &s : q) target_->complete(s, MC_ERR_PEER_DOWN);
  }

  std::string stats_json() override {
    JsonObject o;
    o.num("bytes_copied", sums_.sum(kBytes));
    o.num("slices_completed", sums_.sum(kOk));
    o.num("slices_failed", sums_.sum(kFailed));
    return o.done();
  }

 private:
  void copy(const Slice &s) {
    if (target_->canceled(s)) {
      sums_.add(kFailed, 1);
      target_->complete(s, MC_ERR_CANCELED);
      return;
    }
    // The "remote" side is our own registered memory: same checks a peer's request gets.
    mc_status_t st = target_->pin(s.remote, s.len, s.op);
    if (st != MC_OK) {
      sums_.add(kFailed, 1);
      target_->complete(s, (st == MC_ERR_DENIED || st == MC_ERR_OUT_OF_RANGE) ? st : MC_ERR_TRANSPORT);
      return;
    }
    void *remote = reinterpret_cast<void *>(s.remote);
    if (s.op == MC_WRITE)
      std::memmove(remote, s.local, s.len);
    else
      std::memmove(s.local, remote, s.len);
    target_->unpin(s.remote, s.len);
    sums_.add(kBytes, s.len);
    sums_.add(kOk, 1);
    target_->complete(s, MC_OK);
  }

  void run() {
    for (;;) {
      Slice s;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        s = queue_.front();
        queue_.pop_front();
      }
      copy(s);
    }
  }

  Host *target_;
  std::vector<std::thread> threads_;
  std::mutex mu_;  // guards queue_ and stopping_
  std::condition_variable cv_;
  std::deque<Slice> queue_;
  bool stopping_ = false;
  enum : size_t { kBytes, kOk, kFailed };
  ThreadSums<3> sums_;  // bytes copied, slices completed, slices failed
};

}  // namespace

std::unique_ptr<Transport> make_local_transport(Host *target, uint32_t workers) {
  return std::make_unique<LocalTransport>(target, workers);
}

}  // namespace mc
