#include "util/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace mc {
namespace {
std::atomic<int> g_level{MC_LOG_WARN};
// Guards g_fn and g_user. Not held while the user's handler runs (a snapshot is taken), so a
// handler may log or change the handler without deadlock.
std::mutex g_mu;
mc_log_fn g_fn = nullptr;
void *g_user = nullptr;
const char *level_name(int l) {
  switch (l) {
    case MC_LOG_ERROR:
      return "error";
    case MC_LOG_WARN:
      return "warn";
    case MC_LOG_INFO:
      return "info";
    default:
      return "debug";
  }
}
}  // namespace

bool log_enabled(int level) { return level <= g_level.load(std::memory_order_relaxed); }
int log_level() { return g_level.load(std::memory_order_relaxed); }
void log_set_level(int level) {
  if (level < MC_LOG_ERROR) level = MC_LOG_ERROR;
  if (level > MC_LOG_DEBUG) level = MC_LOG_DEBUG;
  g_level.store(level);
}

void log_write(int level, const std::string &msg) {
  mc_log_fn fn;
  void *user;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    fn = g_fn;
    user = g_user;
  }
  if (fn) {
    fn(level, msg.c_str(), user);
  } else {
    std::fprintf(stderr, "mc %s: %s\n", level_name(level), msg.c_str());
  }
}

void log_set_handler(mc_log_fn fn, void *user) {
  std::lock_guard<std::mutex> lk(g_mu);
  g_fn = fn;
  g_user = user;
}

}  // namespace mc

extern "C" {
MC_API void mc_log_set_handler(mc_log_fn fn, void *user) {
  try {
    mc::log_set_handler(fn, user);
  } catch (...) {
  }
}
MC_API void mc_log_set_level(int level) { mc::log_set_level(level); }
}
