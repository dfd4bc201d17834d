// How transports are found by name: one entry per transport, one factory signature. The
// engine starts transports and config validates `transports` and each transport's keys by
// iterating this table; no other place names a transport.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "transport/host.h"
#include "transport/transport.h"
#include "util/config.h"
#include "util/status.h"

namespace mc {

struct TransportEntry {
  std::string name;
  // Among data transports that reach a peer, the lower value is tried first.
  int preference = 0;
  // kData: may carry slices to other engines (when `transports` allows it). kSelf: serves the
  // engine's own segment only, and is always created.
  enum class Role { kData, kSelf } role = Role::kData;
  // Its own config keys (names, validators and docs; mc.h documents them for users).
  std::vector<ConfigKey> keys;
  // The one factory signature. nullptr with *st OK: not available on this machine (the
  // factory says why in the log); nullptr with *st failed: the engine must not start (e.g. a
  // device named in the config cannot be opened). host outlives the transport's shutdown().
  std::unique_ptr<Transport> (*create)(Host &host, Status *st) = nullptr;
};

// Every transport built into the library, in the order the engine creates them (by preference).
const std::vector<TransportEntry> &transport_registry();

}  // namespace mc
