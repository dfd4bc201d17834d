// The in-process transport: a segment opened by the engine's own name. Copies are memcpy on
// the submitting thread for small slices and on a few worker threads for large ones.
#pragma once
#include <memory>

#include "transport/transport.h"

namespace mc {

std::unique_ptr<Transport> make_local_transport(Host *target, uint32_t workers);

}  // namespace mc
