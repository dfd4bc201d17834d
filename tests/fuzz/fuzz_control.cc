// libFuzzer target for the server side of the wire protocol (TcpTransport::serve, the control
// channel and the TCP data path share it; format in src/proto/wire.h).
//
// One engine per process, made through the public API, with two adjacent 64 KiB buffers
// registered at the fixed address 0x10000000 (when that address is free), so that seeds and
// mutations can name registered memory: READs and WRITEs there are served, spans cross the
// boundary at 0x10010000, anything else is refused. Per input: a fresh loopback connection to
// the engine's listener, the input sent as is, a half-close, then every reply read until the
// engine closes the connection. Checked per input: the engine accepts the connection, closes it
// within kEofSeconds after the half-close (serve() must never wait for bytes that cannot come),
// and every 64 inputs still answers a PING with a well-formed PONG. Memory growth shows up
// as libFuzzer's -rss_limit_mb / -malloc_limit_mb; leaks as LeakSanitizer reports.
//
// Why a real socket and not a socketpair fed to serve(): serve() is private to the transport and
// this target must not change it; a loopback connection costs a thread start per input.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "proto/wire.h"
#include "mc.h"

namespace {

constexpr uintptr_t kFixedAddr = 0x10000000;
constexpr size_t kBufLen = 64 << 10;
constexpr int kEofSeconds = 20;

namespace wire = mc::wire;

mc_engine_t *g_engine;
sockaddr_in g_addr;
uint64_t g_inputs;

[[noreturn]] void die(const char *what) {
  std::fprintf(stderr, "fuzz_control: %s (errno %d: %s)\n", what, errno, std::strerror(errno));
  std::abort();
}

void quiet(int, const char *, void *) {}

void setup() {
  // Log lines still get formatted (that code is fuzzed too), then dropped.
  mc_log_set_handler(quiet, nullptr);
  mc_config_t *cfg = nullptr;
  if (mc_config_create(&cfg) != MC_OK || mc_config_set(cfg, "listen", "127.0.0.1:0") != MC_OK ||
      mc_config_set(cfg, "timeout_ms", "2000") != MC_OK)
    die("config");
  if (mc_engine_create(cfg, &g_engine) != MC_OK) {
    std::fprintf(stderr, "fuzz_control: mc_engine_create: %s\n", mc_last_error());
    std::abort();
  }
  mc_config_destroy(cfg);
  void *want = reinterpret_cast<void *>(kFixedAddr);
  void *p = mmap(want, 2 * kBufLen, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (p != want) {
    if (p != MAP_FAILED) munmap(p, 2 * kBufLen);
    std::fprintf(stderr, "fuzz_control: 0x%lx is taken; registered memory lies elsewhere and seeds "
                         "that address it will be refused\n", static_cast<unsigned long>(kFixedAddr));
    p = mmap(nullptr, 2 * kBufLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
  }
  char *b = static_cast<char *>(p);
  if (mc_buffer_register(g_engine, b, kBufLen, "cpu") != MC_OK ||
      mc_buffer_register(g_engine, b + kBufLen, kBufLen, nullptr) != MC_OK) {
    std::fprintf(stderr, "fuzz_control: mc_buffer_register: %s\n", mc_last_error());
    std::abort();
  }
  std::string name = mc_engine_name(g_engine);  // "127.0.0.1:PORT" in p2p mode
  auto colon = name.rfind(':');
  if (colon == std::string::npos) die("engine name is not HOST:PORT");
  std::memset(&g_addr, 0, sizeof g_addr);
  g_addr.sin_family = AF_INET;
  g_addr.sin_port = htons(static_cast<uint16_t>(std::atoi(name.c_str() + colon + 1)));
  if (inet_pton(AF_INET, name.substr(0, colon).c_str(), &g_addr.sin_addr) != 1)
    die("engine host is not IPv4");
}

int dial() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect(fd, reinterpret_cast<sockaddr *>(&g_addr), sizeof g_addr) != 0)
    die("the engine stopped accepting connections");
  timeval tv{kEofSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends what the engine will take; it may close early (bad header), which ends the sending.
void send_input(int fd, const uint8_t *data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// Reads until EOF; returns the byte count. A timeout means serve() hangs: a finding.
size_t drain(int fd, std::string *keep, size_t keep_max) {
  static char scratch[64 << 10];
  size_t total = 0;
  for (;;) {
    ssize_t n = recv(fd, scratch, sizeof scratch, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      die("serve() kept the connection open after the client's half-close");
    if (n <= 0) return total;  // EOF, or a reset after the engine refused the input
    if (keep && keep->size() < keep_max)
      keep->append(scratch, std::min<size_t>(static_cast<size_t>(n), keep_max - keep->size()));
    total += static_cast<size_t>(n);
  }
}

void check_ping() {
  int fd = dial();
  wire::Header h = wire::make(wire::PING, 77, 0, 0);
  send_input(fd, reinterpret_cast<const uint8_t *>(&h), sizeof h);
  shutdown(fd, SHUT_WR);
  std::string reply;
  drain(fd, &reply, 4096);
  close(fd);
  wire::Header r;
  if (reply.size() != sizeof r) die("PING did not get exactly one 40-byte reply");
  std::memcpy(&r, reply.data(), sizeof r);
  if (r.magic != wire::kMagic || r.version != wire::kVersion || r.type != wire::PONG || r.id != 77)
    die("PING got a malformed PONG");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = dial();
  send_input(fd, data, size);
  shutdown(fd, SHUT_WR);
  drain(fd, nullptr, 0);
  close(fd);
  if (++g_inputs % 64 == 0) check_ping();
  return 0;
}
