// Picks the metadata store for a `metadata` config value and holds what the server-backed stores
// share: the URL forms and the health probe behind a name claim.
#include <nlohmann/json.hpp>

#include "util/config.h"
#include "control/client.h"
#include "util/net.h"
#include "metadata/etcd/etcd_store.h"
#include "metadata/metadata.h"
#include "metadata/redis/redis_store.h"
#include "proto/codec.h"
#include "util/hex.h"

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

// HOST:PORT or [IPV6]:PORT with a port 1..65535 (the config validator already checked the
// characters); *host gets an IPv6 address without its brackets.
bool split_server(const std::string &s, std::string *host, uint16_t *port) {
  size_t c = s.rfind(':');
  if (c == std::string::npos || c == 0) return false;
  int64_t p;
  if (!parse_int(s.substr(c + 1), 1, 65535, &p)) return false;
  *host = s.substr(0, c);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']')
    *host = host->substr(1, host->size() - 2);
  *port = static_cast<uint16_t>(p);
  return true;
}

// A URL's authority: an IPv6 address goes back in brackets.
std::string authority(const std::string &host, uint16_t port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

Status make_metadata_store(const std::string &url, const std::string &self_name, uint32_t timeout_ms,
                           uint32_t ttl_ms, const std::string &token, std::unique_ptr<MetadataStore> *out) {
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
      o.endpoints.push_back("http://" + authority(host, port));
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

namespace {
struct HolderMsg {
  static constexpr const char *kWhat = "stored segment descriptor";
  StoredHolder h;
  bool read(proto::Reader &r, const nlohmann::json &j) {
    std::string inc;
    if (!r.get(j, "", "tcp", &h.tcp) || !r.get(j, "", "incarnation", &inc)) return false;
    if (!hex::parse_u64(inc, &h.incarnation)) return r.fail("incarnation", "is not 1 to 16 hex digits");
    return true;
  }
};
}  // namespace

Status read_holder(const std::string &stored_json, const std::string &name, StoredHolder *out) {
  HolderMsg m;
  Status st = proto::decode(stored_json, name, MC_ERR_METADATA, &m);
  if (st.ok()) *out = std::move(m.h);
  return st;
}

bool holder_alive(const std::string &stored_json, uint32_t timeout_ms, const std::string &token,
                  std::string *who) {
  StoredHolder h;
  if (!read_holder(stored_json, "(the name's holder)", &h).ok()) {
    *who = "an unreadable descriptor";
    return false;
  }
  *who = "the engine at " + h.tcp + " (incarnation " + hex::u64(h.incarnation) + ")";
  HostPort hp;
  if (!parse_host_port(h.tcp, &hp).ok()) return false;
  uint64_t answered = 0;
  Status ps = control_ping(hp, token, timeout_ms, &answered);
  if (ps.code() == MC_ERR_DENIED) return true;  // an engine answers there, under another token
  if (!ps.ok()) return false;
  // Someone else answering on that address (a restart, or a reused port) does not hold the name.
  return answered == h.incarnation;
}

}  // namespace mc
