// mc_bench - throughput and latency of mc READs and WRITEs between two processes.
//
//   mc_bench target [--listen HOST:PORT] [--size BYTES] [--timeout-ms MS]
//   mc_bench initiator --segment NAME --op read|write --block BYTES[,BYTES...] --batch N
//            --threads N --duration S [--transport NAME] [--listen HOST:PORT]
//            [--timeout-ms MS] [--alloc] [--reuse] [--one-block] [--transfer] [--verify] [--json] [--stats]
//
// Uses only the public header. Sizes take K/M/G suffixes (2^10, 2^20, 2^30); GB/s is 10^9
// bytes per second. Other programs (scripts/demo.sh, bench/tcp.sh) rely on the flags and on the
// target printing "segment: NAME" as its first and only stdout line.
#include <mc.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

const char kUsage[] =
    "usage:\n"
    "  mc_bench target [--listen HOST:PORT] [--size BYTES] [--timeout-ms MS] [--alloc]\n"
    "      Registers a buffer of --size bytes (default 256M), prints 'segment: NAME' as its\n"
    "      only stdout line and serves until SIGINT or SIGTERM. --listen defaults to\n"
    "      127.0.0.1:0 (a free port).\n"
    "  mc_bench initiator --segment NAME --op read|write --block BYTES[,BYTES...]\n"
    "      --batch N --threads N --duration SECONDS [--transport NAME] [--listen HOST:PORT]\n"
    "      [--timeout-ms MS] [--alloc] [--reuse] [--one-block] [--transfer] [--verify] [--json] [--stats]\n"
    "      Each thread submits batches of --batch requests of --block bytes to its own part of\n"
    "      the target's first buffer for --duration seconds (per block size) and prints one row\n"
    "      per block size: GB/s, requests/s, p50 and p99 batch latency in microseconds.\n"
    "      --transport  sets the engine key 'transports' (tcp, shm, local, ...; default auto)\n"
    "      --alloc      local buffers from mc_buffer_alloc (memfd; same-host peers map them);\n"
    "                   on the target, --alloc serves mc_buffer_alloc memory the same way\n"
    "      --reuse      every batch uses the same --batch blocks of the thread's part of the\n"
    "                   target's buffer (and the same local blocks), as ucx_perftest and a\n"
    "                   memcpy loop reuse one buffer: warm pages and caches, no walk through\n"
    "                   the whole target buffer\n"
    "      --one-block  every request of every batch uses the thread's first block on both\n"
    "                   sides, as ucx_perftest put_bw/get keep a window of operations on one\n"
    "                   buffer (a batch of N is N requests in flight on one block; implies\n"
    "                   --reuse; with --verify it needs --batch 1)\n"
    "      --transfer   each batch is one blocking mc_transfer call instead of\n"
    "                   mc_batch_reset + mc_batch_submit + mc_batch_wait\n"
    "      --verify     checks every byte: a WRITE is read back, a READ reads a pattern\n"
    "                   written first; extra transfers make the figures no throughput measure\n"
    "      --json       one JSON object per block size and line instead of the table\n"
    "      --stats      prints the engine's mc_engine_stats_json to stderr at the end (wait\n"
    "                   watch, crowding readings, transport counters of the run)\n"
    "      --file PATH  the target is a file segment instead of --segment: file://PATH, created\n"
    "                   or grown to --file-size BYTES (default 1G); requests use the page cache\n"
    "                   unless --direct (O_DIRECT where aligned, as every block of a Mapping is)\n"
    "      --random     each request at a scattered block of the thread's part (a permutation\n"
    "                   walk: slot (k * 48271 + 11) mod slots for the k-th request), not in order\n"
    "      --workers N, --queue-depth N   the engine's workers and file_queue_depth keys\n"
    "      --inflight N each thread keeps N batches submitted (default 1: submit, wait, submit):\n"
    "                   it waits for the oldest and resubmits it with the next blocks at once,\n"
    "                   so the engine never runs dry between batches (a streaming application);\n"
    "                   p50/p99 are then submit-to-end times, queueing behind the others included\n"
    "  mc_bench --help\n"
    "Sizes take K, M, G suffixes (2^10, 2^20, 2^30). GB/s means 10^9 bytes per second.\n";

[[noreturn]] void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("mc_bench: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::exit(1);
}

// Fails with the library's message for the call that just failed on this thread.
void check(mc_status_t s, const char *what) {
  if (s != MC_OK) die("%s: %s", what, mc_last_error());
}

void logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void logf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("mc_bench: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
}

// "64K" -> 65536. Suffixes K, M, G (either case, optionally followed by "B" or "iB").
bool parse_size(std::string_view text, uint64_t *out) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return false;
  uint32_t shift = 0;
  if (i < text.size()) {
    switch (text[i]) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      default: return false;
    }
    ++i;
    std::string_view rest = text.substr(i);
    if (!(rest.empty() || rest == "B" || rest == "iB")) return false;
  }
  if (shift != 0 && v > (UINT64_MAX >> shift)) return false;
  *out = v << shift;
  return true;
}

std::string format_size(uint64_t v) {
  const char *suffix[] = {"", "K", "M", "G"};
  int i = 0;
  while (i < 3 && v >= 1024 && v % 1024 == 0) {
    v /= 1024;
    ++i;
  }
  return std::to_string(v) + suffix[i];
}

uint64_t parse_u64(const char *flag, const char *text, uint64_t lo, uint64_t hi) {
  char *end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < lo || v > hi)
    die("%s: '%s' is not an integer in %" PRIu64 "..%" PRIu64, flag, text, lo, hi);
  return v;
}

// An anonymous mapping, touched so that page faults are not measured later.
struct Mapping {
  void *addr = nullptr;
  size_t length = 0;
  Mapping() = default;
  explicit Mapping(size_t len) : length(len) {
    if (len == 0) return;
    addr = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (addr == MAP_FAILED) die("mmap of %zu bytes: %s", len, std::strerror(errno));
    std::memset(addr, 0, len);
  }
  Mapping(const Mapping &) = delete;
  Mapping &operator=(const Mapping &) = delete;
  ~Mapping() {
    if (addr != nullptr) munmap(addr, length);
  }
  uint8_t *bytes() const { return static_cast<uint8_t *>(addr); }
};

// ------------------------------------------------------------------------ target

int run_target(int argc, char **argv) {
  const char *listen = "127.0.0.1:0";
  const char *timeout_ms = nullptr;
  uint64_t size = 256ull << 20;
  bool use_alloc = false;  // --alloc: mc_buffer_alloc memory (same-host peers map it)
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc) die("%s needs a value", argv[i]);
      return argv[++i];
    };
    if (a == "--listen") {
      listen = value();
    } else if (a == "--size") {
      const char *v = value();
      if (!parse_size(v, &size) || size == 0) die("--size: bad size '%s'", v);
    } else if (a == "--timeout-ms") {
      timeout_ms = value();
    } else if (a == "--alloc") {
      use_alloc = true;
    } else {
      die("target: unknown argument '%s' (see --help)", argv[i]);
    }
  }

  // SIGINT and SIGTERM are taken by sigwait below; blocked before the engine starts its threads
  // so that none of them receives the signal.
  // A shell that starts us in the background sets SIGINT to ignored; take both back.
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  Mapping buf(use_alloc ? 0 : size);
  mc_config_t *cfg = nullptr;
  check(mc_config_create(&cfg), "config");
  check(mc_config_set(cfg, "listen", listen), "--listen");
  if (timeout_ms != nullptr) check(mc_config_set(cfg, "timeout_ms", timeout_ms), "--timeout-ms");
  mc_engine_t *engine = nullptr;
  check(mc_engine_create(cfg, &engine), "engine create");
  mc_config_destroy(cfg);
  void *target_addr = buf.addr;
  if (use_alloc) {
    check(mc_buffer_alloc(engine, size, "cpu", &target_addr), "buffer alloc");
    std::memset(target_addr, 0, size);
  } else {
    check(mc_buffer_register(engine, buf.addr, buf.length, "cpu"), "buffer register");
  }

  std::printf("segment: %s\n", mc_engine_name(engine));
  std::fflush(stdout);
  logf("target %s serves %s at %p (mc %s); SIGINT or SIGTERM stops it", mc_engine_name(engine),
       format_size(size).c_str(), target_addr, mc_version_string());

  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  logf("signal %d, stopping", sig);
  mc_engine_destroy(engine);
  return 0;
}

// ------------------------------------------------------------------------ initiator

struct Options {
  std::string segment;
  mc_opcode_t op = MC_WRITE;
  bool op_set = false;
  std::vector<uint64_t> blocks;
  uint64_t batch = 0;
  uint64_t threads = 0;
  double duration = 0;
  const char *transport = nullptr;
  const char *listen = "127.0.0.1:0";
  const char *timeout_ms = nullptr;
  bool verify = false;
  bool json = false;
  bool stats = false;  // --stats: the engine's stats JSON on stderr at the end
  bool alloc = false;  // --alloc: local buffers from mc_buffer_alloc
  bool reuse = false;  // --reuse: the same batch of remote (and local) blocks every time
  bool one_block = false;  // --one-block: every request on the thread's first block, both sides
  bool transfer = false;  // --transfer: mc_transfer instead of the batch calls
  std::string file;       // --file PATH: a file segment
  uint64_t file_size = 1ull << 30;
  bool direct = false;    // --direct: O_DIRECT where aligned
  bool random = false;    // --random: scattered blocks
  const char *workers = nullptr, *queue_depth = nullptr;
  uint64_t inflight = 1;  // --inflight N: batches each thread keeps submitted
};

Options parse_initiator(int argc, char **argv) {
  Options o;
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc) die("%s needs a value", argv[i]);
      return argv[++i];
    };
    if (a == "--segment") {
      o.segment = value();
    } else if (a == "--op") {
      std::string_view v = value();
      if (v == "read") o.op = MC_READ;
      else if (v == "write") o.op = MC_WRITE;
      else die("--op: '%.*s' is neither read nor write", static_cast<int>(v.size()), v.data());
      o.op_set = true;
    } else if (a == "--block") {
      std::string_view v = value();
      while (true) {
        size_t comma = v.find(',');
        std::string_view item = v.substr(0, comma);
        uint64_t b = 0;
        if (!parse_size(item, &b) || b == 0)
          die("--block: bad size '%.*s'", static_cast<int>(item.size()), item.data());
        o.blocks.push_back(b);
        if (comma == std::string_view::npos) break;
        v = v.substr(comma + 1);
      }
    } else if (a == "--batch") {
      o.batch = parse_u64("--batch", value(), 1, 16777216);
    } else if (a == "--threads") {
      o.threads = parse_u64("--threads", value(), 1, 1024);
    } else if (a == "--duration") {
      const char *v = value();
      char *end = nullptr;
      o.duration = std::strtod(v, &end);
      if (end == v || *end != '\0' || !(o.duration > 0) || o.duration > 1e6)
        die("--duration: '%s' is not a positive number of seconds", v);
    } else if (a == "--transport") {
      o.transport = value();
    } else if (a == "--listen") {
      o.listen = value();
    } else if (a == "--timeout-ms") {
      o.timeout_ms = value();
    } else if (a == "--alloc") {
      o.alloc = true;
    } else if (a == "--reuse") {
      o.reuse = true;
    } else if (a == "--one-block") {
      o.one_block = true;
      o.reuse = true;
    } else if (a == "--transfer") {
      o.transfer = true;
    } else if (a == "--verify") {
      o.verify = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--stats") {
      o.stats = true;
    } else if (a == "--file") {
      o.file = value();
    } else if (a == "--file-size") {
      std::string_view v = value();
      if (!parse_size(v, &o.file_size) || o.file_size == 0)
        die("--file-size: bad size '%.*s'", static_cast<int>(v.size()), v.data());
    } else if (a == "--direct") {
      o.direct = true;
    } else if (a == "--random") {
      o.random = true;
    } else if (a == "--workers") {
      o.workers = value();
    } else if (a == "--queue-depth") {
      o.queue_depth = value();
    } else if (a == "--inflight") {
      o.inflight = parse_u64("--inflight", value(), 1, 64);
    } else {
      die("initiator: unknown argument '%s' (see --help)", argv[i]);
    }
  }
  if (!o.file.empty()) {
    if (!o.segment.empty()) die("initiator: --file and --segment exclude each other");
    if (o.file[0] != '/') die("--file: '%s' is not an absolute path", o.file.c_str());
    o.segment = "file://" + o.file + "?size=" + std::to_string(o.file_size) + (o.direct ? "" : "&direct=0");
  } else if (o.direct) {
    die("initiator: --direct needs --file");
  }
  if (o.segment.empty()) die("initiator: --segment (or --file) is required");
  if (!o.op_set) die("initiator: --op is required");
  if (o.blocks.empty()) die("initiator: --block is required");
  if (o.batch == 0) die("initiator: --batch is required");
  if (o.threads == 0) die("initiator: --threads is required");
  if (o.duration <= 0) die("initiator: --duration is required");
  if (o.inflight > 1 && (o.verify || o.transfer || o.one_block))
    die("initiator: --inflight goes with neither --verify, --transfer nor --one-block");
  return o;
}

// The verify pattern: 64-bit words of a splitmix64 stream seeded by (thread, iteration, remote
// offset), so that a byte landing in the wrong place, from the wrong iteration or thread, shows.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t pattern_seed(uint64_t thread, uint64_t iteration, uint64_t offset) {
  return mix(mix(mix(thread) ^ iteration) ^ offset);
}

void fill_pattern(uint8_t *p, uint64_t len, uint64_t seed) {
  uint64_t words = len / 8;
  for (uint64_t w = 0; w < words; ++w) {
    uint64_t v = mix(seed + w);
    std::memcpy(p + w * 8, &v, 8);
  }
  uint64_t v = mix(seed + words);
  std::memcpy(p + words * 8, &v, len - words * 8);
}

// Where a check failed, or "" when every byte matched.
std::string compare_pattern(const uint8_t *got, uint64_t len, uint64_t seed) {
  uint64_t words = (len + 7) / 8;
  for (uint64_t w = 0; w < words; ++w) {
    uint64_t v = mix(seed + w);
    uint8_t want[8];
    std::memcpy(want, &v, 8);
    uint64_t n = std::min<uint64_t>(8, len - w * 8);
    if (std::memcmp(got + w * 8, want, n) == 0) continue;
    for (uint64_t b = 0; b < n; ++b) {
      if (got[w * 8 + b] != want[b]) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "first bad byte at %" PRIu64 ": got 0x%02x, want 0x%02x",
                      w * 8 + b, got[w * 8 + b], want[b]);
        return msg;
      }
    }
  }
  return "";
}

struct ThreadResult {
  uint64_t requests = 0;
  uint64_t bytes = 0;
  std::vector<double> latencies_us;
  Clock::time_point end;
  std::string error;  // empty when every batch completed (and verified)
};

struct Run {
  const Options *opt = nullptr;
  mc_segment_t segment = 0;
  uint64_t remote_base = 0;
  uint64_t block = 0;
  uint64_t region = 0;    // bytes of the remote buffer each thread uses
  uint64_t stride = 0;    // distance between two threads' regions
  uint64_t slots = 0;     // blocks in a region
  uint8_t *local = nullptr;   // threads * batch * block, transfers
  uint8_t *spare = nullptr;   // the same again, for verify read-backs
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start;
  Clock::time_point deadline;
};

const char *op_name(mc_opcode_t op) { return op == MC_READ ? "read" : "write"; }

// Submits n requests and waits for them; on failure returns a message naming the failed request.
bool g_transfer = false;  // --transfer
mc_engine_t *g_engine = nullptr;

std::string submit_wait(mc_batch_t *batch, const mc_request_t *reqs, size_t n, int wait_ms,
                        const char *what) {
  if (g_transfer) {
    if (mc_transfer(g_engine, reqs, n, wait_ms) == MC_OK) return "";
    return std::string(what) + " transfer: " + mc_last_error();
  }
  if (mc_batch_reset(batch) != MC_OK) return std::string("batch reset: ") + mc_last_error();
  if (mc_batch_submit(batch, reqs, n) != MC_OK)
    return std::string(what) + " submit: " + mc_last_error();
  mc_status_t s = mc_batch_wait(batch, wait_ms);
  if (s == MC_OK) return "";
  std::string msg = std::string(what) + " wait: " + mc_last_error();
  if (s == MC_ERR_TIMEOUT) {
    msg += " (requests should end within the engine's timeout_ms; the bench gave up after " +
           std::to_string(wait_ms) + " ms)";
    return msg;
  }
  for (size_t i = 0; i < n; ++i) {
    mc_request_status_t st{};
    if (mc_batch_status(batch, i, &st) == MC_OK && st.state == MC_REQUEST_FAILED) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "; request %zu (remote 0x%" PRIx64 ", %" PRIu64
                    " bytes) failed: %s, %" PRIu64 " bytes moved", i, reqs[i].remote,
                    reqs[i].length, mc_status_str(st.error), st.bytes);
      msg += buf;
      break;
    }
  }
  return msg;
}

void worker(Run *run, uint64_t t, mc_engine_t *engine, int wait_ms, ThreadResult *res) {
  const Options &o = *run->opt;
  const uint64_t block = run->block;
  const uint64_t batch_n = o.batch;
  uint8_t *local = run->local + t * batch_n * block;
  uint8_t *spare = run->spare != nullptr ? run->spare + t * batch_n * block : nullptr;
  const uint64_t region = run->remote_base + t * run->stride;

  mc_batch_t *batch = nullptr;
  if (mc_batch_create(engine, batch_n, &batch) != MC_OK) {
    res->error = std::string("batch create: ") + mc_last_error();
    run->stop = true;
    run->ready.fetch_add(1);
    run->ready.notify_all();
    return;
  }
  std::vector<mc_request_t> reqs(batch_n), aux(batch_n);
  std::vector<uint64_t> seeds(batch_n);
  uint64_t next_slot = 0;
  res->latencies_us.reserve(1 << 16);

  auto fill_requests = [&](uint64_t iteration) {
    for (uint64_t i = 0; i < batch_n; ++i) {
      const uint64_t lane = o.one_block ? 0 : i;
      uint64_t slot = ((o.reuse ? 0 : next_slot) + lane) % run->slots;
      if (o.random) slot = ((iteration * batch_n + i) * 48271 + 11) % run->slots;
      uint64_t remote = region + slot * block;
      reqs[i] = mc_request_t{static_cast<uint32_t>(o.op), 0, local + lane * block, run->segment,
                             remote, block};
      seeds[i] = pattern_seed(t, iteration, remote - run->remote_base);
    }
    next_slot = (next_slot + batch_n) % run->slots;
  };

  // One verified iteration: the timed transfer plus the untimed preparation and check.
  auto verified = [&](uint64_t iteration, double *lat_us) -> std::string {
    fill_requests(iteration);
    if (o.op == MC_WRITE) {
      for (uint64_t i = 0; i < batch_n; ++i) fill_pattern(local + i * block, block, seeds[i]);
    } else {
      // Put the pattern in the remote region from spare[], and scribble over local[] so that a
      // READ that moves nothing cannot pass.
      for (uint64_t i = 0; i < batch_n; ++i) {
        fill_pattern(spare + i * block, block, seeds[i]);
        std::memset(local + i * block, 0xa5, block);
        aux[i] = reqs[i];
        aux[i].opcode = MC_WRITE;
        aux[i].local = spare + i * block;
      }
      std::string e = submit_wait(batch, aux.data(), batch_n, wait_ms, "verify write");
      if (!e.empty()) return e;
    }
    auto t0 = Clock::now();
    std::string e = submit_wait(batch, reqs.data(), batch_n, wait_ms, op_name(o.op));
    *lat_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (!e.empty()) return e;
    const uint8_t *got = local;
    if (o.op == MC_WRITE) {
      for (uint64_t i = 0; i < batch_n; ++i) {
        std::memset(spare + i * block, 0xa5, block);
        aux[i] = reqs[i];
        aux[i].opcode = MC_READ;
        aux[i].local = spare + i * block;
      }
      e = submit_wait(batch, aux.data(), batch_n, wait_ms, "verify read-back");
      if (!e.empty()) return e;
      got = spare;
    }
    for (uint64_t i = 0; i < batch_n; ++i) {
      e = compare_pattern(got + i * block, block, seeds[i]);
      if (!e.empty()) {
        char buf[256];
        std::snprintf(buf, sizeof buf,
                      "verify %s: data mismatch in thread %" PRIu64 ", iteration %" PRIu64
                      ", request %" PRIu64 " (remote offset %" PRIu64 ", %" PRIu64 " bytes): ",
                      op_name(o.op), t, iteration, i, reqs[i].remote - run->remote_base, block);
        return buf + e;
      }
    }
    return "";
  };

  // One untimed warm-up batch (connections, first touches), then wait for the common start.
  std::string err;
  if (o.verify) {
    double ignored = 0;
    err = verified(0, &ignored);
  } else {
    fill_requests(0);
    err = submit_wait(batch, reqs.data(), batch_n, wait_ms, op_name(o.op));
  }
  if (!err.empty()) run->stop = true;
  run->ready.fetch_add(1);
  run->ready.notify_all();
  run->go.wait(false);  // blocks, so that waiting threads leave the CPUs to the warm-ups

  uint64_t iteration = 1;
  // One clock reading per batch on the timed path: a batch's end is the deadline check too.
  auto now = Clock::now();
  while (err.empty() && !run->stop.load(std::memory_order_relaxed) && now < run->deadline) {
    double lat = 0;
    if (o.verify) {
      err = verified(iteration, &lat);
      now = Clock::now();
    } else {
      fill_requests(iteration);
      auto t0 = Clock::now();
      err = submit_wait(batch, reqs.data(), batch_n, wait_ms, op_name(o.op));
      now = Clock::now();
      lat = std::chrono::duration<double, std::micro>(now - t0).count();
    }
    if (!err.empty()) break;
    res->latencies_us.push_back(lat);
    res->requests += batch_n;
    res->bytes += batch_n * block;
    ++iteration;
  }
  res->end = Clock::now();
  if (!err.empty()) {
    res->error = "thread " + std::to_string(t) + ": " + err;
    run->stop = true;
  }
  // A batch with pending requests (a timed-out wait) cannot be destroyed; the engine's destroy
  // fails those requests, and the process exits right after.
  if (mc_batch_destroy(batch) != MC_OK && res->error.empty())
    res->error = std::string("batch destroy: ") + mc_last_error();
}

// --inflight N: the thread keeps N batches submitted, each with its own local blocks; it waits
// for the oldest, counts it and resubmits it with the next blocks at once (after one untimed
// round of all N). Requests ending after the deadline are waited for but not counted.
void worker_pipelined(Run *run, uint64_t t, mc_engine_t *engine, int wait_ms, ThreadResult *res) {
  const Options &o = *run->opt;
  const uint64_t block = run->block, batch_n = o.batch, depth = o.inflight;
  uint8_t *local = run->local + t * depth * batch_n * block;
  const uint64_t region = run->remote_base + t * run->stride;
  std::vector<mc_batch_t *> batches(depth, nullptr);
  std::vector<std::vector<mc_request_t>> reqs(depth, std::vector<mc_request_t>(batch_n));
  std::vector<Clock::time_point> t0(depth);
  uint64_t iteration = 0, next_slot = 0;
  std::string err;
  auto submit = [&](uint64_t k) {
    for (uint64_t i = 0; i < batch_n; ++i) {
      uint64_t slot = o.random ? ((iteration * batch_n + i) * 48271 + 11) % run->slots
                               : (next_slot + i) % run->slots;
      reqs[k][i] = mc_request_t{static_cast<uint32_t>(o.op), 0, local + (k * batch_n + i) * block,
                                run->segment, region + slot * block, block};
    }
    next_slot = (next_slot + batch_n) % run->slots;
    ++iteration;
    t0[k] = Clock::now();
    if (mc_batch_reset(batches[k]) != MC_OK || mc_batch_submit(batches[k], reqs[k].data(), batch_n) != MC_OK)
      err = std::string("submit: ") + mc_last_error();
  };
  auto wait = [&](uint64_t k) {
    if (err.empty() && mc_batch_wait(batches[k], wait_ms) != MC_OK)
      err = std::string(op_name(o.op)) + " wait: " + mc_last_error();
  };
  for (auto &b : batches)
    if (err.empty() && mc_batch_create(engine, batch_n, &b) != MC_OK)
      err = std::string("batch create: ") + mc_last_error();
  for (uint64_t k = 0; k < depth && err.empty(); ++k) submit(k);  // the untimed round
  for (uint64_t k = 0; k < depth; ++k) wait(k);
  if (!err.empty()) run->stop = true;
  run->ready.fetch_add(1);
  run->ready.notify_all();
  run->go.wait(false);
  for (uint64_t k = 0; k < depth && err.empty() && !run->stop.load(); ++k) submit(k);
  auto now = Clock::now();
  for (uint64_t k = 0; err.empty() && !run->stop.load(std::memory_order_relaxed); k = (k + 1) % depth) {
    wait(k);
    now = Clock::now();
    if (!err.empty()) break;
    res->latencies_us.push_back(std::chrono::duration<double, std::micro>(now - t0[k]).count());
    res->requests += batch_n;
    res->bytes += batch_n * block;
    if (now >= run->deadline) break;
    submit(k);
  }
  res->end = now;
  for (uint64_t k = 0; k < depth; ++k) wait(k);  // the rest, not counted
  if (!err.empty()) {
    res->error = "thread " + std::to_string(t) + ": " + err;
    run->stop = true;
  }
  for (auto b : batches)
    if (b && mc_batch_destroy(b) != MC_OK && res->error.empty())
      res->error = std::string("batch destroy: ") + mc_last_error();
}

double percentile(std::vector<double> &v, double p) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

// --stats: the engine's own account of the run (mc_engine_stats_json) on stderr.
void print_stats(mc_engine_t *engine) {
  size_t need = 0;
  if (mc_engine_stats_json(engine, nullptr, 0, &need) != MC_ERR_BUFFER_TOO_SMALL) return;
  std::string s(need + 4096, '\0');  // room for counters that grow in between
  if (mc_engine_stats_json(engine, s.data(), s.size(), &need) != MC_OK) return;
  std::fprintf(stderr, "stats: %s\n", s.c_str());
}

std::string json_escape(const char *s) {
  std::string out;
  for (; *s != '\0'; ++s) {
    unsigned char c = static_cast<unsigned char>(*s);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

int run_initiator(int argc, char **argv) {
  Options o = parse_initiator(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);

  mc_config_t *cfg = nullptr;
  check(mc_config_create(&cfg), "config");
  check(mc_config_set(cfg, "listen", o.listen), "--listen");
  if (o.transport != nullptr) check(mc_config_set(cfg, "transports", o.transport), "--transport");
  if (o.timeout_ms != nullptr) check(mc_config_set(cfg, "timeout_ms", o.timeout_ms), "--timeout-ms");
  if (o.workers != nullptr) check(mc_config_set(cfg, "workers", o.workers), "--workers");
  if (o.queue_depth != nullptr) check(mc_config_set(cfg, "file_queue_depth", o.queue_depth), "--queue-depth");
  mc_engine_t *engine = nullptr;
  check(mc_engine_create(cfg, &engine), "engine create");
  mc_config_destroy(cfg);
  g_transfer = o.transfer;
  g_engine = engine;

  mc_segment_t seg = 0;
  check(mc_segment_open(engine, o.segment.c_str(), &seg), "segment open");
  size_t count = 0;
  mc_status_t s = mc_segment_buffers(engine, seg, nullptr, 0, &count);
  if (s != MC_OK && s != MC_ERR_BUFFER_TOO_SMALL) check(s, "segment buffers");
  if (count == 0) die("segment %s has no registered buffer", o.segment.c_str());
  std::vector<mc_buffer_info_t> bufs(count);
  check(mc_segment_buffers(engine, seg, bufs.data(), bufs.size(), &count), "segment buffers");
  const mc_buffer_info_t remote = bufs[0];
  mc_segment_info_t info{};
  info.size = sizeof info;
  check(mc_segment_query(engine, seg, &info), "segment query");
  char transport[sizeof info.transport + 1] = {};
  std::memcpy(transport, info.transport, sizeof info.transport);
  if (transport[0] == '\0')
    std::snprintf(transport, sizeof transport, "%s", o.transport ? o.transport : "auto");

  // Waits are bounded so that a library that breaks its promise (every request ends within
  // timeout_ms of no progress) makes the bench fail instead of hang.
  long engine_timeout = o.timeout_ms ? std::strtol(o.timeout_ms, nullptr, 10) : 0;
  if (engine_timeout <= 0) {
    const char *env = std::getenv("MC_TIMEOUT_MS");
    engine_timeout = env ? std::strtol(env, nullptr, 10) : 5000;
    if (engine_timeout <= 0) engine_timeout = 5000;
  }
  const int wait_ms = static_cast<int>(std::min<long>(engine_timeout * 4 + 30000, 1 << 30));

  logf("initiator %s -> %s (%s): buffer 0x%" PRIx64 ", %s; %s, batch %" PRIu64
       ", threads %" PRIu64 ", %.3g s per block size%s",
       mc_engine_name(engine), o.segment.c_str(), transport, remote.addr,
       format_size(remote.length).c_str(), op_name(o.op), o.batch, o.threads, o.duration,
       o.verify ? ", verifying" : "");

  for (uint64_t block : o.blocks) {
    if (block > remote.length)
      die("block %s is larger than the target's buffer of %s", format_size(block).c_str(),
          format_size(remote.length).c_str());
    if (o.verify && o.one_block && o.batch != 1)
      die("--one-block with --verify needs --batch 1: requests in flight on one block cannot "
          "each be checked");
    if (o.verify && remote.length / o.threads / block < o.batch)
      die("--verify needs batch x block x threads (%" PRIu64 " x %s x %" PRIu64
          ") to fit the target's buffer of %s, so that no two requests overlap",
          o.batch, format_size(block).c_str(), o.threads, format_size(remote.length).c_str());
  }

  if (!o.json) {
    std::printf("%-9s %-5s %8s %6s %7s %9s %12s %10s %10s\n", "transport", "op", "block",
                "batch", "threads", "GB/s", "requests/s", "p50 us", "p99 us");
    std::fflush(stdout);
  }

  int rc = 0;
  for (uint64_t block : o.blocks) {
    Run run;
    run.opt = &o;
    run.segment = seg;
    run.remote_base = remote.addr;
    run.block = block;
    // Each thread gets its own part of the remote buffer and cycles through it. When the parts
    // would hold no block, the threads share the whole buffer (only without --verify).
    run.stride = remote.length / o.threads / block * block;
    // (Checked above: with --verify every thread's part holds at least a batch of blocks.)
    if (run.stride == 0) {
      run.region = remote.length / block * block;
    } else {
      run.region = run.stride;
    }
    run.slots = run.region / block;

    const uint64_t per_thread = o.batch * block * o.inflight;
    if (per_thread / block / o.inflight != o.batch || per_thread * o.threads / o.threads != per_thread)
      die("batch x block x threads overflows");
    Mapping local(o.alloc ? 0 : per_thread * o.threads);
    Mapping check_buf(o.verify && !o.alloc ? per_thread * o.threads : 0);
    void *local_addr = local.addr, *check_addr = check_buf.addr;
    if (o.alloc) {
      check(mc_buffer_alloc(engine, per_thread * o.threads, "cpu", &local_addr), "local buffer alloc");
      std::memset(local_addr, 0, per_thread * o.threads);
      if (o.verify) {
        check(mc_buffer_alloc(engine, per_thread * o.threads, "cpu", &check_addr), "local buffer alloc");
        std::memset(check_addr, 0, per_thread * o.threads);
      }
    } else {
      check(mc_buffer_register(engine, local.addr, local.length, "cpu"), "local buffer register");
      if (o.verify)
        check(mc_buffer_register(engine, check_buf.addr, check_buf.length, "cpu"),
              "local buffer register");
    }
    run.local = static_cast<uint8_t *>(local_addr);
    run.spare = o.verify ? static_cast<uint8_t *>(check_addr) : nullptr;

    std::vector<ThreadResult> results(o.threads);
    std::vector<std::thread> threads;
    threads.reserve(o.threads);
    for (uint64_t t = 0; t < o.threads; ++t)
      threads.emplace_back(o.inflight > 1 ? worker_pipelined : worker, &run, t, engine, wait_ms, &results[t]);
    for (uint64_t n = run.ready.load(); n < o.threads; n = run.ready.load()) run.ready.wait(n);
    run.start = Clock::now();
    run.deadline = run.start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(o.duration));
    run.go = true;
    run.go.notify_all();
    for (auto &th : threads) th.join();

    uint64_t requests = 0, bytes = 0;
    Clock::time_point end = run.start;
    std::vector<double> lat;
    bool failed = false;
    for (auto &r : results) {
      if (!r.error.empty()) {
        std::fprintf(stderr, "mc_bench: %s\n", r.error.c_str());
        failed = true;
      }
      requests += r.requests;
      bytes += r.bytes;
      end = std::max(end, r.end);
      lat.insert(lat.end(), r.latencies_us.begin(), r.latencies_us.end());
    }
    if (failed) {
      // Pending requests (a timed-out wait) keep their buffers busy: the engine's destroy ends
      // them before the mappings go.
      mc_engine_destroy(engine);
      return 1;
    }
    double seconds = std::chrono::duration<double>(end - run.start).count();
    double gbps = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0;
    double rps = seconds > 0 ? static_cast<double>(requests) / seconds : 0;
    double p50 = percentile(lat, 0.50), p99 = percentile(lat, 0.99);
    if (o.json) {
      std::printf("{\"transport\":\"%s\",\"op\":\"%s\",\"block\":%" PRIu64 ",\"batch\":%" PRIu64
                  ",\"threads\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"seconds\":%.6f,\"gbps\":%.4f"
                  ",\"p50_us\":%.2f,\"p99_us\":%.2f,\"requests\":%" PRIu64
                  ",\"inflight\":%" PRIu64 ",\"verified\":%s}\n",
                  json_escape(transport).c_str(), op_name(o.op), block, o.batch, o.threads,
                  bytes, seconds, gbps, p50, p99, requests, o.inflight, o.verify ? "true" : "false");
    } else {
      std::printf("%-9s %-5s %8s %6" PRIu64 " %7" PRIu64 " %9.3f %12.1f %10.1f %10.1f\n",
                  transport, op_name(o.op), format_size(block).c_str(), o.batch, o.threads, gbps,
                  rps, p50, p99);
    }
    std::fflush(stdout);
    if (o.verify)
      logf("verified %" PRIu64 " %s requests of %s: every byte matched", requests, op_name(o.op),
           format_size(block).c_str());

    if (o.alloc) {
      check(mc_buffer_free(engine, local_addr), "local buffer free");
      if (o.verify) check(mc_buffer_free(engine, check_addr), "local buffer free");
    } else {
      check(mc_buffer_unregister(engine, local.addr), "local buffer unregister");
      if (o.verify) check(mc_buffer_unregister(engine, check_buf.addr), "local buffer unregister");
    }
  }

  if (o.stats) print_stats(engine);
  check(mc_segment_close(engine, seg), "segment close");
  mc_engine_destroy(engine);
  return rc;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 1;
  }
  std::string_view mode = argv[1];
  if (mode == "--help" || mode == "-h" || mode == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  for (int i = 2; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  if (mode == "target") return run_target(argc, argv);
  if (mode == "initiator") return run_initiator(argc, argv);
  die("unknown mode '%s': expected target or initiator (see --help)", argv[1]);
}
