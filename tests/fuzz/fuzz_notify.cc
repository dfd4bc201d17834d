// libFuzzer target for the NOTIFY message (src/proto/notify_msg.h) as a peer sends it on the
// control channel "notify". The input is the request's bytes.
//
// Checked: NotifyMsg::decode never throws or crashes; a failure is MC_ERR_INVALID_ARG (or
// MC_ERR_NO_MEMORY); a success has a sender of 1..255 bytes without NUL, non-zero incarnations,
// a message of 1..MC_NOTIFY_MAX_BYTES bytes, and encodes back to exactly the input.
#include <mc.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proto/notify_msg.h"

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::fprintf(stderr, "fuzz_notify: check failed: %s\n", #cond); \
      std::abort();                                                  \
    }                                                                \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view in(reinterpret_cast<const char *>(data), size);
  mc::NotifyMsg m;
  mc::Status st = mc::NotifyMsg::decode(in, &m);
  if (!st.ok()) {
    CHECK(st.code() == MC_ERR_INVALID_ARG || st.code() == MC_ERR_NO_MEMORY);
    CHECK(!st.message().empty());
    return 0;
  }
  CHECK(!m.sender.empty() && m.sender.size() <= 255);
  CHECK(m.sender.find('\0') == std::string::npos);
  CHECK(m.sender_incarnation != 0 && m.target_incarnation != 0);
  CHECK(!m.body.empty() && m.body.size() <= MC_NOTIFY_MAX_BYTES);
  CHECK(m.encode() == in);
  return 0;
}
