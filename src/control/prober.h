// Persistent admitted control connections, one per peer address, on which PINGs are sent
// without waiting for their PONG and whose replies (or ends) are collected with one epoll for
// all: the health monitor's batched probes (engine/health.h). Connections come in admitted
// (control_ping_keep in control/client.h); a failure on one closes it and says so, and the
// caller goes back to a fresh connection.
//
// Not thread-safe: the caller serializes every call except wait() and wake(), which only touch
// the epoll and the wake eventfd and may run beside the others.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "util/net.h"

namespace mc {

class Prober {
 public:
  Prober();
  ~Prober();
  Prober(const Prober &) = delete;
  Prober &operator=(const Prober &) = delete;
  bool ok() const { return ep_.valid() && wake_.valid(); }

  // Waits up to timeout_ms (-1: no limit) for connections with something to read; their ids go
  // to *ids (0 stands for wake()). Touches no connection.
  void wait(int timeout_ms, std::vector<uint64_t> *ids);
  // Ends a wait() now, from any thread.
  void wake();

  // Keeps fd, admitted to the peer at key, in place of any connection already kept there.
  void adopt(const std::string &key, Fd fd);
  bool has(const std::string &key) const { return by_key_.count(key) != 0; }
  // Sends a PING on key's connection unless one is already unanswered there. false: none kept,
  // or the send failed (the connection is closed).
  bool ping(const std::string &key, uint64_t now);
  // The connection's last PONG: when it came (0: none yet) and the incarnation it carried.
  uint64_t last_pong_ms(const std::string &key, uint64_t *incarnation) const;
  // Connections whose PING is unanswered since before `before`: closed, their keys and send
  // times returned. The earliest send time still unanswered goes to *oldest (0: none).
  std::vector<std::pair<std::string, uint64_t>> expire(uint64_t before, uint64_t *oldest);

  enum class Got { kNothing, kPong, kEnded };
  // Reads what arrived on connection id. kPong: *incarnation set; kEnded: the connection ended
  // or sent something other than a PONG (closed here, *why says which). *key names it either
  // way; an id no longer kept gives kNothing.
  Got read(uint64_t id, std::string *key, uint64_t *incarnation, std::string *why, uint64_t now);
  void close(const std::string &key);
  // Hands key's connection back to the control pool (control/pool.h) for the next call there.
  void release(const std::string &key);
  void clear();  // closes every kept connection
  size_t size() const { return by_key_.size(); }
  uint64_t pings_sent() const { return pings_; }

 private:
  struct Conn {
    std::string key;
    Fd fd;
    uint64_t sent_ms = 0;  // the unanswered PING's send time (0: none)
    uint64_t pong_ms = 0;
    uint64_t incarnation = 0;
    uint64_t generation = 0;                  // the pool's when adopted: a clear() since then closes it
    size_t have = 0;                          // bytes of a PONG header read so far
    unsigned char buf[sizeof(uint64_t) * 5];  // one wire header (40 bytes)
  };
  Fd ep_, wake_;
  uint64_t next_id_ = 1;
  uint64_t pings_ = 0;
  std::map<uint64_t, Conn> conns_;          // by id (never reused: a stale epoll event finds nothing)
  std::map<std::string, uint64_t> by_key_;  // key -> id
  // (send time, id) of every PING sent, in send order: expire() looks at the front only, so a
  // thousand kept connections cost nothing while they answer. Stale entries (answered, closed)
  // are dropped when they reach the front.
  std::deque<std::pair<uint64_t, uint64_t>> sent_;
};

}  // namespace mc
