// White-box tests of the notification parts that the public API cannot reach alone: the NOTIFY
// wire codec (src/engine/notify_msg.h) refuses every malformed message with MC_ERR_INVALID_ARG
// and never throws, and the receive queue (src/engine/notify_inbox.h) keeps its bound and order
// and ticks its event fd once per queued notification.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <poll.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "engine/notify_inbox.h"
#include "proto/notify_msg.h"

extern "C" {
#include <cmocka.h>
}

using mc::NotifyInbox;
using mc::NotifyMsg;

static NotifyMsg sample() {
  NotifyMsg m;
  m.sender = "127.0.0.1:4242";
  m.sender_incarnation = 0x1122334455667788ull;
  m.target_incarnation = 0x99aabbccddeeff01ull;
  m.body = std::string("\0kv blocks 1,2,3\0", 17);
  return m;
}

static void test_roundtrip(void **) {
  NotifyMsg m = sample(), out;
  assert_true(NotifyMsg::decode(m.encode(), &out).ok());
  assert_string_equal(out.sender.c_str(), m.sender.c_str());
  assert_true(out.sender_incarnation == m.sender_incarnation);
  assert_true(out.target_incarnation == m.target_incarnation);
  assert_true(out.body == m.body);
  m.body.assign(MC_NOTIFY_MAX_BYTES, 'x');
  assert_true(NotifyMsg::decode(m.encode(), &out).ok());
  assert_int_equal(out.body.size(), MC_NOTIFY_MAX_BYTES);
}

static void refused(const std::string &bytes) {
  NotifyMsg out;
  mc::Status st = NotifyMsg::decode(bytes, &out);
  assert_false(st.ok());
  assert_int_equal(st.code(), MC_ERR_INVALID_ARG);
}

static void test_malformed(void **) {
  std::string good = sample().encode();
  for (size_t n = 0; n <= 24 + 14; n++) refused(good.substr(0, n));  // cut in the header or name
  std::string bad = good;
  bad[0] ^= 1;  // magic
  refused(bad);
  bad = good;
  bad[4] = 0, bad[5] = 0;  // empty sender name
  refused(bad);
  bad = good;
  bad[4] = 0, bad[5] = 1;  // 256-byte name
  refused(bad);
  bad = good;
  bad[6] = 1;  // reserved field
  refused(bad);
  bad = good;
  bad[4] = static_cast<char>(200);  // name longer than what follows
  refused(bad);
  NotifyMsg m = sample();
  m.body.assign(MC_NOTIFY_MAX_BYTES + 1, 'x');
  refused(m.encode());
  m = sample();
  m.sender_incarnation = 0;
  refused(m.encode());
  m = sample();
  m.target_incarnation = 0;
  refused(m.encode());
  m = sample();
  m.sender = std::string("a\0b", 3);
  refused(m.encode());
}

static bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

static void test_inbox_bound_order_fd(void **) {
  NotifyInbox in(3);
  assert_true(in.push("a", 1, "m0").ok());  // before the fd exists
  int fd = -1;
  assert_true(in.event_fd(&fd).ok());
  assert_true(readable(fd));  // what was queued before the fd was made still wakes
  uint64_t v = 0;
  assert_int_equal(read(fd, &v, sizeof v), 8);
  assert_false(readable(fd));
  assert_true(in.push("b", 2, "m1").ok());
  assert_true(in.push("c", 3, "m2").ok());
  mc::Status st = in.push("d", 4, "m3");
  assert_int_equal(st.code(), MC_ERR_BUSY);
  assert_int_equal(read(fd, &v, sizeof v), 8);
  assert_int_equal(v, 2);  // one tick per queued notification
  assert_int_equal(in.queued(), 3);
  assert_int_equal(in.refused_busy(), 1);
  char buf[8];
  std::string err;
  for (int i = 0; i < 3; i++) {
    mc_notification_t info{};
    info.size = sizeof info;
    assert_int_equal(in.recv(&info, buf, 1, &err), MC_ERR_BUFFER_TOO_SMALL);  // stays queued
    assert_int_equal(info.length, 2);
    assert_int_equal(in.recv(&info, buf, sizeof buf, &err), MC_OK);
    assert_memory_equal(buf, ("m" + std::to_string(i)).data(), 2);
    assert_int_equal(info.incarnation, i + 1);
  }
  mc_notification_t info{};
  info.size = sizeof info;
  assert_int_equal(in.recv(&info, buf, sizeof buf, &err), MC_ERR_NOT_FOUND);
  in.close_fd();
  assert_true(in.push("e", 5, "m4").ok());  // no fd: nothing to tick, nothing breaks
}

int main() {
  const CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_inbox_bound_order_fd),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
