// The one interface every transport implements (what the engine gives them: host.h).
#pragma once
#include <mc.h>

#include <cstdint>
#include <atomic>
#include <functional>
#include <mutex>
#include <memory>
#include <string>

#include "proto/descriptor.h"
#include "transport/host.h"

namespace mc {

// A transport's view of one registered local buffer.
struct LocalRegion {
  uint64_t addr;
  uint64_t length;
  std::string location;                                // "cpu", "cpu:N", "cuda:N"
  int memfd = -1;                                      // the memfd behind it (mc_buffer_alloc), or -1
  uint32_t access = MC_ACCESS_READ | MC_ACCESS_WRITE;  // what peers may do (mc_buffer_set_access)
};

// A transport's per-peer state (connections, mappings); created by the transport.
class PeerPath {
 public:
  virtual ~PeerPath() = default;
  // Set by the engine: a transport calls it when it learns on its own that the peer is gone
  // (e.g. its same-host socket closed), so the engine probes the peer at once. Use the two
  // functions below: the engine sets it after connect() returned, while a transport thread
  // may already be running.
  std::function<void()> on_down;
  void set_on_down(std::function<void()> fn) {
    std::lock_guard<std::mutex> lk(on_down_mu_);
    on_down = std::move(fn);
  }
  void fire_down() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lk(on_down_mu_);
      fn = on_down;
    }
    if (fn) fn();
  }
  // When data last moved on this path (now_ms(); 0: never, or a transport that does not track
  // it): bytes from the peer arrived, or the peer took ours (once its socket buffer is full a
  // send only progresses as the peer reads). Health counts it as an answer: a peer that is
  // moving our data is alive even when a loaded machine delays its answer to a ping. Shared
  // with the path's connections, which may outlive it.
  std::shared_ptr<std::atomic<uint64_t>> heard_ms = std::make_shared<std::atomic<uint64_t>>(0);

 private:
  std::mutex on_down_mu_;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char *name() const = 0;
  // Whether this transport can move data to the peer described by d (same host, NICs, ...).
  virtual bool reachable(const Descriptor &d) {
    (void)d;
    return true;
  }
  // Reads this transport's parts of a peer's descriptor (d.transports[name()], the buffers'
  // ext[name()]) through its codecs: MC_ERR_METADATA naming the peer and the field when one is
  // malformed, and the engine then refuses the descriptor whole (a peer that publishes garbage
  // is not used over any transport). Parts that are absent are fine.
  virtual Status check_descriptor(const Descriptor &d) {
    (void)d;
    return Status::Ok();
  }
  // Adds this transport's part to the local descriptor: d.transports[name()] (JSON text) and,
  // per buffer, d.buffers[i].ext[name()] (JSON text). Called with the engine's buffer lock
  // held shared: must not block.
  virtual void describe(Descriptor &d) { (void)d; }
  // Called when a buffer is registered / unregistered (e.g. to register an MR on every NIC).
  // A failing register undoes the registration.
  virtual Status on_register(const LocalRegion &r) {
    (void)r;
    return Status::Ok();
  }
  virtual void on_unregister(const LocalRegion &r) { (void)r; }
  // Called when a buffer's access changes (r.access is the new one), with the engine's buffer
  // lock held exclusively, like on_unregister. A transport whose peers reach memory without
  // asking the target (mappings, memory regions) must make the old rights unusable before it
  // returns: no copy that started under them may still run (shm: bump the epoch and wait).
  // A failure means the new rights could not be put in place; the transport must then leave
  // nothing reachable under rights it cannot enforce (rdma: deregisters that buffer's memory
  // regions), and the engine restores the old access in the transports already changed and
  // returns the error from mc_buffer_set_access.
  virtual Status on_access_change(const LocalRegion &r) {
    (void)r;
    return Status::Ok();
  }
  // The path to the peer described by d; never blocks on the network. The engine drops the
  // old path when the peer's incarnation changes (its destructor tears that peer's state down:
  // connections, mappings, queue pairs) and asks for a new one; nothing else is rebuilt.
  // Returns nullptr when d has nothing this transport can use.
  virtual std::shared_ptr<PeerPath> connect(const Descriptor &d) = 0;
  // The peer's descriptor changed but its incarnation did not (buffers added or removed).
  virtual void update(PeerPath &peer, const Descriptor &d) {
    (void)peer;
    (void)d;
  }
  // Fails everything queued or in flight on this path (the peer is unreachable or was
  // replaced); later submits on the path may try again.
  virtual void fail_path(PeerPath &peer, mc_status_t status, const std::string &why) {
    (void)peer;
    (void)status;
    (void)why;
  }
  // False once the path gave up for good (e.g. the peer's same-host socket closed); the engine
  // then asks for a new one when the peer answers again with the same incarnation.
  virtual bool usable(PeerPath &peer) {
    (void)peer;
    return true;
  }
  // Whether the path can take new work now. False while every way it has to the peer is down
  // (rdma: no local NIC up, or every peer NIC refusing connections); the engine then routes new
  // requests over the next of the peer's transports that accepts them, and comes back once this
  // is true again. Called on every submit: must be cheap and must not block.
  virtual bool carries(PeerPath &peer) {
    (void)peer;
    return true;
  }
  // Whether this transport moves data between memory at these locations ("cpu", "cpu:N",
  // "cuda:N"); the engine picks the first transport of a peer that accepts a request.
  virtual bool accepts(const std::string &local_loc, const std::string &remote_loc) const {
    return local_loc.rfind("cpu", 0) == 0 && remote_loc.rfind("cpu", 0) == 0;
  }
  // A finer check on the remote buffer itself (e.g. shm takes plain registered memory only
  // where cross-memory attach works); called after accepts().
  virtual bool accepts_buffer(PeerPath &peer, const BufferDesc &remote) const {
    (void)peer;
    (void)remote;
    return true;
  }
  // Queues slices to a peer; never blocks on the network. Each slice ends in Host::complete.
  virtual void submit(PeerPath &peer, Slice *slices, size_t n) = 0;
  // The fast path of one small request (engine/fast_path.cpp): copies [local, local+len) to
  // (MC_WRITE) or from (MC_READ) the peer's [remote, remote+len) on the calling thread, now,
  // with the same checks against the peer's current buffers that submit() makes, counts it in
  // this transport's own figures as one slice, and returns true with *st its status (MC_OK, or
  // the failure submit() would have reported for it). Returns false, having counted nothing and
  // changed no memory, when it cannot settle the request at once (a mapping still to make, a
  // buffer list to refresh, a range across buffers, rights it has to ask about, ...): the
  // engine then takes the normal path. The engine holds the local range pinned. Never blocks
  // on the network; thread-safe.
  virtual bool copy_now(PeerPath &peer, uint32_t op, void *local, uint64_t remote, uint64_t len,
                        mc_status_t *st) {
    (void)peer;
    (void)op;
    (void)local;
    (void)remote;
    (void)len;
    (void)st;
    return false;
  }
  // mc_batch_submit_on_stream: queues the slices' copies on the caller's CUDA stream (a
  // CUstream whose context is current on the calling thread), so that they run after the work
  // queued on it before and before the work queued after, and reports each slice through
  // Host::complete once its copy ended, as submit() does. False, with nothing done, when this
  // transport cannot (the engine then starts the slices itself once the stream's earlier work
  // finished, and holds the stream until they ended).
  virtual bool submit_on_stream(PeerPath &peer, Slice *slices, size_t n, void *stream) {
    (void)peer;
    (void)slices;
    (void)n;
    (void)stream;
    return false;
  }
  // Answers a peer's control request on this transport's channel (see Host::control).
  virtual Status handle_control(const std::string &request, std::string *reply) {
    (void)request;
    (void)reply;
    return Err(MC_ERR_UNSUPPORTED, std::string("transport ") + name() + " takes no control requests");
  }
  // The URI scheme of segments this transport serves itself ("file" for "file:///..."), or ""
  // for none: mc_segment_open of such a name calls open_uri instead of the metadata store.
  virtual std::string scheme() const { return ""; }
  // Opens the segment `uri`: *d gets its descriptor (name, buffers; no endpoint) and *path the
  // path its requests take. May block on the file system.
  virtual Status open_uri(const std::string &uri, Descriptor *d, std::shared_ptr<PeerPath> *path) {
    (void)d;
    (void)path;
    return Err(MC_ERR_UNSUPPORTED,
               std::string("transport ") + name() + " opens no segment by URI (" + uri + ")");
  }
  // Fails everything queued or in flight and stops all threads; blocks until they stopped.
  virtual void shutdown() = 0;
  // This transport's counters as a JSON object text.
  virtual std::string stats_json() = 0;
  // Extra flat fields for the engine's "peers" stats object of one peer, as JSON members
  // without braces (e.g. "\"qps\":4,\"qp_recreations\":1"), or "" for none.
  virtual std::string peer_stats(const std::string &peer_name, PeerPath &peer) {
    (void)peer_name;
    (void)peer;
    return "";
  }
};

}  // namespace mc
