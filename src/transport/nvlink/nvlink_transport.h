// The nvlink transport: GPU-to-GPU copies between processes of one host through CUDA IPC, run
// by the GPUs' copy engines over NVLink (or PCIe peer-to-peer), with no host bounce.
#pragma once
#include <memory>
#include <string>

#include "transport/transport.h"

namespace mc {

struct NvlinkOptions {
  uint32_t timeout_ms = 5000;
  uint64_t incarnation = 0;
  uint32_t streams = 4;  // copy streams per local GPU
  // Same-host admission (proto/unix_msg.h): no IPC handle, VMM fd or control page is handed to
  // a process that has not proved it holds this token (empty: token-less engines only).
  std::string auth_token;
};

// nullptr with *why set when this process has no CUDA driver or no GPU (then "cuda:N" buffers
// still register when the driver is there, and move over TCP through staging).
std::unique_ptr<Transport> make_nvlink_transport(const NvlinkOptions &o, Host *target, std::string *why);

}  // namespace mc
