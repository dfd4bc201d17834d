// Which RDMA devices rdma_devices picks: a comma-separated list of glob patterns (fnmatch: *, ?,
// [...]) with exclusions written "!pattern" ("mlx5_*,!mlx5_3"). A device is picked when it
// matches some pattern (any, when there are only exclusions) and no exclusion.
#pragma once
#include <string>
#include <vector>

#include "util/status.h"

namespace mc::rdma {

// Whether spec uses patterns or exclusions (else it is a list of exact names, each required).
bool is_device_pattern(const std::string &spec);

// The names of seen that spec picks, in seen's order. None: MC_ERR_NOT_FOUND naming spec and
// listing every device seen.
Status select_devices(const std::string &spec, const std::vector<std::string> &seen,
                      std::vector<std::string> *chosen);

}  // namespace mc::rdma
