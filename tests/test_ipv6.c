/* Listen addresses: IPv6 hosts in brackets ([::1]:0) wherever IPv4 works (engine name, control
 * channel, tcp data path), and port ranges HOST:LO-HI (the first free port; a full range fails
 * engine creation naming it). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

/* Whether this host can bind ::1 at all (an IPv6-less kernel cannot). */
static int have_ipv6_loopback(void) {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

/* A listening socket on host:port (family from host), or -1. */
static int hold_port(int v6, uint16_t port) {
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int rc;
  if (v6) {
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  } else {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  }
  if (rc != 0 || listen(fd, 4) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* A base port B with B, B+1, B+2 free now, held by fds[0..2]; 0 when none was found. */
static uint16_t find_three(int v6, int fds[3]) {
  for (int attempt = 0; attempt < 50; attempt++) {
    uint16_t b = (uint16_t)(20000 + (getpid() * 7 + attempt * 131) % 20000);
    int k = 0;
    for (; k < 3; k++) {
      fds[k] = hold_port(v6, (uint16_t)(b + k));
      if (fds[k] < 0) break;
    }
    if (k == 3) return b;
    while (k-- > 0) close(fds[k]);
  }
  return 0;
}

/* Creates an engine with listen=addr (tcp only); *st gets the status. */
static mc_engine_t *engine_on(const char *addr, mc_status_t *st) {
  mc_config_t *cfg = NULL;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "listen", addr), MC_OK);
  assert_int_equal(mc_config_set(cfg, "transports", "tcp,local"), MC_OK);
  mc_engine_t *e = NULL;
  *st = mc_engine_create(cfg, &e);
  mc_config_destroy(cfg);
  return e;
}

static void test_parse(void **state) {
  (void)state;
  mc_config_t *cfg = NULL;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  const char *good[] = {"[::1]:0", "[::]:7000", "127.0.0.1:1000-1010", "[::1]:5-5", "localhost:0",
                        "[fe80::1]:65535"};
  const char *bad[] = {"::1:0",       "[::1]",   "[::1]0",         "[zz::]:1", "[::1]:70000",
                       "1.2.3.4:9-3", "[::1]:0-4", "1.2.3.4:-",    "[1.2.3.4]:5", "host:1"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) assert_int_equal(mc_config_set(cfg, "listen", good[i]), MC_OK);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(mc_config_set(cfg, "listen", bad[i]), MC_ERR_INVALID_ARG);
  }
  mc_config_destroy(cfg);
}

/* Two engines on [::1] move data over tcp; the segment is opened through the control channel. */
static void test_ipv6_transfer(void **state) {
  (void)state;
  if (!have_ipv6_loopback()) TU_SKIP("this host cannot bind ::1 (no IPv6 loopback)");
  mc_status_t st;
  mc_engine_t *ini = engine_on("[::1]:0", &st);
  assert_int_equal(st, MC_OK);
  mc_engine_t *tgt = engine_on("[::1]:0", &st);
  assert_int_equal(st, MC_OK);
  assert_memory_equal(mc_engine_name(tgt), "[::1]:", 6);
  size_t len = 4 << 20;
  char *l = malloc(len), *r = malloc(len);
  assert_int_equal(mc_buffer_register(ini, l, len, NULL), MC_OK);
  assert_int_equal(mc_buffer_register(tgt, r, len, NULL), MC_OK);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(ini, mc_engine_name(tgt), &seg), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(ini, seg, &info), MC_OK);
  assert_string_equal(info.transport, "tcp");
  tu_fill(l, len, 61);
  memset(r, 0, len);
  mc_request_t w = {MC_WRITE, 0, l, seg, (uint64_t)(uintptr_t)r, len};
  assert_int_equal(mc_transfer(ini, &w, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(r, len, 61), -1);
  tu_fill(r, len, 62);
  mc_request_t rd = {MC_READ, 0, l, seg, (uint64_t)(uintptr_t)r + 4096, len - 8192};
  assert_int_equal(mc_transfer(ini, &rd, 1, tu_wait_ms(10000)), MC_OK);
  assert_memory_equal(l, r + 4096, len - 8192);
  mc_engine_destroy(ini);
  mc_engine_destroy(tgt);
  free(l);
  free(r);
}

/* listen=HOST:B-B+2 with B and B+1 taken binds B+2; with B..B+2 all taken creation fails
 * naming the range. Both families. */
static void check_range(int v6) {
  int fds[3];
  uint16_t b = find_three(v6, fds);
  if (!b) TU_SKIP("no three free adjacent ports found");
  close(fds[2]);  /* B+2 is the free one */
  char addr[64], want[64];
  snprintf(addr, sizeof addr, v6 ? "[::1]:%u-%u" : "127.0.0.1:%u-%u", b, b + 2);
  snprintf(want, sizeof want, v6 ? "[::1]:%u" : "127.0.0.1:%u", b + 2);
  mc_status_t st;
  mc_engine_t *e = engine_on(addr, &st);
  assert_int_equal(st, MC_OK);
  assert_string_equal(mc_engine_name(e), want);
  /* Now every port of the range is taken (two by us, one by e). */
  mc_engine_t *e2 = engine_on(addr, &st);
  assert_null(e2);
  assert_int_equal(st, MC_ERR_TRANSPORT);
  char range[32];
  snprintf(range, sizeof range, "%u-%u", b, b + 2);
  assert_non_null(strstr(mc_last_error(), range));
  mc_engine_destroy(e);
  close(fds[0]);
  close(fds[1]);
}

static void test_range_v4(void **state) {
  (void)state;
  check_range(0);
}

static void test_range_v6(void **state) {
  (void)state;
  if (!have_ipv6_loopback()) TU_SKIP("this host cannot bind ::1 (no IPv6 loopback)");
  check_range(1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_ipv6_transfer),
      cmocka_unit_test(test_range_v4),
      cmocka_unit_test(test_range_v6),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
