// ServedConn's replies: gathered in request order and sent with one sendmsg per burst.
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "gpu/gpu_staging.h"
#include "transport/tcp/counters.h"
#include "transport/tcp/served_conn.h"
#include "util/log.h"

namespace mc::tcp {
namespace {

constexpr uint64_t kBudget = 16 << 20;    // bytes sent per wake-up, for fairness between connections
constexpr uint64_t kBounce = 1 << 20;     // GPU memory is staged in chunks of this
constexpr size_t kCoalesce = 256 * 1024;  // small replies share one buffer up to this
constexpr int kMaxIov = 128;

bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

}  // namespace

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

// A small READ's bytes, copied from registered memory into the reply. Another connection may
// have written them on another loop (a WRITE whose data arrived there); what orders the two is
// the initiator's protocol, through sockets and often another process, which ThreadSanitizer
// cannot see, so it would report the copy as racing with that recv. The copy is therefore
// hidden from it, as mk/hardening.mk hides send() for the same reason (intercept_send=0); every
// engine structure is still checked.
void ServedConn::put_user(const void *p, size_t n) {
#if defined(__SANITIZE_THREAD__)
  __tsan_ignore_thread_begin();
#endif
  put(p, n);
#if defined(__SANITIZE_THREAD__)
  __tsan_ignore_thread_end();
#endif
}

void ServedConn::put(const void *p, size_t n) {
  if (out_.empty() || out_.back().ext || out_.back().own.size() >= kCoalesce) {
    out_.emplace_back();
    out_.back().own.reserve(std::min<size_t>(kCoalesce, std::max<size_t>(n, 4096)));
  }
  auto &b = out_.back().own;
  const char *c = static_cast<const char *>(p);
  b.insert(b.end(), c, c + n);
  owned_ += n;
}

void ServedConn::put_ref(uint64_t addr, uint64_t len, bool device) {
  Out o;
  o.ext = reinterpret_cast<const char *>(addr);
  o.len = len;
  o.device = device;
  o.pin_addr = addr;
  out_.push_back(std::move(o));
}

void ServedConn::drop_front() {
  Out &o = out_.front();
  if (o.ext) {
    env_->host->unpin(o.pin_addr, o.len);
    env_->counters->bytes_sent += o.len;
  }
  out_.pop_front();
}

void ServedConn::advance(uint64_t n) {
  while (n > 0 && !out_.empty()) {
    Out &o = out_.front();
    uint64_t k = std::min(n, o.size());
    o.off += k;
    n -= k;
    if (!o.ext) owned_ -= k;
    if (o.size() == 0) drop_front();
  }
}

ssize_t ServedConn::send_host() {
  iovec iov[kMaxIov];
  int n = 0;
  uint64_t want = 0;
  for (auto it = out_.begin(); it != out_.end() && n < kMaxIov && !it->device; ++it) {
    iov[n++] = {const_cast<char *>(it->data()), it->size()};
    want += it->size();
  }
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = static_cast<size_t>(n);
  ssize_t r;
  do {
    r = ::sendmsg(fd_.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r > 0) advance(static_cast<uint64_t>(r));
  sfull_ = r >= 0 && static_cast<uint64_t>(r) < want;  // the next send would say EAGAIN
  return r;
}

// GPU memory cannot meet a socket: each chunk is copied into sbounce_ (a cuMemcpy on the loop
// thread), then sent from there; the piece advances once its chunk is out.
ssize_t ServedConn::send_device() {
  Out &o = out_.front();
  if (sb_off_ == sb_len_) {
    uint64_t n = std::min(kBounce, o.size());
    sbounce_.resize(kBounce);
    uint64_t got = 0;
    std::string why;
    bool ok = gpu::stage_out(
        o.data(), n,
        [&](const char *c, uint64_t k) {
          std::memcpy(sbounce_.data() + got, c, k);
          got += k;
          return true;
        },
        &why);
    if (!ok) {
      MC_LOGW("tcp: staging GPU memory: " << why);
      errno = EIO;
      return -1;
    }
    sb_len_ = n;
    sb_off_ = 0;
  }
  ssize_t r;
  do {
    r = ::send(fd_.get(), sbounce_.data() + sb_off_, sb_len_ - sb_off_, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r <= 0) return r;
  sb_off_ += static_cast<uint64_t>(r);
  if (sb_off_ == sb_len_) {
    uint64_t n = sb_len_;
    sb_off_ = sb_len_ = 0;
    advance(n);
  }
  return r;
}

void ServedConn::try_send() {
  uint64_t sent = 0;
  while (!out_.empty() && sent < kBudget) {
    ssize_t r = out_.front().device ? send_device() : send_host();
    if (r < 0 && would_block(errno)) break;
    if (r <= 0) {
      int e = r == 0 ? EPIPE : errno;
      if (e != EPIPE && e != ECONNRESET) MC_LOGI("tcp: sending on a served connection: " << std::strerror(e));
      return close_now();
    }
    last_progress_ = now_ms();
    sent += static_cast<uint64_t>(r);
    if (sfull_) {  // EPOLLOUT says when the socket's buffer has room again
      sfull_ = false;
      break;
    }
  }
  if (out_.empty() && phase_ == kClosing) close_now();
}

}  // namespace mc::tcp
