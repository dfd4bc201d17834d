/* Access control: engines admit each other with a shared auth_token (mutual HMAC-SHA256
 * challenge-response on every TCP connection and same-host socket), buffers say what peers may
 * do with them, and unadmitted connections are bounded.
 *
 * The raw-protocol cases play a client (or a server) by hand: they compute the HMACs with the
 * libcrypto that libmc already loaded (looked up with dlsym), so they can record a good exchange
 * and replay it. Wire format and handshake: src/proto/wire.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

#define TOKEN "correct horse battery staple 0123456789"
#define OTHER "a different secret of enough length 98765"

/* ------------------------------------------------------------------ wire (see src/proto/wire.h) */

enum { PING = 3, PONG = 4, ERROR = 9, HELLO = 12, CHALLENGE = 13, RESPONSE = 14, AUTH_OK = 15 };

static struct tu_wire_hdr mk(uint16_t type, uint64_t addr, uint64_t len) {
  struct tu_wire_hdr h = {0x3157434d, 1, type, 1, addr, len, 0, 0};
  return h;
}

/* ------------------------------------------------------------------ HMAC through libcrypto */

typedef const void *(*md_fn)(void);
typedef unsigned char *(*hmac_fn)(const void *, const void *, int, const unsigned char *, size_t,
                                  unsigned char *, unsigned int *);

static void hmac(const char *token, const char *label, const uint8_t *a, const uint8_t *b, uint8_t out[32]) {
  static hmac_fn h;
  static md_fn sha;
  if (!h) {
    h = (hmac_fn)dlsym(RTLD_DEFAULT, "HMAC");
    sha = (md_fn)dlsym(RTLD_DEFAULT, "EVP_sha256");
    if (!h || !sha) {
      void *lib = dlopen("libcrypto.so.3", RTLD_NOW);
      assert_non_null(lib);
      h = (hmac_fn)dlsym(lib, "HMAC");
      sha = (md_fn)dlsym(lib, "EVP_sha256");
    }
  }
  assert_non_null(h);
  uint8_t msg[16 + 64];
  memcpy(msg, label, 16);
  memcpy(msg + 16, a, 32);
  memcpy(msg + 48, b, 32);
  unsigned int n = 0;
  assert_non_null(h(sha(), token, (int)strlen(token), msg, sizeof msg, out, &n));
  assert_int_equal(n, 32);
}

/* ------------------------------------------------------------------ helpers */

/* Asserts MC_OK and shows mc_last_error() when not. */
#define OK(call)                                                                              \
  do {                                                                                        \
    mc_status_t st_ = (call);                                                                 \
    if (st_ != MC_OK) fail_msg("%s: %s (%s)", #call, mc_status_str(st_), mc_last_error());   \
  } while (0)

/* Waits up to 2 s for a counter to reach at least min. */
static uint64_t stat_u64(mc_engine_t *e, const char *obj, const char *key);
static uint64_t wait_stat(mc_engine_t *e, const char *obj, const char *key, uint64_t min) {
  uint64_t v = 0;
  for (int i = 0; i < 200 * tu_slack() && (v = stat_u64(e, obj, key)) < min; i++) usleep(10 * 1000);
  return v;
}

static void quiet(int level, const char *msg, void *user) {
  (void)level;
  (void)msg;
  (void)user;
}

static int port_of(mc_engine_t *e) { return atoi(strrchr(mc_engine_name(e), ':') + 1); }

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void put(int fd, const void *p, size_t n) { assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n); }

/* Reads exactly n bytes; false on EOF, reset or timeout. */
static int get(int fd, void *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv(fd, (char *)p + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    got += (size_t)r;
  }
  return 1;
}

/* Reads an ERROR's text into buf. */
static void get_error(int fd, const struct tu_wire_hdr *h, char *buf, size_t cap) {
  assert_int_equal(h->type, ERROR);
  assert_true(h->len < cap);
  assert_true(get(fd, buf, h->len));
  buf[h->len] = 0;
}

static uint64_t stat_u64(mc_engine_t *e, const char *obj, const char *key) {
  static char js[1 << 16];
  size_t need;
  assert_int_equal(mc_engine_stats_json(e, js, sizeof js, &need), MC_OK);
  const char *o = strstr(js, obj);
  assert_non_null(o);
  const char *k = strstr(o, key);
  assert_non_null(k);
  return strtoull(k + strlen(key) + 1, NULL, 10);
}

/* The engine's same-host socket name: "mc-shm-<pid>-<incarnation>" (in this process). */
static void shm_name(mc_engine_t *e, char *out, size_t cap) {
  snprintf(out, cap, "mc-shm-%d-%016llx", (int)getpid(), (unsigned long long)stat_u64(e, "{", "\"incarnation\""));
}

static void roundtrip(mc_engine_t *e, mc_segment_t s, char *l, uint64_t remote, size_t len, uint64_t seed) {
  tu_fill(l, len, seed);
  mc_request_t w = {MC_WRITE, 0, l, s, remote, len};
  assert_int_equal(mc_transfer(e, &w, 1, tu_wait_ms(10000)), MC_OK);
  memset(l, 0, len);
  mc_request_t r = {MC_READ, 0, l, s, remote, len};
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(l, len, seed), -1);
}

/* ------------------------------------------------------------------ admission over the API */

static void test_same_token_admitted(void **state) {
  (void)state;
  size_t len = 1 << 20;
  mc_engine_t *a = tu_engine("auth_token", TOKEN, NULL);
  mc_engine_t *b = tu_engine("auth_token", TOKEN, "transports", "tcp", NULL);
  mc_engine_t *c = tu_engine("auth_token", TOKEN, NULL); /* default: shm to a same-host peer */
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  void *ta = NULL, *lb = NULL, *lc = NULL;
  assert_int_equal(mc_buffer_alloc(a, len, NULL, &ta), MC_OK);
  assert_int_equal(mc_buffer_alloc(b, len, NULL, &lb), MC_OK);
  assert_int_equal(mc_buffer_alloc(c, len, NULL, &lc), MC_OK);
  mc_segment_t sb, sc;
  OK(mc_segment_open(b, mc_engine_name(a), &sb));
  OK(mc_segment_open(c, mc_engine_name(a), &sc));
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(b, sb, &info), MC_OK);
  assert_string_equal(info.transport, "tcp");
  assert_int_equal(mc_segment_query(c, sc, &info), MC_OK);
  assert_string_equal(info.transport, "shm");
  roundtrip(b, sb, lb, (uint64_t)(uintptr_t)ta, len, 1);
  roundtrip(c, sc, lc, (uint64_t)(uintptr_t)ta, len, 2);
  assert_true(stat_u64(b, "\"tcp\":{", "\"bytes_sent\"") >= len);
  assert_true(stat_u64(c, "\"shm\":{", "\"bytes_copied\"") >= 2 * len);
  assert_true(stat_u64(a, "\"control\":{", "\"handshakes_admitted\"") >= 3);
  assert_int_equal(stat_u64(a, "\"control\":{", "\"handshakes_denied\""), 0);
  mc_engine_destroy(b);
  mc_engine_destroy(c);
  mc_engine_destroy(a);
}

static void expect_denied(mc_engine_t *from, mc_engine_t *to, const char *why) {
  mc_segment_t s;
  assert_int_equal(mc_segment_open(from, mc_engine_name(to), &s), MC_ERR_DENIED);
  const char *msg = mc_last_error();
  if (!strstr(msg, why)) fail_msg("message \"%s\" does not say \"%s\"", msg, why);
  assert_null(strstr(msg, TOKEN));
  assert_null(strstr(msg, OTHER));
}

static void test_wrong_or_missing_token_denied(void **state) {
  (void)state;
  mc_engine_t *a = tu_engine("auth_token", TOKEN, NULL);
  mc_engine_t *wrong = tu_engine("auth_token", OTHER, NULL);
  mc_engine_t *none = tu_engine(NULL);
  assert_non_null(a);
  assert_non_null(wrong);
  assert_non_null(none);
  expect_denied(wrong, a, "different auth_token"); /* wrong token, found by the client */
  expect_denied(none, a, "requires an auth_token"); /* token-less engine refused by the cluster */
  expect_denied(a, none, "has no auth_token");       /* and the reverse */
  assert_string_equal(mc_status_str(MC_ERR_DENIED), "access denied");
  /* The server learned each outcome too. */
  assert_true(wait_stat(a, "\"control\":{", "\"handshakes_denied\"", 2) >= 2);
  assert_true(wait_stat(none, "\"control\":{", "\"handshakes_denied\"", 1) >= 1);
  assert_int_equal(stat_u64(a, "\"control\":{", "\"handshakes_admitted\""), 0);
  mc_engine_destroy(wrong);
  mc_engine_destroy(none);
  mc_engine_destroy(a);
}

static void test_token_config(void **state) {
  (void)state;
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "auth_token", ""), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "auth_token", "secret\x01value"), MC_ERR_INVALID_ARG);
  assert_null(strstr(mc_last_error(), "secret")); /* never echoed */
  mc_config_destroy(cfg);
  /* MC_AUTH_TOKEN from the environment, like every key. */
  setenv("MC_AUTH_TOKEN", TOKEN, 1);
  mc_engine_t *a = tu_engine(NULL);
  mc_engine_t *b = tu_engine(NULL);
  mc_engine_t *c = tu_engine("auth_token", OTHER, NULL);
  unsetenv("MC_AUTH_TOKEN");
  mc_engine_t *d = tu_engine(NULL);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(b, mc_engine_name(a), &s), MC_OK);
  assert_int_equal(mc_segment_open(c, mc_engine_name(a), &s), MC_ERR_DENIED);
  assert_int_equal(mc_segment_open(d, mc_engine_name(a), &s), MC_ERR_DENIED);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  mc_engine_destroy(c);
  mc_engine_destroy(d);
}

/* ------------------------------------------------------------------ raw TCP: replay, reflection */

/* A recorded good exchange, reused by the replay cases. */
static uint8_t g_nonce_c[32], g_challenge[64], g_response[32];

static void test_tcp_raw_handshake_and_replay(void **state) {
  (void)state;
  mc_engine_t *a = tu_engine("auth_token", TOKEN, NULL);
  assert_non_null(a);
  int port = port_of(a);
  char text[4200];
  struct tu_wire_hdr h;

  /* A good client: HELLO + nonce, check the server's proof, answer, then a PING. */
  int fd = dial(port);
  for (int i = 0; i < 32; i++) g_nonce_c[i] = (uint8_t)(rand() ^ i);
  struct tu_wire_hdr hello = mk(HELLO, 0, 32);
  put(fd, &hello, sizeof hello);
  put(fd, g_nonce_c, 32);
  assert_true(get(fd, &h, sizeof h));
  assert_int_equal(h.type, CHALLENGE);
  assert_int_equal(h.len, 64);
  assert_true(get(fd, g_challenge, 64));
  uint8_t want[32];
  hmac(TOKEN, "mc-auth-1 server", g_nonce_c, g_challenge, want);
  assert_memory_equal(want, g_challenge + 32, 32); /* the server proved the token */
  hmac(TOKEN, "mc-auth-1 client", g_challenge, g_nonce_c, g_response);
  struct tu_wire_hdr resp = mk(RESPONSE, 0, 32), ping = mk(PING, 0, 0);
  put(fd, &resp, sizeof resp);
  put(fd, g_response, 32);
  put(fd, &ping, sizeof ping); /* pipelined right behind the answer */
  assert_true(get(fd, &h, sizeof h));
  assert_int_equal(h.type, AUTH_OK);
  assert_true(get(fd, &h, sizeof h));
  assert_int_equal(h.type, PONG);
  close(fd);

  /* Replay: the same HELLO and the same answer on a new connection. The server draws a new
   * nonce, so the recorded answer does not match: DENIED, and the PING gets no PONG. */
  fd = dial(port);
  put(fd, &hello, sizeof hello);
  put(fd, g_nonce_c, 32);
  assert_true(get(fd, &h, sizeof h));
  assert_int_equal(h.type, CHALLENGE);
  uint8_t ch2[64];
  assert_true(get(fd, ch2, 64));
  assert_memory_not_equal(ch2, g_challenge, 32);
  put(fd, &resp, sizeof resp);
  put(fd, g_response, 32);
  put(fd, &ping, sizeof ping);
  assert_true(get(fd, &h, sizeof h));
  get_error(fd, &h, text, sizeof text);
  assert_int_equal(h.status, MC_ERR_DENIED);
  assert_non_null(strstr(text, "does not match"));
  assert_false(get(fd, &h, sizeof h)); /* closed, no PONG */
  close(fd);

  /* Reflection: the server's own proof sent back as the client's. */
  fd = dial(port);
  put(fd, &hello, sizeof hello);
  put(fd, g_nonce_c, 32);
  assert_true(get(fd, &h, sizeof h));
  uint8_t ch3[64];
  assert_true(get(fd, ch3, 64));
  put(fd, &resp, sizeof resp);
  put(fd, ch3 + 32, 32);
  assert_true(get(fd, &h, sizeof h));
  get_error(fd, &h, text, sizeof text);
  assert_int_equal(h.status, MC_ERR_DENIED);
  close(fd);

  /* No HELLO at all, and a HELLO without a nonce: refused before anything is served. */
  fd = dial(port);
  put(fd, &ping, sizeof ping);
  assert_true(get(fd, &h, sizeof h));
  get_error(fd, &h, text, sizeof text);
  assert_int_equal(h.status, MC_ERR_DENIED);
  close(fd);
  fd = dial(port);
  struct tu_wire_hdr bare = mk(HELLO, 0, 0);
  put(fd, &bare, sizeof bare);
  put(fd, &ping, sizeof ping);
  assert_true(get(fd, &h, sizeof h));
  get_error(fd, &h, text, sizeof text);
  assert_int_equal(h.status, MC_ERR_DENIED);
  assert_non_null(strstr(text, "requires an auth_token"));
  close(fd);
  assert_true(wait_stat(a, "\"control\":{", "\"handshakes_denied\"", 4) >= 4);
  mc_engine_destroy(a);
}

/* A fake server that answers any HELLO with the challenge recorded above: a client with the
 * right token must refuse it (its nonce is fresh, so the recorded proof cannot match). */
static int g_fake_listen;
static void *fake_server(void *arg) {
  (void)arg;
  for (int k = 0; k < 2; k++) {
    int fd = accept(g_fake_listen, NULL, NULL);
    if (fd < 0) return NULL;
    struct tu_wire_hdr h;
    uint8_t nonce[32];
    if (get(fd, &h, sizeof h) && h.type == HELLO && h.len == 32 && get(fd, nonce, 32)) {
      struct tu_wire_hdr c = mk(CHALLENGE, 0, 64);
      send(fd, &c, sizeof c, MSG_NOSIGNAL);
      send(fd, g_challenge, 64, MSG_NOSIGNAL);
      char sink[256];
      while (recv(fd, sink, sizeof sink, 0) > 0) {
      }
    }
    close(fd);
  }
  return NULL;
}

static void test_tcp_replayed_challenge_refused_by_client(void **state) {
  (void)state;
  g_fake_listen = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(g_fake_listen, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(g_fake_listen, 4), 0);
  socklen_t sl = sizeof sa;
  getsockname(g_fake_listen, (struct sockaddr *)&sa, &sl);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, fake_server, NULL), 0);
  mc_engine_t *b = tu_engine("auth_token", TOKEN, "timeout_ms", "2000", NULL);
  char name[64];
  snprintf(name, sizeof name, "127.0.0.1:%d", ntohs(sa.sin_port));
  mc_segment_t s;
  assert_int_equal(mc_segment_open(b, name, &s), MC_ERR_DENIED);
  assert_non_null(strstr(mc_last_error(), "different auth_token"));
  mc_engine_destroy(b);
  shutdown(g_fake_listen, SHUT_RDWR);
  close(g_fake_listen);
  pthread_join(th, NULL);
}

/* ------------------------------------------------------------------ raw same-host socket */

static int unix_dial(const char *name) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path + 1, name, strlen(name));
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name))), 0);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void usend(int fd, const char *text) {
  uint32_t n = (uint32_t)strlen(text);
  put(fd, &n, 4);
  if (n) put(fd, text, n);
}

/* One message (4-byte length + text) and the fd it carried, or -1. 0 on EOF. */
static int urecv(int fd, char *buf, size_t cap, int *got_fd) {
  *got_fd = -1;
  uint32_t n = 0;
  struct iovec iov = {&n, 4};
  char cbuf[CMSG_SPACE(sizeof(int))];
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
  ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  if (r <= 0) return 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(got_fd, CMSG_DATA(c), sizeof(int));
  if (r < 4 && !get(fd, (char *)&n + r, 4 - (size_t)r)) return 0;
  assert_true(n < cap);
  if (n && !get(fd, buf, n)) return 0;
  buf[n] = 0;
  return 1;
}

static void hex(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
}
static void unhex(const char *s, uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    sscanf(s + 2 * i, "%2x", &v);
    out[i] = (uint8_t)v;
  }
}

static void test_shm_raw_handshake_and_replay(void **state) {
  (void)state;
  mc_engine_t *a = tu_engine("auth_token", TOKEN, NULL);
  assert_non_null(a);
  char name[64], msg[4096], line[256];
  shm_name(a, name, sizeof name);
  uint64_t inc = stat_u64(a, "{", "\"incarnation\"");
  int got;

  /* No nonce: denied, no control page. */
  int fd = unix_dial(name);
  snprintf(line, sizeof line, "HELLO %016llx", (unsigned long long)inc);
  usend(fd, line);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_int_equal(got, -1);
  assert_int_equal(strncmp(msg, "ERR DENIED ", 11), 0);
  close(fd);

  /* A good exchange, recorded. */
  uint8_t nc[32], ns[32], ps[32], want[32], pc[32];
  for (int i = 0; i < 32; i++) nc[i] = (uint8_t)(i * 7 + 3);
  char nch[65], pch[65];
  hex(nc, 32, nch);
  snprintf(line, sizeof line, "HELLO %016llx %s", (unsigned long long)inc, nch);
  fd = unix_dial(name);
  usend(fd, line);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_int_equal(got, -1);
  assert_int_equal(strncmp(msg, "CHALLENGE ", 10), 0);
  unhex(msg + 10, ns, 32);
  unhex(msg + 75, ps, 32);
  hmac(TOKEN, "mc-auth-1 server", nc, ns, want);
  assert_memory_equal(want, ps, 32);
  hmac(TOKEN, "mc-auth-1 client", ns, nc, pc);
  hex(pc, 32, pch);
  char auth[80];
  snprintf(auth, sizeof auth, "AUTH %s", pch);
  usend(fd, auth);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_true(got >= 0); /* the control page, only now */
  assert_non_null(strstr(msg, "\"pid\""));
  close(got);
  close(fd);

  /* Replay of the recorded HELLO and AUTH: new server nonce, no match, no fd. */
  fd = unix_dial(name);
  usend(fd, line);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_int_equal(strncmp(msg, "CHALLENGE ", 10), 0);
  usend(fd, auth);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_int_equal(got, -1);
  assert_int_equal(strncmp(msg, "ERR DENIED ", 11), 0);
  close(fd);

  /* A wrong token's answer: denied. */
  fd = unix_dial(name);
  usend(fd, line);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  unhex(msg + 10, ns, 32);
  hmac(OTHER, "mc-auth-1 client", ns, nc, pc);
  hex(pc, 32, pch);
  snprintf(auth, sizeof auth, "AUTH %s", pch);
  usend(fd, auth);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_int_equal(got, -1);
  assert_int_equal(strncmp(msg, "ERR DENIED ", 11), 0);
  close(fd);

  /* Asking for a buffer without HELLO is refused too. */
  fd = unix_dial(name);
  usend(fd, "LIST");
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_int_equal(strncmp(msg, "ERR", 3), 0);
  close(fd);
  assert_true(wait_stat(a, "\"shm\":{", "\"handshakes_denied\"", 3) >= 3);

  /* A token-less engine's same-host socket refuses a client that brings a nonce. */
  mc_engine_t *n = tu_engine(NULL);
  shm_name(n, name, sizeof name);
  snprintf(line, sizeof line, "HELLO %016llx %s", (unsigned long long)stat_u64(n, "{", "\"incarnation\""), nch);
  fd = unix_dial(name);
  usend(fd, line);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_int_equal(got, -1);
  assert_int_equal(strncmp(msg, "ERR DENIED ", 11), 0);
  close(fd);
  mc_engine_destroy(n);
  mc_engine_destroy(a);
}

/* ------------------------------------------------------------------ per-buffer access */

/* Target a, initiator b (transports as given). Read-only and write-only buffers are enforced by
 * the initiator's check (fresh descriptor) and by the target (stale descriptor). */
static void access_case(const char *transports) {
  size_t len = 256 << 10;
  mc_engine_t *a = tu_engine("auth_token", TOKEN, NULL);
  mc_engine_t *b = tu_engine("auth_token", TOKEN, "transports", transports, NULL);
  void *ta = NULL;
  char *lb = NULL;
  assert_int_equal(mc_buffer_alloc(a, len, NULL, &ta), MC_OK);
  assert_int_equal(mc_buffer_alloc(b, len, NULL, (void **)&lb), MC_OK);
  uint64_t remote = (uint64_t)(uintptr_t)ta;
  tu_fill(ta, len, 100);
  /* Argument checks. */
  assert_int_equal(mc_buffer_set_access(a, ta, 4), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_buffer_set_access(a, (char *)ta + 1, MC_ACCESS_READ), MC_ERR_NOT_FOUND);

  mc_segment_t s;
  assert_int_equal(mc_segment_open(b, mc_engine_name(a), &s), MC_OK); /* descriptor: read-write */
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(b, s, &info), MC_OK);
  assert_string_equal(info.transport, strcmp(transports, "tcp") == 0 ? "tcp" : "shm");

  /* Read-only, the initiator still holding the old (read-write) descriptor: the target side
   * refuses the WRITE and nothing is written; READs work. */
  assert_int_equal(mc_buffer_set_access(a, ta, MC_ACCESS_READ), MC_OK);
  tu_fill(lb, len, 200);
  mc_request_t w = {MC_WRITE, 0, lb, s, remote, len};
  assert_int_equal(mc_transfer(b, &w, 1, tu_wait_ms(10000)), MC_ERR_DENIED);
  assert_int_equal(tu_check(ta, len, 100), -1);
  memset(lb, 0, len);
  mc_request_t r = {MC_READ, 0, lb, s, remote, len};
  assert_int_equal(mc_transfer(b, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(tu_check(lb, len, 100), -1);

  /* A fresh descriptor (another initiator): refused at submit, with the request's index. */
  mc_engine_t *b2 = tu_engine("auth_token", TOKEN, "transports", transports, NULL);
  void *lb2 = NULL;
  OK(mc_buffer_alloc(b2, len, NULL, &lb2));
  mc_segment_t s2;
  OK(mc_segment_open(b2, mc_engine_name(a), &s2));
  mc_batch_t *bt;
  assert_int_equal(mc_batch_create(b2, 4, &bt), MC_OK);
  mc_request_t two[2] = {{MC_READ, 0, lb2, s2, remote, 4096}, {MC_WRITE, 0, lb2, s2, remote, 4096}};
  assert_int_equal(mc_batch_submit(bt, two, 2), MC_ERR_DENIED);
  assert_non_null(strstr(mc_last_error(), "request 1"));
  assert_int_equal(mc_batch_destroy(bt), MC_OK);
  /* After a change to read-write the stale (read-only) descriptor is refreshed once. */
  assert_int_equal(mc_buffer_set_access(a, ta, MC_ACCESS_READ | MC_ACCESS_WRITE), MC_OK);
  tu_fill(lb2, 4096, 250);
  mc_request_t w2 = {MC_WRITE, 0, lb2, s2, remote, 4096};
  OK(mc_transfer(b2, &w2, 1, tu_wait_ms(10000)));
  assert_int_equal(tu_check(ta, 4096, 250), -1);
  mc_engine_destroy(b2);

  /* Write-only: READs refused by the target (nothing lands locally), WRITEs work. */
  assert_int_equal(mc_buffer_set_access(a, ta, MC_ACCESS_WRITE), MC_OK);
  memset(lb, 0x5a, len);
  assert_int_equal(mc_transfer(b, &r, 1, tu_wait_ms(10000)), MC_ERR_DENIED);
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)lb[i] != 0x5a) fail_msg("a refused READ wrote local byte %zu", i);
  tu_fill(lb, len, 300);
  OK(mc_transfer(b, &w, 1, tu_wait_ms(10000)));
  assert_int_equal(tu_check(ta, len, 300), -1);
  assert_int_equal(mc_transfer(b, &r, 1, tu_wait_ms(10000)), MC_ERR_DENIED);

  /* No access at all, then both again. */
  assert_int_equal(mc_buffer_set_access(a, ta, 0), MC_OK);
  assert_int_equal(mc_transfer(b, &w, 1, tu_wait_ms(10000)), MC_ERR_DENIED);
  assert_int_equal(mc_buffer_set_access(a, ta, MC_ACCESS_READ | MC_ACCESS_WRITE), MC_OK);
  roundtrip(b, s, lb, remote, len, 400);
  assert_int_equal(tu_check(ta, len, 400), -1);
  mc_engine_destroy(b);
  mc_engine_destroy(a);
}

static void test_access_tcp(void **state) {
  (void)state;
  access_case("tcp");
}

static void test_access_shm(void **state) {
  (void)state;
  access_case("shm,tcp");
}

/* The same-host socket hands a read-only buffer's memfd read-only (no writable mapping can be
 * made from it) and refuses the memfd of a buffer peers may not read. */
static void test_shm_readonly_fd(void **state) {
  (void)state;
  size_t len = 64 << 10;
  mc_engine_t *a = tu_engine(NULL);
  void *ta = NULL;
  assert_int_equal(mc_buffer_alloc(a, len, NULL, &ta), MC_OK);
  char name[64], msg[4096], line[128];
  shm_name(a, name, sizeof name);
  int got, fd = unix_dial(name);
  snprintf(line, sizeof line, "HELLO %016llx", (unsigned long long)stat_u64(a, "{", "\"incarnation\""));
  usend(fd, line);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_true(got >= 0);
  close(got);
  snprintf(line, sizeof line, "FD %llu", (unsigned long long)(uintptr_t)ta);

  assert_int_equal(mc_buffer_set_access(a, ta, MC_ACCESS_READ), MC_OK);
  usend(fd, "LIST");
  assert_true(urecv(fd, msg, sizeof msg, &got));
  usend(fd, line);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_string_equal(msg, "OK");
  assert_true(got >= 0);
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, got, 0);
  assert_true(p == MAP_FAILED);
  assert_int_equal(errno, EACCES);
  p = mmap(NULL, len, PROT_READ, MAP_SHARED, got, 0);
  assert_true(p != MAP_FAILED);
  munmap(p, len);
  close(got);

  assert_int_equal(mc_buffer_set_access(a, ta, MC_ACCESS_WRITE), MC_OK);
  usend(fd, line);
  assert_true(urecv(fd, msg, sizeof msg, &got));
  assert_int_equal(got, -1);
  assert_int_equal(strncmp(msg, "ERR DENIED ", 11), 0);
  close(fd);
  mc_engine_destroy(a);
}

/* ------------------------------------------------------------------ bounded unadmitted connections */

static int count_fds(void) {
  int n = 0;
  char path[64];
  for (int fd = 0; fd < 65536; fd++) {
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (access(path, F_OK) == 0) n++;
  }
  return n;
}

static int count_threads(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int n = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
  fclose(f);
  return n;
}

static void test_half_open_flood(void **state) {
  (void)state;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 4096) {
    rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < 1300)
    TU_SKIP_REQUIRED("fd flood: RLIMIT_NOFILE is %llu, the case needs 1300 descriptors",
                     (unsigned long long)rl.rlim_cur);
  size_t len = 1 << 20;
  mc_engine_t *a = tu_engine("auth_token", TOKEN, "timeout_ms", "2000", NULL);
  mc_engine_t *b = tu_engine("auth_token", TOKEN, "transports", "tcp", "timeout_ms", "2000",
                             "heartbeat_ms", "100", NULL);
  void *ta = NULL, *lb = NULL;
  assert_int_equal(mc_buffer_alloc(a, len, NULL, &ta), MC_OK);
  assert_int_equal(mc_buffer_alloc(b, len, NULL, &lb), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(b, mc_engine_name(a), &s), MC_OK);
  roundtrip(b, s, lb, (uint64_t)(uintptr_t)ta, len, 1);
  int threads0 = count_threads(), fds0 = count_fds();

  /* 1000 connections that never finish a handshake: half say nothing, half send a HELLO with a
   * nonce and never answer the challenge. */
  enum { N = 1000 };
  static int flood[N];
  int port = port_of(a);
  struct tu_wire_hdr hello = mk(HELLO, 0, 32);
  uint8_t nonce[32] = {1};
  uint64_t t0 = tu_now_ms();
  for (int i = 0; i < N; i++) {
    flood[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(flood[i] >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(flood[i], (struct sockaddr *)&sa, sizeof sa), 0);
    if (i % 2) {
      send(flood[i], &hello, sizeof hello, MSG_NOSIGNAL);
      send(flood[i], nonce, 32, MSG_NOSIGNAL);
    }
    /* Transfers between the admitted engines go on meanwhile. */
    if (i % 100 == 99) roundtrip(b, s, lb, (uint64_t)(uintptr_t)ta, len, (uint64_t)i);
  }
  /* A new admitted peer still gets in during the flood (its handshake pushes the oldest pending
   * one out), and the old one keeps working. */
  mc_engine_t *c = tu_engine("auth_token", TOKEN, NULL);
  mc_segment_t sc;
  assert_int_equal(mc_segment_open(c, mc_engine_name(a), &sc), MC_OK);
  for (int k = 0; k < 5; k++) roundtrip(b, s, lb, (uint64_t)(uintptr_t)ta, len, (uint64_t)(5000 + k));
  /* No thread per pending connection, and the listener keeps at most 64 of them open. */
  int threads1 = count_threads(), fds1 = count_fds();
  print_message("flood of %d: %llu ms, threads %d -> %d, fds %d -> %d (the test holds %d)\n", N,
                (unsigned long long)(tu_now_ms() - t0), threads0, threads1, fds0, fds1, N);
  assert_true(threads1 - threads0 < 40); /* engine c's own threads and connections */
  assert_true(fds1 - fds0 < N + 64 + 40);
  assert_true(stat_u64(a, "\"control\":{", "\"handshakes_evicted\"") >= N - 64 - 10);
  /* The survivors are closed at their deadline (min(timeout_ms, 5000) = 2000 ms). */
  uint64_t until = tu_now_ms() + tu_slack_ms(4000);
  while (stat_u64(a, "\"control\":{", "\"handshakes_expired\"") == 0 && tu_now_ms() < until) {
    roundtrip(b, s, lb, (uint64_t)(uintptr_t)ta, len, 7);
    usleep(100 * 1000);
  }
  assert_true(stat_u64(a, "\"control\":{", "\"handshakes_expired\"") >= 1);
  /* Every flood connection is closed by the engine by now: each reads EOF (or a reset). */
  usleep(300 * 1000 * (unsigned)tu_slack());
  int open_left = 0;
  for (int i = 0; i < N; i++) {
    /* Silent ones get nothing; the stalled ones got their challenge (104 bytes), then EOF. */
    char buf[256];
    size_t got = 0;
    for (;;) {
      ssize_t r = recv(flood[i], buf, sizeof buf, MSG_DONTWAIT);
      if (r > 0) {
        got += (size_t)r;
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) open_left++;
      break;
    }
    if (got > (i % 2 ? 104u : 0u)) fail_msg("flood connection %d got %zu bytes", i, got);
    close(flood[i]);
  }
  assert_int_equal(open_left, 0);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(b, s, &info), MC_OK);
  assert_int_equal(info.state, MC_SEGMENT_OK);
  roundtrip(b, s, lb, (uint64_t)(uintptr_t)ta, len, 9);
  mc_engine_destroy(c);
  mc_engine_destroy(b);
  mc_engine_destroy(a);
}

int main(void) {
  if (!getenv("TEST_AUTH_LOG")) mc_log_set_handler(quiet, NULL);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_same_token_admitted),
      cmocka_unit_test(test_wrong_or_missing_token_denied),
      cmocka_unit_test(test_token_config),
      cmocka_unit_test(test_tcp_raw_handshake_and_replay),
      cmocka_unit_test(test_tcp_replayed_challenge_refused_by_client),
      cmocka_unit_test(test_shm_raw_handshake_and_replay),
      cmocka_unit_test(test_access_tcp),
      cmocka_unit_test(test_access_shm),
      cmocka_unit_test(test_shm_readonly_fd),
      cmocka_unit_test(test_half_open_flood),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
