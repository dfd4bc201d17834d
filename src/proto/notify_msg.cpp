// The NOTIFY wire message (see notify_msg.h).
#include "proto/notify_msg.h"

#include <mc.h>

#include <cstring>

namespace mc {

namespace {

constexpr uint32_t kMagic = 0x314e434d;  // "MCN1" read as a little-endian u32
constexpr size_t kHeader = 4 + 2 + 2 + 8 + 8;

template <class T>
void put(std::string &s, T v) {
  s.append(reinterpret_cast<const char *>(&v), sizeof v);
}

template <class T>
T get(const char *p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

std::string NotifyMsg::encode() const {
  std::string s;
  s.reserve(kHeader + sender.size() + body.size());
  put<uint32_t>(s, kMagic);
  put<uint16_t>(s, static_cast<uint16_t>(sender.size()));
  put<uint16_t>(s, 0);
  put<uint64_t>(s, sender_incarnation);
  put<uint64_t>(s, target_incarnation);
  s += sender;
  s += body;
  return s;
}

Status NotifyMsg::decode(std::string_view b, NotifyMsg *out) {
  try {
    if (b.size() < kHeader) return Err(MC_ERR_INVALID_ARG, "notification shorter than its header");
    if (get<uint32_t>(b.data()) != kMagic) return Err(MC_ERR_INVALID_ARG, "not a notification (bad magic)");
    size_t name_len = get<uint16_t>(b.data() + 4);
    if (name_len == 0 || name_len > 255 || get<uint16_t>(b.data() + 6) != 0)
      return Err(MC_ERR_INVALID_ARG, "notification with a bad sender name length");
    if (b.size() < kHeader + name_len + 1 || b.size() - kHeader - name_len > MC_NOTIFY_MAX_BYTES)
      return Err(MC_ERR_INVALID_ARG, "notification message of a bad length");
    out->sender_incarnation = get<uint64_t>(b.data() + 8);
    out->target_incarnation = get<uint64_t>(b.data() + 16);
    // Incarnations are never 0 (engine start draws until it is not): a 0 is not a live engine's.
    if (out->sender_incarnation == 0 || out->target_incarnation == 0)
      return Err(MC_ERR_INVALID_ARG, "notification with a zero incarnation");
    out->sender.assign(b.data() + kHeader, name_len);
    if (out->sender.find('\0') != std::string::npos)
      return Err(MC_ERR_INVALID_ARG, "notification sender name holds a NUL");
    out->body.assign(b.data() + kHeader + name_len, b.size() - kHeader - name_len);
    return Status::Ok();
  } catch (...) {  // bad_alloc: nothing passes the codec
    return Err(MC_ERR_NO_MEMORY, "no memory for a notification");
  }
}

}  // namespace mc
