// Shared body of the same-host message fuzz targets (fuzz_shm_list, fuzz_shm_hello,
// fuzz_nvlink_list, fuzz_nvlink_hello, fuzz_samehost_blob): the input is what a peer (or the
// metadata store) sends. Checked per input:
//  - proto::decode never throws (libFuzzer aborts on an uncaught exception) and a refusal has
//    the code asked for and a message naming the peer and the message;
//  - what it accepts satisfies Msg's invariants (check(), per target), the ones the transports
//    act on without checking again;
//  - what it accepts encodes (to_json) into text that decodes to the same message.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "proto/samehost_msg.h"

namespace samehost_fuzz {

[[noreturn]] inline void die(const char *what, const std::string &detail) {
  std::fprintf(stderr, "same-host fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

template <class Msg, class Check>
void run(const uint8_t *data, size_t size, mc_status_t code, Check check) {
  std::string text(reinterpret_cast<const char *>(data), size);
  Msg m;
  mc::Status st = mc::proto::decode(text, "fuzz-peer", code, &m);
  if (!st.ok()) {
    if (st.code() != code) die("refused with another code", st.message());
    if (st.message().find("fuzz-peer") == std::string::npos || st.message().find(Msg::kWhat) == std::string::npos)
      die("a refusal does not name the peer and the message", st.message());
    return;
  }
  check(m);
  std::string again = m.to_json();
  Msg m2;
  st = mc::proto::decode(again, "fuzz-peer", code, &m2);
  if (!st.ok()) die("an accepted message does not decode after encoding", st.message());
  if (m2.to_json() != again) die("encode/decode does not round-trip", again);
}

// Buffers non-empty, not wrapping, in address order and disjoint, known access bits.
template <class Bufs>
void check_buffers(const Bufs &b) {
  for (size_t i = 0; i < b.size(); i++) {
    if (b[i].len == 0 || b[i].addr + b[i].len < b[i].addr) die("an empty or wrapping buffer", std::to_string(i));
    if (b[i].access & ~3u) die("unknown access bits", std::to_string(i));
    if (i && b[i].addr < b[i - 1].addr + b[i - 1].len) die("overlapping buffers", std::to_string(i));
  }
  if (b.size() > mc::proto::kMaxSamehostBuffers) die("too many buffers", std::to_string(b.size()));
}

}  // namespace samehost_fuzz
