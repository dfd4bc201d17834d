// Admission of peers: the mutual HMAC challenge-response that every TCP connection (control and
// data) and every same-host socket runs before anything else when the engine has an auth_token.
// The exchange and why it is built so are in the block comment of proto/wire.h.
#pragma once
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "util/status.h"
#include "proto/wire.h"

namespace mc::auth {

constexpr size_t kNonce = 32;  // bytes of each side's random nonce
constexpr size_t kMac = 32;    // HMAC-SHA256

// Fills p with n bytes from OpenSSL's CSPRNG (RAND_bytes). False when it has no entropy.
bool random_bytes(uint8_t *p, size_t n);

// The server's proof: HMAC-SHA256(token, "mc-auth-1 server" | nonce_c | nonce_s).
void server_proof(const std::string &token, const uint8_t *nonce_c, const uint8_t *nonce_s,
                  uint8_t out[kMac]);
// The client's proof: HMAC-SHA256(token, "mc-auth-1 client" | nonce_s | nonce_c).
void client_proof(const std::string &token, const uint8_t *nonce_s, const uint8_t *nonce_c,
                  uint8_t out[kMac]);
// Constant-time comparison (CRYPTO_memcmp).
bool same(const uint8_t *a, const uint8_t *b, size_t n);

// The server side of the TCP handshake as a pure state machine over the bytes a client sends,
// so the listener can run it on non-blocking sockets without a thread per connection (and the
// fuzzer can drive it). Feed it exactly want() bytes at a time (fewer is fine); after each feed
// send take_output() to the client, then look at state().
class ServerHandshake {
 public:
  enum State { kReading, kAdmitted, kRefused };
  // token empty: this engine has none (a token-less peer is admitted on its first message).
  // incarnation: this engine's, checked against a HELLO's expected one (0 there: any).
  ServerHandshake(const std::string &token, uint64_t incarnation);
  State state() const { return state_; }
  size_t want() const;
  State feed(const uint8_t *p, size_t n);
  // Bytes to send now (challenge, AUTH_OK or the ERROR of a refusal); clears them.
  std::string take_output();
  // Why it refused, for the log (the client got the same text in an ERROR).
  mc_status_t code() const { return code_; }
  const std::string &why() const { return why_; }
  // A token-less engine admits a bare request (GET_DESC, PING, ...) sent without HELLO: the
  // header already read, to be served first. Meaningful when has_first().
  bool has_first() const { return has_first_; }
  const wire::Header &first() const { return first_; }
  // Whether a HELLO was part of the admission (false for a bare request).
  bool authenticated() const { return authenticated_; }

 private:
  enum Phase { kHello, kHelloNonce, kResponse, kResponseMac, kClientError };
  void need(Phase p, size_t n);
  void refuse(mc_status_t code, const std::string &why, bool tell_client = true);
  void on_unit();

  std::string token_;
  uint64_t incarnation_;
  State state_ = kReading;
  Phase phase_ = kHello;
  size_t need_ = sizeof(wire::Header);
  std::string buf_;
  std::string out_;
  mc_status_t code_ = MC_OK;
  std::string why_;
  bool has_first_ = false;
  bool authenticated_ = false;
  wire::Header first_{};
  uint8_t nonce_c_[kNonce] = {};
  uint8_t nonce_s_[kNonce] = {};
};

// The client side as a state machine over the bytes the server sends, for callers on
// non-blocking sockets (the TCP transport's event loops). Send take_output() after construction
// and after each feed; feed exactly want() bytes at a time (fewer is fine). kDone: requests may
// follow at once (with a token the server's first message is then AUTH_OK, as with
// client_handshake). kFailed: status() says why; send take_output() (best effort) and close.
class ClientHandshake {
 public:
  enum State { kReading, kDone, kFailed };
  ClientHandshake(const std::string &token, uint64_t expect_incarnation, const std::string &peer);
  State state() const { return state_; }
  size_t want() const { return state_ == kReading ? need_ - buf_.size() : 0; }
  State feed(const uint8_t *p, size_t n);
  std::string take_output();
  const Status &status() const { return status_; }

 private:
  enum Phase { kHeader, kChallenge, kErrorText };
  void fail(Status st);
  void on_unit();

  std::string token_;
  std::string peer_;
  State state_ = kReading;
  Phase phase_ = kHeader;
  size_t need_ = sizeof(wire::Header);
  std::string buf_;
  std::string out_;
  Status status_;
  wire::Header err_{};
  uint8_t nonce_c_[kNonce] = {};
};

// The client side over a connected blocking socket (its I/O timeout set by the caller). Sends
// HELLO (expect_incarnation: 0 for any) and, with a token, answers the server's challenge after
// checking the server's proof. `extra` (may be empty) goes out in the same write as the last
// handshake message, so a control request costs no extra send. On MC_OK the caller may send
// requests at once; with a token the server's first message is then AUTH_OK (see
// read_auth_ok). A refusal is MC_ERR_DENIED with a message that says why; peer names the
// server in messages.
Status client_handshake(int fd, const std::string &token, uint64_t expect_incarnation,
                        const std::string &peer, const iovec *extra, int n_extra);

// Checks the server's verdict after client_handshake: with a token, h (the first header the
// server sent) must be AUTH_OK; an ERROR is turned into its status with its text (read with
// read_text, which must read exactly the n bytes asked for into the buffer). MC_OK: admitted.
Status check_verdict(const wire::Header &h, const std::string &peer,
                     bool (*read_text)(void *ctx, void *buf, size_t n), void *ctx);

}  // namespace mc::auth
