// libFuzzer target for the segment descriptor parser, mc::Descriptor::from_json
// (src/proto/descriptor.h): the input is the JSON text a peer or a metadata store hands us.
//
// Checked per input: no crash, no undefined behaviour, no exception out of from_json; a failure
// carries MC_ERR_METADATA and a message. When it parses: the buffers are sorted, non-empty and
// non-overlapping; find() and covers() agree with the buffer list; and the descriptor survives
// to_json -> from_json unchanged (to_json(from_json(to_json(d))) == to_json(d)).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "proto/descriptor.h"
#include "metadata/metadata.h"

namespace {

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "fuzz_descriptor: check failed: %s\n", #cond);    \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

void check_shape(const mc::Descriptor &d) {
  for (size_t i = 0; i < d.buffers.size(); i++) {
    const auto &b = d.buffers[i];
    CHECK(b.length > 0);
    CHECK(b.addr + b.length > b.addr);  // no wrap
    if (i > 0) CHECK(d.buffers[i - 1].addr + d.buffers[i - 1].length <= b.addr);
    CHECK(d.find(b.addr) == &b);
    CHECK(d.find(b.addr + b.length - 1) == &b);
    CHECK(d.covers(b.addr, b.length));
    CHECK(!d.covers(b.addr, 0));
    bool next_adjacent = i + 1 < d.buffers.size() && d.buffers[i + 1].addr == b.addr + b.length;
    if (!next_adjacent) {
      CHECK(!d.covers(b.addr, b.length + 1));
      CHECK(d.find(b.addr + b.length) == nullptr || b.addr + b.length == 0);
    }
  }
  if (d.buffers.empty()) CHECK(d.find(0) == nullptr && !d.covers(0, 1));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  // The name-claim reader of a stored value (etcd/redis) and the delta path take the same bytes.
  mc::StoredHolder h;
  mc::Status hs = mc::read_holder(text, "fuzz", &h);
  CHECK(hs.ok() || (hs.code() == MC_ERR_METADATA && !hs.message().empty()));
  mc::Descriptor base;
  base.incarnation = 1;
  base.version = 3;
  base.buffers.push_back({0x1000, 0x1000, "cpu", {}, 3});
  mc::Descriptor upd;
  mc::Status us = mc::Descriptor::from_json_update(text, base, &upd, "fuzz");
  if (us.ok()) check_shape(upd);
  else CHECK(us.code() == MC_ERR_METADATA && !us.message().empty());
  mc::Descriptor d;
  mc::Status st = mc::Descriptor::from_json(text, &d);
  if (!st.ok()) {
    CHECK(st.code() == MC_ERR_METADATA);
    CHECK(!st.message().empty());
    return 0;
  }
  check_shape(d);
  std::string once = d.to_json();
  mc::Descriptor d2;
  mc::Status st2 = mc::Descriptor::from_json(once, &d2);
  if (!st2.ok()) {
    std::fprintf(stderr, "fuzz_descriptor: to_json output does not parse back: %s\n%s\n",
                 st2.message().c_str(), once.c_str());
    std::abort();
  }
  check_shape(d2);
  CHECK(d2.name == d.name && d2.incarnation == d.incarnation && d2.version == d.version);
  CHECK(d2.buffers.size() == d.buffers.size());
  CHECK(d2.total_bytes() == d.total_bytes());
  CHECK(d2.to_json() == once);
  return 0;
}
