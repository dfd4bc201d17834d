// The table of built-in transports. An explicit table rather than self-registration from each
// transport's file: static initializers of an object nobody references are dropped when a
// program links libmc.a, and the order here is the creation order the engine relies on.
#include "transport/registry.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>

#include "transport/file/file_transport.h"
#include "transport/local/local_transport.h"
#include "transport/nvlink/nvlink_transport.h"
#include "transport/plugin/plugin_loader.h"
#include "transport/plugin/plugin_transport.h"
#include "transport/rdma/nic_topo.h"
#include "transport/rdma/rdma_transport.h"
#include "transport/shm/shm_transport.h"
#include "transport/tcp/tcp_transport.h"
#include "util/log.h"

namespace mc {

namespace {

// A transport key's value as an integer (validated when set; def when unset).
int64_t int_value(Host &h, const char *key, int64_t lo, int64_t hi, int64_t def) {
  int64_t v;
  return parse_int(h.options().value(key), lo, hi, &v) ? v : def;
}

// ---------------------------------------------------------------------------------- tcp

std::unique_ptr<Transport> create_tcp(Host &h, Status *st) {
  TcpOptions to;
  to.connections = static_cast<uint32_t>(int_value(h, "tcp_connections", 1, 64, to.connections));
  to.timeout_ms = h.options().timeout_ms;
  to.io_threads = static_cast<uint32_t>(int_value(h, "tcp_io_threads", 1, 64, to.io_threads));
  to.auth_token = h.auth_token();
  std::unique_ptr<Transport> t;
  *st = make_tcp_transport(to, &h, &t);
  if (!st->ok()) return nullptr;
  return t;
}

TransportEntry tcp_entry() {
  TransportEntry e;
  e.name = "tcp";
  e.preference = 100;  // reaches everything; the slowest
  e.keys = {{"tcp_connections", "an integer 1..64", [](const std::string &v) { return int_in(v, 1, 64); },
             "TCP data connections per peer (4)"},
            {"tcp_io_threads", "an integer 1..64", [](const std::string &v) { return int_in(v, 1, 64); },
             "event-loop threads serving every TCP connection, whatever the number of peers (2)"}};
  e.create = create_tcp;
  return e;
}

// ---------------------------------------------------------------------------------- shm

std::unique_ptr<Transport> create_shm(Host &h, Status *st) {
  ShmOptions so;
  const std::string share = h.options().value("shm_share");
  so.share = share == "always"  ? ShmOptions::Share::kAlways
             : share == "never" ? ShmOptions::Share::kNever
                                : ShmOptions::Share::kAuto;
  so.workers = h.options().workers;
  so.timeout_ms = h.options().timeout_ms;
  so.incarnation = h.incarnation();
  so.auth_token = h.auth_token();
  Status why;
  auto t = make_shm_transport(so, &h, &why);
  if (!t) MC_LOGW("shm transport unavailable: " << why.message() << "; same-host peers use tcp");
  *st = Status::Ok();
  return t;
}

TransportEntry shm_entry() {
  TransportEntry e;
  e.name = "shm";
  e.preference = 10;
  e.keys = {{"shm_share", "\"auto\", \"always\" or \"never\"",
             [](const std::string &v) { return v == "auto" || v == "always" || v == "never"; },
             "whether a worker copies part of one call beside the submitting thread (auto: while it pays)"}};
  e.create = create_shm;
  return e;
}

// ---------------------------------------------------------------------------------- nvlink

std::unique_ptr<Transport> create_nvlink(Host &h, Status *st) {
  NvlinkOptions no;
  no.timeout_ms = h.options().timeout_ms;
  no.incarnation = h.incarnation();
  no.auth_token = h.auth_token();
  std::string why;
  auto t = make_nvlink_transport(no, &h, &why);
  if (!t) MC_LOGI("nvlink transport unavailable: " << why);
  *st = Status::Ok();
  return t;
}

TransportEntry nvlink_entry() {
  TransportEntry e;
  e.name = "nvlink";
  e.preference = 20;
  e.create = create_nvlink;
  return e;
}

// ---------------------------------------------------------------------------------- rdma

// Device names, glob patterns (* ? [...]) and exclusions ("!pattern"), comma-separated.
bool valid_device_list(const std::string &v) {
  auto parts = split(v, ',');
  if (parts.empty() || v.back() == ',') return false;
  for (auto &p : parts) {
    std::string body = !p.empty() && p[0] == '!' ? p.substr(1) : p;
    if (body.empty() || body.size() > 64 || !std::all_of(body.begin(), body.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("_-.*?[]", c);
        }))
      return false;
  }
  return true;
}

bool valid_rdma_devices(const std::string &v) {
  if (v == "auto" || v == "sim" || v == "sim-ib") return true;
  if (v.rfind("sim:", 0) == 0) {
    std::string rest = v.substr(4);
    bool pattern = rest.find_first_of("*?[!") != std::string::npos;
    return pattern ? valid_device_list(rest) : int_in(rest, 1, 16);
  }
  return valid_device_list(v);
}

std::unique_ptr<Transport> create_rdma(Host &h, Status *st) {
  RdmaOptions ro;
  ro.timeout_ms = h.options().timeout_ms;
  ro.auth_token = h.auth_token();
  std::string dev = h.options().value("rdma_devices");
  if (!dev.empty()) ro.rdma_devices = dev;
  ro.rdma_qps_per_endpoint =
      static_cast<uint32_t>(int_value(h, "rdma_qps_per_endpoint", 1, 64, ro.rdma_qps_per_endpoint));
  ro.rdma_max_endpoints =
      static_cast<uint32_t>(int_value(h, "rdma_max_endpoints", 1, 1048576, ro.rdma_max_endpoints));
  ro.rdma_gid_index =
      static_cast<int>(int_value(h, "rdma_gid_index", 0, 255, ro.rdma_gid_index));   // "auto": -1
  ro.rdma_port = static_cast<int>(int_value(h, "rdma_port", 1, 255, ro.rdma_port));  // "auto": 0
  ro.rdma_mtu = static_cast<uint32_t>(int_value(h, "rdma_mtu", 256, 4096, ro.rdma_mtu));
  uint64_t mr = 0;
  if (parse_size(h.options().value("rdma_max_mr_size"), &mr)) ro.rdma_max_mr_size = mr;
  ro.rdma_affinity = h.options().value("rdma_affinity");
  ro.rdma_register_threads = static_cast<uint32_t>(
      int_value(h, "rdma_register_threads", 1, 64, ro.rdma_register_threads));  // "auto": 0
  *st = Status::Ok();
  return make_rdma_transport(ro, &h, h.engine_name(), st);
}

TransportEntry rdma_entry() {
  TransportEntry e;
  e.name = "rdma";
  e.preference = 30;
  e.keys = {
      {"rdma_devices",
       "\"auto\", \"sim\", \"sim:N\" (N 1..16), \"sim-ib\", \"sim:PATTERNS\" or a comma-separated list of "
       "RDMA device names, glob patterns and !exclusions (mlx5_*,!mlx5_3)",
       valid_rdma_devices, "the RDMA devices to use (auto: every device with an active port)"},
      {"rdma_qps_per_endpoint", "an integer 1..64", [](const std::string &v) { return int_in(v, 1, 64); },
       "RC queue pairs per (peer, local NIC, peer NIC) (2)"},
      {"rdma_max_endpoints", "an integer 1..1048576",
       [](const std::string &v) { return int_in(v, 1, 1048576); },
       "endpoints kept connected; the least recently used beyond it are closed (4096)"},
      {"rdma_gid_index", "\"auto\" or an integer 0..255",
       [](const std::string &v) { return v == "auto" || int_in(v, 0, 255); },
       "the GID table index (auto: RoCE v2 preferred)"},
      {"rdma_port", "\"auto\" or a port number 1..255",
       [](const std::string &v) { return v == "auto" || int_in(v, 1, 255); },
       "the device port (auto: each device's first active port)"},
      {"rdma_mtu", "256, 512, 1024, 2048 or 4096",
       [](const std::string &v) {
         return v == "256" || v == "512" || v == "1024" || v == "2048" || v == "4096";
       },
       "the largest path MTU to use (4096)"},
      {"rdma_max_mr_size", "a size of 4K or more (K/M/G suffixes allowed)",
       [](const std::string &v) {
         uint64_t x;
         return parse_size(v, &x) && x >= 4096 && x <= (1ull << 50);
       },
       "the largest memory region a buffer is registered as; longer buffers become several (unset: "
       "the NIC's max_mr_size)"},
      {"rdma_affinity", "LOC=NIC,NIC;LOC=... with LOC cuda:N or cpu:N (cuda:0=mlx5_0,mlx5_1;cuda:1=mlx5_2)",
       [](const std::string &v) {
         std::map<std::string, std::vector<std::string>> m;
         return rdma::parse_affinity(v, &m);
       },
       "the NICs that carry each memory location's transfers (unset: the nearest by PCIe and NUMA)"},
      {"rdma_register_threads", "\"auto\" or an integer 1..64",
       [](const std::string &v) { return v == "auto" || int_in(v, 1, 64); },
       "threads registering one buffer with the NICs, for the call only (auto: one per NIC; 1: one "
       "NIC after another)"},
  };
  e.create = create_rdma;
  return e;
}

// ---------------------------------------------------------------------------------- local

std::unique_ptr<Transport> create_local(Host &h, Status *st) {
  *st = Status::Ok();
  return make_local_transport(&h, h.options().workers);
}

TransportEntry local_entry() {
  TransportEntry e;
  e.name = "local";
  e.role = TransportEntry::Role::kSelf;
  e.create = create_local;
  return e;
}

// ---------------------------------------------------------------------------------- file

// Written against the plugin interface alone and wrapped like a loaded plugin, but built in:
// every engine has it (when `transports` allows it), whatever its `plugins`.
std::vector<TransportEntry> file_entry() {
  const PluginLib *lib = nullptr;
  Status st = builtin_plugin("the built-in file transport", file::file_transport_init, &lib);
  if (!st.ok()) {
    MC_LOGE(st.message());
    return {};
  }
  TransportEntry e;
  e.name = lib->ops.name;
  e.preference = lib->ops.preference;
  e.keys = lib->keys;
  e.create = [lib](Host &h, Status *st) { return make_plugin_transport(*lib, h, st); };
  return {e};
}

std::vector<TransportEntry> make_registry() {
  std::vector<TransportEntry> r = {shm_entry(), nvlink_entry(), rdma_entry(), tcp_entry(), local_entry()};
  for (auto &e : file_entry()) r.push_back(std::move(e));
  std::stable_sort(r.begin(), r.end(), [](const TransportEntry &a, const TransportEntry &b) {
    return a.preference < b.preference;
  });
  return r;
}

const std::vector<TransportEntry> &builtin_registry() {
  static const std::vector<TransportEntry> r = make_registry();
  return r;
}

// ---------------------------------------------------------------------------------- plugins

TransportEntry plugin_entry(const PluginLib &lib) {
  TransportEntry e;
  e.name = lib.ops.name;
  e.preference = lib.ops.preference;
  e.keys = lib.keys;
  e.create = [&lib](Host &h, Status *st) -> std::unique_ptr<Transport> {
    *st = Status::Ok();
    auto &mine = h.options().plugins;
    if (std::find(mine.begin(), mine.end(), lib.path) == mine.end()) return nullptr;  // not this engine's
    return make_plugin_transport(lib, h, st);
  };
  return e;
}

}  // namespace

std::vector<TransportEntry> transport_registry() {
  std::vector<TransportEntry> r = builtin_registry();
  for (const PluginLib *l : loaded_plugins())
    if (std::none_of(r.begin(), r.end(), [&](const TransportEntry &b) { return b.name == l->ops.name; }))
      r.push_back(plugin_entry(*l));  // a clash was refused by load_transport_plugins
  return r;
}

// Declared in util/config.h (see there why the registry defines them).
std::vector<ConfigKey> transport_config_keys() {
  std::vector<ConfigKey> v;
  for (auto &e : transport_registry()) v.insert(v.end(), e.keys.begin(), e.keys.end());
  return v;
}

bool transport_name_known(const std::string &name) {
  for (auto &e : transport_registry())
    if (e.name == name) return true;
  return false;
}

std::string transport_names() {
  std::string s;
  for (auto &e : transport_registry()) s += (s.empty() ? "" : ", ") + e.name;
  return s;
}

Status load_transport_plugins(const std::string &list, std::vector<std::string> *paths) {
  for (auto &entry : split(list, ',')) {
    const PluginLib *lib = nullptr;
    Status st = load_plugin(entry, &lib);
    if (!st.ok()) return st;
    for (auto &b : builtin_registry())
      if (b.name == lib->ops.name)
        return Err(MC_ERR_UNSUPPORTED, "transport plugin " + lib->path + ": its name \"" + b.name +
                                           "\" is a built-in transport's");
    if (paths && std::find(paths->begin(), paths->end(), lib->path) == paths->end())
      paths->push_back(lib->path);
  }
  return Status::Ok();
}

}  // namespace mc
