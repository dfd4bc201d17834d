// libFuzzer target for the shm LIST reply (proto::ShmList), read by shm workers and the health
// thread from a same-host peer. Checks: samehost_fuzz.h.
#include "samehost_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  samehost_fuzz::run<mc::proto::ShmList>(data, size, MC_ERR_TRANSPORT,
                                         [](const mc::proto::ShmList &l) { samehost_fuzz::check_buffers(l.buffers); });
  return 0;
}
