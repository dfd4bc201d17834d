/* A transport plugin that declares an interface version newer than any library supports
 * (MC_TRANSPORT_PLUGIN_VERSION + 1): libmc must refuse to load it with a message naming both
 * versions (scripts/test-plugin.sh). Otherwise a valid table, so only the version is wrong. */
#include <mc_transport_plugin.h>
#include <stdlib.h>

static void free_string(char *s) { free(s); }
static mc_status_t create(mc_tp_host_t *h, const mc_tp_host_ops_t *o, mc_tp_transport_t **out, char **why) {
  (void)h, (void)o, (void)why;
  *out = NULL;
  return MC_OK;
}
static void destroy(mc_tp_transport_t *t) { (void)t; }
static mc_status_t connect_(mc_tp_transport_t *t, const mc_tp_peer_t *p, mc_tp_path_t **out) {
  (void)t, (void)p;
  *out = NULL;
  return MC_OK;
}
static void disconnect(mc_tp_transport_t *t, mc_tp_path_t *p) { (void)t, (void)p; }
static void submit(mc_tp_transport_t *t, mc_tp_path_t *p, const mc_tp_slice_t *s, size_t n) {
  (void)t, (void)p, (void)s, (void)n;
}

static const mc_tp_ops_t ops = {
    .version = MC_TRANSPORT_PLUGIN_VERSION + 1,
    .size = sizeof(mc_tp_ops_t),
    .name = "future",
    .free_string = free_string,
    .create = create,
    .destroy = destroy,
    .connect = connect_,
    .disconnect = disconnect,
    .submit = submit,
};

MC_TP_EXPORT mc_status_t mc_transport_plugin_init(const mc_tp_host_ops_t *h, const mc_tp_ops_t **out,
                                                  const char **why) {
  (void)h, (void)why;
  *out = &ops;
  return MC_OK;
}
