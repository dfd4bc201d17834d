// White-box tests of util/share_payoff.h: the size classes, the verdict on one shared call, the
// score that turns sharing off and on, and the probing runs while it is off.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cstdint>

#include "util/share_payoff.h"

extern "C" {
#include <cmocka.h>

#include "testutil.h"
}

namespace {

using mc::SharePayoff;

void classes(void **) {
  assert_int_equal(SharePayoff::class_of(0), -1);
  assert_int_equal(SharePayoff::class_of((64u << 10) - 1), -1);
  assert_int_equal(SharePayoff::class_of(64u << 10), 0);
  assert_int_equal(SharePayoff::class_of((128u << 10) - 1), 0);
  assert_int_equal(SharePayoff::class_of(1u << 20), 4);
  assert_int_equal(SharePayoff::class_of((16u << 20) - 1), 7);
  assert_int_equal(SharePayoff::class_of(16u << 20), -1);
}

// Calls of one class until sharing is off: every call shared and judged before that.
void turn_off(SharePayoff &p, int cls) {
  for (int i = 0; i < 64 && p.score(cls) >= 0; i++) {
    SharePayoff::Choice c = p.choose(cls);
    assert_true(c.share && c.judge);
    p.judge(cls, 2000, 1000, false);  // ended at twice the caller's own share: did not pay
  }
  assert_true(p.score(cls) < 0);
}

void verdicts(void **) {
  SharePayoff p;
  const int cls = SharePayoff::class_of(1u << 20);
  assert_true(p.score(cls) >= 0);  // starts by sharing
  // Within 1.6x of the caller's own share: paid; beyond: not; one CPU for both: never.
  int s = p.score(cls);
  p.judge(cls, 1500, 1000, false);
  assert_true(p.score(cls) > s);
  s = p.score(cls);
  p.judge(cls, 1700, 1000, false);
  assert_true(p.score(cls) < s);
  s = p.score(cls);
  p.judge(cls, 1000, 1000, true);
  assert_true(p.score(cls) < s);
  // The score stays within [kScoreMin, kScoreMax] however long a streak is.
  for (int i = 0; i < 100; i++) p.judge(cls, 1000, 1000, false);
  assert_int_equal(p.score(cls), SharePayoff::kScoreMax);
  for (int i = 0; i < 100; i++) p.judge(cls, 5000, 1000, false);
  assert_int_equal(p.score(cls), SharePayoff::kScoreMin);
  // Other classes are their own.
  assert_true(p.score(cls + 1) >= 0);
  p.judge(-1, 1, 1, false);  // outside the classes: ignored
  p.judge(SharePayoff::kClasses, 1, 1, false);
}

// While off: alone, except a run of kBurst shared calls in every kProbeEvery, the first of the
// run not judged; verdicts of the runs that paid turn sharing on again.
void probes(void **) {
  SharePayoff p;
  const int cls = 4;
  turn_off(p, cls);
  for (int round = 0; round < 3; round++) {
    uint32_t shared = 0, judged = 0;
    for (uint32_t i = 0; i < SharePayoff::kProbeEvery; i++) {
      SharePayoff::Choice c = p.choose(cls);
      shared += c.share;
      judged += c.judge;
      assert_true(!c.judge || c.share);
      if (c.judge) p.judge(cls, 5000, 1000, false);  // the probes did not pay: stays off
    }
    assert_int_equal(shared, SharePayoff::kBurst);
    assert_int_equal(judged, SharePayoff::kBurst - 1);
    assert_true(p.score(cls) < 0);
  }
  // One probe that pays turns sharing on again.
  uint32_t calls = 0;
  for (; calls < SharePayoff::kProbeEvery && p.score(cls) < 0; calls++) {
    SharePayoff::Choice c = p.choose(cls);
    if (c.judge) p.judge(cls, 1000, 1000, false);
  }
  assert_true(p.score(cls) >= 0);
  assert_true(calls <= SharePayoff::kProbeEvery);
  assert_true(p.choose(cls).share);
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {cmocka_unit_test(classes), cmocka_unit_test(verdicts),
                                     cmocka_unit_test(probes)};
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
