// A MetadataStore on redis (see redis_store.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "metadata/metadata.h"

namespace mc {

struct RedisOptions {
  std::string url;  // as configured, for messages
  std::string host;
  uint16_t port = 6379;
  int db = 0;
  std::string prefix;  // keys are <prefix>/segments/<name>
  std::string self_name;
  uint32_t timeout_ms = 5000;
  uint32_t ttl_ms = 10000;
  std::string auth_token;  // this engine's, for the health probe of a name's holder
};

Status make_redis_store(const RedisOptions &o, std::unique_ptr<MetadataStore> *out);

}  // namespace mc
