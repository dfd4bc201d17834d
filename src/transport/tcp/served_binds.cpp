#include "transport/tcp/served_binds.h"

#include <sys/socket.h>

namespace mc::tcp {

Status ServedBinds::fence(const Key &key, const std::vector<uint64_t> &dead) {
  std::lock_guard<std::mutex> lk(mu_);
  if (fenced_.count(key))
    return Err(MC_ERR_PEER_DOWN, "came after a newer connection of the same engine ended it");
  for (uint64_t d : dead) {
    Key k{key.first, d};
    auto it = bound_.find(k);
    if (it != bound_.end()) {
      ::shutdown(it->second, SHUT_RDWR);  // its fd stays open until it unbinds
      fenced_count++;
    }
    if (fenced_.insert(k).second) {
      fenced_order_.push_back(k);
      if (fenced_order_.size() > kMaxFenced) {
        fenced_.erase(fenced_order_.front());
        fenced_order_.pop_front();
      }
    }
  }
  return Status::Ok();
}

bool ServedBinds::try_bind(const Key &key, const std::vector<uint64_t> &dead, int fd,
                           std::function<void()> wake) {
  std::lock_guard<std::mutex> lk(mu_);
  for (uint64_t d : dead)
    if (bound_.count({key.first, d})) {
      waiters_[key] = std::move(wake);
      return false;
    }
  waiters_.erase(key);
  bound_[key] = fd;
  return true;
}

void ServedBinds::unbind(const Key &key) {
  std::map<Key, std::function<void()>> wake;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!bound_.erase(key)) return;
    wake.swap(waiters_);
  }
  for (auto &kv : wake) kv.second();  // each tries again on its own loop
}

void ServedBinds::forget_waiter(const Key &key) {
  std::lock_guard<std::mutex> lk(mu_);
  waiters_.erase(key);
}

}  // namespace mc::tcp
