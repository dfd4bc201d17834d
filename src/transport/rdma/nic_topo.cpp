#include "transport/rdma/nic_topo.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <fstream>

#include "gpu/cuda_loader.h"
#include "util/config.h"

namespace mc::rdma {
namespace {

// The PCI path of a sysfs device link (e.g. class/infiniband/mlx5_0/device), resolved: the
// components after <root>/devices/.
std::vector<std::string> pci_path(const std::string &root, const std::string &link) {
  char real[PATH_MAX], rroot[PATH_MAX];
  if (!::realpath((root + "/" + link).c_str(), real) || !::realpath(root.c_str(), rroot)) return {};
  std::string r = real, base = std::string(rroot) + "/devices/";
  if (r.rfind(base, 0) != 0) return {};
  std::vector<std::string> v;
  for (auto &c : split(r.substr(base.size()), '/'))
    if (!c.empty()) v.push_back(c);
  return v;
}

int read_numa(const std::string &root, const std::string &link) {
  std::ifstream f(root + "/" + link + "/numa_node");
  int n = -1;
  if (!(f >> n) || n < 0) return -1;
  return n;
}

Place place_of(const std::string &link) {
  std::string root = sysfs_root();
  Place p;
  p.pci = pci_path(root, link);
  p.numa = read_numa(root, link);
  return p;
}

// GPU dev's PCI address: MC_SIM_GPU_PCI (tests) or the CUDA driver.
bool gpu_address(int dev, std::string *out) {
  if (const char *e = std::getenv("MC_SIM_GPU_PCI"); e && *e) {
    auto v = split(e, ',');
    if (dev < 0 || static_cast<size_t>(dev) >= v.size()) return false;
    *out = v[static_cast<size_t>(dev)];
    return true;
  }
  return cuda::pci_address(dev, out);
}

bool valid_location(const std::string &l) {
  int64_t n;
  if (l.rfind("cuda:", 0) == 0) return parse_int(l.substr(5), 0, 1023, &n);
  return l.rfind("cpu:", 0) == 0 && parse_int(l.substr(4), 0, 4095, &n);
}

bool valid_nic_name(const std::string &n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

}  // namespace

std::string sysfs_root() {
  const char *e = std::getenv("MC_SYSFS_ROOT");
  return e && *e ? std::string(e) : std::string("/sys");
}

Place nic_place(const std::string &name) { return place_of("class/infiniband/" + name + "/device"); }

Place memory_place(const std::string &location) {
  Place p;
  int64_t n;
  if (location.rfind("cpu:", 0) == 0 && parse_int(location.substr(4), 0, 4095, &n)) {
    p.numa = static_cast<int>(n);
  } else if (location.rfind("cuda:", 0) == 0 && parse_int(location.substr(5), 0, 1023, &n)) {
    std::string addr;
    if (gpu_address(static_cast<int>(n), &addr)) p = place_of("bus/pci/devices/" + addr);
  }
  return p;
}

int distance(const Place &mem, const Place &nic) {
  size_t common = 0;
  while (common < mem.pci.size() && common < nic.pci.size() && mem.pci[common] == nic.pci[common]) common++;
  // pci[0] is the host bridge ("pci0000:00"); sharing a component below it means sharing a
  // root port, i.e. the link to one switch (or the device itself).
  if (common >= 2) return 0;
  if (common == 1) return 1;
  if (mem.numa >= 0 && mem.numa == nic.numa) return 2;
  return 3;
}

uint64_t nearest(const Place &mem, const std::vector<Place> &nics) {
  if (nics.size() > 64) return 0;
  int best = 4, worst = -1;
  for (auto &n : nics) {
    int d = distance(mem, n);
    best = std::min(best, d);
    worst = std::max(worst, d);
  }
  if (best == worst) return 0;
  uint64_t m = 0;
  for (size_t i = 0; i < nics.size(); i++)
    if (distance(mem, nics[i]) == best) m |= 1ull << i;
  return m;
}

bool parse_affinity(const std::string &v, std::map<std::string, std::vector<std::string>> *out) {
  out->clear();
  if (v.empty()) return true;
  if (v.back() == ';' || v.back() == ',') return false;
  for (auto &entry : split(v, ';')) {
    if (entry.empty()) return false;
    size_t eq = entry.find('=');
    if (eq == std::string::npos) return false;
    std::string loc = entry.substr(0, eq);
    if (!valid_location(loc) || out->count(loc)) return false;
    std::string list = entry.substr(eq + 1);
    auto names = split(list, ',');
    if (names.empty() || list.back() == ',') return false;
    for (auto &n : names)
      if (!valid_nic_name(n)) return false;
    (*out)[loc] = names;
  }
  return true;
}

}  // namespace mc::rdma
