#include "transport/rdma/nic_select.h"

#include <fnmatch.h>

#include "util/config.h"

namespace mc::rdma {

bool is_device_pattern(const std::string &spec) { return spec.find_first_of("*?[!") != std::string::npos; }

Status select_devices(const std::string &spec, const std::vector<std::string> &seen,
                      std::vector<std::string> *chosen) {
  std::vector<std::string> take, drop;
  for (auto &p : split(spec, ',')) {
    if (p.empty()) continue;
    if (p[0] == '!')
      drop.push_back(p.substr(1));
    else
      take.push_back(p);
  }
  if (take.empty()) take.push_back("*");
  auto any = [](const std::vector<std::string> &pats, const std::string &name) {
    for (auto &p : pats)
      if (::fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
    return false;
  };
  chosen->clear();
  for (auto &n : seen)
    if (any(take, n) && !any(drop, n)) chosen->push_back(n);
  if (!chosen->empty()) return Status::Ok();
  std::string list;
  for (auto &n : seen) list += (list.empty() ? "" : ", ") + n;
  return Err(MC_ERR_NOT_FOUND, "no RDMA device matches \"" + spec +
                                   "\"; devices seen: " + (list.empty() ? std::string("none") : list));
}

}  // namespace mc::rdma
