// The TCP transport: moves slices to peers over a few pipelined connections each, and serves
// the data connections the engine's listener (control/listener.h) hands it; a fixed set of
// event loops (transport/tcp/io_loop.h) serves both, client_conn.h and served_conn.h.
#pragma once
#include <memory>

#include "util/net.h"
#include "transport/transport.h"

namespace mc {

struct TcpOptions {
  uint32_t connections = 4;    // data connections per peer
  uint32_t io_threads = 2;     // event loops serving every connection (tcp_io_threads)
  uint32_t timeout_ms = 5000;  // no progress for this long fails a connection's work
  std::string auth_token;      // "" for none; see the admission handshake in proto/wire.h
};

// Starts the transport and asks target for the listener's data connections
// (Host::serve_data); target must outlive the transport's shutdown().
Status make_tcp_transport(const TcpOptions &opts, Host *target, std::unique_ptr<Transport> *out);

}  // namespace mc
