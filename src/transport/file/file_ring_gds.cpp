// A ring's requests between GPU memory and a file through cuFile (file_gds.h). cuFileRead and
// cuFileWrite block, so an op moves one piece per turn of the ring's loop, on the ring's thread,
// between the reaping of io_uring completions: no thread per request, and cancel, fail_path and
// the timeout are checked before every piece (a piece itself cannot be interrupted, as a
// staging copy cannot). A piece that cuFile fails sends the op, from where it stands, through
// the host bounce and the pinned staging pool.
#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "gpu/cuda_loader.h"
#include "transport/file/file_ring.h"

namespace mc::file {

namespace {
constexpr uint64_t kGdsPiece = 8ull << 20;  // bytes per cuFile call
}  // namespace

bool Ring::gds_begin(uint32_t slot) {
  if (env_.gds.mode == GdsMode::kOff || !env_.gds.usable(env_.logger())) return false;
  slots_[slot].gds = true;
  gds_.push_back(slot);
  return true;
}

void Ring::gds_drop(uint32_t slot) {
  auto it = std::find(gds_.begin(), gds_.end(), slot);
  if (it != gds_.end()) gds_.erase(it);
}

void Ring::gds_turn() {
  std::vector<uint32_t> turn = gds_;  // gds_step may drop its slot
  for (uint32_t slot : turn) gds_step(slot);
}

void Ring::gds_step(uint32_t slot) {
  Op &op = slots_[slot];
  FileSeg &f = *op.f;
  mc_status_t st = MC_OK;
  if (op.gen != f.gen.load(std::memory_order_acquire))
    st = f.fail_status.load();
  else if (env_.ops->canceled(env_.host, &op.s))
    st = MC_ERR_CANCELED;
  else if (mono_ms() - op.since_ms >= env_.timeout_ms)
    st = MC_ERR_TIMEOUT;
  if (st != MC_OK) {
    gds_drop(slot);
    return release(slot, st);
  }
  bool read = op.s.op == MC_READ;
  uint64_t off = op.s.remote + op.done, n = std::min(op.s.len - op.done, kGdsPiece);
  char *dev = static_cast<char *>(op.s.local) + op.done;
  // The O_DIRECT descriptor for what O_DIRECT allows, as on the io_uring path; else the
  // buffered one (cuFile may refuse one of them: then the other).
  bool direct = f.dfd >= 0 && reinterpret_cast<uintptr_t>(dev) % f.mem_align == 0 && off % f.off_align == 0 &&
                n % f.off_align == 0;
  std::string why;
  void *h = f.gds.handle(env_.gds.api(), direct ? f.dfd : f.fd, direct, &why);
  if (!h && direct) {
    direct = false;
    h = f.gds.handle(env_.gds.api(), f.fd, false, &why);
  }
  int64_t r = -1;
  if (h) {
    Status cs = cuda::use_device(op.dev);
    if (cs.ok())
      r = cufile_io(env_.gds.api(), h, read, dev, n, off, &why);
    else
      why = cs.message();
  }
  if (r <= 0) {
    if (r == 0) why = std::string(read ? "cuFileRead" : "cuFileWrite") + " moved no byte";
    return gds_fallback(slot, why);
  }
  op.done += static_cast<uint64_t>(r);
  op.since_ms = mono_ms();
  env_.gds.ops.fetch_add(1, std::memory_order_relaxed);
  if (direct) env_.gds.direct_ops.fetch_add(1, std::memory_order_relaxed);
  (read ? env_.gds.bytes_read : env_.gds.bytes_written).fetch_add(r, std::memory_order_relaxed);
  (read ? env_.bytes_read : env_.bytes_written).fetch_add(r, std::memory_order_relaxed);
  if (op.done < op.s.len) return;
  gds_drop(slot);
  // sync=1: cuFileWrite has no RWF_DSYNC; COMPLETED means durable, so the data goes down here.
  if (!read && f.u.sync && fdatasync(f.fd) != 0) {
    io_error(op, errno);
    return release(slot, MC_ERR_TRANSPORT);
  }
  release(slot, MC_OK);
}

void Ring::gds_fallback(uint32_t slot, const std::string &why) {
  Op &op = slots_[slot];
  env_.gds.fallback(env_.logger(),
                    std::string("cuFile failed for a ") + (op.s.op == MC_READ ? "READ" : "WRITE") + " of " +
                        std::to_string(op.s.len - op.done) + " bytes at offset " +
                        std::to_string(op.s.remote + op.done) + " of " + op.f->u.path + ": " + why);
  gds_drop(slot);
  op.gds = false;
  if (alloc_bounce(slot)) prep(slot);
}

}  // namespace mc::file
