// What the engine gives a transport: the one interface through which a transport reports
// completions, serves a peer's requests against local memory and reads the engine's settings.
// A transport includes this and transport.h, never an engine header.
#pragma once
#include <mc.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

#include "util/config.h"
#include "util/status.h"

namespace mc {

struct RequestSlot;  // the engine's per-request bookkeeping; opaque to transports
class Fd;            // util/net.h
class Transport;     // transport.h

// The unit of work: one contiguous piece of one request, or several whole requests that are
// adjacent both locally and remotely, merged into one piece on the wire (count > 1; their slots
// are consecutive in one chunk of their batch). A transport may split a slice for its own
// reasons, but must then report the original slice once, through Host::complete.
struct Slice {
  void *local;
  uint64_t remote;
  uint64_t len;
  RequestSlot *slot;
  uint32_t op;         // MC_READ / MC_WRITE
  uint32_t count = 1;  // requests covered: slot[0..count)
};

class Host {
 public:
  virtual ~Host() = default;

  // ---- initiator side: completion
  // Every slice handed to a transport is reported exactly once, after the transport stopped
  // touching its local memory. Thread-safe; never blocks.
  virtual void complete(const Slice &s, mc_status_t status) = 0;
  // complete() for n slices at once, st[i] the status of s[i]: consecutive slices that each
  // moved a whole request of one batch end together, with the counters changed once for them.
  virtual void complete(const Slice *s, const mc_status_t *st, size_t n) = 0;
  // True once the slice's batch was canceled: a transport must not start it, and must not
  // write a READ's data into local memory any more (it drains it instead).
  virtual bool canceled(const Slice &s) const = 0;
  // Failover: hands n slices that `from` cannot move any more (every path it has to their
  // peer is down; all n go to one peer) to the next transport of that peer that accepts their
  // memory and carries() now. True: they belong to that transport from now on, and `from`
  // reports nothing for them; false: none could take them, `from` still owns them (and fails
  // them). Thread-safe; never blocks on the network; counted in the engine's stats.
  virtual bool fail_over(const Transport &from, Slice *s, size_t n) {
    (void)from;
    (void)s;
    (void)n;
    return false;
  }

  // ---- target side: a peer's requests against this engine's memory
  // Pins the registered buffers covering [addr, addr+len) so they cannot be unregistered while
  // a peer's request uses them. MC_ERR_OUT_OF_RANGE when not fully registered; MC_ERR_DENIED
  // when a buffer's access (mc_buffer_set_access) forbids op (MC_READ: the peer reads this
  // memory; MC_WRITE: it writes it). Nothing is pinned on failure.
  virtual mc_status_t pin(uint64_t addr, uint64_t len, uint32_t op) = 0;
  virtual void unpin(uint64_t addr, uint64_t len) = 0;
  // One small copy against this engine's own registered memory, at once on the calling thread
  // (the local transport's one-request path): MC_WRITE copies len bytes from local into
  // [addr, addr+len), MC_READ from there into local. The range cannot be unregistered meanwhile.
  // MC_OK, or pin()'s refusals with nothing copied. Thread-safe; for small copies only (the
  // engine keeps its buffer table read-locked for the copy's time instead of pinning).
  virtual mc_status_t copy_registered(uint64_t addr, uint64_t len, uint32_t op, void *local) {
    mc_status_t s = pin(addr, len, op);
    if (s != MC_OK) return s;
    void *r = reinterpret_cast<void *>(addr);
    std::memmove(op == MC_WRITE ? r : local, op == MC_WRITE ? local : r, len);
    unpin(addr, len);
    return MC_OK;
  }
  virtual std::string descriptor_json() = 0;
  // What changed since version `since` of incarnation `incarnation` (a "delta" descriptor), or
  // the full descriptor when that cannot be told.
  virtual std::string descriptor_delta_json(uint64_t incarnation, uint64_t since) {
    (void)incarnation;
    (void)since;
    return descriptor_json();
  }
  // Waits (bounded) until the engine finished starting: a listener runs before the engine has
  // its name, transports and metadata, so a peer's request that comes in meanwhile waits here.
  // False when it did not start in time or is being destroyed.
  virtual bool wait_started() { return true; }
  // A control request on `channel` (a transport's name, e.g. "rdma") from a peer, answered
  // with *reply. Used for connection setup that rides the admitted control channel.
  virtual Status control(const std::string &channel, const std::string &request, std::string *reply) = 0;

  // ---- the engine's identity and settings
  virtual uint64_t incarnation() const = 0;
  // The engine's options; options().value(key) gives a transport its own config keys.
  virtual const EngineOptions &options() const = 0;
  // The cluster's shared secret ("" for none).
  virtual const std::string &auth_token() const { return options().auth_token; }
  // The engine's name as peers know it; final before any transport is created, so a
  // transport may read it in its factory.
  virtual const std::string &engine_name() const = 0;

  // ---- the engine's listener (control/listener.h)
  // Connections the listener admitted whose first message is a data one (BIND, READ, WRITE)
  // go to h: fd admitted and O_NONBLOCK, owned by h from then on; readahead the bytes already
  // read from it, beginning at a message header. h must not block. nullptr stops the handing
  // over (returns once no call to the old h runs); a transport that set one does so in its
  // shutdown(). Without one, such connections are refused.
  virtual void serve_data(std::function<void(Fd fd, std::string readahead)> h) { (void)h; }
};

}  // namespace mc
