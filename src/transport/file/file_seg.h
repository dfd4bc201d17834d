// One open file segment (the plugin's path): the file's descriptors and what requests need to
// know of it, plus the bookkeeping the rings and disconnect share.
#pragma once
#include <mc.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "transport/file/file_gds.h"
#include "transport/file/file_uri.h"

namespace mc::file {

struct FileSeg {
  ~FileSeg();
  std::string uri;
  FileUri u;
  int fd = -1;                // buffered
  int dfd = -1;               // O_DIRECT, or -1 where the file system refuses it (or direct=0)
  uint32_t mem_align = 4096;  // O_DIRECT alignment of memory addresses
  uint32_t off_align = 4096;  // ... of offsets and lengths
  uint64_t size = 0;          // the segment's one buffer: [0, size)
  bool writable = false;      // opened read-write (else WRITE is DENIED)
  bool created = false;       // this open made the file
  GdsFile gds;                // its cuFile handles (GPU memory), deregistered before the close

  // Slices handed to the rings and not yet reported; disconnect waits for 0 (done_mu/done_cv).
  std::atomic<int64_t> active{0};
  std::mutex done_mu;
  std::condition_variable done_cv;
  // fail_path: slices submitted before it (an older gen) end with fail_status.
  std::atomic<uint32_t> gen{0};
  std::atomic<int32_t> fail_status{MC_OK};
  // The last I/O error (errno), so that one failing file logs once per errno, not per request.
  std::atomic<int> last_errno{0};

  // One slice of this segment is done with the file (called before its report: the report may
  // end the last request holding the segment, whose path's disconnect then runs on this very
  // thread and waits for active == 0). Under done_mu, so that disconnect cannot free the
  // segment between the count and the wake-up.
  void one_done() {
    std::lock_guard<std::mutex> lk(done_mu);
    if (active.fetch_sub(1, std::memory_order_acq_rel) == 1) done_cv.notify_all();
  }
};

// Opens (or with size=N creates or grows) the file uri names. MC_OK, or MC_ERR_NOT_FOUND /
// MC_ERR_INVALID_ARG / MC_ERR_DENIED with *why naming the uri, the path and the reason.
mc_status_t open_file_segment(const std::string &uri, std::unique_ptr<FileSeg> *out, std::string *why);

// The O_DIRECT alignment of an open file (statx STATX_DIOALIGN, else the block device's logical
// block size, else 4096): false when the kernel says O_DIRECT is not supported on it.
bool dio_alignment(int fd, bool block_device, uint32_t *mem_align, uint32_t *off_align);

}  // namespace mc::file
