// libFuzzer target for the RDMA QP exchange (src/proto/rdma_msg.h): the control requests a peer
// sends on channel "rdma" (connect, keys) and the replies it answers with. The input is the
// JSON text off the wire, decoded as each of those messages.
//
// Checked per input and message: proto::decode never throws or crashes; a failure carries
// MC_ERR_TRANSPORT and a message naming the message kind and the peer; a success holds only
// values hardware accepts (1..64 QPs, QPN 1..2^24-1, PSN < 2^24, LID 16 bits, path MTU a power
// of two in 256..4096) and survives to_json -> decode unchanged.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "proto/rdma_msg.h"

namespace {

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::fprintf(stderr, "fuzz_rdma_qp: check failed: %s\n", #cond);   \
      std::abort();                                                       \
    }                                                                     \
  } while (0)

using namespace mc;

void check_qps(const std::vector<proto::RdmaQpInfo> &qps) {
  CHECK(!qps.empty() && qps.size() <= proto::kRdmaMaxQps);
  for (auto &q : qps) CHECK(q.qpn != 0 && q.qpn < (1u << 24) && q.psn < (1u << 24));
}
void check_addr(const proto::RdmaAddr &a) { CHECK(a.mtu >= 256 && a.mtu <= 4096 && (a.mtu & (a.mtu - 1)) == 0); }
void check(const proto::RdmaConnectReq &m) {
  check_addr(m.addr);
  check_qps(m.qps);
}
void check(const proto::RdmaConnectReply &m) {
  check_addr(m.addr);
  check_qps(m.qps);
}
void check(const proto::RdmaKeysReq &) {}
void check(const proto::RdmaKeysReply &m) {
  CHECK(m.len > 0 && m.addr + m.len > m.addr && m.rkeys.size() <= proto::kRdmaMaxNics);
}

template <class Msg>
void one(const std::string &text) {
  Msg m;
  Status st = proto::decode(text, "fuzzpeer", MC_ERR_TRANSPORT, &m);
  if (!st.ok()) {
    CHECK(st.code() == MC_ERR_TRANSPORT);
    CHECK(st.message().find(Msg::kWhat) != std::string::npos);
    CHECK(st.message().find("fuzzpeer") != std::string::npos);
    return;
  }
  check(m);
  std::string once = m.to_json();
  Msg m2;
  Status st2 = proto::decode(once, "fuzzpeer", MC_ERR_TRANSPORT, &m2);
  if (!st2.ok()) {
    std::fprintf(stderr, "fuzz_rdma_qp: %s does not read back: %s\n%s\n", Msg::kWhat, st2.message().c_str(), once.c_str());
    std::abort();
  }
  CHECK(m2.to_json() == once);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  one<proto::RdmaConnectReq>(text);
  one<proto::RdmaConnectReply>(text);
  one<proto::RdmaKeysReq>(text);
  one<proto::RdmaKeysReply>(text);
  proto::RdmaOp op;
  Status st = proto::decode(text, "fuzzpeer", MC_ERR_TRANSPORT, &op);
  CHECK(st.ok() || st.code() == MC_ERR_TRANSPORT);
  return 0;
}
