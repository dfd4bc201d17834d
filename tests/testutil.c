#define _GNU_SOURCE
#include "testutil.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

int tu_scale(void) {
  const char *s = getenv("MC_TEST_SCALE");
  int v = s ? atoi(s) : 1;
  return v > 0 ? v : 1;
}

/* A sanitizer build compiled without MC_TEST_SLACK in its environment still gets slack. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_DEFAULT_SLACK 4
#else
#define TU_DEFAULT_SLACK 1
#endif

int tu_slack(void) {
  const char *s = getenv("MC_TEST_SLACK");
  int v = s && *s ? atoi(s) : TU_DEFAULT_SLACK;
  return v > 0 ? v : 1;
}

uint64_t tu_slack_ms(uint64_t ms) { return ms * (uint64_t)tu_slack(); }

int tu_wait_ms(int ms) {
  uint64_t v = tu_slack_ms(ms > 0 ? (uint64_t)ms : 0);
  return ms < 0 ? ms : v > INT_MAX ? INT_MAX : (int)v;
}

void tu_skip_note(int required, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("%s: %s\n", required ? "MC-SKIP-REQUIRED" : "MC-SKIP", msg);
  fflush(stdout);
}

uint64_t tu_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33; return x;
}

void tu_fill(void *buf, size_t len, uint64_t seed) {
  unsigned char *p = buf;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t v = mix(seed + i);
    memcpy(p + i, &v, 8);
  }
  for (; i < len; i++) p[i] = (unsigned char)(mix(seed + (i & ~(size_t)7)) >> (8 * (i & 7)));
}

long long tu_check(const void *buf, size_t len, uint64_t seed) {
  const unsigned char *p = buf;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t v = mix(seed + i);
    if (memcmp(p + i, &v, 8) != 0) return (long long)i;
  }
  for (; i < len; i++)
    if (p[i] != (unsigned char)(mix(seed + (i & ~(size_t)7)) >> (8 * (i & 7)))) return (long long)i;
  return -1;
}

mc_engine_t *tu_engine(const char *key, ...) {
  mc_config_t *cfg = NULL;
  if (mc_config_create(&cfg) != MC_OK) return NULL;
  va_list ap;
  va_start(ap, key);
  while (key) {
    const char *val = va_arg(ap, const char *);
    if (mc_config_set(cfg, key, val) != MC_OK) {
      fprintf(stderr, "tu_engine: %s=%s: %s\n", key, val, mc_last_error());
      va_end(ap);
      mc_config_destroy(cfg);
      return NULL;
    }
    key = va_arg(ap, const char *);
  }
  va_end(ap);
  mc_engine_t *e = NULL;
  if (mc_engine_create(cfg, &e) != MC_OK) {
    fprintf(stderr, "tu_engine: %s\n", mc_last_error());
    e = NULL;
  }
  mc_config_destroy(cfg);
  return e;
}

pid_t tu_spawn_self(int *to_child, FILE **from_child, const char *arg, ...) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return -1;
  exe[n] = 0;
  const char *argv[16] = {exe};
  size_t argc = 1;
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a && argc < 15; a = va_arg(ap, const char *)) argv[argc++] = a;
  va_end(ap);
  int out[2], in[2];
  if (pipe(out) != 0) return -1;
  if (pipe(in) != 0) {
    close(out[0]);
    close(out[1]);
    return -1;
  }
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(out[1], 1);
    dup2(in[0], 0);
    close(out[0]);
    close(out[1]);
    close(in[0]);
    close(in[1]);
    execv(exe, (char *const *)argv);
    _exit(127);
  }
  close(out[1]);
  close(in[0]);
  if (pid < 0) {
    close(out[0]);
    close(in[1]);
    return -1;
  }
  *to_child = in[1];
  *from_child = fdopen(out[0], "r");
  return pid;
}

int tu_dial(const char *name) {
  char host[64];
  const char *colon = strrchr(name, ':');
  if (!colon || (size_t)(colon - name) >= sizeof host) return -1;
  memcpy(host, name, (size_t)(colon - name));
  host[colon - name] = 0;
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}
