/* notify_bench: what a notification costs, over one transport between two engines of this
 * process (the receiver waits on its own thread, in epoll on its engine's event fd).
 *   latency:  submit of a NOTIFY to the receiver's wake-up on its event fd (p50/p99)
 *   block:    a WRITE of one block + a NOTIFY, until the receiver has the notification, against
 *             the same WRITE alone (mc_transfer): what the ordering costs per block
 * usage: notify_bench TRANSPORT ROUNDS */
#define _GNU_SOURCE
#include <mc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static mc_engine_t *engine(const char *transports) {
  mc_config_t *c;
  mc_engine_t *e = NULL;
  mc_config_create(&c);
  mc_config_set(c, "transports", transports);
  if (mc_engine_create(c, &e) != MC_OK) {
    fprintf(stderr, "engine: %s\n", mc_last_error());
    exit(1);
  }
  mc_config_destroy(c);
  return e;
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The receiver: waits for `want` notifications; each carries its submit time; records the delay
 * to its own wake-up (before it reads the queue) and publishes how many it took. */
struct rx {
  mc_engine_t *e;
  int n;
  uint64_t *lat;
  volatile int got;
};

static void *receive(void *arg) {
  struct rx *r = arg;
  int fd;
  mc_engine_event_fd(r->e, &fd);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  while (r->got < r->n) {
    if (epoll_wait(ep, &ev, 1, 10000) != 1) {
      fprintf(stderr, "receiver: no wake-up in 10 s\n");
      exit(1);
    }
    uint64_t woke = now_ns(), v;
    if (read(fd, &v, sizeof v) < 0) {
    }
    mc_notification_t info = {.size = sizeof info};
    uint64_t sent;
    while (mc_notify_recv(r->e, &info, &sent, sizeof sent) == MC_OK) {
      if (r->lat) r->lat[r->got] = woke - sent;
      __atomic_store_n(&r->got, r->got + 1, __ATOMIC_RELEASE);
    }
  }
  close(ep);
  return NULL;
}

static void wait_got(struct rx *r, int k) {
  while (__atomic_load_n(&r->got, __ATOMIC_ACQUIRE) < k) {
  }
}

static void latency(mc_engine_t *a, mc_engine_t *b, mc_segment_t seg, int n, const char *t) {
  struct rx r = {b, n, calloc((size_t)n, sizeof(uint64_t)), 0};
  pthread_t th;
  pthread_create(&th, NULL, receive, &r);
  mc_batch_t *bt;
  mc_batch_create(a, 1, &bt);
  for (int i = 0; i < n; i++) {
    uint64_t ts = now_ns();
    mc_request_t q = {MC_NOTIFY, 0, &ts, seg, 0, sizeof ts};
    if (mc_batch_submit(bt, &q, 1) != MC_OK || mc_batch_wait(bt, -1) != MC_OK) {
      fprintf(stderr, "notify: %s\n", mc_last_error());
      exit(1);
    }
    wait_got(&r, i + 1);
    mc_batch_reset(bt);
  }
  pthread_join(th, NULL);
  qsort(r.lat, (size_t)n, sizeof(uint64_t), cmp);
  printf("%-4s notify latency (submit -> peer's event fd wake-up), %d rounds: p50 %.1f us, p99 %.1f us\n", t, n,
         r.lat[n / 2] / 1e3, r.lat[n * 99 / 100] / 1e3);
  free(r.lat);
  mc_batch_destroy(bt);
}

static void block(mc_engine_t *a, mc_engine_t *b, mc_segment_t seg, char *src, uint64_t dst, size_t len, int n,
                  const char *t) {
  mc_request_t w = {MC_WRITE, 0, src, seg, dst, len};
  uint64_t t0 = now_ns();
  for (int i = 0; i < n; i++)
    if (mc_transfer(a, &w, 1, -1) != MC_OK) exit(1);
  double alone = (now_ns() - t0) / 1e3 / n;
  struct rx r = {b, n, NULL, 0};
  pthread_t th;
  pthread_create(&th, NULL, receive, &r);
  mc_batch_t *bt;
  mc_batch_create(a, 2, &bt);
  uint64_t msg = 0;
  t0 = now_ns();
  for (int i = 0; i < n; i++) {
    mc_request_t q[2] = {w, {MC_NOTIFY, 0, &msg, seg, 0, sizeof msg}};
    if (mc_batch_submit(bt, q, 2) != MC_OK || mc_batch_wait(bt, -1) != MC_OK) exit(1);
    wait_got(&r, i + 1);
    mc_batch_reset(bt);
  }
  double with = (now_ns() - t0) / 1e3 / n;
  pthread_join(th, NULL);
  mc_batch_destroy(bt);
  printf("%-4s %5zu KiB block: WRITE alone %.1f us (%.0f MB/s); WRITE+NOTIFY until the peer has it %.1f us "
         "(%.0f MB/s), +%.1f us\n",
         t, len >> 10, alone, len / alone, with, len / with, with - alone);
}

int main(int argc, char **argv) {
  const char *t = argc > 1 ? argv[1] : "tcp";
  int n = argc > 2 ? atoi(argv[2]) : 2000;
  mc_engine_t *a = engine(t), *b = engine(t);
  size_t cap = 1 << 20;
  char *src = aligned_alloc(4096, cap), *dst = aligned_alloc(4096, cap);
  memset(src, 1, cap);
  mc_buffer_register(a, src, cap, "cpu");
  mc_buffer_register(b, dst, cap, "cpu");
  mc_segment_t seg;
  if (mc_segment_open(a, mc_engine_name(b), &seg) != MC_OK) return 1;
  mc_segment_info_t si = {.size = sizeof si};
  mc_segment_query(a, seg, &si);
  if (strcmp(si.transport, t) != 0) {
    fprintf(stderr, "route is %s, not %s\n", si.transport, t);
    return 1;
  }
  latency(a, b, seg, n, t);
  block(a, b, seg, src, (uint64_t)(uintptr_t)dst, 64 << 10, n, t);
  block(a, b, seg, src, (uint64_t)(uintptr_t)dst, 1 << 20, n / 4, t);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  return 0;
}
