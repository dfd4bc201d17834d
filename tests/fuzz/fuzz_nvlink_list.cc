// libFuzzer target for the nvlink LIST reply (proto::NvlinkList), read by the nvlink stream
// thread from a same-host peer. Checks: samehost_fuzz.h, plus each buffer's handle: a vmm
// buffer peers may use has non-empty, non-wrapping chunks; an IPC one a 64-byte handle and a
// base at or below its address; one peers may not use carries none.
#include "samehost_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using mc::proto::NvlinkList;
  samehost_fuzz::run<NvlinkList>(data, size, MC_ERR_TRANSPORT, [](const NvlinkList &l) {
    samehost_fuzz::check_buffers(l.buffers);
    for (auto &b : l.buffers) {
      if (b.dev < 0) samehost_fuzz::die("a negative device", std::to_string(b.dev));
      if (b.access == 0) {
        if (!b.chunks.empty() || !b.ipc.empty()) samehost_fuzz::die("a handle for a closed buffer", "");
      } else if (b.vmm) {
        if (b.chunks.empty()) samehost_fuzz::die("a vmm buffer without chunks", "");
        for (auto &[a, n] : b.chunks)
          if (n == 0 || a + n < a) samehost_fuzz::die("an empty or wrapping chunk", "");
      } else if (b.ipc.size() != mc::proto::kIpcHandleBytes || b.base > b.addr) {
        samehost_fuzz::die("a bad IPC handle or base", "");
      }
    }
  });
  return 0;
}
