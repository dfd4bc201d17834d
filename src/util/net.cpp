#include "util/net.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>

#include "util/config.h"

namespace mc {

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

uint64_t now_ms() { return now_us() / 1000; }
uint64_t now_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

std::string HostPort::str() const {
  std::string h = v6() ? "[" + host + "]" : host;
  std::string p = std::to_string(port);
  if (port_hi > port) p += "-" + std::to_string(port_hi);
  return h + ":" + p;
}

// PORT or LO-HI into out's port (and port_hi for a range).
static bool parse_ports(const std::string &s, HostPort *out) {
  auto dash = s.find('-');
  int64_t lo, hi;
  if (dash == std::string::npos) {
    if (!parse_int(s, 0, 65535, &lo)) return false;
    out->port = static_cast<uint16_t>(lo);
    out->port_hi = 0;
    return true;
  }
  if (!parse_int(s.substr(0, dash), 1, 65535, &lo) || !parse_int(s.substr(dash + 1), 1, 65535, &hi) ||
      hi < lo)
    return false;
  out->port = static_cast<uint16_t>(lo);
  out->port_hi = hi > lo ? static_cast<uint16_t>(hi) : 0;
  return true;
}

Status parse_host_port(const std::string &s, HostPort *out) {
  std::string host, ports;
  if (!s.empty() && s[0] == '[') {  // [IPV6]:PORT: the brackets keep the address's colons apart
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return Err(MC_ERR_INVALID_ARG, "\"" + s + "\" is not [IPV6]:PORT");
    host = s.substr(1, close - 1);
    ports = s.substr(close + 2);
    in6_addr a6;
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1)
      return Err(MC_ERR_INVALID_ARG, "\"" + s + "\": \"" + host + "\" is not a numeric IPv6 address");
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0)
      return Err(MC_ERR_INVALID_ARG, "\"" + s + "\" is not HOST:PORT");
    host = s.substr(0, colon);
    ports = s.substr(colon + 1);
    if (host == "localhost") host = "127.0.0.1";
    in_addr a;
    if (inet_pton(AF_INET, host.c_str(), &a) != 1)
      return Err(MC_ERR_INVALID_ARG, "\"" + s +
                                         "\": host must be a numeric IPv4 address, an IPv6 address in "
                                         "brackets ([::1]) or localhost");
  }
  HostPort hp;
  if (!parse_ports(ports, &hp))
    return Err(MC_ERR_INVALID_ARG, "\"" + s + "\": port must be 0..65535, or a range LO-HI within 1..65535");
  out->host = host;
  out->port = hp.port;
  out->port_hi = hp.port_hi;
  return Status::Ok();
}

// The socket address of hp (family from its host), port taken from port.
static socklen_t to_sockaddr(const HostPort &hp, uint16_t port, sockaddr_storage *ss) {
  *ss = sockaddr_storage{};
  if (hp.v6()) {
    auto *sa = reinterpret_cast<sockaddr_in6 *>(ss);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(port);
    inet_pton(AF_INET6, hp.host.c_str(), &sa->sin6_addr);
    return sizeof *sa;
  }
  auto *sa = reinterpret_cast<sockaddr_in *>(ss);
  sa->sin_family = AF_INET;
  sa->sin_port = htons(port);
  inet_pton(AF_INET, hp.host.c_str(), &sa->sin_addr);
  return sizeof *sa;
}

Status socket_address(const HostPort &hp, sockaddr_storage *ss, socklen_t *len) {
  *len = to_sockaddr(hp, hp.port, ss);
  unsigned char probe[16];
  if (inet_pton(hp.v6() ? AF_INET6 : AF_INET, hp.host.c_str(), probe) != 1)
    return Err(MC_ERR_INVALID_ARG, "\"" + hp.host + "\" is not a numeric IPv4 or IPv6 address");
  return Status::Ok();
}

static uint16_t port_of(const sockaddr_storage &ss) {
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6 *>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<const sockaddr_in *>(&ss)->sin_port);
}

void tune_socket(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  int sz = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
}

void set_io_timeout(int fd, uint32_t timeout_ms) {
  timeval tv{};
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = (timeout_ms % 1000) * 1000;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// One bind + listen on addr.host at port; *err_no gets bind's errno when that fails.
static Status listen_one(const HostPort &addr, uint16_t port, Fd *out, uint16_t *bound_port, int *err_no) {
  *err_no = 0;
  Fd fd(::socket(addr.v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Err(MC_ERR_TRANSPORT, std::string("socket: ") + std::strerror(errno));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss;
  socklen_t len = to_sockaddr(addr, port, &ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&ss), len) != 0) {
    *err_no = errno;
    return Err(MC_ERR_TRANSPORT, std::string("bind: ") + std::strerror(errno));
  }
  if (::listen(fd.get(), 1024) != 0) return Err(MC_ERR_TRANSPORT, std::strerror(errno));
  len = sizeof ss;
  getsockname(fd.get(), reinterpret_cast<sockaddr *>(&ss), &len);
  *bound_port = port_of(ss);
  *out = std::move(fd);
  return Status::Ok();
}

Status tcp_listen(const HostPort &addr, Fd *out, HostPort *bound) {
  uint32_t hi = addr.port_hi > addr.port ? addr.port_hi : addr.port;
  for (uint32_t p = addr.port;; p++) {
    uint16_t got = 0;
    int err_no = 0;
    Status st = listen_one(addr, static_cast<uint16_t>(p), out, &got, &err_no);
    if (st.ok()) {
      *bound = HostPort{addr.host, got, 0};
      return Status::Ok();
    }
    // Only a taken port moves on to the next one; any other failure is the same on every port.
    if (err_no != EADDRINUSE || p >= hi) {
      if (err_no == EADDRINUSE && hi > addr.port)
        return Err(MC_ERR_TRANSPORT, "cannot listen on " + addr.str() + ": every port of the range " +
                                         std::to_string(addr.port) + "-" + std::to_string(hi) + " is in use");
      return Err(MC_ERR_TRANSPORT, "cannot listen on " + addr.str() + ": " + st.message());
    }
  }
}

Status tcp_connect(const HostPort &addr, uint32_t timeout_ms, Fd *out) {
  if (addr.port_hi > addr.port)
    return Err(MC_ERR_INVALID_ARG, "cannot connect to " + addr.str() + ": a port range is not an address");
  Fd fd(::socket(addr.v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) {
    int e = errno;
    return Err(e == EMFILE || e == ENFILE ? MC_ERR_NO_MEMORY : MC_ERR_TRANSPORT,
               "cannot connect to " + addr.str() + ": socket: " + std::strerror(e));
  }
  tune_socket(fd.get());
  sockaddr_storage ss;
  socklen_t sl = to_sockaddr(addr, addr.port, &ss);
  int rc = ::connect(fd.get(), reinterpret_cast<sockaddr *>(&ss), sl);
  if (rc != 0 && errno != EINPROGRESS)
    return Err(MC_ERR_PEER_DOWN, "cannot connect to " + addr.str() + ": " + std::strerror(errno));
  if (rc != 0) {
    pollfd p{fd.get(), POLLOUT, 0};
    uint64_t deadline = now_ms() + timeout_ms;
    for (;;) {
      uint64_t now = now_ms();
      int left = now >= deadline ? 0 : static_cast<int>(deadline - now);
      rc = ::poll(&p, 1, left);
      if (rc < 0 && errno == EINTR) continue;
      break;
    }
    if (rc == 0)
      return Err(MC_ERR_PEER_DOWN, "cannot connect to " + addr.str() + ": no answer within " +
                                       std::to_string(timeout_ms) + " ms");
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &el);
    if (err != 0) return Err(MC_ERR_PEER_DOWN, "cannot connect to " + addr.str() + ": " + std::strerror(err));
  }
  int fl = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  *out = std::move(fd);
  return Status::Ok();
}

bool write_all(int fd, const void *buf, size_t len) {
  const char *p = static_cast<const char *>(buf);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool writev_all(int fd, struct iovec *iov, int iovcnt) {
  while (iovcnt > 0) {
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(iovcnt);
    ssize_t n = ::sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    size_t left = static_cast<size_t>(n);
    while (iovcnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<char *>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

bool read_all(int fd, void *buf, size_t len) {
  char *p = static_cast<char *>(buf);
  while (len > 0) {
    ssize_t n = ::recv(fd, p, len, 0);
    if (n == 0) {
      errno = 0;
      return false;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

BufferedReader::BufferedReader(size_t cap) : buf_(static_cast<char *>(std::malloc(cap))), cap_(cap) {
  if (!buf_) throw std::bad_alloc();
}
BufferedReader::~BufferedReader() { std::free(buf_); }

bool BufferedReader::fill() {
  if (pos_ == end_) pos_ = end_ = 0;
  if (end_ == cap_) {
    std::memmove(buf_, buf_ + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
  }
  for (;;) {
    ssize_t n = ::recv(fd_, buf_ + end_, cap_ - end_, 0);
    if (n == 0) {
      errno = 0;
      return false;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    end_ += static_cast<size_t>(n);
    return true;
  }
}

bool BufferedReader::read(void *dst, size_t len) {
  char *d = static_cast<char *>(dst);
  while (len > 0) {
    size_t have = end_ - pos_;
    if (have > 0) {
      size_t n = have < len ? have : len;
      std::memcpy(d, buf_ + pos_, n);
      pos_ += n;
      d += n;
      len -= n;
      continue;
    }
    // Large payloads go straight from the socket into place: no second copy.
    if (len >= cap_ / 4) return read_all(fd_, d, len);
    if (!fill()) return false;
  }
  return true;
}

void BufferedReader::preload(const std::string &bytes) {
  size_t have = end_ - pos_;
  if (have + bytes.size() > cap_) {
    char *nb = static_cast<char *>(std::malloc(have + bytes.size()));
    if (!nb) throw std::bad_alloc();
    std::memcpy(nb, buf_ + pos_, have);
    std::free(buf_);
    buf_ = nb;
    cap_ = have + bytes.size();
  } else {
    std::memmove(buf_, buf_ + pos_, have);
  }
  pos_ = 0;
  end_ = have;
  std::memcpy(buf_ + end_, bytes.data(), bytes.size());
  end_ += bytes.size();
}

bool BufferedReader::skip(size_t len) {
  while (len > 0) {
    size_t have = end_ - pos_;
    if (have == 0) {
      if (!fill()) return false;
      continue;
    }
    size_t n = have < len ? have : len;
    pos_ += n;
    len -= n;
  }
  return true;
}

}  // namespace mc
