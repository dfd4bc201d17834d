/*
 * mc.h - the whole public ABI of mc, a transfer engine for AI infrastructure.
 *
 * A process creates an engine, registers memory and publishes it as a segment under the engine's
 * name. Peers open that segment by name and submit batches of one-sided READs and WRITEs that the
 * engine slices and moves over the best transport between the two ends.
 *
 * Conventions that hold for every function below unless its comment says otherwise:
 *  - Functions return mc_status_t: MC_OK (0) or a negative MC_ERR_* code. A failing call sets this
 *    thread's mc_last_error() message and changes nothing.
 *  - Out-parameters come last; they are written only on success.
 *  - No function aborts, exits or lets a C++ exception escape.
 *  - Pointers passed in are borrowed for the duration of the call only, unless stated otherwise.
 *  - "Thread-safe" means any number of threads may call it at once on the same object.
 *  - "Blocks" says for how long at most; a function that does not say so returns without waiting
 *    on the network or on other threads' transfers.
 *
 * Plain C11 (and valid C++): fixed-width integers, no inline functions, no bitfields, no
 * dependency headers.
 */
#ifndef MC_H
#define MC_H

/* ======================================================================== export, extern "C" */

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define MC_API
#elif defined(__GNUC__) && __GNUC__ >= 4
#define MC_API __attribute__((visibility("default")))
#else
#define MC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== version */

#define MC_VERSION_MAJOR 0
#define MC_VERSION_MINOR 1
#define MC_VERSION_PATCH 0

/* The version of the loaded library: (major << 16) | (minor << 8) | patch. Compare it with the
 * MC_VERSION_* macros the caller was compiled with. Thread-safe, never blocks. */
MC_API uint32_t mc_version(void);

/* The same version as static text, e.g. "0.1.0". Never NULL; owned by the library. */
MC_API const char *mc_version_string(void);

/* ======================================================================== status */

/* A fixed-width integer, not the enum type, so that it is the same size across every FFI. */
typedef int32_t mc_status_t;

/* Values are pinned forever and never reused. */
enum {
  MC_OK = 0,
  MC_ERR_INVALID_ARG = -1,      /* NULL pointer, bad opcode, flags not 0, length 0, bad key or value */
  MC_ERR_NO_MEMORY = -2,        /* an allocation failed, or a heap has no room */
  MC_ERR_NOT_FOUND = -3,        /* unknown handle, address or name */
  MC_ERR_OUT_OF_RANGE = -4,     /* a range is not inside registered memory */
  MC_ERR_EXISTS = -5,           /* already registered / already claimed */
  MC_ERR_BUSY = -6,             /* pending requests still use the object */
  MC_ERR_TIMEOUT = -7,          /* a wait ran out (mc_batch_wait, mc_transfer, mc_buffer_set_access),
                                   or a request made no progress for timeout_ms */
  MC_ERR_PEER_DOWN = -8,        /* the peer is unreachable or gone */
  MC_ERR_TRANSPORT = -9,        /* I/O failure on a live connection, or the peer refused the request */
  MC_ERR_UNSUPPORTED = -10,     /* the feature is not available on this machine or build */
  MC_ERR_METADATA = -11,        /* the metadata store failed or holds something unusable */
  MC_ERR_INTERNAL = -12,        /* a bug in mc; the message says where */
  MC_ERR_BUFFER_TOO_SMALL = -13, /* the caller's output buffer is too small; see the needed or count out-parameter */
  MC_ERR_CANCELED = -14,        /* canceled before it ended (mc_batch_cancel, mc_transfer ran out) */
  MC_ERR_DENIED = -15           /* the peer was not admitted (auth_token missing or different), or
                                   the buffer's access (mc_buffer_set_access) forbids the request */
};

/* Static text naming a status ("invalid argument", ...). Never NULL, also for unknown codes.
 * Thread-safe, never blocks. */
MC_API const char *mc_status_str(mc_status_t s);

/* This thread's message for its last failed mc_* call, "" if none failed yet. Never NULL. The
 * text is owned by the library and valid until this thread's next mc_* call. Read it right after
 * the failing call, on the same thread. A caller's string echoed in it (a key, a value, a
 * location, a name) is cut at 256 bytes; auth_token values are never echoed. */
MC_API const char *mc_last_error(void);

/* ======================================================================== config */

/* A set of string keys and values, validated when set. Keys (value syntax, default):
 *   name             engine name. In p2p mode the name is always the engine's HOST:PORT and this
 *                    key must be unset or equal to it.
 *   metadata         where descriptors live: "p2p" (default; no server: a peer's descriptor is
 *                    fetched from the peer itself, and a segment's name is its HOST:PORT),
 *                    "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]" (etcd v3.4 or newer through its
 *                    HTTP/JSON gateway; several endpoints are tried in turn) or
 *                    "redis://HOST:PORT[/DB]" (an IPv6 HOST in brackets: "redis://[::1]:6379").
 *                    With a server the name is free-form (the `name`
 *                    key; unset: HOST:PORT), each engine's descriptor lives under
 *                    PREFIX/segments/NAME (PREFIX "/mc") with an expiry it keeps refreshing,
 *                    and a name held by a live engine cannot be taken (MC_ERR_EXISTS).
 *   metadata_ttl_ms  expiry of an engine's descriptor in etcd or redis, 1000..3600000 (10000):
 *                    a crashed engine's name is free again after this long (sooner when a
 *                    new engine finds that the holder does not answer its probe).
 *   listen           HOST:PORT the engine serves on ("127.0.0.1:0"; port 0 picks a free port).
 *                    HOST is a numeric IPv4 address, an IPv6 one in brackets ("[::1]:0") or
 *                    "localhost"; PORT may be a range LO-HI: the first free port of it is taken,
 *                    and a range with none free fails engine creation naming the range.
 *   metrics_listen   HOST:PORT where GET /metrics is served in the Prometheus text format
 *                    (version 0.0.4), written as `listen` is (IPv6 in brackets, port 0 or a range
 *                    picks a free one: mc_engine_stats_json's "metrics":{"listen":...} tells
 *                    which); unset (default): no metrics endpoint. Requests and bytes by transport
 *                    and direction, failures by status, batch latency histograms, segments by
 *                    state, rejoins, NIC and QP counters, heap and staging-pool use, notify queue
 *                    depth: the figures mc_engine_stats_json reports (README, "Operating a
 *                    cluster"). One server thread per engine, whatever the number of scrapers;
 *                    a port that cannot be bound fails engine creation. Serve it on a trusted
 *                    network: it is not behind auth_token.
 *   transports       "auto" (default) or a comma-separated list of "tcp", "shm", "local",
 *                    "nvlink", "rdma", "file". "rdma" is one-sided READ/WRITE over RC queue pairs on
 *                    the NICs of rdma_devices, striped over them; host memory, and "cuda:N"
 *                    memory registered through dma-buf where the driver and NIC allow it
 *                    (else such buffers go over tcp through staging). "shm" is the same-host path (memfd mappings and cross-memory
 *                    attach), chosen by itself for peers on this host; "nvlink" moves GPU
 *                    memory to GPU memory of another process on this host through CUDA IPC
 *                    (copy engines over NVLink or PCIe, no host bounce; needs a CUDA driver,
 *                    found at run time); "local" is the in-process path used when a segment is
 *                    opened by the engine's own name; "file" serves file:/// segments
 *                    (mc_segment_open); "auto" allows everything available.
 *                    GPU memory to or from host memory, or to another host, goes over "tcp"
 *                    through pinned staging buffers.
 *                    Failover: while every rdma path to a peer is down (no NIC of this engine up,
 *                    or every NIC of the peer refusing) and another allowed transport ("tcp")
 *                    reaches it, new requests and the slices in flight go over that one (logged
 *                    once; "failover_requests" and "failover_slices" in mc_engine_stats_json),
 *                    and back over rdma once a NIC is up again.
 *   workers          worker threads for in-process copies, 1..256 (4).
 *   shm_share        whether a worker copies part of one shm call beside the submitting thread:
 *                    "auto" (default: while it pays: not while no CPU is idle, and per size of
 *                    call only while shared calls end sooner than alone ones, judged as they
 *                    run), "always" (every call large enough: a slice over 256 KiB, or
 *                    requests of 32 KiB or more adding up to 256 KiB; a worker watches for
 *                    them, holding a CPU while calls keep coming and 2 ms after), "never" (the
 *                    submitting thread copies it all; no worker spins). mc_engine_stats_json's
 *                    "shm" object counts the calls shared ("halves_shared", "shared_calls_paid")
 *                    and those kept alone.
 *   slice_size       bytes per slice on the wire, 4K..1G, with K/M/G suffixes (1M).
 *   file_queue_depth requests each file worker's io_uring keeps in flight, 1..4096 (64); the
 *                    file transport has `workers` such rings, started with the first file segment.
 *   file_gds         cuFile (GPUDirect Storage) for "cuda:N" memory to and from file segments:
 *                    "auto" (default: used where libcufile.so.0 loads, found at run time, never
 *                    linked), "off" (always through the pinned staging pool), "on" (required:
 *                    engine creation fails, saying why, when libcufile is missing or its
 *                    driver does not open). A request cuFile fails goes through the staging
 *                    pool instead (stats "file": "cufile", "cufile_fallbacks").
 *   tcp_connections  TCP data connections per peer, 1..64 (4).
 *   tcp_io_threads   event-loop threads serving every TCP data connection, 1..64 (2); the
 *                    number of threads does not grow with peers.
 *   rdma_devices     "auto" (default: every RDMA device with an active port; none and no error
 *                    where there is no RDMA stack), a comma-separated list of device names
 *                    (each must open, or engine creation fails naming it), a comma-separated
 *                    list of glob patterns and exclusions ("mlx5_*,!mlx5_3": the devices that
 *                    match a pattern and no "!" one; none matching fails engine creation with
 *                    the list of devices seen), "sim" or "sim:N"
 *                    (N 1..16 simulated NICs on an in-process fabric shared by the engines of
 *                    this process; for tests), "sim:PATTERNS" (of the simulated NICs named in
 *                    MC_SIM_NIC_NAMES, those PATTERNS pick), "sim-ib" (one simulated
 *                    InfiniBand NIC, routed by LID). libibverbs is loaded at run time.
 *   rdma_max_mr_size largest memory region a buffer is registered as, 4K or more with K/M/G
 *                    suffixes (unset: each NIC's max_mr_size); a longer buffer becomes several
 *                    regions with their own keys, and requests are cut at their edges.
 *   rdma_qps_per_endpoint  RC queue pairs per (peer, local NIC, peer NIC), 1..64 (2).
 *   rdma_max_endpoints     endpoints kept connected, 1..1048576 (4096); the least recently
 *                    used one is drained and closed beyond that.
 *   rdma_gid_index   "auto" (default: RoCE v2 preferred) or a GID table index 0..255.
 *   rdma_port        "auto" (default: each device's first active port) or a port number
 *                    1..255 used on every device (one without that port fails engine creation).
 *   rdma_mtu         largest path MTU to use: 256, 512, 1024, 2048 or 4096 (4096).
 *   rdma_affinity    the NICs that carry each memory location's transfers, pinned:
 *                    "LOC=NIC,NIC;LOC=..." with LOC "cuda:N" or "cpu:N" ("cuda:0=mlx5_0,mlx5_1;
 *                    cuda:1=mlx5_2"); a named NIC the engine does not use fails engine creation.
 *                    Locations not listed (and every location when unset) prefer the NICs
 *                    nearest their GPU or NUMA node, read from sysfs: under one PCIe switch,
 *                    then one host bridge, then one NUMA node; equally near ones share the work,
 *                    and when none of them is up the others carry it.
 *   rdma_register_threads  threads registering one buffer of 4 MiB or more with the NICs,
 *                    started for the call and joined before it returns: "auto" (default: one per
 *                    NIC) or 1..64 (1: one NIC after another).
 *   timeout_ms       how long a request may make no progress before it fails, 1..3600000 (5000);
 *                    also bounds connects and descriptor fetches.
 *   heartbeat_ms     how often open segments are probed, 10..600000 (1000).
 *   peer_timeout_ms  no answer to a probe for this long makes a segment unreachable,
 *                    10..3600000 (3000).
 *   log_level        "error", "warn", "info", "debug" or 0..3 (warn).
 *   notify_queue     notifications kept unread per engine, 1..1048576 (65536); an MC_NOTIFY
 *                    that finds the queue full fails MC_ERR_BUSY at its sender.
 *   auth_token       the cluster's shared secret, 1..4096 printable characters (unset: none).
 *                    With a token, every connection to and from this engine (control, data,
 *                    same-host) is admitted only after a mutual HMAC-SHA256 challenge-response;
 *                    the token never crosses the wire. Engines with different tokens, or one
 *                    with and one without, refuse each other: MC_ERR_DENIED. Use 32 or more
 *                    random characters; prefer MC_AUTH_TOKEN over putting it in code. Error
 *                    messages never echo it.
 *   plugins          transport plugins to load (include/mc_transport_plugin.h): a comma-separated
 *                    list of files, or of names looked up as NAME or NAME.so in the directories
 *                    of MC_PLUGIN_PATH, then in <libdir>/mc/plugins. Each adds a transport that
 *                    `transports` may name and keys "<plugin>_<key>" validated like these. Set it
 *                    before them: a key unknown so far is looked up after loading the plugins.
 *                    A plugin that cannot be found, loaded or initialised, or that was built
 *                    against another plugin interface version, fails mc_engine_create (and such
 *                    an mc_config_set) with MC_ERR_UNSUPPORTED naming the file and the reason.
 *                    A loaded plugin stays loaded until the process ends.
 * A key that is not set is taken from the environment variable MC_<KEY upper-cased> (for example
 * MC_TIMEOUT_MS) when the engine is created; other MC_* variables are ignored. */
typedef struct mc_config mc_config_t;

/* Creates an empty config. *out is owned by the caller: free it with mc_config_destroy. */
MC_API mc_status_t mc_config_create(mc_config_t **out);

/* Sets key to value (both copied). An unknown key or a bad value is MC_ERR_INVALID_ARG and leaves
 * the config unchanged. Not thread-safe on one config. */
MC_API mc_status_t mc_config_set(mc_config_t *cfg, const char *key, const char *value);

/* Frees a config. NULL is allowed. Engines created from it do not keep it. */
MC_API void mc_config_destroy(mc_config_t *cfg);

/* ======================================================================== engine */

typedef struct mc_engine mc_engine_t;

/* Creates an engine: binds its listen address, starts its threads and publishes its (empty)
 * segment. cfg is only read (NULL: defaults). *out is owned by the caller: mc_engine_destroy.
 * Blocks while binding the socket and, with etcd or redis, on the first publish (at most about
 * timeout_ms). A failed create changes no process-wide state (the log level included) and
 * leaves nothing running. Thread-safe. */
MC_API mc_status_t mc_engine_create(const mc_config_t *cfg, mc_engine_t **out);

/* Destroys an engine. Pending requests of live batches fail (MC_ERR_PEER_DOWN) and this call
 * waits until none of them can touch memory any more; those batches can still be queried and
 * destroyed afterwards, in any order. Open segments are closed. NULL is allowed. Blocks at most
 * about the engine's timeout_ms. Must not race with other calls on the same engine. */
MC_API void mc_engine_destroy(mc_engine_t *engine);

/* The name peers open this engine's segment by (in p2p mode "HOST:PORT"). Owned by the engine,
 * valid until mc_engine_destroy. Returns "" for NULL. Thread-safe, never blocks. */
MC_API const char *mc_engine_name(const mc_engine_t *engine);

/* Writes a JSON object with the engine's counters into buf: at least "name", "incarnation",
 * "requests_completed", "requests_failed", "bytes_read" and "bytes_written" (bytes this engine
 * read from and wrote into peers as initiator), the notification counters ("notify_sent",
 * "notify_failed", "notify_received", "notify_refused_busy", "notify_refused_stale",
 * "notify_queued"), "requests_by_transport" (an array of {"transport", "direction",
 * "completed", "failed", "bytes"}), "failures" (failed requests by status name),
 * "batch_latency", "segments" ({"ok", "unreachable"}), "rejoins_total", "memory" (heaps and the
 * GPU staging pool), "metrics" ({"listen": HOST:PORT, ...} when metrics_listen is set: the
 * same figures GET /metrics serves) and one object per transport. *needed is set to
 * the size including the terminating NUL. buf may be NULL when capacity is 0; when capacity is
 * too small, returns MC_ERR_BUFFER_TOO_SMALL with *needed set and buf untouched.
 * Thread-safe, never blocks. */
MC_API mc_status_t mc_engine_stats_json(mc_engine_t *engine, char *buf, size_t capacity,
                                        size_t *needed);

/* ======================================================================== buffers */

/* Registers [addr, addr+length) with the engine and publishes it in the local segment. The
 * memory stays owned by the caller, who must keep it valid until mc_buffer_unregister (or engine
 * destroy). location: NULL to detect, "cpu", "cpu:N" (NUMA node N) or "cuda:N"; copied.
 * A range overlapping a registered buffer is MC_ERR_EXISTS. NULL asks the CUDA driver (when
 * this process loaded it) whether addr is device memory and records "cuda:N" or "cpu".
 * "cuda:N" (GPU N's memory from cudaMalloc/cuMemAlloc, or VMM memory created with the POSIX
 * file-descriptor handle type, as PyTorch's expandable segments) needs the CUDA driver:
 * without one it is MC_ERR_UNSUPPORTED; a range that is not all device memory of GPU N is
 * MC_ERR_INVALID_ARG. mc copies GPU memory on streams of its own, which do not wait for work
 * the caller queued: finish (or synchronize) the work that writes a buffer before a request
 * reads it, and the work that reads it only after the request completed. Thread-safe. Blocks
 * on the NIC registration with rdma (pinning the pages: about the time to touch them) and on
 * the descriptor publish with etcd or redis (at most timeout_ms); otherwise never blocks. */
MC_API mc_status_t mc_buffer_register(mc_engine_t *engine, void *addr, size_t length,
                                      const char *location);

/* One buffer for mc_buffer_register_batch. */
typedef struct mc_buffer_desc {
  void *addr;
  uint64_t length;
  const char *location;     /* as for mc_buffer_register; NULL: detect */
} mc_buffer_desc_t;

/* Registers count buffers at once, all or nothing (overlaps among them or with registered
 * buffers: MC_ERR_EXISTS and nothing registered); the descriptor is published once per call,
 * not per buffer. The message names the offending buffer's index. Thread-safe; blocks as
 * mc_buffer_register does, once per call. */
MC_API mc_status_t mc_buffer_register_batch(mc_engine_t *engine, const mc_buffer_desc_t *bufs,
                                            size_t count);

/* Unregisters count buffers at once, all or nothing (one unknown: MC_ERR_NOT_FOUND, one in use:
 * MC_ERR_BUSY, and nothing unregistered). Thread-safe; blocks as mc_buffer_unregister does,
 * once per call. */
MC_API mc_status_t mc_buffer_unregister_batch(mc_engine_t *engine, void *const *addrs, size_t count);

/* Allocates length bytes of host memory backed by a memfd, registers it and sets *addr.
 * Same-host peers map it directly (the fd passes over a Unix socket), so their READs and
 * WRITEs are plain memory copies with no system call. location: NULL or "cpu"/"cpu:N".
 * Release it with mc_buffer_free (mc_buffer_unregister refuses it). Thread-safe. */
MC_API mc_status_t mc_buffer_alloc(mc_engine_t *engine, size_t length, const char *location,
                                   void **addr);

/* Unregisters and frees a buffer from mc_buffer_alloc. MC_ERR_NOT_FOUND when addr is not the
 * start of one; MC_ERR_BUSY while pending requests use it. Same-host peers that mapped it keep a
 * harmless mapping but can no longer write into it. Thread-safe. */
MC_API mc_status_t mc_buffer_free(mc_engine_t *engine, void *addr);

/* What peers may do with a buffer (bits for mc_buffer_set_access). */
enum { MC_ACCESS_READ = 1, MC_ACCESS_WRITE = 2 };

/* Sets what peers may do with the buffer that starts at addr: MC_ACCESS_READ, MC_ACCESS_WRITE,
 * both (the default of every newly registered buffer) or 0 (peers may not touch it; this
 * engine still uses it as the local side of its own requests). Other bits: MC_ERR_INVALID_ARG;
 * not the start of a registered buffer: MC_ERR_NOT_FOUND. The target refuses a forbidden
 * request (MC_ERR_DENIED, nothing written) and peers see the change in the descriptor, so
 * their submits fail at once with MC_ERR_DENIED. When rights are taken away, returns once no
 * peer request admitted under the old rights still runs, blocking at most about timeout_ms;
 * if one still runs then, returns MC_ERR_TIMEOUT: the new rights hold for every new request,
 * but that one may still finish under the old rights. Also blocks on the metadata publish
 * (a store write, at most timeout_ms) and, with rdma, on the NIC re-registration.
 * Same-host peers map a read-only buffer from mc_buffer_alloc read-only. Thread-safe. */
MC_API mc_status_t mc_buffer_set_access(mc_engine_t *engine, void *addr, uint32_t access);

/* Unregisters the buffer that starts at addr. Not the start of a registered buffer:
 * MC_ERR_NOT_FOUND. Pending requests (of this engine, or served for a peer right now) using it:
 * MC_ERR_BUSY. After MC_OK no peer can touch the memory. Thread-safe. Blocks on the NIC
 * deregistration with rdma and on the descriptor publish with etcd or redis (at most
 * timeout_ms); otherwise never blocks. */
MC_API mc_status_t mc_buffer_unregister(mc_engine_t *engine, void *addr);

/* ======================================================================== segments */

/* A handle to another engine's (or this engine's own) published buffers. 0 is never valid. */
typedef uint64_t mc_segment_t;

typedef enum mc_segment_state { MC_SEGMENT_OK = 0, MC_SEGMENT_UNREACHABLE = 1 } mc_segment_state_t;

typedef struct mc_segment_info {
  size_t size;              /* caller sets sizeof(mc_segment_info_t); the library fills what fits */
  uint32_t state;           /* mc_segment_state_t */
  uint32_t buffer_count;    /* buffers in the peer's descriptor as last known */
  uint64_t incarnation;     /* the peer engine's random 64-bit incarnation */
  uint64_t total_bytes;     /* sum of the buffers' lengths */
  char transport[16];       /* preferred transport to this peer: "shm", "tcp", "local", ... */
  uint64_t rejoins;         /* times the peer came back with a new incarnation */
  uint64_t state_changed_ms; /* CLOCK_MONOTONIC milliseconds of the last state change */
} mc_segment_info_t;

typedef struct mc_buffer_info {
  uint64_t addr;            /* the peer's virtual address: use it as mc_request_t.remote */
  uint64_t length;
  char location[32];        /* "cpu", "cpu:N", "cuda:N" */
} mc_buffer_info_t;

/* Opens the segment published under name (in p2p mode "HOST:PORT"), or a file: a name
 * "file:///abs/path" opens that regular file or block device as a segment of one buffer
 * [0, size) at address 0, location "file" (a request's remote is the file offset);
 * "file:///abs/path?size=N" (K/M/G suffixes) creates it or grows it to N bytes first (never
 * shrinks it). Query keys: sync=1 (a WRITE completes once durable: RWF_DSYNC), direct=0 (never
 * O_DIRECT; by default requests whose address, offset and length are aligned to the file
 * system's direct-I/O alignment bypass the page cache). A file this process may only read gives
 * a READ-only segment (WRITE: MC_ERR_DENIED). A missing file without size=: MC_ERR_NOT_FOUND; a
 * relative path, a directory or other non-regular file, an empty file or a bad query key:
 * MC_ERR_INVALID_ARG; the message names the path and the reason. File segments are served by
 * the "file" transport (io_uring, `workers` rings of file_queue_depth), blocks on the file
 * system while opening, and are never probed (always MC_SEGMENT_OK). A WRITE that finds the
 * file system full ends FAILED with MC_ERR_TRANSPORT, the errno logged and kept in the
 * engine's stats ("file": "last_error"). This engine's own name
 * always works: copies stay in process when `transports` allows "local", else they take an
 * allowed transport to the engine itself (shm, or tcp over its own listener). A descriptor
 * with a malformed part (any part a transport of this engine reads) is refused whole:
 * MC_ERR_METADATA naming the peer and the field. Fetches the peer's descriptor: blocks at most timeout_ms;
 * a refused connection fails at once (MC_ERR_PEER_DOWN). Opening the same name twice gives two
 * handles to one peer. *out is closed with mc_segment_close. Thread-safe. */
MC_API mc_status_t mc_segment_open(mc_engine_t *engine, const char *name, mc_segment_t *out);

/* Closes a segment handle. Unknown or closed handle: MC_ERR_NOT_FOUND. Requests already
 * submitted to it still run to their end. Thread-safe, never blocks. */
MC_API mc_status_t mc_segment_close(mc_engine_t *engine, mc_segment_t segment);

/* Called on every change of a segment's state or of its peer's incarnation (a rejoin), once per
 * open handle of that peer. Runs on an engine thread, never while an engine lock is held; it
 * may call any mc_* function except mc_engine_destroy of this engine. Keep it short. */
typedef void (*mc_segment_fn)(mc_segment_t segment, uint32_t state, uint64_t incarnation, void *user);

/* Sets (fn) or clears (NULL) the engine's segment callback. Thread-safe, never blocks. */
MC_API mc_status_t mc_engine_set_segment_callback(mc_engine_t *engine, mc_segment_fn fn, void *user);

/* Fills *info (up to info->size bytes). Thread-safe, never blocks. */
MC_API mc_status_t mc_segment_query(mc_engine_t *engine, mc_segment_t segment,
                                    mc_segment_info_t *info);

/* Copies the peer's buffer list as last known into out[0..capacity) and sets *count to the number
 * of buffers. out may be NULL when capacity is 0. When capacity < count, returns
 * MC_ERR_BUFFER_TOO_SMALL with *count set and out untouched. Thread-safe, never blocks. */
MC_API mc_status_t mc_segment_buffers(mc_engine_t *engine, mc_segment_t segment,
                                      mc_buffer_info_t *out, size_t capacity, size_t *count);

/* ======================================================================== batches */

typedef enum mc_opcode { MC_READ = 0, MC_WRITE = 1, MC_NOTIFY = 2 } mc_opcode_t;

/* The largest message one MC_NOTIFY request carries. */
#define MC_NOTIFY_MAX_BYTES 4096

/* One one-sided transfer: READ copies [remote, remote+length) of the segment into local; WRITE
 * copies local into it. local must lie in buffers registered with this engine; remote in the
 * peer's registered buffers (a range may span adjacent buffers on either side).
 *
 * NOTIFY sends the message [local, local+length) (1..MC_NOTIFY_MAX_BYTES bytes; local need not
 * be registered and is copied at submit; remote must be 0, flags 0) to the engine behind segment
 * (this engine's own segment included), which queues it for mc_notify_recv. It is sent only
 * after every request submitted to the same batch before it ended COMPLETED, over the engine's
 * control channel: every transport ends a WRITE only once its bytes are in the peer's memory
 * (tcp: the target's acknowledgement after the write; shm and nvlink: after the copy and the
 * memory fence; rdma: the RC completion; local: the copy), so when the peer receives it every
 * byte those WRITEs carried is in its memory and those READs have finished. It ends COMPLETED
 * once the peer's engine queued it; FAILED with MC_ERR_CANCELED, never delivered, when an
 * earlier request of its batch failed or the batch was canceled before it was sent; MC_ERR_BUSY
 * when the peer's queue (notify_queue) is full; MC_ERR_PEER_DOWN when the peer is unreachable or
 * is no longer the incarnation the segment's descriptor named at submit (it is never delivered
 * to a later incarnation). It is delivered at most once: a send whose answer was lost ends FAILED
 * and is not sent again. Notifications from one engine to another arrive in the order their
 * NOTIFY requests were submitted (within a batch, and across batches submitted one after another
 * by one thread). One thread per engine sends them; a silent peer holds it up to timeout_ms. */
typedef struct mc_request {
  uint32_t opcode;          /* mc_opcode_t */
  uint32_t flags;           /* reserved, must be 0 */
  void *local;
  mc_segment_t segment;
  uint64_t remote;          /* the peer's virtual address */
  uint64_t length;          /* > 0 */
} mc_request_t;

typedef enum mc_request_state {
  MC_REQUEST_PENDING = 0,
  MC_REQUEST_COMPLETED = 1, /* every byte moved; for a WRITE the bytes are in the target's memory */
  MC_REQUEST_FAILED = 2     /* the target range may be partly written: rewrite or drop it */
} mc_request_state_t;

typedef struct mc_request_status {
  uint32_t state;           /* mc_request_state_t */
  int32_t error;            /* MC_OK unless FAILED */
  uint64_t bytes;           /* bytes moved: length when COMPLETED */
} mc_request_status_t;

/* A set of up to capacity requests, submitted in one or more calls and waited on together.
 * Every submitted request ends COMPLETED or FAILED exactly once, within the engine's timeout_ms
 * of no progress, also when the peer dies or the engine is destroyed. A batch keeps its engine's
 * internals alive: it may outlive mc_engine_destroy (its pending requests are failed then). */
typedef struct mc_batch mc_batch_t;

/* The contract, for every transport:
 *  1. Every submitted request reaches COMPLETED or FAILED exactly once, within the engine's
 *     timeout, whatever happens to the peer, the network or the engine itself.
 *  2. COMPLETED for a WRITE means the bytes are in the target's memory.
 *  3. FAILED means unknown: the target range may be partly written; rewrite or drop it. It
 *     is settled before anything later is served: a FAILED WRITE never lands after a request
 *     submitted after it failed (tcp ends the broken connection at the target first).
 *  4. While a segment is MC_SEGMENT_UNREACHABLE, new submits to it fail at once with
 *     MC_ERR_PEER_DOWN. Segments are probed every heartbeat_ms (default 1000); no answer for
 *     peer_timeout_ms (default 3000), or a transport error, makes a segment UNREACHABLE and
 *     fails its in-flight requests with MC_ERR_PEER_DOWN; it is OK again once the peer answers.
 *  5. Every engine has a random 64-bit incarnation, published in its descriptor. A peer that
 *     comes back under the same name with a new incarnation is a new peer: its old descriptor,
 *     connections and mappings are dropped and rebuilt (counted in rejoins, reported to the
 *     segment callback), the same mc_segment_t keeps working, and nothing is ever written with
 *     a stale address: data connections carry the incarnation they were validated against and
 *     the target refuses a mismatch.
 *  6. A request whose remote range the target no longer has registered (the initiator's view
 *     of the segment was stale) is refused by the target with nothing written, and ends FAILED
 *     with MC_ERR_OUT_OF_RANGE on every transport; one its rights forbid, MC_ERR_DENIED. */

/* Creates a batch for up to capacity (1..16777216) requests. *out is owned by the caller:
 * mc_batch_destroy. Thread-safe, never blocks. */
MC_API mc_status_t mc_batch_create(mc_engine_t *engine, size_t capacity, mc_batch_t **out);

/* Validates every request of the call first (opcode, flags 0, length > 0, local range registered,
 * remote range inside the peer's buffers as last known, segment open, capacity left) and starts
 * none if any is bad: MC_ERR_INVALID_ARG, MC_ERR_OUT_OF_RANGE, MC_ERR_NOT_FOUND, or
 * MC_ERR_DENIED (the peer's buffer does not allow this READ or WRITE), with the
 * request's index in the message. When a remote range is outside the peer's buffers as last
 * known, the peer's descriptor is refreshed once first (blocks at most timeout_ms); otherwise
 * never blocks on the network. The requests array is copied; the memory it points to must stay
 * valid until each request ends. Request i of this call gets index (submitted so far) + i.
 * Over the same-host transport (shm) the calling thread may copy a share of the call's bytes
 * itself before it returns (small batches entirely), so the call can take about as long as
 * copying that share and the requests may already have ended when it returns; other
 * transports hand the work to their threads and return at once. How the share is chosen is
 * tuning, not contract: docs/internals.md.
 * Thread-safe with other calls on the same batch except reset and destroy. */
MC_API mc_status_t mc_batch_submit(mc_batch_t *batch, const mc_request_t *requests, size_t count);

/* mc_batch_submit ordered on a CUDA stream. stream is a CUstream / cudaStream_t of the caller
 * (NULL: the legacy default stream of the context current on the calling thread). The requests
 * start only after the work queued on stream before this call, and work queued on stream after
 * this call starts only after every one of them ended (COMPLETED or FAILED: the batch reports
 * which, through mc_batch_wait / mc_batch_status as for mc_batch_submit; where the engine holds
 * the stream (every transport but nvlink) the batch reports them ended before the stream goes
 * on; over nvlink the copies' bytes are in place when the stream goes on and the batch reports
 * them a moment later: call mc_batch_wait before reusing the batch). The calling thread
 * never waits for the GPU: over nvlink the copies are queued on stream itself; over the other
 * transports the engine waits (on its own thread) for an event recorded on stream, then starts
 * the requests, and stream waits on the device (cuStreamWaitValue32) for a flag the engine
 * writes when they ended. Validation is mc_batch_submit's (nothing starts and stream is left
 * as it was when a request is bad); MC_NOTIFY requests are refused (MC_ERR_INVALID_ARG):
 * submit them with mc_batch_submit after synchronizing. Without a CUDA driver, or with one
 * that lacks cuStreamWaitValue32: MC_ERR_UNSUPPORTED, nothing changed (should the driver refuse
 * the wait at run time, the requests that needed it end FAILED and stream is not held). stream
 * is borrowed: it must stay alive until the requests ended; the requests array is copied and
 * the memory it points to must stay valid until each request ends. Canceling the batch, or
 * destroying the engine, ends requests still waiting for stream's earlier work FAILED
 * (MC_ERR_CANCELED / MC_ERR_PEER_DOWN) and releases stream; copies already queued on stream
 * itself (nvlink) end only when stream reaches them, and mc_batch_cancel waits for that.
 * Thread-safe as mc_batch_submit; blocks as mc_batch_submit does (a descriptor refresh at
 * most), never on the GPU. */
MC_API mc_status_t mc_batch_submit_on_stream(mc_batch_t *batch, const mc_request_t *requests, size_t count,
                                             void *stream);

/* Waits until every submitted request ended, or timeout_ms passed (-1: no limit; 0: poll;
 * other negative values: MC_ERR_INVALID_ARG). It may watch the batch on the CPU for a few
 * microseconds before it sleeps (docs/internals.md). Returns MC_OK when all completed, the status of the first request that failed, or
 * MC_ERR_TIMEOUT when the wait ran out (requests keep running). Thread-safe. */
MC_API mc_status_t mc_batch_wait(mc_batch_t *batch, int timeout_ms);

/* The state of request index (0-based over all submits since create or reset). An index past
 * the submitted requests is MC_ERR_INVALID_ARG. Thread-safe, never blocks. */
MC_API mc_status_t mc_batch_status(mc_batch_t *batch, size_t index, mc_request_status_t *out);

/* Cancels the batch: every request still pending ends FAILED with MC_ERR_CANCELED (a WRITE
 * already on the wire may still land: FAILED means unknown). Returns once none of them can
 * touch memory any more; blocks at most about the engine's timeout_ms. Requests submitted
 * after it returns run normally. Thread-safe. */
MC_API mc_status_t mc_batch_cancel(mc_batch_t *batch);

/* Forgets every request so the batch can be reused. MC_ERR_BUSY while requests are pending.
 * Not thread-safe with other calls on the same batch. */
MC_API mc_status_t mc_batch_reset(mc_batch_t *batch);

/* Frees the batch. MC_ERR_BUSY (and nothing freed) while requests are pending. NULL: MC_OK.
 * Works after the engine was destroyed. Not thread-safe with other calls on the same batch. */
MC_API mc_status_t mc_batch_destroy(mc_batch_t *batch);

/* Submits count requests on an internal batch and waits for them: MC_OK when all completed, the
 * first failure's status, or MC_ERR_TIMEOUT when timeout_ms (-1: no limit) ran out; then the
 * requests still running are failed and this call waits until none of them can touch the
 * caller's memory. timeout_ms below -1 is MC_ERR_INVALID_ARG (nothing submitted). Thread-safe.
 * Blocks up to timeout_ms plus the engine's timeout_ms. */
MC_API mc_status_t mc_transfer(mc_engine_t *engine, const mc_request_t *requests, size_t count,
                               int timeout_ms);

/* ======================================================================== notifications */

/* What mc_notify_recv says about a notification. */
typedef struct mc_notification {
  size_t size;              /* caller sets sizeof(mc_notification_t); the library fills what fits */
  char peer[256];           /* the sending engine's name, NUL-terminated */
  uint64_t incarnation;     /* the sender's incarnation */
  uint64_t length;          /* the message's length in bytes */
} mc_notification_t;

/* Takes the oldest queued notification (one an MC_NOTIFY request of a peer, or of this engine,
 * sent here), copies its message into buf[0..capacity) and fills *info (up to info->size bytes).
 * None queued: MC_ERR_NOT_FOUND. capacity below the message's length: MC_ERR_BUFFER_TOO_SMALL
 * with info->length set and the notification left queued (buf may be NULL when capacity is 0).
 * At most notify_queue notifications wait unread; a sender whose NOTIFY finds the queue full
 * gets MC_ERR_BUSY. buf and info are borrowed for the call. Thread-safe, never blocks. */
MC_API mc_status_t mc_notify_recv(mc_engine_t *engine, mc_notification_t *info, void *buf,
                                  size_t capacity);

/* Sets *fd to a file descriptor owned by the engine (the same one on every call; closed by
 * mc_engine_destroy: do not close it) that polls readable after a notification was queued, or
 * after a batch's submitted requests all ended, each time that happens. Reading 8 bytes drains
 * it (eventfd semantics; it is non-blocking). After a wake-up, call mc_notify_recv until
 * MC_ERR_NOT_FOUND and mc_batch_wait(b, 0) on the batches of interest. Thread-safe, never
 * blocks. MC_ERR_UNSUPPORTED where the system has no eventfd. */
MC_API mc_status_t mc_engine_event_fd(mc_engine_t *engine, int *fd);

/* ======================================================================== heap */

/* An offset allocator over [0, capacity): hands out aligned ranges that never overlap. Freed
 * neighbours merge at once. All functions are thread-safe and never block beyond a short lock.
 * Where an allocation lands may depend on the calling thread (large heaps are sharded:
 * docs/internals.md); what fits does not: NO_MEMORY means no free range holds the request. */
typedef struct mc_heap mc_heap_t;

typedef struct mc_heap_stats {
  size_t size;              /* caller sets sizeof(mc_heap_stats_t) */
  uint64_t capacity;
  uint64_t used;            /* bytes in live allocations, alignment padding they own included */
  uint64_t free;            /* capacity - used */
  uint64_t largest_free;    /* the largest free range */
  uint64_t allocations;     /* live allocations now */
} mc_heap_stats_t;

/* Creates a heap of capacity (> 0) bytes. *out is owned by the caller: mc_heap_destroy. */
MC_API mc_status_t mc_heap_create(uint64_t capacity, mc_heap_t **out);

/* Allocates size (> 0) bytes aligned to align (a power of two; 1 allowed) and sets *offset.
 * No room: MC_ERR_NO_MEMORY. */
MC_API mc_status_t mc_heap_alloc(mc_heap_t *heap, uint64_t size, uint64_t align, uint64_t *offset);

/* Frees the allocation that starts at offset. Not the start of a live allocation (double free
 * included): MC_ERR_NOT_FOUND and nothing changes. */
MC_API mc_status_t mc_heap_free(mc_heap_t *heap, uint64_t offset);

/* Fills *stats (up to stats->size bytes). */
MC_API mc_status_t mc_heap_stats(const mc_heap_t *heap, mc_heap_stats_t *stats);

/* Frees the heap (live allocations included). NULL is allowed. */
MC_API void mc_heap_destroy(mc_heap_t *heap);

/* ======================================================================== logging */

enum { MC_LOG_ERROR = 0, MC_LOG_WARN = 1, MC_LOG_INFO = 2, MC_LOG_DEBUG = 3 };

/* Receives every log line at or below the current level. Called from any mc thread, never while
 * an mc lock is held; message is valid during the call only. */
typedef void (*mc_log_fn)(int level, const char *message, void *user);

/* Sends log lines to fn (NULL: stderr). Process-wide; thread-safe. */
MC_API void mc_log_set_handler(mc_log_fn fn, void *user);

/* Sets the process-wide log level (MC_LOG_*; default MC_LOG_WARN). Thread-safe. An engine's
 * log_level key sets it too. */
MC_API void mc_log_set_level(int level);

#ifdef __cplusplus
}
#endif

#endif /* MC_H */
