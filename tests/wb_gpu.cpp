// GPU memory and the nvlink transport, across processes: registration and location checks,
// GPU->GPU over CUDA IPC (cudaMalloc and VMM memory) in both directions, READ and WRITE from 1 B
// to 1 GiB, range checks, host<->GPU over TCP through staging (also with a peer that has no
// CUDA), a peer killed and restarted (its mappings dropped, no stale data); the nvlink socket's
// admission (auth_token: none, wrong, matching, both directions; no handle before it) and
// per-buffer access (read-only, write-only, none) over nvlink; GPU memory over RDMA through
// dma-buf on the simulated NIC (GPU<->host both ways, access and bounds); GPU memory to and from a
// file segment through the staging pool (test_file_gpu, file_gds=off) and through cuFile
// (test_file_gds, the real libcufile where it loads; test_file_gds_faults: its failures against
// tests/fake_cufile, run by wb_file_gds_fake); transfers ordered on a
// CUDA stream (mc_batch_submit_on_stream) over nvlink and over tcp staging, cancel and destroy
// while the stream holds them. The "kernels" are cuMemsetD32Async and cuMemcpyDtoHAsync (no
// PTX): they are stream work like any kernel.
//
// White-box only in that it allocates GPU memory through mc's own driver loader (no nvcc, no
// CUDA headers). Without a CUDA driver or GPU it prints why and passes (CI).
//
// The same binary is its own peer: `wb_gpu --serve DEV KIND SIZE SEED [LISTEN]` allocates SIZE
// bytes (KIND: malloc, vmm, host), fills them with SEED's pattern, registers them and prints
// "READY NAME ADDR"; then it answers lines on stdin: "CHECK SEED OFF LEN", "FILL SEED OFF LEN",
// "ACCESS BITS" (mc_buffer_set_access), "STATS", "QUIT". MC_AUTH_TOKEN in its environment sets
// its auth_token.
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

// Before cmocka.h, which defines macros (skip, fail) that clash with these headers.
#include "proto/unix_msg.h"
#include "transport/nvlink/nvlink_transport.h"

// cmocka.h declares a volatile-qualified parameter, deprecated in C++20 (g++ 13 warns).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wvolatile"
#endif
extern "C" {
#include <cmocka.h>
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <mc.h>

#include "gpu/cuda_loader.h"

using namespace mc::cuda;

namespace {

// MC_TEST_SLACK (default 1): the factor tests/testutil.h's tu_slack() applies to every time
// limit (this white-box program does not link testutil). Wait loops run up to slack() times longer.
int slack() {
  const char *v = std::getenv("MC_TEST_SLACK");
  int n = v && *v ? std::atoi(v) : 1;
  return n > 0 ? n : 1;
}

const Api *A = nullptr;
int g_ngpu = 0;

// The pattern: 8 bytes of a hash of (offset / 8, seed) per aligned 8-byte word.
uint64_t word(uint64_t seed, uint64_t w) {
  uint64_t x = w * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}
uint8_t pat(uint64_t seed, uint64_t off) { return static_cast<uint8_t>(word(seed, off >> 3) >> (8 * (off & 7))); }
void fill_host(uint8_t *p, uint64_t len, uint64_t seed, uint64_t base_off) {
  uint64_t i = 0;
  for (; i < len && ((base_off + i) & 7); i++) p[i] = pat(seed, base_off + i);
  for (; i + 8 <= len; i += 8) {
    uint64_t x = word(seed, (base_off + i) >> 3);
    std::memcpy(p + i, &x, 8);
  }
  for (; i < len; i++) p[i] = pat(seed, base_off + i);
}
long long check_host(const uint8_t *p, uint64_t len, uint64_t seed, uint64_t base_off) {
  uint64_t i = 0;
  for (; i < len && ((base_off + i) & 7); i++)
    if (p[i] != pat(seed, base_off + i)) return static_cast<long long>(i);
  for (; i + 8 <= len; i += 8) {
    uint64_t x = word(seed, (base_off + i) >> 3), y;
    std::memcpy(&y, p + i, 8);
    if (x != y) break;
  }
  for (; i < len; i++)
    if (p[i] != pat(seed, base_off + i)) return static_cast<long long>(i);
  return -1;
}

void need(CUresult r, const char *what) {
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "%s\n", error_text(what, r).c_str());
    std::abort();
  }
}

// GPU memory of either kind, freed on destruction.
struct GpuMem {
  int dev = 0;
  bool vmm = false;
  bool host = false;
  uint64_t len = 0, alloc_len = 0;
  CUdeviceptr ptr = 0;
  std::vector<CUmemGenericAllocationHandle> hs;
  std::vector<uint8_t> hostmem;
  void *p() const { return host ? const_cast<uint8_t *>(hostmem.data()) : reinterpret_cast<void *>(ptr); }

  void alloc(int d, const std::string &kind, uint64_t n) {
    dev = d;
    len = n;
    if (kind == "host") {
      host = true;
      hostmem.resize(n);
      return;
    }
    need(use_device(d).ok() ? CUDA_SUCCESS : 1, "use_device");
    if (kind == "malloc") {
      need(A->cuMemAlloc(&ptr, n), "cuMemAlloc");
      return;
    }
    // VMM: several separate allocations mapped back to back (as PyTorch's expandable segments).
    vmm = true;
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = d;
    size_t g = 0;
    need(A->cuMemGetAllocationGranularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM), "granularity");
    uint64_t chunk = ((n / 3 + g - 1) / g) * g;
    if (chunk == 0) chunk = g;
    uint64_t nch = (n + chunk - 1) / chunk;
    alloc_len = nch * chunk;
    need(A->cuMemAddressReserve(&ptr, alloc_len, 0, 0, 0), "cuMemAddressReserve");
    for (uint64_t i = 0; i < nch; i++) {
      CUmemGenericAllocationHandle h;
      need(A->cuMemCreate(&h, chunk, &prop, 0), "cuMemCreate");
      need(A->cuMemMap(ptr + i * chunk, chunk, 0, h, 0), "cuMemMap");
      hs.push_back(h);
    }
    CUmemAccessDesc ad{};
    ad.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    ad.location.id = d;
    ad.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    need(A->cuMemSetAccess(ptr, alloc_len, &ad, 1), "cuMemSetAccess");
  }
  void fill(uint64_t seed, uint64_t off, uint64_t n) {
    if (host) return fill_host(hostmem.data() + off, n, seed, off);
    use_device(dev);
    std::vector<uint8_t> h(n);
    fill_host(h.data(), n, seed, off);
    need(A->cuMemcpyHtoD(ptr + off, h.data(), n), "cuMemcpyHtoD");
    // From pageable memory cuMemcpyHtoD may return before the bytes landed: finish it before
    // mc (on its own streams) reads them.
    need(A->cuCtxSynchronize(), "cuCtxSynchronize");
  }
  void poison() {
    if (host) return (void)std::memset(hostmem.data(), 0xEE, len);
    use_device(dev);
    need(A->cuMemsetD8(ptr, 0xEE, len), "cuMemsetD8");
    // cuMemsetD8 may still run when it returns, and mc copies on streams of its own that do
    // not wait for the legacy stream: finish it before handing the memory to mc.
    need(A->cuCtxSynchronize(), "cuCtxSynchronize");
  }
  long long check(uint64_t seed, uint64_t off, uint64_t n) {
    if (host) return check_host(hostmem.data() + off, n, seed, off);
    use_device(dev);
    std::vector<uint8_t> h(n);
    need(A->cuMemcpyDtoH(h.data(), ptr + off, n), "cuMemcpyDtoH");
    return check_host(h.data(), n, seed, off);
  }
  ~GpuMem() {
    if (host || !ptr || !A) return;
    use_device(dev);
    if (!vmm) {
      A->cuMemFree(ptr);
      return;
    }
    A->cuMemUnmap(ptr, alloc_len);
    for (auto h : hs) A->cuMemRelease(h);
    A->cuMemAddressFree(ptr, alloc_len);
  }
};

mc_engine_t *engine(const char *listen = "127.0.0.1:0",
                    std::vector<std::pair<std::string, std::string>> extra = {}) {
  mc_config_t *c;
  mc_config_create(&c);
  mc_config_set(c, "listen", listen);
  for (auto &[k, v] : extra) mc_config_set(c, k.c_str(), v.c_str());
  mc_config_set(c, "heartbeat_ms", "100");
  // Scaled as every other limit here: on a loaded machine (make test beside other builds) a
  // peer process may not answer a ping within 600 ms, and its requests would fail PEER_DOWN.
  mc_config_set(c, "peer_timeout_ms", std::to_string(600 * slack()).c_str());
  mc_engine_t *e = nullptr;
  mc_status_t st = mc_engine_create(c, &e);
  mc_config_destroy(c);
  if (st != MC_OK) {
    std::fprintf(stderr, "engine: %s\n", mc_last_error());
    return nullptr;
  }
  return e;
}

// ------------------------------------------------------------------------------ the peer process

int serve(int argc, char **argv) {
  int dev = std::atoi(argv[2]);
  std::string kind = argv[3];
  uint64_t size = std::strtoull(argv[4], nullptr, 10);
  uint64_t seed = std::strtoull(argv[5], nullptr, 10);
  const char *listen = argc > 6 ? argv[6] : "127.0.0.1:0";
  if (kind != "host" && !api()) {
    std::printf("FAIL %s\n", why_unavailable().c_str());
    return 1;
  }
  A = api();
  mc_engine_t *e = engine(listen);
  if (!e) return 1;
  GpuMem m;
  m.alloc(dev, kind, size);
  m.fill(seed, 0, size);
  if (mc_buffer_register(e, m.p(), size, kind == "host" ? "cpu" : nullptr) != MC_OK) {
    std::printf("FAIL register: %s\n", mc_last_error());
    return 1;
  }
  std::printf("READY %s %llu\n", mc_engine_name(e), static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(m.p())));
  std::fflush(stdout);
  char line[256];
  while (std::fgets(line, sizeof line, stdin)) {
    unsigned long long s, off, n;
    if (std::sscanf(line, "CHECK %llu %llu %llu", &s, &off, &n) == 3) {
      long long bad = m.check(s, off, n);
      std::printf(bad < 0 ? "OK\n" : "BAD %lld\n", bad);
    } else if (std::sscanf(line, "FILL %llu %llu %llu", &s, &off, &n) == 3) {
      m.fill(s, off, n);
      std::printf("OK\n");
    } else if (std::sscanf(line, "ACCESS %llu", &s) == 1) {
      mc_status_t st = mc_buffer_set_access(e, m.p(), static_cast<uint32_t>(s));
      std::printf(st == MC_OK ? "OK\n" : "ERR %d\n", st);
    } else if (std::strncmp(line, "STATS", 5) == 0) {
      char buf[65536];
      size_t need_len;
      mc_engine_stats_json(e, buf, sizeof buf, &need_len);
      std::printf("%s\n", buf);
    } else {
      break;
    }
    std::fflush(stdout);
  }
  mc_buffer_unregister(e, m.p());
  mc_engine_destroy(e);
  return 0;
}

// ------------------------------------------------------------------------------ test side

struct Child {
  pid_t pid = -1;
  FILE *in = nullptr, *out = nullptr;
  std::string name;
  uint64_t addr = 0;

  bool start(int dev, const char *kind, uint64_t size, uint64_t seed, const char *listen = nullptr,
             bool no_cuda = false, const char *token = nullptr) {
    int a[2], b[2];
    // The program's own path, read before the fork (under valgrind /proc/self/exe is the tool).
    char exe[4096];
    ssize_t en = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (en <= 0) return false;
    exe[en] = 0;
    if (pipe(a) || pipe(b)) return false;
    pid = fork();
    if (pid == 0) {
      dup2(a[0], 0);
      dup2(b[1], 1);
      close(a[1]);
      close(b[0]);
      if (no_cuda) setenv("MC_CUDA_DISABLE", "1", 1);
      if (token) setenv("MC_AUTH_TOKEN", token, 1);
      std::string d = std::to_string(dev), s = std::to_string(size), sd = std::to_string(seed);
      const char *av[] = {"wb_gpu", "--serve", d.c_str(), kind, s.c_str(), sd.c_str(), listen, nullptr};
      execv(exe, const_cast<char **>(av));
      _exit(127);
    }
    close(a[0]);
    close(b[1]);
    in = fdopen(a[1], "w");
    out = fdopen(b[0], "r");
    char line[512] = "", nm[256];
    unsigned long long ad;
    if (!std::fgets(line, sizeof line, out) || std::sscanf(line, "READY %255s %llu", nm, &ad) != 2) {
      std::fprintf(stderr, "peer did not start: %s\n", line);
      return false;
    }
    name = nm;
    addr = ad;
    return true;
  }
  std::string cmd(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(in, fmt, ap);
    va_end(ap);
    std::fputc('\n', in);
    std::fflush(in);
    static char line[65536];
    if (!std::fgets(line, sizeof line, out)) return "EOF";
    std::string r = line;
    if (!r.empty() && r.back() == '\n') r.pop_back();
    return r;
  }
  void kill9() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  ~Child() {
    if (pid > 0) {
      std::fprintf(in, "QUIT\n");
      std::fflush(in);
      int st;
      for (int i = 0; i < 200 * slack() && waitpid(pid, &st, WNOHANG) == 0; i++) usleep(20000);
      kill9();
    }
    if (in) std::fclose(in);
    if (out) std::fclose(out);
  }
};

uint64_t stat_of(mc_engine_t *e, const char *obj, const char *key) {
  static char buf[1 << 16];
  size_t n;
  if (mc_engine_stats_json(e, buf, sizeof buf, &n) != MC_OK) return ~0ull;
  const char *o = std::strstr(buf, (std::string("\"") + obj + "\":{").c_str());
  if (!o) return ~0ull;
  const char *k = std::strstr(o, (std::string("\"") + key + "\":").c_str());
  return k ? std::strtoull(k + std::strlen(key) + 3, nullptr, 10) : ~0ull;
}

std::string transport_of(mc_engine_t *e, mc_segment_t s) {
  mc_segment_info_t info{};
  info.size = sizeof info;
  mc_segment_query(e, s, &info);
  return info.transport;
}

mc_status_t xfer(mc_engine_t *e, uint32_t op, void *local, mc_segment_t s, uint64_t remote, uint64_t len) {
  mc_request_t r{op, 0, local, s, remote, len};
  return mc_transfer(e, &r, 1, 60000);
}

// Sizes from 1 B to max_len, odd offsets included.
const uint64_t kSizes[] = {1, 7, 4096 + 3, (1 << 20) - 1, (16u << 20) + 5, 256u << 20, 1ull << 30};

// GPU ldev here <-> GPU rdev in a peer process, `kind` memory on both sides.
void gpu_pair(int ldev, int rdev, const char *kind, uint64_t max_len) {
  if (ldev == rdev && g_ngpu < 2)
    std::printf("  one GPU: GPU0<->GPU1 is not possible here; running GPU%d<->GPU%d across two processes (CUDA IPC)\n",
                ldev, rdev);
  uint64_t size = max_len + (1 << 20);
  Child c;
  assert_true(c.start(rdev, kind, size, 11));
  mc_engine_t *e = engine();
  assert_non_null(e);
  GpuMem m;
  m.alloc(ldev, kind, size);
  assert_int_equal(mc_buffer_register(e, m.p(), size, nullptr), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, c.name.c_str(), &s), MC_OK);
  mc_buffer_info_t bi[4];
  size_t nb;
  assert_int_equal(mc_segment_buffers(e, s, bi, 4, &nb), MC_OK);
  assert_int_equal(nb, 1);
  assert_string_equal(bi[0].location, ("cuda:" + std::to_string(rdev)).c_str());
  uint64_t seed = 100;
  for (uint64_t len : kSizes) {
    if (len > max_len) continue;
    uint64_t loff = len & 4095 ? 3 : 0, roff = len & 4095 ? 5 : 0;
    // WRITE: our pattern lands in the peer's memory at roff.
    seed++;
    m.fill(seed, 0, len);
    assert_int_equal(xfer(e, MC_WRITE, static_cast<char *>(m.p()), s, c.addr + roff, len), MC_OK);
    // The peer checks bytes written against our pattern at offset 0 (shifted by roff).
    (void)loff;
    // FILL the expected pattern at the peer after checking through a READ-back instead:
    m.poison();
    assert_int_equal(xfer(e, MC_READ, static_cast<char *>(m.p()) + loff, s, c.addr + roff, len), MC_OK);
    // What came back must be our original pattern (bytes 0..len of seed).
    std::vector<uint8_t> h(len);
    use_device(ldev);
    need(A->cuMemcpyDtoH(h.data(), reinterpret_cast<CUdeviceptr>(m.p()) + loff, len), "dtoh");
    assert_int_equal(check_host(h.data(), len, seed, 0), -1);
    // READ of the peer's own pattern (written by the peer, not by us), at odd offsets.
    seed++;
    assert_string_equal(c.cmd("FILL %llu 0 %llu", (unsigned long long)seed, (unsigned long long)(roff + len)).c_str(), "OK");
    m.poison();
    assert_int_equal(xfer(e, MC_READ, static_cast<char *>(m.p()) + loff, s, c.addr + roff, len), MC_OK);
    need(A->cuMemcpyDtoH(h.data(), reinterpret_cast<CUdeviceptr>(m.p()) + loff, len), "dtoh");
    assert_int_equal(check_host(h.data(), len, seed, roff), -1);
    // WRITE checked by the peer itself.
    seed++;
    m.fill(seed, 0, len);
    assert_int_equal(xfer(e, MC_WRITE, m.p(), s, c.addr, len), MC_OK);
    assert_string_equal(c.cmd("CHECK %llu 0 %llu", (unsigned long long)seed, (unsigned long long)len).c_str(), "OK");
    std::printf("  %s GPU%d<->GPU%d %llu B: READ/WRITE verified\n", kind, ldev, rdev, (unsigned long long)len);
  }
  // The segment's first route is shm (host memory); GPU buffers went over nvlink.
  assert_true(stat_of(e, "nvlink", "bytes_copied") > max_len);
  assert_int_equal(stat_of(e, "tcp", "bytes_sent"), 0);
  // Range checks: past the peer's buffer, and past ours.
  mc_request_t bad{MC_READ, 0, m.p(), s, c.addr + size - 10, 20};
  assert_int_equal(mc_transfer(e, &bad, 1, 5000), MC_ERR_OUT_OF_RANGE);
  mc_request_t bad2{MC_WRITE, 0, static_cast<char *>(m.p()) + size - 10, s, c.addr, 20};
  assert_int_equal(mc_transfer(e, &bad2, 1, 5000), MC_ERR_OUT_OF_RANGE);
  mc_segment_close(e, s);
  mc_engine_destroy(e);
}

int other(int d) { return g_ngpu > 1 ? 1 - d : d; }

void test_register(void **) {
  mc_engine_t *e = engine();
  assert_non_null(e);
  GpuMem m;
  m.alloc(0, "malloc", 1 << 20);
  // Wrong GPU, host memory as cuda, bad syntax, range past the allocation.
  if (g_ngpu > 1) assert_int_equal(mc_buffer_register(e, m.p(), 1 << 20, "cuda:1"), MC_ERR_INVALID_ARG);
  std::vector<char> host(4096);
  assert_int_equal(mc_buffer_register(e, host.data(), 4096, "cuda:0"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_register(e, m.p(), 1 << 20, "cuda:x"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_register(e, m.p(), 1 << 20, "cuda:0"), MC_OK);
  assert_int_equal(mc_buffer_unregister(e, m.p()), MC_OK);
  // NULL detects the GPU.
  assert_int_equal(mc_buffer_register(e, m.p(), 1 << 20, nullptr), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &s), MC_OK);
  mc_buffer_info_t bi[2];
  size_t nb;
  assert_int_equal(mc_segment_buffers(e, s, bi, 2, &nb), MC_OK);
  assert_string_equal(bi[0].location, "cuda:0");
  // Host memory with NULL stays cpu.
  assert_int_equal(mc_buffer_register(e, host.data(), 4096, nullptr), MC_OK);
  mc_segment_close(e, s);
  assert_int_equal(mc_segment_open(e, mc_engine_name(e), &s), MC_OK);
  assert_int_equal(mc_segment_buffers(e, s, bi, 2, &nb), MC_OK);
  assert_int_equal(nb, 2);
  int ncpu = 0;
  for (size_t i = 0; i < nb; i++) ncpu += std::strcmp(bi[i].location, "cpu") == 0;
  assert_int_equal(ncpu, 1);
  mc_engine_destroy(e);
}

void test_malloc_0_to_1(void **) { gpu_pair(0, other(0), "malloc", 1ull << 30); }
void test_malloc_1_to_0(void **) { gpu_pair(other(0), 0, "malloc", 1ull << 30); }
void test_vmm(void **) { gpu_pair(0, other(0), "vmm", 256u << 20); }

// GPU memory here, host memory in a peer without CUDA (and the reverse): TCP with staging.
void test_host_gpu_tcp(void **) {
  uint64_t size = 64u << 20;
  Child c;
  assert_true(c.start(0, "host", size, 21, nullptr, true));
  mc_engine_t *e = engine();
  GpuMem m;
  m.alloc(0, "malloc", size);
  assert_int_equal(mc_buffer_register(e, m.p(), size, "cuda:0"), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, c.name.c_str(), &s), MC_OK);
  for (uint64_t len : {1ull, 4099ull, (8ull << 20) + 1, 64ull << 20}) {
    m.poison();
    assert_int_equal(xfer(e, MC_READ, m.p(), s, c.addr, len), MC_OK);
    assert_int_equal(m.check(21, 0, len), -1);
    m.fill(33, 0, size);
    assert_int_equal(xfer(e, MC_WRITE, m.p(), s, c.addr, len), MC_OK);
    assert_string_equal(c.cmd("CHECK 33 0 %llu", (unsigned long long)len).c_str(), "OK");
    assert_string_equal(c.cmd("FILL 21 0 %llu", (unsigned long long)size).c_str(), "OK");
  }
  assert_true(stat_of(e, "tcp", "bytes_sent") > 0);
  mc_engine_destroy(e);
  // The reverse: the peer's GPU, our host memory (so the peer stages as a TCP target).
  Child g;
  assert_true(g.start(other(0), "malloc", size, 41));
  mc_engine_t *e2 = engine();
  std::vector<uint8_t> host(size);
  assert_int_equal(mc_buffer_register(e2, host.data(), size, nullptr), MC_OK);
  assert_int_equal(mc_segment_open(e2, g.name.c_str(), &s), MC_OK);
  assert_int_equal(xfer(e2, MC_READ, host.data(), s, g.addr, size), MC_OK);
  assert_int_equal(check_host(host.data(), size, 41, 0), -1);
  fill_host(host.data(), size, 43, 0);
  assert_int_equal(xfer(e2, MC_WRITE, host.data(), s, g.addr, size), MC_OK);
  assert_string_equal(g.cmd("CHECK 43 0 %llu", (unsigned long long)size).c_str(), "OK");
  assert_string_equal(transport_of(e2, s).c_str(), "shm");  // preferred route; GPU data went over tcp
  assert_true(stat_of(e2, "tcp", "bytes_received") >= size);
  mc_engine_destroy(e2);
}

// A peer killed and restarted under the same name: the old mappings are dropped and a READ
// sees the new process's data, never the old one's.
void test_restart(void **) {
  uint64_t size = 32u << 20;
  auto c = std::make_unique<Child>();
  assert_true(c->start(other(0), "malloc", size, 51));
  std::string name = c->name;
  mc_engine_t *e = engine();
  GpuMem m;
  m.alloc(0, "malloc", size);
  assert_int_equal(mc_buffer_register(e, m.p(), size, nullptr), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, name.c_str(), &s), MC_OK);
  assert_int_equal(xfer(e, MC_READ, m.p(), s, c->addr, size), MC_OK);
  assert_int_equal(m.check(51, 0, size), -1);
  mc_segment_info_t info{};
  info.size = sizeof info;
  mc_segment_query(e, s, &info);
  uint64_t inc0 = info.incarnation;
  assert_int_equal(stat_of(e, "nvlink", "imports_open"), 1);
  c->kill9();
  c.reset();
  auto c2 = std::make_unique<Child>();
  bool started = false;
  for (int i = 0; i < 50 * slack() && !started; i++) {  // the port may take a moment to be free again
    started = c2->start(other(0), "malloc", size, 52, name.c_str());
    if (!started) {
      c2 = std::make_unique<Child>();
      usleep(100000);
    }
  }
  assert_true(started);
  uint64_t t0 = 0;
  for (; t0 < 100u * (uint64_t)slack(); t0++) {
    mc_segment_query(e, s, &info);
    if (info.incarnation != inc0 && info.state == MC_SEGMENT_OK) break;
    usleep(100000);
  }
  assert_true(info.incarnation != inc0);
  assert_true(info.rejoins >= 1);
  m.poison();
  assert_int_equal(xfer(e, MC_READ, m.p(), s, c2->addr, size), MC_OK);
  assert_int_equal(m.check(52, 0, size), -1);
  assert_true(stat_of(e, "nvlink", "imports_closed") >= 1);
  assert_int_equal(stat_of(e, "nvlink", "imports_open"), 1);
  std::printf("  restart: rejoin seen, old mapping closed, new data read\n");
  mc_engine_destroy(e);
}

// ------------------------------------------------------------------------------ admission

const char kTok[] = "wb-gpu-token-0123456789abcdef";
const char kOtherTok[] = "wb-gpu-other-token-9876543210";

// A number from a stats JSON text: obj "" for the top level.
uint64_t json_u64(const std::string &js, const char *obj, const char *key) {
  size_t o = 0;
  if (*obj) {
    o = js.find(std::string("\"") + obj + "\":{");
    if (o == std::string::npos) return ~0ull;
  }
  size_t k = js.find(std::string("\"") + key + "\":", o);
  return k == std::string::npos ? ~0ull : std::strtoull(js.c_str() + k + std::strlen(key) + 3, nullptr, 10);
}

// The child's nvlink socket name: "mc-nvl-<pid>-<incarnation>".
std::string nvl_socket(Child &c, uint64_t *inc) {
  std::string st = c.cmd("STATS");
  *inc = json_u64(st, "", "incarnation");
  char nm[64];
  std::snprintf(nm, sizeof nm, "mc-nvl-%d-%016llx", static_cast<int>(c.pid), static_cast<unsigned long long>(*inc));
  return nm;
}

// One raw admission attempt on the child's nvlink socket with `token` (empty: none). On MC_OK
// it also asks LIST and returns the reply in *list.
mc::Status raw_hello(const std::string &sock, uint64_t inc, const std::string &token, std::string *list,
                     bool *got_ctrl) {
  mc::Fd fd;
  mc::Status st = mc::unix_connect(sock, 3000, &fd);
  if (!st.ok()) return st;
  std::string reply;
  int cfd = -1;
  st = mc::unix_hello(fd.get(), token, inc, "nvlink peer", 1 << 20, &reply, &cfd);
  *got_ctrl = cfd >= 0;
  if (cfd >= 0) close(cfd);
  if (st.ok() && list) {
    int f = -1;
    if (!mc::unix_send_msg(fd.get(), "LIST") || !mc::unix_recv_msg(fd.get(), list, &f, 1 << 20))
      return mc::Err(MC_ERR_PEER_DOWN, "no LIST answer");
    if (f >= 0) close(f);
  }
  return st;
}

// The nvlink socket admits only a process that proves it holds the target's auth_token; before
// that nothing (control page, IPC handle, VMM fd) is handed out. Both directions of a token
// mismatch are refused with MC_ERR_DENIED and a reason on both sides, and the token never
// appears in a message. With the matching token, GPU data moves over nvlink.
void test_nvlink_auth(void **) {
  uint64_t size = 4u << 20;
  Child c;
  assert_true(c.start(other(0), "malloc", size, 61, nullptr, false, kTok));
  uint64_t inc = 0;
  std::string sock = nvl_socket(c, &inc);

  // A request before HELLO: refused, no handle in the answer.
  {
    mc::Fd fd;
    assert_true(mc::unix_connect(sock, 3000, &fd).ok());
    std::string r;
    int f = -1;
    assert_true(mc::unix_send_msg(fd.get(), "LIST"));
    assert_true(mc::unix_recv_msg(fd.get(), &r, &f, 1 << 20));
    assert_int_equal(f, -1);
    assert_int_equal(r.rfind("ERR", 0), 0);
    assert_true(r.find("ipc") == std::string::npos);
  }
  std::string list;
  bool ctrl = true;
  // No token against a token engine.
  mc::Status st = raw_hello(sock, inc, "", &list, &ctrl);
  assert_int_equal(st.code(), MC_ERR_DENIED);
  assert_false(ctrl);
  assert_non_null(std::strstr(st.message().c_str(), "requires an auth_token and the connecting engine has none"));
  // A wrong token: the target's proof does not match ours, we refuse it (and tell it).
  ctrl = true;
  st = raw_hello(sock, inc, kOtherTok, &list, &ctrl);
  assert_int_equal(st.code(), MC_ERR_DENIED);
  assert_false(ctrl);
  assert_null(std::strstr(st.message().c_str(), kTok));
  assert_null(std::strstr(st.message().c_str(), kOtherTok));
  std::printf("  nvlink admission refused: %s\n", st.message().c_str());
  // The matching token: control page, then the handles.
  list.clear();
  st = raw_hello(sock, inc, kTok, &list, &ctrl);
  assert_true(st.ok());
  assert_true(ctrl);
  assert_non_null(std::strstr(list.c_str(), "\"ipc\""));
  // The target counted both refusals (its serving thread may count the second a moment after we
  // hung up).
  uint64_t denied_at_child = 0;
  for (int i = 0; i < 100 * slack() && (denied_at_child = json_u64(c.cmd("STATS"), "nvlink", "handshakes_denied")) < 2; i++)
    usleep(10000);
  assert_int_equal(denied_at_child, 2);

  // The same through the transport itself (NvPeer::open, in this process), both directions:
  // a target with a token and an initiator with another one, and a token-less initiator, and a
  // token-less target with a token initiator. Nothing is imported; both sides count it.
  for (auto [tt, it] : {std::pair{kTok, kOtherTok}, std::pair{kTok, ""}, std::pair{"", kTok}}) {
    mc::NvlinkOptions to, io;
    to.incarnation = 0x1111;
    to.auth_token = tt;
    io.incarnation = 0x2222;
    io.auth_token = it;
    std::string why;
    auto target = mc::make_nvlink_transport(to, nullptr, &why);
    auto init = mc::make_nvlink_transport(io, nullptr, &why);
    assert_non_null(target.get());
    assert_non_null(init.get());
    mc::Descriptor d;
    d.name = "wb-target";
    d.incarnation = to.incarnation;
    d.host_id = mc::host_boot_id();
    d.pid = 1;  // not this process: the IPC path
    target->describe(d);
    assert_true(init->reachable(d));
    assert_null(init->connect(d).get());
    assert_int_equal(json_u64(init->stats_json(), "", "connects_denied"), 1);
    assert_int_equal(json_u64(init->stats_json(), "", "imports"), 0);
    uint64_t denied = 0;
    for (int i = 0; i < 100 * slack() && (denied = json_u64(target->stats_json(), "", "handshakes_denied")) == 0; i++)
      usleep(10000);
    // Refused by the target in each case: no token, another token (it sees our refusal of its
    // proof), and a token-less target that gets a HELLO with a nonce.
    assert_int_equal(denied, 1);
  }

  // Engines: without a token and with a wrong one, the segment does not open (the control
  // connection refuses first); with the token, GPU data moves over nvlink.
  for (const char *tok : {"", kOtherTok}) {
    mc_engine_t *e = *tok ? engine("127.0.0.1:0", {{"auth_token", tok}}) : engine();
    assert_non_null(e);
    mc_segment_t s;
    assert_int_equal(mc_segment_open(e, c.name.c_str(), &s), MC_ERR_DENIED);
    assert_null(std::strstr(mc_last_error(), kTok));
    mc_engine_destroy(e);
  }
  mc_engine_t *e = engine("127.0.0.1:0", {{"auth_token", kTok}});
  GpuMem m;
  m.alloc(0, "malloc", size);
  assert_int_equal(mc_buffer_register(e, m.p(), size, nullptr), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, c.name.c_str(), &s), MC_OK);
  m.poison();
  assert_int_equal(xfer(e, MC_READ, m.p(), s, c.addr, size), MC_OK);
  assert_int_equal(m.check(61, 0, size), -1);
  m.fill(62, 0, size);
  assert_int_equal(xfer(e, MC_WRITE, m.p(), s, c.addr, size), MC_OK);
  assert_string_equal(c.cmd("CHECK 62 0 %llu", (unsigned long long)size).c_str(), "OK");
  assert_true(stat_of(e, "nvlink", "bytes_copied") >= 2 * size);
  assert_int_equal(stat_of(e, "nvlink", "connects_denied"), 0);
  std::printf("  nvlink with a matching auth_token: READ/WRITE verified\n");
  mc_engine_destroy(e);
}

// Per-buffer access over nvlink: the target changes it after the initiator opened the segment
// (so the initiator's descriptor is stale and the nvlink path's own check is what refuses):
// read-only refuses WRITEs (nothing written), write-only refuses READs, 0 refuses both and the
// buffer's handle is no longer listed.
void test_nvlink_access(void **) {
  uint64_t size = 2u << 20;
  for (const char *kind : {"malloc", "vmm"}) {
    Child c;
    assert_true(c.start(other(0), kind, size, 71));
    mc_engine_t *e = engine();
    GpuMem m;
    m.alloc(0, kind, size);
    assert_int_equal(mc_buffer_register(e, m.p(), size, nullptr), MC_OK);
    mc_segment_t s;
    assert_int_equal(mc_segment_open(e, c.name.c_str(), &s), MC_OK);
    m.poison();
    assert_int_equal(xfer(e, MC_READ, m.p(), s, c.addr, size), MC_OK);  // imported now
    assert_int_equal(m.check(71, 0, size), -1);

    assert_string_equal(c.cmd("ACCESS 1").c_str(), "OK");  // read-only
    m.fill(72, 0, size);
    assert_int_equal(xfer(e, MC_WRITE, m.p(), s, c.addr, size), MC_ERR_DENIED);
    assert_string_equal(c.cmd("CHECK 71 0 %llu", (unsigned long long)size).c_str(), "OK");  // untouched
    m.poison();
    assert_int_equal(xfer(e, MC_READ, m.p(), s, c.addr, size), MC_OK);
    assert_int_equal(m.check(71, 0, size), -1);

    assert_string_equal(c.cmd("ACCESS 2").c_str(), "OK");  // write-only
    m.poison();
    assert_int_equal(xfer(e, MC_READ, m.p(), s, c.addr, size), MC_ERR_DENIED);
    m.fill(73, 0, size);
    assert_int_equal(xfer(e, MC_WRITE, m.p(), s, c.addr, size), MC_OK);
    assert_string_equal(c.cmd("CHECK 73 0 %llu", (unsigned long long)size).c_str(), "OK");

    assert_string_equal(c.cmd("ACCESS 0").c_str(), "OK");  // none: no handle listed any more
    assert_int_equal(xfer(e, MC_WRITE, m.p(), s, c.addr, 4096), MC_ERR_DENIED);
    assert_int_equal(xfer(e, MC_READ, m.p(), s, c.addr, 4096), MC_ERR_DENIED);
    uint64_t inc = 0;
    std::string sock = nvl_socket(c, &inc), list;
    bool ctrl = false;
    assert_true(raw_hello(sock, inc, "", &list, &ctrl).ok());
    assert_non_null(std::strstr(list.c_str(), "\"access\":0"));
    assert_null(std::strstr(list.c_str(), "\"ipc\""));
    assert_null(std::strstr(list.c_str(), "\"chunks\""));
    assert_string_equal(c.cmd("CHECK 73 0 %llu", (unsigned long long)size).c_str(), "OK");

    assert_string_equal(c.cmd("ACCESS 3").c_str(), "OK");
    m.poison();
    assert_int_equal(xfer(e, MC_READ, m.p(), s, c.addr, size), MC_OK);
    assert_int_equal(m.check(73, 0, size), -1);
    std::printf("  nvlink access (%s): read-only, write-only and none enforced (nvlink slices failed: %llu)\n", kind,
                (unsigned long long)stat_of(e, "nvlink", "slices_failed"));
    mc_engine_destroy(e);
  }
}

// ------------------------------------------------------------------------------ RDMA + dma-buf

mc_engine_t *rdma_engine() {
  return engine("127.0.0.1:0", {{"transports", "rdma,tcp"}, {"rdma_devices", "sim"}, {"timeout_ms", "5000"}});
}

// GPU memory over RDMA on the simulated NIC: the GPU buffer is exported by the CUDA driver as a
// dma-buf and registered with the NIC through that fd (reg_dmabuf_mr, iova = its device
// address); the sim moves its bytes with the driver's copy engine. Where the driver cannot
// export dma-bufs, the fallback is checked instead: the buffer still registers and moves over
// tcp through staging.
void rdma_gpu_case(const char *kind) {
  std::string why;
  bool dmabuf = dmabuf_supported(0, &why);
  uint64_t size = 64u << 20;
  GpuMem g;
  g.alloc(0, kind, size);
  if (dmabuf && std::strcmp(kind, "malloc") == 0) {
    // The driver really hands out a dma-buf for the range (aligned to the host page).
    DmabufRange ex;
    mc::Status st = export_dmabuf(0, g.ptr + 4096 + 3, 1 << 20, &ex);
    assert_true(st.ok());
    char path[64], link[256] = {};
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", ex.fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    off_t fsz = lseek(ex.fd, 0, SEEK_END);
    std::printf("  dma-buf from the driver: fd %d -> %s, %lld bytes, offset %llu\n", ex.fd, n > 0 ? link : "?",
                (long long)fsz, (unsigned long long)ex.offset);
    assert_int_equal(ex.offset, ((g.ptr + 4096 + 3) - ex.base));
    assert_true(fsz >= static_cast<off_t>(ex.length));
    int d2;
    uint64_t b2, l2;
    assert_true(dmabuf_lookup(ex.fd, &d2, &b2, &l2));
    dmabuf_forget(ex.fd);
    close(ex.fd);
  } else if (!dmabuf) {
    std::printf("  dma-buf: not supported here (%s): checking the fallback to tcp\n", why.c_str());
  }
  mc_engine_t *ge = rdma_engine(), *he = rdma_engine();
  assert_non_null(ge);
  assert_non_null(he);
  std::vector<uint8_t> host(size);
  assert_int_equal(mc_buffer_register(ge, g.p(), size, "cuda:0"), MC_OK);
  assert_int_equal(mc_buffer_register(he, host.data(), size, nullptr), MC_OK);
  if (std::strcmp(kind, "malloc") == 0) {
    assert_int_equal(stat_of(ge, "rdma", "gpu_mrs"), dmabuf ? 1 : 0);
  } else {
    // VMM memory (separate cuMemCreate allocations mapped back to back, created without the
    // gpuDirectRDMACapable flag): whichever path the driver allows, the data must be right.
    dmabuf = stat_of(ge, "rdma", "gpu_mrs") == 1;
    std::printf("  %s memory: %s\n", kind, dmabuf ? "exported as a dma-buf, over rdma" : "not exportable, over tcp");
  }
  mc_segment_t hs, gs;
  assert_int_equal(mc_segment_open(ge, mc_engine_name(he), &hs), MC_OK);  // GPU side initiates
  assert_int_equal(mc_segment_open(he, mc_engine_name(ge), &gs), MC_OK);  // host side initiates
  uint64_t haddr = reinterpret_cast<uint64_t>(host.data()), gaddr = g.ptr;
  uint64_t seed = 200;
  for (uint64_t len : {1ull, 4099ull, (1ull << 20) + 3, 64ull << 20}) {
    uint64_t off = len < size ? 5 : 0;
    // GPU -> host (WRITE from the GPU engine), host -> GPU (READ by the GPU engine).
    g.fill(++seed, 0, len);
    std::memset(host.data(), 0, size);
    assert_int_equal(xfer(ge, MC_WRITE, g.p(), hs, haddr + off, len), MC_OK);
    assert_int_equal(check_host(host.data() + off, len, seed, 0), -1);
    fill_host(host.data(), size, ++seed, 0);
    g.poison();
    assert_int_equal(xfer(ge, MC_READ, g.p(), hs, haddr, len), MC_OK);
    assert_int_equal(g.check(seed, 0, len), -1);
    // The host engine against the remote GPU buffer: WRITE into it, READ it back.
    fill_host(host.data(), size, ++seed, 0);
    g.poison();
    assert_int_equal(xfer(he, MC_WRITE, host.data(), gs, gaddr + off, len), MC_OK);
    std::vector<uint8_t> back(len);
    use_device(0);
    need(A->cuMemcpyDtoH(back.data(), gaddr + off, len), "dtoh");
    assert_int_equal(check_host(back.data(), len, seed, 0), -1);
    g.fill(++seed, 0, size);
    std::memset(host.data(), 0, size);
    assert_int_equal(xfer(he, MC_READ, host.data(), gs, gaddr, len), MC_OK);
    assert_int_equal(check_host(host.data(), len, seed, 0), -1);
    std::printf("  %s %s GPU<->host %llu B: READ/WRITE both ways verified\n", kind,
                dmabuf ? "rdma (dma-buf, sim NIC)" : "tcp fallback", (unsigned long long)len);
  }
  if (dmabuf) {
    assert_int_equal(stat_of(ge, "tcp", "bytes_sent"), 0);
    assert_int_equal(stat_of(he, "tcp", "bytes_sent"), 0);
    assert_true(stat_of(ge, "rdma", "wr_posted") > 0);
    assert_true(stat_of(he, "rdma", "wr_posted") > 0);
    // Bounds and access, enforced by the NIC on the dma-buf MR as on host MRs: a read-only GPU
    // buffer refuses the peer's WRITE and keeps its bytes.
    assert_int_equal(mc_buffer_set_access(ge, g.p(), MC_ACCESS_READ), MC_OK);
    g.fill(300, 0, 1 << 20);
    fill_host(host.data(), 1 << 20, 301, 0);
    assert_int_equal(xfer(he, MC_WRITE, host.data(), gs, gaddr, 1 << 20), MC_ERR_DENIED);
    assert_int_equal(g.check(300, 0, 1 << 20), -1);
    std::memset(host.data(), 0, 1 << 20);
    assert_int_equal(xfer(he, MC_READ, host.data(), gs, gaddr, 1 << 20), MC_OK);
    assert_int_equal(check_host(host.data(), 1 << 20, 300, 0), -1);
    mc_request_t bad{MC_READ, 0, host.data(), gs, gaddr + size - 10, 20};
    assert_int_equal(mc_transfer(he, &bad, 1, 5000), MC_ERR_OUT_OF_RANGE);
    std::printf("  rdma dma-buf: read-only GPU buffer refuses WRITE, bounds checked\n");
  } else {
    assert_true(stat_of(ge, "tcp", "bytes_sent") > 0);
  }
  mc_engine_destroy(he);
  mc_engine_destroy(ge);
}

void test_rdma_dmabuf(void **) {
  rdma_gpu_case("malloc");
  rdma_gpu_case("vmm");
}

// The file transport's stats text of key (a JSON string value), "?" when missing.
std::string file_stat_text(mc_engine_t *e, const char *key) {
  static char js[1 << 16];
  size_t jn = 0;
  if (mc_engine_stats_json(e, js, sizeof js, &jn) != MC_OK) return "?";
  const char *o = std::strstr(js, "\"file\":{");
  const char *k = o ? std::strstr(o, (std::string("\"") + key + "\":\"").c_str()) : nullptr;
  if (!k) return "?";
  k += std::strlen(key) + 4;
  return std::string(k, std::strcspn(k, "\""));
}

// Whether the file system of dir takes O_DIRECT (tmpfs does not: then no request is direct).
bool direct_io_works(const char *dir) {
  std::string p = std::string(dir) + "/direct-probe";
  int fd = open(p.c_str(), O_RDWR | O_CREAT | O_DIRECT, 0644);
  if (fd >= 0) close(fd);
  unlink(p.c_str());
  return fd >= 0;
}

bool fake_cuda() { return std::getenv("MC_FAKE_CUDA") != nullptr; }

// Sizes from 1 B to 64 MiB at odd and aligned offsets WRITTEN from cuda:0 memory to the file
// and READ back into poisoned memory, verified, the file's own bytes checked too; then one
// batch of 64 requests of 1 MiB both ways. seed advances.
void file_gpu_rounds(mc_engine_t *e, GpuMem &m, mc_segment_t s, const std::string &path, uint64_t size,
                     uint64_t *seed) {
  char *base = static_cast<char *>(m.p());
  for (auto [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 1}, {4097, 4099}, {1 << 20, 1 << 20}, {3, (8ull << 20) + 1}, {0, size}}) {
    m.fill(++*seed, off, len);
    assert_int_equal(xfer(e, MC_WRITE, base + off, s, off, len), MC_OK);
    m.poison();
    assert_int_equal(xfer(e, MC_READ, base + off, s, off, len), MC_OK);
    assert_int_equal(m.check(*seed, off, len), -1);
    std::vector<uint8_t> h(len);
    int fd = open(path.c_str(), O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, h.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    close(fd);
    assert_int_equal(check_host(h.data(), len, *seed, off), -1);
  }
  std::vector<mc_request_t> reqs;
  for (uint64_t i = 0; i < 64; i++) reqs.push_back(mc_request_t{MC_WRITE, 0, base + i * (1 << 20), s, i << 20, 1 << 20});
  m.fill(++*seed, 0, size);
  assert_int_equal(mc_transfer(e, reqs.data(), reqs.size(), 60000), MC_OK);
  m.poison();
  for (auto &r : reqs) r.opcode = MC_READ;
  assert_int_equal(mc_transfer(e, reqs.data(), reqs.size(), 60000), MC_OK);
  assert_int_equal(m.check(*seed, 0, size), -1);
}

// GPU memory to and from a file segment (file://) with file_gds=gds: "off" through a host
// bounce and the pinned staging pool, "on" through cuFile (the real libcufile on a GPU machine,
// tests/fake_cufile under wb_file_gds_fake). cuMemAlloc and VMM memory (VMM: not under the fake).
void file_gpu_case(const char *gds) {
  char dir[] = "/tmp/mc-wbgpu-file.XXXXXX";
  assert_non_null(mkdtemp(dir));
  const uint64_t size = 64ull << 20;
  bool cufile = std::strcmp(gds, "off") != 0;
  std::string refused;  // why the real cuFile registered no file handle here, if it did not
  for (const char *kind : {"malloc", "vmm"}) {
    if (fake_cuda() && std::strcmp(kind, "vmm") == 0) continue;  // the fake has no VMM
    mc_engine_t *e = engine("127.0.0.1:0", {{"file_gds", gds}});
    assert_non_null(e);
    GpuMem m;
    m.alloc(0, kind, size);
    assert_int_equal(mc_buffer_register(e, m.p(), size, "cuda:0"), MC_OK);
    std::string path = std::string(dir) + "/" + kind;
    mc_segment_t s;
    assert_int_equal(mc_segment_open(e, ("file://" + path + "?size=64M").c_str(), &s), MC_OK);
    uint64_t seed = 61;
    file_gpu_rounds(e, m, s, path, size, &seed);
    uint64_t staged = stat_of(e, "file", "staged_ops"), ops = stat_of(e, "file", "cufile_ops");
    uint64_t rd = stat_of(e, "file", "cufile_bytes_read"), wr = stat_of(e, "file", "cufile_bytes_written");
    uint64_t fb = stat_of(e, "file", "cufile_fallbacks"), dops = stat_of(e, "file", "cufile_direct_ops");
    std::string state = file_stat_text(e, "cufile");
    std::printf("  file <-> %s GPU memory, file_gds=%s: cuFile %s, %llu cuFile calls (%llu on the O_DIRECT "
                "descriptor; %llu B read, %llu B written), %llu fallbacks%s%s, %llu pieces staged\n",
                kind, gds, state.c_str(), (unsigned long long)ops, (unsigned long long)dops, (unsigned long long)rd,
                (unsigned long long)wr,
                (unsigned long long)fb, fb ? ": " : "", fb ? file_stat_text(e, "cufile_last_error").c_str() : "",
                (unsigned long long)staged);
    const std::string last = fb ? file_stat_text(e, "cufile_last_error") : "";
    if (cufile && !fake_cuda() && rd == 0 && wr == 0 && fb > 0 && last.find("cuFileHandleRegister") != std::string::npos) {
      // The machine's cuFile opens (compatibility mode) but registers no file: on a VM whose
      // disk it cannot identify (no udev attributes) every handle is refused. Every request fell
      // back to the staging pool and its data was verified above; the cuFile path is untested here.
      assert_true(staged > 0 && staged != ~0ull);
      refused = last;
    } else if (cufile) {
      assert_string_equal(state.c_str(), "in use");
      // cuFile may refuse VMM memory (GDS releases before 1.7 did): then every such request
      // fell back to staging, and the data was verified all the same.
      if (std::strcmp(kind, "vmm") == 0 && rd == 0 && wr == 0)
        assert_true(fb > 0 && fb != ~0ull && staged > 0);
      else
        assert_true(rd > 0 && rd != ~0ull && wr > 0 && wr != ~0ull);
      if (fake_cuda()) {  // the fake refuses nothing here: every byte through it, aligned ones direct
        assert_int_equal(fb, 0);
        assert_int_equal(staged, 0);
        assert_true(dops > 0 || !direct_io_works(dir));
      }
    } else {
      assert_true(staged > 0 && staged != ~0ull);
      assert_int_equal(ops, 0);
      assert_true(state == "absent" || state == "found, disabled (file_gds=off)");
    }
    assert_int_equal(mc_segment_close(e, s), MC_OK);
    mc_engine_destroy(e);
  }
  std::system((std::string("rm -rf ") + dir).c_str());
  if (!refused.empty()) {
    std::printf("MC-SKIP: cuFile registered no file handle on this machine (%s); every request went "
                "through the staging pool instead, verified\n",
                refused.c_str());
    std::fflush(stdout);
    skip();
  }
}

void test_file_gpu(void **) { file_gpu_case("off"); }

// tests/fake_cufile's controls (wb_file_gds_fake runs wb_gpu with it as libcufile.so.0).
struct FakeCufile {
  enum : unsigned { kOpenFails = 1, kRegisterFails = 2, kIoFails = 4, kDirectRegisterFails = 8 };
  void (*set)(unsigned faults, uint64_t max_io, int delay_ms) = nullptr;
  void (*counts)(uint64_t *calls, uint64_t *bytes, int64_t *handles) = nullptr;
  bool load() {
    if (!std::getenv("MC_FAKE_CUFILE")) return false;
    void *h = dlopen("libcufile.so.0", RTLD_NOW | RTLD_LOCAL);  // the one the file transport loads
    if (!h) return false;
    set = reinterpret_cast<decltype(set)>(dlsym(h, "fake_cufile_set"));
    counts = reinterpret_cast<decltype(counts)>(dlsym(h, "fake_cufile_counts"));
    return set && counts;
  }
  int64_t handles() {
    uint64_t c, b;
    int64_t h;
    counts(&c, &b, &h);
    return h;
  }
};

// One way cuFile goes wrong (or slow), with what the engine must then do.
struct GdsFault {
  const char *what;
  unsigned faults;
  uint64_t max_io;    // bytes per cuFile call at most (0: all)
  bool via_cufile;    // the bytes went through cuFile (else through the staging pool)
  bool fallbacks;     // requests fell back from cuFile to staging
  const char *state;  // the stats' "cufile" starts with it
};

// An engine (file_gds=auto) under fault f: requests at odd and aligned offsets both ways,
// verified; the stats say which path moved them.
void gds_fault_case(FakeCufile &fk, const GdsFault &f, const std::string &uri) {
  fk.set(f.faults, f.max_io, 0);
  mc_engine_t *e = engine("127.0.0.1:0", {{"file_gds", "auto"}});
  assert_non_null(e);
  const uint64_t size = 16ull << 20;
  GpuMem m;
  m.alloc(0, "malloc", size);
  assert_int_equal(mc_buffer_register(e, m.p(), size, "cuda:0"), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, uri.c_str(), &s), MC_OK);
  char *base = static_cast<char *>(m.p());
  uint64_t seed = 500;
  for (auto [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{{0, 1 << 20}, {4097, 4099}, {3, (4 << 20) + 1}}) {
    m.fill(++seed, off, len);
    assert_int_equal(xfer(e, MC_WRITE, base + off, s, off, len), MC_OK);
    m.poison();
    assert_int_equal(xfer(e, MC_READ, base + off, s, off, len), MC_OK);
    assert_int_equal(m.check(seed, off, len), -1);
  }
  uint64_t ops = stat_of(e, "file", "cufile_ops"), fb = stat_of(e, "file", "cufile_fallbacks");
  uint64_t staged = stat_of(e, "file", "staged_ops"), dops = stat_of(e, "file", "cufile_direct_ops");
  std::string state = file_stat_text(e, "cufile"), last = file_stat_text(e, "cufile_last_error");
  std::printf("  fake cuFile, %s: \"%s\", %llu calls (%llu direct), %llu fallbacks, %llu pieces staged%s%s\n",
              f.what, state.c_str(), (unsigned long long)ops, (unsigned long long)dops, (unsigned long long)fb,
              (unsigned long long)staged, last.empty() ? "" : "; last: ", last.c_str());
  if (f.faults & FakeCufile::kDirectRegisterFails) assert_int_equal(dops, 0);
  assert_int_equal(state.rfind(f.state, 0), 0);
  assert_true(f.via_cufile ? (ops > 0 && staged == 0) : (ops == 0 && staged > 0));
  assert_true(f.fallbacks ? (fb > 0 && last.find("cuFile") != std::string::npos) : fb == 0);
  if (f.via_cufile)
    assert_true(stat_of(e, "file", "cufile_bytes_read") >= (1 << 20) + 4099 + (4 << 20) + 1);
  assert_int_equal(mc_segment_close(e, s), MC_OK);
  mc_engine_destroy(e);
  assert_int_equal(fk.handles(), 0);  // every handle deregistered with its file
}

// A READ whose cuFile calls are slow (20 ms per 64 KiB: 16 MiB would take 5 s) is canceled:
// it ends CANCELED between two pieces, long before it would have finished.
void gds_cancel_case(FakeCufile &fk, const std::string &uri) {
  fk.set(0, 64 << 10, 20);
  mc_engine_t *e = engine("127.0.0.1:0", {{"file_gds", "on"}});
  assert_non_null(e);
  const uint64_t size = 16ull << 20;
  GpuMem m;
  m.alloc(0, "malloc", size);
  assert_int_equal(mc_buffer_register(e, m.p(), size, "cuda:0"), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, uri.c_str(), &s), MC_OK);
  mc_batch_t *b = nullptr;
  assert_int_equal(mc_batch_create(e, 1, &b), MC_OK);
  mc_request_t r{MC_READ, 0, m.p(), s, 0, size};
  assert_int_equal(mc_batch_submit(b, &r, 1), MC_OK);
  usleep(200000);
  auto t0 = std::chrono::steady_clock::now();
  assert_int_equal(mc_batch_cancel(b), MC_OK);
  mc_batch_wait(b, 10000 * slack());
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  mc_request_status_t st{};
  assert_int_equal(mc_batch_status(b, 0, &st), MC_OK);
  std::printf("  fake cuFile, slow READ canceled: state %u, error %d, %lld ms after the cancel\n", st.state, st.error,
              static_cast<long long>(ms));
  assert_int_equal(st.state, MC_REQUEST_FAILED);
  assert_int_equal(st.error, MC_ERR_CANCELED);
  assert_true(ms < 2000 * slack());
  assert_true(stat_of(e, "file", "cufile_ops") > 0);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  assert_int_equal(mc_segment_close(e, s), MC_OK);
  mc_engine_destroy(e);
  fk.set(0, 0, 0);
}

// The cuFile path's failures against tests/fake_cufile (wb_file_gds_fake; skipped elsewhere):
// a driver that refuses to open (file_gds=on fails engine creation with the reason; auto
// disables cuFile for the engine and stages), refused handles, an O_DIRECT handle refused (the
// buffered one serves), failing I/O (each request falls back to staging), short I/O, cancel.
// Runs before test_file_gds: the driver, once open, stays open for the process.
void test_file_gds_faults(void **) {
  FakeCufile fk;
  if (!fk.load()) {
    std::printf("MC-SKIP: needs tests/fake_cufile (build/tests/wb_file_gds_fake runs this case)\n");
    std::fflush(stdout);
    skip();
  }
  char dir[] = "/tmp/mc-wbgpu-gds.XXXXXX";
  assert_non_null(mkdtemp(dir));
  std::string uri = std::string("file://") + dir + "/f?size=16M";
  fk.set(FakeCufile::kOpenFails, 0, 0);
  mc_config_t *c;
  mc_config_create(&c);
  mc_config_set(c, "listen", "127.0.0.1:0");
  assert_int_equal(mc_config_set(c, "file_gds", "maybe"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(c, "file_gds", "on"), MC_OK);
  mc_engine_t *bad = nullptr;
  assert_int_not_equal(mc_engine_create(c, &bad), MC_OK);
  std::printf("  fake cuFile, file_gds=on with a driver that fails: %s\n", mc_last_error());
  assert_non_null(std::strstr(mc_last_error(), "cuFileDriverOpen"));
  mc_config_destroy(c);
  const GdsFault faults[] = {
      {"driver fails to open", FakeCufile::kOpenFails, 0, false, false, "found, disabled (cuFileDriverOpen failed"},
      {"handles refused", FakeCufile::kRegisterFails, 0, false, true, "in use"},
      {"O_DIRECT handle refused", FakeCufile::kDirectRegisterFails, 0, true, false, "in use"},
      {"every I/O fails", FakeCufile::kIoFails, 0, false, true, "in use"},
      {"64 KiB per call", 0, 64 << 10, true, false, "in use"},
  };
  for (const GdsFault &f : faults) gds_fault_case(fk, f, uri);
  gds_cancel_case(fk, uri);
  std::system((std::string("rm -rf ") + dir).c_str());
}

// cuda:0 memory <-> file through cuFile (file_gds=on): where libcufile loads.
void test_file_gds(void **) {
  void *h = dlopen("libcufile.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    std::printf("MC-SKIP: no libcufile.so.0 here (cuFile, GPUDirect Storage): %s\n", dlerror());
    std::fflush(stdout);
    skip();
  }
  dlclose(h);
  // A libcufile whose driver does not open (no nvidia-fs and compatibility mode off in
  // /etc/cufile.json) fails creation with file_gds=on: that is this machine, not mc.
  mc_config_t *c;
  mc_config_create(&c);
  mc_config_set(c, "listen", "127.0.0.1:0");
  mc_config_set(c, "file_gds", "on");
  mc_engine_t *probe = nullptr;
  mc_status_t st = mc_engine_create(c, &probe);
  std::string why = st == MC_OK ? "" : mc_last_error();
  mc_config_destroy(c);
  mc_engine_destroy(probe);
  if (st != MC_OK) {
    std::printf("MC-SKIP: cuFile cannot be used here: %s\n", why.c_str());
    std::fflush(stdout);
    skip();
  }
  file_gpu_case("on");
}

// ------------------------------------------------------------------------------ stream ordering

// mc_batch_submit_on_stream against a peer `kind` buffer (GPU: nvlink, the copies on our stream;
// host in a peer without CUDA: tcp with staging, the engine waiting for our stream's event and
// the stream for the engine's flag). Each of `iters` rounds queues, with no host synchronization
// in between: a long memset (so that a transfer started early would see old bytes), the
// "kernel" that writes the round's value into src (cuMemsetD32Async), a WRITE src -> peer, a
// memset that overwrites src (after the WRITE: it must not leak into the peer), a READ peer ->
// dst, and a copy of dst into the round's slot of pinned host memory (the work after the READ,
// which must see its bytes). Only then does the host synchronize and check every round.
void stream_rounds(const char *kind, bool no_cuda, int iters, uint64_t len) {
  Child c;
  assert_true(c.start(other(0), kind, len, 61, nullptr, no_cuda));
  mc_engine_t *e = engine();
  assert_non_null(e);
  GpuMem src, dst, delay;
  src.alloc(0, "malloc", len);
  dst.alloc(0, "malloc", len);
  delay.alloc(0, "malloc", 64u << 20);
  assert_int_equal(mc_buffer_register(e, src.p(), len, nullptr), MC_OK);
  assert_int_equal(mc_buffer_register(e, dst.p(), len, nullptr), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, c.name.c_str(), &s), MC_OK);
  use_device(0);
  CUstream st;
  need(A->cuStreamCreate(&st, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  void *host = nullptr;
  need(A->cuMemHostAlloc(&host, len * iters, CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc");
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(e, 2 * iters, &b), MC_OK);
  CUdeviceptr sp = reinterpret_cast<CUdeviceptr>(src.p()), dp = reinterpret_cast<CUdeviceptr>(dst.p());
  for (int i = 0; i < iters; i++) {
    unsigned v = 0x51000000u + static_cast<unsigned>(i);
    need(A->cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(delay.p()), v, (64u << 20) / 4, st), "memset");
    need(A->cuMemsetD32Async(sp, v, len / 4, st), "memset");
    mc_request_t w{MC_WRITE, 0, src.p(), s, c.addr, len};
    assert_int_equal(mc_batch_submit_on_stream(b, &w, 1, st), MC_OK);
    need(A->cuMemsetD32Async(sp, 0xDEADBEEFu, len / 4, st), "memset");
    need(A->cuMemsetD32Async(dp, 0, len / 4, st), "memset");
    mc_request_t r{MC_READ, 0, dst.p(), s, c.addr, len};
    assert_int_equal(mc_batch_submit_on_stream(b, &r, 1, st), MC_OK);
    need(A->cuMemcpyDtoHAsync(static_cast<char *>(host) + len * i, dp, len, st), "dtoh");
  }
  need(A->cuStreamSynchronize(st), "cuStreamSynchronize");
  // Where the stream waited on the engine's flag (every path but nvlink's copies queued on the
  // stream itself, which its completion thread reports a moment later), the batch counted every
  // request ended before the stream went on: a poll finds it done.
  const bool flagged = no_cuda || std::getenv("MC_FAKE_CUDA");
  assert_int_equal(mc_batch_wait(b, flagged ? 0 : 60000 * slack()), MC_OK);
  int bad = 0;
  for (int i = 0; i < iters && bad < 3; i++) {
    const uint32_t *w = reinterpret_cast<const uint32_t *>(static_cast<char *>(host) + len * i);
    for (uint64_t k = 0; k < len / 4; k++)
      if (w[k] != 0x51000000u + static_cast<unsigned>(i)) {
        std::printf("  round %d word %llu: %08x\n", i, (unsigned long long)k, w[k]);
        bad++;
        break;
      }
  }
  assert_int_equal(bad, 0);
  std::printf("  %s: %d rounds of kernel -> WRITE -> kernel -> READ -> copy on one stream, %llu B each: verified\n",
              std::getenv("MC_FAKE_CUDA") ? "fake CUDA, shm" : no_cuda ? "tcp staging" : "nvlink", iters,
              (unsigned long long)len);
  // Under tests/fake_cuda (MC_FAKE_CUDA) "GPU" memory is host memory and goes over shm.
  if (!std::getenv("MC_FAKE_CUDA"))
    assert_true(stat_of(e, no_cuda ? "tcp" : "nvlink", no_cuda ? "bytes_sent" : "bytes_copied") >= len * iters);
  mc_batch_destroy(b);
  A->cuMemFreeHost(host);
  A->cuStreamDestroy(st);
  mc_engine_destroy(e);
}

void test_stream_nvlink(void **) { stream_rounds("malloc", false, 200, 256u << 10); }
void test_stream_tcp(void **) { stream_rounds("host", true, 40, 256u << 10); }

// The stream held behind work that does not end (it waits for a host word): a canceled batch
// ends the waiting requests CANCELED and releases the stream; an engine destroyed meanwhile
// does the same with MC_ERR_PEER_DOWN. Also: the legacy stream (NULL), and bad input.
void test_stream_cancel(void **) {
  Child c;
  assert_true(c.start(other(0), "host", 1 << 20, 71, nullptr, true));
  for (int destroy = 0; destroy < 2; destroy++) {
    mc_engine_t *e = engine();
    GpuMem src;
    src.alloc(0, "malloc", 1 << 20);
    assert_int_equal(mc_buffer_register(e, src.p(), 1 << 20, nullptr), MC_OK);
    mc_segment_t s;
    assert_int_equal(mc_segment_open(e, c.name.c_str(), &s), MC_OK);
    use_device(0);
    CUstream st;
    need(A->cuStreamCreate(&st, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    void *word = nullptr;
    need(A->cuMemHostAlloc(&word, 4096, CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP), "hostalloc");
    std::memset(word, 0, 4096);
    CUdeviceptr wd;
    need(A->cuMemHostGetDevicePointer(&wd, word, 0), "devptr");
    need(A->cuStreamWaitValue32(st, wd, 1, CU_STREAM_WAIT_VALUE_GEQ), "wait");
    mc_batch_t *b;
    assert_int_equal(mc_batch_create(e, 4, &b), MC_OK);
    mc_request_t w{MC_WRITE, 0, src.p(), s, c.addr, 1 << 20};
    assert_int_equal(mc_batch_submit_on_stream(b, &w, 1, st), MC_OK);
    usleep(50000);
    mc_request_status_t rs;
    assert_int_equal(mc_batch_status(b, 0, &rs), MC_OK);
    assert_int_equal(rs.state, MC_REQUEST_PENDING);  // the stream's earlier work has not ended
    if (destroy) {
      mc_engine_destroy(e);
    } else {
      assert_int_equal(mc_batch_cancel(b), MC_OK);
    }
    assert_int_equal(mc_batch_status(b, 0, &rs), MC_OK);
    assert_int_equal(rs.state, MC_REQUEST_FAILED);
    assert_int_equal(rs.error, destroy ? MC_ERR_PEER_DOWN : MC_ERR_CANCELED);
    __atomic_store_n(static_cast<uint32_t *>(word), 1u, __ATOMIC_RELEASE);  // the earlier work ends
    need(A->cuStreamSynchronize(st), "cuStreamSynchronize");
    if (!destroy) {
      // Bad input changes nothing; NOTIFY is refused; the legacy stream works.
      assert_int_equal(mc_batch_submit_on_stream(nullptr, &w, 1, st), MC_ERR_INVALID_ARG);
      assert_int_equal(mc_batch_submit_on_stream(b, nullptr, 1, st), MC_ERR_INVALID_ARG);
      mc_request_t n{MC_NOTIFY, 0, src.p(), s, 0, 4};
      assert_int_equal(mc_batch_submit_on_stream(b, &n, 1, st), MC_ERR_INVALID_ARG);
      mc_request_t far{MC_WRITE, 0, src.p(), s, c.addr + (1 << 20), 16};
      assert_int_equal(mc_batch_submit_on_stream(b, &far, 1, st), MC_ERR_OUT_OF_RANGE);
      assert_int_equal(mc_batch_reset(b), MC_OK);
      need(A->cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(src.p()), 0x01010101u, (1 << 20) / 4, nullptr), "memset");
      assert_int_equal(mc_batch_submit_on_stream(b, &w, 1, nullptr), MC_OK);
      need(A->cuStreamSynchronize(nullptr), "sync legacy");
      mc_request_status_t rs2;
      assert_int_equal(mc_batch_status(b, 0, &rs2), MC_OK);
      assert_int_equal(rs2.state, MC_REQUEST_COMPLETED);  // the stream went on only after it ended
      assert_int_equal(mc_batch_wait(b, 0), MC_OK);        // and after the batch counted it
      std::string chk = c.cmd("STATS");
      (void)chk;
      mc_engine_destroy(e);
    }
    assert_int_equal(mc_batch_destroy(b), MC_OK);
    A->cuMemFreeHost(word);
    A->cuStreamDestroy(st);
  }
  std::printf("  stream held by earlier work: cancel and destroy release it; legacy stream ordered\n");
}

// The line scripts/run-tests.sh reads for the reason (tests/testutil.h's tu_skip_note; this
// white-box program does not link testutil).
void skip_no_gpu(void **) {
  std::printf("MC-SKIP: no GPU: %s\n", why_unavailable().c_str());
  std::fflush(stdout);
  skip();
}

}  // namespace

int main(int argc, char **argv) {
  if (argc > 1 && std::strcmp(argv[1], "--serve") == 0) return serve(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  A = api();
  if (A) {
    g_ngpu = A->device_count;
    std::printf("wb_gpu: %d GPU(s), driver %d%s\n", g_ngpu, A->driver_version,
                g_ngpu < 2 ? " (one GPU: both processes use GPU 0)" : "");
  }
  const char *only = std::getenv("WB_GPU_ONLY");
  std::vector<CMUnitTest> all = {
      cmocka_unit_test(test_register),      cmocka_unit_test(test_malloc_0_to_1),
      cmocka_unit_test(test_malloc_1_to_0), cmocka_unit_test(test_vmm),
      cmocka_unit_test(test_host_gpu_tcp),  cmocka_unit_test(test_restart),
      cmocka_unit_test(test_nvlink_auth),   cmocka_unit_test(test_nvlink_access),
      cmocka_unit_test(test_rdma_dmabuf),   cmocka_unit_test(test_file_gpu),
      cmocka_unit_test(test_file_gds_faults), cmocka_unit_test(test_file_gds),
      cmocka_unit_test(test_stream_nvlink), cmocka_unit_test(test_stream_tcp),
      cmocka_unit_test(test_stream_cancel),
  };
  std::vector<CMUnitTest> run;
  for (auto &t : all)
    if (!only || std::strstr(t.name, only)) {
      // No GPU: every case runs as one that skips with the reason, so scripts/run-tests.sh
      // counts them as skipped, never as passed.
      if (!A) t.test_func = skip_no_gpu;
      run.push_back(t);
    }
  return _cmocka_run_group_tests("wb_gpu", run.data(), run.size(), nullptr, nullptr);
}
