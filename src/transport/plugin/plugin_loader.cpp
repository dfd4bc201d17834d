// dlopen, dlsym("mc_transport_plugin_init"), the version rule and the table's checks.
#include "transport/plugin/plugin_loader.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>

#include "transport/plugin/plugin_host.h"
#include "util/log.h"

namespace mc {

namespace {

std::mutex g_mu;                                    // guards g_libs and g_builtin
std::vector<std::unique_ptr<PluginLib>> g_libs;     // never shrinks: pointers stay valid
std::vector<std::unique_ptr<PluginLib>> g_builtin;  // transports built in against the plugin interface

Status init_plugin(const std::string &path, mc_transport_plugin_init_fn init, PluginLib *lib);

bool is_file(const std::string &p) {
  struct stat sb;
  return ::stat(p.c_str(), &sb) == 0 && S_ISREG(sb.st_mode);
}

// <libdir>/mc/plugins, libdir being the directory of the object this code is linked into.
std::string default_dir() {
  Dl_info info;
  if (!dladdr(reinterpret_cast<void *>(&plugin_host_ops), &info) || !info.dli_fname) return "";
  std::string f = info.dli_fname;
  size_t slash = f.rfind('/');
  std::string dir = slash == std::string::npos ? "." : f.substr(0, slash);
  // Linked into a program (mc_conformance links libmc.a): <prefix>/bin -> <prefix>/lib.
  if (dir.size() >= 4 && dir.compare(dir.size() - 4, 4, "/bin") == 0)
    dir = dir.substr(0, dir.size() - 4) + "/lib";
  return dir + "/mc/plugins";
}

Status resolve(const std::string &entry, std::string *path) {
  if (entry.find('/') != std::string::npos) {
    *path = entry;
  } else {
    std::vector<std::string> dirs;
    if (const char *env = getenv("MC_PLUGIN_PATH"))
      for (auto &d : split(env, ':'))
        if (!d.empty()) dirs.push_back(d);
    dirs.push_back(default_dir());
    std::string tried;
    for (auto &d : dirs) {
      for (const std::string &cand : {d + "/" + entry, d + "/" + entry + ".so"})
        if (is_file(cand)) {
          *path = cand;
          break;
        }
      if (!path->empty()) break;
      tried += (tried.empty() ? "" : ", ") + d;
    }
    if (path->empty())
      return Err(MC_ERR_UNSUPPORTED, "transport plugin \"" + entry + "\": no file " + entry + " or " + entry +
                                         ".so in " + tried + " (MC_PLUGIN_PATH, then <libdir>/mc/plugins)");
  }
  char real[PATH_MAX];
  if (!realpath(path->c_str(), real))
    return Err(MC_ERR_UNSUPPORTED, "transport plugin " + *path + ": " + std::strerror(errno));
  *path = real;
  return Status::Ok();
}

bool name_ok(const char *s, size_t max) {
  if (!s || !*s || std::strlen(s) > max) return false;
  for (const char *c = s; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) return false;
  return true;
}

// The table's checks beyond the version: what the adapter relies on.
Status check_table(const std::string &path, PluginLib *lib) {
  const mc_tp_ops_t &o = lib->ops;
  auto bad = [&](const std::string &why) {
    return Err(MC_ERR_UNSUPPORTED, "transport plugin " + path + ": " + why);
  };
  if (!name_ok(o.name, 31)) return bad("its name is not 1..31 characters of [a-z0-9_]");
  if (!o.free_string || !o.create || !o.destroy || !o.connect || !o.disconnect || !o.submit)
    return bad("its table lacks a required op (free_string, create, destroy, connect, disconnect, submit)");
  if (o.key_count && !o.keys) return bad("key_count is set but keys is NULL");
  if (o.scheme && (!name_ok(o.scheme, 31) || !o.open_segment))
    return bad("its scheme is not 1..31 characters of [a-z0-9_], or it has no open_segment");
  for (uint32_t i = 0; i < o.key_count; i++) {
    const mc_tp_config_key_t &k = o.keys[i];
    if (!name_ok(k.key, 64) || !k.valid)
      return bad("config key " + std::to_string(i) + " has no valid name or validator");
    auto valid = k.valid;
    lib->keys.push_back({std::string(o.name) + "_" + k.key, k.what ? k.what : "a value the plugin accepts",
                         [valid](const std::string &v) { return valid(v.c_str()) != 0; },
                         k.doc ? k.doc : ""});
  }
  return Status::Ok();
}

// Opens the file, calls its init and applies the version rule. *lib filled on success.
Status open_plugin(const std::string &path, PluginLib *lib) {
  auto bad = [&](const std::string &why) {
    return Err(MC_ERR_UNSUPPORTED, "transport plugin " + path + ": " + why);
  };
  void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    return bad(std::string("cannot be loaded: ") + (e ? e : "dlopen failed"));
  }
  auto init = reinterpret_cast<mc_transport_plugin_init_fn>(dlsym(h, "mc_transport_plugin_init"));
  if (!init) return bad("it exports no mc_transport_plugin_init");
  return init_plugin(path, init, lib);
}

// Calls a plugin's init and applies the version rule. *lib filled on success.
Status init_plugin(const std::string &path, mc_transport_plugin_init_fn init, PluginLib *lib) {
  auto bad = [&](const std::string &why) {
    return Err(MC_ERR_UNSUPPORTED, "transport plugin " + path + ": " + why);
  };
  const mc_tp_ops_t *ops = nullptr;
  const char *why = nullptr;
  mc_status_t st;
  try {
    st = init(plugin_host_ops(), &ops, &why);
  } catch (...) {
    return bad("its mc_transport_plugin_init threw an exception");
  }
  if (st != MC_OK)
    return bad(std::string("its init failed (") + mc_status_str(st) +
               "): " + (why ? why : "no reason given"));
  if (!ops) return bad("its init returned no table");
  std::string range =
      std::to_string(MC_TRANSPORT_PLUGIN_OLDEST_VERSION) + ".." + std::to_string(MC_TRANSPORT_PLUGIN_VERSION);
  if (ops->version > MC_TRANSPORT_PLUGIN_VERSION || ops->version < MC_TRANSPORT_PLUGIN_OLDEST_VERSION)
    return bad("built against transport plugin interface version " + std::to_string(ops->version) +
               ", but this library (mc " + mc_version_string() + ") loads plugin interface versions " +
               range);
  if (ops->size < offsetof(mc_tp_ops_t, submit) + sizeof(ops->submit))
    return bad("its table is too small (" + std::to_string(ops->size) + " bytes)");
  std::memcpy(&lib->ops, ops, std::min<size_t>(ops->size, sizeof(mc_tp_ops_t)));
  lib->path = path;
  return check_table(path, lib);
}

}  // namespace

Status load_plugin(const std::string &entry, const PluginLib **out) {
  std::string path;
  Status st = resolve(entry, &path);
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> lk(g_mu);
  for (auto &l : g_libs)
    if (l->path == path) {
      *out = l.get();
      return Status::Ok();
    }
  auto lib = std::make_unique<PluginLib>();
  st = open_plugin(path, lib.get());
  if (!st.ok()) return st;
  for (auto &l : g_libs)
    if (std::strcmp(l->ops.name, lib->ops.name) == 0)
      return Err(MC_ERR_UNSUPPORTED, "transport plugin " + path + ": its name \"" + lib->ops.name +
                                         "\" is already taken by " + l->path);
  MC_LOGI("transport plugin " << lib->ops.name << " loaded from " << path << " (interface version "
                              << lib->ops.version << ")");
  *out = lib.get();
  g_libs.push_back(std::move(lib));
  return Status::Ok();
}

Status builtin_plugin(const std::string &label, mc_transport_plugin_init_fn init, const PluginLib **out) {
  std::lock_guard<std::mutex> lk(g_mu);
  for (auto &l : g_builtin)
    if (l->path == label) {
      *out = l.get();
      return Status::Ok();
    }
  auto lib = std::make_unique<PluginLib>();
  Status st = init_plugin(label, init, lib.get());
  if (!st.ok()) return st;
  *out = lib.get();
  g_builtin.push_back(std::move(lib));
  return Status::Ok();
}

std::vector<const PluginLib *> loaded_plugins() {
  std::lock_guard<std::mutex> lk(g_mu);
  std::vector<const PluginLib *> v;
  for (auto &l : g_libs) v.push_back(l.get());
  return v;
}

}  // namespace mc
