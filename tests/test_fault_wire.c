/* Control-channel garbage against an engine's listener: an HTTP request, random bytes (with and
 * without a valid magic), 100 MB length prefixes on every message type, truncated headers
 * (half-closed and held open), wrong versions, bad control payloads, a HELLO for another
 * incarnation. Each gets an error reply or a closed connection; meanwhile a verified transfer
 * between two engines keeps working, and the target's RSS does not grow. Also the other
 * direction: mc_segment_open against a listener that answers garbage or nothing fails cleanly
 * within timeout_ms. The wire header (src/proto/wire.h) is restated here on purpose: the test
 * pins the format as seen from outside. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "fault/fault_util.h"

#define MAGIC 0x3157434du
enum { T_GET_DESC = 1, T_DESC = 2, T_PING = 3, T_PONG = 4, T_WRITE = 5, T_WRITE_ACK = 6, T_READ = 7,
       T_READ_DATA = 8, T_ERROR = 9, T_CONTROL = 10, T_CONTROL_REPLY = 11, T_HELLO = 12,
       T_BIND = 16 };

#pragma pack(push, 1)
struct hdr {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  uint64_t id, addr, len;
  int32_t status;
  uint32_t aux;
};
#pragma pack(pop)
_Static_assert(sizeof(struct hdr) == 40, "40-byte wire header");

static struct hdr mk(uint16_t type, uint64_t addr, uint64_t len) {
  struct hdr h = {MAGIC, 1, type, 7, addr, len, 0, 0};
  return h;
}

#define TARGET_TIMEOUT_MS 1000
/* How long a garbage connection may stay without an answer or a close. */
#define ANSWER_BOUND_MS tu_slack_ms(3000)
/* Held-open truncated headers: the listener's handshake bound min(timeout_ms, 5000) + slack. */
#define HELD_BOUND_MS (TARGET_TIMEOUT_MS + tu_slack_ms(2000))

static mc_engine_t *g_tgt, *g_ini;
static char *g_tbuf;
static size_t g_tlen = 1 << 20;
static struct sockaddr_in g_addr;

static void parse_addr(const char *name, struct sockaddr_in *a) {
  char host[256];
  snprintf(host, sizeof host, "%s", name);
  char *colon = strrchr(host, ':');
  assert_non_null(colon);
  *colon = 0;
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)atoi(colon + 1));
  assert_int_equal(inet_pton(AF_INET, host, &a->sin_addr), 1);
}

static int dial(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  assert_int_equal(connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr), 0);
  return fd;
}

enum outcome { O_ERROR_REPLY = 1, O_CLOSED = 2, O_NOTHING = 4, O_OK_REPLY = 8 };

/* Reads what comes back within bound_ms: an error reply (ERROR, or any reply whose status is not
 * MC_OK), a close (EOF/RST), both, or nothing. */
static int observe(int fd, int bound_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)bound_ms;
  char buf[4096];
  size_t got = 0;
  int res = 0;
  for (;;) {
    uint64_t now = tu_now_ms();
    if (now >= deadline) break;
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, (int)(deadline - now));
    if (r <= 0) break;
    ssize_t k = recv(fd, buf + (got < sizeof buf ? got : 0), got < sizeof buf ? sizeof buf - got : sizeof buf, 0);
    if (k <= 0) {
      res |= O_CLOSED;
      break;
    }
    if (got < sizeof buf) got += (size_t)k;
    if (got >= sizeof(struct hdr)) {
      struct hdr h;
      memcpy(&h, buf, sizeof h);
      if (h.magic == MAGIC && (h.type == T_ERROR || h.status != 0)) res |= O_ERROR_REPLY;
      else res |= O_OK_REPLY;
      if (res & O_ERROR_REPLY) {
        /* An error reply: wait a little for the close that usually follows. */
        deadline = tu_now_ms() + 200 < deadline ? tu_now_ms() + 200 : deadline;
      }
    }
  }
  if (!res) res = O_NOTHING;
  return res;
}

static const char *oname(int o) {
  static char s[64];
  snprintf(s, sizeof s, "%s%s%s%s", o & O_ERROR_REPLY ? "error-reply " : "", o & O_CLOSED ? "closed " : "",
           o & O_NOTHING ? "nothing " : "", o & O_OK_REPLY ? "ok-reply " : "");
  return s;
}

/* Sends bytes; half-closes when shut. Returns the outcome. */
static int send_garbage(const void *data, size_t n, int shut, int bound_ms) {
  int fd = dial();
  size_t off = 0;
  while (off < n) {
    ssize_t k = send(fd, (const char *)data + off, n - off, MSG_NOSIGNAL);
    if (k <= 0) break; /* the engine may close on the first bad header */
    off += (size_t)k;
  }
  if (shut) shutdown(fd, SHUT_WR);
  int o = observe(fd, bound_ms);
  close(fd);
  return o;
}

/* ------------------------------------------------------------------ background verified traffic */

static volatile int g_stop; /* read and written with __atomic builtins */
static uint64_t g_ok, g_bad, g_fail;
static char g_fail_msg[256];

static void *traffic(void *arg) {
  mc_segment_t s = *(mc_segment_t *)arg;
  void *p = NULL;
  if (mc_buffer_alloc(g_ini, 2 * g_tlen, NULL, &p) != MC_OK) return NULL;
  char *w = p, *r = w + g_tlen;
  for (uint64_t k = 1; !__atomic_load_n(&g_stop, __ATOMIC_ACQUIRE); k++) {
    tu_fill(w, g_tlen, k);
    memset(r, 0, g_tlen);
    mc_request_t wr = {MC_WRITE, 0, w, s, (uint64_t)(uintptr_t)g_tbuf, g_tlen};
    mc_request_t rd = {MC_READ, 0, r, s, (uint64_t)(uintptr_t)g_tbuf, g_tlen};
    mc_status_t a = mc_transfer(g_ini, &wr, 1, tu_wait_ms(10000));
    mc_status_t b = a == MC_OK ? mc_transfer(g_ini, &rd, 1, tu_wait_ms(10000)) : a;
    if (a != MC_OK || b != MC_OK) {
      if (!g_fail++) snprintf(g_fail_msg, sizeof g_fail_msg, "%s", mc_last_error());
    } else if (tu_check(r, g_tlen, k) != -1) {
      g_bad++;
    } else {
      g_ok++;
    }
  }
  mc_buffer_free(g_ini, p);
  return NULL;
}

static int group_setup(void **state) {
  (void)state;
  g_tgt = tu_engine("timeout_ms", "1000", "transports", "tcp", NULL);
  g_ini = tu_engine("timeout_ms", "2000", "transports", "tcp", NULL);
  if (!g_tgt || !g_ini) return -1;
  void *p = NULL;
  if (mc_buffer_alloc(g_tgt, g_tlen, NULL, &p) != MC_OK) return -1;
  g_tbuf = p;
  parse_addr(mc_engine_name(g_tgt), &g_addr);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  mc_engine_destroy(g_ini);
  mc_engine_destroy(g_tgt);
  return 0;
}

/* One round of every kind of garbage; each must get an error reply or a close. */
static void garbage_round(unsigned seed, int verbose) {
  char msg[256];
  int o;
#define EXPECT(cond, ...)                              \
  do {                                                 \
    snprintf(msg, sizeof msg, __VA_ARGS__);            \
    if (verbose) print_message("  %-48s %s\n", msg, oname(o)); \
    if (!(cond)) fail_msg("%s: got %s", msg, oname(o)); \
  } while (0)
  const char *http = "GET / HTTP/1.1\r\nHost: mc\r\nUser-Agent: fault\r\n\r\n";
  o = send_garbage(http, strlen(http), 0, ANSWER_BOUND_MS);
  EXPECT(o & (O_ERROR_REPLY | O_CLOSED) && !(o & O_OK_REPLY), "HTTP GET");
  const char *post = "POST /v3/kv/put HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n{\"key\":";
  o = send_garbage(post, strlen(post), 0, ANSWER_BOUND_MS);
  EXPECT(o & (O_ERROR_REPLY | O_CLOSED) && !(o & O_OK_REPLY), "HTTP POST, 100 MB body announced");
  /* Random bytes. */
  srand(seed);
  static char rnd[70000];
  size_t lens[] = {1, 39, 40, 41, 4096, 65536};
  for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
    for (size_t j = 0; j < lens[i]; j++) rnd[j] = (char)rand();
    o = send_garbage(rnd, lens[i], 1, ANSWER_BOUND_MS);
    EXPECT(o & (O_ERROR_REPLY | O_CLOSED) && !(o & O_OK_REPLY), "%zu random bytes", lens[i]);
  }
  /* Random headers behind a valid magic and version (random type, addr, len up to 16 MiB). */
  for (int i = 0; i < 8; i++) {
    struct hdr h;
    for (size_t j = 0; j < sizeof h; j++) ((char *)&h)[j] = (char)rand();
    h.magic = MAGIC;
    h.version = 1;
    h.len &= 0xFFFFFF;
    if (h.type == T_PING || h.type == T_GET_DESC || h.type == T_HELLO) h.type = 200; /* valid requests answer OK */
    o = send_garbage(&h, sizeof h, 1, ANSWER_BOUND_MS);
    EXPECT(o & (O_ERROR_REPLY | O_CLOSED), "random header, type %u len %llu", h.type, (unsigned long long)h.len);
  }
  /* A 100 MB length prefix on every message type, header only, connection held open. */
  uint16_t types[] = {T_GET_DESC, T_DESC, T_PING, T_PONG, T_WRITE, T_WRITE_ACK, T_READ, T_READ_DATA,
                      T_ERROR, T_CONTROL, T_CONTROL_REPLY, T_HELLO, 13, 14, 15, 99};
  for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
    struct hdr h = mk(types[i], 0, 100ull << 20);
    o = send_garbage(&h, sizeof h, 0, ANSWER_BOUND_MS);
    EXPECT(o & (O_ERROR_REPLY | O_CLOSED), "type %u with a 100 MB length, addr 0", types[i]);
  }
  /* ... and at a registered address (the range check, not the address, must refuse it). */
  struct hdr hw = mk(T_WRITE, (uint64_t)(uintptr_t)g_tbuf, 100ull << 20);
  o = send_garbage(&hw, sizeof hw, 0, ANSWER_BOUND_MS);
  EXPECT(o & (O_ERROR_REPLY | O_CLOSED), "WRITE of 100 MB at a registered 1 MiB buffer");
  struct hdr hr = mk(T_READ, (uint64_t)(uintptr_t)g_tbuf, 100ull << 20);
  o = send_garbage(&hr, sizeof hr, 0, ANSWER_BOUND_MS);
  EXPECT(o & (O_ERROR_REPLY | O_CLOSED), "READ of 100 MB at a registered 1 MiB buffer");
  /* Truncated headers, half-closed. */
  struct hdr ping = mk(T_PING, 0, 0);
  size_t cuts[] = {1, 4, 8, 20, 39};
  for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
    o = send_garbage(&ping, cuts[i], 1, ANSWER_BOUND_MS);
    EXPECT(o & O_CLOSED && !(o & O_OK_REPLY), "PING header cut at %zu bytes, half-closed", cuts[i]);
  }
  /* Wrong versions. */
  uint16_t vers[] = {0, 2, 0x100, 0xFFFF};
  for (size_t i = 0; i < sizeof vers / sizeof *vers; i++) {
    struct hdr h = mk(T_PING, 0, 0);
    h.version = vers[i];
    o = send_garbage(&h, sizeof h, 0, ANSWER_BOUND_MS);
    EXPECT(o & (O_ERROR_REPLY | O_CLOSED) && !(o & O_OK_REPLY), "PING with wire version %u", vers[i]);
  }
  /* Control payloads: no channel name, unknown channel, bad JSON, cut short. */
  const char *bodies[] = {"no channel name at all", "nosuchchannel\0{}", "shm\0{\"op\":", "tcp\0\xff\xfe{{{"};
  size_t blen[] = {22, 16, 11, 9};
  for (size_t i = 0; i < 4; i++) {
    char m[128];
    struct hdr h = mk(T_CONTROL, 0, blen[i]);
    memcpy(m, &h, sizeof h);
    memcpy(m + sizeof h, bodies[i], blen[i]);
    o = send_garbage(m, sizeof h + blen[i], 0, ANSWER_BOUND_MS);
    EXPECT(o & (O_ERROR_REPLY | O_CLOSED) && !(o & O_OK_REPLY), "CONTROL payload %zu (bad channel/JSON)", i);
  }
  {
    char m[64];
    struct hdr h = mk(T_CONTROL, 0, 1000);
    memcpy(m, &h, sizeof h);
    memcpy(m + sizeof h, "shm\0{\"a\"", 8);
    o = send_garbage(m, sizeof h + 8, 1, ANSWER_BOUND_MS);
    EXPECT(o & O_CLOSED && !(o & O_OK_REPLY), "CONTROL payload cut short, half-closed");
  }
  /* A HELLO for another incarnation, then a WRITE behind it: refused, nothing written. */
  {
    char m[80 + 16];
    struct hdr h = mk(T_HELLO, 0x1234567890abcdefull, 0);
    struct hdr w = mk(T_WRITE, (uint64_t)(uintptr_t)g_tbuf, 16);
    memcpy(m, &h, 40);
    memcpy(m + 40, &w, 40);
    memset(m + 80, 0x5A, 16);
    o = send_garbage(m, sizeof m, 0, ANSWER_BOUND_MS);
    EXPECT(o & (O_ERROR_REPLY | O_CLOSED) && !(o & O_OK_REPLY), "HELLO for another incarnation + WRITE");
  }
#undef EXPECT
}

static void test_garbage(void **state) {
  (void)state;
  mc_segment_t s;
  assert_int_equal(mc_segment_open(g_ini, mc_engine_name(g_tgt), &s), MC_OK);
  g_stop = 0;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, traffic, &s), 0);
  garbage_round(1, 1); /* warm-up, printed */
  long rss0 = fu_rss_kb();
  int fd0 = fu_fd_count(), th0 = fu_thread_count();
  int rounds = 5 * tu_scale();
  for (int i = 0; i < rounds; i++) garbage_round(100 + (unsigned)i, 0);
  usleep(200000);
  long rss1 = fu_rss_kb();
  int fd1 = fu_fd_count(), th1 = fu_thread_count();
  __atomic_store_n(&g_stop, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  print_message("  %d more rounds: RSS %ld -> %ld KiB, fds %d -> %d, threads %d -> %d; traffic: %llu verified, "
                "%llu wrong, %llu failed\n",
                rounds, rss0, rss1, fd0, fd1, th0, th1, (unsigned long long)g_ok, (unsigned long long)g_bad,
                (unsigned long long)g_fail);
  if (g_fail) fail_msg("a transfer failed during the garbage: %s", g_fail_msg);
  assert_int_equal(g_bad, 0);
  assert_true(g_ok > 0);
  if (!FU_SANITIZED) assert_true(rss1 - rss0 < 8 * 1024);
  assert_true(fd1 - fd0 <= 2);
  assert_true(th1 - th0 <= 2);
  /* The target's buffer holds the last verified pattern, nothing from the garbage. */
  char *chk = malloc(g_tlen);
  memcpy(chk, g_tbuf, g_tlen);
  assert_int_equal(tu_check(chk, g_tlen, g_ok + g_fail + g_bad), -1);
  free(chk);
  /* A fresh engine still opens and uses it. */
  mc_engine_t *e2 = tu_engine("timeout_ms", "2000", "transports", "tcp", NULL);
  void *p = NULL;
  assert_int_equal(mc_buffer_alloc(e2, 4096, NULL, &p), MC_OK);
  mc_segment_t s2;
  assert_int_equal(mc_segment_open(e2, mc_engine_name(g_tgt), &s2), MC_OK);
  mc_request_t r = {MC_READ, 0, p, s2, (uint64_t)(uintptr_t)g_tbuf, 4096};
  assert_int_equal(mc_transfer(e2, &r, 1, tu_wait_ms(5000)), MC_OK);
  mc_engine_destroy(e2);
  mc_segment_close(g_ini, s);
}

/* Truncated headers on connections held open: the engine must not keep them forever. */
static void test_truncated_held_open(void **state) {
  (void)state;
  int th0 = fu_thread_count();
  struct hdr ping = mk(T_PING, 0, 0);
  size_t cuts[] = {0, 1, 20, 39};
  int fds[4];
  for (int i = 0; i < 4; i++) {
    fds[i] = dial();
    if (cuts[i]) assert_int_equal(send(fds[i], &ping, cuts[i], MSG_NOSIGNAL), (ssize_t)cuts[i]);
  }
  usleep(100000);
  print_message("  threads with 4 stalled connections: %d -> %d\n", th0, fu_thread_count());
  int bad = 0;
  for (int i = 0; i < 4; i++) {
    int o = observe(fds[i], HELD_BOUND_MS);
    print_message("  %zu bytes of a header, held open: %s\n", cuts[i], oname(o));
    if (!(o & O_CLOSED)) bad++;
    close(fds[i]);
  }
  if (bad) fail_msg("%d stalled connections still open after %d ms", bad, HELD_BOUND_MS);
}

/* BIND fences (src/proto/wire.h): a connection that names an older one of the same initiator is
 * served only after the older one ended; the older one, should it come later, is refused. */
static int send_all(int fd, const void *p, size_t n) {
  return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}
static int dial_bound(uint64_t nonce, uint64_t seq, const uint64_t *dead, size_t ndead) {
  int fd = dial();
  struct hdr hello = mk(T_HELLO, 0, 0);
  struct hdr bind = mk(T_BIND, seq, ndead * 8);
  bind.id = nonce;
  assert_int_equal(send_all(fd, &hello, sizeof hello), 0);
  assert_int_equal(send_all(fd, &bind, sizeof bind), 0);
  if (ndead) assert_int_equal(send_all(fd, dead, ndead * 8), 0);
  return fd;
}

static void test_bind_fence(void **state) {
  (void)state;
  uint64_t nonce = 0x5eed0000u + (uint64_t)getpid();
  /* A: a WRITE whose payload stops half way; its handler waits for the rest. */
  int a = dial_bound(nonce, 1, NULL, 0);
  struct hdr w = mk(T_WRITE, (uint64_t)(uintptr_t)g_tbuf, 4096);
  char half[100];
  memset(half, 0x5a, sizeof half);
  assert_int_equal(send_all(a, &w, sizeof w), 0);
  assert_int_equal(send_all(a, half, sizeof half), 0);
  usleep(100000);
  /* B names A: A is ended, then B's PING is answered. */
  uint64_t dead = 1;
  int b = dial_bound(nonce, 2, &dead, 1);
  struct hdr ping = mk(T_PING, 0, 0);
  assert_int_equal(send_all(b, &ping, sizeof ping), 0);
  int ob = observe(b, ANSWER_BOUND_MS);
  int oa = observe(a, ANSWER_BOUND_MS);
  print_message("  B (fences A): %s\n", oname(ob));
  print_message("  A (fenced): %s\n", oname(oa));
  assert_true(ob & O_OK_REPLY);
  assert_false(ob & O_ERROR_REPLY);
  assert_true(oa & O_CLOSED);
  /* A again, later (as if its BIND had been delayed): refused. */
  int a2 = dial_bound(nonce, 1, NULL, 0);
  assert_int_equal(send_all(a2, &ping, sizeof ping), 0);
  int oa2 = observe(a2, ANSWER_BOUND_MS);
  print_message("  A's BIND after B fenced it: %s\n", oname(oa2));
  assert_true((oa2 & O_ERROR_REPLY) && !(oa2 & O_OK_REPLY));
  /* Another initiator's connection number 1 is not concerned. */
  int o = dial_bound(nonce + 1, 1, NULL, 0);
  assert_int_equal(send_all(o, &ping, sizeof ping), 0);
  int oo = observe(o, ANSWER_BOUND_MS);
  assert_true((oo & O_OK_REPLY) && !(oo & O_ERROR_REPLY));
  /* Malformed BINDs: a length that is not a multiple of 8, more than 256 numbers, two BINDs. */
  struct hdr hello = mk(T_HELLO, 0, 0), bad = mk(T_BIND, 9, 7);
  char buf[sizeof hello + sizeof bad + 8] = {0};
  memcpy(buf, &hello, sizeof hello);
  memcpy(buf + sizeof hello, &bad, sizeof bad);
  assert_true(send_garbage(buf, sizeof buf, 0, ANSWER_BOUND_MS) & O_ERROR_REPLY);
  bad.len = 257 * 8;
  memcpy(buf + sizeof hello, &bad, sizeof bad);
  assert_true(send_garbage(buf, sizeof hello + sizeof bad, 0, ANSWER_BOUND_MS) & O_ERROR_REPLY);
  int twice = dial_bound(nonce + 2, 1, NULL, 0);
  struct hdr again = mk(T_BIND, 2, 0);
  assert_int_equal(send_all(twice, &again, sizeof again), 0);
  assert_true(observe(twice, ANSWER_BOUND_MS) & O_ERROR_REPLY);
  close(a), close(b), close(a2), close(o), close(twice);
  /* The half-written request changed nothing the engine promised: verified traffic still works. */
  tu_fill(g_tbuf, 4096, 3);
  assert_int_equal(tu_check(g_tbuf, 4096, 3), -1);
}

/* The other direction: a "peer" that answers garbage, or nothing. */
struct fake {
  int lfd;
  int mode; /* 0: HTTP reply, 1: silence, 2: a valid header announcing 100 MB then close, 3: wrong version */
  pthread_t th;
  volatile int stop;
};

static void *fake_main(void *arg) {
  struct fake *f = arg;
  int held[64], nh = 0;
  while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
    struct pollfd p = {f->lfd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    int c = accept(f->lfd, NULL, NULL);
    if (c < 0) continue;
    char buf[64];
    (void)!recv(c, buf, sizeof buf, MSG_DONTWAIT);
    if (f->mode == 0) {
      const char *r = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
      (void)!send(c, r, strlen(r), MSG_NOSIGNAL);
      close(c);
    } else if (f->mode == 1) {
      if (nh < 64) held[nh++] = c;
      else close(c);
    } else {
      struct hdr h = mk(f->mode == 2 ? T_DESC : T_PONG, 0, f->mode == 2 ? 100ull << 20 : 0);
      if (f->mode == 3) h.version = 9;
      (void)!send(c, &h, sizeof h, MSG_NOSIGNAL);
      (void)!send(c, "{\"name\":", 8, MSG_NOSIGNAL);
      close(c);
    }
  }
  for (int i = 0; i < nh; i++) close(held[i]);
  return NULL;
}

static void test_garbage_peer(void **state) {
  (void)state;
  const char *what[] = {"an HTTP reply", "silence", "a 100 MB descriptor cut short", "wire version 9"};
  for (int mode = 0; mode < 4; mode++) {
    struct fake f = {.mode = mode};
    f.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(bind(f.lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f.lfd, 16), 0);
    socklen_t al = sizeof a;
    getsockname(f.lfd, (struct sockaddr *)&a, &al);
    char name[64];
    snprintf(name, sizeof name, "127.0.0.1:%u", ntohs(a.sin_port));
    assert_int_equal(pthread_create(&f.th, NULL, fake_main, &f), 0);
    mc_engine_t *e = tu_engine("timeout_ms", "1000", NULL);
    mc_segment_t s;
    uint64_t t0 = tu_now_ms();
    long rss0 = fu_rss_kb();
    mc_status_t st = mc_segment_open(e, name, &s);
    uint64_t took = tu_now_ms() - t0;
    print_message("  open against %s: %s after %llu ms (%s), RSS %+ld KiB\n", what[mode], mc_status_str(st),
                  (unsigned long long)took, st ? mc_last_error() : "", fu_rss_kb() - rss0);
    assert_int_not_equal(st, MC_OK);
    assert_true(mc_last_error()[0] != 0);
    assert_true(took < 1000 + tu_slack_ms(1000));
    mc_engine_destroy(e);
    __atomic_store_n(&f.stop, 1, __ATOMIC_RELEASE);
    pthread_join(f.th, NULL);
    close(f.lfd);
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (getenv("FAULT_FILTER")) cmocka_set_test_filter(getenv("FAULT_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_truncated_held_open),
      cmocka_unit_test(test_bind_fence),
      cmocka_unit_test(test_garbage_peer),
  };
  return cmocka_run_group_tests_name("fault_wire", tests, group_setup, group_teardown);
}
