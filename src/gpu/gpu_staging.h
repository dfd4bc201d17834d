// Moving GPU memory through pinned host staging buffers, for the paths that need bytes in host
// memory (TCP sockets): copy one chunk while the caller sends or receives the previous one.
//
// The staging buffers come from one pinned pool per process (cuMemHostAlloc, portable to every
// context), carved with MemHeap; the pool is made on first use, so processes that never move GPU
// memory over these paths never pin anything.
#pragma once
#include <cstdint>
#include <functional>

#include "util/status.h"

namespace mc::gpu {

// True when p is GPU device memory that host code cannot touch; *ordinal gets its device.
// Costs one atomic load in a process that never registered GPU memory.
bool is_device_memory(const void *p, int *ordinal = nullptr);

// Device -> host: copies [dev, dev+len) chunk by chunk into pinned buffers and calls
// sink(chunk, n) for each, in order, while the next chunk is being copied. sink returns false
// to stop (its errno is kept). Returns false on a CUDA error (message in *why) or when sink did.
bool stage_out(const void *dev, uint64_t len, const std::function<bool(const char *, uint64_t)> &sink,
               std::string *why);

// Host -> device: source(chunk, n) fills each pinned chunk in order (false: stop), and the chunk
// is copied to [dev, dev+len) while the next one is filled. Returns once every byte landed.
bool stage_in(void *dev, uint64_t len, const std::function<bool(char *, uint64_t)> &source, std::string *why);

// The pool's counters for stats: bytes staged each way, the pinned pool's size (0 until first
// used) and what of it is lent out now, and stagings that found no room and went pageable.
struct StagingStats {
  uint64_t bytes_out = 0;
  uint64_t bytes_in = 0;
  uint64_t pool_bytes = 0;
  uint64_t pool_used = 0;
  uint64_t fallbacks = 0;
};
StagingStats staging_stats();

}  // namespace mc::gpu
