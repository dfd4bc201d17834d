// The client side of the control channel (see proto/wire.h), used by the metadata layer.
#include "control/client.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "proto/auth.h"
#include "proto/wire.h"

namespace mc {

static std::string io_text(int err) {
  return err == 0 ? std::string("connection closed by peer") : std::string(std::strerror(err));
}

namespace {

bool read_fd(void *ctx, void *buf, size_t n) { return read_all(*static_cast<int *>(ctx), buf, n); }

// Connects, runs the handshake with the request riding its last message, and reads the first
// reply header (after AUTH_OK when there is a token). An ERROR in place of the reply (the
// handshake refused, or the server refused the request) comes back as its status. `what` names
// the request in messages ("a descriptor request", "a ping").
Status exchange_once(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                     const wire::Header &h, const std::string &payload, const char *what, Fd *fd_out,
                     wire::Header *r, bool *connected) {
  Fd fd;
  Status st = tcp_connect(addr, timeout_ms, &fd);
  if (!st.ok()) return st;
  *connected = true;
  set_io_timeout(fd.get(), timeout_ms);
  iovec req[2] = {{const_cast<wire::Header *>(&h), sizeof h},
                  {const_cast<char *>(payload.data()), payload.size()}};
  st = auth::client_handshake(fd.get(), token, 0, addr.str(), req, payload.empty() ? 1 : 2);
  if (!st.ok()) return st;
  int raw = fd.get();
  for (int k = 0;; k++) {
    if (!read_all(raw, r, sizeof *r)) {
      int e = errno;
      return Err(MC_ERR_PEER_DOWN, "no answer to " + std::string(what) + " from " + addr.str() + ": " +
                                       (e == EAGAIN || e == EWOULDBLOCK
                                            ? "nothing within " + std::to_string(timeout_ms) + " ms"
                                            : io_text(e)));
    }
    if (r->magic != wire::kMagic)
      return Err(MC_ERR_METADATA, addr.str() + " does not speak the mc protocol");
    if (r->version != wire::kVersion)
      return Err(MC_ERR_METADATA, addr.str() + " speaks mc wire version " + std::to_string(r->version) +
                                      ", this engine speaks " + std::to_string(wire::kVersion));
    if (r->type == wire::ERROR) return auth::check_verdict(*r, addr.str(), read_fd, &raw);
    if (!token.empty() && k == 0) {
      st = auth::check_verdict(*r, addr.str(), read_fd, &raw);  // AUTH_OK comes first
      if (!st.ok()) return st;
      continue;
    }
    break;
  }
  *fd_out = std::move(fd);
  return Status::Ok();
}

// A listener under a flood of unadmitted connections may close ours before its handshake
// ended (it keeps a bounded number pending): one more try on a fresh connection, then give up.
// A refused connect or a verdict is final at once.
Status exchange(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                const wire::Header &h, const std::string &payload, const char *what, Fd *fd_out,
                wire::Header *r) {
  bool connected = false;
  const auto t0 = std::chrono::steady_clock::now();
  Status st = exchange_once(addr, token, timeout_ms, h, payload, what, fd_out, r, &connected);
  const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  // Not after a silent peer ran the clock out: that would double the bound. Only a connection
  // the listener closed early (evicted while its handshake was pending) is tried again.
  if (st.ok() || !connected || st.code() != MC_ERR_PEER_DOWN || spent.count() * 2 >= static_cast<int64_t>(timeout_ms) ||
      st.message().find("nothing within") != std::string::npos)
    return st;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  connected = false;
  return exchange_once(addr, token, timeout_ms, h, payload, what, fd_out, r, &connected);
}

}  // namespace

Status control_fetch_descriptor(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                                std::string *json) {
  return control_fetch_descriptor_since(addr, token, timeout_ms, 1, 0, json);
}

Status control_fetch_descriptor_since(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                                      uint64_t incarnation, uint64_t since, std::string *json) {
  Fd fd;
  wire::Header r;
  Status st = exchange(addr, token, timeout_ms, wire::make(wire::GET_DESC, incarnation, since, 0), "",
                       "a descriptor request", &fd, &r);
  if (!st.ok()) return st;
  if (r.type != wire::DESC || r.len > wire::kMaxControlPayload)
    return Err(MC_ERR_METADATA, addr.str() + " sent an unexpected reply to a descriptor request");
  json->assign(r.len, '\0');
  if (!read_all(fd.get(), json->data(), r.len))
    return Err(MC_ERR_PEER_DOWN, "descriptor from " + addr.str() + " was cut short");
  return Status::Ok();
}

Status control_call(const HostPort &addr, const std::string &token, const std::string &channel,
                    const std::string &request, uint32_t timeout_ms, std::string *reply,
                    uint64_t *incarnation) {
  std::string payload = channel;
  payload.push_back('\0');
  payload += request;
  Fd fd;
  wire::Header r;
  Status st = exchange(addr, token, timeout_ms, wire::make(wire::CONTROL, 1, 0, payload.size()), payload,
                       "a control request", &fd, &r);
  if (!st.ok()) return st.code() == MC_ERR_METADATA ? Err(MC_ERR_TRANSPORT, st.message()) : st;
  if (r.type != wire::CONTROL_REPLY || r.len > wire::kMaxControlPayload)
    return Err(MC_ERR_TRANSPORT, addr.str() + " sent an unexpected reply");
  std::string body(r.len, '\0');
  if (r.len && !read_all(fd.get(), body.data(), r.len))
    return Err(MC_ERR_PEER_DOWN, "reply from " + addr.str() + " was cut short");
  if (incarnation) *incarnation = r.addr;
  if (r.status != MC_OK) return Err(r.status, addr.str() + " refused: " + body);
  *reply = std::move(body);
  return Status::Ok();
}

Status control_ping(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                    uint64_t *incarnation) {
  Fd fd;
  wire::Header r;
  Status st = exchange(addr, token, timeout_ms, wire::make(wire::PING, 1, 0, 0), "", "a ping", &fd, &r);
  if (!st.ok()) return st;
  if (r.type != wire::PONG)
    return Err(MC_ERR_METADATA, addr.str() + " sent an unexpected reply to a ping");
  *incarnation = r.addr;  // a PONG carries the incarnation in its addr field
  return Status::Ok();
}

}  // namespace mc
