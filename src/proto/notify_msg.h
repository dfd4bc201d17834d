// The NOTIFY message as it rides the control channel (channel "notify").
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.h"

namespace mc {

inline constexpr const char *kNotifyChannel = "notify";

// Binary, little-endian as the hosts are (the control channel's other messages assume the same):
//   u32 magic "MCN1" | u16 sender name length (1..255) | u16 0 | u64 sender incarnation |
//   u64 target incarnation (the one the sender's descriptor of the target named) |
//   sender name | message (1..MC_NOTIFY_MAX_BYTES bytes)
// The target refuses a target incarnation other than its own, so a notification addressed to
// an earlier run of a restarted engine is never delivered to the new one.
struct NotifyMsg {
  std::string sender;
  uint64_t sender_incarnation = 0;
  uint64_t target_incarnation = 0;
  std::string body;

  std::string encode() const;
  // Checks every length against the bytes there; never throws past it (MC_ERR_INVALID_ARG).
  static Status decode(std::string_view bytes, NotifyMsg *out);
};

}  // namespace mc
