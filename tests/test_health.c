/* The health monitor's batched probes (engine/health.h) seen from the public API:
 * - many segment handles opened on one peer engine cost one BEAT per heartbeat per peer
 *   address, not one per handle (counted by mc_engine_stats_json's "health" object), sent by
 *   the peer on a connection the engine WATCHes (proto/wire.h, Heartbeats);
 * - the wire side of WATCH: a BEAT at once and every period after, the incarnation in each,
 *   and a connection that sends anything after WATCH is closed;
 * - a peer that does not take WATCH (an older engine, MC_TEST_NO_WATCH=1) is PINGed instead,
 *   and still seen down when it hangs;
 * - a peer that hangs without closing anything (SIGSTOP) is still seen UNREACHABLE within
 *   peer_timeout_ms plus one heartbeat, comes back OK as the same incarnation after SIGCONT,
 *   and a killed one is seen down at once through the end of its kept connection.
 * The hung and killed peer is this program re-run with --peer (tu_spawn_self). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

#define HB_MS 100
#define PTO_MS 500
#define HANDLES 64

/* A counter of the engine's "health" stats object. */
static uint64_t health_stat(mc_engine_t *e, const char *key) {
  static char buf[1 << 16];
  size_t need = 0;
  assert_int_equal(mc_engine_stats_json(e, buf, sizeof buf, &need), MC_OK);
  const char *h = strstr(buf, "\"health\":{");
  assert_non_null(h);
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *v = strstr(h, k);
  assert_non_null(v);
  return strtoull(v + strlen(k), NULL, 10);
}

/* Answers heard on kept connections: BEATs seen and PINGs sent. */
static uint64_t heard(mc_engine_t *e) { return health_stat(e, "batched_pings") + health_stat(e, "beats"); }
static uint64_t probes(mc_engine_t *e) { return heard(e) + health_stat(e, "probe_steps"); }

static uint32_t state_of(mc_engine_t *e, mc_segment_t s, uint64_t *incarnation, uint64_t *rejoins) {
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(e, s, &info), MC_OK);
  if (incarnation) *incarnation = info.incarnation;
  if (rejoins) *rejoins = info.rejoins;
  return info.state;
}

/* Polls every 2 ms until the segment is in state; returns the ms it took, or -1 past limit_ms. */
static long wait_state(mc_engine_t *e, mc_segment_t s, uint32_t state, uint64_t limit_ms) {
  uint64_t t0 = tu_now_ms();
  while (state_of(e, s, NULL, NULL) != state) {
    if (tu_now_ms() - t0 > limit_ms) return -1;
    usleep(2000);
  }
  return (long)(tu_now_ms() - t0);
}

static void test_one_ping_per_peer_address(void **state) {
  (void)state;
  char hb[16];
  snprintf(hb, sizeof hb, "%d", HB_MS);
  mc_engine_t *a = tu_engine("heartbeat_ms", hb, NULL);
  mc_engine_t *b = tu_engine(NULL), *c = tu_engine(NULL);
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  mc_segment_t s[2 * HANDLES];
  for (int i = 0; i < HANDLES; i++) {
    assert_int_equal(mc_segment_open(a, mc_engine_name(b), &s[i]), MC_OK);
    assert_int_equal(mc_segment_open(a, mc_engine_name(c), &s[HANDLES + i]), MC_OK);
  }
  /* Settled: each peer's first probe step made the connection the batched PINGs go on. */
  uint64_t until = tu_now_ms() + tu_slack_ms(3000);
  while ((health_stat(a, "connections_kept") != 2 || heard(a) < 4) && tu_now_ms() < until) usleep(10000);
  assert_int_equal(health_stat(a, "connections_kept"), 2);
  assert_int_equal(health_stat(a, "connections_watched"), 2);
  uint64_t p0 = probes(a), b0 = heard(a), t0 = tu_now_ms();
  uint64_t pings0 = health_stat(a, "batched_pings");
  usleep(1500 * 1000);
  uint64_t p1 = probes(a), b1 = heard(a), ms = tu_now_ms() - t0;
  /* Sent up to heartbeat/16 early to share a wake-up: at most one per (15/16 heartbeat) per
   * address, plus one in flight at each end of the window. */
  uint64_t most = 2 * (ms * 16 / (HB_MS * 15) + 2);
  print_message("%d handles on 2 peer engines: %llu probes in %llu ms (%llu batched), at most %llu allowed\n",
                2 * HANDLES, (unsigned long long)(p1 - p0), (unsigned long long)ms, (unsigned long long)(b1 - b0),
                (unsigned long long)most);
  assert_true(p1 - p0 <= most);
  assert_true(p1 - p0 >= 2 * 3); /* every address is probed: several heartbeats passed */
  assert_true(b1 - b0 > (p1 - p0) / 2); /* mostly the batched way, on the kept connections */
  assert_int_equal(health_stat(a, "batched_pings"), pings0); /* watched: no PING sent at all */
  for (int i = 0; i < 2 * HANDLES; i++) assert_int_equal(state_of(a, s[i], NULL, NULL), MC_SEGMENT_OK);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  mc_engine_destroy(c);
}

/* --peer: one engine with a buffer; prints its name and lives until stdin closes or it is
 * killed. */
static int peer_main(void) {
  mc_engine_t *e = tu_engine(NULL);
  static char buf[4096];
  if (!e || mc_buffer_register(e, buf, sizeof buf, "cpu") != MC_OK) return 1;
  printf("%s\n", mc_engine_name(e));
  fflush(stdout);
  char ch;
  while (read(0, &ch, 1) > 0) {
  }
  mc_engine_destroy(e);
  return 0;
}

/* old_peer: the peer answers WATCH as an older engine would (MC_TEST_NO_WATCH=1 in its
 * environment), so this engine PINGs it. */
static void hung_peer_case(int old_peer) {
  int to_child;
  FILE *from = NULL;
  if (old_peer) setenv("MC_TEST_NO_WATCH", "1", 1);
  pid_t pid = tu_spawn_self(&to_child, &from, "--peer", (char *)NULL);
  unsetenv("MC_TEST_NO_WATCH");
  assert_true(pid > 0);
  char name[128] = "";
  assert_non_null(fgets(name, sizeof name, from));
  name[strcspn(name, "\n")] = 0;
  char hb[16], pto[16];
  snprintf(hb, sizeof hb, "%d", HB_MS);
  snprintf(pto, sizeof pto, "%d", PTO_MS);
  /* tcp only and no transfer: no data connection whose end would report the peer first. */
  mc_engine_t *a = tu_engine("transports", "tcp", "heartbeat_ms", hb, "peer_timeout_ms", pto, NULL);
  assert_non_null(a);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(a, name, &s), MC_OK);
  uint64_t inc0 = 0, inc = 0, rejoins = 0;
  state_of(a, s, &inc0, NULL);
  uint64_t until = tu_now_ms() + tu_slack_ms(3000);
  const char *way = old_peer ? "batched_pings" : "beats";
  while (health_stat(a, way) < 3 && tu_now_ms() < until) usleep(10000);
  print_message("%s peer: %llu %s, %llu kept connections watched\n", old_peer ? "older" : "current",
                (unsigned long long)health_stat(a, way), way, (unsigned long long)health_stat(a, "connections_watched"));
  assert_true(health_stat(a, way) >= 3);
  assert_int_equal(health_stat(a, "connections_watched"), old_peer ? 0 : 1);
  /* Hung: its kernel still holds the connection open, only the PINGs go unanswered. */
  kill(pid, SIGSTOP);
  long down = wait_state(a, s, MC_SEGMENT_UNREACHABLE, tu_slack_ms(10 * (PTO_MS + HB_MS)));
  print_message("SIGSTOP: unreachable after %ld ms (peer_timeout_ms + heartbeat_ms = %d)\n", down, PTO_MS + HB_MS);
  assert_true(down >= 0);
  /* + 100 ms: the hand-offs from the missed PONG to the probe steps and their connects. */
  assert_true((uint64_t)down <= tu_slack_ms(PTO_MS + HB_MS) + 100);
  kill(pid, SIGCONT);
  long up = wait_state(a, s, MC_SEGMENT_OK, tu_slack_ms(3000));
  print_message("SIGCONT: OK again after %ld ms\n", up);
  assert_true(up >= 0);
  assert_int_equal(state_of(a, s, &inc, &rejoins), MC_SEGMENT_OK);
  assert_int_equal(inc, inc0);
  assert_int_equal(rejoins, 0);
  /* Back on a kept connection, then killed: its end is seen before any PING is missed. */
  uint64_t b0 = heard(a);
  until = tu_now_ms() + tu_slack_ms(3000);
  while (heard(a) < b0 + 2 && tu_now_ms() < until) usleep(10000);
  uint64_t e0 = health_stat(a, "connections_ended");
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  long gone = wait_state(a, s, MC_SEGMENT_UNREACHABLE, tu_slack_ms(10 * (PTO_MS + HB_MS)));
  print_message("SIGKILL: unreachable after %ld ms\n", gone);
  assert_true(gone >= 0);
  assert_true((uint64_t)gone <= tu_slack_ms(PTO_MS + HB_MS));
  assert_true(health_stat(a, "connections_ended") > e0);
  close(to_child);
  fclose(from);
  mc_engine_destroy(a);
}

static void test_hung_peer_seen_down(void **state) {
  (void)state;
  hung_peer_case(0);
}

static void test_older_peer_pinged(void **state) {
  (void)state;
  hung_peer_case(1);
}

enum { W_MAGIC = 0x3157434d, W_PING = 3, W_ERROR = 9, W_HELLO = 12, W_WATCH = 17, W_BEAT = 18 };

static void send_hdr(int fd, uint16_t type, uint64_t id, uint64_t addr) {
  struct tu_wire_hdr h = {W_MAGIC, 1, type, id, addr, 0, 0, 0};
  assert_int_equal(send(fd, &h, sizeof h, MSG_NOSIGNAL), (ssize_t)sizeof h);
}

/* Reads one header within limit_ms; 0 when the connection ended or nothing came. */
static int recv_hdr(int fd, struct tu_wire_hdr *h, int limit_ms) {
  struct timeval tv = {limit_ms / 1000, (limit_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return recv(fd, h, sizeof *h, MSG_WAITALL) == (ssize_t)sizeof *h;
}

/* The wire side: WATCH on an admitted control connection of a token-less engine gets a BEAT at
 * once, then one every period (clamped to 10 ms at least), each with the WATCH's id and the
 * engine's incarnation; a request sent after WATCH ends the connection. */
static void test_watch_on_the_wire(void **state) {
  (void)state;
  mc_engine_t *b = tu_engine(NULL), *a = tu_engine(NULL);
  assert_non_null(b);
  assert_non_null(a);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(a, mc_engine_name(b), &s), MC_OK);
  uint64_t inc = 0;
  state_of(a, s, &inc, NULL);
  int fd = tu_dial(mc_engine_name(b));
  assert_true(fd >= 0);
  send_hdr(fd, W_HELLO, 0, 0);
  send_hdr(fd, W_WATCH, 77, 1); /* 1 ms: clamped to 10 */
  struct tu_wire_hdr h;
  uint64_t t0 = tu_now_ms();
  int beats = 0;
  while (beats < 11 && recv_hdr(fd, &h, (int)tu_slack_ms(1000))) {
    assert_int_equal(h.magic, W_MAGIC);
    assert_int_equal(h.type, W_BEAT);
    assert_int_equal(h.id, 77);
    assert_int_equal(h.addr, inc);
    assert_int_equal(h.len, 0);
    beats++;
  }
  uint64_t ms = tu_now_ms() - t0;
  print_message("WATCH with a 1 ms period: %d BEATs in %llu ms (10 ms apart at least)\n", beats,
                (unsigned long long)ms);
  assert_int_equal(beats, 11);
  assert_true(ms >= 10 * 10 - 5); /* the first at once, ten periods for the rest */
  send_hdr(fd, W_PING, 1, 0);
  int ended = 0;
  for (int i = 0; i < 100 && !ended; i++) {
    if (!recv_hdr(fd, &h, (int)tu_slack_ms(1000))) ended = 1; /* closed (after any ERROR) */
    else assert_true(h.type == W_BEAT || h.type == W_ERROR);
  }
  assert_true(ended);
  close(fd);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--peer") == 0) return peer_main();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_ping_per_peer_address),
      cmocka_unit_test(test_hung_peer_seen_down),
      cmocka_unit_test(test_older_peer_pinged),
      cmocka_unit_test(test_watch_on_the_wire),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
