// Config: string keys validated when set; typed options read once at engine creation.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "util/status.h"

namespace mc {

// Parses "123", "4K", "1M", "2G" (powers of 2^10). Returns false on junk or overflow.
bool parse_size(const std::string &s, uint64_t *out);
// Parses a decimal integer in [lo, hi].
bool parse_int(const std::string &s, int64_t lo, int64_t hi, int64_t *out);

class Config {
 public:
  // Validates key and value; unknown key or bad value leaves the config unchanged.
  Status set(const std::string &key, const std::string &value);
  // The value set, else MC_<KEY> from the environment (validated), else "" (caller's default).
  Status get(const std::string &key, std::string *out) const;
  static Status validate(const std::string &key, const std::string &value);
  static const std::vector<std::string> &keys();

 private:
  std::map<std::string, std::string> values_;
};

// Everything the engine needs, resolved from a Config with defaults applied.
struct EngineOptions {
  std::string name;
  std::string metadata = "p2p";
  std::string listen = "127.0.0.1:0";
  std::vector<std::string> transports;  // empty: auto
  uint32_t workers = 4;
  uint64_t slice_size = 1 << 20;
  uint32_t tcp_connections = 4;
  uint32_t timeout_ms = 5000;
  uint32_t metadata_ttl_ms = 10000;  // lease / key expiry with a metadata server
  uint32_t heartbeat_ms = 1000;
  uint32_t peer_timeout_ms = 3000;
  int log_level = -1;  // -1: leave the process-wide level alone
  std::string auth_token;  // empty: none (peers are admitted without a handshake)
  // RDMA (src/transport/rdma): devices ("auto", "sim", "sim:N" or a comma-separated list of
  // names), QPs per endpoint, the endpoint cache's cap, the GID index (-1: auto) and the MTU cap.
  std::string rdma_devices = "auto";
  uint32_t rdma_qps_per_endpoint = 2;
  uint32_t rdma_max_endpoints = 4096;
  int rdma_gid_index = -1;
  int rdma_port = 0;  // 0: each device's first active port
  uint32_t rdma_mtu = 4096;
  bool transport_allowed(const std::string &t) const;
};

Status resolve_options(const Config &cfg, EngineOptions *out);

}  // namespace mc
