#include "common/unix_msg.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

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

}  // namespace mc
