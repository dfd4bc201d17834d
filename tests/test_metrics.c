/* metrics_listen: GET /metrics in the Prometheus text format (parsed line by line here), its
 * agreement with mc_engine_stats_json, the HTTP edges (404, 405, HEAD, an oversized request),
 * no thread or descriptor left per scrape, and a real Prometheus (Debian's `prometheus`)
 * scraping an engine on loopback, checked through its query API. The Prometheus case fails,
 * never skips, where the binary is missing (scripts/install-deps.sh installs it). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* ------------------------------------------------------------------ processes and HTTP */

static pid_t g_prom;
static char g_dir[256];

static void cleanup_all(void) {
  if (g_prom > 0) {
    kill(g_prom, SIGKILL);
    waitpid(g_prom, NULL, 0);
    g_prom = 0;
  }
  if (g_dir[0]) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%.255s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    g_dir[0] = 0;
  }
}

static void on_signal(int sig) {
  cleanup_all();
  signal(sig, SIG_DFL);
  raise(sig);
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

/* Sends req on a fresh loopback connection and reads the whole answer (until the peer closes);
 * returns it (malloc'd, NUL-terminated) or NULL when nothing could be connected. */
static char *http(int port, int v6, const char *req, size_t req_len) {
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {0};
  struct sockaddr_in6 sa6 = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa6.sin6_family = AF_INET6;
  sa6.sin6_port = htons((uint16_t)port);
  sa6.sin6_addr = in6addr_loopback;
  struct timeval tv = {(time_t)(5 * tu_slack()), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int c = v6 ? connect(fd, (struct sockaddr *)&sa6, sizeof sa6) : connect(fd, (struct sockaddr *)&sa, sizeof sa);
  if (c != 0) {
    close(fd);
    return NULL;
  }
  size_t off = 0;
  while (off < req_len) {
    ssize_t n = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
    if (n <= 0) break;  /* the server may refuse an oversized request before reading it all */
    off += (size_t)n;
  }
  size_t cap = 1 << 16, got = 0;
  char *buf = malloc(cap);
  ssize_t n;
  while ((n = read(fd, buf + got, cap - 1 - got)) > 0) {
    got += (size_t)n;
    if (cap - 1 - got < 4096) buf = realloc(buf, cap *= 2);
  }
  buf[got] = 0;
  close(fd);
  return buf;
}

static char *get(int port, int v6, const char *path) {
  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
  return http(port, v6, req, (size_t)n);
}

/* The body of an HTTP answer (after the blank line). */
static const char *body_of(const char *resp) {
  const char *b = strstr(resp, "\r\n\r\n");
  return b ? b + 4 : "";
}

static int status_of(const char *resp) {
  int code = 0;
  if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1) return 0;
  return code;
}

/* ------------------------------------------------------------------ stats JSON */

static char *stats(mc_engine_t *e) {
  size_t need = 0;
  assert_int_equal(mc_engine_stats_json(e, NULL, 0, &need), MC_ERR_BUFFER_TOO_SMALL);
  char *s = malloc(need + 256);
  assert_int_equal(mc_engine_stats_json(e, s, need + 256, &need), MC_OK);
  return s;
}

/* The number after the keys of path, found one after another ("requests", "tcp", "write",
 * "completed"); the stats object's keys are unique enough along such a path. */
static uint64_t jnum(const char *json, const char *k1, ...) {
  va_list ap;
  va_start(ap, k1);
  const char *p = json;
  for (const char *k = k1; k; k = va_arg(ap, const char *)) {
    char key[128];
    snprintf(key, sizeof key, "\"%s\":", k);
    p = strstr(p, key);
    if (!p) {
      va_end(ap);
      fail_msg("stats JSON has no \"%s\": %s", k, json);
    }
    p += strlen(key);
  }
  va_end(ap);
  return strtoull(p, NULL, 10);
}

/* requests_by_transport's count for (transport, direction): field "completed", "failed" or
 * "bytes". */
static uint64_t jreq(const char *json, const char *transport, const char *direction, const char *field) {
  char key[128];
  snprintf(key, sizeof key, "{\"transport\":\"%s\",\"direction\":\"%s\",", transport, direction);
  const char *p = strstr(json, key);
  if (!p) fail_msg("stats JSON has no %s: %s", key, json);
  return jnum(p, field, NULL);
}

/* The engine's metrics port, from "metrics":{"listen":"HOST:PORT"} in its stats. */
static int metrics_port(mc_engine_t *e) {
  char *s = stats(e);
  const char *m = strstr(s, "\"metrics\":{\"listen\":\"");
  assert_non_null(m);
  const char *end = strchr(m + 21, '"');
  const char *colon = end;
  while (colon > m && *colon != ':') colon--;
  int port = atoi(colon + 1);
  free(s);
  assert_true(port > 0);
  return port;
}

/* ------------------------------------------------------------------ the text format */

/* Parses an exposition (format 0.0.4) and fails on any line that breaks it: every sample's
 * family has # TYPE before it, families are not split, names and label sets are well formed
 * (values quoted with \\, \" and \n escapes), values are numbers, a histogram's buckets grow and
 * its +Inf bucket equals its _count. Returns the number of samples. */
static int parse_exposition(const char *text) {
  char fam[128] = "", type[64] = "";
  char seen[512][128];
  int nseen = 0, samples = 0;
  double last_bucket = -1, inf_bucket = -1;
  const char *line = text;
  while (*line) {
    const char *nl = strchr(line, '\n');
    assert_non_null(nl); /* every line ends with \n */
    size_t len = (size_t)(nl - line);
    char buf[4096];
    assert_true(len < sizeof buf);
    memcpy(buf, line, len);
    buf[len] = 0;
    line = nl + 1;
    if (buf[0] == '#') {
      char name[128], rest[64];
      if (sscanf(buf, "# TYPE %127s %63s", name, rest) == 2) {
        for (int i = 0; i < nseen; i++)
          if (strcmp(seen[i], name) == 0) fail_msg("family %s split: %s", name, buf);
        assert_true(nseen < 512);
        snprintf(seen[nseen++], sizeof seen[0], "%s", name);
        snprintf(fam, sizeof fam, "%s", name);
        snprintf(type, sizeof type, "%s", rest);
        assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                    strcmp(type, "histogram") == 0 || strcmp(type, "untyped") == 0);
        last_bucket = -1;
      } else {
        assert_int_equal(strncmp(buf, "# HELP ", 7), 0);
      }
      continue;
    }
    /* NAME[{labels}] VALUE */
    char *p = buf;
    assert_true((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':');
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
           *p == ':')
      p++;
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(p - buf), buf);
    size_t fl = strlen(fam);
    assert_true(fl > 0);
    if (strcmp(type, "histogram") == 0) {
      const char *suf = name + fl;
      assert_int_equal(strncmp(name, fam, fl), 0);
      assert_true(strcmp(suf, "_bucket") == 0 || strcmp(suf, "_sum") == 0 || strcmp(suf, "_count") == 0);
    } else if (strcmp(name, fam) != 0) {
      fail_msg("sample %s outside its family %s", name, fam);
    }
    int is_inf = 0;
    if (*p == '{') {
      p++;
      while (*p != '}') {
        char *k = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_') p++;
        assert_true(p > k);
        int le = (p - k == 2 && strncmp(k, "le", 2) == 0);
        assert_int_equal(*p++, '=');
        assert_int_equal(*p++, '"');
        char *v = p;
        while (*p != '"') {
          assert_true(*p != 0);
          if (*p == '\\') {
            p++;
            assert_true(*p == '\\' || *p == '"' || *p == 'n');
          }
          p++;
        }
        if (le && p - v == 4 && strncmp(v, "+Inf", 4) == 0) is_inf = 1;
        p++;
        if (*p == ',') p++;
        else assert_int_equal(*p, '}');
      }
      p++;
    }
    assert_int_equal(*p++, ' ');
    char *end;
    double v = strtod(p, &end);
    assert_true(end != p && *end == 0);
    if (strcmp(type, "histogram") == 0) {
      if (strstr(name, "_bucket")) {
        if (last_bucket >= 0) assert_true(v >= last_bucket);
        last_bucket = v;
        if (is_inf) inf_bucket = v;
      } else if (strstr(name, "_count")) {
        assert_true(inf_bucket == v);
        last_bucket = -1;
      }
    }
    samples++;
  }
  return samples;
}

/* Prometheus's own parser and linter on the page: `promtool check metrics` (same package). */
static void promtool_check(const char *text) {
  char path[] = "/tmp/mc-metrics-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
  int rc = system(cmd);
  unlink(path);
  if (rc != 0) fail_msg("promtool check metrics failed (%d) on the page (promtool: Debian's prometheus)", rc);
}

/* The value of the sample written exactly as `series` (NAME{labels in order}), or -1. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; (p = strstr(p, series)); p += n)
    if ((p == text || p[-1] == '\n') && p[n] == ' ') return strtod(p + n + 1, NULL);
  return -1;
}

/* ------------------------------------------------------------------ traffic */

struct pair {
  mc_engine_t *init, *target;
  char *src, *dst;
  mc_segment_t seg;
};

static const size_t kBuf = 1 << 20;

/* transport "tcp", or "rdma" on two simulated NICs. */
static void pair_up_on(struct pair *p, const char *metrics_listen, const char *transport) {
  const char *nics = strcmp(transport, "rdma") == 0 ? "sim:2" : "auto";
  p->init = tu_engine("transports", transport, "rdma_devices", nics, "metrics_listen", metrics_listen, NULL);
  assert_non_null(p->init);
  p->target = tu_engine("transports", transport, "rdma_devices", nics, "notify_queue", "1", NULL);
  assert_non_null(p->target);
  p->src = malloc(kBuf);
  p->dst = malloc(kBuf);
  tu_fill(p->src, kBuf, 1);
  assert_int_equal(mc_buffer_register(p->init, p->src, kBuf, "cpu"), MC_OK);
  assert_int_equal(mc_buffer_register(p->target, p->dst, kBuf, "cpu"), MC_OK);
  assert_int_equal(mc_segment_open(p->init, mc_engine_name(p->target), &p->seg), MC_OK);
}

static void pair_up(struct pair *p, const char *metrics_listen) { pair_up_on(p, metrics_listen, "tcp"); }

static void pair_down(struct pair *p) {
  mc_engine_destroy(p->init);
  mc_engine_destroy(p->target);
  free(p->src);
  free(p->dst);
}

/* writes WRITEs and reads READs of 64 KiB, one mc_transfer (one batch) each, then two NOTIFYs
 * into a target whose queue holds one: the second fails MC_ERR_BUSY. */
static void traffic(struct pair *p, int writes, int reads) {
  for (int i = 0; i < writes + reads; i++) {
    mc_request_t r = {.opcode = i < writes ? MC_WRITE : MC_READ, .local = p->src + (i % 16) * 65536,
                      .segment = p->seg, .remote = (uint64_t)(uintptr_t)(p->dst + (i % 16) * 65536),
                      .length = 65536};
    assert_int_equal(mc_transfer(p->init, &r, 1, tu_wait_ms(10000)), MC_OK);
  }
  char msg[8] = "hello";
  mc_request_t n = {.opcode = MC_NOTIFY, .local = msg, .segment = p->seg, .length = sizeof msg};
  assert_int_equal(mc_transfer(p->init, &n, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(mc_transfer(p->init, &n, 1, tu_wait_ms(10000)), MC_ERR_BUSY);
}

/* ------------------------------------------------------------------ cases */

static void test_format_and_agreement(void **state) {
  (void)state;
  struct pair p;
  pair_up(&p, "127.0.0.1:0");
  traffic(&p, 12, 5);
  int port = metrics_port(p.init);
  char *resp = get(port, 0, "/metrics");
  assert_non_null(resp);
  assert_int_equal(status_of(resp), 200);
  assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
  const char *t = body_of(resp);
  assert_true(parse_exposition(t) > 50);
  promtool_check(t);
  char *s = stats(p.init);
  /* Nothing moves now: the page and the stats read the same counters. */
  assert_true(sample(t, "mc_requests_total{transport=\"tcp\",direction=\"write\",outcome=\"completed\"}") == 12);
  assert_true(sample(t, "mc_requests_total{transport=\"tcp\",direction=\"read\",outcome=\"completed\"}") == 5);
  assert_int_equal(jreq(s, "tcp", "write", "completed"), 12);
  assert_int_equal(jreq(s, "tcp", "read", "completed"), 5);
  assert_true(sample(t, "mc_bytes_total{transport=\"tcp\",direction=\"write\"}") == 12 * 65536.0);
  assert_int_equal(jnum(s, "bytes_written", NULL), 12 * 65536);
  assert_int_equal(jnum(s, "bytes_read", NULL), 5 * 65536);
  assert_true(sample(t, "mc_requests_total{transport=\"notify\",direction=\"notify\",outcome=\"failed\"}") == 1);
  assert_true(sample(t, "mc_request_failures_total{status=\"MC_ERR_BUSY\"}") == 1);
  assert_int_equal(jnum(s, "failures", "MC_ERR_BUSY", NULL), 1);
  assert_int_equal(jnum(s, "requests_completed", NULL), 12 + 5 + 1);
  assert_int_equal(jnum(s, "requests_failed", NULL), 1);
  /* Every transfer was one batch busy period: 18 completed, 1 failed. */
  assert_true(sample(t, "mc_batch_duration_seconds_count{outcome=\"completed\"}") == 18);
  assert_true(sample(t, "mc_batch_duration_seconds_count{outcome=\"failed\"}") == 1);
  assert_int_equal(jnum(s, "batch_latency", "completed", "count", NULL), 18);
  assert_true(sample(t, "mc_segments{state=\"ok\"}") == 1);
  assert_true(sample(t, "mc_segments{state=\"unreachable\"}") == 0);
  assert_true(sample(t, "mc_rejoins_total") == 0);
  assert_true(sample(t, "mc_buffer_bytes") == (double)kBuf);
  assert_true(sample(t, "mc_notify_queue_depth") == 0);
  assert_true(sample(t, "mc_heaps") >= 0 && sample(t, "mc_staging_pool_bytes") >= 0);
  /* Transport counters come from the transports' stats objects. */
  assert_true(sample(t, "mc_transport_bytes_sent{transport=\"tcp\"}") == (double)jnum(s, "tcp", "bytes_sent", NULL));
  free(s);
  free(resp);
  /* The target's queue depth is its unread notification. */
  s = stats(p.target);
  assert_int_equal(jnum(s, "notify_queued", NULL), 1);
  assert_null(strstr(s, "\"metrics\":"));  /* no metrics_listen: no endpoint */
  free(s);
  pair_down(&p);
}

/* One small request per mc_transfer takes the engine's fast path over local (the engine's own
 * segment) and shm (a second engine of this process): the page and the stats still agree, and
 * both count every request, byte, failure and batch as the normal path does. WRITEs into a
 * buffer whose access became read-only after the descriptor was read fail DENIED (local: the
 * fast path's own refusal; shm: the normal path's, after the fast path stepped aside). */
static void fast_path_agreement(const char *transport) {
  const int kWrites = 300, kReads = 200, kDenied = 7;
  mc_engine_t *e = tu_engine("metrics_listen", "127.0.0.1:0", NULL);
  assert_non_null(e);
  int shm = strcmp(transport, "shm") == 0;
  mc_engine_t *t = shm ? tu_engine(NULL) : e;
  assert_non_null(t);
  char *src = malloc(kBuf), *dst = malloc(kBuf);
  tu_fill(src, kBuf, 3);
  memset(dst, 0, kBuf);
  assert_int_equal(mc_buffer_register(e, src, kBuf, "cpu"), MC_OK);
  assert_int_equal(mc_buffer_register(t, dst, kBuf, "cpu"), MC_OK);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(e, mc_engine_name(t), &seg), MC_OK);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(e, seg, &info), MC_OK);
  assert_string_equal(info.transport, transport);
  for (int i = 0; i < kWrites + kReads; i++) {
    mc_request_t r = {i < kWrites ? MC_WRITE : MC_READ, 0, src + (i % 64) * 64, seg,
                      (uint64_t)(uintptr_t)(dst + (i % 64) * 64), 8 + (uint64_t)(i % 3)};
    assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_OK);
  }
  for (int k = 0; k < 64; k++) assert_int_equal(memcmp(src + k * 64, dst + k * 64, 8), 0);
  assert_true(dst[20] == 0); /* between the requests */
  assert_int_equal(mc_buffer_set_access(t, dst, MC_ACCESS_READ), MC_OK);
  memset(src, 0x5a, 64);
  for (int i = 0; i < kDenied; i++) {
    mc_request_t r = {MC_WRITE, 0, src, seg, (uint64_t)(uintptr_t)dst, 8};
    assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(10000)), MC_ERR_DENIED);
  }
  assert_true(dst[0] != 0x5a);
  /* 8, 9 and 10 bytes in turn: the bytes each direction moved. */
  uint64_t wbytes = 0, rbytes = 0;
  for (int i = 0; i < kWrites + kReads; i++) *(i < kWrites ? &wbytes : &rbytes) += 8 + (uint64_t)(i % 3);
  char *resp = get(metrics_port(e), 0, "/metrics");
  assert_non_null(resp);
  const char *page = body_of(resp);
  char *s = stats(e);
  char series[256];
  snprintf(series, sizeof series, "mc_requests_total{transport=\"%s\",direction=\"write\",outcome=\"completed\"}",
           transport);
  assert_true(sample(page, series) == kWrites);
  assert_int_equal(jreq(s, transport, "write", "completed"), kWrites);
  snprintf(series, sizeof series, "mc_requests_total{transport=\"%s\",direction=\"read\",outcome=\"completed\"}",
           transport);
  assert_true(sample(page, series) == kReads);
  assert_int_equal(jreq(s, transport, "read", "completed"), kReads);
  snprintf(series, sizeof series, "mc_requests_total{transport=\"%s\",direction=\"write\",outcome=\"failed\"}",
           transport);
  assert_true(sample(page, series) == kDenied);
  assert_int_equal(jreq(s, transport, "write", "failed"), kDenied);
  snprintf(series, sizeof series, "mc_bytes_total{transport=\"%s\",direction=\"write\"}", transport);
  assert_true(sample(page, series) == (double)wbytes);
  assert_int_equal(jnum(s, "bytes_written", NULL), wbytes);
  assert_int_equal(jnum(s, "bytes_read", NULL), rbytes);
  assert_true(sample(page, "mc_request_failures_total{status=\"MC_ERR_DENIED\"}") == kDenied);
  assert_int_equal(jnum(s, "failures", "MC_ERR_DENIED", NULL), kDenied);
  assert_int_equal(jnum(s, "requests_completed", NULL), kWrites + kReads);
  assert_int_equal(jnum(s, "requests_failed", NULL), kDenied);
  assert_true(sample(page, "mc_batch_duration_seconds_count{outcome=\"completed\"}") == kWrites + kReads);
  assert_true(sample(page, "mc_batch_duration_seconds_count{outcome=\"failed\"}") == kDenied);
  assert_int_equal(jnum(s, "batch_latency", "completed", "count", NULL), kWrites + kReads);
  assert_int_equal(jnum(s, "batch_latency", "failed", "count", NULL), kDenied);
  /* The transport's own slice counts: one slice a request. */
  if (shm) {
    assert_int_equal(jnum(s, "shm", "slices_completed", NULL), kWrites + kReads);
    assert_int_equal(jnum(s, "shm", "slices_failed", NULL), kDenied);
  } else {
    assert_int_equal(jnum(s, "local", "slices_completed", NULL), kWrites + kReads);
    assert_int_equal(jnum(s, "local", "slices_failed", NULL), kDenied);
  }
  free(s);
  free(resp);
  mc_segment_close(e, seg);
  if (shm) mc_engine_destroy(t);
  mc_engine_destroy(e);
  free(src);
  free(dst);
}

static void test_fast_path_local(void **state) {
  (void)state;
  fast_path_agreement("local");
}

static void test_fast_path_shm(void **state) {
  (void)state;
  fast_path_agreement("shm");
}

/* The simulated NIC's counters: per-NIC state and the QP and work-request counts, as the rdma
 * transport's stats object has them. */
static void test_rdma_sim_counters(void **state) {
  (void)state;
  struct pair p;
  pair_up_on(&p, "127.0.0.1:0", "rdma");
  traffic(&p, 6, 3);
  char *r = get(metrics_port(p.init), 0, "/metrics");
  const char *t = body_of(r);
  parse_exposition(t);
  char *s = stats(p.init);
  assert_true(sample(t, "mc_requests_total{transport=\"rdma\",direction=\"write\",outcome=\"completed\"}") == 6);
  assert_true(sample(t, "mc_bytes_total{transport=\"rdma\",direction=\"read\"}") == 3 * 65536.0);
  assert_int_equal(jreq(s, "rdma", "read", "completed"), 3);
  double qps = sample(t, "mc_transport_qps_created{transport=\"rdma\"}");
  assert_true(qps > 0 && qps == (double)jnum(s, "qps_created", NULL));
  assert_true(sample(t, "mc_transport_qps_live{transport=\"rdma\"}") == (double)jnum(s, "qps_live", NULL));
  assert_true(sample(t, "mc_transport_wr_posted{transport=\"rdma\"}") == (double)jnum(s, "wr_posted", NULL));
  assert_true(sample(t, "mc_transport_wr_posted{transport=\"rdma\"}") >= 9);
  assert_true(sample(t, "mc_transport_nic_up{transport=\"rdma\",nic=\"mcsim1\"}") == 1);
  assert_true(sample(t, "mc_transport_nic_up{transport=\"rdma\",nic=\"mcsim2\"}") == 1);
  assert_true(sample(t, "mc_transport_nic_outstanding{transport=\"rdma\",nic=\"mcsim1\"}") == 0);
  assert_non_null(strstr(s, "\"nics\":[{"));
  free(s);
  free(r);
  pair_down(&p);
}

static int count_dir(const char *path) {
  DIR *d = opendir(path);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the DIR's own descriptor when path is /proc/self/fd; harmless for task */
}

static void test_http_edges_and_no_growth(void **state) {
  (void)state;
  struct pair p;
  pair_up(&p, "[::1]:0");
  traffic(&p, 2, 2);
  char *s = stats(p.init);
  assert_non_null(strstr(s, "\"metrics\":{\"listen\":\"[::1]:"));
  free(s);
  int port = metrics_port(p.init);
  char *r = get(port, 1, "/nope");
  assert_int_equal(status_of(r), 404);
  free(r);
  const char post[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
  r = http(port, 1, post, sizeof post - 1);
  assert_int_equal(status_of(r), 405);
  assert_non_null(strstr(r, "Allow: GET, HEAD"));
  free(r);
  const char head[] = "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  r = http(port, 1, head, sizeof head - 1);
  assert_int_equal(status_of(r), 200);
  assert_string_equal(body_of(r), "");
  free(r);
  /* A request larger than the server takes is refused, and the server goes on. */
  size_t big = 64 * 1024;
  char *req = malloc(big + 128);
  int n = snprintf(req, 128, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
  memset(req + n, 'a', big);
  memcpy(req + n + big, "\r\n\r\n", 5);
  r = http(port, 1, req, (size_t)n + big + 4);
  assert_true(r == NULL || status_of(r) != 200);
  free(r);
  free(req);
  /* Scrapes add no thread and leave no descriptor: the same counts before and after 100 of
   * them (each on its own connection), allowing the engine's own threads a moment to settle. */
  int fds0 = count_dir("/proc/self/fd"), th0 = count_dir("/proc/self/task");
  for (int i = 0; i < 100; i++) {
    r = get(port, 1, "/metrics");
    assert_int_equal(status_of(r), 200);
    free(r);
  }
  int fds = 0, th = 0;
  for (uint64_t t0 = tu_now_ms(); tu_now_ms() - t0 < tu_slack_ms(3000); usleep(20000)) {
    fds = count_dir("/proc/self/fd");
    th = count_dir("/proc/self/task");
    if (fds <= fds0 && th <= th0) break;
  }
  /* At most as many: a connection of the refused request above may still have been open when
   * fds0 was counted and closed since. */
  assert_true(fds <= fds0);
  assert_true(th <= th0);
  s = stats(p.init);
  assert_true(jnum(s, "metrics", "scrapes", NULL) >= 101);
  assert_int_equal(jnum(s, "metrics", "not_found", NULL), 1);
  assert_int_equal(jnum(s, "metrics", "bad_method", NULL), 1);
  free(s);
  pair_down(&p);
}

static void test_config(void **state) {
  (void)state;
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "metrics_listen", "nohost"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "metrics_listen", "127.0.0.1:99999"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "metrics_listen", "127.0.0.1:0"), MC_OK);
  mc_config_destroy(cfg);
  /* A port already taken fails engine creation. */
  mc_engine_t *a = tu_engine("metrics_listen", "127.0.0.1:0", NULL);
  assert_non_null(a);
  char taken[64];
  snprintf(taken, sizeof taken, "127.0.0.1:%d", metrics_port(a));
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "metrics_listen", taken), MC_OK);
  mc_engine_t *b = NULL;
  assert_true(mc_engine_create(cfg, &b) < 0);
  assert_null(b);
  assert_non_null(strstr(mc_last_error(), "metrics_listen"));
  mc_config_destroy(cfg);
  mc_engine_destroy(a);
}

/* ------------------------------------------------------------------ a real Prometheus */

/* One instant query; the value of its first result, or -1 (no result yet, or no answer). */
static double prom_query(int port, const char *q) {
  char path[1024], enc[900];
  size_t o = 0;
  for (const char *c = q; *c && o + 4 < sizeof enc; c++) {
    if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')
      enc[o++] = *c;
    else
      o += (size_t)snprintf(enc + o, sizeof enc - o, "%%%02X", (unsigned char)*c);
  }
  enc[o] = 0;
  snprintf(path, sizeof path, "/api/v1/query?query=%s", enc);
  char *r = get(port, 0, path);
  if (!r) return -1;
  double v = -1;
  const char *val = strstr(r, "\"value\":[");
  if (status_of(r) == 200 && val) {
    const char *q2 = strchr(val + 9, '"');
    if (q2) v = strtod(q2 + 1, NULL);
  }
  free(r);
  return v;
}

/* Waits until the query gives want (Prometheus scrapes every 200 ms); fails naming the query. */
static void prom_expect(int port, const char *q, double want) {
  double v = -1;
  for (uint64_t t0 = tu_now_ms(); tu_now_ms() - t0 < tu_slack_ms(15000); usleep(100000))
    if ((v = prom_query(port, q)) == want) return;
  fail_msg("prometheus: %s = %g, the engine says %g (log: %s/prometheus.log)", q, v, want, g_dir);
}

static void test_prometheus_scrapes(void **state) {
  (void)state;
  if (system("command -v prometheus >/dev/null 2>&1") != 0)
    fail_msg("prometheus is not here (make deps unpacks Debian's package into .deps/); this test must run");
  struct pair p;
  pair_up(&p, "127.0.0.1:0");
  int mport = metrics_port(p.init);
  snprintf(g_dir, sizeof g_dir, "/tmp/mc-prom-XXXXXX");
  assert_non_null(mkdtemp(g_dir));
  char conf[300], data[300], log[300], listen[64];
  snprintf(conf, sizeof conf, "%s/prometheus.yml", g_dir);
  snprintf(data, sizeof data, "%s/data", g_dir);
  snprintf(log, sizeof log, "%s/prometheus.log", g_dir);
  FILE *f = fopen(conf, "w");
  assert_non_null(f);
  fprintf(f,
          "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n"
          "scrape_configs:\n  - job_name: mc\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n",
          mport);
  fclose(f);
  int pport = free_port();
  snprintf(listen, sizeof listen, "--web.listen-address=127.0.0.1:%d", pport);
  char cfl[320], dfl[320];
  snprintf(cfl, sizeof cfl, "--config.file=%s", conf);
  snprintf(dfl, sizeof dfl, "--storage.tsdb.path=%s", data);
  g_prom = fork();
  if (g_prom == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execlp("prometheus", "prometheus", cfl, dfl, listen, "--log.level=warn", "--web.enable-lifecycle",
           (char *)NULL);
    _exit(127);
  }
  assert_true(g_prom > 0);
  /* Up and scraping the engine. */
  prom_expect(pport, "up{job=\"mc\"}", 1);
  traffic(&p, 20, 7);
  char *s = stats(p.init);
  double w = (double)jreq(s, "tcp", "write", "completed");
  double rd = (double)jreq(s, "tcp", "read", "completed");
  double bw = (double)jnum(s, "bytes_written", NULL);
  double bc = (double)jnum(s, "batch_latency", "completed", "count", NULL);
  free(s);
  assert_true(w == 20 && rd == 7);
  prom_expect(pport, "mc_requests_total{transport=\"tcp\",direction=\"write\",outcome=\"completed\"}", w);
  prom_expect(pport, "mc_requests_total{transport=\"tcp\",direction=\"read\",outcome=\"completed\"}", rd);
  prom_expect(pport, "sum(mc_bytes_total{direction=\"write\"})", bw);
  prom_expect(pport, "mc_request_failures_total{status=\"MC_ERR_BUSY\"}", 1);
  prom_expect(pport, "mc_batch_duration_seconds_count{outcome=\"completed\"}", bc);
  prom_expect(pport, "mc_segments{state=\"ok\"}", 1);
  prom_expect(pport, "count(mc_batch_duration_seconds_bucket{outcome=\"completed\"})", 16);
  kill(g_prom, SIGTERM);
  int st;
  waitpid(g_prom, &st, 0);
  g_prom = 0;
  cleanup_all();
  pair_down(&p);
}

/* scripts/install-deps.sh unpacks Debian's prometheus package into the checkout's .deps/ (so
 * that no service of the package's is enabled or started on this machine): its bin directory
 * goes first on PATH, for prometheus and promtool. The checkout is three levels above this
 * program (BUILD/tests/test_metrics). */
static void path_with_deps(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return;
  exe[n] = 0;
  for (int up = 0; up < 3; up++) {
    char *slash = strrchr(exe, '/');
    if (!slash) return;
    *slash = 0;
  }
  char bin[PATH_MAX + 64], path[8192];
  snprintf(bin, sizeof bin, "%s/.deps/prometheus/usr/bin", exe);
  if (access(bin, X_OK) != 0) return;
  const char *old = getenv("PATH");
  snprintf(path, sizeof path, "%s:%s", bin, old ? old : "/usr/bin:/bin");
  setenv("PATH", path, 1);
}

int main(void) {
  path_with_deps();
  atexit(cleanup_all);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGABRT, on_signal);
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_format_and_agreement),
      cmocka_unit_test(test_fast_path_local),
      cmocka_unit_test(test_fast_path_shm),
      cmocka_unit_test(test_rdma_sim_counters),
      cmocka_unit_test(test_http_edges_and_no_growth),
      cmocka_unit_test(test_config),
      cmocka_unit_test(test_prometheus_scrapes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
