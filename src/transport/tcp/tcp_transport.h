// The TCP transport: the engine's listener (control channel and data path) and the client side
// that moves slices to peers over a few pipelined connections each.
#pragma once
#include <memory>

#include "util/net.h"
#include "transport/transport.h"

namespace mc {

struct TcpOptions {
  HostPort listen;
  uint32_t connections = 4;    // data connections per peer
  uint32_t timeout_ms = 5000;  // no progress for this long fails a connection's work
  std::string auth_token;      // "" for none; see the admission handshake in proto/wire.h
};

// Binds opts.listen (the bound address goes to *bound) and starts serving; target is the
// engine's side of incoming requests and must outlive the transport's shutdown().
Status make_tcp_transport(const TcpOptions &opts, Host *target, std::unique_ptr<Transport> *out,
                          HostPort *bound);

}  // namespace mc
