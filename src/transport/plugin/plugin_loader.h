// Finding, opening and checking transport plugins (shared objects written against
// include/mc_transport_plugin.h). A plugin is loaded once per process and never unloaded: its
// code may run on threads of engines that outlive any one config.
#pragma once
#include <mc_transport_plugin.h>

#include <string>
#include <vector>

#include "util/config.h"
#include "util/status.h"

namespace mc {

struct PluginLib {
  std::string path;  // the file, resolved (realpath)
  // The plugin's table as this library reads it: fields beyond the plugin's size are zero.
  mc_tp_ops_t ops{};
  // Its config keys as users set them ("<name>_<key>").
  std::vector<ConfigKey> keys;
};

// Loads the plugin `entry` names: a path (it has a '/'), else a file "<entry>" or "<entry>.so"
// in the directories of MC_PLUGIN_PATH (':'-separated), then in <libdir>/mc/plugins (libdir:
// where this libmc lies). A file loaded before gives the same PluginLib. MC_ERR_UNSUPPORTED
// naming the file and the reason when it cannot be found, opened, initialised, or declares an
// interface version outside MC_TRANSPORT_PLUGIN_OLDEST_VERSION..MC_TRANSPORT_PLUGIN_VERSION.
// Thread-safe; blocks on dlopen and the plugin's init.
Status load_plugin(const std::string &entry, const PluginLib **out);

// A transport built into libmc but written against the plugin interface alone (the file
// transport): its init called once, the same checks as a loaded plugin's; label names it in
// errors. Not among loaded_plugins(). Thread-safe.
Status builtin_plugin(const std::string &label, mc_transport_plugin_init_fn init, const PluginLib **out);

// Every plugin loaded so far in this process, in load order.
std::vector<const PluginLib *> loaded_plugins();

}  // namespace mc
