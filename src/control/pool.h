// Idle admitted control connections, kept for the next call to the same peer (control/client.h).
#pragma once
#include <cstdint>
#include <string>

#include "util/net.h"

namespace mc::control_pool {

constexpr uint32_t kMaxIdlePerPeer = 4;  // more returned at once are closed
constexpr uint64_t kIdleMs = 15000;      // above the default heartbeat, so probes reuse

// Counters for the whole process (every engine's calls share the pool).
struct Counters {
  uint64_t connects;   // fresh connections that were admitted
  uint64_t reuses;     // calls served over a pooled connection (or a PING on one the prober keeps)
  uint64_t discarded;  // pooled (or kept) connections closed: idle too long, ended by the peer, or cleared
};

// The key of one pool: a peer address seen with one token (a connection admitted under one
// token is never handed to a caller with another).
std::string key(const HostPort &addr, const std::string &token);

// An idle connection for key, checked not ended by the peer, or an invalid Fd. *generation gets
// what give() needs.
Fd take(const std::string &key, uint64_t *generation);
// Hands back a connection whose last exchange ended cleanly; it is closed instead when the pool
// for key is full or clear() ran since take() (generation).
void give(const std::string &key, Fd fd, uint64_t generation);
// Closes every idle connection; ones in use are closed when handed back.
void clear();
// What take() would give in *generation now: for a connection admitted outside take() that may
// be handed back later.
uint64_t generation();

void count_connect();
void count_discard();  // a kept connection (control/prober.h) closed because it ended or broke
void count_reuse();    // a call served over a connection kept outside the pool (control/prober.h)
Counters counters();

}  // namespace mc::control_pool
