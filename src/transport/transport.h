// The one interface every transport implements, and the two the engine gives them.
#pragma once
#include <mc.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/descriptor.h"

namespace mc {

struct RequestSlot;  // engine-owned; opaque here

// The unit of work: one contiguous piece of one request.
struct Slice {
  void *local;
  uint64_t remote;
  uint64_t len;
  RequestSlot *slot;
  uint32_t op;  // MC_READ / MC_WRITE
};

// Completion contract (implemented by the engine): every slice handed to a transport is
// reported exactly once, after the transport stopped touching its local memory.
void slice_done(const Slice &s, mc_status_t status);
// True once the slice's batch was canceled: a transport must not start it, and must not write
// a READ's data into local memory any more (it drains it instead).
bool slice_canceled(const Slice &s);

// What a transport's target side needs from the engine.
class TargetAccess {
 public:
  virtual ~TargetAccess() = default;
  // Pins the registered buffers covering [addr, addr+len) so they cannot be unregistered while
  // a peer's request uses them. MC_ERR_OUT_OF_RANGE when not fully registered.
  virtual mc_status_t pin(uint64_t addr, uint64_t len) = 0;
  virtual void unpin(uint64_t addr, uint64_t len) = 0;
  virtual std::string descriptor_json() = 0;
  virtual uint64_t incarnation() const = 0;
};

// A transport's per-peer state (connections, mappings); created by the transport.
class PeerPath {
 public:
  virtual ~PeerPath() = default;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char *name() const = 0;
  // The path to the peer described by d; never blocks on the network.
  virtual std::shared_ptr<PeerPath> connect(const Descriptor &d) = 0;
  // Queues slices to a peer; never blocks on the network. Each slice ends in slice_done.
  virtual void submit(PeerPath &peer, Slice *slices, size_t n) = 0;
  // Fails everything queued or in flight and stops all threads; blocks until they stopped.
  virtual void shutdown() = 0;
  // Appends this transport's counters as a JSON object text.
  virtual std::string stats_json() = 0;
};

}  // namespace mc
