// libFuzzer target for the shm admission reply (proto::ShmHello: pid and control page address),
// read by the health thread when it opens a same-host path. Checks: samehost_fuzz.h, plus a pid
// that names one process (never 0 or -1, which process_vm_* would not take as one) and a
// non-zero control address.
#include "samehost_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using mc::proto::ShmHello;
  samehost_fuzz::run<ShmHello>(data, size, MC_ERR_TRANSPORT, [](const ShmHello &h) {
    if (h.pid <= 0) samehost_fuzz::die("a pid that is not one process", std::to_string(h.pid));
    if (h.ctrl == 0) samehost_fuzz::die("a null control page address", "");
  });
  return 0;
}
