// Process-wide logging: one handler (stderr by default), one level.
#pragma once
#include <mc.h>

#include <string>

namespace mc {

bool log_enabled(int level);
void log_write(int level, const std::string &msg);
void log_set_level(int level);
int log_level();
void log_set_handler(mc_log_fn fn, void *user);

}  // namespace mc

#define MC_LOG(level, expr)                     \
  do {                                          \
    if (::mc::log_enabled(level)) {             \
      std::ostringstream mc_log_os_;            \
      mc_log_os_ << expr;                       \
      ::mc::log_write(level, mc_log_os_.str()); \
    }                                           \
  } while (0)
#define MC_LOGE(expr) MC_LOG(MC_LOG_ERROR, expr)
#define MC_LOGW(expr) MC_LOG(MC_LOG_WARN, expr)
#define MC_LOGI(expr) MC_LOG(MC_LOG_INFO, expr)
#define MC_LOGD(expr) MC_LOG(MC_LOG_DEBUG, expr)

#include <sstream>
