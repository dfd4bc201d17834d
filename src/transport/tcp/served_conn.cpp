// ServedConn: its life on the loop and the requests coming in (replies: served_conn_out.cpp).
#include "transport/tcp/served_conn.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "gpu/gpu_staging.h"
#include "transport/tcp/counters.h"
#include "util/log.h"

namespace mc::tcp {
namespace {

constexpr uint32_t kIn = EPOLLIN | EPOLLRDHUP;
constexpr uint64_t kBudget = 16 << 20;  // bytes read per wake-up, for fairness between connections
constexpr uint64_t kBounce = 1 << 20;   // GPU memory is staged in chunks of this
constexpr size_t kDirect = 64 * 1024;   // payload reads at least this large go straight to memory
constexpr size_t kReadBuf = 256 * 1024;
constexpr uint64_t kSmallRead = 16 * 1024;  // READ data up to this is copied into the reply buffer
constexpr uint64_t kOwnedHigh = 1 << 20;    // reading stops with this many reply bytes queued
constexpr size_t kPiecesHigh = 256;         // ... or this many reply pieces (each may hold a pin)

bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

}  // namespace

ServedConn::ServedConn(ServedEnv *env, IoLoop *loop, Fd fd, std::string readahead)
    : env_(env), loop_(loop), fd_(std::move(fd)) {
  rbuf_.resize(std::max(kReadBuf, readahead.size()));
  std::memcpy(rbuf_.data(), readahead.data(), readahead.size());
  rend_ = readahead.size();
}

ServedConn::~ServedConn() = default;

bool ServedConn::adopt(ServedEnv *env, IoLoop *loop, Fd fd, std::string readahead) {
  int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl >= 0 && !(fl & O_NONBLOCK)) ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK);
  auto c = std::make_shared<ServedConn>(env, loop, std::move(fd), std::move(readahead));
  return loop->post([c] { c->begin(); });  // refused: c and its fd go with the function
}

void ServedConn::begin() {
  last_progress_ = now_ms();
  armed_ = kIn;
  if (!loop_->add(fd_.get(), kIn, shared_from_this())) {
    MC_LOGW("tcp: cannot serve a data connection: epoll: " << std::strerror(errno));
    phase_ = kClosed;
    fd_.reset();
    return;
  }
  pump();  // the listener's readahead may hold whole requests
}

void ServedConn::on_events(uint32_t ev) {
  if (phase_ == kClosed) return;
  if (!ticking_) {  // something arrived: its progress is timed again
    ticking_ = true;
    loop_->set_ticking(this, true);
  }
  // A reset (the initiator failed what it had in flight here) or a BIND's fence (shutdown):
  // whatever requests are still queued must not touch memory any more.
  if (ev & (EPOLLERR | EPOLLHUP)) return close_now();
  if (ev & EPOLLOUT) try_send();
  if (phase_ == kClosed) return;
  pump();
}

void ServedConn::on_tick(uint64_t now) {
  if (phase_ == kClosed) return;
  if (phase_ == kBindWait) {
    if (now <= bind_deadline_) return;
    env_->binds->forget_waiter(key_);
    refuse("named an older connection that did not end within timeout_ms", MC_ERR_PEER_DOWN, false);
    return pump();
  }
  if (!mid_request()) {
    last_progress_ = now;
    ticking_ = false;  // idle: no tick until bytes arrive (on_events), so idle peers cost nothing
    loop_->set_ticking(this, false);
    return;
  }
  if (now > last_progress_ && now - last_progress_ > env_->timeout_ms) {
    MC_LOGI("tcp: closing a served connection that made no progress for " << (now - last_progress_) << " ms");
    close_now();
  }
}

// Reads and serves requests while replies do not back up, then sends; again while sending
// makes room to serve what is already read (nothing else would wake the loop for those bytes).
// Ends: the socket reads are bounded per wake-up and a send that blocks leaves it paused.
void ServedConn::pump() {
  rpulled_ = 0;
  rdrained_ = false;
  while (phase_ != kClosed) {
    if (reading() && !paused()) process();
    if (phase_ == kClosed) return;
    bool was_paused = paused();
    try_send();
    if (phase_ == kClosed) return;
    if (!was_paused || paused() || !reading()) break;
  }
  update_events();
}

bool ServedConn::paused() const { return owned_ >= kOwnedHigh || out_.size() >= kPiecesHigh; }

void ServedConn::update_events() {
  if (!fd_.valid()) return;
  uint32_t want = (reading() && !paused() ? kIn : 0u) | (out_.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
  if (want == armed_) return;
  armed_ = want;
  loop_->modify(fd_.get(), want, this);
}

void ServedConn::process() {
  while (reading() && !paused()) {
    int r = step();
    if (r > 0) continue;
    if (r == 0) return;
    int e = errno;
    if (phase_ != kHeader || rdone_ > 0)  // between requests, a close or reset is the peer's way to end
      MC_LOGI("tcp: a served connection ended mid-request: " << (e == 0 ? std::string("closed by peer")
                                                                        : std::string(std::strerror(e))));
    return close_now();
  }
}

// Serves one unit of the request stream. 1: went on; 0: nothing to read now; -1: errno says.
int ServedConn::step() {
  switch (phase_) {
    case kHeader: {
      int r = pull_into(reinterpret_cast<char *>(&rh_), sizeof rh_);
      if (r != 1 || rdone_ < sizeof rh_) return r;
      rdone_ = 0;
      on_request();
      return 1;
    }
    case kBindList: {
      int r = pull_into(reinterpret_cast<char *>(dead_.data()), dead_.size() * sizeof(uint64_t));
      if (r != 1 || rdone_ < dead_.size() * sizeof(uint64_t)) return r;
      rdone_ = 0;
      do_bind(true);
      return 1;
    }
    case kWriteData:
      return recv_write();
    case kDrain:
      return recv_drain();
    default:
      return 0;
  }
}

// Up to n bytes of the request stream into dst: buffered bytes first, large reads straight
// from the socket. > 0: bytes; -1: errno says (EAGAIN: nothing now; 0: the peer closed).
ssize_t ServedConn::pull(char *dst, size_t n) {
  if (rend_ > rpos_) {
    size_t k = std::min(n, rend_ - rpos_);
    std::memcpy(dst, rbuf_.data() + rpos_, k);
    rpos_ += k;
    return static_cast<ssize_t>(k);
  }
  // Other connections of this loop get a turn after kBudget; and a short read emptied the
  // socket, so the next one would only say EAGAIN: epoll (level-triggered) calls again.
  if (rpulled_ >= kBudget || rdrained_) {
    errno = EAGAIN;
    return -1;
  }
  // A reset leaves the bytes queued before it readable; they belong to requests the initiator
  // already failed, so none of them may land (the loop may be behind a socket by a few MiB).
  int err = 0;
  socklen_t el = sizeof err;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err != 0) {
    errno = err;
    return -1;
  }
  bool direct = n >= kDirect;
  // Behind a large payload the next one is likely large too: read only the header, so that
  // the payload goes straight to memory instead of through rbuf_ (a copy more).
  size_t want = direct ? n : (exact_hdr_ && phase_ == kHeader ? n : rbuf_.size());
  ssize_t r;
  do {
    r = ::recv(fd_.get(), direct ? dst : rbuf_.data(), want, MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r == 0) errno = 0;
  if (r <= 0) return -1;
  rdrained_ = static_cast<size_t>(r) < want;
  rpulled_ += static_cast<uint64_t>(r);
  last_progress_ = now_ms();
  if (direct) return r;
  rpos_ = 0;
  rend_ = static_cast<size_t>(r);
  return pull(dst, n);
}

// The rest of a unit of `total` bytes into dst (rdone_ read so far).
int ServedConn::pull_into(char *dst, uint64_t total) {
  ssize_t r = pull(dst + rdone_, total - rdone_);
  if (r < 0) return would_block(errno) ? 0 : -1;
  rdone_ += static_cast<uint64_t>(r);
  return 1;
}

void ServedConn::on_request() {
  const wire::Header &h = rh_;
  if (h.magic != wire::kMagic || h.version != wire::kVersion)
    return refuse("sent bytes that are not an mc message of this wire version");
  if (h.type == wire::BIND) {
    if (bound_ || h.len % sizeof(uint64_t) != 0 || h.len > wire::kMaxFence * sizeof(uint64_t))
      return refuse("sent a malformed BIND");
    dead_.assign(h.len / sizeof(uint64_t), 0);
    uint64_t nonce = h.id, number = h.addr;  // copies: the header is packed, no reference may bind to it
    key_ = {nonce, number};
    if (dead_.empty()) return do_bind(true);
    phase_ = kBindList;
    return;
  }
  if (h.type == wire::PING && h.len == 0)  // answered on the data connection itself
    return put_header(wire::make(wire::PONG, h.id, env_->host->incarnation(), 0));
  if (h.type != wire::WRITE && h.type != wire::READ)
    return refuse("sent a message of type " + std::to_string(h.type) + " on a data connection");
  env_->requests++;
  if (h.type == wire::READ) exact_hdr_ = false;
  // The pin checks the buffer's access too: a READ of a buffer peers may not read, or a WRITE
  // of one they may not write, is refused (MC_ERR_DENIED) and nothing is written.
  mc_status_t st = h.len == 0 ? MC_ERR_INVALID_ARG
                              : env_->host->pin(h.addr, h.len, h.type == wire::WRITE ? MC_WRITE : MC_READ);
  if (h.type == wire::WRITE) return on_write(st);
  on_read(st);
}

void ServedConn::on_write(mc_status_t st) {
  rdone_ = 0;
  if (st == MC_OK) {
    wdev_ = gpu::is_device_memory(reinterpret_cast<void *>(rh_.addr));
    phase_ = kWriteData;
    return;
  }
  env_->refused++;
  MC_LOGI("tcp: refused a WRITE of " << rh_.len << " bytes at 0x" << std::hex << rh_.addr << std::dec << ": "
                                     << mc_status_str(st));
  if (rh_.len > wire::kMaxDrain) {  // not worth draining (and maybe garbage): answer, then close
    put_header(wire::make(wire::WRITE_ACK, rh_.id, rh_.addr, 0, st));
    phase_ = kClosing;
    return;
  }
  wst_ = st;
  phase_ = kDrain;
}

void ServedConn::on_read(mc_status_t st) {
  if (st != MC_OK) {
    env_->refused++;
    return put_header(wire::make(wire::READ_DATA, rh_.id, rh_.addr, 0, st));
  }
  put_header(wire::make(wire::READ_DATA, rh_.id, rh_.addr, rh_.len));
  bool dev = gpu::is_device_memory(reinterpret_cast<const void *>(rh_.addr));
  if (!dev && rh_.len <= kSmallRead) {
    put_user(reinterpret_cast<const void *>(rh_.addr), rh_.len);
    env_->host->unpin(rh_.addr, rh_.len);
    env_->counters->bytes_sent += rh_.len;
    return;
  }
  put_ref(rh_.addr, rh_.len, dev);  // unpinned once sent
}

// A WRITE's data: into registered memory, through rbounce_ for GPU memory.
int ServedConn::recv_write() {
  char *dst = reinterpret_cast<char *>(rh_.addr);
  uint64_t left = rh_.len - rdone_;
  ssize_t r;
  if (wdev_) {
    rbounce_.resize(kBounce);
    uint64_t at = rdone_ % kBounce;
    r = pull(rbounce_.data() + at, std::min<uint64_t>(left, kBounce - at));
  } else {
    r = pull(dst + rdone_, left);
  }
  if (r < 0) return would_block(errno) ? 0 : -1;
  rdone_ += static_cast<uint64_t>(r);
  if (wdev_ && (rdone_ % kBounce == 0 || rdone_ == rh_.len)) {
    uint64_t start = (rdone_ - 1) / kBounce * kBounce;
    std::string why;
    bool ok = gpu::stage_in(
        dst + start, rdone_ - start,
        [&](char *c, uint64_t k) {
          std::memcpy(c, rbounce_.data(), k);
          return true;
        },
        &why);
    if (!ok) {
      MC_LOGW("tcp: staging GPU memory: " << why);
      errno = EIO;
      return -1;  // close_now() unpins
    }
  }
  if (rdone_ < rh_.len) return 1;
  env_->host->unpin(rh_.addr, rh_.len);
  env_->counters->bytes_received += rh_.len;
  exact_hdr_ = rh_.len >= kDirect;
  rdone_ = 0;
  phase_ = kHeader;
  put_header(wire::make(wire::WRITE_ACK, rh_.id, rh_.addr, 0, MC_OK));
  return 1;
}

// A refused WRITE's data, skipped; then its refusal.
int ServedConn::recv_drain() {
  if (rdone_ < rh_.len) {
    rbounce_.resize(std::max<size_t>(rbounce_.size(), kDirect));
    ssize_t r = pull(rbounce_.data(), std::min<uint64_t>(rh_.len - rdone_, rbounce_.size()));
    if (r < 0) return would_block(errno) ? 0 : -1;
    rdone_ += static_cast<uint64_t>(r);
    if (rdone_ < rh_.len) return 1;
  }
  rdone_ = 0;
  phase_ = kHeader;
  put_header(wire::make(wire::WRITE_ACK, rh_.id, rh_.addr, 0, wst_));
  return 1;
}

// BIND (proto/wire.h, Fencing): end the connections it names, then wait, without blocking the
// loop, until each of them stopped touching memory (retry_bind on every unbind).
void ServedConn::do_bind(bool first) {
  if (first) {
    Status st = env_->binds->fence(key_, dead_);
    if (!st.ok()) return refuse(st.message(), st.code(), false);
    bind_deadline_ = now_ms() + env_->timeout_ms;
  }
  std::weak_ptr<ServedConn> w = weak_from_this();
  IoLoop *loop = loop_;
  auto wake = [w, loop] {
    loop->post([w] {
      if (auto c = w.lock()) c->retry_bind();
    });
  };
  if (!env_->binds->try_bind(key_, dead_, fd_.get(), std::move(wake))) {
    phase_ = kBindWait;
    return;
  }
  bound_ = true;
  dead_.clear();
  phase_ = kHeader;
}

void ServedConn::retry_bind() {
  if (phase_ != kBindWait) return;
  do_bind(false);
  if (phase_ == kHeader) pump();
}

void ServedConn::refuse(const std::string &why, mc_status_t code, bool warn) {
  if (warn)
    MC_LOGW("tcp: closing a connection that " << why);
  else
    MC_LOGI("tcp: closing a connection that " << why);
  put_header(wire::make(wire::ERROR, 0, 0, why.size(), code));
  put(why.data(), why.size());
  phase_ = kClosing;  // closes once the ERROR is out
}

void ServedConn::close_now() {
  if (phase_ == kClosed) return;
  if (phase_ == kBindWait) env_->binds->forget_waiter(key_);
  if (phase_ == kWriteData) env_->host->unpin(rh_.addr, rh_.len);
  phase_ = kClosed;
  for (auto &o : out_)
    if (o.ext) env_->host->unpin(o.pin_addr, o.len);
  out_.clear();
  owned_ = 0;
  if (bound_) env_->binds->unbind(key_);  // before the fd closes: a BIND may shut it meanwhile
  bound_ = false;
  if (fd_.valid()) {
    loop_->remove(fd_.get(), this);
    fd_.reset();
  }
}

}  // namespace mc::tcp
