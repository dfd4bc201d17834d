/* A transport plugin that lies: it reports every slice MC_OK at once and moves nothing. The
 * conformance suite must fail it (mc_conformance exits 1), which shows that qualifying a plugin
 * with mc_conformance can fail (scripts/test-plugin.sh). */
#include <mc_transport_plugin.h>
#include <stdlib.h>
#include <string.h>

struct liar {
  mc_tp_host_t *h;
  const mc_tp_host_ops_t *ops;
};
static int path_token;

static void free_string(char *s) { free(s); }
static mc_status_t create(mc_tp_host_t *h, const mc_tp_host_ops_t *o, mc_tp_transport_t **out, char **why) {
  (void)why;
  struct liar *l = calloc(1, sizeof *l);
  if (!l) return MC_ERR_NO_MEMORY;
  l->h = h;
  l->ops = o;
  *out = l;
  return MC_OK;
}
static void destroy(mc_tp_transport_t *t) { free(t); }
static char *describe(mc_tp_transport_t *t) {
  (void)t;
  char *s = malloc(3);
  if (s) memcpy(s, "{}", 3);
  return s;
}
static mc_status_t connect_(mc_tp_transport_t *t, const mc_tp_peer_t *p, mc_tp_path_t **out) {
  (void)t, (void)p;
  *out = &path_token;
  return MC_OK;
}
static void disconnect(mc_tp_transport_t *t, mc_tp_path_t *p) { (void)t, (void)p; }
static void submit(mc_tp_transport_t *t, mc_tp_path_t *p, const mc_tp_slice_t *s, size_t n) {
  struct liar *l = t;
  (void)p;
  for (size_t i = 0; i < n; i++) l->ops->complete(l->h, &s[i], MC_OK);
}

static const mc_tp_ops_t ops = {
    .version = MC_TRANSPORT_PLUGIN_VERSION,
    .size = sizeof(mc_tp_ops_t),
    .name = "liar",
    .preference = 90,
    .free_string = free_string,
    .create = create,
    .destroy = destroy,
    .describe = describe,
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
