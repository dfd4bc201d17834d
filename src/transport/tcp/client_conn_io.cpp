// ClientConn's data path on its loop: requests out (batched writev, payloads straight from
// registered memory, GPU memory staged chunk-wise), replies in (in request order).
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "gpu/gpu_staging.h"
#include "transport/tcp/client_conn.h"
#include "util/log.h"

namespace mc::tcp {
namespace {

constexpr size_t kMaxSendBatch = 64;    // slices taken from the queue at a time
constexpr uint64_t kBudget = 16 << 20;  // bytes a connection moves per wake-up each way, for fairness
constexpr uint64_t kBounce = 1 << 20;   // GPU memory is staged in chunks of this
constexpr size_t kDirect = 64 * 1024;   // payload reads at least this large go straight to memory
constexpr int kMaxIov = 128;

mc_status_t io_status(int err) {
  return (err == 0 || err == ECONNRESET || err == EPIPE || err == ECONNABORTED) ? MC_ERR_PEER_DOWN
                                                                                : MC_ERR_TRANSPORT;
}
std::string io_text(int err) {
  return err == 0 ? std::string("connection closed by peer") : std::string(std::strerror(err));
}
bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }
mc_status_t error_status(int32_t st) {
  return (st == MC_ERR_PEER_DOWN || st == MC_ERR_DENIED || st == MC_ERR_OUT_OF_RANGE) ? mc_status_t(st)
                                                                                      : MC_ERR_TRANSPORT;
}

}  // namespace

// Moves up to kMaxSendBatch queued slices into pieces_; false when nothing was added.
bool ClientConn::refill() {
  std::vector<Slice> canceled;
  bool added = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (broken_) return false;
    for (size_t k = 0; k < kMaxSendBatch && !queue_.empty(); k++) {
      Slice s = queue_.front();
      queue_.pop_front();
      if (env_->host->canceled(s)) {
        canceled.push_back(s);
        continue;
      }
      inflight_.push_back({s, next_id_});
      hdrs_.push_back(wire::make(s.op == MC_WRITE ? wire::WRITE : wire::READ, next_id_, s.remote, s.len));
      next_id_++;
      bool payload = s.op == MC_WRITE && s.len > 0;
      pieces_.push_back(
          {reinterpret_cast<const char *>(&hdrs_.back()), sizeof(wire::Header), false, false, !payload});
      if (payload)
        pieces_.push_back(
            {static_cast<const char *>(s.local), s.len, gpu::is_device_memory(s.local), true, true});
      added = true;
    }
  }
  for (auto &s : canceled) env_->host->complete(s, MC_ERR_CANCELED);
  return added;
}

void ClientConn::advance_sent(uint64_t n) {
  while (n > 0 && !pieces_.empty()) {
    Piece &pc = pieces_.front();
    uint64_t k = std::min(n, pc.n);
    pc.p += k;
    pc.n -= k;
    n -= k;
    if (pc.payload) env_->counters->bytes_sent += k;
    if (pc.n == 0) {
      if (pc.ends_request) hdrs_.pop_front();
      pieces_.pop_front();
    }
  }
}

ssize_t ClientConn::send_host_pieces() {
  iovec iov[kMaxIov];
  int n = 0;
  uint64_t want = 0;
  for (auto it = pieces_.begin(); it != pieces_.end() && n < kMaxIov && !it->device; ++it) {
    iov[n++] = {const_cast<char *>(it->p), it->n};
    want += it->n;
  }
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = static_cast<size_t>(n);
  ssize_t r;
  do {
    r = ::sendmsg(fd_.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r > 0) advance_sent(static_cast<uint64_t>(r));
  sfull_ = r >= 0 && static_cast<uint64_t>(r) < want;  // the next send would say EAGAIN
  return r;
}

// GPU memory cannot meet a socket: each chunk is copied into sbounce_ (a cuMemcpy on the loop
// thread), then sent from there; the piece advances once its chunk is out.
ssize_t ClientConn::send_device_piece() {
  Piece &pc = pieces_.front();
  if (sb_off_ == sb_len_) {
    uint64_t n = std::min(kBounce, pc.n);
    sbounce_.resize(kBounce);
    uint64_t got = 0;
    std::string why;
    bool ok = gpu::stage_out(
        pc.p, n,
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
    advance_sent(n);
  }
  return r;
}

void ClientConn::try_send() {
  if (phase_ != kReady) return;
  if (!send_raw()) return;
  uint64_t sent = 0;
  while (pending_out_.empty()) {
    if (pieces_.empty() && !refill()) {
      bool done;
      {
        std::lock_guard<std::mutex> lk(mu_);
        done = retired_ && queue_.empty() && !broken_;
      }
      if (done && !wr_shut_) {  // retired and everything sent: the peer answers the rest, then closes
        ::shutdown(fd_.get(), SHUT_WR);
        wr_shut_ = true;
      }
      return want_out(false);
    }
    ssize_t r = pieces_.front().device ? send_device_piece() : send_host_pieces();
    if (r < 0 && would_block(errno)) return want_out(true);
    if (r <= 0) {
      int e = r == 0 ? EPIPE : errno;
      return break_now(io_status(e), "send to " + who() + ": " + io_text(e));
    }
    last_progress_ = now_ms();
    heard_->store(last_progress_, std::memory_order_relaxed);  // its kernel took them: see heard_ms
    sent += static_cast<uint64_t>(r);
    // Other connections of this loop get a turn; or the socket's buffer is full: EPOLLOUT says
    // when it has room again.
    if (sent >= kBudget || sfull_) {
      sfull_ = false;
      return want_out(true);
    }
  }
  want_out(true);
}

// ------------------------------------------------------------------ replies

// Up to n bytes of the reply stream into dst: buffered bytes first, large reads straight from
// the socket. > 0: bytes; -1: errno says (EAGAIN: nothing now; 0: the peer closed).
ssize_t ClientConn::pull(char *dst, size_t n) {
  if (rend_ > rpos_) {
    size_t k = std::min(n, rend_ - rpos_);
    std::memcpy(dst, rbuf_.get() + rpos_, k);
    rpos_ += k;
    return static_cast<ssize_t>(k);
  }
  // Other connections of this loop get a turn after kBudget; and a short read emptied the
  // socket, so the next one would only say EAGAIN: epoll (level-triggered) calls again.
  if (rpulled_ >= kBudget || rdrained_) {
    errno = EAGAIN;
    return -1;
  }
  bool direct = n >= kDirect;
  // Behind a large payload the next one is likely large too: read only the header, so that
  // the payload goes straight to memory instead of through rbuf_ (a copy more).
  size_t want = direct ? n : (exact_hdr_ && rphase_ == kHeader ? n : kReadBuf);
  ssize_t r;
  do {
    r = ::recv(fd_.get(), direct ? dst : rbuf_.get(), want, MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r == 0) errno = 0;
  if (r <= 0) return -1;
  rdrained_ = static_cast<size_t>(r) < want;
  rpulled_ += static_cast<uint64_t>(r);
  last_progress_ = now_ms();
  heard_->store(last_progress_, std::memory_order_relaxed);
  if (direct) return r;
  rpos_ = 0;
  rend_ = static_cast<size_t>(r);
  return pull(dst, n);
}

void ClientConn::on_readable() {
  rpulled_ = 0;
  rdrained_ = false;
  while (phase_ == kReady) {
    int more = rphase_ == kPayload ? recv_payload() : recv_unit();
    if (more == 0) return;
    if (more < 0) {
      int e = errno;
      return break_now(io_status(e), "receive from " + who() + ": " + io_text(e));
    }
  }
}

// A reply header or an ERROR's text. 1: went on; 0: nothing to read now; -1: errno says.
int ClientConn::recv_unit() {
  bool hdr = rphase_ == kHeader;
  char *dst = hdr ? reinterpret_cast<char *>(&rh_) : rtext_.data();
  size_t total = hdr ? sizeof rh_ : rtext_.size();
  if (rdone_ < total) {
    ssize_t r = pull(dst + rdone_, total - rdone_);
    if (r < 0) return would_block(errno) ? 0 : -1;
    rdone_ += static_cast<uint64_t>(r);
    if (rdone_ < total) return 1;
  }
  rdone_ = 0;
  if (hdr)
    on_header();
  else
    on_error_text();
  return 1;
}

void ClientConn::on_header() {
  const wire::Header &h = rh_;
  if (h.magic != wire::kMagic || h.version != wire::kVersion)
    return break_now(MC_ERR_TRANSPORT, "peer " + who() + " sent a bad header (wrong magic or version)");
  if (need_ok_ && h.type != wire::ERROR) {
    need_ok_ = false;
    if (h.type == wire::AUTH_OK && h.len == 0) return;
    return break_now(MC_ERR_TRANSPORT, "peer " + who() + " did not confirm the auth_token handshake");
  }
  if (h.type == wire::ERROR) {
    if (h.len > wire::kMaxErrorText)
      return break_now(error_status(h.status), "peer " + who() + " sent an error");
    rtext_.assign(h.len, '\0');
    rphase_ = kErrorText;
    return;
  }
  if (inflight_.empty() || h.id != inflight_.front().id ||
      (h.type != wire::WRITE_ACK && h.type != wire::READ_DATA) ||
      (h.type == wire::WRITE_ACK) != (inflight_.front().s.op == MC_WRITE))
    return break_now(MC_ERR_TRANSPORT, "peer " + who() + " sent an unexpected reply");
  const Slice &s = inflight_.front().s;
  if (!confirmed_) {  // the peer ended what our BIND named
    confirmed_ = true;
    if (!carried_.empty()) fences_->confirmed(carried_);
  }
  if (h.type == wire::READ_DATA && h.status == MC_OK) {
    if (h.len != s.len) return break_now(MC_ERR_TRANSPORT, "peer " + who() + " returned a wrong READ length");
    rskip_ = env_->host->canceled(s);
    rdev_ = !rskip_ && gpu::is_device_memory(s.local);
    rphase_ = kPayload;
    rdone_ = 0;
    return;
  }
  mc_status_t st = MC_OK;
  if (h.status != MC_OK) {
    // The target's access and range checks are reported as such; other refusals are transport errors.
    st = (h.status == MC_ERR_DENIED || h.status == MC_ERR_OUT_OF_RANGE) ? mc_status_t(h.status)
                                                                        : MC_ERR_TRANSPORT;
    MC_LOGI("tcp: peer " << who() << " refused a request at 0x" << std::hex << s.remote << std::dec << " ("
                         << mc_status_str(h.status) << ")");
  }
  exact_hdr_ = false;
  complete_front(st);
}

void ClientConn::on_error_text() {
  rphase_ = kHeader;
  mc_status_t est = error_status(rh_.status);
  if (est == MC_ERR_DENIED) {
    MC_LOGW("tcp: peer " << who() << " denied access: " << rtext_);
    return break_now(est, "peer " + who() + " denied access: " + rtext_);
  }
  break_now(est, "peer " + who() + " refused: " + rtext_);
}

// A READ's data: into local memory, through rbounce_ for GPU memory, or drained when canceled.
int ClientConn::recv_payload() {
  char *dst = static_cast<char *>(inflight_.front().s.local);
  uint64_t left = rh_.len - rdone_;
  if (left > 0) {
    ssize_t r;
    if (rskip_) {
      rbounce_.resize(std::max<size_t>(rbounce_.size(), kDirect));
      r = pull(rbounce_.data(), std::min<uint64_t>(left, kDirect));
    } else if (rdev_) {
      rbounce_.resize(kBounce);
      uint64_t at = rdone_ % kBounce;
      r = pull(rbounce_.data() + at, std::min<uint64_t>(left, kBounce - at));
    } else {
      r = pull(dst + rdone_, left);
    }
    if (r < 0) return would_block(errno) ? 0 : -1;
    rdone_ += static_cast<uint64_t>(r);
    if (rdev_ && (rdone_ % kBounce == 0 || rdone_ == rh_.len) && !stage_chunk(dst)) return -1;
    if (rdone_ < rh_.len) return 1;
  }
  env_->counters->bytes_received += rh_.len;
  rphase_ = kHeader;
  rdone_ = 0;
  exact_hdr_ = rh_.len >= kDirect;
  complete_front(rskip_ ? MC_ERR_CANCELED : MC_OK);
  return 1;
}

// The chunk of rbounce_ just filled goes to GPU memory (a cuMemcpy on the loop thread).
bool ClientConn::stage_chunk(char *dst) {
  uint64_t start = (rdone_ - 1) / kBounce * kBounce;
  uint64_t n = rdone_ - start;
  std::string why;
  bool ok = gpu::stage_in(
      dst + start, n,
      [&](char *c, uint64_t k) {
        std::memcpy(c, rbounce_.data(), k);
        return true;
      },
      &why);
  if (!ok) {
    MC_LOGW("tcp: staging GPU memory: " << why);
    errno = EIO;
  }
  return ok;
}

void ClientConn::complete_front(mc_status_t st) {
  Slice s = inflight_.front().s;
  inflight_.pop_front();
  if (st == MC_OK)
    env_->counters->slices_ok++;
  else
    env_->counters->slices_failed++;
  env_->host->complete(s, st);
}

}  // namespace mc::tcp
