// Reading the engine's counters into a Figures snapshot (counters.h).
#include "engine/counters.h"

namespace mc {

void EngineCounters::read(const std::vector<std::string> &names, Figures *f) const {
  for (size_t i = 0; i < kSlots; i++) {
    bool notify = i == kNotifySlot;
    if (!notify && (i >= names.size() || names[i].empty())) continue;
    TxFigures t;
    t.transport = notify ? "notify" : names[i];
    for (size_t op = 0; op < kOps; op++) {
      t.completed[op] = cells_.sum(cell(i, op, kCompleted));
      t.failed[op] = cells_.sum(cell(i, op, kFailed));
      t.bytes[op] = cells_.sum(cell(i, op, kBytes));
      f->requests_completed += t.completed[op];
      f->requests_failed += t.failed[op];
    }
    f->bytes_read += t.bytes[MC_READ];
    f->bytes_written += t.bytes[MC_WRITE];
    f->tx.push_back(std::move(t));
  }
  for (size_t i = 1; i < kStatuses; i++) {
    uint64_t n = cells_.sum(kTxCells + i);
    if (n) f->failures.push_back({static_cast<mc_status_t>(-int64_t(i)), n});
  }
  f->batch_completed = batch_ok_.snapshot();
  f->batch_failed = batch_failed_.snapshot();
  f->rejoins = rejoins_.load(std::memory_order_relaxed);
}

const char *status_name(mc_status_t s) {
  switch (s) {
    case MC_OK:
      return "MC_OK";
    case MC_ERR_INVALID_ARG:
      return "MC_ERR_INVALID_ARG";
    case MC_ERR_NO_MEMORY:
      return "MC_ERR_NO_MEMORY";
    case MC_ERR_NOT_FOUND:
      return "MC_ERR_NOT_FOUND";
    case MC_ERR_OUT_OF_RANGE:
      return "MC_ERR_OUT_OF_RANGE";
    case MC_ERR_EXISTS:
      return "MC_ERR_EXISTS";
    case MC_ERR_BUSY:
      return "MC_ERR_BUSY";
    case MC_ERR_TIMEOUT:
      return "MC_ERR_TIMEOUT";
    case MC_ERR_PEER_DOWN:
      return "MC_ERR_PEER_DOWN";
    case MC_ERR_TRANSPORT:
      return "MC_ERR_TRANSPORT";
    case MC_ERR_UNSUPPORTED:
      return "MC_ERR_UNSUPPORTED";
    case MC_ERR_METADATA:
      return "MC_ERR_METADATA";
    case MC_ERR_INTERNAL:
      return "MC_ERR_INTERNAL";
    case MC_ERR_BUFFER_TOO_SMALL:
      return "MC_ERR_BUFFER_TOO_SMALL";
    case MC_ERR_CANCELED:
      return "MC_ERR_CANCELED";
    case MC_ERR_DENIED:
      return "MC_ERR_DENIED";
  }
  return "MC_ERR_OTHER";
}

}  // namespace mc
