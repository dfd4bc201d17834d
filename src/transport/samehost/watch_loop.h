// One thread that watches the idle WATCH connections of every same-host peer of a transport
// (epoll): a connection that hangs up means the target engine or its process went away, and
// its callback runs at once, on this thread. Replaces a watcher thread per peer.
//
// Shared by the transport and its peers (shared_ptr), so a peer that outlives its transport
// still unwatches safely; the thread ends with the last owner.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "util/net.h"
#include "util/status.h"

namespace mc::samehost {

class WatchLoop {
 public:
  // nullptr with *st set when epoll or the thread cannot be had.
  static std::shared_ptr<WatchLoop> create(Status *st);
  WatchLoop(const WatchLoop &) = delete;
  WatchLoop &operator=(const WatchLoop &) = delete;
  ~WatchLoop();
  // Calls on_close once, on the loop's thread, when fd hangs up or fails. The caller keeps fd
  // open until unwatch(*id) returned. Returns false (errno kept) when epoll refuses it.
  bool watch(int fd, std::function<void()> on_close, uint64_t *id);
  // After it returns, id's callback neither runs nor will (from inside that very callback it
  // only forgets it). Unknown or fired ids are fine.
  void unwatch(uint64_t id);
  size_t watched() const;

 private:
  WatchLoop() = default;
  void loop();

  Fd epoll_, wake_;
  std::thread thread_;
  // mu_ guards cbs_, next_ and running_; cv_ signals the end of a callback.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Entry {
    int fd;
    std::function<void()> fn;
  };
  std::map<uint64_t, Entry> cbs_;
  uint64_t next_ = 1;
  uint64_t running_ = 0;  // the id whose callback runs now, 0 if none
  bool stop_ = false;
};

}  // namespace mc::samehost
