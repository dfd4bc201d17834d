// Socket utilities: addresses, RAII file descriptors, connect with a deadline, exact I/O.
#pragma once
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "util/status.h"

namespace mc {

// host is a numeric IPv4 or IPv6 address, without brackets. port_hi > port: a listen range
// [port, port_hi] (tcp_listen takes the first free one; nothing can dial a range).
struct HostPort {
  std::string host;
  uint16_t port = 0;
  uint16_t port_hi = 0;
  bool v6() const { return host.find(':') != std::string::npos; }
  // "A.B.C.D:PORT" or "[V6]:PORT", with "-HI" after a range's first port.
  std::string str() const;
};

// "A.B.C.D:PORT", "[IPV6]:PORT" or "localhost:PORT" (localhost becomes 127.0.0.1); PORT may be
// a range "LO-HI" (LO <= HI, LO >= 1), for tcp_listen.
Status parse_host_port(const std::string &s, HostPort *out);

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd &operator=(Fd &&o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset(int fd = -1);
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

uint64_t now_ms();  // monotonic
uint64_t now_us();  // monotonic

// Binds and listens; *bound gets the actual address (port 0 resolved). A range binds its first
// free port; every port taken: MC_ERR_TRANSPORT naming the range.
Status tcp_listen(const HostPort &addr, Fd *out, HostPort *bound);
// The socket address of hp (IPv4, or IPv6 when its host has a ':'), for a non-blocking connect
// of one's own; MC_ERR_INVALID_ARG when the host is not a numeric address.
Status socket_address(const HostPort &hp, struct sockaddr_storage *ss, socklen_t *len);
// Connects within timeout_ms. A port range is MC_ERR_INVALID_ARG. Refused: MC_ERR_PEER_DOWN at once; no
// answer in time: MC_ERR_PEER_DOWN after the timeout. The socket is blocking, TCP_NODELAY, large buffers.
Status tcp_connect(const HostPort &addr, uint32_t timeout_ms, Fd *out);
// TCP_NODELAY, SO_SNDBUF/SO_RCVBUF, keep-alive.
void tune_socket(int fd);
// Sets SO_RCVTIMEO/SO_SNDTIMEO (0 = none).
void set_io_timeout(int fd, uint32_t timeout_ms);

// Blocking exact I/O; false on error or EOF (errno tells; EOF gives errno 0).
bool write_all(int fd, const void *buf, size_t len);
bool writev_all(int fd, struct iovec *iov, int iovcnt);
bool read_all(int fd, void *buf, size_t len);

// A read buffer that hands out small headers without a syscall each and moves large payloads
// straight from the socket into their destination.
class BufferedReader {
 public:
  explicit BufferedReader(size_t cap = 256 * 1024);
  ~BufferedReader();
  BufferedReader(const BufferedReader &) = delete;
  BufferedReader &operator=(const BufferedReader &) = delete;
  void attach(int fd) { fd_ = fd; }
  // Reads exactly len bytes into dst. false on error/EOF.
  bool read(void *dst, size_t len);
  // Discards len bytes.
  bool skip(size_t len);
  // Bytes already read from the socket by someone else, handed out before any new read.
  void preload(const std::string &bytes);
  size_t buffered() const { return end_ - pos_; }

 private:
  bool fill();
  int fd_ = -1;
  char *buf_;
  size_t cap_, pos_ = 0, end_ = 0;
};

}  // namespace mc
