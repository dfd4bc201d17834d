/* The ops table libmc loads: mc_transport_plugin_init hands it over; create/destroy make and end
 * one instance per engine; describe publishes the socket's name; connect makes a path from a
 * peer's description; handle_control hands out the tickets that admit a connection. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "uds.h"

static char *dup_string(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static void uds_free_string(char *s) { free(s); }

static int valid_workers(const char *v) {
  char *end;
  long n = strtol(v, &end, 10);
  return *v && !*end && n >= 1 && n <= UDS_MAX_WORKERS;
}

static const mc_tp_config_key_t keys[] = {
    {"workers", "an integer 1..64", "worker threads that run slices to peers (2)", valid_workers},
};

/* An integer config value, or def when unset. */
static long config_int(mc_tp_host_t *h, const mc_tp_host_ops_t *ops, const char *key, long def) {
  char buf[32];
  return ops->config(h, key, buf, sizeof buf) > 0 ? strtol(buf, NULL, 10) : def;
}

static void uds_destroy(mc_tp_transport_t *tp) {
  struct uds_tp *t = tp;
  uds_workers_stop(t); /* fails what is queued, ends what runs */
  uds_target_stop(t);
  while (t->paths) uds_path_free(t, t->paths);
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static mc_status_t uds_create(mc_tp_host_t *h, const mc_tp_host_ops_t *ops, mc_tp_transport_t **out, char **why) {
  struct uds_tp *t = calloc(1, sizeof *t);
  if (!t) return MC_ERR_NO_MEMORY;
  t->h = h;
  t->ops = ops;
  t->lfd = -1;
  t->timeout_ms = (uint32_t)config_int(h, ops, "timeout_ms", 5000);
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->cv, NULL);
  if (uds_target_start(t) != 0) {
    *why = dup_string("cannot listen on an abstract Unix socket");
    uds_destroy(t);
    return MC_ERR_UNSUPPORTED;
  }
  if (uds_workers_start(t, (int)config_int(h, ops, "workers", 2)) != 0) {
    *why = dup_string("cannot start worker threads");
    uds_destroy(t);
    return MC_ERR_NO_MEMORY;
  }
  *out = t;
  return MC_OK;
}

static char *uds_describe(mc_tp_transport_t *tp) {
  struct uds_tp *t = tp;
  char buf[160];
  snprintf(buf, sizeof buf, "{\"socket\":\"%s\"}", t->sockname);
  return dup_string(buf);
}

/* The socket name out of a peer's {"socket":"NAME"}: 0, or -1 when absent or malformed. */
static int parse_socket(const char *json, char *out, size_t cap) {
  const char *k = strstr(json, "\"socket\":\"");
  if (!k) return -1;
  k += strlen("\"socket\":\"");
  const char *end = strchr(k, '"');
  if (!end || end == k || (size_t)(end - k) >= cap) return -1;
  for (const char *c = k; c < end; c++)
    if (*c < 33 || *c > 126 || *c == '\\') return -1;
  memcpy(out, k, (size_t)(end - k));
  out[end - k] = 0;
  return 0;
}

static mc_status_t uds_connect(mc_tp_transport_t *tp, const mc_tp_peer_t *peer, mc_tp_path_t **out) {
  struct uds_tp *t = tp;
  *out = NULL;
  if (!peer->same_host) return MC_OK; /* a Unix socket reaches this machine only */
  struct uds_path *p = calloc(1, sizeof *p);
  if (!p) return MC_ERR_NO_MEMORY;
  if (parse_socket(peer->transport_json, p->sockname, sizeof p->sockname) != 0 ||
      strlen(peer->control_addr) >= sizeof p->control_addr) {
    free(p);
    return MC_ERR_METADATA;
  }
  strcpy(p->control_addr, peer->control_addr);
  p->t = t;
  p->incarnation = peer->incarnation;
  p->fail_status = MC_ERR_PEER_DOWN;
  for (int i = 0; i < UDS_BUSY_FDS; i++) p->busy[i] = -1;
  pthread_mutex_lock(&t->mu);
  p->next = t->paths;
  t->paths = p;
  pthread_mutex_unlock(&t->mu);
  *out = p;
  return MC_OK;
}

static void uds_disconnect(mc_tp_transport_t *tp, mc_tp_path_t *p) { uds_path_free(tp, p); }

static void uds_submit(mc_tp_transport_t *tp, mc_tp_path_t *p, const mc_tp_slice_t *s, size_t n) {
  uds_enqueue(tp, p, s, n);
}

static void uds_fail_path(mc_tp_transport_t *tp, mc_tp_path_t *p, mc_status_t status, const char *why) {
  (void)why;
  uds_path_fail(tp, p, status);
}

static mc_status_t uds_handle_control(mc_tp_transport_t *tp, const void *req, size_t len, char **reply,
                                      size_t *reply_len) {
  char ticket[UDS_TICKET_LEN + 1];
  if (len != 6 || memcmp(req, "ticket", 6) != 0) return MC_ERR_INVALID_ARG;
  if (uds_new_ticket(tp, ticket) != 0) return MC_ERR_INTERNAL;
  *reply = dup_string(ticket);
  if (!*reply) return MC_ERR_NO_MEMORY;
  *reply_len = UDS_TICKET_LEN;
  return MC_OK;
}

static char *uds_stats(mc_tp_transport_t *tp) {
  struct uds_tp *t = tp;
  char buf[256];
  snprintf(buf, sizeof buf,
           "{\"requests\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"served\":%" PRIu64
           ",\"connections\":%" PRIu64 "}",
           __atomic_load_n(&t->requests, __ATOMIC_RELAXED), __atomic_load_n(&t->failed, __ATOMIC_RELAXED),
           __atomic_load_n(&t->bytes, __ATOMIC_RELAXED), __atomic_load_n(&t->served, __ATOMIC_RELAXED),
           __atomic_load_n(&t->connections, __ATOMIC_RELAXED));
  return dup_string(buf);
}

static const mc_tp_ops_t uds_ops = {
    .version = MC_TRANSPORT_PLUGIN_VERSION,
    .size = sizeof(mc_tp_ops_t),
    .name = "uds",
    .preference = 50, /* after shm, nvlink and rdma; before tcp */
    .keys = keys,
    .key_count = sizeof keys / sizeof keys[0],
    .free_string = uds_free_string,
    .create = uds_create,
    .destroy = uds_destroy,
    .describe = uds_describe,
    .connect = uds_connect,
    .disconnect = uds_disconnect,
    .submit = uds_submit,
    .fail_path = uds_fail_path,
    .handle_control = uds_handle_control,
    .stats_json = uds_stats,
};

MC_TP_EXPORT mc_status_t mc_transport_plugin_init(const mc_tp_host_ops_t *host_ops, const mc_tp_ops_t **ops,
                                                  const char **why) {
  /* The fields this plugin calls must exist in the host's table (an older library has fewer). */
  if (host_ops->size < offsetof(mc_tp_host_ops_t, path_down) + sizeof host_ops->path_down) {
    *why = "the library's host table lacks ops this plugin needs";
    return MC_ERR_UNSUPPORTED;
  }
  *ops = &uds_ops;
  return MC_OK;
}
