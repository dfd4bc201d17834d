// One-GPU benchmark (issue 25): two processes sharing GPU 0 over nvlink (CUDA IPC).
//  1. Single requests, 4 KiB - 256 MiB, one at a time (submit, wait): latency and GB/s, beside
//     cuMemcpyAsync device-to-device + cuStreamSynchronize of the same bytes in one process.
//  2. Layers: `layers` rounds of kernel -> transfer -> kernel, the transfer either submitted
//     after a cuStreamSynchronize and waited on (the old way) or ordered on the stream with
//     mc_batch_submit_on_stream (no host synchronization until the end): time per layer.
//     The "kernel" is cuMemsetD32Async over 64 MiB (no nvcc here).
//
//   gpu_1gpu_bench [--quick]     gpu_1gpu_bench serve SIZE (the target, started by the above)
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mc.h>

#include "gpu/cuda_loader.h"

using namespace mc::cuda;

namespace {

const Api *A;

void need(CUresult r, const char *what) {
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "%s\n", error_text(what, r).c_str());
    std::exit(1);
  }
}
void need_mc(mc_status_t st, const char *what) {
  if (st != MC_OK) {
    std::fprintf(stderr, "%s: %s\n", what, mc_last_error());
    std::exit(1);
  }
}
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
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
  need_mc(mc_engine_create(c, &e), "engine");
  mc_config_destroy(c);
  return e;
}

int serve(uint64_t size) {
  use_device(0);
  CUdeviceptr p;
  need(A->cuMemAlloc(&p, size), "cuMemAlloc");
  need(A->cuMemsetD8(p, 0x5a, size), "cuMemsetD8");
  mc_engine_t *e = engine();
  need_mc(mc_buffer_register(e, reinterpret_cast<void *>(p), size, nullptr), "register");
  std::printf("READY %s %llu\n", mc_engine_name(e), (unsigned long long)p);
  std::fflush(stdout);
  char line[64];
  while (std::fgets(line, sizeof line, stdin)) {
  }
  mc_engine_destroy(e);
  return 0;
}

// Runs f until at least min_s passed and 5 times; seconds per call.
template <class F>
double per_call(F f, double min_s) {
  for (int i = 0; i < 3; i++) f();
  int n = 0;
  double t0 = now_s(), t;
  do {
    f();
    n++;
    t = now_s() - t0;
  } while (t < min_s || n < 5);
  return t / n;
}

}  // namespace

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  A = api();
  if (!A) {
    std::printf("gpu_1gpu_bench: skipped: %s\n", why_unavailable().c_str());
    return 0;
  }
  if (argc > 2 && std::strcmp(argv[1], "serve") == 0) return serve(std::strtoull(argv[2], nullptr, 10));
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const double min_s = quick ? 0.03 : 0.2;
  const uint64_t region = 512u << 20;
  int in[2], out[2];
  if (pipe(in) || pipe(out)) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    std::string sz = std::to_string(region);
    execl("/proc/self/exe", "gpu_1gpu_bench", "serve", sz.c_str(), (char *)nullptr);
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
  std::printf("gpu_1gpu_bench: %d GPU(s), driver %d; mc GPU0 -> GPU0 in another process (CUDA IPC)\n",
              A->device_count, A->driver_version);
  mc_engine_t *e = engine();
  use_device(0);
  CUdeviceptr local, other, work;
  need(A->cuMemAlloc(&local, region), "alloc");
  need(A->cuMemAlloc(&other, region), "alloc");
  need(A->cuMemAlloc(&work, 64u << 20), "alloc");
  need(A->cuMemsetD8(local, 0x33, region), "memset");
  need_mc(mc_buffer_register(e, reinterpret_cast<void *>(local), region, nullptr), "register");
  mc_segment_t seg;
  need_mc(mc_segment_open(e, nm, &seg), "open");
  CUstream st;
  need(A->cuStreamCreate(&st, CU_STREAM_NON_BLOCKING), "stream");
  mc_batch_t *b;
  need_mc(mc_batch_create(e, 1024, &b), "batch");

  // ---- 1. single requests
  std::printf("\nsingle request, one at a time (us per operation; GB/s = 1e9 B/s)\n");
  std::printf("%8s %14s %10s %14s %10s %8s %14s %10s\n", "size", "cuMemcpyAsync", "GB/s", "mc_1req_WRITE", "GB/s",
              "ratio", "mc_1req_READ", "GB/s");
  for (uint64_t sz = 4096; sz <= (256u << 20); sz *= 4) {
    double base = per_call(
        [&] {
          need(A->cuMemcpyAsync(other, local, sz, st), "copy");
          need(A->cuStreamSynchronize(st), "sync");
        },
        min_s);
    auto one = [&](uint32_t op) {
      return per_call(
          [&] {
            mc_request_t r{op, 0, reinterpret_cast<void *>(local), seg, raddr, sz};
            mc_batch_reset(b);
            need_mc(mc_batch_submit(b, &r, 1), "submit");
            need_mc(mc_batch_wait(b, -1), "wait");
          },
          min_s);
    };
    double w = one(MC_WRITE), r = one(MC_READ);
    std::printf("%8s %14.1f %10.1f %14.1f %10.1f %7.2fx %14.1f %10.1f\n", human(sz), base * 1e6, sz / base / 1e9,
                w * 1e6, sz / w / 1e9, w / base, r * 1e6, sz / r / 1e9);
  }

  // ---- 2. layers: kernel -> transfer -> kernel
  const int layers = 32;
  std::printf("\n%d layers of kernel (64 MiB memset) -> WRITE -> kernel, us per layer\n", layers);
  std::printf("%8s %16s %16s %12s %10s\n", "size", "sync+submit", "on_stream", "saved/layer", "kernel");
  for (uint64_t sz : {64ull << 10, 1ull << 20, 16ull << 20}) {
    auto kernel = [&] { need(A->cuMemsetD32Async(work, 7, (64u << 20) / 4, st), "kernel"); };
    double k = per_call(
        [&] {
          kernel();
          need(A->cuStreamSynchronize(st), "sync");
        },
        min_s);
    double old_way = per_call(
        [&] {
          mc_batch_reset(b);
          for (int l = 0; l < layers; l++) {
            kernel();
            need(A->cuStreamSynchronize(st), "sync");
            mc_request_t r{MC_WRITE, 0, reinterpret_cast<void *>(local + l * sz % (region - sz)), seg, raddr, sz};
            need_mc(mc_batch_submit(b, &r, 1), "submit");
            need_mc(mc_batch_wait(b, -1), "wait");
          }
          kernel();
          need(A->cuStreamSynchronize(st), "sync");
        },
        min_s);
    double on_stream = per_call(
        [&] {
          mc_batch_reset(b);
          for (int l = 0; l < layers; l++) {
            kernel();
            mc_request_t r{MC_WRITE, 0, reinterpret_cast<void *>(local + l * sz % (region - sz)), seg, raddr, sz};
            need_mc(mc_batch_submit_on_stream(b, &r, 1, st), "submit_on_stream");
          }
          kernel();
          need(A->cuStreamSynchronize(st), "sync");
          need_mc(mc_batch_wait(b, -1), "wait");
        },
        min_s);
    std::printf("%8s %16.1f %16.1f %12.1f %10.1f\n", human(sz), old_way / layers * 1e6, on_stream / layers * 1e6,
                (old_way - on_stream) / layers * 1e6, k * 1e6);
  }
  char stats[1 << 16];
  size_t need_len;
  mc_engine_stats_json(e, stats, sizeof stats, &need_len);
  const char *nv = std::strstr(stats, "\"nvlink\":{");
  std::printf("\nnvlink stats: %.*s\n", nv ? static_cast<int>(std::strcspn(nv, "}") + 1) : 0, nv ? nv : "");
  mc_batch_destroy(b);
  mc_engine_destroy(e);
  fclose(po);
  close(in[1]);
  waitpid(pid, nullptr, 0);
  return 0;
}
