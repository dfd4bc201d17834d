// A loaded plugin's ops wrapped as a Transport, so the engine drives it like a built-in one.
#pragma once
#include <memory>

#include "transport/host.h"
#include "transport/plugin/plugin_loader.h"
#include "transport/transport.h"
#include "util/status.h"

namespace mc {

// One instance of lib's transport for the engine behind host (the plugin's create). nullptr
// with *st OK: the plugin says it is not available here (logged); nullptr with *st failed: its
// create failed, MC_ERR_UNSUPPORTED naming the plugin, its file and its reason.
std::unique_ptr<Transport> make_plugin_transport(const PluginLib &lib, Host &host, Status *st);

}  // namespace mc
