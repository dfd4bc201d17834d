// libFuzzer target for the admission handshake parser (mc::auth::ServerHandshake, the state
// machine the TCP listener runs on every incoming connection before a thread serves it; format
// in src/proto/wire.h).
//
// The first input byte picks the setup (bit 0: the engine has an auth_token; bit 1: feed the
// bytes one at a time instead of in want()-sized pieces; bit 2: splice in a correct client proof
// for the challenge the machine issued, so the admitted path and what follows it are reached).
// The rest is what a client sends. Checked per input, the way the listener relies on them:
//  - want() is never 0 while reading and never larger than kMaxErrorText + header, so the
//    listener's fixed buffer always fits and a handshake always makes progress;
//  - feed never consumes more than asked, and the machine ends in one state for good;
//  - without a token nothing is ever sent but an ERROR, and admission needs either a HELLO
//    without nonce or a bare request (kept as first());
//  - with a token, admission happens only through a proof that matches (bit 2), never from
//    fuzzed bytes alone, and every output is a well-formed header with a matching length;
//  - a refusal always has a reason.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "proto/auth.h"
#include "proto/wire.h"

namespace {

namespace wire = mc::wire;
namespace auth = mc::auth;

const std::string kToken = "fuzz token of a reasonable length 0123";

[[noreturn]] void die(const char *what) {
  std::fprintf(stderr, "fuzz_handshake: %s\n", what);
  std::abort();
}

// Every output is a sequence of whole messages: header + exactly len payload bytes.
void check_output(const std::string &out, bool have_token) {
  size_t at = 0;
  while (at < out.size()) {
    if (out.size() - at < sizeof(wire::Header)) die("output ends inside a header");
    wire::Header h;
    std::memcpy(&h, out.data() + at, sizeof h);
    if (h.magic != wire::kMagic || h.version != wire::kVersion) die("output header is malformed");
    if (h.type == wire::AUTH_CHALLENGE || h.type == wire::AUTH_OK) {
      if (!have_token) die("a token-less engine sent a challenge or AUTH_OK");
      if (h.len != (h.type == wire::AUTH_CHALLENGE ? auth::kNonce + auth::kMac : 0)) die("bad length");
    } else if (h.type == wire::ERROR) {
      if (h.status == 0) die("an ERROR without a status");
    } else {
      die("unexpected output type");
    }
    at += sizeof h + h.len;
    if (at > out.size()) die("output payload cut short");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const bool have_token = mode & 1, bytewise = mode & 2, prove = mode & 4;
  data++;
  size--;
  auth::ServerHandshake hs(have_token ? kToken : std::string(), 0x1122334455667788ull);
  uint8_t nonce_c[auth::kNonce] = {};
  uint8_t nonce_s[auth::kNonce] = {};
  bool saw_challenge = false, proved = false;
  std::string spliced;  // the correct AUTH_RESPONSE, queued once a challenge was seen
  size_t pos = 0;
  auto state = hs.state();
  while (state == auth::ServerHandshake::kReading) {
    size_t want = hs.want();
    if (want == 0 || want > wire::kMaxErrorText + sizeof(wire::Header)) die("want() out of bounds");
    const uint8_t *p;
    size_t n;
    if (!spliced.empty()) {
      n = std::min(want, spliced.size());
      p = reinterpret_cast<const uint8_t *>(spliced.data());
    } else {
      if (pos >= size) break;  // the client stopped sending: the deadline would close it
      n = std::min(want, size - pos);
      if (bytewise) n = 1;
      p = data + pos;
    }
    // Remember the nonce a HELLO carries (the bytes right after a HELLO header).
    if (spliced.empty() && !saw_challenge && pos == sizeof(wire::Header) && want == auth::kNonce &&
        n == auth::kNonce)
      std::memcpy(nonce_c, p, auth::kNonce);
    state = hs.feed(p, n);
    if (!spliced.empty()) {
      spliced.erase(0, n);
      if (spliced.empty()) proved = true;
    } else {
      pos += n;
    }
    std::string out = hs.take_output();
    check_output(out, have_token);
    if (out.size() >= sizeof(wire::Header)) {
      wire::Header h;
      std::memcpy(&h, out.data(), sizeof h);
      if (h.type == wire::AUTH_CHALLENGE) {
        if (saw_challenge) die("two challenges");
        saw_challenge = true;
        std::memcpy(nonce_s, out.data() + sizeof h, auth::kNonce);
        uint8_t ps[auth::kMac];
        auth::server_proof(kToken, nonce_c, nonce_s, ps);
        if (bytewise) {
          // nonce_c was fed byte by byte: reconstruct it from the input instead.
          std::memcpy(nonce_c, data + sizeof(wire::Header), auth::kNonce);
          auth::server_proof(kToken, nonce_c, nonce_s, ps);
        }
        if (std::memcmp(ps, out.data() + sizeof h + auth::kNonce, auth::kMac) != 0)
          die("the challenge's proof does not verify");
        if (prove) {
          uint8_t pc[auth::kMac];
          auth::client_proof(kToken, nonce_s, nonce_c, pc);
          wire::Header r = wire::make(wire::AUTH_RESPONSE, 0, 0, auth::kMac);
          spliced.assign(reinterpret_cast<const char *>(&r), sizeof r);
          spliced.append(reinterpret_cast<const char *>(pc), auth::kMac);
        }
      }
    }
  }
  if (state != auth::ServerHandshake::kReading) {
    if (hs.want() != 0) die("want() after the end");
    if (hs.feed(data, size) != state || !hs.take_output().empty()) die("the final state changed");
  }
  if (state == auth::ServerHandshake::kAdmitted) {
    if (have_token && !(proved && hs.authenticated())) die("admitted without a matching proof");
    if (!have_token && hs.authenticated()) die("token-less admission marked authenticated");
  }
  if (state == auth::ServerHandshake::kRefused && hs.why().empty()) die("a refusal without a reason");
  return 0;
}
