// One worker thread and its io_uring: takes slices of any open file segment, keeps up to
// `depth` of them in flight, and reports each once through the host. No thread per request or
// per file: an engine has `workers` rings, started with its first file segment.
#pragma once
#include <liburing.h>
#include <mc_transport_plugin.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "transport/file/file_fixed.h"
#include "transport/file/file_gds.h"
#include "transport/file/file_seg.h"

namespace mc::file {

// What every ring of one transport instance shares: the host, settings and counters.
struct RingEnv {
  mc_tp_host_t *host = nullptr;
  const mc_tp_host_ops_t *ops = nullptr;
  uint32_t timeout_ms = 5000;  // a slice that makes no progress this long ends MC_ERR_TIMEOUT
  std::atomic<uint64_t> bytes_read{0}, bytes_written{0}, slices_ok{0}, slices_failed{0};
  std::atomic<uint64_t> direct_ops{0}, buffered_ops{0};
  FixedTable *fixed = nullptr;  // local memory as io_uring fixed buffers
  std::atomic<uint64_t> fixed_ops{0};
  // Tests only (MC_FILE_TEST_STALL=OFFSET in the environment when the engine is made): a slice
  // covering this file offset never moves (it waits on an empty pipe) until it is canceled or
  // times out, so that both can be tested on a regular file. -1: off.
  int64_t stall_at = -1;
  std::atomic<uint64_t> staged_ops{0};  // pieces moved through a host bounce (GPU memory)
  std::mutex err_mu;                    // guards last_error
  std::string last_error;               // the last I/O error, with its errno (stats_json)
  GdsEnv gds;                           // cuFile: GPU memory <-> file without the staging pool
  void log(int32_t level, const std::string &m) { ops->log(host, level, m.c_str()); }
  GdsEnv::Log logger() {
    return [this](int32_t level, const std::string &m) { log(level, m); };
  }
};

// A slice on its way: where it stands and what ends it.
struct Op {
  mc_tp_slice_t s;
  FileSeg *f = nullptr;
  uint32_t gen = 0;           // f->gen at submit: fail_path ends older ones
  uint64_t done = 0;          // bytes moved so far (short reads and writes go on from here)
  uint64_t since_ms = 0;      // when it last started or progressed
  mc_status_t abort = MC_OK;  // set when an async cancel was sent for it: the status it ends with
  int fixed = -1;             // the fixed buffer holding its local memory in this ring, or -1
  char *bounce = nullptr;     // GPU local memory: the host buffer a piece goes through (owned)
  uint32_t piece = 0;         // bytes of the piece in the bounce now
  bool gds = false;           // GPU local memory moved by cuFile (file_ring_gds.cpp), no bounce
  int dev = -1;               // GPU local memory: its device
};

class Ring {
 public:
  Ring(RingEnv &env, unsigned depth, unsigned index) : env_(env), depth_(depth), index_(index) {}
  ~Ring() { stop(); }
  // Sets up the ring and starts the thread; false with *why when io_uring is not available.
  bool start(std::string *why);
  // Queues ops (copied); never blocks on I/O.
  void push(const Op *ops, size_t n);
  // Fails what is queued (MC_ERR_PEER_DOWN), waits for what is in flight, joins the thread.
  void stop();

 private:
  void run();
  bool take();                                      // the queue into pending_; true once stopping
  void fill();                                      // starts pending ops while slots are free
  bool begin(Op &op);                               // the checks before a start; false when it ended at once
  void prep(uint32_t slot);                         // one read or write SQE for the rest of slots_[slot]
  bool stage(uint32_t slot, bool out, uint64_t n);  // GPU memory <-> the op's bounce
  void on_cqe(uint64_t data, int res);
  void on_progress(uint32_t slot, int res);
  void finish(Op &op, mc_status_t st);
  void release(uint32_t slot, mc_status_t st);
  void tick(uint64_t now);  // cancels in-flight ops that were canceled, failed or timed out
  void cancel_slot(uint32_t slot, mc_status_t why);
  void arm_poll();
  io_uring_sqe *sqe();
  void drain();
  void io_error(Op &op, int e);
  bool alloc_bounce(uint32_t slot);  // false: the op ended (no memory)
  // cuFile (file_ring_gds.cpp): the ops in gds_ move one piece per turn of the loop, on this
  // thread, between the io_uring completions; a failed piece sends its op to the bounce path.
  bool gds_begin(uint32_t slot);
  void gds_turn();
  void gds_step(uint32_t slot);
  void gds_fallback(uint32_t slot, const std::string &why);
  void gds_drop(uint32_t slot);

  RingEnv &env_;
  unsigned depth_;
  unsigned index_;  // this ring's number among the instance's (FixedTable)
  io_uring ring_{};
  bool ring_ok_ = false;
  bool fixed_ok_ = false;    // the ring has a fixed-buffer table
  int efd_ = -1;             // pushes wake the thread through a poll on it
  int stall_[2] = {-1, -1};  // the empty pipe of env_.stall_at (tests)
  char stall_byte_ = 0;
  std::vector<Op> slots_;       // in flight, indexed by user_data - 1
  std::vector<uint32_t> free_;  // free slot indexes
  std::deque<Op> pending_;      // taken from the queue, not yet started (thread only)
  std::vector<uint32_t> gds_;   // slots moving through cuFile (thread only)
  std::mutex mu_;               // guards queue_ and stopping_
  std::deque<Op> queue_;
  bool stopping_ = false;
  std::thread th_;
};

uint64_t mono_ms();

}  // namespace mc::file
