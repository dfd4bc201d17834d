/* mc_transport_plugin.h - the versioned C interface a transport is written against when it ships
 * as a shared object loaded by libmc (config key `plugins`).
 *
 * Pure C11, no dependency headers, no C++ type, exception or allocator crosses it. A plugin
 * exports one function, mc_transport_plugin_init (below); everything else goes through two
 * tables of function pointers: the host's (mc_tp_host_ops_t, what libmc gives the plugin) and
 * the plugin's (mc_tp_ops_t, what the plugin gives libmc).
 *
 * Versions: a plugin built against MC_TRANSPORT_PLUGIN_VERSION N loads into a library whose
 * version is N or later and whose oldest supported version is N or earlier; anything else is
 * refused at load with a message naming both versions. Both tables carry `version` and `size`
 * first: a reader uses only the fields that lie within `size` (a newer table only appends).
 *
 * Strings: every `char *` the plugin returns to libmc (describe, stats_json, handle_control's
 * reply, create's why) is freed by libmc through the plugin's own `free_string` op, right after
 * it copied it. Every buffer libmc returns to the plugin (control_call's reply) is freed by the
 * plugin through the host's `free_buffer` op. `const char *` arguments are only valid during the
 * call: copy what you keep.
 *
 * Threads: libmc calls the plugin's ops from any thread, several at once (one transport instance
 * serves every peer of one engine). The host ops are thread-safe, never throw, and may be called
 * from any thread the plugin owns. None of them may be called after `destroy` returned.
 *
 * See README.md, "Writing a transport", for a walk through, and examples/plugin/ for a complete
 * plugin. */
#ifndef MC_TRANSPORT_PLUGIN_H
#define MC_TRANSPORT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "mc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================================ version */

/* The interface version this header describes (what a plugin built against it declares). */
#define MC_TRANSPORT_PLUGIN_VERSION 1
/* The oldest plugin interface version a library built from this header still loads. */
#define MC_TRANSPORT_PLUGIN_OLDEST_VERSION 1

/* Marks mc_transport_plugin_init for export from a plugin built with -fvisibility=hidden. */
#if defined(__GNUC__) || defined(__clang__)
#define MC_TP_EXPORT __attribute__((visibility("default")))
#else
#define MC_TP_EXPORT
#endif

/* ============================================================================ plain data */

/* One slice: a contiguous piece of one request, or `count` whole requests that are adjacent
 * both locally and remotely (merged). Owned by libmc; a plugin copies the slices it is handed
 * and gives the copy back, unchanged, to complete() and canceled(). `slot` is libmc's and must
 * not be touched. */
typedef struct mc_tp_slice {
  void *local;     /* local memory: READ writes here, WRITE reads from here */
  uint64_t remote; /* the peer's virtual address */
  uint64_t len;
  uint32_t op;    /* MC_READ or MC_WRITE */
  uint32_t count; /* requests this slice covers (1, or more when merged) */
  void *slot;     /* libmc's bookkeeping: opaque */
} mc_tp_slice_t;

/* A registered local buffer (on_register, on_unregister, on_access_change). */
typedef struct mc_tp_region {
  uint32_t size; /* sizeof(mc_tp_region_t) of the library */
  uint32_t access; /* MC_ACCESS_* bits: what peers may do */
  uint64_t addr;
  uint64_t length;
  const char *location; /* "cpu", "cpu:N", "cuda:N" */
  int32_t memfd;        /* the memfd behind it (mc_buffer_alloc), or -1 */
  uint32_t reserved;
} mc_tp_region_t;

/* What a plugin learns of a peer when asked to connect to it. Strings valid during the call. */
typedef struct mc_tp_peer {
  uint32_t size; /* sizeof(mc_tp_peer_t) of the library */
  int32_t same_host; /* 1 when the peer runs on this machine (same boot id) */
  const char *name;           /* the engine's name */
  uint64_t incarnation;       /* changes when the peer restarts under the same name */
  int64_t pid;                /* the peer's process id */
  const char *control_addr;   /* HOST:PORT of its control channel (for control_call) */
  const char *transport_json; /* what the peer's instance of this plugin put in describe(),
                                 "" when it published nothing under this plugin's name */
} mc_tp_peer_t;

/* A segment a transport serves itself, named by URI (open_segment): one buffer [0, length) at
 * remote address 0, e.g. a file whose offsets are the remote addresses. */
typedef struct mc_tp_segment {
  uint32_t size;     /* sizeof(mc_tp_segment_t) of the library */
  uint32_t access;   /* MC_ACCESS_* bits: what requests may do with it */
  uint64_t length;   /* the buffer's length in bytes (> 0) */
  char location[32]; /* the buffer's location as mc_segment_buffers reports it, e.g. "file" */
} mc_tp_segment_t;

/* One config key of a plugin. Users set it as "<plugin name>_<key>", validated when set. */
typedef struct mc_tp_config_key {
  const char *key;  /* without the prefix: [a-z0-9_], e.g. "connections" */
  const char *what; /* the form expected, said in the error for a bad value */
  const char *doc;  /* one line of documentation */
  /* 1 when value is acceptable; called from any thread, must not block. */
  int (*valid)(const char *value);
} mc_tp_config_key_t;

/* Log levels of the host's log op (as mc_log_set_level's). */
#define MC_TP_LOG_ERROR 0
#define MC_TP_LOG_WARN 1
#define MC_TP_LOG_INFO 2
#define MC_TP_LOG_DEBUG 3

/* ============================================================================ host ops */

/* One engine as a plugin instance sees it; opaque, valid from create() until destroy() returns. */
typedef struct mc_tp_host mc_tp_host_t;

typedef struct mc_tp_host_ops {
  uint32_t version; /* the library's MC_TRANSPORT_PLUGIN_VERSION */
  uint32_t size;    /* sizeof(mc_tp_host_ops_t) of the library */

  /* ---- initiator side
   * Reports a slice once, after the plugin stopped touching its local memory. Every slice
   * handed to submit() is reported exactly once, whatever happens (fail_path, destroy).
   * Never blocks. */
  void (*complete)(mc_tp_host_t *h, const mc_tp_slice_t *s, mc_status_t status);
  /* 1 once the slice's batch was canceled: do not start it, and write no READ data into its
   * local memory any more (drain it); report it with MC_ERR_CANCELED. Never blocks. */
  int (*canceled)(mc_tp_host_t *h, const mc_tp_slice_t *s);

  /* ---- target side: a peer's request against this engine's memory
   * Pins the registered buffers covering [addr, addr+len) for op (MC_READ: the peer reads them;
   * MC_WRITE: it writes them). MC_ERR_OUT_OF_RANGE when not fully registered, MC_ERR_DENIED
   * when the buffers' access forbids op; nothing is pinned on failure. Between a successful
   * pin and its unpin, the memory cannot be unregistered. Never blocks. */
  mc_status_t (*pin)(mc_tp_host_t *h, uint64_t addr, uint64_t len, uint32_t op);
  void (*unpin)(mc_tp_host_t *h, uint64_t addr, uint64_t len);

  /* ---- control messages over the engine's admitted control channel (auth_token checked)
   * Sends request to the engine at peer_addr (mc_tp_peer_t.control_addr) on this plugin's
   * channel; the peer's instance answers in its handle_control. *reply (freed by the plugin with
   * free_buffer) and *reply_len get the answer, *peer_incarnation (may be NULL) the answering
   * engine's incarnation. Blocks at most the engine's timeout_ms. */
  mc_status_t (*control_call)(mc_tp_host_t *h, const char *peer_addr, const void *request, size_t request_len,
                              void **reply, size_t *reply_len, uint64_t *peer_incarnation);
  void (*free_buffer)(void *p);

  /* ---- settings and identity
   * The value of config key `key` into buf (NUL-terminated, cut to cap), its full length as
   * the result, or -1 when unset. key is one of the plugin's own keys (without its prefix) or
   * one of the engine's: "timeout_ms", "workers", "slice_size", "listen" (defaults applied). */
  int64_t (*config)(mc_tp_host_t *h, const char *key, char *buf, size_t cap);
  void (*log)(mc_tp_host_t *h, int32_t level, const char *message);
  uint64_t (*incarnation)(mc_tp_host_t *h);
  /* The cluster's shared secret ("" for none) and the engine's name; valid until destroy. */
  const char *(*auth_token)(mc_tp_host_t *h);
  const char *(*engine_name)(mc_tp_host_t *h);
  /* Tells the engine that the peer behind `path` is gone (e.g. its socket closed), so it probes
   * it at once. Never blocks. */
  void (*path_down)(mc_tp_host_t *h, void *path);
} mc_tp_host_ops_t;

/* ============================================================================ plugin ops */

/* A plugin's transport instance (one per engine) and a path to one peer: the plugin's types. */
typedef void mc_tp_transport_t;
typedef void mc_tp_path_t;

typedef struct mc_tp_ops {
  uint32_t version; /* MC_TRANSPORT_PLUGIN_VERSION the plugin was built against */
  uint32_t size;    /* sizeof(mc_tp_ops_t) the plugin was built with */

  /* The transport's name: [a-z0-9_], 1..31 characters, unique (not a built-in's name); what
   * `transports` names, the prefix of its config keys and its control channel. */
  const char *name;
  /* Among transports that reach a peer the lower is tried first (shm 10, rdma 30, tcp 100). */
  int32_t preference;
  const mc_tp_config_key_t *keys;
  uint32_t key_count;
  uint32_t reserved;

  /* Frees a string this plugin returned. Required when any op below returns a string. */
  void (*free_string)(char *s);

  /* One instance for one engine. host and ops stay valid until destroy(). MC_OK with *out NULL:
   * not available on this machine (*why says why; logged). Another status fails the engine's
   * creation with *why. *why (may stay NULL) is freed with free_string. Required. */
  mc_status_t (*create)(mc_tp_host_t *host, const mc_tp_host_ops_t *ops, mc_tp_transport_t **out, char **why);
  /* Fails everything queued or in flight (each slice reported), stops the plugin's threads,
   * frees the instance. Blocks until done. Required. */
  void (*destroy)(mc_tp_transport_t *t);

  /* This instance's part of the engine's descriptor (JSON object text, e.g. its socket address),
   * or NULL for none; what a peer's connect() gets as transport_json. Must not block. */
  char *(*describe)(mc_tp_transport_t *t);
  /* 1 when this transport moves data between memory at these locations ("cpu", "cpu:N",
   * "cuda:N"). NULL: cpu to cpu only. */
  int (*accepts)(mc_tp_transport_t *t, const char *local_location, const char *remote_location);

  /* A path to a peer; must not block on the network (connect lazily). MC_OK with *out NULL: this
   * transport cannot reach that peer. Required. */
  mc_status_t (*connect)(mc_tp_transport_t *t, const mc_tp_peer_t *peer, mc_tp_path_t **out);
  /* Ends a path: fails what is still queued on it, frees it. Blocks until done. Required. */
  void (*disconnect)(mc_tp_transport_t *t, mc_tp_path_t *p);
  /* Queues n slices (copy them: the array is libmc's) to a peer; must not block on the network.
   * Each ends in complete(). Required. */
  void (*submit)(mc_tp_transport_t *t, mc_tp_path_t *p, const mc_tp_slice_t *s, size_t n);
  /* Fails everything queued or in flight on the path with status; later submits may retry. */
  void (*fail_path)(mc_tp_transport_t *t, mc_tp_path_t *p, mc_status_t status, const char *why);
  /* 0 once the path gave up for good; the engine then connects again. NULL: always usable. */
  int (*usable)(mc_tp_transport_t *t, mc_tp_path_t *p);

  /* Buffer registration hooks (may be NULL). A failing on_register undoes the registration.
   * on_access_change: a plugin whose peers reach memory without asking pin() must make the old
   * rights unusable before it returns. Called with the engine's buffer lock held: no blocking
   * on the network. */
  mc_status_t (*on_register)(mc_tp_transport_t *t, const mc_tp_region_t *r);
  void (*on_unregister)(mc_tp_transport_t *t, const mc_tp_region_t *r);
  mc_status_t (*on_access_change)(mc_tp_transport_t *t, const mc_tp_region_t *r);

  /* Answers a peer's control_call on this plugin's channel: *reply (freed with free_string) and
   * *reply_len. NULL: the plugin takes no control requests. */
  mc_status_t (*handle_control)(mc_tp_transport_t *t, const void *request, size_t request_len, char **reply,
                                size_t *reply_len);
  /* This instance's counters as a JSON object text (freed with free_string), or NULL. */
  char *(*stats_json)(mc_tp_transport_t *t);

  /* ---- segments named by URI (appended to version 1's first table: a library whose table
   * ends before them never reads them). The URI scheme this transport claims ([a-z0-9], e.g. "file"), or NULL:
   * mc_segment_open of a name "<scheme>://..." is answered by open_segment instead of the
   * metadata store, when `transports` allows this transport. Unique among loaded transports. */
  const char *scheme;
  /* Opens the segment `uri` ("<scheme>://...", valid during the call): fills *info (its size
   * field set by libmc) and *out, a path that libmc then uses like one connect() gave (submit,
   * fail_path, usable, disconnect when the last handle on it is closed). A slice's `remote` is
   * an offset into the segment's one buffer, already checked against info->length and
   * info->access. A failing status is mc_segment_open's, with *why (freed with free_string)
   * naming the uri and the reason. May block (file systems); called on mc_segment_open's thread.
   * Required when scheme is set. */
  mc_status_t (*open_segment)(mc_tp_transport_t *t, const char *uri, mc_tp_segment_t *info, mc_tp_path_t **out,
                              char **why);
} mc_tp_ops_t;

/* ============================================================================ entry point */

/* The one symbol a plugin exports, called once when libmc loads it (any thread, before any other
 * op). host_ops: the library's host table (its version and size say which fields exist); the
 * plugin may keep the pointer for the life of the process. *ops: the plugin's table, static and
 * alive until the process ends (libmc never unloads a plugin). A failing status refuses the load;
 * *why (a static string, may stay NULL) says why. */
typedef mc_status_t (*mc_transport_plugin_init_fn)(const mc_tp_host_ops_t *host_ops, const mc_tp_ops_t **ops,
                                                   const char **why);
MC_TP_EXPORT mc_status_t mc_transport_plugin_init(const mc_tp_host_ops_t *host_ops, const mc_tp_ops_t **ops,
                                                  const char **why);

#ifdef __cplusplus
}
#endif

#endif /* MC_TRANSPORT_PLUGIN_H */
