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
// MC_ERR_PEER_DOWN) and closes, so no stale address is ever written. Control connections send
// HELLO too (incarnation 0: any). Without auth_tokens there is no reply on success and the
// client pipelines its requests right behind the HELLO.
//
// Admission (engines with an auth_token; proto/auth.h). The token never crosses the wire:
//
//   client                                           server
//   HELLO  addr=incarnation, len=32: nonce_c   ->
//                                              <-    AUTH_CHALLENGE len=64: nonce_s | proof_s
//   checks proof_s, else ERROR DENIED + close
//   AUTH_RESPONSE len=32: proof_c              ->
//   (requests may follow at once)                    checks proof_c, else ERROR DENIED + close
//                                              <-    AUTH_OK (then the replies to the requests)
//
//   proof_s = HMAC-SHA256(token, "mc-auth-1 server" | nonce_c | nonce_s)
//   proof_c = HMAC-SHA256(token, "mc-auth-1 client" | nonce_s | nonce_c)
//
// Why so: both nonces are 32 fresh bytes from OpenSSL's CSPRNG, so a recorded exchange replayed
// to either side meets a nonce it has never seen and its proof does not match; the two labels
// (and the swapped nonce order) bind each proof to its direction, so a server's proof reflected
// back as a client's (or one connection's answer used on another) fails; each side proves the
// token before the other sends anything that matters: the client sends no request before the
// server proved the token, the server serves nothing before the client did. That costs one
// extra round trip per connection (HELLO -> AUTH_CHALLENGE), never one per request. Proofs are
// compared in constant time. Both sides learn the outcome: a refusal is an ERROR with status
// MC_ERR_DENIED and a text saying why (no token, a token where none is expected, a proof that
// does not match), success is AUTH_OK. A token-less engine refuses a HELLO with a nonce and an
// engine with a token refuses a HELLO without one, and anything but HELLO as a first message.
// A token-less engine still takes a bare first request (GET_DESC, PING) for old clients.
// What this does not give: payloads are not encrypted or integrity-protected after admission
// (as with RDMA); see docs/security.md.
//
// Unadmitted connections are bounded: the listener runs every handshake itself on
// non-blocking sockets (no thread per connection), keeps at most kMaxPending of them (one more
// pushes the oldest out, closed at once) and closes any that has not finished within
// min(timeout_ms, kHandshakeMs); only an admitted connection gets a serving thread.
// GET_DESC with addr = V != 0 and id = an incarnation asks for what changed since version V of
// that incarnation; the reply is then a "delta" descriptor (proto/descriptor.h) when the
// target still knows, else the full one.
// Fencing (why a WRITE reported FAILED never lands later). A connection that broke with WRITEs
// unanswered may still deliver them: the initiator's kernel retransmits what it had queued, and
// the target may hold a whole request in its socket buffer. So every data connection names
// itself right after admission with BIND (id = a random number of the initiator's transport,
// addr = the connection's number, payload = the numbers of that initiator's broken connections
// to this target not yet fenced, 8 bytes each, at most kMaxFence). Before the target serves
// anything after a BIND, it shuts every named connection it serves and waits until each
// handler stopped touching memory; a named connection it has not seen yet is refused when its
// own BIND arrives. The initiator sends nothing new over a connection older than its latest
// breakage (it opens a new one, whose BIND carries the list), so every later request is
// served after the broken connection is gone. No reply on success: the first reply on the
// connection confirms the fence; a refusal is ERROR and the connection closes.
// Heartbeats. A peer that watches this engine sends WATCH (addr = its heartbeat period) on an
// admitted control connection; the engine answers with a BEAT at once and then sends one every
// period from its listener's event loop, until the connection closes. The watcher never has
// to ask again: it does not wake for each BEAT (it looks at all its watched connections at once,
// a few times a period) and learns of a closed connection at once. A missing BEAT is silence,
// as an unanswered PING is. A BEAT that finds the watcher's socket buffer full is skipped (the
// watcher drains it). Anything a watcher sends after WATCH ends the connection. An engine that
// does not know WATCH answers ERROR and closes: the watcher then PINGs that peer as before.
// Control messages ride the same listener: GET_DESC returns the engine's descriptor (JSON,
// see proto/descriptor.h), PING returns PONG with the incarnation, CONTROL carries a
// transport's own setup exchange (e.g. RDMA queue-pair numbers) to the engine's handler. The target refuses
// any range outside its registered buffers with status MC_ERR_OUT_OF_RANGE and writes nothing; it closes a
// connection that sends a bad header or an oversized control payload.
#pragma once
#include <cstdint>
#include <cstring>

namespace mc::wire {

constexpr uint32_t kMagic = 0x3157434d;
constexpr uint16_t kVersion = 1;
constexpr uint64_t kMaxControlPayload = 64ull << 20;  // descriptors, error texts
constexpr uint64_t kMaxDrain = 1ull << 20;            // a refused WRITE's payload is skipped up to this

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
  CONTROL = 10,         // payload: channel name, NUL, request bytes (transport setup)
  CONTROL_REPLY = 11,   // payload: reply bytes; status: the handler's verdict
  HELLO = 12,           // first message of a connection; addr: the incarnation expected (0:
                        // any); len: 0, or 32 (nonce_c) from an engine with an auth_token
  AUTH_CHALLENGE = 13,  // server -> client; payload: nonce_s (32) | proof_s (32)
  AUTH_RESPONSE = 14,   // client -> server; payload: proof_c (32)
  AUTH_OK = 15,         // server -> client: the client's proof matched; no payload
  BIND = 16,            // client -> server after admission; id: nonce, addr: connection number,
                        // payload: numbers of connections to end first (u64 each; see Fencing)
  WATCH = 17,           // client -> server on a control connection; addr: a period in ms (see
                        // Heartbeats); the connection carries nothing else afterwards
  BEAT = 18,            // server -> client, every period of a WATCH; id: the WATCH's, addr:
                        // the incarnation (as PONG)
};

constexpr uint64_t kMinWatchMs = 10;      // a WATCH's period is clamped to [kMinWatchMs,
constexpr uint64_t kMaxWatchMs = 600000;  // kMaxWatchMs] (heartbeat_ms's range)

constexpr uint32_t kMaxPending = 64;      // connections still in their handshake, per listener
constexpr uint32_t kHandshakeMs = 5000;   // a handshake must end within min(timeout_ms, this)
constexpr uint64_t kMaxErrorText = 4096;  // ERROR payloads longer than this are not read
constexpr uint64_t kMaxFence = 256;       // connection numbers one BIND may name

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
