// The connections to one peer that broke with WRITEs unanswered, whose bytes may still be on the
// way (proto/wire.h, Fencing). Every connection opened later names them in its BIND; the peer
// ends them before serving it. epoch grows with each breakage: a connection opened before the
// latest one takes no new work.
#pragma once
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace mc::tcp {

class Fences {
 public:
  void add(uint64_t seq, const std::string &peer);
  // What a new connection carries and the epoch it was opened in, taken together.
  void snapshot(std::vector<uint64_t> *seqs, uint64_t *epoch_out);
  uint64_t current() {
    std::lock_guard<std::mutex> lk(mu_);
    return epoch_;
  }
  // The peer ended these (a reply came on the connection that named them).
  void confirmed(const std::vector<uint64_t> &seqs);

 private:
  std::mutex mu_;              // guards dead_ and epoch_
  std::deque<uint64_t> dead_;  // oldest first; at most wire::kMaxFence
  uint64_t epoch_ = 0;
};

}  // namespace mc::tcp
