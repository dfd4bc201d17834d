// The file transport's plugin table: one instance per engine, its rings started with the first
// file segment, paths that are open files. Only include/mc_transport_plugin.h and this folder.
#include "transport/file/file_transport.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "transport/file/file_ring.h"
#include "transport/file/file_seg.h"

namespace mc::file {

namespace {

constexpr unsigned kDefaultDepth = 64;

struct Instance {
  RingEnv env;
  FixedTable fixed;
  uint32_t workers = 4, depth = kDefaultDepth;
  std::mutex mu;  // guards rings (written once, before started is set), segs and stopped
  std::vector<std::unique_ptr<Ring>> rings;
  std::atomic<bool> started{false};
  bool stopped = false;
  std::set<FileSeg *> segs;  // open segments (paths): freed by disconnect, or by destroy
  std::atomic<uint64_t> rr{0};
  std::once_flag gds_once;  // cuFile looked for (start_rings)
};

char *dup(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

int64_t int_key(const RingEnv &e, const char *key, int64_t def) {
  char buf[32];
  if (e.ops->config(e.host, key, buf, sizeof buf) < 0) return def;
  char *end = nullptr;
  long long v = std::strtoll(buf, &end, 10);
  return end && *end == 0 && v > 0 ? v : def;
}

int valid_depth(const char *v) {
  char *end = nullptr;
  long long d = std::strtoll(v, &end, 10);
  return *v && end && *end == 0 && d >= 1 && d <= 4096;
}

int valid_gds(const char *v) {
  GdsMode m;
  return parse_gds_mode(v, &m);
}

const mc_tp_config_key_t kKeys[] = {
    {"queue_depth", "an integer 1..4096", "requests each file worker's io_uring keeps in flight (64)",
     valid_depth},
    {"gds", "auto, off or on",
     "cuFile (GPUDirect Storage) for GPU memory: auto uses it where libcufile is found, on requires it "
     "(auto)",
     valid_gds},
};

void free_string(char *s) { std::free(s); }

// Text for a JSON string: quotes and backslashes become ', control characters spaces.
std::string json_text(const std::string &s) {
  std::string out;
  for (char c : s) out += (c == '"' || c == '\\') ? '\'' : (static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  return out;
}

mc_status_t create(mc_tp_host_t *host, const mc_tp_host_ops_t *ops, mc_tp_transport_t **out, char **why) {
  auto *in = new Instance;
  in->env.host = host;
  in->env.ops = ops;
  in->env.fixed = &in->fixed;
  in->env.timeout_ms = static_cast<uint32_t>(int_key(in->env, "timeout_ms", 5000));
  in->workers = static_cast<uint32_t>(int_key(in->env, "workers", 4));
  in->depth = static_cast<uint32_t>(int_key(in->env, "queue_depth", kDefaultDepth));
  if (const char *v = std::getenv("MC_FILE_TEST_STALL"); v && *v) {  // tests: see RingEnv
    in->env.stall_at = std::strtoll(v, nullptr, 10);
    in->env.log(MC_TP_LOG_WARN, std::string("MC_FILE_TEST_STALL=") + v + ": slices covering it stall");
  }
  char mode[16];
  if (in->env.ops->config(in->env.host, "gds", mode, sizeof mode) >= 0)
    parse_gds_mode(mode, &in->env.gds.mode);
  // "on": cuFile is looked for (and its driver opened) now, so that engine creation fails
  // without it; else with the first file segment.
  std::string reason;
  if (in->env.gds.mode == GdsMode::kOn && !in->env.gds.setup(in->env.logger(), &reason)) {
    *why = dup(reason);
    delete in;
    return MC_ERR_UNSUPPORTED;
  }
  *out = in;
  return MC_OK;
}

void destroy(mc_tp_transport_t *t) {
  auto *in = static_cast<Instance *>(t);
  std::vector<std::unique_ptr<Ring>> rings;
  {
    std::lock_guard<std::mutex> lk(in->mu);
    in->stopped = true;
    rings.swap(in->rings);
  }
  for (auto &r : rings) r->stop();  // every queued and in-flight slice reported
  for (FileSeg *f : in->segs) delete f;
  delete in;
}

// The rings, started with the first segment: an engine that never opens a file has no thread.
bool start_rings(Instance &in, std::string *why) {
  if (in.started.load(std::memory_order_acquire)) return true;
  // cuFile is looked for once, before any ring runs, outside mu (setup logs). auto and off
  // never fail (absent is a state, in the stats); on did its setup in create.
  if (in.env.gds.mode != GdsMode::kOn)
    std::call_once(in.gds_once, [&] {
      std::string ignored;
      in.env.gds.setup(in.env.logger(), &ignored);
    });
  std::lock_guard<std::mutex> lk(in.mu);
  if (in.started.load()) return true;
  for (uint32_t i = 0; i < in.workers; i++) {
    auto r = std::make_unique<Ring>(in.env, in.depth, i);
    if (!r->start(why)) return false;
    in.rings.push_back(std::move(r));
  }
  in.started.store(true, std::memory_order_release);
  return true;
}

mc_status_t open_segment(mc_tp_transport_t *t, const char *uri, mc_tp_segment_t *info, mc_tp_path_t **out,
                         char **why) {
  auto *in = static_cast<Instance *>(t);
  std::unique_ptr<FileSeg> f;
  std::string reason;
  mc_status_t st = open_file_segment(uri, &f, &reason);
  if (st == MC_OK && !start_rings(*in, &reason)) {
    reason = std::string(uri) + ": io_uring is not available here: " + reason;
    st = MC_ERR_UNSUPPORTED;
  }
  if (st != MC_OK) {
    *why = dup(reason);
    return st;
  }
  info->access = MC_ACCESS_READ | (f->writable ? MC_ACCESS_WRITE : 0);
  info->length = f->size;
  std::snprintf(info->location, sizeof info->location, "file");
  std::lock_guard<std::mutex> lk(in->mu);
  in->segs.insert(f.get());
  *out = f.release();
  return MC_OK;
}

// Spreads a call's slices over the rings: contiguous shares for a large call (each ring keeps
// its own queue depth busy), one ring in turn for a small one.
void submit(mc_tp_transport_t *t, mc_tp_path_t *p, const mc_tp_slice_t *s, size_t n) {
  auto *in = static_cast<Instance *>(t);
  auto *f = static_cast<FileSeg *>(p);
  f->active.fetch_add(static_cast<int64_t>(n), std::memory_order_acq_rel);
  uint32_t gen = f->gen.load(std::memory_order_acquire);
  size_t rings = in->rings.size();
  if (rings == 0) {  // the instance is being destroyed: nothing runs any more
    for (size_t i = 0; i < n; i++) {
      f->one_done();
      in->env.ops->complete(in->env.host, &s[i], MC_ERR_PEER_DOWN);
    }
    return;
  }
  size_t shares = n >= rings * 8 ? rings : 1;
  size_t first = in->rr.fetch_add(1, std::memory_order_relaxed);
  std::vector<Op> ops;
  for (size_t k = 0, at = 0; k < shares; k++) {
    size_t m = n / shares + (k < n % shares ? 1 : 0);
    ops.clear();
    for (size_t i = at; i < at + m; i++) {
      Op op;
      op.s = s[i];
      op.f = f;
      op.gen = gen;
      ops.push_back(op);
    }
    at += m;
    in->rings[(first + k) % rings]->push(ops.data(), ops.size());
  }
}

void fail_path(mc_tp_transport_t *t, mc_tp_path_t *p, mc_status_t status, const char *why) {
  (void)t;
  (void)why;
  auto *f = static_cast<FileSeg *>(p);
  f->fail_status.store(status);
  f->gen.fetch_add(1, std::memory_order_acq_rel);  // the rings end older slices with status
}

// The last handle on the segment closed: what was submitted runs to its end (mc_segment_close),
// then the file is closed.
void disconnect(mc_tp_transport_t *t, mc_tp_path_t *p) {
  auto *in = static_cast<Instance *>(t);
  auto *f = static_cast<FileSeg *>(p);
  {
    std::unique_lock<std::mutex> lk(f->done_mu);
    f->done_cv.wait(lk, [&] { return f->active.load() == 0; });
  }
  std::lock_guard<std::mutex> lk(in->mu);
  in->segs.erase(f);
  delete f;
}

// Host memory becomes a fixed-buffer candidate (registered with a ring at its first use there).
mc_status_t on_register(mc_tp_transport_t *t, const mc_tp_region_t *r) {
  if (std::strncmp(r->location, "cpu", 3) == 0) static_cast<Instance *>(t)->fixed.add(r->addr, r->length);
  return MC_OK;
}

void on_unregister(mc_tp_transport_t *t, const mc_tp_region_t *r) {
  static_cast<Instance *>(t)->fixed.remove(r->addr);
}

mc_status_t connect(mc_tp_transport_t *, const mc_tp_peer_t *, mc_tp_path_t **out) {
  *out = nullptr;  // reaches no engine: only the segments it opens itself
  return MC_OK;
}

int accepts(mc_tp_transport_t *, const char *local, const char *remote) {
  return std::strcmp(remote, "file") == 0 &&
         (std::strncmp(local, "cpu", 3) == 0 || std::strncmp(local, "cuda", 4) == 0);
}

char *stats_json(mc_tp_transport_t *t) {
  auto *in = static_cast<Instance *>(t);
  RingEnv &e = in->env;
  std::string err;
  {
    std::lock_guard<std::mutex> lk(e.err_mu);
    err = json_text(e.last_error);
  }
  size_t segs;
  {
    std::lock_guard<std::mutex> lk(in->mu);
    segs = in->segs.size();
  }
  std::string j = "{\"segments_open\":" + std::to_string(segs) +
                  ",\"rings\":" + std::to_string(in->started.load() ? in->workers : 0) +
                  ",\"queue_depth\":" + std::to_string(in->depth) +
                  ",\"bytes_read\":" + std::to_string(e.bytes_read.load()) +
                  ",\"bytes_written\":" + std::to_string(e.bytes_written.load()) +
                  ",\"slices_completed\":" + std::to_string(e.slices_ok.load()) +
                  ",\"slices_failed\":" + std::to_string(e.slices_failed.load()) +
                  ",\"direct_ops\":" + std::to_string(e.direct_ops.load()) +
                  ",\"buffered_ops\":" + std::to_string(e.buffered_ops.load()) +
                  ",\"fixed_buffer_ops\":" + std::to_string(e.fixed_ops.load()) +
                  ",\"staged_ops\":" + std::to_string(e.staged_ops.load()) + ",\"cufile\":\"" +
                  json_text(e.gds.state()) + "\"" + ",\"cufile_ops\":" + std::to_string(e.gds.ops.load()) +
                  ",\"cufile_direct_ops\":" + std::to_string(e.gds.direct_ops.load()) +
                  ",\"cufile_bytes_read\":" + std::to_string(e.gds.bytes_read.load()) +
                  ",\"cufile_bytes_written\":" + std::to_string(e.gds.bytes_written.load()) +
                  ",\"cufile_fallbacks\":" + std::to_string(e.gds.fallbacks.load()) +
                  ",\"cufile_last_error\":\"" + json_text(e.gds.last_error()) + "\"" + ",\"last_error\":\"" +
                  err + "\"}";
  return dup(j);
}

mc_tp_ops_t make_ops() {
  mc_tp_ops_t o{};
  o.version = MC_TRANSPORT_PLUGIN_VERSION;
  o.size = sizeof(mc_tp_ops_t);
  o.name = "file";
  o.preference = 50;  // never competes: it reaches no engine
  o.keys = kKeys;
  o.key_count = sizeof kKeys / sizeof kKeys[0];
  o.free_string = free_string;
  o.create = create;
  o.destroy = destroy;
  o.accepts = accepts;
  o.connect = connect;
  o.disconnect = disconnect;
  o.submit = submit;
  o.fail_path = fail_path;
  o.stats_json = stats_json;
  o.on_register = on_register;
  o.on_unregister = on_unregister;
  o.scheme = "file";
  o.open_segment = open_segment;
  return o;
}

}  // namespace

mc_status_t file_transport_init(const mc_tp_host_ops_t *host_ops, const mc_tp_ops_t **ops, const char **why) {
  (void)host_ops;
  (void)why;
  static const mc_tp_ops_t table = make_ops();
  *ops = &table;
  return MC_OK;
}

}  // namespace mc::file
