#include "proto/unix_msg.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "proto/auth.h"
#include "util/hex.h"

namespace mc {

bool unix_send_msg(int fd, const std::string &body, int pass_fd) {
  uint32_t len = static_cast<uint32_t>(body.size());
  iovec iov[2] = {{&len, 4}, {const_cast<char *>(body.data()), body.size()}};
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = body.empty() ? 1 : 2;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
  if (pass_fd >= 0) {
    std::memset(cbuf, 0, sizeof cbuf);
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = ::sendmsg(fd, &mh, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return false;
  size_t total = 4 + body.size();
  if (static_cast<size_t>(n) == total) return true;
  // Rest of a partial send: plain writes (the fd, if any, went with the first byte).
  size_t done = static_cast<size_t>(n);
  std::string all(reinterpret_cast<char *>(&len), 4);
  all += body;
  return write_all(fd, all.data() + done, total - done);
}

bool unix_recv_msg(int fd, std::string *body, int *got_fd, uint32_t max_len) {
  if (got_fd) *got_fd = -1;
  uint32_t len = 0;
  iovec iov{&len, 4};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t n;
  do {
    n = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int f;
      std::memcpy(&f, CMSG_DATA(c), sizeof f);
      if (got_fd && *got_fd < 0)
        *got_fd = f;
      else
        ::close(f);
    }
  }
  if (n < 4 && !read_all(fd, reinterpret_cast<char *>(&len) + n, 4 - static_cast<size_t>(n))) return false;
  if (len > max_len) return false;
  body->assign(len, '\0');
  return len == 0 || read_all(fd, body->data(), len);
}

Status unix_listen(const std::string &name, Fd *out) {
  Fd l(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!l.valid()) return Err(MC_ERR_UNSUPPORTED, std::string("socket(AF_UNIX): ") + std::strerror(errno));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof sa.sun_path) return Err(MC_ERR_INVALID_ARG, "socket name too long");
  std::memcpy(sa.sun_path + 1, name.data(), name.size());  // abstract namespace
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(l.get(), reinterpret_cast<sockaddr *>(&sa), len) != 0 || ::listen(l.get(), 256) != 0)
    return Err(MC_ERR_UNSUPPORTED, "same-host socket " + name + ": " + std::strerror(errno));
  *out = std::move(l);
  return Status::Ok();
}

Status unix_connect(const std::string &name, uint32_t timeout_ms, Fd *out) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Err(MC_ERR_TRANSPORT, std::string("socket(AF_UNIX): ") + std::strerror(errno));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof sa.sun_path) return Err(MC_ERR_INVALID_ARG, "socket name too long");
  std::memcpy(sa.sun_path + 1, name.data(), name.size());  // abstract namespace
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&sa), len) != 0)
    return Err(MC_ERR_PEER_DOWN, "cannot connect to same-host socket " + name + ": " + std::strerror(errno));
  set_io_timeout(fd.get(), timeout_ms);
  *out = std::move(fd);
  return Status::Ok();
}

// ------------------------------------------------------------------------------ admission

namespace {
// Sends m and reads the answer; an "ERR ..." answer becomes a status (its fd closed).
Status ask(int fd, const std::string &m, const std::string &who, uint32_t max_len, std::string *reply,
           int *got_fd) {
  if (!unix_send_msg(fd, m) || !unix_recv_msg(fd, reply, got_fd, max_len))
    return Err(MC_ERR_PEER_DOWN, who + " closed its socket");
  if (reply->rfind("ERR", 0) != 0) return Status::Ok();
  if (got_fd && *got_fd >= 0) {
    ::close(*got_fd);
    *got_fd = -1;
  }
  if (reply->rfind("ERR DENIED ", 0) == 0)
    return Err(MC_ERR_DENIED, who + " denied access: " + reply->substr(11));
  return Err(MC_ERR_TRANSPORT, who + ": " + (reply->size() > 4 ? reply->substr(4) : std::string("refused")));
}
}  // namespace

Status unix_hello(int fd, const std::string &token, uint64_t incarnation, const std::string &who,
                  uint32_t max_len, std::string *reply, int *got_fd) {
  int scratch = -1;
  if (!got_fd) got_fd = &scratch;
  *got_fd = -1;
  char hello[40];
  std::snprintf(hello, sizeof hello, "HELLO %016" PRIx64, incarnation);
  std::string msg = hello;
  uint8_t nonce_c[auth::kNonce];
  if (!token.empty()) {
    if (!auth::random_bytes(nonce_c, sizeof nonce_c))
      return Err(MC_ERR_INTERNAL, "could not draw a random nonce (OpenSSL RAND_bytes failed)");
    msg += " " + hex::encode(nonce_c, sizeof nonce_c);
  }
  Status st = ask(fd, msg, who, max_len, reply, got_fd);
  if (!st.ok() || token.empty()) {
    if (scratch >= 0) ::close(scratch);
    return st;
  }
  // A token engine expects "CHALLENGE <nonce_s> <proof_s>" and nothing else: a token-less
  // server admits at once (its admission reply), which a token engine must refuse too.
  if (*got_fd >= 0) {
    ::close(*got_fd);
    *got_fd = -1;
  }
  uint8_t nonce_s[auth::kNonce], ps[auth::kMac], want[auth::kMac];
  if (reply->size() != 10 + 2 * auth::kNonce + 1 + 2 * auth::kMac || reply->rfind("CHALLENGE ", 0) != 0 ||
      !hex::decode(reply->substr(10, 2 * auth::kNonce), nonce_s, auth::kNonce) ||
      !hex::decode(reply->substr(11 + 2 * auth::kNonce), ps, auth::kMac))
    return Err(MC_ERR_DENIED, who +
                                  " sent no auth_token challenge (it has no auth_token, or is no mc engine): "
                                  "refusing it");
  auth::server_proof(token, nonce_c, nonce_s, want);
  if (!auth::same(want, ps, auth::kMac)) {
    unix_send_msg(
        fd, "ERR DENIED the connecting engine's auth_token differs (this engine's proof did not match)");
    return Err(MC_ERR_DENIED, who + " holds a different auth_token (its proof did not match): refusing it");
  }
  uint8_t pc[auth::kMac];
  auth::client_proof(token, nonce_s, nonce_c, pc);
  st = ask(fd, "AUTH " + hex::encode(pc, sizeof pc), who, max_len, reply, got_fd);
  if (scratch >= 0) ::close(scratch);
  return st;
}

Status unix_admit(int fd, const std::string &token, uint64_t incarnation, uint32_t max_len) {
  std::string req;
  auto deny = [&](const std::string &why, bool tell) {
    if (tell) unix_send_msg(fd, "ERR DENIED " + why);
    return Err(MC_ERR_DENIED, why);
  };
  auto refuse = [&](const std::string &why) {
    unix_send_msg(fd, "ERR " + why);
    return Err(MC_ERR_TRANSPORT, why);
  };
  if (!unix_recv_msg(fd, &req, nullptr, max_len))
    return Err(MC_ERR_PEER_DOWN, "the connecting process hung up or timed out before HELLO");
  // "HELLO <16 hex>" or "HELLO <16 hex> <64 hex>"
  if (req.rfind("HELLO ", 0) != 0) return refuse("say HELLO first");
  if (req.size() < 6 + 16) return refuse("malformed HELLO");
  uint64_t want = 0;
  if (!hex::parse_u64(std::string_view(req).substr(6, 16), &want)) return refuse("malformed HELLO");
  if (want != incarnation) return refuse("this engine has another incarnation (it restarted)");
  bool has_nonce = req.size() > 6 + 16;
  if (token.empty()) {
    if (has_nonce) return deny("this engine has no auth_token and the connecting engine requires one", true);
    if (req.size() != 6 + 16) return refuse("malformed HELLO");
    return Status::Ok();
  }
  if (!has_nonce) return deny("this engine requires an auth_token and the connecting engine has none", true);
  uint8_t nonce_c[auth::kNonce], nonce_s[auth::kNonce], ps[auth::kMac];
  if (req.size() != 6 + 16 + 1 + 2 * auth::kNonce || req[22] != ' ' ||
      !hex::decode(req.substr(23), nonce_c, auth::kNonce))
    return refuse("malformed HELLO");
  if (!auth::random_bytes(nonce_s, auth::kNonce)) {
    unix_send_msg(fd, "ERR this engine could not draw a random nonce");
    return Err(MC_ERR_INTERNAL, "could not draw a random nonce (OpenSSL RAND_bytes failed)");
  }
  auth::server_proof(token, nonce_c, nonce_s, ps);
  if (!unix_send_msg(fd,
                     "CHALLENGE " + hex::encode(nonce_s, auth::kNonce) + " " + hex::encode(ps, auth::kMac)))
    return Err(MC_ERR_PEER_DOWN, "the connecting process hung up during the handshake");
  if (!unix_recv_msg(fd, &req, nullptr, max_len))
    return Err(MC_ERR_PEER_DOWN,
               "the connecting process hung up or timed out before answering the challenge");
  if (req.rfind("ERR", 0) == 0)
    return deny("the connecting engine refused this engine's proof of the auth_token", false);
  uint8_t pc[auth::kMac], expect[auth::kMac];
  auth::client_proof(token, nonce_s, nonce_c, expect);
  if (req.size() != 5 + 2 * auth::kMac || req.rfind("AUTH ", 0) != 0 ||
      !hex::decode(req.substr(5), pc, auth::kMac) || !auth::same(pc, expect, auth::kMac))
    return deny(
        "the connecting engine's proof of the auth_token does not match (a different token, or a replayed "
        "handshake)",
        true);
  return Status::Ok();
}

}  // namespace mc
