/* The metadata conformance suite, run against every backend: p2p (no server), etcd and redis
 * (real servers started here on loopback, on free ports, and killed at the end even when a test
 * fails). Public API only. Engines run in this process and in child processes (this binary
 * re-executed with --child), which are killed with SIGKILL to play a crashed engine.
 *
 * Per backend: publish + open by name + transfer + unpublish on destroy; a duplicate live name
 * is refused; a crashed engine's descriptor expires after metadata_ttl_ms; a restarted peer's
 * new incarnation is seen after a refresh (and the name is taken over without waiting for the
 * TTL); a store restarted empty gets every engine's descriptor back; a store that is down lets
 * existing transfers go on while opens fail with MC_ERR_METADATA; malformed descriptors in the
 * store are refused without a crash. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

#define TTL_MS 1500
#define TTL_STR "1500"
#define BUF_LEN (1u << 20)

enum backend { P2P, ETCD, REDIS };
static const char *backend_name[] = {"p2p", "etcd", "redis"};

struct store {
  enum backend kind;
  int available;     /* the server binary exists */
  pid_t pid;         /* the running server, 0 if none */
  int port, peer_port;
  char dir[256];     /* scratch directory (etcd data, logs) */
  char url[128];     /* the `metadata` config value */
  int v6;            /* the server listens on [::1] only, and the URL names it so */
};

/* ------------------------------------------------------------------ process bookkeeping */

/* Every process this test starts (servers and child engines), killed at exit whatever happened. */
static pid_t g_procs[64];
static char g_dirs[16][256];

static void track(pid_t pid) {
  for (int i = 0; i < 64; i++)
    if (g_procs[i] == 0) {
      g_procs[i] = pid;
      return;
    }
}

static void reap(pid_t pid, int sig) {
  if (pid <= 0) return;
  kill(pid, sig);
  int st;
  waitpid(pid, &st, 0);
  for (int i = 0; i < 64; i++)
    if (g_procs[i] == pid) g_procs[i] = 0;
}

static void cleanup_all(void) {
  for (int i = 0; i < 64; i++)
    if (g_procs[i] > 0) {
      kill(g_procs[i], SIGKILL);
      waitpid(g_procs[i], NULL, 0);
      g_procs[i] = 0;
    }
  for (int i = 0; i < 16; i++)
    if (g_dirs[i][0]) {
      char cmd[300];
      snprintf(cmd, sizeof cmd, "rm -rf '%.255s'", g_dirs[i]);
      if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dirs[i]);
      g_dirs[i][0] = 0;
    }
}

static void on_signal(int sig) {
  cleanup_all();
  signal(sig, SIG_DFL);
  raise(sig);
}

static int have_binary(const char *name) {
  const char *path = getenv("PATH");
  if (!path) path = "/usr/bin:/bin";
  char buf[PATH_MAX];
  const char *p = path;
  while (*p) {
    const char *e = strchr(p, ':');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    snprintf(buf, sizeof buf, "%.*s/%s", (int)n, p, name);
    if (access(buf, X_OK) == 0) return 1;
    if (!e) break;
    p = e + 1;
  }
  return 0;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return -1;
  socklen_t len = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &len);
  close(fd);
  return ntohs(sa.sin_port);
}

/* Runs argv with stdout/stderr to log (NULL: /dev/null); returns the pid (tracked). */
static pid_t spawn(char *const argv[], const char *log) {
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  if (pid > 0) track(pid);
  return pid;
}

/* Runs a short command to its end; returns its exit status. */
static int run_cmd(char *const argv[]) {
  pid_t pid = spawn(argv, NULL);
  int st = 0;
  waitpid(pid, &st, 0);
  for (int i = 0; i < 64; i++)
    if (g_procs[i] == pid) g_procs[i] = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* One request/response on a fresh loopback connection; 1 when the answer contains expect. */
static int probe(int port, int v6, const char *req, const char *expect) {
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  struct sockaddr_in6 sa6 = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa6.sin6_family = AF_INET6;
  sa6.sin6_port = htons((uint16_t)port);
  sa6.sin6_addr = in6addr_loopback;
  struct timeval tv = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int ok = 0;
  int c = v6 ? connect(fd, (struct sockaddr *)&sa6, sizeof sa6) : connect(fd, (struct sockaddr *)&sa, sizeof sa);
  if (c == 0 && write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
    char buf[4096];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof buf - 1 && (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0) {
      got += (size_t)n;
      buf[got] = 0;
      if (strstr(buf, expect)) {
        ok = 1;
        break;
      }
    }
  }
  close(fd);
  return ok;
}

static int server_ready(struct store *s) {
  if (s->kind == ETCD)
    return probe(s->port, s->v6, "GET /health HTTP/1.0\r\n\r\n", "\"health\":\"true\"");
  return probe(s->port, s->v6, "PING\r\n", "+PONG");
}

/* Starts the store's server on its ports (chosen on first start); wipe empties its data first. */
static void server_start(struct store *s, int wipe) {
  char data[300], log[300], client[64], peer[64], cluster[96], port[16];
  snprintf(data, sizeof data, "%s/data", s->dir);
  snprintf(log, sizeof log, "%s/server.log", s->dir);
  if (wipe) {
    char *rm[] = {"rm", "-rf", data, NULL};
    run_cmd(rm);
  }
  snprintf(client, sizeof client, "http://%s:%d", s->v6 ? "[::1]" : "127.0.0.1", s->port);
  snprintf(peer, sizeof peer, "http://127.0.0.1:%d", s->peer_port);
  snprintf(cluster, sizeof cluster, "mc=%s", peer);
  snprintf(port, sizeof port, "%d", s->port);
  if (s->kind == ETCD) {
    char *argv[] = {"etcd", "--name", "mc", "--data-dir", data, "--listen-client-urls", client,
                    "--advertise-client-urls", client, "--listen-peer-urls", peer,
                    "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster, NULL};
    s->pid = spawn(argv, log);
  } else {
    mkdir(data, 0755);
    char *argv[] = {"redis-server", "--port", port, "--bind", s->v6 ? "::1" : "127.0.0.1", "--save", "", "--appendonly",
                    "no", "--dir", data, NULL};
    s->pid = spawn(argv, log);
  }
  assert_true(s->pid > 0);
  uint64_t t0 = tu_now_ms();
  while (!server_ready(s)) {
    if (tu_now_ms() - t0 > tu_slack_ms(10000)) {
      fprintf(stderr, "%s did not come up on port %d; see %s\n", backend_name[s->kind], s->port, log);
      fail();
    }
    usleep(20000);
  }
}

static void server_kill(struct store *s) {
  reap(s->pid, SIGKILL);
  s->pid = 0;
}

static int setup_store(void **state) {
  struct store *s = *state;
  s->pid = 0;
  if (s->kind == P2P) {
    snprintf(s->url, sizeof s->url, "p2p");
    return 0;
  }
  if (!s->available) return 0;
  snprintf(s->dir, sizeof s->dir, "/tmp/mc-test-metadata-XXXXXX");
  if (!mkdtemp(s->dir)) return -1;
  for (int i = 0; i < 16; i++)
    if (!g_dirs[i][0]) {
      snprintf(g_dirs[i], sizeof g_dirs[i], "%s", s->dir);
      break;
    }
  s->port = free_port();
  s->peer_port = free_port();
  const char *host = s->v6 ? "[::1]" : "127.0.0.1";
  if (s->kind == ETCD)
    snprintf(s->url, sizeof s->url, "etcd://%s:%d", host, s->port);
  else
    snprintf(s->url, sizeof s->url, "redis://%s:%d", host, s->port);
  server_start(s, 1);
  return 0;
}

static int teardown_store(void **state) {
  struct store *s = *state;
  server_kill(s);
  /* child engines a failed test left behind */
  for (int i = 0; i < 64; i++)
    if (g_procs[i] > 0) reap(g_procs[i], SIGKILL);
  if (s->dir[0]) {
    char *rm[] = {"rm", "-rf", s->dir, NULL};
    run_cmd(rm);
    for (int i = 0; i < 16; i++)
      if (strcmp(g_dirs[i], s->dir) == 0) g_dirs[i][0] = 0;
    s->dir[0] = 0;
  }
  return 0;
}

/* Skips tests whose server is not installed, and those a backend has no equivalent for. */
static struct store *need(void **state, int p2p_too) {
  struct store *s = *state;
  if (s->kind != P2P && !s->available) {
    TU_SKIP_REQUIRED("%s-server is not installed (scripts/install-deps.sh installs it)",
                     backend_name[s->kind]);
  }
  if (s->kind == P2P && !p2p_too) {
    TU_SKIP("p2p has no metadata server: this case does not apply");
  }
  return s;
}

/* ------------------------------------------------------------------ engines */

static mc_engine_t *engine_ex(struct store *s, const char *name, const char *listen, mc_status_t *rc) {
  mc_config_t *cfg = NULL;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "metadata", s->url), MC_OK);
  assert_int_equal(mc_config_set(cfg, "metadata_ttl_ms", TTL_STR), MC_OK);
  assert_int_equal(mc_config_set(cfg, "timeout_ms", "1000"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "workers", "2"), MC_OK);
  if (name && s->kind != P2P) assert_int_equal(mc_config_set(cfg, "name", name), MC_OK);
  if (listen) assert_int_equal(mc_config_set(cfg, "listen", listen), MC_OK);
  mc_engine_t *e = NULL;
  *rc = mc_engine_create(cfg, &e);
  mc_config_destroy(cfg);
  return *rc == MC_OK ? e : NULL;
}

static mc_engine_t *engine(struct store *s, const char *name) {
  mc_status_t rc;
  mc_engine_t *e = engine_ex(s, name, NULL, &rc);
  if (!e) fprintf(stderr, "engine %s: %s\n", name ? name : "-", mc_last_error());
  assert_non_null(e);
  return e;
}

static uint64_t incarnation_of(mc_engine_t *e) {
  char buf[4096];
  size_t need;
  assert_int_equal(mc_engine_stats_json(e, buf, sizeof buf, &need), MC_OK);
  const char *p = strstr(buf, "\"incarnation\":");
  assert_non_null(p);
  p += strlen("\"incarnation\":");
  if (*p == '"') p++;
  return strtoull(p, NULL, 10);
}

static uint64_t seg_incarnation(mc_engine_t *e, mc_segment_t seg) {
  mc_segment_info_t info;
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  assert_int_equal(mc_segment_query(e, seg, &info), MC_OK);
  return info.incarnation;
}

static uint64_t remote_addr(mc_engine_t *e, mc_segment_t seg) {
  mc_buffer_info_t bi;
  size_t count = 0;
  assert_int_equal(mc_segment_buffers(e, seg, &bi, 1, &count), MC_OK);
  assert_int_equal(count, 1);
  assert_int_equal(bi.length, BUF_LEN);
  return bi.addr;
}

/* Reads the peer's buffer (which holds pattern seed) and checks it, then writes a new pattern
 * and reads it back. local must be a registered BUF_LEN buffer. */
static void roundtrip(mc_engine_t *e, mc_segment_t seg, char *local, uint64_t seed) {
  uint64_t r = remote_addr(e, seg);
  mc_request_t req = {MC_READ, 0, local, seg, r, BUF_LEN};
  memset(local, 0, BUF_LEN);
  mc_status_t rc = mc_transfer(e, &req, 1, tu_wait_ms(5000));
  if (rc != MC_OK) fprintf(stderr, "read: %s\n", mc_last_error());
  assert_int_equal(rc, MC_OK);
  assert_int_equal(tu_check(local, BUF_LEN, seed), -1);
  tu_fill(local, BUF_LEN, seed + 1);
  req.opcode = MC_WRITE;
  assert_int_equal(mc_transfer(e, &req, 1, tu_wait_ms(5000)), MC_OK);
  memset(local, 0, BUF_LEN);
  req.opcode = MC_READ;
  assert_int_equal(mc_transfer(e, &req, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(tu_check(local, BUF_LEN, seed + 1), -1);
  /* put the original pattern back for the next round */
  tu_fill(local, BUF_LEN, seed);
  req.opcode = MC_WRITE;
  assert_int_equal(mc_transfer(e, &req, 1, tu_wait_ms(5000)), MC_OK);
}

static char *buffer(mc_engine_t *e, uint64_t seed) {
  char *b = mmap(NULL, BUF_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(b != MAP_FAILED);
  tu_fill(b, BUF_LEN, seed);
  assert_int_equal(mc_buffer_register(e, b, BUF_LEN, NULL), MC_OK);
  return b;
}

/* Opens name, retrying until the result is want (or deadline_ms passed); returns the last
 * status; *seg is set on MC_OK. Other results in between are allowed only when tolerated. */
static mc_status_t open_until(mc_engine_t *e, const char *name, mc_status_t want, uint64_t deadline_ms,
                              mc_segment_t *seg) {
  uint64_t t0 = tu_now_ms();
  mc_segment_t h = 0;
  mc_status_t rc;
  for (;;) {
    rc = mc_segment_open(e, name, &h);
    if (rc == want || tu_now_ms() - t0 > deadline_ms) break;
    if (rc == MC_OK) mc_segment_close(e, h);
    usleep(20000);
  }
  if (rc == MC_OK) {
    if (seg)
      *seg = h;
    else
      mc_segment_close(e, h);
  }
  return rc;
}

/* ------------------------------------------------------------------ child engines */

struct child {
  pid_t pid;
  int in;     /* its stdin: closing it asks for a clean exit; 'r' asks for a second buffer */
  FILE *out;  /* its stdout, after the ready line */
  char name[256];
  uint64_t incarnation;
  int port;
};

/* The child: an engine with one BUF_LEN buffer holding pattern seed; prints
 * "ready NAME INCARNATION PORT" and waits for stdin to close. Each 'r' read from stdin
 * registers one more BUF_LEN buffer (pattern seed + 1) and prints "registered ADDR". */
static int child_main(int argc, char **argv) {
  if (argc < 7) return 2;
  const char *url = argv[2], *name = argv[3], *listen = argv[4];
  uint64_t seed = strtoull(argv[5], NULL, 10);
  mc_config_t *cfg = NULL;
  mc_config_create(&cfg);
  mc_config_set(cfg, "metadata", url);
  mc_config_set(cfg, "metadata_ttl_ms", argv[6]);
  mc_config_set(cfg, "timeout_ms", "1000");
  mc_config_set(cfg, "workers", "1");
  if (strcmp(name, "-") != 0) mc_config_set(cfg, "name", name);
  if (strcmp(listen, "-") != 0) mc_config_set(cfg, "listen", listen);
  mc_engine_t *e = NULL;
  mc_status_t rc = mc_engine_create(cfg, &e);
  mc_config_destroy(cfg);
  if (rc != MC_OK) {
    printf("error %d %s\n", rc, mc_last_error());
    return 1;
  }
  char *b = mmap(NULL, BUF_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  tu_fill(b, BUF_LEN, seed);
  if (mc_buffer_register(e, b, BUF_LEN, NULL) != MC_OK) {
    printf("error %d %s\n", -12, mc_last_error());
    return 1;
  }
  char stats[4096];
  size_t need;
  mc_engine_stats_json(e, stats, sizeof stats, &need);
  const char *p = strstr(stats, "\"incarnation\":");
  unsigned long long inc = p ? strtoull(p + strlen("\"incarnation\":") + (p[14] == '"'), NULL, 10) : 0;
  const char *n = mc_engine_name(e);
  printf("ready %s %llu\n", n, inc);
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
    if (c != 'r') continue;
    char *more = mmap(NULL, BUF_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    tu_fill(more, BUF_LEN, seed + 1);
    if (more == MAP_FAILED || mc_buffer_register(e, more, BUF_LEN, NULL) != MC_OK) return 1;
    printf("registered %llu\n", (unsigned long long)(uintptr_t)more);
    fflush(stdout);
  }
  mc_engine_destroy(e);
  return 0;
}

/* Starts a child engine; returns its status (MC_OK or the create error it reported). */
static mc_status_t child_start(struct store *s, const char *name, const char *listen, uint64_t seed,
                               struct child *c) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  assert_true(n > 0);
  exe[n] = 0;
  int out[2], in[2];
  assert_int_equal(pipe(out), 0);
  assert_int_equal(pipe(in), 0);
  char sd[32];
  snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(out[1], 1);
    dup2(in[0], 0);
    close(out[0]);
    close(out[1]);
    close(in[0]);
    close(in[1]);
    execl(exe, exe, "--child", s->url, name && s->kind != P2P ? name : "-", listen ? listen : "-", sd, TTL_STR,
          (char *)NULL);
    _exit(127);
  }
  track(pid);
  close(out[1]);
  close(in[0]);
  FILE *f = fdopen(out[0], "r");
  char line[1024] = {0};
  char *got = fgets(line, sizeof line, f);
  memset(c, 0, sizeof *c);
  c->pid = pid;
  c->in = in[1];
  c->out = f;
  if (got && strncmp(line, "ready ", 6) == 0) {
    unsigned long long inc = 0;
    assert_int_equal(sscanf(line + 6, "%255s %llu", c->name, &inc), 2);
    c->incarnation = inc;
    const char *colon = strrchr(c->name, ':');
    c->port = colon ? atoi(colon + 1) : 0;
    return MC_OK;
  }
  int code = MC_ERR_INTERNAL;
  if (got) sscanf(line, "error %d", &code);
  fprintf(stderr, "child engine %s: %s", name ? name : "-", got ? line : "(no output)\n");
  reap(pid, SIGKILL);
  close(c->in);
  fclose(f);
  c->out = NULL;
  c->pid = 0;
  return code;
}

static void child_kill(struct child *c) {
  if (c->pid > 0) reap(c->pid, SIGKILL);
  if (c->pid > 0) close(c->in);
  if (c->out) fclose(c->out);
  c->out = NULL;
  c->pid = 0;
}

static void child_stop(struct child *c) {
  if (c->pid <= 0) return;
  close(c->in);
  if (c->out) fclose(c->out);
  c->out = NULL;
  int st;
  waitpid(c->pid, &st, 0);
  for (int i = 0; i < 64; i++)
    if (g_procs[i] == c->pid) g_procs[i] = 0;
  c->pid = 0;
}

/* ------------------------------------------------------------------ tests */

static void test_publish_open_transfer(void **state) {
  struct store *s = need(state, 1);
  mc_engine_t *a = engine(s, "alpha");
  mc_engine_t *b = engine(s, "beta");
  char *ab = buffer(a, 11);
  char *bb = buffer(b, 12);
  const char *an = mc_engine_name(a);
  if (s->kind != P2P) assert_string_equal(an, "alpha");
  mc_segment_t seg;
  mc_status_t rc = mc_segment_open(b, an, &seg);
  if (rc != MC_OK) fprintf(stderr, "open: %s\n", mc_last_error());
  assert_int_equal(rc, MC_OK);
  assert_int_equal(seg_incarnation(b, seg), incarnation_of(a));
  roundtrip(b, seg, bb, 11);
  /* an unknown name */
  mc_segment_t x;
  rc = mc_segment_open(b, s->kind == P2P ? "127.0.0.1:1" : "nobody", &x);
  assert_int_equal(rc, s->kind == P2P ? MC_ERR_PEER_DOWN : MC_ERR_NOT_FOUND);
  /* unpublish on destroy: the name is gone at once (within the watch's delivery) */
  char name[256];
  snprintf(name, sizeof name, "%s", an);
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  mc_engine_destroy(a);
  rc = open_until(b, name, s->kind == P2P ? MC_ERR_PEER_DOWN : MC_ERR_NOT_FOUND, 1000, NULL);
  assert_int_equal(rc, s->kind == P2P ? MC_ERR_PEER_DOWN : MC_ERR_NOT_FOUND);
  mc_engine_destroy(b);
  munmap(ab, BUF_LEN);
  munmap(bb, BUF_LEN);
}

static void test_duplicate_name(void **state) {
  struct store *s = need(state, 1);
  struct child c;
  assert_int_equal(child_start(s, "twin", NULL, 21, &c), MC_OK);
  mc_status_t rc;
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", c.port);
  mc_engine_t *e = engine_ex(s, "twin", s->kind == P2P ? listen : NULL, &rc);
  assert_null(e);
  if (s->kind == P2P) {
    /* the name is the address: a second engine cannot bind it */
    assert_int_not_equal(rc, MC_OK);
  } else {
    assert_int_equal(rc, MC_ERR_EXISTS);
    assert_non_null(strstr(mc_last_error(), "twin"));
  }
  /* the holder is untouched */
  mc_engine_t *b = engine(s, "other");
  char *bb = buffer(b, 22);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(b, c.name, &seg), MC_OK);
  assert_int_equal(seg_incarnation(b, seg), c.incarnation);
  roundtrip(b, seg, bb, 21);
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  /* once the holder left cleanly, the name is free again */
  child_stop(&c);
  e = engine_ex(s, "twin", s->kind == P2P ? listen : NULL, &rc);
  if (!e) fprintf(stderr, "re-create: %s\n", mc_last_error());
  assert_non_null(e);
  mc_engine_destroy(e);
  mc_engine_destroy(b);
  munmap(bb, BUF_LEN);
}

static void test_crash_expires(void **state) {
  struct store *s = need(state, 1);
  struct child c;
  assert_int_equal(child_start(s, "doomed", NULL, 31, &c), MC_OK);
  mc_engine_t *b = engine(s, "watcher");
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(b, c.name, &seg), MC_OK);
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  child_kill(&c);
  uint64_t t0 = tu_now_ms();
  mc_status_t want = s->kind == P2P ? MC_ERR_PEER_DOWN : MC_ERR_NOT_FOUND;
  /* etcd leases count whole seconds (1500 ms -> 2 s) and expire on a ~500 ms tick */
  mc_status_t rc = open_until(b, c.name, want, tu_slack_ms(6000), NULL);
  uint64_t took = tu_now_ms() - t0;
  printf("[ INFO     ] %s: crashed engine's descriptor gone after %llu ms (ttl %d ms)\n",
         backend_name[s->kind], (unsigned long long)took, TTL_MS);
  assert_int_equal(rc, want);
  assert_true(took < (s->kind == P2P ? 1000u : 5000u) * (uint64_t)tu_slack());
  mc_engine_destroy(b);
}

static void test_restart_new_incarnation(void **state) {
  struct store *s = need(state, 1);
  struct child c;
  assert_int_equal(child_start(s, "phoenix", NULL, 41, &c), MC_OK);
  mc_engine_t *b = engine(s, "observer");
  char *bb = buffer(b, 42);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(b, c.name, &seg), MC_OK);
  uint64_t inc1 = seg_incarnation(b, seg);
  assert_int_equal(inc1, c.incarnation);
  roundtrip(b, seg, bb, 41);
  /* crash and restart under the same name (p2p: the same address) */
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", c.port);
  child_kill(&c);
  uint64_t t0 = tu_now_ms();
  struct child c2;
  assert_int_equal(child_start(s, "phoenix", s->kind == P2P ? listen : NULL, 43, &c2), MC_OK);
  /* taken over at once: the dead holder did not answer its probe, nobody waited for the TTL */
  assert_true(tu_now_ms() - t0 < TTL_MS);
  assert_string_equal(c2.name, c.name);
  assert_int_not_equal(c2.incarnation, inc1);
  /* the open handle still holds the old descriptor until a refresh: reopen */
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  uint64_t inc2 = 0;
  for (uint64_t t1 = tu_now_ms(); tu_now_ms() - t1 < tu_slack_ms(2000);) {
    assert_int_equal(open_until(b, c2.name, MC_OK, 1000, &seg), MC_OK);
    inc2 = seg_incarnation(b, seg);
    mc_segment_info_t info = {.size = sizeof info};
    assert_int_equal(mc_segment_query(b, seg, &info), MC_OK);
    /* the watch may deliver the create-time (empty) descriptor a moment before the next one */
    if (inc2 == c2.incarnation && info.buffer_count == 1) break;
    mc_segment_close(b, seg);
    usleep(20000);
  }
  assert_int_equal(inc2, c2.incarnation);
  roundtrip(b, seg, bb, 43);
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  child_stop(&c2);
  mc_engine_destroy(b);
  munmap(bb, BUF_LEN);
}

static void test_store_restarted_empty(void **state) {
  struct store *s = need(state, 0);
  mc_engine_t *a = engine(s, "survivor-a");
  mc_engine_t *b = engine(s, "survivor-b");
  char *ab = buffer(a, 51);
  char *bb = buffer(b, 52);
  server_kill(s);
  server_start(s, /*wipe=*/1);
  /* both engines notice on their next refresh (ttl/3) and publish again under new leases */
  mc_engine_t *c = engine(s, "newcomer");
  char *cb = buffer(c, 53);
  mc_segment_t sa, sb;
  mc_status_t rc = open_until(c, "survivor-a", MC_OK, 3 * TTL_MS, &sa);
  if (rc != MC_OK) fprintf(stderr, "open survivor-a: %s\n", mc_last_error());
  assert_int_equal(rc, MC_OK);
  assert_int_equal(open_until(c, "survivor-b", MC_OK, 3 * TTL_MS, &sb), MC_OK);
  assert_int_equal(seg_incarnation(c, sa), incarnation_of(a));
  roundtrip(c, sa, cb, 51);
  roundtrip(c, sb, cb, 52);
  /* and the name is still held: a duplicate is refused again */
  mc_engine_t *dup = engine_ex(s, "survivor-a", NULL, &rc);
  assert_null(dup);
  assert_int_equal(rc, MC_ERR_EXISTS);
  mc_engine_destroy(c);
  mc_engine_destroy(b);
  mc_engine_destroy(a);
  munmap(ab, BUF_LEN);
  munmap(bb, BUF_LEN);
  munmap(cb, BUF_LEN);
}

static void test_store_down(void **state) {
  struct store *s = need(state, 0);
  mc_engine_t *a = engine(s, "steady-a");
  mc_engine_t *b = engine(s, "steady-b");
  mc_engine_t *c = engine(s, "steady-c");
  char *ab = buffer(a, 61);
  char *bb = buffer(b, 62);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(b, "steady-a", &seg), MC_OK);
  roundtrip(b, seg, bb, 61);
  server_kill(s);
  /* transfers between engines that know each other go on */
  for (int i = 0; i < 3; i++) roundtrip(b, seg, bb, 61);
  /* opens fail clearly (the watch cache, if any, is dropped with its stream) */
  mc_segment_t x;
  mc_status_t rc = open_until(b, "steady-c", MC_ERR_METADATA, 1000, &x);
  assert_int_equal(rc, MC_ERR_METADATA);
  printf("[ INFO     ] %s down: open says: %s\n", backend_name[s->kind], mc_last_error());
  assert_non_null(strstr(mc_last_error(), "unreachable"));
  assert_non_null(strstr(mc_last_error(), "steady-c"));
  /* a new engine cannot publish */
  mc_engine_t *d = engine_ex(s, "steady-d", NULL, &rc);
  assert_null(d);
  assert_int_equal(rc, MC_ERR_METADATA);
  /* the store comes back (etcd with its data, redis empty): opens work again */
  server_start(s, /*wipe=*/0);
  rc = open_until(b, "steady-c", MC_OK, 3 * TTL_MS, &x);
  if (rc != MC_OK) fprintf(stderr, "open after restart: %s\n", mc_last_error());
  assert_int_equal(rc, MC_OK);
  assert_int_equal(mc_segment_close(b, x), MC_OK);
  roundtrip(b, seg, bb, 61);
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  mc_engine_destroy(c);
  mc_engine_destroy(b);
  mc_engine_destroy(a);
  munmap(ab, BUF_LEN);
  munmap(bb, BUF_LEN);
}

/* Writes value under <prefix>/segments/name with the server's own client. */
static void store_put(struct store *s, const char *name, const char *value, int redis_list) {
  char key[300], ep[64], port[16];
  snprintf(key, sizeof key, "/mc/segments/%s", name);
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", s->port);
  snprintf(port, sizeof port, "%d", s->port);
  int rc;
  if (s->kind == ETCD) {
    setenv("ETCDCTL_API", "3", 1);
    char *argv[] = {"etcdctl", "--endpoints", ep, "put", key, "--", (char *)value, NULL};
    rc = run_cmd(argv);
  } else {
    char *argv[] = {"redis-cli", "-p", port, redis_list ? "LPUSH" : "SET", key, (char *)value, NULL};
    rc = run_cmd(argv);
  }
  assert_int_equal(rc, 0);
}

static void test_malformed_descriptors(void **state) {
  struct store *s = need(state, 0);
  static const char *junk[][2] = {
      {"junk-text", "this is not json {"},
      {"junk-major", "{\"major\":99,\"minor\":0,\"name\":\"junk-major\",\"incarnation\":\"1\",\"version\":1,"
                     "\"tcp\":\"127.0.0.1:1\",\"buffers\":[]}"},
      {"junk-fields", "{\"major\":1,\"minor\":0,\"name\":\"junk-fields\"}"},
      {"junk-buffers", "{\"major\":1,\"minor\":0,\"name\":\"x\",\"incarnation\":\"ab\",\"version\":1,"
                       "\"tcp\":\"127.0.0.1:1\",\"buffers\":[{\"addr\":4096,\"length\":4096},"
                       "{\"addr\":6000,\"length\":10}]}"},
      {"junk-types", "{\"major\":1,\"minor\":0,\"name\":7,\"incarnation\":[],\"version\":\"x\",\"buffers\":{}}"},
      {"junk-array", "[1,2,3]"},
  };
  size_t n = sizeof junk / sizeof junk[0];
  for (size_t i = 0; i < n; i++) store_put(s, junk[i][0], junk[i][1], 0);
  if (s->kind == REDIS) store_put(s, "junk-list", "x", 1);
  mc_engine_t *b = engine(s, "reader");
  for (size_t i = 0; i < n; i++) {
    mc_segment_t x;
    mc_status_t rc = mc_segment_open(b, junk[i][0], &x);
    if (rc != MC_ERR_METADATA) fprintf(stderr, "%s: %d %s\n", junk[i][0], rc, mc_last_error());
    assert_int_equal(rc, MC_ERR_METADATA);
    assert_non_null(strstr(mc_last_error(), junk[i][0]));
  }
  mc_segment_t x;
  assert_int_equal(mc_segment_open(b, "junk-major", &x), MC_ERR_METADATA);
  assert_non_null(strstr(mc_last_error(), "major version 99"));
  if (s->kind == REDIS) assert_int_equal(mc_segment_open(b, "junk-list", &x), MC_ERR_METADATA);
  /* a name whose stored descriptor is garbage can be claimed: nobody alive holds it */
  mc_engine_t *a = engine(s, "junk-text");
  char *ab = buffer(a, 71);
  char *bb = buffer(b, 72);
  mc_segment_t seg;
  assert_int_equal(open_until(b, "junk-text", MC_OK, 1000, &seg), MC_OK);
  roundtrip(b, seg, bb, 71);
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  munmap(ab, BUF_LEN);
  munmap(bb, BUF_LEN);
}

/* A forked process that answers the control channel's PING with PONG(incarnation) on port and
 * closes any other connection after its first message (wire: src/proto/wire.h). It plays an
 * engine that answers probes with another incarnation than its descriptor says, so a peer that
 * has its segment open reads the descriptor from the store again at every probe. */
static pid_t fake_pinger(int port, uint64_t incarnation) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(ls >= 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(ls, 64), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid > 0) {
    close(ls);
    track(pid);
    return pid;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  for (;;) {
    int c = accept(ls, NULL, NULL);
    if (c < 0) continue;
    struct timeval tv = {0, 200000};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned char h[40];
    while (recv(c, h, sizeof h, MSG_WAITALL) == (ssize_t)sizeof h) {
      uint16_t type;
      uint64_t len;
      memcpy(&type, h + 6, 2);
      memcpy(&len, h + 24, 8);
      if (type == 12 && len == 0) continue; /* HELLO without a token: no reply */
      if (type != 3) break;                 /* not PING: hang up */
      type = 4;
      memcpy(h + 6, &type, 2);
      memcpy(h + 16, &incarnation, 8);
      if (send(c, h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h) break;
    }
    close(c);
  }
}

/* An engine on the store that probes its peers every 50 ms. */
static mc_engine_t *watching_engine(struct store *s, const char *name) {
  mc_config_t *cfg = NULL;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "metadata", s->url), MC_OK);
  assert_int_equal(mc_config_set(cfg, "name", name), MC_OK);
  assert_int_equal(mc_config_set(cfg, "timeout_ms", "1000"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "heartbeat_ms", "50"), MC_OK);
  mc_engine_t *e = NULL;
  assert_int_equal(mc_engine_create(cfg, &e), MC_OK);
  mc_config_destroy(cfg);
  return e;
}

/* Reads name's descriptor from the store with the server's own client (malloc'd, no newline). */
static char *store_get(struct store *s, const char *name) {
  char cmd[512];
  if (s->kind == ETCD)
    snprintf(cmd, sizeof cmd,
             "ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:%d get /mc/segments/%s --print-value-only",
             s->port, name);
  else
    snprintf(cmd, sizeof cmd, "redis-cli -p %d GET /mc/segments/%s", s->port, name);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  char *v = calloc(1, 65536);
  size_t n = fread(v, 1, 65535, f);
  pclose(f);
  while (n > 0 && (v[n - 1] == '\n' || v[n - 1] == '\r')) v[--n] = 0;
  assert_true(n > 0 && v[0] == '{');
  return v;
}

struct slow_read {
  mc_engine_t *e;
  mc_segment_t seg;
  char *local;
  uint64_t remote;
  mc_status_t st;
  atomic_int done;
};

static void *slow_read_main(void *arg) {
  struct slow_read *r = arg;
  mc_request_t q = {MC_READ, 0, r->local, r->seg, r->remote, 4096};
  r->st = mc_transfer(r->e, &q, 1, tu_wait_ms(10000));
  atomic_store(&r->done, 1);
  return NULL;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* mc_segment_query never waits for a descriptor refresh. A READ of a buffer the open descriptor
 * does not list yet refreshes it (the store has the new version); the same-host route's update
 * then asks the target for its buffer list, and the target is stopped, so that update waits up
 * to timeout_ms (1 s). Queries of the segment meanwhile return at once: the refresh holds the
 * peer's lock only to read and to publish (before, it held it across the update). */
static void test_query_never_waits_for_refresh(void **state) {
  struct store *s = need(state, 0);
  struct child c;
  assert_int_equal(child_start(s, "slowpoke", NULL, 61, &c), MC_OK);
  mc_engine_t *b = engine(s, "watcher");
  char *bb = buffer(b, 62);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(b, c.name, &seg), MC_OK);
  roundtrip(b, seg, bb, 61);
  assert_int_equal(write(c.in, "r", 1), 1);
  char line[256] = {0}, addr_text[32];
  assert_non_null(fgets(line, sizeof line, c.out));
  unsigned long long addr = 0;
  assert_int_equal(sscanf(line, "registered %llu", &addr), 1);
  snprintf(addr_text, sizeof addr_text, "%llu", addr);
  int published = 0;
  for (uint64_t t = tu_now_ms(); !published && tu_now_ms() - t < tu_slack_ms(3000);) {
    char *v = store_get(s, c.name);
    published = strstr(v, addr_text) != NULL;
    free(v);
    if (!published) usleep(20000);
  }
  assert_true(published);
  int wst;
  kill(c.pid, SIGSTOP);
  assert_int_equal(waitpid(c.pid, &wst, WUNTRACED), c.pid);
  struct slow_read r = {b, seg, bb, addr, MC_OK, 0};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, slow_read_main, &r), 0);
  uint64_t worst = 0, t0 = tu_now_ms();
  int n = 0;
  while (!atomic_load(&r.done) && tu_now_ms() - t0 < tu_slack_ms(5000)) {
    uint64_t q0 = now_us();
    mc_segment_info_t info = {.size = sizeof info};
    assert_int_equal(mc_segment_query(b, seg, &info), MC_OK);
    uint64_t q = now_us() - q0;
    if (q > worst) worst = q;
    n++;
    usleep(1000);
  }
  uint64_t took = tu_now_ms() - t0;
  kill(c.pid, SIGCONT);
  pthread_join(t, NULL);
  print_message("READ of a new buffer of a stopped same-host target: ended %s after %llu ms; %d queries "
                "meanwhile, the slowest %llu us\n",
                mc_status_str(r.st), (unsigned long long)took, n, (unsigned long long)worst);
  assert_true(took >= 200); /* the refresh did wait on the stopped target: the case is real */
  assert_true(worst < tu_slack_ms(100) * 1000);
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  child_stop(&c);
  mc_engine_destroy(b);
  munmap(bb, BUF_LEN);
}

/* A restarted peer answers probes before its new descriptor is in the store (seen in the
 * cluster demo: a segment was OK again with the dead engine's descriptor for ~50 ms). Here the
 * store keeps the old descriptor for good (written back without a lease) and the new engine, on
 * the old address, never publishes (it runs without the store): the segment must go
 * UNREACHABLE and stay so, never OK with the dead engine's descriptor. */
static void test_stale_descriptor_not_ok(void **state) {
  struct store *s = need(state, 0);
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", free_port());
  struct child c, c2;
  assert_int_equal(child_start(s, "lagger", listen, 91, &c), MC_OK);
  mc_engine_t *b = watching_engine(s, "watcher");
  char *bb = buffer(b, 92);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(b, "lagger", &seg), MC_OK);
  roundtrip(b, seg, bb, 91);
  uint64_t inc1 = seg_incarnation(b, seg);
  char *old = store_get(s, "lagger");
  child_kill(&c);
  store_put(s, "lagger", old, 0);
  struct store bare = {.kind = P2P, .available = 1};
  snprintf(bare.url, sizeof bare.url, "p2p");
  assert_int_equal(child_start(&bare, NULL, listen, 93, &c2), MC_OK);
  assert_int_not_equal(c2.incarnation, inc1);
  /* From the restart on, every look must find it UNREACHABLE or (never, while the store lags)
   * OK with the new incarnation; it must be UNREACHABLE within a few heartbeats. */
  mc_segment_info_t info = {.size = sizeof info};
  int unreachable = 0;
  for (uint64_t t0 = tu_now_ms(); tu_now_ms() - t0 < tu_slack_ms(1500); usleep(2000)) {
    assert_int_equal(mc_segment_query(b, seg, &info), MC_OK);
    if (info.state == MC_SEGMENT_OK && info.incarnation == inc1 && unreachable)
      fail_msg("segment OK again with the dead engine's descriptor (incarnation %llx)",
               (unsigned long long)inc1);
    if (info.state == MC_SEGMENT_UNREACHABLE) unreachable++;
  }
  assert_true(unreachable > 0);
  assert_int_equal(info.state, MC_SEGMENT_UNREACHABLE);
  child_kill(&c2);
  free(old);
  assert_int_equal(mc_segment_close(b, seg), MC_OK);
  mc_engine_destroy(b);
  munmap(bb, BUF_LEN);
}

/* A peer whose descriptor in the store turns hostile after another engine opened it (seen: a
 * peer restarted under the same name and port, its descriptor in redis then carried
 * "shm":{"socket":[1]}, and the engine that had the segment open died of an uncaught exception
 * on its health thread). After the victim dies, each variant is written straight into the store
 * under its name, with this host's boot id (so the same-host transports try it) and the address
 * of a fake engine that answers probes with another incarnation: the observer's health thread
 * reads the variant at every probe. The observer must stay up, end every request to the victim
 * with a status (never an exception caught at the ABI: MC_ERR_INTERNAL) within its time limit,
 * name the field when it refuses an open, and keep moving data with a healthy peer. */
static void test_hostile_descriptor_rewrite(void **state) {
  struct store *s = need(state, 0);
  char boot[64] = {0};
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
  assert_non_null(f);
  assert_non_null(fgets(boot, sizeof boot, f));
  fclose(f);
  boot[strcspn(boot, "\n")] = 0;
  /* {what, the transports part, the field a refusal must name (NULL: the transport it targets
   * does not run here, so the blob may be ignored)} */
  static const char *variants[][3] = {
      {"shm socket of the wrong type", "\"transports\":{\"shm\":{\"socket\":[1]}}", "socket"},
      {"shm blob not an object", "\"transports\":{\"shm\":\"x\"}", "shm"},
      {"shm socket missing", "\"transports\":{\"shm\":{}}", "socket"},
      {"nvlink socket of the wrong type", "\"transports\":{\"nvlink\":{\"socket\":{\"a\":1}}}", NULL},
      {"rdma blob of the wrong shape", "\"transports\":{\"rdma\":{\"fabric\":7,\"nics\":\"x\"}}", NULL},
      {"transports not an object", "\"transports\":[1,2]", "transports"},
  };
  struct child c;
  assert_int_equal(child_start(s, "victim", NULL, 81, &c), MC_OK);
  mc_engine_t *b = watching_engine(s, "observer");
  mc_engine_t *healthy = engine(s, "healthy");
  mc_engine_t *fresh = engine(s, "fresh-reader");
  char *hb = buffer(healthy, 82);
  char *bb = buffer(b, 83);
  char *fb = buffer(fresh, 85);
  mc_segment_t vseg, hseg;
  assert_int_equal(mc_segment_open(b, "victim", &vseg), MC_OK);
  assert_int_equal(open_until(b, "healthy", MC_OK, tu_slack_ms(2000), &hseg), MC_OK);
  roundtrip(b, vseg, bb, 81);
  uint64_t vaddr = remote_addr(b, vseg);
  child_kill(&c);
  int fport = free_port();
  uint64_t finc = 0xfa4e0000ull;
  pid_t fake = fake_pinger(fport, finc);
  for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
    char desc[1024];
    snprintf(desc, sizeof desc,
             "{\"major\":1,\"minor\":0,\"name\":\"victim\",\"incarnation\":\"%016llx\",\"version\":9,"
             "\"host_id\":\"%s\",\"pid\":%d,\"tcp\":\"127.0.0.1:%d\",\"buffers\":[{\"addr\":%llu,\"length\":%u,"
             "\"location\":\"cpu\"}],%s}",
             (unsigned long long)(finc + i + 1), boot, (int)fake, fport, (unsigned long long)vaddr, BUF_LEN,
             variants[i][1]);
    store_put(s, "victim", desc, 0);
    uint64_t t0 = tu_now_ms();
    int tries = 0;
    while (tu_now_ms() - t0 < 500) {
      mc_request_t r = {MC_READ, 0, bb, vseg, vaddr, 4096};
      uint64_t t1 = tu_now_ms();
      mc_status_t rc = mc_transfer(b, &r, 1, tu_wait_ms(2000));
      assert_true(tu_now_ms() - t1 < tu_slack_ms(4000));
      if (rc == MC_OK || rc == MC_ERR_INTERNAL) print_message("request: %s\n", mc_last_error());
      assert_int_not_equal(rc, MC_ERR_INTERNAL);
      assert_int_not_equal(rc, MC_OK); /* nothing real answers there */
      tries++;
      usleep(20000);
    }
    mc_segment_t x;
    mc_status_t rc = mc_segment_open(fresh, "victim", &x);
    print_message("%s: %d requests failed; a fresh open: %s (%s)\n", variants[i][0], tries, mc_status_str(rc),
                  rc == MC_OK ? "-" : mc_last_error());
    assert_int_not_equal(rc, MC_ERR_INTERNAL);
    if (variants[i][2]) { /* a descriptor with a malformed part is refused whole */
      assert_int_equal(rc, MC_ERR_METADATA);
      assert_non_null(strstr(mc_last_error(), variants[i][2]));
    }
    if (rc == MC_OK) {
      mc_request_t r = {MC_READ, 0, fb, x, vaddr, 4096};
      rc = mc_transfer(fresh, &r, 1, tu_wait_ms(2000));
      print_message("  a READ through it: %s (%s)\n", mc_status_str(rc), mc_last_error());
      assert_int_not_equal(rc, MC_ERR_INTERNAL);
      assert_int_not_equal(rc, MC_OK);
      mc_segment_close(fresh, x);
    }
    /* Everyone else is still served. */
    roundtrip(b, hseg, bb, 82);
  }
  reap(fake, SIGKILL);
  mc_engine_destroy(fresh);
  mc_engine_destroy(healthy);
  mc_engine_destroy(b);
  munmap(hb, BUF_LEN);
  munmap(bb, BUF_LEN);
  munmap(fb, BUF_LEN);
}

static void test_config_values(void **state) {
  (void)state;
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  const char *good[] = {"p2p",
                        "etcd://127.0.0.1:2379",
                        "etcd://a:1,b.example:2/my/prefix",
                        "etcd://localhost:2379/",
                        "redis://127.0.0.1:6379",
                        "redis://h:6379/3",
                        "etcd://[::1]:2379,[fd00::2]:2379/p",
                        "redis://[::1]:6379/2"};
  const char *bad[] = {"",           "etcd://",         "etcd://host",    "etcd://h:0",      "etcd://h:1,",
                       "redis://h:1,h:2", "redis://h:1/x", "http://h:1", "etcd://h:1/a b", "redis://:1",
                       "etcd://[::1:2379", "etcd://::1:2379", "redis://[xyz]:1", "redis://[]:1"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    assert_int_equal(mc_config_set(cfg, "metadata", good[i]), MC_OK);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(mc_config_set(cfg, "metadata", bad[i]), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "metadata_ttl_ms", "1500"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "metadata_ttl_ms", "999"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "metadata_ttl_ms", "x"), MC_ERR_INVALID_ARG);
  mc_config_destroy(cfg);
}

#define SUITE(st)                                                                                      \
  cmocka_unit_test_prestate_setup_teardown(test_publish_open_transfer, setup_store, teardown_store, st), \
  cmocka_unit_test_prestate_setup_teardown(test_duplicate_name, setup_store, teardown_store, st),        \
  cmocka_unit_test_prestate_setup_teardown(test_crash_expires, setup_store, teardown_store, st),         \
  cmocka_unit_test_prestate_setup_teardown(test_restart_new_incarnation, setup_store, teardown_store, st), \
  cmocka_unit_test_prestate_setup_teardown(test_store_restarted_empty, setup_store, teardown_store, st), \
  cmocka_unit_test_prestate_setup_teardown(test_store_down, setup_store, teardown_store, st),            \
  cmocka_unit_test_prestate_setup_teardown(test_malformed_descriptors, setup_store, teardown_store, st), \
  cmocka_unit_test_prestate_setup_teardown(test_hostile_descriptor_rewrite, setup_store, teardown_store, st), \
  cmocka_unit_test_prestate_setup_teardown(test_stale_descriptor_not_ok, setup_store, teardown_store, st), \
  cmocka_unit_test_prestate_setup_teardown(test_query_never_waits_for_refresh, setup_store, teardown_store, st)

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--child") == 0) return child_main(argc, argv);
  atexit(cleanup_all);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  static struct store p2p = {.kind = P2P, .available = 1};
  static struct store etcd = {.kind = ETCD};
  static struct store redis = {.kind = REDIS};
  etcd.available = have_binary("etcd") && have_binary("etcdctl");
  redis.available = have_binary("redis-server") && have_binary("redis-cli");
  if (!etcd.available) printf("etcd or etcdctl not found in PATH: the etcd suite is skipped\n");
  if (!redis.available) printf("redis-server or redis-cli not found in PATH: the redis suite is skipped\n");
  const struct CMUnitTest config_tests[] = {cmocka_unit_test(test_config_values)};
  const struct CMUnitTest p2p_tests[] = {SUITE(&p2p)};
  const struct CMUnitTest etcd_tests[] = {SUITE(&etcd)};
  const struct CMUnitTest redis_tests[] = {SUITE(&redis)};
  /* The metadata servers on IPv6 loopback only: the same publish/open/transfer and store-down
   * cases through etcd://[::1]:PORT and redis://[::1]:PORT. */
  static struct store etcd6 = {.kind = ETCD, .v6 = 1};
  static struct store redis6 = {.kind = REDIS, .v6 = 1};
  etcd6.available = etcd.available;
  redis6.available = redis.available;
  const struct CMUnitTest v6_tests[] = {
      cmocka_unit_test_prestate_setup_teardown(test_publish_open_transfer, setup_store, teardown_store, &etcd6),
      cmocka_unit_test_prestate_setup_teardown(test_publish_open_transfer, setup_store, teardown_store, &redis6),
  };
  int failed = 0;
  failed += cmocka_run_group_tests_name("metadata_config", config_tests, NULL, NULL);
  failed += cmocka_run_group_tests_name("metadata_p2p", p2p_tests, NULL, NULL);
  failed += cmocka_run_group_tests_name("metadata_etcd", etcd_tests, NULL, NULL);
  failed += cmocka_run_group_tests_name("metadata_redis", redis_tests, NULL, NULL);
  failed += cmocka_run_group_tests_name("metadata_ipv6", v6_tests, NULL, NULL);
  return failed ? 1 : 0;
}
