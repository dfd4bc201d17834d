// The mc wire format, shared by the control channel and the TCP data path.
//
// Every message is a fixed 40-byte header, little-endian, followed by `len` payload bytes
// for the types that carry one:
//
//   offset size field
//   0      4    magic    0x3157434d ("MCW1" in memory order): rejects strangers (HTTP, junk)
//   4      2    version  kWireVersion; a peer speaking another version gets ERROR and a close
//   6      2    type     MsgType below
//   8      8    id       chosen by the sender of a request, echoed in its reply
//   16     8    addr     READ/WRITE: the target's virtual address; PONG/DESC: incarnation
//   24     8    len      payload length (WRITE, READ_DATA, DESC, ERROR, HELLO) or bytes to READ
//   32     4    status   replies: mc_status_t of the target's verdict
//   36     4    aux      reserved, 0
//
// Why one fixed header: the target parses it with one read from a buffer, a WRITE's payload
// lands straight in registered memory after its range check, and a READ's reply is one writev
// (header + the registered memory itself). Replies on one connection come back in request
// order, so the initiator matches them with a FIFO and checks the echoed id.
//
// A data connection starts with HELLO carrying the incarnation the initiator validated its
// requests against; a restarted target (new incarnation) refuses it with ERROR (status
// MC_ERR_PEER_DOWN) and closes, so no stale address is ever written. No reply on success.
// Control messages ride the same listener: GET_DESC returns the engine's descriptor (JSON,
// see common/descriptor.h), PING returns PONG with the incarnation, CONTROL carries a
// transport's own setup exchange (e.g. RDMA queue-pair numbers) to the engine's handler. The target refuses any
// range outside its registered buffers with status MC_ERR_OUT_OF_RANGE and writes nothing;
// it closes a connection that sends a bad header or an oversized control payload.
#pragma once
#include <cstdint>
#include <cstring>

namespace mc::wire {

constexpr uint32_t kMagic = 0x3157434d;
constexpr uint16_t kVersion = 1;
constexpr uint64_t kMaxControlPayload = 64ull << 20;  // descriptors, error texts
constexpr uint64_t kMaxDrain = 1ull << 20;  // a refused WRITE's payload is skipped up to this

enum MsgType : uint16_t {
  GET_DESC = 1,
  DESC = 2,
  PING = 3,
  PONG = 4,
  WRITE = 5,
  WRITE_ACK = 6,
  READ = 7,
  READ_DATA = 8,
  ERROR = 9,
  CONTROL = 10,        // payload: channel name, NUL, request bytes (transport setup)
  CONTROL_REPLY = 11,  // payload: reply bytes; status: the handler's verdict
  HELLO = 12,          // first message of a data connection; addr: the incarnation expected
};

#pragma pack(push, 1)
struct Header {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  uint64_t id;
  uint64_t addr;
  uint64_t len;
  int32_t status;
  uint32_t aux;
};
#pragma pack(pop)
static_assert(sizeof(Header) == 40, "wire header is 40 bytes");

inline Header make(MsgType t, uint64_t id, uint64_t addr, uint64_t len, int32_t status = 0) {
  Header h;
  h.magic = kMagic;
  h.version = kVersion;
  h.type = t;
  h.id = id;
  h.addr = addr;
  h.len = len;
  h.status = status;
  h.aux = 0;
  return h;
}

}  // namespace mc::wire
