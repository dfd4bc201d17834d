// Picks the metadata store for a `metadata` config value and holds what the server-backed stores
// share: the URL forms and the health probe behind a name claim.
#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/control.h"
#include "common/net.h"
#include "metadata/etcd/etcd_store.h"
#include "metadata/metadata.h"
#include "metadata/redis/redis_store.h"

namespace mc {
namespace {

std::vector<std::string> split_commas(const std::string &s) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    size_t e = s.find(',', b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

// HOST:PORT with a port 1..65535 (the config validator already checked the characters).
bool split_server(const std::string &s, std::string *host, uint16_t *port) {
  size_t c = s.rfind(':');
  if (c == std::string::npos || c == 0) return false;
  int64_t p;
  if (!parse_int(s.substr(c + 1), 1, 65535, &p)) return false;
  *host = s.substr(0, c);
  *port = static_cast<uint16_t>(p);
  return true;
}

}  // namespace

Status make_metadata_store(const std::string &url, const std::string &self_name,
                           uint32_t timeout_ms, uint32_t ttl_ms, const std::string &token,
                           std::unique_ptr<MetadataStore> *out) {
  if (url.empty() || url == "p2p") {
    *out = make_p2p_store(token);
    return Status::Ok();
  }
  auto bad = [&](const std::string &why) {
    return Err(MC_ERR_INVALID_ARG, "metadata store \"" + url + "\": " + why);
  };
  if (url.rfind("etcd://", 0) == 0) {
    EtcdOptions o;
    std::string rest = url.substr(7);
    size_t slash = rest.find('/');
    // The prefix keeps its leading '/', loses trailing ones; "/mc" by default.
    o.prefix = slash == std::string::npos ? "/mc" : rest.substr(slash);
    while (o.prefix.size() > 1 && o.prefix.back() == '/') o.prefix.pop_back();
    if (o.prefix == "/") o.prefix.clear();
    for (auto &s : split_commas(rest.substr(0, slash))) {
      std::string host;
      uint16_t port;
      if (!split_server(s, &host, &port)) return bad("\"" + s + "\" is not HOST:PORT");
      o.endpoints.push_back("http://" + host + ":" + std::to_string(port));
    }
    o.url = url;
    o.self_name = self_name;
    o.timeout_ms = timeout_ms;
    o.ttl_ms = ttl_ms;
    o.auth_token = token;
    return make_etcd_store(o, out);
  }
  if (url.rfind("redis://", 0) == 0) {
    RedisOptions o;
    std::string rest = url.substr(8);
    size_t slash = rest.find('/');
    if (!split_server(rest.substr(0, slash), &o.host, &o.port))
      return bad("\"" + rest.substr(0, slash) + "\" is not HOST:PORT");
    if (slash != std::string::npos) {
      int64_t db;
      if (!parse_int(rest.substr(slash + 1), 0, 1000000, &db)) return bad("bad database number");
      o.db = static_cast<int>(db);
    }
    o.url = url;
    o.prefix = "/mc";
    o.self_name = self_name;
    o.timeout_ms = timeout_ms;
    o.ttl_ms = ttl_ms;
    o.auth_token = token;
    return make_redis_store(o, out);
  }
  return bad("expected \"p2p\", \"etcd://...\" or \"redis://...\"");
}

bool holder_alive(const std::string &stored_json, uint32_t timeout_ms, const std::string &token,
                  std::string *who) {
  auto j = nlohmann::json::parse(stored_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("tcp") || !j["tcp"].is_string() ||
      !j.contains("incarnation") || !j["incarnation"].is_string()) {
    *who = "an unreadable descriptor";
    return false;
  }
  std::string tcp = j["tcp"].get<std::string>();
  std::string inc = j["incarnation"].get<std::string>();
  *who = "the engine at " + tcp + " (incarnation " + inc + ")";
  HostPort hp;
  if (!parse_host_port(tcp, &hp).ok()) return false;
  uint64_t answered = 0;
  Status ps = control_ping(hp, token, timeout_ms, &answered);
  if (ps.code() == MC_ERR_DENIED) return true;  // an engine answers there, under another token
  if (!ps.ok()) return false;
  uint64_t stored = 0;
  try {
    stored = std::stoull(inc, nullptr, 16);
  } catch (...) {
    return false;
  }
  // Someone else answering on that address (a restart, or a reused port) does not hold the name.
  return answered == stored;
}

}  // namespace mc
