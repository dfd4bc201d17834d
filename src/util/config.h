// Config: string keys validated when set; typed options read once at engine creation.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "util/status.h"

namespace mc {

// Parses "123", "4K", "1M", "2G" (powers of 2^10). Returns false on junk or overflow.
bool parse_size(const std::string &s, uint64_t *out);
// Parses a decimal integer in [lo, hi].
bool parse_int(const std::string &s, int64_t lo, int64_t hi, int64_t *out);
// Whether s is a decimal integer in [lo, hi].
bool int_in(const std::string &s, int64_t lo, int64_t hi);
// Splits s at sep ("a,,b" gives "a", "", "b").
std::vector<std::string> split(const std::string &s, char sep);

// One config key: its name, the form it expects (said in the error for a bad value), the
// validator of that form and a line of documentation.
struct ConfigKey {
  std::string key;
  std::string what;
  std::function<bool(const std::string &)> ok;
  std::string doc;
};

// The keys of the engine itself (name, metadata, listen, workers, ...), `transports` included.
const std::vector<ConfigKey> &engine_config_keys();
// Defined by the transport registry (src/transport/registry.cpp), not here: util sits below
// the transports, so the registry supplies their keys and names at link time, and Config still
// validates every key in one place. transport_config_keys(): every registered transport's own
// keys; transport_name_known(): whether `transports` may name it; transport_names(): the
// registered names, comma-separated, for messages.
std::vector<ConfigKey> transport_config_keys();
bool transport_name_known(const std::string &name);
std::string transport_names();
// Also the registry's: loads the transport plugins of a `plugins` value (transport/plugin), so
// their names and keys join the three above; *paths (may be NULL) gets their files.
// MC_ERR_UNSUPPORTED naming the file and the reason when one cannot be loaded.
Status load_transport_plugins(const std::string &list, std::vector<std::string> *paths);

class Config {
 public:
  // Validates key and value; unknown key or bad value leaves the config unchanged. A plugin's
  // keys and names are known once it is loaded: a key or `transports` value unknown so far,
  // set after `plugins`, loads those plugins first (their failure is this call's error).
  Status set(const std::string &key, const std::string &value);
  // The value set, else MC_<KEY> from the environment (validated), else "" (caller's default).
  Status get(const std::string &key, std::string *out) const;
  static Status validate(const std::string &key, const std::string &value);
  static std::vector<std::string> keys();

 private:
  std::map<std::string, std::string> values_;
};

// Everything the engine needs, resolved from a Config with defaults applied.
struct EngineOptions {
  std::string name;
  std::string metadata = "p2p";
  std::string listen = "127.0.0.1:0";
  std::string metrics_listen;           // empty: no metrics endpoint
  std::vector<std::string> transports;  // empty: auto
  std::vector<std::string> plugins;     // the files `plugins` loaded (resolved paths)
  uint32_t workers = 4;
  uint64_t slice_size = 1 << 20;
  uint32_t timeout_ms = 5000;
  uint32_t metadata_ttl_ms = 10000;  // lease / key expiry with a metadata server
  uint32_t heartbeat_ms = 1000;
  uint32_t peer_timeout_ms = 3000;
  uint32_t notify_queue = 65536;  // notifications kept unread
  int log_level = -1;             // -1: leave the process-wide level alone
  std::string auth_token;         // empty: none (peers are admitted without a handshake)
  // Transports' own keys (transport_config_keys) that were set, in the config or as MC_<KEY>,
  // already validated: each transport reads and types its own through value().
  std::map<std::string, std::string> transport_values;
  std::string value(const std::string &key) const {
    auto it = transport_values.find(key);
    return it == transport_values.end() ? std::string() : it->second;
  }
  bool transport_allowed(const std::string &t) const;
};

Status resolve_options(const Config &cfg, EngineOptions *out);

}  // namespace mc
