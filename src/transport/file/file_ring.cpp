// The I/O loop of one worker: one io_uring, an eventfd poll for new work, a tick every 50 ms
// while anything is in flight (cancel, fail_path and the timeout reach ops the kernel holds).
#include "transport/file/file_ring.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "gpu/gpu_staging.h"

namespace mc::file {

namespace {
constexpr uint64_t kPollTag = 1ull << 62;    // the eventfd poll's user_data
constexpr uint64_t kCancelTag = 1ull << 63;  // an async cancel's own completion
constexpr uint64_t kTickMs = 50;
constexpr uint64_t kMaxOp = 1ull << 30;   // bytes per read or write SQE
constexpr uint64_t kBounce = 1ull << 20;  // GPU memory: bytes per piece through the host

// The ring's flags: fio's io_uring engine sets COOP_TASKRUN too (completions are run when the
// thread enters the kernel, which it does to wait for them, instead of interrupting it).
int init_ring(unsigned entries, io_uring *ring) {
#ifdef IORING_SETUP_COOP_TASKRUN
  io_uring_params p{};
  p.flags = IORING_SETUP_COOP_TASKRUN;
  int r = io_uring_queue_init_params(entries, ring, &p);
  if (r != -EINVAL) return r;
#endif
  return io_uring_queue_init(entries, ring, 0);  // a kernel before 5.19
}
}  // namespace

uint64_t mono_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

bool Ring::start(std::string *why) {
  efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd_ < 0) {
    *why = std::string("eventfd: ") + std::strerror(errno);
    return false;
  }
  if (env_.stall_at >= 0 && pipe2(stall_, O_CLOEXEC) != 0) {
    *why = std::string("pipe2: ") + std::strerror(errno);
    return false;
  }
  int r = init_ring(depth_ * 2 + 8, &ring_);
  if (r < 0) {
    *why = std::string("io_uring_queue_init: ") + std::strerror(-r);
    return false;
  }
  ring_ok_ = true;
  if (env_.fixed && FixedTable::prepare(&ring_)) {
    env_.fixed->attach(index_, &ring_);
    fixed_ok_ = true;
  }
  slots_.resize(depth_);
  for (uint32_t i = depth_; i-- > 0;) free_.push_back(i);
  th_ = std::thread([this] { run(); });
  return true;
}

void Ring::push(const Op *ops, size_t n) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!stopping_) {
      queue_.insert(queue_.end(), ops, ops + n);
      ops = nullptr;
    }
  }
  if (!ops) {
    uint64_t one = 1;
    ssize_t w = write(efd_, &one, sizeof one);
    (void)w;  // EAGAIN only when the counter is full: the thread is awake anyway
    return;
  }
  for (size_t i = 0; i < n; i++) {  // stopped: end them here
    Op op = ops[i];
    finish(op, MC_ERR_PEER_DOWN);
  }
}

void Ring::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_ && !th_.joinable()) return;
    stopping_ = true;
  }
  if (th_.joinable()) {
    uint64_t one = 1;
    ssize_t w = write(efd_, &one, sizeof one);
    (void)w;
    th_.join();
  }
  if (ring_ok_) io_uring_queue_exit(&ring_);
  ring_ok_ = false;
  if (efd_ >= 0) close(efd_);
  efd_ = -1;
  for (int &fd : stall_) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
}

io_uring_sqe *Ring::sqe() {
  io_uring_sqe *s = io_uring_get_sqe(&ring_);
  if (!s) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  return s;  // never NULL: the ring has room for every slot, a cancel each and the poll
}

void Ring::arm_poll() {
  io_uring_sqe *s = sqe();
  io_uring_prep_poll_add(s, efd_, POLLIN);
  io_uring_sqe_set_data64(s, kPollTag);
}

bool Ring::take() {
  std::lock_guard<std::mutex> lk(mu_);
  if (pending_.empty()) {
    pending_.swap(queue_);
  } else {
    pending_.insert(pending_.end(), queue_.begin(), queue_.end());
    queue_.clear();
  }
  return stopping_;
}

void Ring::run() {
  arm_poll();
  uint64_t last_tick = mono_ms();
  for (;;) {
    if (take()) return drain();
    fill();
    io_uring_cqe *cqe = nullptr;
    bool busy = free_.size() < depth_;
    if (!gds_.empty()) {
      io_uring_submit(&ring_);  // cuFile pieces run below: only what already completed
    } else if (busy) {
      __kernel_timespec ts{0, static_cast<long long>(kTickMs * 1000000)};
      io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    } else {
      io_uring_submit_and_wait(&ring_, 1);
    }
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      on_cqe(cqe->user_data, cqe->res);
      n++;
    }
    io_uring_cq_advance(&ring_, n);
    if (!gds_.empty()) gds_turn();
    uint64_t now = mono_ms();
    if (now - last_tick >= kTickMs) {
      tick(now);
      last_tick = now;
    }
  }
}

// Stopping: what was not started ends PEER_DOWN; what the kernel holds is canceled and waited
// for (its memory may still be written until its completion arrives).
void Ring::drain() {
  for (auto &op : pending_) finish(op, MC_ERR_PEER_DOWN);
  pending_.clear();
  while (!gds_.empty()) {  // between two pieces: nothing of theirs is in flight
    uint32_t slot = gds_.back();
    gds_drop(slot);
    release(slot, MC_ERR_PEER_DOWN);
  }
  for (uint32_t i = 0; i < depth_; i++)
    if (slots_[i].f && slots_[i].abort == MC_OK) cancel_slot(i, MC_ERR_PEER_DOWN);
  while (free_.size() < depth_) {
    io_uring_cqe *cqe = nullptr;
    if (io_uring_submit_and_wait(&ring_, 1) < 0 && errno != EINTR) break;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      if (!(cqe->user_data & (kPollTag | kCancelTag)))
        release(static_cast<uint32_t>(cqe->user_data - 1), slots_[cqe->user_data - 1].abort);
      n++;
    }
    io_uring_cq_advance(&ring_, n);
  }
}

void Ring::fill() {
  while (!free_.empty() && !pending_.empty()) {
    Op op = pending_.front();
    pending_.pop_front();
    if (!begin(op)) continue;
    uint32_t slot = free_.back();
    free_.pop_back();
    Op &o = slots_[slot];
    o = op;
    o.since_ms = mono_ms();
    if (gpu::is_device_memory(o.s.local, &o.dev)) {  // cuFile, else a host bounce piece by piece
      if (gds_begin(slot)) continue;
      if (!alloc_bounce(slot)) continue;
    } else if (fixed_ok_) {
      o.fixed = env_.fixed->lookup(index_, reinterpret_cast<uint64_t>(o.s.local), o.s.len);
    }
    prep(slot);
  }
}

bool Ring::alloc_bounce(uint32_t slot) {
  Op &o = slots_[slot];
  void *b = nullptr;
  if (posix_memalign(&b, 4096, std::min(o.s.len - o.done, kBounce)) != 0) {
    release(slot, MC_ERR_NO_MEMORY);
    return false;
  }
  o.bounce = static_cast<char *>(b);
  return true;
}

bool Ring::begin(Op &op) {
  FileSeg &f = *op.f;
  mc_status_t st = MC_OK;
  if (op.gen != f.gen.load(std::memory_order_acquire))
    st = f.fail_status.load();
  else if (env_.ops->canceled(env_.host, &op.s))
    st = MC_ERR_CANCELED;
  else if (op.s.op == MC_WRITE && !f.writable)
    st = MC_ERR_DENIED;
  else if (op.s.remote > f.size || op.s.len > f.size - op.s.remote)
    st = MC_ERR_OUT_OF_RANGE;
  if (st == MC_OK) return true;
  finish(op, st);
  return false;
}

void Ring::prep(uint32_t slot) {
  Op &op = slots_[slot];
  FileSeg &f = *op.f;
  uint64_t off = op.s.remote + op.done, len = op.s.len - op.done;
  if (env_.stall_at >= 0 && static_cast<uint64_t>(env_.stall_at) - off < len) {
    io_uring_sqe *s = sqe();  // tests: waits on the empty pipe until canceled
    io_uring_prep_read(s, stall_[0], &stall_byte_, 1, static_cast<uint64_t>(-1));
    io_uring_sqe_set_data64(s, slot + 1);
    return;
  }
  char *p = op.bounce ? op.bounce : static_cast<char *>(op.s.local) + op.done;
  unsigned n = static_cast<unsigned>(std::min(len, op.bounce ? kBounce : kMaxOp));
  if (op.bounce && op.s.op == MC_WRITE && !stage(slot, true, n)) return;
  op.piece = n;
  bool direct = f.dfd >= 0 && reinterpret_cast<uintptr_t>(p) % f.mem_align == 0 && off % f.off_align == 0 &&
                n % f.off_align == 0;
  (direct ? env_.direct_ops : env_.buffered_ops).fetch_add(1, std::memory_order_relaxed);
  int fd = direct ? f.dfd : f.fd;
  io_uring_sqe *s = sqe();
  if (op.fixed >= 0) {
    env_.fixed_ops.fetch_add(1, std::memory_order_relaxed);
    if (op.s.op == MC_READ)
      io_uring_prep_read_fixed(s, fd, p, n, off, op.fixed);
    else
      io_uring_prep_write_fixed(s, fd, p, n, off, op.fixed);
  } else if (op.s.op == MC_READ) {
    io_uring_prep_read(s, fd, p, n, off);
  } else {
    io_uring_prep_write(s, fd, p, n, off);
  }
  if (op.s.op == MC_WRITE && f.u.sync) s->rw_flags = RWF_DSYNC;
  io_uring_sqe_set_data64(s, slot + 1);
}

void Ring::on_cqe(uint64_t data, int res) {
  if (data & kCancelTag) return;
  if (data & kPollTag) {
    uint64_t v;
    ssize_t r = read(efd_, &v, sizeof v);
    (void)r;
    arm_poll();
    return;
  }
  uint32_t slot = static_cast<uint32_t>(data - 1);
  Op &op = slots_[slot];
  if ((res == -EINTR || res == -EAGAIN) && op.abort == MC_OK) return prep(slot);
  if (res == -EFAULT && op.fixed >= 0 && op.abort == MC_OK) {  // the fixed buffer went: plainly
    op.fixed = -1;
    return prep(slot);
  }
  if (res < 0) {
    if (op.abort != MC_OK) return release(slot, op.abort);
    io_error(op, -res);
    return release(slot, MC_ERR_TRANSPORT);
  }
  if (res == 0) {  // a READ at the end of the file: someone cut it shorter than the segment
    io_error(op, 0);
    return release(slot, MC_ERR_TRANSPORT);
  }
  on_progress(slot, res);
}

void Ring::on_progress(uint32_t slot, int res) {
  Op &op = slots_[slot];
  if (op.bounce && op.s.op == MC_READ) {  // the piece is in the bounce: on to the GPU
    if (op.abort != MC_OK) return release(slot, op.abort);
    if (env_.ops->canceled(env_.host, &op.s)) return release(slot, MC_ERR_CANCELED);
    if (!stage(slot, false, static_cast<uint64_t>(res))) return;
  }
  op.done += static_cast<uint64_t>(res);
  (op.s.op == MC_READ ? env_.bytes_read : env_.bytes_written).fetch_add(res, std::memory_order_relaxed);
  if (op.done >= op.s.len) return release(slot, MC_OK);
  if (op.abort != MC_OK) return release(slot, op.abort);
  if (env_.ops->canceled(env_.host, &op.s)) return release(slot, MC_ERR_CANCELED);
  op.since_ms = mono_ms();
  prep(slot);  // a short read or write: the rest
}

// Logged once per file and errno (a full disk fails every WRITE after the first); the text
// is also the instance's stats "last_error".
void Ring::io_error(Op &op, int e) {
  std::string what = std::string(op.s.op == MC_READ ? "READ" : "WRITE") + " of " +
                     std::to_string(op.s.len - op.done) + " bytes at offset " +
                     std::to_string(op.s.remote + op.done) + " of " + op.f->u.path + " failed: " +
                     (e ? std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"
                        : std::string("end of file (the file is shorter than its segment)"));
  {
    std::lock_guard<std::mutex> lk(env_.err_mu);
    env_.last_error = what;
  }
  if (op.f->last_errno.exchange(e ? e : -1) != (e ? e : -1)) env_.log(MC_TP_LOG_WARN, what);
}

// GPU memory at op.done to the bounce (out) or n bytes of the bounce to it, through the
// pinned staging pool (gpu/gpu_staging.h); on a CUDA error the slice ends MC_ERR_TRANSPORT.
// Synchronous on this thread: a piece is at most kBounce.
bool Ring::stage(uint32_t slot, bool out, uint64_t n) {
  Op &op = slots_[slot];
  char *dev = static_cast<char *>(op.s.local) + op.done;
  uint64_t at = 0;
  std::string why;
  bool ok = out ? gpu::stage_out(
                      dev, n,
                      [&](const char *c, uint64_t k) {
                        std::memcpy(op.bounce + at, c, k);
                        at += k;
                        return true;
                      },
                      &why)
                : gpu::stage_in(
                      dev, n,
                      [&](char *c, uint64_t k) {
                        std::memcpy(c, op.bounce + at, k);
                        at += k;
                        return true;
                      },
                      &why);
  if (ok) {
    env_.staged_ops.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  std::string what = "staging GPU memory for " + std::string(op.s.op == MC_READ ? "a READ" : "a WRITE") +
                     " of " + op.f->u.path + ": " + why;
  {
    std::lock_guard<std::mutex> lk(env_.err_mu);
    env_.last_error = what;
  }
  env_.log(MC_TP_LOG_WARN, what);
  release(slot, MC_ERR_TRANSPORT);
  return false;
}

void Ring::finish(Op &op, mc_status_t st) {
  op.f->one_done();  // the last touch of the segment: disconnect may free it from here on
  (st == MC_OK ? env_.slices_ok : env_.slices_failed).fetch_add(1, std::memory_order_relaxed);
  env_.ops->complete(env_.host, &op.s, st);
}

void Ring::release(uint32_t slot, mc_status_t st) {
  Op op = slots_[slot];
  slots_[slot].f = nullptr;
  slots_[slot].bounce = nullptr;
  slots_[slot].gds = false;
  free_.push_back(slot);
  std::free(op.bounce);
  finish(op, st);
}

void Ring::cancel_slot(uint32_t slot, mc_status_t why) {
  slots_[slot].abort = why;
  io_uring_sqe *s = sqe();
  io_uring_prep_cancel64(s, slot + 1, 0);
  io_uring_sqe_set_data64(s, kCancelTag);
}

void Ring::tick(uint64_t now) {
  for (uint32_t i = 0; i < depth_; i++) {
    Op &op = slots_[i];
    if (!op.f || op.abort != MC_OK || op.gds) continue;  // cuFile ops: checked before each piece
    if (op.gen != op.f->gen.load(std::memory_order_acquire))
      cancel_slot(i, op.f->fail_status.load());
    else if (env_.ops->canceled(env_.host, &op.s))
      cancel_slot(i, MC_ERR_CANCELED);
    else if (now - op.since_ms >= env_.timeout_ms)
      cancel_slot(i, MC_ERR_TIMEOUT);
  }
}

}  // namespace mc::file
