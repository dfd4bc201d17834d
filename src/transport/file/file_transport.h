// The file transport: segments named "file:///abs/path[?size=N&sync=1&direct=0]" whose one
// buffer is the file ([0, size) at address 0; a request's remote is the file offset), moved
// with io_uring, one ring per worker thread. Written against include/mc_transport_plugin.h
// alone (no engine header, no util/): built into libmc, it is also the proof that the plugin
// interface is enough for a transport that serves segments of its own.
#pragma once
#include <mc_transport_plugin.h>

namespace mc::file {

// The plugin entry point (mc_transport_plugin_init's signature), called once by the registry.
mc_status_t file_transport_init(const mc_tp_host_ops_t *host_ops, const mc_tp_ops_t **ops, const char **why);

}  // namespace mc::file
