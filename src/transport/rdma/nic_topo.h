// NIC choice by topology: which of the engine's NICs are nearest to the memory a buffer lives in
// ("cuda:N" or "cpu:N"), read from sysfs. Nearness, best first: under one PCIe switch (the two
// devices share a PCI bridge below the host bridge), under one host bridge, on one NUMA node,
// farther. A NIC is found at <sysfs>/class/infiniband/<name>/device (a simulated NIC claims the
// identity of the name it was opened under, MC_SIM_NIC_NAMES), a GPU at
// <sysfs>/bus/pci/devices/<its PCI address> (from the CUDA driver, or MC_SIM_GPU_PCI in tests:
// comma-separated addresses, GPU 0 first). <sysfs> is MC_SYSFS_ROOT (tests) or /sys.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mc::rdma {

// Where a device or a memory kind sits. pci: the device's PCI path below <sysfs>/devices
// ("pci0000:00/0000:00:01.0/0000:01:00.0"), split in components; empty when unknown.
struct Place {
  std::vector<std::string> pci;
  int numa = -1;  // -1: unknown
};

std::string sysfs_root();
// The place of RDMA device name (nothing known when sysfs has no such device).
Place nic_place(const std::string &name);
// The place of memory at location: "cuda:N" the GPU's, "cpu:N" NUMA node N, "cpu" nothing.
Place memory_place(const std::string &location);
// 0: one PCIe switch, 1: one host bridge, 2: one NUMA node, 3: farther or unknown.
int distance(const Place &mem, const Place &nic);
// Bit i set for each NIC i (of at most 64) at the smallest distance from mem; 0 when every NIC
// is as near as every other (no preference).
uint64_t nearest(const Place &mem, const std::vector<Place> &nics);

// rdma_affinity: "LOC=NIC,NIC;LOC=..." (LOC "cuda:N" or "cpu:N", NIC a device name), as a map
// from location to names. False when malformed (a location twice, an empty list, bad names).
bool parse_affinity(const std::string &v, std::map<std::string, std::vector<std::string>> *out);

}  // namespace mc::rdma
