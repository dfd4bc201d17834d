#include "transport/file/file_fixed.h"

#include <sys/uio.h>

#include <mutex>

namespace mc::file {

namespace {
constexpr uint64_t kMaxFixed = 1ull << 30;
}

void FixedTable::attach(unsigned r, io_uring *ring) {
  std::unique_lock<std::shared_mutex> lk(mu_);
  if (rings_.size() <= r) rings_.resize(r + 1, nullptr);
  rings_[r] = ring;
  for (auto &[a, reg] : regions_) reg.state.resize(rings_.size(), 0);
}

void FixedTable::add(uint64_t addr, uint64_t len) {
  std::unique_lock<std::shared_mutex> lk(mu_);
  if (!init_) {
    for (int i = kSlots; i-- > 0;) free_.push_back(i);
    init_ = true;
  }
  Region reg{len, -1, std::vector<uint8_t>(rings_.size(), 0)};
  if (len <= kMaxFixed && !free_.empty()) {
    reg.idx = free_.back();
    free_.pop_back();
  }
  regions_[addr] = std::move(reg);
}

void FixedTable::remove(uint64_t addr) {
  std::unique_lock<std::shared_mutex> lk(mu_);
  auto it = regions_.find(addr);
  if (it == regions_.end()) return;
  Region &reg = it->second;
  if (reg.idx >= 0) {
    iovec none{nullptr, 0};  // an empty entry: the slot is free again in that ring
    for (size_t r = 0; r < reg.state.size() && r < rings_.size(); r++)
      if (reg.state[r] == 1 && rings_[r])
        io_uring_register_buffers_update_tag(rings_[r], static_cast<unsigned>(reg.idx), &none, nullptr, 1);
    free_.push_back(reg.idx);
  }
  regions_.erase(it);
}

int FixedTable::lookup(unsigned r, uint64_t p, uint64_t n) {
  std::shared_lock<std::shared_mutex> lk(mu_);
  auto it = regions_.upper_bound(p);
  if (it == regions_.begin()) return -1;
  --it;
  Region &reg = it->second;
  if (reg.idx < 0 || p + n > it->first + reg.len || r >= reg.state.size() || r >= rings_.size()) return -1;
  if (reg.state[r] == 0) {
    iovec v{reinterpret_cast<void *>(it->first), reg.len};
    reg.state[r] =
        io_uring_register_buffers_update_tag(rings_[r], static_cast<unsigned>(reg.idx), &v, nullptr, 1) == 1
            ? 1
            : 2;
  }
  return reg.state[r] == 1 ? reg.idx : -1;
}

}  // namespace mc::file
