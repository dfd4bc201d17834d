// The TCP transport's counters (stats_json), shared by its client and served connections.
#pragma once
#include <atomic>
#include <cstdint>

namespace mc::tcp {

struct Counters {
  std::atomic<uint64_t> bytes_sent{0}, bytes_received{0}, slices_ok{0}, slices_failed{0};
  std::atomic<uint64_t> conns_opened{0}, conns_failed{0}, fences_sent{0};
};

}  // namespace mc::tcp
