// The client side of the control channel.
#pragma once
#include <string>

#include "common/net.h"

namespace mc {

// One control round trip on a fresh connection: GET_DESC to addr, the descriptor's JSON back.
// Blocks at most timeout_ms. Refused or silent: MC_ERR_PEER_DOWN; not an mc peer or a wire
// version mismatch: MC_ERR_METADATA.
Status control_fetch_descriptor(const HostPort &addr, uint32_t timeout_ms, std::string *json);

}  // namespace mc
