#include "control/server.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "util/log.h"

namespace mc::control {
namespace {

wire::Header header_of(const std::string &in, size_t at = 0) {
  wire::Header h;
  std::memcpy(&h, in.data() + at, sizeof h);
  return h;
}

bool is_data(uint16_t type) { return type == wire::BIND || type == wire::READ || type == wire::WRITE; }

// Tests only: MC_TEST_NO_WATCH=1 makes this engine answer WATCH as an engine older than it does
// (ERROR, unknown message type), so a watcher's fallback to PINGs can be tested. Read once.
bool watch_known() {
  static const bool known = [] {
    const char *v = std::getenv("MC_TEST_NO_WATCH");
    return !(v && *v == '1');
  }();
  return known;
}

// Why a message that scan() called kBad cannot be served (the text the peer gets).
std::string bad_reason(const wire::Header &h) {
  if (h.magic != wire::kMagic) return "sent bytes that are not an mc message (bad magic)";
  if (h.version != wire::kVersion)
    return "speaks wire version " + std::to_string(h.version) + "; this engine speaks " +
           std::to_string(wire::kVersion);
  if (h.type == wire::CONTROL)
    return "sent a control payload of " + std::to_string(h.len) + " bytes (limit " +
           std::to_string(wire::kMaxControlPayload) + ")";
  return "sent an unknown message type " + std::to_string(h.type);
}

void put(std::string &out, const wire::Header &h, const std::string &body = "") {
  out.append(reinterpret_cast<const char *>(&h), sizeof h);
  out += body;
}

// One whole control message (its header h, its payload body); false ends the connection (the
// ERROR is in out).
bool answer(Target &t, Session &s, const wire::Header &h, const std::string &body, std::string &out) {
  if (h.type != wire::CONTROL && h.len != 0) {
    put_error(out,
              h.type == wire::HELLO ? "sent a HELLO with a payload" : "sent a control request with a payload",
              MC_ERR_TRANSPORT);
    return false;
  }
  if (s.watch_ms != 0) {
    put_error(out, "sent a request on a connection it watches", MC_ERR_TRANSPORT);
    return false;
  }
  if (h.type == wire::HELLO) {
    if (h.addr == 0 || h.addr == t.incarnation()) return true;
    put_error(out, "expected another incarnation of this engine (it restarted); refresh the segment",
              MC_ERR_PEER_DOWN);
    return false;
  }
  if (h.type == wire::PING) {
    put(out, wire::make(wire::PONG, h.id, t.incarnation(), 0));
    return true;
  }
  if (h.type == wire::WATCH) {  // the first BEAT answers it; the listener sends the others
    s.watch_ms = std::clamp<uint64_t>(h.addr, wire::kMinWatchMs, wire::kMaxWatchMs);
    s.watch_id = h.id;
    put(out, wire::make(wire::BEAT, h.id, t.incarnation(), 0));
    return true;
  }
  // A descriptor or control request needs the engine fully started (the listener runs during
  // start): waited for once per connection.
  if (!s.started && !(s.started = t.wait_started())) {
    put_error(out, "came in while this engine was starting or being destroyed", MC_ERR_PEER_DOWN);
    return false;
  }
  if (h.type == wire::GET_DESC) {
    // addr != 0: the peer knows version addr of incarnation id and takes a delta.
    std::string d = h.addr != 0 ? t.descriptor_delta_json(h.id, h.addr) : t.descriptor_json();
    put(out, wire::make(wire::DESC, h.id, t.incarnation(), d.size()), d);
    return true;
  }
  auto nul = body.find('\0');
  std::string reply;
  Status st = nul == std::string::npos ? Err(MC_ERR_INVALID_ARG, "control request without a channel name")
                                       : t.control(body.substr(0, nul), body.substr(nul + 1), &reply);
  if (!st.ok()) reply = st.message();
  put(out, wire::make(wire::CONTROL_REPLY, h.id, t.incarnation(), reply.size(), st.code()), reply);
  return true;
}

}  // namespace

// scan() of the message that begins at byte `at` of in.
static Next scan_at(const std::string &in, size_t at) {
  if (in.size() - at < sizeof(wire::Header)) return Next::kNeedMore;
  wire::Header h = header_of(in, at);
  if (h.magic != wire::kMagic || h.version != wire::kVersion) return Next::kBad;
  if (is_data(h.type)) return Next::kData;
  switch (h.type) {
    case wire::HELLO:
    case wire::GET_DESC:
    case wire::PING:
      return Next::kControl;
    case wire::WATCH:
      return watch_known() ? Next::kControl : Next::kBad;
    case wire::CONTROL:
      if (h.len > wire::kMaxControlPayload) return Next::kBad;
      return in.size() - at - sizeof h >= h.len ? Next::kControl : Next::kNeedMore;
    default:
      return Next::kBad;
  }
}

Next scan(const std::string &in) { return scan_at(in, 0); }

Next serve(Target &t, Session &s, std::string &in, std::string &out) {
  size_t used = 0;
  Next next;
  for (;;) {
    next = scan_at(in, used);
    if (next != Next::kControl) break;
    wire::Header h = header_of(in, used);
    // HELLO, GET_DESC, PING and WATCH have no payload by scan(); answer() refuses one that claims one.
    uint64_t plen = h.type == wire::CONTROL ? h.len : 0;
    std::string body = in.substr(used + sizeof h, plen);
    used += sizeof h + plen;
    if (!answer(t, s, h, body, out)) {
      in.clear();
      return Next::kBad;
    }
  }
  if (next == Next::kBad) {
    wire::Header h = header_of(in, used);
    put_error(out, bad_reason(h), MC_ERR_TRANSPORT);
    in.clear();
    return next;
  }
  in.erase(0, used);
  return next;
}

void put_error(std::string &out, const std::string &why, mc_status_t code) {
  if (code == MC_ERR_PEER_DOWN)
    MC_LOGI("control: closing a connection that " << why);
  else
    MC_LOGW("control: closing a connection that " << why);
  put(out, wire::make(wire::ERROR, 0, 0, why.size(), code), why);
}

}  // namespace mc::control
