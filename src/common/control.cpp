// The client side of the control channel (see common/wire.h), used by the metadata layer.
#include "common/control.h"

#include <cerrno>
#include <cstring>

#include "common/wire.h"

namespace mc {

static std::string io_text(int err) {
  return err == 0 ? std::string("connection closed by peer") : std::string(std::strerror(err));
}

Status control_fetch_descriptor(const HostPort &addr, uint32_t timeout_ms, std::string *json) {
  Fd fd;
  Status st = tcp_connect(addr, timeout_ms, &fd);
  if (!st.ok()) return st;
  set_io_timeout(fd.get(), timeout_ms);
  wire::Header h = wire::make(wire::GET_DESC, 1, 0, 0);
  if (!write_all(fd.get(), &h, sizeof h))
    return Err(MC_ERR_PEER_DOWN, "cannot reach " + addr.str() + ": " + std::strerror(errno));
  wire::Header r;
  if (!read_all(fd.get(), &r, sizeof r)) {
    int e = errno;
    return Err(MC_ERR_PEER_DOWN, "no descriptor from " + addr.str() + ": " +
                                     (e == EAGAIN || e == EWOULDBLOCK
                                          ? "no answer within " + std::to_string(timeout_ms) + " ms"
                                          : io_text(e)));
  }
  if (r.magic != wire::kMagic)
    return Err(MC_ERR_METADATA, addr.str() + " does not speak the mc protocol");
  if (r.version != wire::kVersion)
    return Err(MC_ERR_METADATA, addr.str() + " speaks mc wire version " + std::to_string(r.version) +
                                    ", this engine speaks " + std::to_string(wire::kVersion));
  if (r.type != wire::DESC || r.len > wire::kMaxControlPayload)
    return Err(MC_ERR_METADATA, addr.str() + " sent an unexpected reply to a descriptor request");
  json->assign(r.len, '\0');
  if (!read_all(fd.get(), json->data(), r.len))
    return Err(MC_ERR_PEER_DOWN, "descriptor from " + addr.str() + " was cut short");
  return Status::Ok();
}

namespace {
Status roundtrip(const HostPort &addr, uint32_t timeout_ms, const wire::Header &h,
                 const std::string &payload, wire::MsgType want, wire::Header *r, std::string *body) {
  Fd fd;
  Status st = tcp_connect(addr, timeout_ms, &fd);
  if (!st.ok()) return st;
  set_io_timeout(fd.get(), timeout_ms);
  iovec iov[2] = {{const_cast<wire::Header *>(&h), sizeof h},
                  {const_cast<char *>(payload.data()), payload.size()}};
  if (!writev_all(fd.get(), iov, payload.empty() ? 1 : 2))
    return Err(MC_ERR_PEER_DOWN, "cannot reach " + addr.str() + ": " + std::strerror(errno));
  if (!read_all(fd.get(), r, sizeof *r)) {
    int e = errno;
    return Err(MC_ERR_PEER_DOWN, "no answer from " + addr.str() + ": " +
                                     (e == EAGAIN || e == EWOULDBLOCK
                                          ? "nothing within " + std::to_string(timeout_ms) + " ms"
                                          : io_text(e)));
  }
  if (r->magic != wire::kMagic || r->version != wire::kVersion)
    return Err(MC_ERR_TRANSPORT, addr.str() + " does not speak this mc wire version");
  if (r->type != want || r->len > wire::kMaxControlPayload)
    return Err(MC_ERR_TRANSPORT, addr.str() + " sent an unexpected reply");
  body->assign(r->len, '\0');
  if (r->len && !read_all(fd.get(), body->data(), r->len))
    return Err(MC_ERR_PEER_DOWN, "reply from " + addr.str() + " was cut short");
  return Status::Ok();
}
}  // namespace

Status control_call(const HostPort &addr, const std::string &channel, const std::string &request,
                    uint32_t timeout_ms, std::string *reply, uint64_t *incarnation) {
  std::string payload = channel;
  payload.push_back('\0');
  payload += request;
  wire::Header h = wire::make(wire::CONTROL, 1, 0, payload.size());
  wire::Header r;
  std::string body;
  Status st = roundtrip(addr, timeout_ms, h, payload, wire::CONTROL_REPLY, &r, &body);
  if (!st.ok()) return st;
  if (incarnation) *incarnation = r.addr;
  if (r.status != MC_OK) return Err(r.status, addr.str() + " refused: " + body);
  *reply = std::move(body);
  return Status::Ok();
}

Status control_ping(const HostPort &addr, uint32_t timeout_ms, uint64_t *incarnation) {
  Fd fd;
  Status st = tcp_connect(addr, timeout_ms, &fd);
  if (!st.ok()) return st;
  set_io_timeout(fd.get(), timeout_ms);
  wire::Header h = wire::make(wire::PING, 1, 0, 0);
  if (!write_all(fd.get(), &h, sizeof h))
    return Err(MC_ERR_PEER_DOWN, "cannot reach " + addr.str() + ": " + std::strerror(errno));
  wire::Header r;
  if (!read_all(fd.get(), &r, sizeof r)) {
    int e = errno;
    return Err(MC_ERR_PEER_DOWN, "no answer to a ping from " + addr.str() + ": " +
                                     (e == EAGAIN || e == EWOULDBLOCK
                                          ? "nothing within " + std::to_string(timeout_ms) + " ms"
                                          : io_text(e)));
  }
  if (r.magic != wire::kMagic)
    return Err(MC_ERR_METADATA, addr.str() + " does not speak the mc protocol");
  if (r.version != wire::kVersion)
    return Err(MC_ERR_METADATA, addr.str() + " speaks mc wire version " + std::to_string(r.version) +
                                    ", this engine speaks " + std::to_string(wire::kVersion));
  if (r.type != wire::PONG)
    return Err(MC_ERR_METADATA, addr.str() + " sent an unexpected reply to a ping");
  *incarnation = r.addr;  // a PONG carries the incarnation in its addr field
  return Status::Ok();
}

}  // namespace mc
