// Admission handshake (see proto/wire.h for the exchange and its reasons).
#include "proto/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstring>

#include "util/net.h"

namespace mc::auth {

namespace {
constexpr char kServerLabel[] = "mc-auth-1 server";
constexpr char kClientLabel[] = "mc-auth-1 client";
static_assert(sizeof kServerLabel == sizeof kClientLabel, "labels of one length");

void proof(const std::string &token, const char *label, const uint8_t *a, const uint8_t *b,
           uint8_t out[kMac]) {
  uint8_t msg[sizeof kServerLabel - 1 + 2 * kNonce];
  std::memcpy(msg, label, sizeof kServerLabel - 1);
  std::memcpy(msg + sizeof kServerLabel - 1, a, kNonce);
  std::memcpy(msg + sizeof kServerLabel - 1 + kNonce, b, kNonce);
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()), msg, sizeof msg, out, &len) ||
      len != kMac) {
    // Cannot happen with SHA-256 in libcrypto; a zero proof never matches a real one.
    std::memset(out, 0, kMac);
  }
  OPENSSL_cleanse(msg, sizeof msg);
}
}  // namespace

bool random_bytes(uint8_t *p, size_t n) { return RAND_bytes(p, static_cast<int>(n)) == 1; }

void server_proof(const std::string &token, const uint8_t *nonce_c, const uint8_t *nonce_s,
                  uint8_t out[kMac]) {
  proof(token, kServerLabel, nonce_c, nonce_s, out);
}

void client_proof(const std::string &token, const uint8_t *nonce_s, const uint8_t *nonce_c,
                  uint8_t out[kMac]) {
  proof(token, kClientLabel, nonce_s, nonce_c, out);
}

bool same(const uint8_t *a, const uint8_t *b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

// ------------------------------------------------------------------------------ server

ServerHandshake::ServerHandshake(const std::string &token, uint64_t incarnation)
    : token_(token), incarnation_(incarnation) {
  buf_.reserve(sizeof(wire::Header));
}

size_t ServerHandshake::want() const { return state_ == kReading ? need_ - buf_.size() : 0; }

void ServerHandshake::need(Phase p, size_t n) {
  phase_ = p;
  need_ = n;
  buf_.clear();
}

std::string ServerHandshake::take_output() {
  std::string o;
  o.swap(out_);
  return o;
}

void ServerHandshake::refuse(mc_status_t code, const std::string &why, bool tell_client) {
  state_ = kRefused;
  code_ = code;
  why_ = why;
  if (tell_client) {
    wire::Header h = wire::make(wire::ERROR, 0, 0, why.size(), code);
    out_.append(reinterpret_cast<const char *>(&h), sizeof h);
    out_ += why;
  }
}

ServerHandshake::State ServerHandshake::feed(const uint8_t *p, size_t n) {
  if (state_ != kReading) return state_;
  size_t take = std::min(n, want());
  buf_.append(reinterpret_cast<const char *>(p), take);
  if (buf_.size() == need_) on_unit();
  return state_;
}

void ServerHandshake::on_unit() {
  const bool have_token = !token_.empty();
  switch (phase_) {
    case kHello:
    case kResponse: {
      wire::Header h;
      std::memcpy(&h, buf_.data(), sizeof h);
      if (h.magic != wire::kMagic)
        return refuse(MC_ERR_TRANSPORT, "sent bytes that are not an mc message (bad magic)");
      if (h.version != wire::kVersion)
        return refuse(MC_ERR_TRANSPORT, "speaks wire version " + std::to_string(h.version) +
                                            "; this engine speaks " + std::to_string(wire::kVersion));
      if (phase_ == kResponse) {
        if (h.type == wire::ERROR) {
          if (h.len == 0 || h.len > wire::kMaxErrorText)
            return refuse(MC_ERR_DENIED, "refused this engine's proof of the auth_token", false);
          return need(kClientError, h.len);
        }
        if (h.type != wire::AUTH_RESPONSE || h.len != kMac)
          return refuse(MC_ERR_DENIED, "did not answer the auth_token challenge");
        return need(kResponseMac, kMac);
      }
      if (h.type != wire::HELLO) {
        if (have_token)
          return refuse(MC_ERR_DENIED,
                        "this engine requires an auth_token handshake (HELLO) before any request");
        state_ = kAdmitted;  // a bare request to a token-less engine (older clients do this)
        has_first_ = true;
        first_ = h;
        return;
      }
      if (h.addr != 0 && h.addr != incarnation_)
        return refuse(MC_ERR_PEER_DOWN,
                      "expected another incarnation of this engine (it restarted); refresh the segment");
      if (h.len == 0) {
        if (have_token)
          return refuse(MC_ERR_DENIED,
                        "this engine requires an auth_token and the connecting engine has none");
        state_ = kAdmitted;
        return;
      }
      if (h.len != kNonce)
        return refuse(MC_ERR_TRANSPORT, "sent a HELLO with a payload of " + std::to_string(h.len) + " bytes");
      if (!have_token)
        return refuse(MC_ERR_DENIED, "this engine has no auth_token and the connecting engine requires one");
      return need(kHelloNonce, kNonce);
    }
    case kHelloNonce: {
      std::memcpy(nonce_c_, buf_.data(), kNonce);
      if (!random_bytes(nonce_s_, kNonce))
        return refuse(MC_ERR_INTERNAL, "this engine could not draw a random nonce");
      uint8_t ps[kMac];
      server_proof(token_, nonce_c_, nonce_s_, ps);
      wire::Header h = wire::make(wire::AUTH_CHALLENGE, 0, incarnation_, kNonce + kMac);
      out_.append(reinterpret_cast<const char *>(&h), sizeof h);
      out_.append(reinterpret_cast<const char *>(nonce_s_), kNonce);
      out_.append(reinterpret_cast<const char *>(ps), kMac);
      return need(kResponse, sizeof(wire::Header));
    }
    case kResponseMac: {
      uint8_t want_mac[kMac];
      client_proof(token_, nonce_s_, nonce_c_, want_mac);
      if (!same(want_mac, reinterpret_cast<const uint8_t *>(buf_.data()), kMac))
        return refuse(MC_ERR_DENIED,
                      "the connecting engine's proof of the auth_token does not match (a different "
                      "token, or a replayed handshake)");
      wire::Header h = wire::make(wire::AUTH_OK, 0, incarnation_, 0);
      out_.append(reinterpret_cast<const char *>(&h), sizeof h);
      state_ = kAdmitted;
      authenticated_ = true;
      return;
    }
    case kClientError: {
      std::string text = buf_;
      for (auto &c : text)
        if (static_cast<unsigned char>(c) < 32 || static_cast<unsigned char>(c) > 126) c = '?';
      return refuse(MC_ERR_DENIED, "refused this engine's proof of the auth_token: " + text, false);
    }
  }
}

// ------------------------------------------------------------------------------ client

namespace {
std::string io_text(int err) {
  return err == 0 ? std::string("connection closed by peer") : std::string(std::strerror(err));
}
}  // namespace

Status client_handshake(int fd, const std::string &token, uint64_t expect_incarnation,
                        const std::string &peer, const iovec *extra, int n_extra) {
  iovec iov[8];
  if (n_extra > 6) return Err(MC_ERR_INTERNAL, "client_handshake: too many iovecs");
  if (token.empty()) {
    wire::Header hello = wire::make(wire::HELLO, 0, expect_incarnation, 0);
    iov[0] = {&hello, sizeof hello};
    for (int i = 0; i < n_extra; i++) iov[1 + i] = extra[i];
    if (!writev_all(fd, iov, 1 + n_extra))
      return Err(MC_ERR_PEER_DOWN, "cannot reach " + peer + ": " + io_text(errno));
    return Status::Ok();
  }
  uint8_t nonce_c[kNonce];
  if (!random_bytes(nonce_c, kNonce))
    return Err(MC_ERR_INTERNAL, "could not draw a random nonce (OpenSSL RAND_bytes failed)");
  wire::Header hello = wire::make(wire::HELLO, 0, expect_incarnation, kNonce);
  iov[0] = {&hello, sizeof hello};
  iov[1] = {nonce_c, kNonce};
  if (!writev_all(fd, iov, 2)) return Err(MC_ERR_PEER_DOWN, "cannot reach " + peer + ": " + io_text(errno));
  wire::Header r;
  if (!read_all(fd, &r, sizeof r)) {
    int e = errno;
    return Err(MC_ERR_PEER_DOWN,
               "no answer to the auth_token handshake from " + peer + ": " +
                   (e == EAGAIN || e == EWOULDBLOCK ? std::string("timed out") : io_text(e)));
  }
  if (r.magic != wire::kMagic || r.version != wire::kVersion)
    return Err(MC_ERR_METADATA, peer + " does not speak this mc wire version");
  if (r.type == wire::ERROR)
    return check_verdict(
        r, peer, [](void *c, void *b, size_t n) { return read_all(*static_cast<int *>(c), b, n); }, &fd);
  if (r.type != wire::AUTH_CHALLENGE || r.len != kNonce + kMac)
    return Err(MC_ERR_TRANSPORT, peer + " sent an unexpected reply to the auth_token handshake");
  uint8_t body[kNonce + kMac];
  if (!read_all(fd, body, sizeof body))
    return Err(MC_ERR_PEER_DOWN, "the auth_token challenge from " + peer + " was cut short");
  uint8_t want[kMac];
  server_proof(token, nonce_c, body, want);
  if (!same(want, body + kNonce, kMac)) {
    const std::string why = "the connecting engine's auth_token differs (this engine's proof did not match)";
    wire::Header e = wire::make(wire::ERROR, 0, 0, why.size(), MC_ERR_DENIED);
    iov[0] = {&e, sizeof e};
    iov[1] = {const_cast<char *>(why.data()), why.size()};
    writev_all(fd, iov, 2);  // best effort: the server learns why we hang up
    return Err(MC_ERR_DENIED, peer +
                                  " holds a different auth_token (its proof did not match): "
                                  "refusing it");
  }
  uint8_t pc[kMac];
  client_proof(token, body, nonce_c, pc);
  wire::Header resp = wire::make(wire::AUTH_RESPONSE, 0, 0, kMac);
  iov[0] = {&resp, sizeof resp};
  iov[1] = {pc, kMac};
  for (int i = 0; i < n_extra; i++) iov[2 + i] = extra[i];
  if (!writev_all(fd, iov, 2 + n_extra))
    return Err(MC_ERR_PEER_DOWN, "cannot reach " + peer + ": " + io_text(errno));
  return Status::Ok();
}

ClientHandshake::ClientHandshake(const std::string &token, uint64_t expect_incarnation,
                                 const std::string &peer)
    : token_(token), peer_(peer) {
  if (token_.empty()) {
    wire::Header hello = wire::make(wire::HELLO, 0, expect_incarnation, 0);
    out_.assign(reinterpret_cast<const char *>(&hello), sizeof hello);
    state_ = kDone;
    return;
  }
  if (!random_bytes(nonce_c_, kNonce)) {
    fail(Err(MC_ERR_INTERNAL, "could not draw a random nonce (OpenSSL RAND_bytes failed)"));
    return;
  }
  wire::Header hello = wire::make(wire::HELLO, 0, expect_incarnation, kNonce);
  out_.assign(reinterpret_cast<const char *>(&hello), sizeof hello);
  out_.append(reinterpret_cast<const char *>(nonce_c_), kNonce);
}

std::string ClientHandshake::take_output() {
  std::string o;
  o.swap(out_);
  return o;
}

void ClientHandshake::fail(Status st) {
  state_ = kFailed;
  status_ = std::move(st);
}

ClientHandshake::State ClientHandshake::feed(const uint8_t *p, size_t n) {
  if (state_ != kReading) return state_;
  size_t take = std::min(n, want());
  buf_.append(reinterpret_cast<const char *>(p), take);
  if (buf_.size() == need_) on_unit();
  return state_;
}

void ClientHandshake::on_unit() {
  if (phase_ == kHeader) {
    wire::Header r;
    std::memcpy(&r, buf_.data(), sizeof r);
    buf_.clear();
    if (r.magic != wire::kMagic || r.version != wire::kVersion)
      return fail(Err(MC_ERR_METADATA, peer_ + " does not speak this mc wire version"));
    if (r.type == wire::ERROR) {
      err_ = r;
      if (r.len == 0 || r.len > wire::kMaxErrorText)
        return fail(check_verdict(
            r, peer_, [](void *, void *, size_t) { return false; }, nullptr));
      phase_ = kErrorText;
      need_ = r.len;
      return;
    }
    if (r.type != wire::AUTH_CHALLENGE || r.len != kNonce + kMac)
      return fail(Err(MC_ERR_TRANSPORT, peer_ + " sent an unexpected reply to the auth_token handshake"));
    phase_ = kChallenge;
    need_ = kNonce + kMac;
    return;
  }
  if (phase_ == kErrorText) {
    std::string text = buf_;
    return fail(check_verdict(
        err_, peer_,
        [](void *c, void *b, size_t n) {
          std::memcpy(b, static_cast<std::string *>(c)->data(), n);
          return true;
        },
        &text));
  }
  const uint8_t *body = reinterpret_cast<const uint8_t *>(buf_.data());
  uint8_t want_mac[kMac];
  server_proof(token_, nonce_c_, body, want_mac);
  if (!same(want_mac, body + kNonce, kMac)) {
    const std::string why = "the connecting engine's auth_token differs (this engine's proof did not match)";
    wire::Header e = wire::make(wire::ERROR, 0, 0, why.size(), MC_ERR_DENIED);
    out_.append(reinterpret_cast<const char *>(&e), sizeof e);
    out_ += why;  // best effort: the server learns why we hang up
    return fail(
        Err(MC_ERR_DENIED, peer_ + " holds a different auth_token (its proof did not match): refusing it"));
  }
  uint8_t pc[kMac];
  client_proof(token_, body, nonce_c_, pc);
  wire::Header resp = wire::make(wire::AUTH_RESPONSE, 0, 0, kMac);
  out_.append(reinterpret_cast<const char *>(&resp), sizeof resp);
  out_.append(reinterpret_cast<const char *>(pc), kMac);
  state_ = kDone;
}

Status check_verdict(const wire::Header &h, const std::string &peer,
                     bool (*read_text)(void *ctx, void *buf, size_t n), void *ctx) {
  if (h.magic != wire::kMagic || h.version != wire::kVersion)
    return Err(MC_ERR_METADATA, peer + " does not speak this mc wire version");
  if (h.type == wire::AUTH_OK && h.len == 0) return Status::Ok();
  if (h.type != wire::ERROR)
    return Err(MC_ERR_TRANSPORT, peer + " sent an unexpected reply to the auth_token handshake");
  std::string text;
  if (h.len > 0 && h.len <= wire::kMaxErrorText) {
    text.assign(h.len, '\0');
    if (!read_text(ctx, text.data(), text.size())) text.clear();
  }
  mc_status_t code = h.status;
  if (code != MC_ERR_DENIED && code != MC_ERR_PEER_DOWN) code = MC_ERR_TRANSPORT;
  if (code == MC_ERR_DENIED)
    return Err(code, peer + " denied access: " + (text.empty() ? "no reason given" : text));
  return Err(code, peer + " refused the connection: " + (text.empty() ? "no reason given" : text));
}

}  // namespace mc::auth
