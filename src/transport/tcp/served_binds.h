// The served side's record of BINDs (proto/wire.h, Fencing), shared by every served connection
// of the transport whatever loop serves it: which connections named themselves (by the
// initiator's nonce and their number) and which ones a later BIND ended. A BIND that must wait
// for the connections it names to end does not block its loop: it registers a wake-up, called
// when any bound connection ends, and tries again.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "util/status.h"

namespace mc::tcp {

class ServedBinds {
 public:
  using Key = std::pair<uint64_t, uint64_t>;  // (initiator's nonce, connection number)

  // A BIND of `key` naming `dead`: refused when a newer connection already ended key; else
  // shuts down every named connection still bound (its handler sees the end at its next read
  // or write) and remembers them all as fenced. Any thread.
  Status fence(const Key &key, const std::vector<uint64_t> &dead);
  // Records key -> fd once none of `dead` is bound any more (true). Else false, and `wake` is
  // called (once, from the thread that unbinds) when one of them ends: try again then.
  bool try_bind(const Key &key, const std::vector<uint64_t> &dead, int fd, std::function<void()> wake);
  // The connection of key ends: call before closing its fd.
  void unbind(const Key &key);
  // A waiting BIND gave up (timed out, or its connection ended).
  void forget_waiter(const Key &key);

  std::atomic<uint64_t> fenced_count{0};  // connections a BIND ended

 private:
  static constexpr size_t kMaxFenced = 4096;
  // mu_ guards bound_ (bound connections: their fd), fenced_ (connections a BIND named, refused
  // if they come later; the oldest forgotten past kMaxFenced) and waiters_.
  std::mutex mu_;
  std::map<Key, int> bound_;
  std::set<Key> fenced_;
  std::deque<Key> fenced_order_;
  std::map<Key, std::function<void()>> waiters_;
};

}  // namespace mc::tcp
