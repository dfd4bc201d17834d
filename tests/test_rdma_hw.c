/* The RDMA transport on a real NIC (tests/rdma_hw/README.md). Runs when MC_TEST_RDMA_DEVICE
 * names a device (e.g. mlx5_0); otherwise skips (counted as skipped by scripts/run-tests.sh) and says why.
 * Two engines in one process, each on that device (loopback through the NIC), move data both
 * ways with READ and WRITE of several sizes and check every byte. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "testutil.h"

static const char *device(void) {
  const char *d = getenv("MC_TEST_RDMA_DEVICE");
  return d && *d ? d : NULL;
}

static void test_hw_transfers(void **state) {
  (void)state;
  const char *dev = device();
  if (!dev) {
    TU_SKIP("no RDMA device: MC_TEST_RDMA_DEVICE is not set (set it to a device name such as "
            "mlx5_0 to run it)");
  }
  mc_engine_t *a = tu_engine("transports", "rdma", "rdma_devices", dev, "timeout_ms", "5000", NULL);
  mc_engine_t *b = tu_engine("transports", "rdma", "rdma_devices", dev, "timeout_ms", "5000", NULL);
  assert_non_null(a);
  assert_non_null(b);
  size_t len = 64 << 20;
  char *la = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char *rb = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(la != MAP_FAILED && rb != MAP_FAILED);
  assert_int_equal(mc_buffer_register(a, la, len, NULL), MC_OK);
  assert_int_equal(mc_buffer_register(b, rb, len, NULL), MC_OK);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(a, mc_engine_name(b), &seg), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(a, seg, &info), MC_OK);
  assert_string_equal(info.transport, "rdma");
  size_t sizes[] = {1, 4096, 65536, 1 << 20, 16 << 20, 64 << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    size_t n = sizes[i];
    tu_fill(la, n, 500 + i);
    memset(rb, 0, n);
    mc_request_t w = {MC_WRITE, 0, la, seg, (uint64_t)(uintptr_t)rb, n};
    assert_int_equal(mc_transfer(a, &w, 1, tu_wait_ms(20000)), MC_OK);
    assert_int_equal(tu_check(rb, n, 500 + i), -1);
    memset(la, 0, n);
    mc_request_t r = {MC_READ, 0, la, seg, (uint64_t)(uintptr_t)rb, n};
    assert_int_equal(mc_transfer(a, &r, 1, tu_wait_ms(20000)), MC_OK);
    assert_int_equal(tu_check(la, n, 500 + i), -1);
  }
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  munmap(la, len);
  munmap(rb, len);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_hw_transfers)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
