// The initiator's request connection to one same-host target (shm and nvlink): connect, the
// admission (proto/unix_msg.h: unix_hello), then one request and its reply at a time.
//
// Every reply's descriptor is owned here until it is handed out: a refusal ("ERR ...") that
// came with one has it closed, never leaked, and the caller only ever gets an Fd.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>

#include "util/net.h"
#include "util/status.h"

namespace mc::samehost {

class PeerConn {
 public:
  // who starts every message about this target ("same-host peer NAME").
  PeerConn(std::string who, uint32_t max_msg) : who_(std::move(who)), max_msg_(max_msg) {}
  // Connects to the abstract socket (I/O timeout timeout_ms) and runs the admission; *hello and
  // *hello_fd get the target's admission reply. MC_ERR_DENIED when the target refused us.
  Status open(const std::string &socket, const std::string &token, uint64_t incarnation, uint32_t timeout_ms,
              std::string *hello, Fd *hello_fd);
  // Sends req and reads its reply (*fd, if not null, gets the descriptor that came with it).
  // "ERR DENIED <why>" is MC_ERR_DENIED, any other "ERR <why>" MC_ERR_TRANSPORT, a closed or
  // timed-out socket MC_ERR_PEER_DOWN. Thread-safe: requests take turns.
  Status request(const std::string &req, std::string *reply, Fd *fd);
  // Sends one message that has no reply (WATCH).
  bool post(const std::string &msg);
  int fd() const { return sock_.get(); }
  const std::string &who() const { return who_; }

 private:
  std::string who_;
  uint32_t max_msg_;
  std::mutex mu_;  // guards the socket's request/reply turns
  Fd sock_;
};

}  // namespace mc::samehost
