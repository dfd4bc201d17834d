// mc_batch_submit_on_stream on a machine without a GPU: runs wb_gpu's stream cases
// (test_stream_nvlink, test_stream_tcp, test_stream_cancel) against tests/fake_cuda's
// libcuda.so.1, whose streams are threads and whose "device" memory is host memory. It checks
// the engine's side of the contract (requests start only after the stream's earlier work, the
// stream waits for them on the flag the engine writes, cancel and destroy release it) wherever
// `make test` runs; the copies on a real stream (nvlink) and the GPU's own waits need a GPU.
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>

int main() {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    std::perror("readlink /proc/self/exe");
    return 1;
  }
  self[n] = 0;
  std::string dir(self);
  dir.resize(dir.rfind('/'));
  std::string lib = dir + "/fake_cuda", prog = dir + "/wb_gpu";
  if (access((lib + "/libcuda.so.1").c_str(), R_OK) != 0 || access(prog.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "wb_stream_fake: %s/libcuda.so.1 or %s missing (make builds them)\n", lib.c_str(),
                 prog.c_str());
    return 1;
  }
  setenv("LD_LIBRARY_PATH", lib.c_str(), 1);
  setenv("MC_FAKE_CUDA", "1", 1);
  setenv("WB_GPU_ONLY", "stream", 1);
  unsetenv("MC_CUDA_DISABLE");
  char *const argv[] = {const_cast<char *>("wb_gpu"), nullptr};
  execv(prog.c_str(), argv);
  std::perror("execv wb_gpu");
  return 1;
}
