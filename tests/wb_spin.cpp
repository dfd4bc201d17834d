// White-box tests of the adaptive watch (src/util/spin.h): a watch that ran out halves the
// budget down to nothing, then every kProbeEvery-th wait tries a full one; one that paid restores it.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include "util/spin.h"

extern "C" {
#include <cmocka.h>
}

namespace {

using mc::AdaptiveSpin;

void halves_to_nothing_and_probes(void **) {
  AdaptiveSpin s(32);
  assert_int_equal(s.budget().count(), 32);
  int steps = 0;
  while (s.current_us() != 0) {
    s.wasted();
    steps++;
    assert_true(steps < 10);
  }
  assert_int_equal(steps, 5);  // 32 -> 16 -> 8 -> 4 -> 2 -> 0
  assert_int_equal(s.wasted_count(), 5);
  int full = 0;
  for (uint32_t i = 0; i < 4 * AdaptiveSpin::kProbeEvery; i++) {
    auto b = s.budget().count();
    assert_true(b == 0 || b == 32);
    full += b == 32;
  }
  assert_int_equal(full, 4);  // one probe in kProbeEvery waits
  s.paid();
  assert_int_equal(s.current_us(), 32);
  assert_int_equal(s.budget().count(), 32);
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {cmocka_unit_test(halves_to_nothing_and_probes)};
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
