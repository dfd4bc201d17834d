// One initiator copy's active window on a target's control page (ctrl_page.h), as an object:
// opened by the constructor, closed by the destructor (or moved along with an asynchronous
// copy until its completion), so no path out of a copy leaves `active` raised.
#pragma once
#include <atomic>
#include <cstdint>
#include <utility>

#include "transport/samehost/ctrl_page.h"

namespace mc::samehost {

class EpochWindow {
 public:
  EpochWindow() = default;
  explicit EpochWindow(CtrlPage *p) : p_(p) { p_->active.fetch_add(1, std::memory_order_seq_cst); }
  EpochWindow(EpochWindow &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  EpochWindow &operator=(EpochWindow &&o) noexcept {
    if (this != &o) {
      close();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  EpochWindow(const EpochWindow &) = delete;
  EpochWindow &operator=(const EpochWindow &) = delete;
  ~EpochWindow() { close(); }
  // Whether the target's epoch is still the one a buffer list was read at: if not, the list
  // may name memory that is gone, and nothing may be copied under this window.
  bool current(uint64_t epoch) const { return p_ && p_->epoch.load(std::memory_order_seq_cst) == epoch; }
  bool open() const { return p_ != nullptr; }
  void close() {
    if (p_) p_->active.fetch_sub(1, std::memory_order_seq_cst);
    p_ = nullptr;
  }

 private:
  CtrlPage *p_ = nullptr;
};

}  // namespace mc::samehost
