#include "transport/tcp/client_conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "gpu/gpu_staging.h"
#include "util/log.h"

namespace mc::tcp {
namespace {

constexpr uint32_t kIn = EPOLLIN | EPOLLRDHUP;

mc_status_t io_status(int err) {
  return (err == 0 || err == ECONNRESET || err == EPIPE || err == ECONNABORTED) ? MC_ERR_PEER_DOWN
                                                                                : MC_ERR_TRANSPORT;
}
std::string io_text(int err) {
  return err == 0 ? std::string("connection closed by peer") : std::string(std::strerror(err));
}
bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

}  // namespace

ClientConn::ClientConn(const ClientEnv *env, IoLoop *loop, HostPort addr, uint64_t incarnation, uint64_t seq,
                       std::shared_ptr<Fences> fences, std::shared_ptr<std::atomic<uint64_t>> heard)
    : env_(env),
      loop_(loop),
      addr_(std::move(addr)),
      incarnation_(incarnation),
      seq_(seq),
      fences_(std::move(fences)),
      heard_(std::move(heard)) {
  fences_->snapshot(&carried_, &epoch_);
}

ClientConn::~ClientConn() = default;

bool ClientConn::start() {
  auto self = shared_from_this();
  if (loop_->post([self] { self->begin(); })) return true;
  std::lock_guard<std::mutex> lk(mu_);
  if (!broken_) {
    broken_ = true;
    status_ = MC_ERR_PEER_DOWN;
    why_ = "engine is shutting down";
  }
  return false;
}

bool ClientConn::enqueue(const Slice *s, size_t n) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (broken_ || retired_) return false;
    queue_.insert(queue_.end(), s, s + n);
  }
  kick();
  return true;
}

void ClientConn::retire() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    retired_ = true;
  }
  kick();
}

void ClientConn::fail(mc_status_t st, const std::string &why) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (broken_) return;
    broken_ = true;
    status_ = st;
    why_ = why;
  }
  auto self = shared_from_this();
  loop_->post([self] { self->teardown(); });  // refused once stopped: abandon() then ends it
}

void ClientConn::abandon() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!broken_) {
      broken_ = true;
      status_ = MC_ERR_PEER_DOWN;
      why_ = "engine is shutting down";
    }
  }
  teardown();
}

void ClientConn::kick() {
  if (kick_pending_.exchange(true)) return;
  auto self = shared_from_this();
  loop_->post([self] {
    self->kick_pending_.store(false);
    if (self->inflight_.empty() && self->pieces_.empty()) self->last_progress_ = now_ms();
    if (!self->ticking_) {
      self->ticking_ = true;
      self->loop_->set_ticking(self.get(), true);
    }
    self->try_send();
  });
}

// ------------------------------------------------------------------ connect and handshake

void ClientConn::begin() {
  last_progress_ = now_ms();
  deadline_ = last_progress_ + env_->timeout_ms;
  if (broken()) return teardown();
  sockaddr_storage sa{};
  socklen_t sl = 0;
  Status as = socket_address(addr_, &sa, &sl);
  if (!as.ok()) {
    env_->counters->conns_failed++;
    return break_now(MC_ERR_PEER_DOWN, "cannot connect to " + who() + ": " + as.message());
  }
  fd_.reset(::socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd_.valid()) {
    int e = errno;
    env_->counters->conns_failed++;
    return break_now(e == EMFILE || e == ENFILE ? MC_ERR_NO_MEMORY : MC_ERR_TRANSPORT,
                     "cannot connect to " + who() + ": socket: " + std::strerror(e));
  }
  tune_socket(fd_.get());
  int rc = ::connect(fd_.get(), reinterpret_cast<sockaddr *>(&sa), sl);
  if (rc != 0 && errno != EINPROGRESS) {
    int e = errno;
    env_->counters->conns_failed++;
    return break_now(MC_ERR_PEER_DOWN, "cannot connect to " + who() + ": " + std::strerror(e));
  }
  if (!loop_->add(fd_.get(), kIn | EPOLLOUT, shared_from_this())) {
    int e = errno;
    env_->counters->conns_failed++;
    return break_now(MC_ERR_TRANSPORT, "cannot connect to " + who() + ": epoll: " + std::strerror(e));
  }
  out_armed_ = true;
  if (rc == 0) connected();
}

void ClientConn::connected() {
  env_->counters->conns_opened++;
  phase_ = kHandshake;
  last_progress_ = now_ms();
  // Admission before any request (proto/wire.h): with a token this waits for the server's
  // challenge (one round trip); without one it only sends HELLO.
  hs_ = std::make_unique<auth::ClientHandshake>(env_->token, incarnation_, "peer " + who());
  std::string out = hs_->take_output();
  if (hs_->state() == auth::ClientHandshake::kFailed) {
    env_->counters->conns_failed++;
    return break_now(hs_->status().code(), hs_->status().message());
  }
  pending_out_ += out;
  if (hs_->state() == auth::ClientHandshake::kDone) return handshake_done();
  if (send_raw()) want_out(!pending_out_.empty());
}

// BIND goes right behind the last handshake message (proto/wire.h, Fencing).
void ClientConn::handshake_done() {
  wire::Header h = wire::make(wire::BIND, env_->nonce, seq_, carried_.size() * sizeof(uint64_t));
  pending_out_.append(reinterpret_cast<const char *>(&h), sizeof h);
  pending_out_.append(reinterpret_cast<const char *>(carried_.data()), carried_.size() * sizeof(uint64_t));
  if (!carried_.empty()) env_->counters->fences_sent++;
  need_ok_ = !env_->token.empty();
  phase_ = kReady;
  hs_.reset();
  rbuf_.reset(new char[kReadBuf]);
  try_send();
}

void ClientConn::handshake_readable() {
  uint8_t buf[256];
  while (phase_ == kHandshake) {
    ssize_t r = ::recv(fd_.get(), buf, std::min(hs_->want(), sizeof buf), MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && would_block(errno)) return;
    if (r <= 0) {
      int e = r == 0 ? 0 : errno;
      env_->counters->conns_failed++;
      return break_now(MC_ERR_PEER_DOWN,
                       "no answer to the auth_token handshake from peer " + who() + ": " + io_text(e));
    }
    last_progress_ = now_ms();
    auto st = hs_->feed(buf, static_cast<size_t>(r));
    pending_out_ += hs_->take_output();
    if (st == auth::ClientHandshake::kFailed) {
      ::send(fd_.get(), pending_out_.data(), pending_out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      env_->counters->conns_failed++;
      if (hs_->status().code() == MC_ERR_DENIED) MC_LOGW("tcp: " << hs_->status().message());
      return break_now(hs_->status().code(), hs_->status().message());
    }
    if (st == auth::ClientHandshake::kDone) return handshake_done();
    if (!send_raw()) return;
    want_out(!pending_out_.empty());
  }
}

// Sends what it can of pending_out_; false when the connection broke.
bool ClientConn::send_raw() {
  while (!pending_out_.empty()) {
    ssize_t n = ::send(fd_.get(), pending_out_.data(), pending_out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && would_block(errno)) return true;
    if (n < 0) {
      int e = errno;
      break_now(io_status(e), "send to " + who() + ": " + io_text(e));
      return false;
    }
    pending_out_.erase(0, static_cast<size_t>(n));
    last_progress_ = now_ms();
  }
  return true;
}

void ClientConn::want_out(bool on) {
  if (on == out_armed_ || !fd_.valid()) return;
  out_armed_ = on;
  loop_->modify(fd_.get(), kIn | (on ? static_cast<uint32_t>(EPOLLOUT) : 0u), this);
}

void ClientConn::on_events(uint32_t ev) {
  if (phase_ == kConnecting) {
    int err = 0;
    socklen_t el = sizeof err;
    ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &el);
    if (err != 0) {
      env_->counters->conns_failed++;
      return break_now(MC_ERR_PEER_DOWN, "cannot connect to " + who() + ": " + std::strerror(err));
    }
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) connected();
    return;
  }
  if (phase_ == kHandshake) {
    if ((ev & EPOLLOUT) && !send_raw()) return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) handshake_readable();
    if (phase_ == kHandshake) want_out(!pending_out_.empty());
    return;
  }
  if (phase_ != kReady) return;
  if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) on_readable();
  if (phase_ == kReady && (ev & EPOLLOUT)) try_send();
}

void ClientConn::on_tick(uint64_t now) {
  if (phase_ == kClosed) return;
  if (phase_ != kReady) {
    if (now <= deadline_) return;
    env_->counters->conns_failed++;
    if (phase_ == kConnecting)
      return break_now(MC_ERR_PEER_DOWN, "cannot connect to " + who() + ": no answer within " +
                                             std::to_string(env_->timeout_ms) + " ms");
    return break_now(MC_ERR_PEER_DOWN,
                     "no answer to the auth_token handshake from peer " + who() + ": timed out");
  }
  bool idle;
  {
    std::lock_guard<std::mutex> lk(mu_);
    // A retired connection with nothing left waits for the peer to close: that wait is timed too.
    idle = !retired_ && queue_.empty();
  }
  if (idle && inflight_.empty() && pieces_.empty()) {
    last_progress_ = now;
    ticking_ = false;  // no deadline to watch until work comes (kick() turns ticks back on)
    loop_->set_ticking(this, false);
    return;
  }
  if (now > last_progress_ && now - last_progress_ > env_->timeout_ms)
    break_now(MC_ERR_PEER_DOWN,
              "peer " + who() + " made no progress for " + std::to_string(now - last_progress_) + " ms");
}

void ClientConn::on_stop() { break_now(MC_ERR_PEER_DOWN, "engine is shutting down"); }

// ------------------------------------------------------------------ failure

void ClientConn::break_now(mc_status_t st, const std::string &why) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!broken_) {
      broken_ = true;
      status_ = st;
      why_ = why;
    }
  }
  teardown();
}

void ClientConn::teardown() {
  if (phase_ == kClosed) return;
  phase_ = kClosed;
  if (fd_.valid()) {
    // Closed with a reset, not a FIN behind the queued bytes: the kernel stops sending them.
    linger l{1, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    loop_->remove(fd_.get(), this);
    fd_.reset();
  }
  pieces_.clear();
  hdrs_.clear();
  std::deque<Slice> q;
  std::deque<Inflight> f;
  f.swap(inflight_);
  mc_status_t st;
  std::string why;
  {
    std::lock_guard<std::mutex> lk(mu_);
    q.swap(queue_);
    st = status_;
    why = why_;
  }
  fail_slices(q, f, st, why);
}

void ClientConn::fail_slices(std::deque<Slice> &q, std::deque<Inflight> &f, mc_status_t st,
                             const std::string &why) {
  // WRITEs sent and not answered may still land: fence this connection before anyone learns
  // they failed (the next connection to the peer names it; proto/wire.h).
  for (auto &x : f)
    if (x.s.op == MC_WRITE) {
      fences_->add(seq_, who());
      break;
    }
  if (!q.empty() || !f.empty())
    MC_LOGI("tcp: failing " << (q.size() + f.size()) << " slices to " << who() << ": " << why);
  for (auto &x : f) {
    env_->counters->slices_failed++;
    env_->host->complete(x.s, st);
  }
  for (auto &s : q) {
    env_->counters->slices_failed++;
    env_->host->complete(s, st);
  }
}

}  // namespace mc::tcp
