// The same-host server of a target (shm and nvlink): an abstract Unix socket whose admitted
// connections are all served by ONE thread (epoll), whatever the number of peers.
//
// A connection first runs the admission (proto/unix_msg.h: unix_admit, the HMAC handshake when
// there is a token) on a short-lived handshake thread: at most wire::kMaxPending at a time, each
// bounded by min(timeout_ms, kHandshakeMs) per message, so a silent or hostile client never
// holds the serving thread. Once admitted it gets the admission reply (the transport's hello and
// its control page's fd) and joins the serving loop, which reads one request at a time and
// answers it through the transport's handler. An idle connection costs a descriptor and an
// epoll entry, no thread (shm keeps one idle per initiator: its WATCH connection).
//
// The serving thread holds the control page's `alive` mutex for as long as it runs (see
// ctrl_page.h), and closes every connection when it ends: initiators see the target gone.
#pragma once
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "util/net.h"
#include "util/status.h"

namespace mc::samehost {

class UnixServer {
 public:
  struct Options {
    std::string tag;   // "shm", "nvlink": starts log lines
    std::string name;  // the abstract socket's name (without the leading NUL)
    std::string token;
    uint64_t incarnation = 0;
    uint32_t timeout_ms = 5000;
    uint32_t max_msg = 1u << 20;
  };
  // One request of an admitted connection: sets *reply (left empty: nothing is sent) and *fd (a
  // descriptor to pass with the reply; the server closes it after sending). false: close the
  // connection after the reply. Runs on the serving thread; must not block for long.
  using Handler = std::function<bool(const std::string &req, std::string *reply, Fd *fd)>;

  UnixServer() = default;
  UnixServer(const UnixServer &) = delete;
  UnixServer &operator=(const UnixServer &) = delete;
  ~UnixServer() { stop(); }
  // Listens and starts serving. hello is sent to each admitted connection with hello_fd (which
  // the caller keeps open until stop()); alive (may be null) is held while the loop runs.
  Status start(const Options &o, std::string hello, int hello_fd, Handler h, pthread_mutex_t *alive);
  // Ends the loop and every connection; waits for handshakes in progress (they are cut short).
  void stop();
  // Connections refused by the admission (auth_token), and dropped over the pending cap.
  std::atomic<uint64_t> hs_denied{0}, hs_dropped{0};

 private:
  void loop();
  void accept_ready();
  void handshake(int fd, std::shared_ptr<std::atomic<bool>> done);
  // Reads and answers one request; false when the connection is to close.
  bool serve_one(int fd);
  // Takes fd out of the loop; the loop closes it after the current batch of events.
  void drop(int fd, std::vector<int> *closing);

  Options o_;
  std::string hello_;
  int hello_fd_ = -1;
  Handler handler_;
  pthread_mutex_t *alive_ = nullptr;
  Fd listen_, epoll_, wake_;
  std::thread loop_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint32_t> pending_{0};
  // mu_ guards conns_, shakes_ and shaking_ (handshake threads and their sockets).
  std::mutex mu_;
  std::set<int> conns_;  // admitted, in the epoll set
  struct Shake {
    std::thread t;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Shake> shakes_;
  std::set<int> shaking_;
};

}  // namespace mc::samehost
