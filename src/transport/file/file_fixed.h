// Local memory registered with the rings as io_uring fixed buffers, so that a request's pages
// are not looked up and pinned again at every read or write. Lazy: a region is registered with
// a ring the first time that ring moves a request of it (registering pins and faults in every
// page, which memory that never meets a file must not pay). Regions are what the engine
// registers (mc_buffer_register): host memory of at most 1 GiB (io_uring's limit per buffer).
// Where registration fails (RLIMIT_MEMLOCK for an unprivileged process, a full table) requests
// of that region simply go unregistered.
#pragma once
#include <liburing.h>

#include <cstdint>
#include <map>
#include <shared_mutex>
#include <vector>

namespace mc::file {

class FixedTable {
 public:
  static constexpr unsigned kSlots = 256;  // fixed buffers per ring
  // A ring's table: sparse, kSlots entries. False when the kernel refuses it (then the ring
  // never uses fixed buffers).
  static bool prepare(io_uring *ring) { return io_uring_register_buffers_sparse(ring, kSlots) == 0; }
  // Ring r (0 .. rings-1) is ring; call before it looks anything up.
  void attach(unsigned r, io_uring *ring);
  // mc_buffer_register / mc_buffer_unregister of host memory (on_register, on_unregister).
  void add(uint64_t addr, uint64_t len);
  void remove(uint64_t addr);
  // The fixed index of the region holding [p, p+n) in ring r, registering it there first; -1
  // when there is none. Called by ring r's thread only.
  int lookup(unsigned r, uint64_t p, uint64_t n);

 private:
  struct Region {
    uint64_t len;
    int idx;                     // its slot in every ring's table, -1 when none was free
    std::vector<uint8_t> state;  // per ring: 0 not yet tried, 1 registered, 2 refused
  };
  std::shared_mutex mu_;  // guards regions_, free_ and rings_; lookup shared (each ring writes
                          // only its own state byte), add/remove/attach exclusive
  std::map<uint64_t, Region> regions_;
  std::vector<int> free_;
  std::vector<io_uring *> rings_;
  bool init_ = false;
};

}  // namespace mc::file
