// The same-host transport: one-sided copies between processes of one host with no socket and
// no peer CPU on the data path.
#pragma once
#include <memory>
#include <string>

#include "transport/transport.h"

namespace mc {

struct ShmOptions {
  // Whether one call's copy may be shared between the submitting thread and the workers:
  // kAuto while it pays (no crowding, util/share_payoff.h), kAlways (whenever the call is large
  // enough), kNever (the submitting thread copies everything itself).
  enum class Share { kAuto, kAlways, kNever };
  Share share = Share::kAuto;
  uint32_t workers = 4;
  uint32_t timeout_ms = 5000;
  uint64_t incarnation = 0;
  std::string auth_token;  // "" for none: the same admission as on TCP (proto/wire.h)
};

// Starts the engine's same-host listener (an abstract Unix socket). nullptr with *st set when
// it cannot (no memfd, no Unix sockets).
std::unique_ptr<Transport> make_shm_transport(const ShmOptions &o, Host *target, Status *st);

}  // namespace mc
