// The client side of the control channel.
#pragma once
#include <string>

#include "util/net.h"

namespace mc {

// Every call below runs over an admitted connection to addr (see proto/wire.h): an idle one from
// the process's pool (control/pool.h) when one admitted under the same token is there and not
// ended by the peer, else a fresh one that runs the admission handshake first. token is this
// engine's auth_token ("" for none). A peer that does not admit us (or that we do not admit: no
// token, a different one) is MC_ERR_DENIED with the reason. A connection goes back to the pool
// only after a complete exchange; any failure closes it.

// One control round trip: GET_DESC to addr, the descriptor's JSON back.
// Blocks at most timeout_ms. Refused or silent: MC_ERR_PEER_DOWN; not an mc peer or a wire
// version mismatch: MC_ERR_METADATA.
Status control_fetch_descriptor(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                                std::string *json);

// The same, asking for the changes since `since` of incarnation `incarnation` (the reply may be
// a delta or a full descriptor: Descriptor::from_json_update tells them apart).
Status control_fetch_descriptor_since(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                                      uint64_t incarnation, uint64_t since, std::string *json);

// One PING/PONG round trip: *incarnation gets the incarnation of the engine that answers at addr
// (the health probe the metadata stores use before taking over a name).
// Blocks at most about 2 * timeout_ms (connect, then the answer). Refused or silent:
// MC_ERR_PEER_DOWN; not an mc peer or a wire version mismatch: MC_ERR_METADATA.
Status control_ping(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                    uint64_t *incarnation);

// The same PING, the connection it was answered on kept in *conn (not handed back to the pool)
// for a caller that pings again on it (control/prober.h). *conn is left invalid on failure.
Status control_ping_keep(const HostPort &addr, const std::string &token, uint32_t timeout_ms,
                         uint64_t *incarnation, Fd *conn);

// One CONTROL round trip: request on `channel` (a transport's name), the handler's reply back.
// *incarnation (may be NULL) gets the peer's incarnation. The handler's refusal comes back as
// its status with its message. Blocks at most timeout_ms.
Status control_call(const HostPort &addr, const std::string &token, const std::string &channel,
                    const std::string &request, uint32_t timeout_ms, std::string *reply,
                    uint64_t *incarnation);

}  // namespace mc
