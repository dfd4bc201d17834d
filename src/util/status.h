// Status: the small result type every internal function returns (code + message).
#pragma once
#include <mc.h>

#include <string>
#include <utility>

namespace mc {

class Status {
 public:
  Status() = default;
  Status(mc_status_t code, std::string msg) : code_(code), msg_(std::move(msg)) {}
  static Status Ok() { return Status(); }
  bool ok() const { return code_ == MC_OK; }
  mc_status_t code() const { return code_; }
  const std::string &message() const { return msg_; }

 private:
  mc_status_t code_ = MC_OK;
  std::string msg_;
};

inline Status Err(mc_status_t code, std::string msg) { return Status(code, std::move(msg)); }

}  // namespace mc
