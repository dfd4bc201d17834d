#include "transport/tcp/fences.h"

#include "proto/wire.h"
#include "util/log.h"

namespace mc::tcp {

void Fences::add(uint64_t seq, const std::string &peer) {
  std::lock_guard<std::mutex> lk(mu_);
  if (dead_.size() >= wire::kMaxFence) {
    MC_LOGW("tcp: " << dead_.size() << " broken connections to " << peer
                    << " not yet fenced; the oldest is no longer named");
    dead_.pop_front();
  }
  dead_.push_back(seq);
  epoch_++;
}

void Fences::snapshot(std::vector<uint64_t> *seqs, uint64_t *epoch_out) {
  std::lock_guard<std::mutex> lk(mu_);
  seqs->assign(dead_.begin(), dead_.end());
  *epoch_out = epoch_;
}

void Fences::confirmed(const std::vector<uint64_t> &seqs) {
  std::lock_guard<std::mutex> lk(mu_);
  for (uint64_t s : seqs)
    for (auto it = dead_.begin(); it != dead_.end(); ++it)
      if (*it == s) {
        dead_.erase(it);
        break;
      }
}

}  // namespace mc::tcp
