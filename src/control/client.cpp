// The client side of the control channel (see proto/wire.h), used by the metadata layer, health
// and the RDMA handshake. Admitted connections are pooled (control/pool.h): a call takes an idle
// one to the same peer (same token) when there is one and hands it back after a clean exchange;
// any failure closes it.
#include "control/client.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "control/pool.h"
#include "proto/auth.h"
#include "proto/wire.h"

namespace mc {

static std::string io_text(int err) {
  return err == 0 ? std::string("connection closed by peer") : std::string(std::strerror(err));
}

namespace {

bool read_fd(void *ctx, void *buf, size_t n) { return read_all(*static_cast<int *>(ctx), buf, n); }

// A connection a call holds: handed back to the pool by done(), closed if the call fails.
struct Lease {
  std::string key;
  uint64_t generation = 0;
  Fd fd;
  void done() { control_pool::give(key, std::move(fd), generation); }
};

// Reads one reply header. skip_auth_ok: the first header may be AUTH_OK (a fresh connection of
// an engine with a token), checked and skipped. An ERROR in place of the reply comes back as its
// status.
Status read_reply(int fd, const HostPort &addr, uint32_t timeout_ms, const char *what, bool skip_auth_ok,
                  wire::Header *r) {
  for (int k = 0;; k++) {
    if (!read_all(fd, r, sizeof *r)) {
      int e = errno;
      return Err(MC_ERR_PEER_DOWN,
                 "no answer to " + std::string(what) + " from " + addr.str() + ": " +
                     (e == EAGAIN || e == EWOULDBLOCK ? "nothing within " + std::to_string(timeout_ms) + " ms"
                                                      : io_text(e)));
    }
    if (r->magic != wire::kMagic) return Err(MC_ERR_METADATA, addr.str() + " does not speak the mc protocol");
    if (r->version != wire::kVersion)
      return Err(MC_ERR_METADATA, addr.str() + " speaks mc wire version " + std::to_string(r->version) +
                                      ", this engine speaks " + std::to_string(wire::kVersion));
    if (r->type == wire::ERROR) return auth::check_verdict(*r, addr.str(), read_fd, &fd);
    if (skip_auth_ok && k == 0) {
      Status st = auth::check_verdict(*r, addr.str(), read_fd, &fd);  // AUTH_OK comes first
      if (!st.ok()) return st;
      continue;
    }
    return Status::Ok();
  }
}

// Connects, runs the handshake with the request riding its last message, and reads the first
// reply header. `what` names the request in messages ("a descriptor request", "a ping").
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
  st = read_reply(fd.get(), addr, timeout_ms, what, !token.empty(), r);
  if (!st.ok()) return st;
  control_pool::count_connect();
  *fd_out = std::move(fd);
  return Status::Ok();
}

// A listener under a flood of unadmitted connections may close ours before its handshake
// ended (it keeps a bounded number pending): one more try on a fresh connection, then give up.
// A refused connect or a verdict is final at once.
Status exchange_fresh(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                      const wire::Header &h, const std::string &payload, const char *what, Fd *fd_out,
                      wire::Header *r) {
  bool connected = false;
  const auto t0 = std::chrono::steady_clock::now();
  Status st = exchange_once(addr, token, timeout_ms, h, payload, what, fd_out, r, &connected);
  const auto spent =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  // Not after a silent peer ran the clock out: that would double the bound. Only a connection
  // the listener closed early (evicted while its handshake was pending) is tried again.
  if (st.ok() || !connected || st.code() != MC_ERR_PEER_DOWN ||
      spent.count() * 2 >= static_cast<int64_t>(timeout_ms) ||
      st.message().find("nothing within") != std::string::npos)
    return st;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  connected = false;
  return exchange_once(addr, token, timeout_ms, h, payload, what, fd_out, r, &connected);
}

// One request, its reply header in *r and the connection in *lease (the caller reads the body,
// then calls lease->done()). A pooled connection is tried first. If it turns out ended before
// any answer (the peer's engine stopped between our check and the send), an idempotent request
// (GET_DESC, PING) goes again on a fresh connection; a CONTROL request, which the peer may have
// acted on, does not.
Status exchange(const HostPort &addr, const std::string &token, uint32_t timeout_ms, const wire::Header &h,
                const std::string &payload, const char *what, bool idempotent, Lease *lease,
                wire::Header *r) {
  lease->key = control_pool::key(addr, token);
  Fd fd = control_pool::take(lease->key, &lease->generation);
  if (fd.valid()) {
    set_io_timeout(fd.get(), timeout_ms);
    iovec req[2] = {{const_cast<wire::Header *>(&h), sizeof h},
                    {const_cast<char *>(payload.data()), payload.size()}};
    Status st = writev_all(fd.get(), req, payload.empty() ? 1 : 2)
                    ? read_reply(fd.get(), addr, timeout_ms, what, false, r)
                    : Err(MC_ERR_PEER_DOWN,
                          "sending " + std::string(what) + " to " + addr.str() + ": " + io_text(errno));
    if (st.ok()) {
      lease->fd = std::move(fd);
      return st;
    }
    if (!idempotent || st.code() != MC_ERR_PEER_DOWN ||
        st.message().find("nothing within") != std::string::npos)
      return st;
  }
  return exchange_fresh(addr, token, timeout_ms, h, payload, what, &lease->fd, r);
}

}  // namespace

Status control_fetch_descriptor(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                                std::string *json) {
  return control_fetch_descriptor_since(addr, token, timeout_ms, 1, 0, json);
}

Status control_fetch_descriptor_since(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                                      uint64_t incarnation, uint64_t since, std::string *json) {
  Lease lease;
  wire::Header r;
  Status st = exchange(addr, token, timeout_ms, wire::make(wire::GET_DESC, incarnation, since, 0), "",
                       "a descriptor request", true, &lease, &r);
  if (!st.ok()) return st;
  if (r.type != wire::DESC || r.len > wire::kMaxControlPayload)
    return Err(MC_ERR_METADATA, addr.str() + " sent an unexpected reply to a descriptor request");
  json->assign(r.len, '\0');
  if (!read_all(lease.fd.get(), json->data(), r.len))
    return Err(MC_ERR_PEER_DOWN, "descriptor from " + addr.str() + " was cut short");
  lease.done();
  return Status::Ok();
}

Status control_call(const HostPort &addr, const std::string &token, const std::string &channel,
                    const std::string &request, uint32_t timeout_ms, std::string *reply,
                    uint64_t *incarnation) {
  std::string payload = channel;
  payload.push_back('\0');
  payload += request;
  Lease lease;
  wire::Header r;
  Status st = exchange(addr, token, timeout_ms, wire::make(wire::CONTROL, 1, 0, payload.size()), payload,
                       "a control request", false, &lease, &r);
  if (!st.ok()) return st.code() == MC_ERR_METADATA ? Err(MC_ERR_TRANSPORT, st.message()) : st;
  if (r.type != wire::CONTROL_REPLY || r.len > wire::kMaxControlPayload)
    return Err(MC_ERR_TRANSPORT, addr.str() + " sent an unexpected reply");
  std::string body(r.len, '\0');
  if (r.len && !read_all(lease.fd.get(), body.data(), r.len))
    return Err(MC_ERR_PEER_DOWN, "reply from " + addr.str() + " was cut short");
  lease.done();
  if (incarnation) *incarnation = r.addr;
  if (r.status != MC_OK) return Err(r.status, addr.str() + " refused: " + body);
  *reply = std::move(body);
  return Status::Ok();
}

Status control_ping(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                    uint64_t *incarnation) {
  return control_ping_keep(addr, token, timeout_ms, incarnation, nullptr);
}

Status control_ping_keep(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                         uint64_t *incarnation, Fd *conn) {
  Lease lease;
  wire::Header r;
  Status st =
      exchange(addr, token, timeout_ms, wire::make(wire::PING, 1, 0, 0), "", "a ping", true, &lease, &r);
  if (!st.ok()) return st;
  if (r.type != wire::PONG || r.len != 0)
    return Err(MC_ERR_METADATA, addr.str() + " sent an unexpected reply to a ping");
  if (conn)
    *conn = std::move(lease.fd);
  else
    lease.done();
  *incarnation = r.addr;  // a PONG carries the incarnation in its addr field
  return Status::Ok();
}

}  // namespace mc
