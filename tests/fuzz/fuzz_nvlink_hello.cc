// libFuzzer target for the nvlink admission reply (proto::NvlinkHello). Checks: samehost_fuzz.h,
// plus a pid that names one process.
#include "samehost_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using mc::proto::NvlinkHello;
  samehost_fuzz::run<NvlinkHello>(data, size, MC_ERR_TRANSPORT, [](const NvlinkHello &h) {
    if (h.pid <= 0) samehost_fuzz::die("a pid that is not one process", std::to_string(h.pid));
  });
  return 0;
}
