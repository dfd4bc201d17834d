// The RDMA transport: one-sided READ/WRITE over RC queue pairs, striped over every NIC in use
// (libibverbs devices, or the simulated fabric of rdma_devices=sim[:N]).
#pragma once
#include <memory>
#include <string>

#include "transport/transport.h"

namespace mc {

// The engine's settings the RDMA transport uses: its config keys (src/transport/registry.cpp
// reads them; mc.h documents them) and two engine-wide ones.
struct RdmaOptions {
  uint32_t timeout_ms = 5000;
  std::string auth_token;
  std::string rdma_devices = "auto";  // "auto", "sim", "sim:N" or a comma-separated list of names
  uint32_t rdma_qps_per_endpoint = 2;
  uint32_t rdma_max_endpoints = 4096;  // the endpoint cache's cap
  int rdma_gid_index = -1;             // -1: auto
  int rdma_port = 0;                   // 0: each device's first active port
  uint32_t rdma_mtu = 4096;
  uint64_t rdma_max_mr_size = 0;       // 0: the devices' max_mr_size; else at most this per region
  std::string rdma_affinity;           // "LOC=NIC,NIC;...": pinned NICs per memory location
  uint32_t rdma_register_threads = 0;  // threads registering a buffer with the NICs (0: one per NIC)
};

// The transport for opts.rdma_devices, or nullptr: with *st OK when no device is usable and
// none was asked for by name ("auto" on a host without RDMA), with *st failed when a device
// named in rdma_devices cannot be opened (the message names it). engine_name identifies this
// engine to peers during QP setup; target must outlive the transport's shutdown().
std::unique_ptr<Transport> make_rdma_transport(const RdmaOptions &opts, Host *target,
                                               const std::string &engine_name, Status *st);

}  // namespace mc
