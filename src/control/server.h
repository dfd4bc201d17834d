// The control server: answers GET_DESC, PING and CONTROL on admitted connections (proto/wire.h).
// It parses and answers; the listener (control/listener.h) owns the sockets and threads.
#pragma once
#include <cstdint>
#include <string>

#include "proto/wire.h"
#include "util/status.h"

namespace mc::control {

// What the engine gives the control server (the engine implements it beside transport/host.h;
// the same names and meanings as there).
class Target {
 public:
  virtual ~Target() = default;
  virtual uint64_t incarnation() const = 0;
  // Waits (bounded) until the engine finished starting; false when it did not or is going away.
  virtual bool wait_started() = 0;
  virtual std::string descriptor_json() = 0;
  virtual std::string descriptor_delta_json(uint64_t incarnation, uint64_t since) = 0;
  virtual Status control(const std::string &channel, const std::string &request, std::string *reply) = 0;
};

// The first message buffered in `in` (bytes read from an admitted connection):
enum class Next {
  kNeedMore,  // not whole yet
  kControl,   // a whole control message (HELLO, GET_DESC, PING, WATCH or CONTROL)
  kData,      // the header of a data message (BIND, READ, WRITE): the connection is a data one
  kBad,       // cannot be served (bad magic or version, oversized, unknown type)
};
Next scan(const std::string &in);

// One admitted connection's state between its messages.
struct Session {
  bool started = false;   // wait_started() returned true on it
  uint64_t watch_ms = 0;  // a WATCH's period (clamped): the listener sends BEATs from now on
  uint64_t watch_id = 0;  // the WATCH's id, echoed in every BEAT
};

// Serves the whole control messages at the front of `in` (consuming them) and appends the
// replies to `out`. Stops at a data message (returns kData, the header left in `in`), at an
// incomplete one (kNeedMore) or at one that ends the connection (kBad: an ERROR is in `out`,
// then close). Blocks only in Target calls (wait_started, a transport's control handler).
Next serve(Target &t, Session &s, std::string &in, std::string &out);

// An ERROR message carrying `why` (the peer reads it before the connection closes).
void put_error(std::string &out, const std::string &why, mc_status_t code);

}  // namespace mc::control
