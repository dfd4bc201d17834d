// The RDMA transport: one-sided READ/WRITE over RC queue pairs, striped over every NIC in use
// (libibverbs devices, or the simulated fabric of rdma_devices=sim[:N]).
#pragma once
#include <memory>
#include <string>

#include "util/config.h"
#include "transport/transport.h"

namespace mc {

// The transport for opts.rdma_devices, or nullptr: with *st OK when no device is usable and
// none was asked for by name ("auto" on a host without RDMA), with *st failed when a device
// named in rdma_devices cannot be opened (the message names it). engine_name identifies this
// engine to peers during QP setup; target must outlive the transport's shutdown().
std::unique_ptr<Transport> make_rdma_transport(const EngineOptions &opts, TargetAccess *target,
                                               const std::string &engine_name, Status *st);

}  // namespace mc
