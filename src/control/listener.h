// The engine's listener: one port for the control channel and the TCP data path. It accepts,
// runs every admission handshake (proto/auth.h) itself on non-blocking sockets, serves the
// control messages of admitted connections (control/server.h) and hands every connection whose
// first message is a data one (BIND, READ, WRITE) to the data handler (the TCP transport).
//
// Threads: one event loop (accept, handshakes, idle connections waiting for their next
// request) and a fixed pool of workers that answer whole requests, however many peers connect.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "control/server.h"
#include "util/net.h"
#include "util/status.h"

namespace mc::control {

struct ListenerOptions {
  HostPort listen;
  uint32_t timeout_ms = 5000;  // bounds a handshake (with wire::kHandshakeMs) and a reply's send
  std::string auth_token;      // "" for none
  uint32_t workers = 2;        // threads answering control requests
};

// Takes a data connection over: fd is admitted, O_NONBLOCK, and now owned by the handler;
// readahead holds the bytes already read from it, beginning at a message header. Must not block.
using DataHandler = std::function<void(Fd fd, std::string readahead)>;

class Listener {
 public:
  // Binds o.listen (the bound address goes to *bound) and starts serving. t must outlive
  // shutdown().
  static Status start(const ListenerOptions &o, Target *t, std::unique_ptr<Listener> *out, HostPort *bound);
  ~Listener();
  Listener(const Listener &) = delete;
  Listener &operator=(const Listener &) = delete;

  // Sets (or, with nullptr, removes) the data handler. Returns once no call to the previous
  // one is running. Without one, data connections are refused with a message saying so.
  void set_data_handler(DataHandler h);
  // Stops accepting, closes every connection it holds and joins its threads. Idempotent.
  void shutdown();
  // Its counters (and the process's control-client pool's) as a JSON object text.
  std::string stats_json();

  struct Impl;

 private:
  explicit Listener(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mc::control
