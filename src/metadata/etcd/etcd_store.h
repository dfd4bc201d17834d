// A MetadataStore on etcd v3 (see etcd_store.cpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "metadata/metadata.h"

namespace mc {

struct EtcdOptions {
  std::string url;                     // as configured, for messages
  std::vector<std::string> endpoints;  // "http://HOST:PORT", tried in order
  std::string prefix;                  // keys are <prefix>/segments/<name>
  std::string self_name;
  uint32_t timeout_ms = 5000;
  uint32_t ttl_ms = 10000;
  std::string auth_token;  // this engine's, for the health probe of a name's holder
};

Status make_etcd_store(const EtcdOptions &o, std::unique_ptr<MetadataStore> *out);

}  // namespace mc
