// A CUDA driver that arrives after the engine started (a framework imported later): a buffer
// registered with location NULL before it is host memory, one registered after it is seen on
// its GPU. gpu/cuda_loader.cpp remembers "the driver is not in this process" until the link map
// changes (registration asks once per buffer, and the look itself costs ~18 us); this checks
// that the remembered answer never hides a driver loaded later. The driver is tests/fake_cuda's
// libcuda.so.1 in device mode (its cuMemAlloc blocks are "device memory of GPU 0"); the program
// re-runs itself with LD_LIBRARY_PATH naming it, as the dynamic loader reads that only at start.
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gpu/cuda_loader.h"
#include "mc.h"

extern "C" {
#include <cmocka.h>

#include "testutil.h"
}

namespace {

// The location the engine recorded for the buffer at addr, "" when none.
std::string location_of(mc_engine_t *e, const void *addr) {
  mc_segment_t s;
  if (mc_segment_open(e, mc_engine_name(e), &s) != MC_OK) return "";
  std::vector<mc_buffer_info_t> bi(16);
  size_t n = 0;
  std::string loc;
  if (mc_segment_buffers(e, s, bi.data(), bi.size(), &n) == MC_OK)
    for (size_t i = 0; i < n && i < bi.size(); i++)
      if (bi[i].addr == reinterpret_cast<uint64_t>(addr)) loc = bi[i].location;
  mc_segment_close(e, s);
  return loc;
}

void test_driver_loaded_after_start(void **) {
  // Nothing loaded the driver yet: asked twice (the second answer is the remembered one).
  assert_null(dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD));
  assert_false(mc::cuda::driver_in_process());
  assert_false(mc::cuda::driver_in_process());
  mc_engine_t *e = tu_engine("transports", "local", (const char *)nullptr);
  assert_non_null(e);
  std::vector<char> host1(4096), host2(4096);
  assert_int_equal(mc_buffer_register(e, host1.data(), host1.size(), nullptr), MC_OK);
  assert_string_equal(location_of(e, host1.data()).c_str(), "cpu");

  // A framework loads the driver and allocates device memory.
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  assert_non_null(h);
  auto cu_init = reinterpret_cast<int (*)(unsigned)>(dlsym(h, "cuInit"));
  auto cu_alloc = reinterpret_cast<int (*)(uintptr_t *, size_t)>(dlsym(h, "cuMemAlloc_v2"));
  auto cu_free = reinterpret_cast<int (*)(uintptr_t)>(dlsym(h, "cuMemFree_v2"));
  assert_true(cu_init && cu_alloc && cu_free);
  assert_int_equal(cu_init(0), 0);
  uintptr_t dev = 0;
  assert_int_equal(cu_alloc(&dev, 1 << 20), 0);

  assert_true(mc::cuda::driver_in_process());
  void *d = reinterpret_cast<void *>(dev);
  assert_int_equal(mc_buffer_register(e, d, 1 << 20, nullptr), MC_OK);
  assert_string_equal(location_of(e, d).c_str(), "cuda:0");
  // Host memory registered after it stays cpu; the first buffer kept its location.
  assert_int_equal(mc_buffer_register(e, host2.data(), host2.size(), nullptr), MC_OK);
  assert_string_equal(location_of(e, host2.data()).c_str(), "cpu");
  assert_string_equal(location_of(e, host1.data()).c_str(), "cpu");
  assert_true(mc::cuda::driver_in_process());
  mc_engine_destroy(e);
  cu_free(dev);
}

// Re-runs this program with the fake driver on LD_LIBRARY_PATH (device mode); false when it
// cannot (the exec failed: the caller reports it).
bool rerun_with_fake_driver(char **argv) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return false;
  self[n] = 0;
  std::string dir(self);
  dir.resize(dir.rfind('/'));
  std::string lib = dir + "/fake_cuda";
  if (access((lib + "/libcuda.so.1").c_str(), R_OK) != 0) {
    std::fprintf(stderr, "wb_cuda_late: %s/libcuda.so.1 missing (make builds it)\n", lib.c_str());
    return false;
  }
  setenv("LD_LIBRARY_PATH", lib.c_str(), 1);
  setenv("MC_FAKE_CUDA_DEVICE", "1", 1);
  setenv("WB_CUDA_LATE_CHILD", "1", 1);
  unsetenv("MC_CUDA_DISABLE");
  execv(self, argv);
  std::perror("wb_cuda_late: execv");
  return false;
}

}  // namespace

int main(int, char **argv) {
  if (!std::getenv("WB_CUDA_LATE_CHILD")) return rerun_with_fake_driver(argv) ? 0 : 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_driver_loaded_after_start),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
