// Work of the engine ordered on a caller's CUDA stream (mc_batch_submit_on_stream) without the
// calling thread ever waiting for the GPU:
//  - start: an event recorded on the stream marks the work queued before the call; the gate's
//    one thread (per engine) polls it and starts what waited for it (a StreamWaiter);
//  - end: the stream waits on the device (cuStreamWaitValue32, GEQ) for a 32-bit word of pinned
//    host memory that the engine writes when the call's requests ended (StreamHold).
// Each hold owns a word while in use; a word's values only grow (by one per use), so a wait
// queued for an older use of the word is released too, and a word can be reused at once.
#pragma once
#include <mc.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "gpu/cuda_loader.h"
#include "util/status.h"

namespace mc::cuda {

class StreamGate;

// The requests of one call that the stream waits for. ended() once per request.
struct StreamHold {
  std::atomic<int64_t> left{0};
  volatile uint32_t *word = nullptr;
  uint32_t value = 0;
  void ended();  // the last one writes the word: the stream goes on
};

// What waits for the stream's earlier work. run() is called exactly once: with MC_OK once that
// work finished, or with an error when abandoned() said so or the gate stopped.
class StreamWaiter {
 public:
  virtual ~StreamWaiter() = default;
  virtual mc_status_t abandoned() = 0;  // MC_OK: keep waiting; else run() with this status now
  virtual void run(mc_status_t st) = 0;
};

class StreamGate {
 public:
  StreamGate() = default;
  ~StreamGate() { stop(); }
  StreamGate(const StreamGate &) = delete;
  StreamGate &operator=(const StreamGate &) = delete;

  // One call on one stream: its context made current on the calling thread until end().
  struct Call {
    CUstream stream = nullptr;
    CUcontext ctx = nullptr;
    CUcontext prev = nullptr;
    CUevent mark = nullptr;  // recorded on stream at begin(): the work queued before the call
  };
  // Resolves stream's context, makes it current and records the mark. MC_ERR_UNSUPPORTED
  // without a driver or without cuStreamWaitValue32; MC_ERR_INVALID_ARG for NULL with no
  // current context or a stream the driver does not know.
  Status begin(void *stream, Call *c);
  // A hold for n requests (its word taken, not yet waited on by the stream).
  static Status hold(int64_t n, StreamHold **out);
  // Queues the stream's wait for h's word. On failure the caller ends h's requests itself.
  Status wait_for(Call &c, uint32_t value, volatile uint32_t *word);
  // Hands w to the gate's thread, which runs it once c.mark completed; the mark is then the
  // gate's. Without w the mark is recycled. Restores the calling thread's context.
  void end(Call &c, std::unique_ptr<StreamWaiter> w);
  // Runs every waiter still waiting with MC_ERR_PEER_DOWN and stops the thread.
  void stop();

  static void release(StreamHold *h);  // StreamHold::ended, last one
  std::atomic<uint64_t> started{0}, waits{0}, released{0}, abandoned{0};

 private:
  struct Job {
    CUcontext ctx;
    CUevent mark;
    std::unique_ptr<StreamWaiter> w;
  };
  void loop();
  bool poll(std::vector<Job> &mine);
  CUevent take_event(CUcontext ctx, Status *st);
  void give_event(CUcontext ctx, CUevent e);

  // mu_ guards jobs_, stop_, thread_ and events_. The holds and their words are the
  // process's (stream_gate.cpp), never freed: a stream may still wait on a word after the
  // engine that wrote it is gone.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Job> jobs_;
  bool stop_ = false;
  std::thread thread_;
  std::vector<std::pair<CUcontext, CUevent>> events_;
};

}  // namespace mc::cuda
