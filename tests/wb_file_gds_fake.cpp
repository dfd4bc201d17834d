// The file transport's cuFile path on a machine without a GPU: runs wb_gpu's file cases
// (test_file_gpu, test_file_gds_faults, test_file_gds) against tests/fake_cuda's libcuda.so.1
// in its device mode (cuMemAlloc memory is reported as GPU 0's: MC_FAKE_CUDA_DEVICE=1) and
// tests/fake_cufile's libcufile.so.0 (pread and pwrite into that memory, with faults the cases
// set). It checks the choice of path, the fallback to the staging pool, the error paths and
// cancel wherever `make test` runs; the real libcufile and GPU memory need a GPU (wb_gpu).
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
  std::string cuda = dir + "/fake_cuda", cufile = dir + "/fake_cufile", prog = dir + "/wb_gpu";
  if (access((cuda + "/libcuda.so.1").c_str(), R_OK) != 0 || access((cufile + "/libcufile.so.0").c_str(), R_OK) != 0 ||
      access(prog.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "wb_file_gds_fake: %s/libcuda.so.1, %s/libcufile.so.0 or %s missing (make builds them)\n",
                 cuda.c_str(), cufile.c_str(), prog.c_str());
    return 1;
  }
  setenv("LD_LIBRARY_PATH", (cuda + ":" + cufile).c_str(), 1);
  setenv("MC_FAKE_CUDA", "1", 1);
  setenv("MC_FAKE_CUDA_DEVICE", "1", 1);
  setenv("MC_FAKE_CUFILE", "1", 1);
  setenv("WB_GPU_ONLY", "file", 1);
  unsetenv("MC_CUDA_DISABLE");
  char *const argv[] = {const_cast<char *>("wb_gpu"), nullptr};
  execv(prog.c_str(), argv);
  std::perror("execv wb_gpu");
  return 1;
}
