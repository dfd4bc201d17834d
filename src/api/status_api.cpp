// Version, status names and the thread-local last error.
#include <mc.h>

#include <string>

#include "api/api_util.h"

namespace {
thread_local std::string t_last_error;
#define MC_STR2(x) #x
#define MC_STR(x) MC_STR2(x)
constexpr const char kVersion[] =
    MC_STR(MC_VERSION_MAJOR) "." MC_STR(MC_VERSION_MINOR) "." MC_STR(MC_VERSION_PATCH);
}  // namespace

namespace mc::api {
mc_status_t fail(mc_status_t code, const std::string &msg) {
  try {
    t_last_error = msg;
  } catch (...) {
    // Out of memory while storing the message: keep the code, drop the text.
  }
  return code;
}
}  // namespace mc::api

extern "C" {

MC_API uint32_t mc_version(void) {
  return (uint32_t(MC_VERSION_MAJOR) << 16) | (uint32_t(MC_VERSION_MINOR) << 8) | uint32_t(MC_VERSION_PATCH);
}

MC_API const char *mc_version_string(void) { return kVersion; }

MC_API const char *mc_status_str(mc_status_t s) {
  switch (s) {
    case MC_OK:
      return "ok";
    case MC_ERR_INVALID_ARG:
      return "invalid argument";
    case MC_ERR_NO_MEMORY:
      return "out of memory";
    case MC_ERR_NOT_FOUND:
      return "not found";
    case MC_ERR_OUT_OF_RANGE:
      return "out of range";
    case MC_ERR_EXISTS:
      return "already exists";
    case MC_ERR_BUSY:
      return "busy";
    case MC_ERR_TIMEOUT:
      return "timed out";
    case MC_ERR_PEER_DOWN:
      return "peer down";
    case MC_ERR_TRANSPORT:
      return "transport error";
    case MC_ERR_UNSUPPORTED:
      return "unsupported";
    case MC_ERR_METADATA:
      return "metadata error";
    case MC_ERR_INTERNAL:
      return "internal error";
    case MC_ERR_BUFFER_TOO_SMALL:
      return "buffer too small";
    case MC_ERR_CANCELED:
      return "canceled";
    case MC_ERR_DENIED:
      return "access denied";
    default:
      return "unknown status";
  }
}

MC_API const char *mc_last_error(void) { return t_last_error.c_str(); }

}  // extern "C"
