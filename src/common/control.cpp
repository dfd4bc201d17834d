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

}  // namespace mc
