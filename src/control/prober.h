// Persistent admitted control connections, one per peer address, that tell the health monitor
// (engine/health.h) a peer is alive without a thread or a wake-up per peer.
//
// Two ways per connection. Watched (the default once a period is set): the connection sends
// WATCH once and the peer sends a BEAT every period (proto/wire.h, Heartbeats). A BEAT does not
// wake anyone: collect() looks at every watched connection at once with one epoll_wait that does
// not block (edge-triggered: a connection shows up once per arrival since the last look), and
// reads a connection's BEATs only now and then to check them and keep its buffer short. Only the
// end of a watched connection wakes wait(). Pinged (peers that answered WATCH with an ERROR:
// older engines): a PING goes out with one non-blocking send and its PONG wakes wait().
// Anything unexpected on a kept connection (its end, an RST, an ERROR, bytes nobody asked for)
// closes it: the caller then probes the slow way on a fresh connection, which tells a dead peer
// (refused) from one that only dropped this connection.
//
// Not thread-safe: the caller serializes every call except wait() and wake(), which only touch
// the epoll and the wake eventfd and may run beside the others.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "util/net.h"

namespace mc {

class Prober {
 public:
  Prober();
  ~Prober();
  Prober(const Prober &) = delete;
  Prober &operator=(const Prober &) = delete;
  bool ok() const { return ep_.valid() && beats_ep_.valid() && wake_.valid(); }
  // The BEAT period to ask for on connections adopted from now on (0: PINGs only). Set before
  // the first adopt().
  void set_period(uint64_t ms) { period_ms_ = ms; }

  // Waits up to timeout_ms (-1: no limit) for a PONG or the end of a kept connection; their ids
  // go to *ids (0 stands for wake()). Touches no connection.
  void wait(int timeout_ms, std::vector<uint64_t> *ids);
  // Ends a wait() now, from any thread.
  void wake();

  // Keeps fd, admitted to the peer at key, in place of any connection already kept there, and
  // sends WATCH on it (unless that peer does not know WATCH). now: when.
  void adopt(const std::string &key, Fd fd, uint64_t now);
  bool has(const std::string &key) const { return by_key_.count(key) != 0; }
  bool watched(const std::string &key) const;
  // Sends a PING on key's connection unless one is already unanswered there, or the connection
  // is watched (nothing to send). false: none kept, or the send failed (the connection is closed).
  bool ping(const std::string &key, uint64_t now);
  // When key's connection was last heard from (a PONG, or a BEAT seen by collect(); 0: not yet)
  // and the incarnation it carried.
  uint64_t last_pong_ms(const std::string &key, uint64_t *incarnation) const;
  // Every watched connection with BEATs since the last look: (key, incarnation) to *beaten,
  // heard from now; those found ended or sending something else: (key, why) to *ended, closed.
  void collect(uint64_t now, std::vector<std::pair<std::string, uint64_t>> *beaten,
               std::vector<std::pair<std::string, std::string>> *ended);
  // Connections silent too long, closed, their keys returned with the time since which they
  // were silent: a pinged one whose PING is unanswered since before `before`, a watched one
  // whose BEAT was due (last heard + period) before `before`. The earliest such time still ahead
  // goes to *next (0: none), when expire() has something to do next.
  std::vector<std::pair<std::string, uint64_t>> expire(uint64_t before, uint64_t *next);

  enum class Got { kNothing, kPong, kEnded };
  // Reads what arrived on connection id (one wait() named). kPong: *incarnation set; kEnded:
  // the connection ended or sent something other than what was awaited (closed here, *why says
  // which). *key names it either way; an id no longer kept gives kNothing.
  Got read(uint64_t id, std::string *key, uint64_t *incarnation, std::string *why, uint64_t now);
  void close(const std::string &key);
  // Hands key's connection back to the control pool (control/pool.h) for the next call there;
  // a watched one is closed instead (it carries BEATs now).
  void release(const std::string &key);
  void clear();  // closes every kept connection
  size_t size() const { return by_key_.size(); }
  uint64_t pings_sent() const { return pings_; }
  uint64_t beats_seen() const { return beats_; }
  size_t watching() const { return watched_; }

 private:
  struct Conn {
    std::string key;
    Fd fd;
    bool watched = false;    // WATCH sent: BEATs come without asking
    bool confirmed = false;  // a BEAT was read back (the peer knows WATCH)
    uint64_t watch_id = 0;   // the WATCH's id, echoed by every BEAT
    uint64_t unread = 0;     // arrivals collect() saw since the last read
    uint64_t sent_ms = 0;    // pinged: the unanswered PING's send time (0: none)
    uint64_t pong_ms = 0;    // last heard from (PONG or BEAT); watched: the WATCH's time at first
    uint64_t incarnation = 0;
    uint64_t generation = 0;                  // the pool's when adopted: a clear() since then closes it
    size_t have = 0;                          // bytes of a header read so far
    unsigned char buf[sizeof(uint64_t) * 5];  // one wire header (40 bytes)
  };
  enum class Drained { kOpen, kEnded };
  Drained drain(Conn &c, std::string *why);
  bool take_header(Conn &c, std::string *why);
  void end(Conn &c, std::vector<std::pair<std::string, std::string>> *ended, const std::string &why);
  Conn *find(const std::string &key);
  Fd ep_, beats_ep_, wake_;
  uint64_t period_ms_ = 0;
  uint64_t next_id_ = 1;
  uint64_t pings_ = 0, beats_ = 0;
  size_t watched_ = 0;                      // kept connections that are watched
  std::map<uint64_t, Conn> conns_;          // by id (never reused: a stale epoll event finds nothing)
  std::map<std::string, uint64_t> by_key_;  // key -> id
  std::set<std::string> no_watch_;          // peers that answered WATCH with an ERROR: pinged
  // (send time, id) of every PING sent, in send order: expire() looks at the front only, so a
  // thousand kept connections cost nothing while they answer. Stale entries (answered, closed)
  // are dropped when they reach the front.
  std::deque<std::pair<uint64_t, uint64_t>> sent_;
};

}  // namespace mc
