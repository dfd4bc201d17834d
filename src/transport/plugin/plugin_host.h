// The host side of the plugin interface: mc::Host (what the engine gives a transport) offered
// to a plugin as the C table mc_tp_host_ops_t of include/mc_transport_plugin.h.
#pragma once
#include <mc_transport_plugin.h>

#include <functional>
#include <string>

#include "transport/host.h"

// The opaque handle a plugin instance gets: one engine's Host, seen by one plugin.
struct mc_tp_host {
  mc::Host *host = nullptr;
  std::string name;    // the plugin's name: its control channel
  std::string prefix;  // "<name>_": its config keys' prefix
  // Set by the transport wrapper: a plugin's path_down(path) reaches that path's engine hook.
  std::function<void(void *)> path_down;
};

namespace mc {

// The one host table every plugin gets (static, alive for the process).
const mc_tp_host_ops_t *plugin_host_ops();

// The C slice a plugin sees for an engine slice, and back.
mc_tp_slice_t to_c_slice(const Slice &s);
Slice from_c_slice(const mc_tp_slice_t &s);

}  // namespace mc
