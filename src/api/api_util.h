// Helpers shared by the C shim files: last-error handling and the exception barrier.
#pragma once
#include <mc.h>

#include <exception>
#include <new>
#include <string>

#include "util/status.h"

namespace mc::api {

// Sets this thread's mc_last_error() text and returns code.
mc_status_t fail(mc_status_t code, const std::string &msg);
// Sets the last error from a Status (which must not be ok) and returns its code.
inline mc_status_t fail(const Status &s) { return fail(s.code(), s.message()); }
// Returns MC_OK (the last error is kept until the next failure, as libgit2 does).
inline mc_status_t ok() { return MC_OK; }

}  // namespace mc::api

// Wraps the body of every ABI entry point returning mc_status_t: no exception crosses the ABI.
#define MC_API_TRY try {
#define MC_API_CATCH(fn)                                                                        \
  }                                                                                             \
  catch (const std::bad_alloc &) {                                                              \
    return ::mc::api::fail(MC_ERR_NO_MEMORY, std::string(fn) + ": out of memory");              \
  }                                                                                             \
  catch (const std::exception &e) {                                                             \
    return ::mc::api::fail(MC_ERR_INTERNAL, std::string(fn) + ": internal error: " + e.what()); \
  }                                                                                             \
  catch (...) {                                                                                 \
    return ::mc::api::fail(MC_ERR_INTERNAL, std::string(fn) + ": unknown internal error");      \
  }
