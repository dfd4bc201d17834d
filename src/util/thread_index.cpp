// thread_index() (thread_sums.h): a dense index for each live thread, handed on after the thread ends.
#include <cstdint>
#include <mutex>
#include <vector>

#include "util/thread_sums.h"

namespace mc {
namespace {

struct Indexes {
  std::mutex mu;
  uint32_t next = 0;
  std::vector<uint32_t> free;
};

// Never destroyed: threads may end after static destructors ran.
Indexes &indexes() {
  static Indexes *ix = new Indexes;
  return *ix;
}

// t_thread_index of a thread whose index went back (thread_sums.h).
constexpr uint32_t kEnded = UINT32_MAX;

// Gives the index back when its thread ends.
struct Release {
  uint32_t idx = 0;
  bool held = false;
  ~Release() {
    if (!held) return;
    Indexes &ix = indexes();
    std::lock_guard<std::mutex> lk(ix.mu);
    ix.free.push_back(idx);
    detail::t_thread_index = kEnded;
  }
};

uint32_t assign() {
  static thread_local Release rel;
  Indexes &ix = indexes();
  uint32_t idx;
  {
    std::lock_guard<std::mutex> lk(ix.mu);
    if (!ix.free.empty()) {
      idx = ix.free.back();
      ix.free.pop_back();
    } else {
      idx = ix.next++;
    }
  }
  rel.idx = idx;
  rel.held = true;
  detail::t_thread_index = idx + 1;
  return idx;
}

}  // namespace

namespace detail {

constinit thread_local uint32_t t_thread_index = 0;

uint32_t assign_thread_index() { return assign(); }

}  // namespace detail

}  // namespace mc
