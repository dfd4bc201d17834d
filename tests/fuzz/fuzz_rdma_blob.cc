// libFuzzer target for the RDMA descriptor blobs (src/proto/rdma_msg.h): transports.rdma
// {"fabric","nics":[...]} and a buffer's ext.rdma {"rkeys":[...]}, as a peer publishes them
// through the metadata store. The input is the blob's JSON text, decoded as each.
//
// Checked: proto::decode never throws or crashes; a failure carries MC_ERR_METADATA naming the
// blob and the peer; a success has at most 64 NICs with non-empty names, 16-bit LIDs and valid
// path MTUs, at most 64 rkeys, and survives to_json -> decode unchanged.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "proto/rdma_msg.h"

namespace {

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "fuzz_rdma_blob: check failed: %s\n", #cond);   \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

using namespace mc;

void check(const proto::RdmaFabricDesc &f) {
  CHECK(f.nics.size() <= proto::kRdmaMaxNics);
  for (auto &n : f.nics) {
    CHECK(!n.name.empty());
    CHECK(n.addr.mtu >= 256 && n.addr.mtu <= 4096 && (n.addr.mtu & (n.addr.mtu - 1)) == 0);
  }
}
void check(const proto::RdmaBufExt &e) {
  CHECK(e.rkeys.size() <= proto::kRdmaMaxNics);
  CHECK(e.more.size() < proto::kRdmaMaxRegions);
  CHECK(e.more.empty() || e.region >= proto::kRdmaMinRegion);
  for (auto &k : e.more) CHECK(k.size() == e.rkeys.size());
}

template <class Msg>
void one(const std::string &text) {
  Msg m;
  Status st = proto::decode(text, "fuzzpeer", MC_ERR_METADATA, &m);
  if (!st.ok()) {
    CHECK(st.code() == MC_ERR_METADATA);
    CHECK(st.message().find(Msg::kWhat) != std::string::npos);
    CHECK(st.message().find("fuzzpeer") != std::string::npos);
    return;
  }
  check(m);
  std::string once = m.to_json();
  Msg m2;
  Status st2 = proto::decode(once, "fuzzpeer", MC_ERR_METADATA, &m2);
  if (!st2.ok()) {
    std::fprintf(stderr, "fuzz_rdma_blob: %s does not read back: %s\n%s\n", Msg::kWhat, st2.message().c_str(), once.c_str());
    std::abort();
  }
  CHECK(m2.to_json() == once);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  one<proto::RdmaFabricDesc>(text);
  one<proto::RdmaBufExt>(text);
  return 0;
}
