#include "util/config.h"
#include "util/echo.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <functional>
#include <sstream>

#include "util/net.h"

namespace mc {

bool parse_int(const std::string &s, int64_t lo, int64_t hi, int64_t *out) {
  if (s.empty() || s.size() > 19) return false;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '-') {
    neg = true;
    i = 1;
    if (s.size() == 1) return false;
  }
  int64_t v = 0;
  for (; i < s.size(); i++) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    if (v > (INT64_MAX - (s[i] - '0')) / 10) return false;  // 19 digits may not fit
    v = v * 10 + (s[i] - '0');
  }
  if (neg) v = -v;
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool parse_size(const std::string &s, uint64_t *out) {
  if (s.empty() || s.size() > 24) return false;
  size_t n = s.size();
  uint64_t mult = 1;
  char last = static_cast<char>(std::toupper(static_cast<unsigned char>(s[n - 1])));
  if (last == 'K') mult = 1ull << 10;
  if (last == 'M') mult = 1ull << 20;
  if (last == 'G') mult = 1ull << 30;
  if (mult != 1) n--;
  if (n == 0) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  if (v > UINT64_MAX / mult) return false;
  *out = v * mult;
  return true;
}

std::vector<std::string> split(const std::string &s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream is(s);
  while (std::getline(is, cur, sep)) out.push_back(cur);
  return out;
}

bool int_in(const std::string &v, int64_t lo, int64_t hi) {
  int64_t x;
  return parse_int(v, lo, hi, &x);
}

namespace {

// HOST (a DNS name or IPv4 address) ":" PORT (1..65535).
// HOST:PORT (a name or IPv4 address) or [IPV6]:PORT, port 1..65535.
bool valid_server(const std::string &s) {
  size_t c = s.rfind(':');
  if (c == std::string::npos || c == 0 || c > 253) return false;
  bool v6 = s[0] == '[';
  if (v6 && (c < 3 || s[c - 1] != ']')) return false;
  for (size_t i = v6 ? 1 : 0; i < (v6 ? c - 1 : c); i++) {
    char ch = s[i];
    bool ok = v6 ? (std::isxdigit(static_cast<unsigned char>(ch)) || ch == ':' || ch == '.')
                 : (std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-');
    if (!ok) return false;
  }
  return int_in(s.substr(c + 1), 1, 65535);
}

// etcd://HOST:PORT[,HOST:PORT...][/PREFIX] or redis://HOST:PORT[/DB]; the metadata stores parse
// the same forms (src/metadata/store.cpp).
bool valid_metadata_url(const std::string &v) {
  bool etcd = v.rfind("etcd://", 0) == 0, redis = v.rfind("redis://", 0) == 0;
  if (!etcd && !redis) return false;
  std::string rest = v.substr(etcd ? 7 : 8);
  size_t slash = rest.find('/');
  std::string servers = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash + 1);
  auto parts = split(servers, ',');
  if (parts.empty() || (redis && parts.size() != 1) || servers.back() == ',') return false;
  for (auto &p : parts)
    if (!valid_server(p)) return false;
  if (redis) return slash == std::string::npos || int_in(path, 0, 1000000);
  return path.size() <= 200 &&
         std::all_of(path.begin(), path.end(), [](char c) { return c > 32 && c < 127; });
}

std::vector<ConfigKey> make_engine_keys() {
  return {
      {"name", "a non-empty name of at most 255 printable characters",
       [](const std::string &v) {
         return !v.empty() && v.size() <= 255 &&
                std::all_of(v.begin(), v.end(), [](char c) { return c > 32 && c < 127; });
       },
       "the engine's name (p2p: its HOST:PORT)"},
      {"metadata",
       "\"p2p\", \"etcd://HOST:PORT[,HOST:PORT...][/PREFIX]\" or \"redis://HOST:PORT[/DB]\" (an IPv6 HOST in "
       "brackets)",
       [](const std::string &v) { return v == "p2p" || valid_metadata_url(v); },
       "where descriptors live (p2p)"},
      {"metadata_ttl_ms", "an integer 1000..3600000",
       [](const std::string &v) { return int_in(v, 1000, 3600000); },
       "lease / key expiry with a metadata server (10000)"},
      {"listen",
       "HOST:PORT with a numeric IPv4 host, an IPv6 one in brackets ([::1]) or \"localhost\", and a port "
       "0..65535 or a range LO-HI (the first free one is taken)",
       [](const std::string &v) {
         HostPort hp;
         return parse_host_port(v, &hp).ok();
       },
       "the control listener's address (127.0.0.1:0)"},
      {"metrics_listen",
       "HOST:PORT with a numeric IPv4 host, an IPv6 one in brackets ([::1]) or \"localhost\", and a port "
       "0..65535 or a range LO-HI (the first free one is taken)",
       [](const std::string &v) {
         HostPort hp;
         return parse_host_port(v, &hp).ok();
       },
       "where GET /metrics (Prometheus text format) is served (unset: off)"},
      {"transports", "\"auto\" or a comma-separated list of " + transport_names(),
       [](const std::string &v) {
         if (v == "auto") return true;
         auto parts = split(v, ',');
         if (parts.empty()) return false;
         for (auto &p : parts)
           if (!transport_name_known(p)) return false;
         return true;
       },
       "the transports this engine may use, fastest first where several reach a peer"},
      {"plugins", "a comma-separated list of transport plugin files or names (each 1..4096 characters)",
       [](const std::string &v) {
         auto parts = split(v, ',');
         if (parts.empty() || v.back() == ',') return false;
         for (auto &p : parts)
           if (p.empty() || p.size() > 4096 ||
               !std::all_of(p.begin(), p.end(), [](char c) { return c >= 32 && c < 127; }))
             return false;
         return true;
       },
       "transport plugins to load: paths, or names found in MC_PLUGIN_PATH and <libdir>/mc/plugins"},
      {"workers", "an integer 1..256", [](const std::string &v) { return int_in(v, 1, 256); },
       "worker threads per transport that has them (4)"},
      {"slice_size", "a size 4K..1G (K/M/G suffixes allowed)",
       [](const std::string &v) {
         uint64_t x;
         return parse_size(v, &x) && x >= 4096 && x <= (1ull << 30);
       },
       "the largest piece a request is cut into (1M)"},
      {"timeout_ms", "an integer 1..3600000", [](const std::string &v) { return int_in(v, 1, 3600000); },
       "no progress for this long fails a request (5000)"},
      {"heartbeat_ms", "an integer 10..600000", [](const std::string &v) { return int_in(v, 10, 600000); },
       "how often open segments are probed (1000)"},
      {"peer_timeout_ms", "an integer 10..3600000",
       [](const std::string &v) { return int_in(v, 10, 3600000); },
       "silence after which a segment is unreachable (3000)"},
      {"notify_queue", "an integer 1..1048576", [](const std::string &v) { return int_in(v, 1, 1048576); },
       "notifications kept unread (65536)"},
      {"auth_token", "1..4096 printable characters (the value is not shown here)",
       [](const std::string &v) {
         return !v.empty() && v.size() <= 4096 &&
                std::all_of(v.begin(), v.end(), [](char c) { return c >= 32 && c < 127; });
       },
       "the cluster's shared secret (none)"},
      {"log_level", "error, warn, info, debug or 0..3",
       [](const std::string &v) {
         return v == "error" || v == "warn" || v == "info" || v == "debug" || int_in(v, 0, 3);
       },
       "the process-wide log level (warn)"},
  };
}

// A copy: the transports' keys grow when a plugin loads.
bool find_spec(const std::string &key, ConfigKey *out) {
  for (auto &s : engine_config_keys())
    if (key == s.key) return *out = s, true;
  for (auto &s : transport_config_keys())
    if (key == s.key) return *out = s, true;
  return false;
}

}  // namespace

const std::vector<ConfigKey> &engine_config_keys() {
  static const std::vector<ConfigKey> k = make_engine_keys();
  return k;
}

std::vector<std::string> Config::keys() {
  std::vector<std::string> v;
  for (auto &s : engine_config_keys()) v.push_back(s.key);
  for (auto &s : transport_config_keys()) v.push_back(s.key);
  return v;
}

Status Config::validate(const std::string &key, const std::string &value) {
  ConfigKey spec;
  const ConfigKey *s = find_spec(key, &spec) ? &spec : nullptr;
  if (!s) {
    std::string known;
    for (auto &k : keys()) known += (known.empty() ? "" : ", ") + k;
    return Err(MC_ERR_INVALID_ARG, "unknown config key " + echo(key) + " (known keys: " + known + ")");
  }
  if (!s->ok(value)) {
    // A secret is never echoed, not even a malformed one.
    std::string shown = key == "auth_token" ? std::string("(hidden)") : echo(value);
    return Err(MC_ERR_INVALID_ARG,
               "bad value " + shown + " for config key \"" + key + "\": expected " + s->what);
  }
  return Status::Ok();
}

Status Config::set(const std::string &key, const std::string &value) {
  Status st = validate(key, value);
  auto plugins = values_.find("plugins");
  if (!st.ok() && key != "plugins" && plugins != values_.end()) {
    Status ls = load_transport_plugins(plugins->second, nullptr);
    if (!ls.ok()) return ls;
    st = validate(key, value);
  }
  if (!st.ok()) return st;
  values_[key] = value;
  return Status::Ok();
}

Status Config::get(const std::string &key, std::string *out) const {
  auto it = values_.find(key);
  if (it != values_.end()) {
    *out = it->second;
    return Status::Ok();
  }
  std::string env = "MC_";
  for (char c : key) env += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const char *v = std::getenv(env.c_str());
  if (v) {
    Status st = validate(key, v);
    if (!st.ok()) return Err(st.code(), "environment variable " + env + ": " + st.message());
    *out = v;
    return Status::Ok();
  }
  out->clear();
  return Status::Ok();
}

bool EngineOptions::transport_allowed(const std::string &t) const {
  if (transports.empty()) return true;
  return std::find(transports.begin(), transports.end(), t) != transports.end();
}

Status resolve_options(const Config &cfg, EngineOptions *o) {
  std::string v;
  Status st;
#define MC_GET(key)        \
  st = cfg.get(key, &v);   \
  if (!st.ok()) return st; \
  if (!v.empty())
  // Plugins first: their keys and names are known only once they are loaded.
  MC_GET("plugins") {
    st = load_transport_plugins(v, &o->plugins);
    if (!st.ok()) return st;
  }
  MC_GET("name") o->name = v;
  MC_GET("metadata") o->metadata = v;
  MC_GET("listen") o->listen = v;
  MC_GET("metrics_listen") o->metrics_listen = v;
  MC_GET("transports") {
    if (v != "auto") o->transports = split(v, ',');
  }
  int64_t i;
  MC_GET("workers") {
    parse_int(v, 1, 256, &i);
    o->workers = static_cast<uint32_t>(i);
  }
  MC_GET("slice_size") parse_size(v, &o->slice_size);
  MC_GET("timeout_ms") {
    parse_int(v, 1, 3600000, &i);
    o->timeout_ms = static_cast<uint32_t>(i);
  }
  MC_GET("heartbeat_ms") {
    parse_int(v, 10, 600000, &i);
    o->heartbeat_ms = static_cast<uint32_t>(i);
  }
  MC_GET("peer_timeout_ms") {
    parse_int(v, 10, 3600000, &i);
    o->peer_timeout_ms = static_cast<uint32_t>(i);
  }
  MC_GET("metadata_ttl_ms") {
    parse_int(v, 1000, 3600000, &i);
    o->metadata_ttl_ms = static_cast<uint32_t>(i);
  }
  MC_GET("notify_queue") {
    parse_int(v, 1, 1048576, &i);
    o->notify_queue = static_cast<uint32_t>(i);
  }
  MC_GET("auth_token") o->auth_token = v;
  MC_GET("log_level") {
    if (v == "error")
      o->log_level = 0;
    else if (v == "warn")
      o->log_level = 1;
    else if (v == "info")
      o->log_level = 2;
    else if (v == "debug")
      o->log_level = 3;
    else {
      parse_int(v, 0, 3, &i);
      o->log_level = static_cast<int>(i);
    }
  }
#undef MC_GET
  for (auto &k : transport_config_keys()) {
    st = cfg.get(k.key, &v);
    if (!st.ok()) return st;
    if (!v.empty()) o->transport_values[k.key] = v;
  }
  return Status::Ok();
}

}  // namespace mc
