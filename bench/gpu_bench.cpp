// GPU benchmark: mc over nvlink (GPU0 here -> GPU1 in another process) beside the copy-engine
// limit (cuMemcpyPeerAsync), pinned host<->device copies and the staging stage alone.
//
//   gpu_bench [--quick]              runs everything, prints tables (GB/s = 1e9 bytes/s)
//   gpu_bench serve DEV SIZE         the target process (started by the above)
//
// GPU memory comes from mc's own driver loader (no nvcc, no CUDA headers); it links libmc.a.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mc.h>

#include "gpu/cuda_loader.h"
#include "gpu/gpu_staging.h"

using namespace mc::cuda;

namespace {

const Api *A;

void need(CUresult r, const char *what) {
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "%s\n", error_text(what, r).c_str());
    std::exit(1);
  }
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const uint64_t kSizes[] = {64u << 10, 256u << 10, 1u << 20, 4u << 20, 16u << 20, 64u << 20, 256u << 20};
const char *human(uint64_t n) {
  static char b[8][16];
  static int k = 0;
  char *s = b[k++ & 7];
  if (n >= (1u << 20))
    std::snprintf(s, 16, "%lluM", (unsigned long long)(n >> 20));
  else
    std::snprintf(s, 16, "%lluK", (unsigned long long)(n >> 10));
  return s;
}

mc_engine_t *engine() {
  mc_config_t *c;
  mc_config_create(&c);
  mc_config_set(c, "listen", "127.0.0.1:0");
  mc_engine_t *e = nullptr;
  if (mc_engine_create(c, &e) != MC_OK) {
    std::fprintf(stderr, "engine: %s\n", mc_last_error());
    std::exit(1);
  }
  mc_config_destroy(c);
  return e;
}

int serve(int dev, uint64_t size) {
  use_device(dev);
  CUdeviceptr p;
  need(A->cuMemAlloc(&p, size), "cuMemAlloc");
  need(A->cuMemsetD8(p, 0x5a, size), "cuMemsetD8");
  mc_engine_t *e = engine();
  if (mc_buffer_register(e, reinterpret_cast<void *>(p), size, nullptr) != MC_OK) {
    std::fprintf(stderr, "register: %s\n", mc_last_error());
    return 1;
  }
  std::printf("READY %s %llu\n", mc_engine_name(e), (unsigned long long)p);
  std::fflush(stdout);
  char line[64];
  while (std::fgets(line, sizeof line, stdin)) {
  }
  mc_engine_destroy(e);
  return 0;
}

// cuMemcpyPeerAsync GPU0 -> GPU1, n back-to-back copies of one size on one stream.
double peer_copy(int src_dev, int dst_dev, uint64_t size, int n) {
  use_device(dst_dev);
  CUdeviceptr dst;
  need(A->cuMemAlloc(&dst, size), "alloc");
  use_device(src_dev);
  CUdeviceptr src;
  need(A->cuMemAlloc(&src, size), "alloc");
  CUstream s;
  CUevent a, b;
  need(A->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "stream");
  need(A->cuEventCreate(&a, 0), "event");
  need(A->cuEventCreate(&b, 0), "event");
  CUcontext cs = primary_context(src_dev), cd = primary_context(dst_dev);
  if (src_dev != dst_dev) {  // peer access both ways, as cudaMemcpyPeerAsync users enable it
    CUresult r = A->cuCtxEnablePeerAccess(cd, 0);
    if (r != CUDA_SUCCESS && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED) need(r, "cuCtxEnablePeerAccess");
    use_device(dst_dev);
    r = A->cuCtxEnablePeerAccess(cs, 0);
    if (r != CUDA_SUCCESS && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED) need(r, "cuCtxEnablePeerAccess");
    use_device(src_dev);
  }
  for (int i = 0; i < 3; i++) need(A->cuMemcpyPeerAsync(dst, cd, src, cs, size, s), "peer");
  A->cuEventRecord(a, s);
  for (int i = 0; i < n; i++) need(A->cuMemcpyPeerAsync(dst, cd, src, cs, size, s), "peer");
  A->cuEventRecord(b, s);
  A->cuEventSynchronize(b);
  float ms = 0;
  A->cuEventElapsedTime(&ms, a, b);
  A->cuStreamDestroy(s);
  A->cuMemFree(src);
  use_device(dst_dev);
  A->cuMemFree(dst);
  return double(size) * n / (ms * 1e-3) / 1e9;
}

// Pinned host <-> device, n back-to-back copies.
double pinned(int dev, uint64_t size, bool h2d, int n) {
  use_device(dev);
  void *h;
  need(A->cuMemHostAlloc(&h, size, CU_MEMHOSTALLOC_PORTABLE), "hostalloc");
  CUdeviceptr d;
  need(A->cuMemAlloc(&d, size), "alloc");
  CUstream s;
  CUevent a, b;
  need(A->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "stream");
  need(A->cuEventCreate(&a, 0), "event");
  need(A->cuEventCreate(&b, 0), "event");
  for (int i = 0; i < n + 2; i++) {
    if (i == 2) A->cuEventRecord(a, s);
    if (h2d)
      need(A->cuMemcpyHtoDAsync(d, h, size, s), "htod");
    else
      need(A->cuMemcpyDtoHAsync(h, d, size, s), "dtoh");
  }
  A->cuEventRecord(b, s);
  A->cuEventSynchronize(b);
  float ms = 0;
  A->cuEventElapsedTime(&ms, a, b);
  A->cuStreamDestroy(s);
  A->cuMemFree(d);
  A->cuMemFreeHost(h);
  return double(size) * n / (ms * 1e-3) / 1e9;
}

// The staging copy stage alone (sink/source do nothing), as the TCP path runs it.
double staging(int dev, uint64_t size, bool out, int n) {
  use_device(dev);
  CUdeviceptr d;
  need(A->cuMemAlloc(&d, size), "alloc");
  std::string why;
  auto once = [&] {
    bool ok = out ? mc::gpu::stage_out(reinterpret_cast<void *>(d), size, [](const char *, uint64_t) { return true; }, &why)
                  : mc::gpu::stage_in(reinterpret_cast<void *>(d), size, [](char *, uint64_t) { return true; }, &why);
    if (!ok) {
      std::fprintf(stderr, "staging: %s\n", why.c_str());
      std::exit(1);
    }
  };
  once();
  double t0 = now_s();
  for (int i = 0; i < n; i++) once();
  double t = now_s() - t0;
  A->cuMemFree(d);
  return double(size) * n / t / 1e9;
}

}  // namespace

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  A = api();
  if (!A) {
    std::printf("gpu_bench: skipped: %s\n", why_unavailable().c_str());
    return 0;
  }
  if (argc > 3 && std::strcmp(argv[1], "serve") == 0) return serve(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10));
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  int ngpu = A->device_count;
  int rdev = ngpu > 1 ? 1 : 0;
  std::printf("gpu_bench: %d GPU(s), driver %d; mc GPU0 -> GPU%d in another process\n", ngpu, A->driver_version, rdev);

  // ---- baseline: the copy-engine limit
  std::vector<double> peer;
  for (uint64_t sz : kSizes) {
    int n = static_cast<int>(std::max<uint64_t>(20, std::min<uint64_t>(2000, (8ull << 30) / sz)));
    if (quick) n = std::max(5, n / 10);
    peer.push_back(peer_copy(0, rdev, sz, n));
  }

  // ---- mc over nvlink
  const uint64_t region = 512u << 20;
  int in[2], out[2];
  if (pipe(in) || pipe(out)) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    std::string d = std::to_string(rdev), sz = std::to_string(region);
    execl("/proc/self/exe", "gpu_bench", "serve", d.c_str(), sz.c_str(), (char *)nullptr);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  FILE *po = fdopen(out[0], "r");
  char line[512], nm[256];
  unsigned long long raddr = 0;
  if (!std::fgets(line, sizeof line, po) || std::sscanf(line, "READY %255s %llu", nm, &raddr) != 2) {
    std::fprintf(stderr, "target did not start\n");
    return 1;
  }
  mc_engine_t *e = engine();
  use_device(0);
  CUdeviceptr local;
  need(A->cuMemAlloc(&local, region), "alloc");
  need(A->cuMemsetD8(local, 0x33, region), "memset");
  if (mc_buffer_register(e, reinterpret_cast<void *>(local), region, nullptr) != MC_OK) {
    std::fprintf(stderr, "register: %s\n", mc_last_error());
    return 1;
  }
  mc_segment_t seg;
  if (mc_segment_open(e, nm, &seg) != MC_OK) {
    std::fprintf(stderr, "open: %s\n", mc_last_error());
    return 1;
  }
  // Two batches in flight, as back-to-back operations: one is submitted while the other runs.
  mc_batch_t *bs[2];
  mc_batch_create(e, 8192, &bs[0]);
  mc_batch_create(e, 8192, &bs[1]);
  mc_batch_t *b = bs[0];
  struct Row {
    double batch_w, batch_r, one_w, lat_us;
  };
  std::vector<Row> rows;
  for (uint64_t sz : kSizes) {
    // A batch of 256 MiB in requests of sz bytes, not adjacent (stride 2*sz), so none merge.
    uint64_t n = std::max<uint64_t>(1, (256u << 20) / sz);
    uint64_t stride = n > 1 ? 2 * sz : sz;
    std::vector<mc_request_t> reqs(n);
    auto submit = [&](mc_batch_t *bb, uint32_t op, uint64_t count) {
      for (uint64_t i = 0; i < count; i++)
        reqs[i] = {op, 0, reinterpret_cast<void *>(local + i * stride), seg, raddr + i * stride, sz};
      mc_batch_reset(bb);
      if (mc_batch_submit(bb, reqs.data(), count) != MC_OK) {
        std::fprintf(stderr, "submit: %s\n", mc_last_error());
        std::exit(1);
      }
    };
    auto wait = [&](mc_batch_t *bb) {
      if (mc_batch_wait(bb, -1) != MC_OK) {
        std::fprintf(stderr, "transfer: %s\n", mc_last_error());
        std::exit(1);
      }
    };
    auto run = [&](uint32_t op, uint64_t count) {
      submit(b, op, count);
      wait(b);
    };
    auto rate = [&](uint32_t op, uint64_t count) {
      for (int i = 0; i < 2; i++) run(op, count);
      int iters = 0;
      double t0 = now_s(), t;
      submit(bs[0], op, count);
      submit(bs[1], op, count);
      for (int i = 0;; i++) {
        wait(bs[i & 1]);
        iters++;
        t = now_s() - t0;
        if (t >= (quick ? 0.05 : 0.3) && iters >= 4) break;
        submit(bs[i & 1], op, count);
      }
      wait(bs[(iters) & 1]);
      iters++;
      t = now_s() - t0;
      return double(sz) * count * iters / t / 1e9;
    };
    Row r{};
    r.batch_w = rate(MC_WRITE, n);
    r.batch_r = rate(MC_READ, n);
    // One request per batch, waited on: the per-operation cost.
    int iters = 0;
    double t0 = now_s(), t;
    do {
      run(MC_WRITE, 1);
      iters++;
      t = now_s() - t0;
    } while (t < (quick ? 0.05 : 0.2) || iters < 5);
    r.one_w = double(sz) * iters / t / 1e9;
    r.lat_us = t / iters * 1e6;
    rows.push_back(r);
  }
  mc_batch_destroy(bs[0]);
  mc_batch_destroy(bs[1]);
  char stats[1 << 16];
  size_t need_len;
  mc_engine_stats_json(e, stats, sizeof stats, &need_len);
  const char *nv = std::strstr(stats, "\"nvlink\":{");
  std::printf("nvlink stats: %.*s\n", nv ? static_cast<int>(std::strcspn(nv, "}") + 1) : 0, nv ? nv : "");
  mc_engine_destroy(e);
  fclose(po);
  close(in[1]);
  waitpid(pid, nullptr, 0);

  std::printf("\nGPU0 -> GPU%d, GB/s (1e9 B/s)\n", rdev);
  std::printf("%8s %12s %14s %14s %14s %12s %8s\n", "block", "peer_copy", "mc_batch_WRITE", "mc_batch_READ",
              "mc_1req_WRITE", "mc_1req_us", "ratio");
  for (size_t i = 0; i < rows.size(); i++)
    std::printf("%8s %12.1f %14.1f %14.1f %14.1f %12.1f %7.0f%%\n", human(kSizes[i]), peer[i], rows[i].batch_w,
                rows[i].batch_r, rows[i].one_w, rows[i].lat_us, 100.0 * rows[i].batch_w / peer[i]);

  // ---- host <-> device and staging
  std::printf("\nhost<->GPU0, GB/s\n%8s %10s %10s %12s %12s\n", "size", "pinned_H2D", "pinned_D2H", "stage_in",
              "stage_out");
  for (uint64_t sz : {4ull << 20, 64ull << 20, 256ull << 20}) {
    int n = quick ? 3 : std::max(4, static_cast<int>((2ull << 30) / sz));
    double h2d = pinned(0, sz, true, n), d2h = pinned(0, sz, false, n);
    double si = staging(0, sz, false, n), so = staging(0, sz, true, n);
    std::printf("%8s %10.1f %10.1f %7.1f(%3.0f%%) %7.1f(%3.0f%%)\n", human(sz), h2d, d2h, si, 100 * si / h2d, so,
                100 * so / d2h);
  }
  return 0;
}
