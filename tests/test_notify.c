/* Notifications (issue 21): MC_NOTIFY ordered after the data of its batch, the per-engine queue,
 * mc_notify_recv and the event fd, over tcp, shm, local and rdma on the simulated NIC. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#define BUF (32u << 20)

/* Two ends: `from` submits, `to` receives. For "local" both are one engine (its own segment). */
struct pair {
  const char *transport;
  mc_engine_t *from, *to;
  char *src, *dst;
  mc_segment_t seg;
};

static int pair_up(struct pair *p, const char *transport, const char *queue) {
  memset(p, 0, sizeof *p);
  p->transport = transport;
  int rdma = strcmp(transport, "rdma") == 0;
  const char *q = queue ? queue : "65536";
  p->to = tu_engine("transports", transport, "notify_queue", q, "heartbeat_ms", "60000",
                    rdma ? "rdma_devices" : NULL, "sim", NULL);
  if (!p->to) return -1;
  if (strcmp(transport, "local") == 0)
    p->from = p->to;
  else
    p->from = tu_engine("transports", transport, "heartbeat_ms", "60000", rdma ? "rdma_devices" : NULL, "sim",
                        NULL);
  if (!p->from) return -1;
  p->src = aligned_alloc(4096, BUF);
  p->dst = aligned_alloc(4096, BUF);
  memset(p->dst, 0, BUF);
  assert_int_equal(mc_buffer_register(p->from, p->src, BUF, "cpu"), MC_OK);
  assert_int_equal(mc_buffer_register(p->to, p->dst, BUF, "cpu"), MC_OK);
  assert_int_equal(mc_segment_open(p->from, mc_engine_name(p->to), &p->seg), MC_OK);
  mc_segment_info_t si = {.size = sizeof si};
  assert_int_equal(mc_segment_query(p->from, p->seg, &si), MC_OK);
  if (strcmp(si.transport, transport) != 0) {
    fprintf(stderr, "route to the peer is %s, not %s\n", si.transport, transport);
    return -1;
  }
  return 0;
}

static void pair_down(struct pair *p) {
  if (p->from && p->from != p->to) mc_engine_destroy(p->from);
  mc_engine_destroy(p->to);
  free(p->src);
  free(p->dst);
}

static mc_request_t notify_req(mc_segment_t seg, const void *msg, size_t len) {
  mc_request_t r = {.opcode = MC_NOTIFY, .flags = 0, .local = (void *)msg, .segment = seg, .remote = 0,
                    .length = len};
  return r;
}

/* Waits (epoll on the engine's event fd) for one notification; 0 when one was taken. */
static int recv_one(mc_engine_t *e, int ep, mc_notification_t *info, void *buf, size_t cap, int ms) {
  uint64_t until = tu_now_ms() + tu_slack_ms((uint64_t)ms);
  for (;;) {
    info->size = sizeof *info;
    mc_status_t st = mc_notify_recv(e, info, buf, cap);
    if (st == MC_OK) return 0;
    assert_int_equal(st, MC_ERR_NOT_FOUND);
    uint64_t now = tu_now_ms();
    if (now >= until) return -1;
    struct epoll_event ev;
    int n = epoll_wait(ep, &ev, 1, (int)(until - now));
    if (n == 1) {
      uint64_t v;
      assert_int_equal(read(ev.data.fd, &v, sizeof v), (ssize_t)sizeof v);
      assert_true(v >= 1);
    }
  }
}

static int epoll_on(mc_engine_t *e) {
  int fd = -1, fd2 = -1;
  assert_int_equal(mc_engine_event_fd(e, &fd), MC_OK);
  assert_int_equal(mc_engine_event_fd(e, &fd2), MC_OK);
  assert_int_equal(fd, fd2); /* one fd per engine */
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
  return ep;
}

/* ---------------------------------------------------------------- bytes at notification time */

struct receiver {
  struct pair *p;
  int rounds;
  size_t len;
  int ep;
  volatile int acked; /* last round checked, -1 before any */
  int bad;
};

/* The receiving side: on each notification (round r, seed), checks that the whole WRITE of that
 * round is already in its memory, then lets the sender go on. */
static void *receive_rounds(void *arg) {
  struct receiver *rc = arg;
  for (int r = 0; r < rc->rounds; r++) {
    mc_notification_t info;
    uint64_t msg[2];
    if (recv_one(rc->p->to, rc->ep, &info, msg, sizeof msg, 10000) != 0) {
      rc->bad = 1000000 + r;
      break;
    }
    if (info.length != sizeof msg || msg[0] != (uint64_t)r ||
        strcmp(info.peer, mc_engine_name(rc->p->from)) != 0) {
      rc->bad = 2000000 + r;
      break;
    }
    if (tu_check(rc->p->dst, rc->len, msg[1]) != -1) {
      rc->bad = 3000000 + r;
      break;
    }
    __atomic_store_n(&rc->acked, r, __ATOMIC_RELEASE);
  }
  return NULL;
}

static void bytes_at_notification(const char *transport) {
  struct pair p;
  if (pair_up(&p, transport, NULL) != 0) {
    pair_down(&p);
    fail_msg("could not set up a %s pair", transport);
  }
  /* Several slices (slice_size 1M) over several connections: a NOTIFY that overtook any of them
   * would find old bytes. */
  struct receiver rc = {.p = &p, .rounds = 40 * tu_scale(), .len = 6u << 20, .ep = epoll_on(p.to), .acked = -1};
  pthread_t th;
  pthread_create(&th, NULL, receive_rounds, &rc);
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(p.from, 4, &b), MC_OK);
  for (int r = 0; r < rc.rounds && !rc.bad; r++) {
    uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(r + 1);
    tu_fill(p.src, rc.len, seed);
    uint64_t msg[2] = {(uint64_t)r, seed};
    mc_request_t req[2] = {{.opcode = MC_WRITE, .local = p.src, .segment = p.seg,
                            .remote = (uint64_t)(uintptr_t)p.dst, .length = rc.len},
                           notify_req(p.seg, msg, sizeof msg)};
    assert_int_equal(mc_batch_submit(b, req, 2), MC_OK);
    memset(msg, 0xff, sizeof msg); /* copied at submit */
    assert_int_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_OK);
    mc_request_status_t rs;
    assert_int_equal(mc_batch_status(b, 1, &rs), MC_OK);
    assert_int_equal(rs.state, MC_REQUEST_COMPLETED);
    /* The receiver checks round r before the source changes for round r + 1. */
    uint64_t until = tu_now_ms() + tu_slack_ms(10000);
    while (__atomic_load_n(&rc.acked, __ATOMIC_ACQUIRE) < r && !rc.bad && tu_now_ms() < until) usleep(100);
    assert_int_equal(mc_batch_reset(b), MC_OK);
  }
  pthread_join(th, NULL);
  assert_int_equal(rc.bad, 0);
  assert_int_equal(rc.acked, rc.rounds - 1);
  close(rc.ep);
  mc_batch_destroy(b);
  pair_down(&p);
}

static void test_bytes_tcp(void **s) { (void)s; bytes_at_notification("tcp"); }
static void test_bytes_shm(void **s) { (void)s; bytes_at_notification("shm"); }
static void test_bytes_local(void **s) { (void)s; bytes_at_notification("local"); }
static void test_bytes_rdma(void **s) { (void)s; bytes_at_notification("rdma"); }

/* ---------------------------------------------------------------- order over many */

/* 1000 NOTIFYs over 10 batches submitted one after another, WRITEs between them, none waited
 * for before the next submit: they arrive in submit order. */
static void order_over_many(const char *transport) {
  struct pair p;
  if (pair_up(&p, transport, NULL) != 0) {
    pair_down(&p);
    fail_msg("could not set up a %s pair", transport);
  }
  enum { kBatches = 10, kPer = 100 };
  mc_batch_t *b[kBatches];
  static uint32_t msgs[kBatches * kPer];
  for (int k = 0; k < kBatches; k++) {
    assert_int_equal(mc_batch_create(p.from, 2 * kPer, &b[k]), MC_OK);
    mc_request_t req[2 * kPer];
    for (int i = 0; i < kPer; i++) {
      uint32_t n = (uint32_t)(k * kPer + i);
      msgs[n] = n;
      /* Larger WRITEs in early batches: later batches' requests end first. Each WRITE has a
       * range of its own (WRITEs in flight together never overlap). */
      uint64_t len = (uint64_t)(kBatches - k) * 2048;
      req[2 * i] = (mc_request_t){.opcode = MC_WRITE, .local = p.src + (size_t)n * 32768, .segment = p.seg,
                                  .remote = (uint64_t)(uintptr_t)p.dst + (uint64_t)n * 32768, .length = len};
      req[2 * i + 1] = notify_req(p.seg, &msgs[n], sizeof msgs[n]);
    }
    assert_int_equal(mc_batch_submit(b[k], req, 2 * kPer), MC_OK);
  }
  for (int k = 0; k < kBatches; k++) assert_int_equal(mc_batch_wait(b[k], tu_wait_ms(20000)), MC_OK);
  int ep = epoll_on(p.to);
  for (uint32_t n = 0; n < kBatches * kPer; n++) {
    mc_notification_t info;
    uint32_t got = ~0u;
    assert_int_equal(recv_one(p.to, ep, &info, &got, sizeof got, 5000), 0);
    assert_int_equal(got, n);
  }
  mc_notification_t info = {.size = sizeof info};
  assert_int_equal(mc_notify_recv(p.to, &info, NULL, 0), MC_ERR_NOT_FOUND);
  close(ep);
  for (int k = 0; k < kBatches; k++) mc_batch_destroy(b[k]);
  pair_down(&p);
}

static void test_order_tcp(void **s) { (void)s; order_over_many("tcp"); }
static void test_order_shm(void **s) { (void)s; order_over_many("shm"); }
static void test_order_local(void **s) { (void)s; order_over_many("local"); }
static void test_order_rdma(void **s) { (void)s; order_over_many("rdma"); }

/* ---------------------------------------------------------------- failed, canceled */

/* A WRITE into a buffer the target unregistered after the initiator saw it fails at the target;
 * the NOTIFY behind it ends CANCELED and is never delivered, and the next NOTIFY goes through. */
static void failed_never_delivered(const char *transport) {
  struct pair p;
  if (pair_up(&p, transport, NULL) != 0) {
    pair_down(&p);
    fail_msg("could not set up a %s pair", transport);
  }
  char *gone = aligned_alloc(4096, 1 << 20);
  assert_int_equal(mc_buffer_register(p.to, gone, 1 << 20, "cpu"), MC_OK);
  /* A WRITE outside the known buffers refreshes the initiator's view: it now has `gone`. */
  mc_request_t probe = {.opcode = MC_WRITE, .local = p.src, .segment = p.seg,
                        .remote = (uint64_t)(uintptr_t)gone, .length = 4096};
  assert_int_equal(mc_transfer(p.from, &probe, 1, tu_wait_ms(5000)), MC_OK);
  assert_int_equal(mc_buffer_unregister(p.to, gone), MC_OK);
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(p.from, 8, &b), MC_OK);
  const char m1[] = "must never arrive", m2[] = "after the failure";
  mc_request_t req[2] = {{.opcode = MC_WRITE, .local = p.src, .segment = p.seg,
                          .remote = (uint64_t)(uintptr_t)gone, .length = 4096},
                         notify_req(p.seg, m1, sizeof m1)};
  assert_int_equal(mc_batch_submit(b, req, 2), MC_OK);
  assert_int_not_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_OK);
  mc_request_status_t rs;
  assert_int_equal(mc_batch_status(b, 0, &rs), MC_OK);
  assert_int_equal(rs.state, MC_REQUEST_FAILED);
  assert_int_equal(mc_batch_status(b, 1, &rs), MC_OK);
  assert_int_equal(rs.state, MC_REQUEST_FAILED);
  assert_int_equal(rs.error, MC_ERR_CANCELED);
  /* The next NOTIFY (another batch) is delivered, and it is the only one. */
  mc_batch_t *b2;
  assert_int_equal(mc_batch_create(p.from, 1, &b2), MC_OK);
  mc_request_t n2 = notify_req(p.seg, m2, sizeof m2);
  assert_int_equal(mc_batch_submit(b2, &n2, 1), MC_OK);
  assert_int_equal(mc_batch_wait(b2, tu_wait_ms(10000)), MC_OK);
  char got[64];
  mc_notification_t info = {.size = sizeof info};
  assert_int_equal(mc_notify_recv(p.to, &info, got, sizeof got), MC_OK);
  assert_string_equal(got, m2);
  assert_int_equal(mc_notify_recv(p.to, &info, got, sizeof got), MC_ERR_NOT_FOUND);
  mc_batch_destroy(b);
  mc_batch_destroy(b2);
  pair_down(&p);
  free(gone);
}

static void test_failed_tcp(void **s) { (void)s; failed_never_delivered("tcp"); }
static void test_failed_shm(void **s) { (void)s; failed_never_delivered("shm"); }
static void test_failed_local(void **s) { (void)s; failed_never_delivered("local"); }
static void test_failed_rdma(void **s) { (void)s; failed_never_delivered("rdma"); }

/* A NOTIFY waiting behind a large WRITE when its batch is canceled ends CANCELED, undelivered;
 * a NOTIFY of another batch queued behind it to the same peer still goes. */
static void test_canceled_never_delivered(void **s) {
  (void)s;
  struct pair p;
  assert_int_equal(pair_up(&p, "tcp", NULL), 0);
  int canceled = 0;
  for (int round = 0; round < 5 && !canceled; round++) {
    mc_batch_t *b, *b2;
    assert_int_equal(mc_batch_create(p.from, 8, &b), MC_OK);
    assert_int_equal(mc_batch_create(p.from, 1, &b2), MC_OK);
    const char m1[] = "canceled", m2[] = "behind it";
    mc_request_t req[5];
    for (int i = 0; i < 4; i++) /* four quarters: WRITEs in flight together never overlap */
      req[i] = (mc_request_t){.opcode = MC_WRITE, .local = p.src + (size_t)i * (BUF / 4), .segment = p.seg,
                              .remote = (uint64_t)(uintptr_t)p.dst + (uint64_t)i * (BUF / 4), .length = BUF / 4};
    req[4] = notify_req(p.seg, m1, sizeof m1);
    assert_int_equal(mc_batch_submit(b, req, 5), MC_OK);
    mc_request_t n2 = notify_req(p.seg, m2, sizeof m2);
    assert_int_equal(mc_batch_submit(b2, &n2, 1), MC_OK);
    assert_int_equal(mc_batch_cancel(b), MC_OK);
    mc_request_status_t rs;
    assert_int_equal(mc_batch_status(b, 4, &rs), MC_OK);
    assert_int_equal(mc_batch_wait(b2, tu_wait_ms(10000)), MC_OK);
    char got[64];
    mc_notification_t info = {.size = sizeof info};
    if (rs.state == MC_REQUEST_FAILED) {
      assert_int_equal(rs.error, MC_ERR_CANCELED);
      canceled = 1;
      assert_int_equal(mc_notify_recv(p.to, &info, got, sizeof got), MC_OK);
      assert_string_equal(got, m2);
    } else { /* the 32 MiB went through before the cancel: both arrive, in order */
      assert_int_equal(mc_notify_recv(p.to, &info, got, sizeof got), MC_OK);
      assert_string_equal(got, m1);
      assert_int_equal(mc_notify_recv(p.to, &info, got, sizeof got), MC_OK);
      assert_string_equal(got, m2);
    }
    assert_int_equal(mc_notify_recv(p.to, &info, got, sizeof got), MC_ERR_NOT_FOUND);
    mc_batch_destroy(b);
    mc_batch_destroy(b2);
  }
  assert_true(canceled); /* 32 MiB over loopback tcp never beat an immediate cancel 5 times */
  pair_down(&p);
}

/* ---------------------------------------------------------------- queue, recv, validation */

static void test_full_queue_busy(void **s) {
  (void)s;
  struct pair p;
  assert_int_equal(pair_up(&p, "tcp", "3"), 0);
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(p.from, 1, &b), MC_OK);
  for (uint32_t i = 0; i < 4; i++) {
    mc_request_t r = notify_req(p.seg, &i, sizeof i);
    assert_int_equal(mc_batch_submit(b, &r, 1), MC_OK);
    mc_status_t st = mc_batch_wait(b, tu_wait_ms(10000));
    assert_int_equal(st, i < 3 ? MC_OK : MC_ERR_BUSY);
    assert_int_equal(mc_batch_reset(b), MC_OK);
  }
  uint32_t got;
  mc_notification_t info = {.size = sizeof info};
  /* Too small: the size is told and the notification stays. */
  assert_int_equal(mc_notify_recv(p.to, &info, &got, 2), MC_ERR_BUFFER_TOO_SMALL);
  assert_int_equal(info.length, sizeof got);
  for (uint32_t i = 0; i < 3; i++) {
    assert_int_equal(mc_notify_recv(p.to, &info, &got, sizeof got), MC_OK);
    assert_int_equal(got, i);
    assert_int_equal(info.length, sizeof got);
    mc_segment_info_t si = {.size = sizeof si};
    assert_int_equal(mc_segment_query(p.from, p.seg, &si), MC_OK);
    (void)si;
  }
  assert_int_equal(mc_notify_recv(p.to, &info, &got, sizeof got), MC_ERR_NOT_FOUND);
  /* Room again. */
  uint32_t again = 7;
  mc_request_t r = notify_req(p.seg, &again, sizeof again);
  assert_int_equal(mc_transfer(p.from, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(mc_notify_recv(p.to, &info, &got, sizeof got), MC_OK);
  assert_int_equal(got, 7);
  /* A short info->size is honoured: nothing past it is written. */
  struct {
    mc_notification_t head;
    char guard[8];
  } small;
  memset(&small, 0x5a, sizeof small);
  small.head.size = offsetof(mc_notification_t, incarnation);
  assert_int_equal(mc_transfer(p.from, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(mc_notify_recv(p.to, &small.head, &got, sizeof got), MC_OK);
  assert_string_equal(small.head.peer, mc_engine_name(p.from));
  assert_int_equal(((unsigned char *)&small.head.incarnation)[0], 0x5a);
  char stats[8192];
  size_t need;
  assert_int_equal(mc_engine_stats_json(p.to, stats, sizeof stats, &need), MC_OK);
  assert_non_null(strstr(stats, "\"notify_refused_busy\":1"));
  assert_non_null(strstr(stats, "\"notify_received\":5"));
  mc_batch_destroy(b);
  pair_down(&p);
}

static void test_invalid_at_submit(void **s) {
  (void)s;
  struct pair p;
  assert_int_equal(pair_up(&p, "tcp", NULL), 0);
  static char big[MC_NOTIFY_MAX_BYTES + 1];
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(p.from, 4, &b), MC_OK);
  mc_request_t bad[] = {
      notify_req(p.seg, big, 0),
      notify_req(p.seg, big, MC_NOTIFY_MAX_BYTES + 1),
      notify_req(p.seg, NULL, 4),
      notify_req(p.seg, big, 4),
      notify_req(p.seg, big, 4),
      notify_req(0xdead, big, 4),
  };
  bad[3].remote = 8;
  bad[4].flags = 1;
  mc_status_t want[] = {MC_ERR_INVALID_ARG, MC_ERR_INVALID_ARG, MC_ERR_INVALID_ARG,
                        MC_ERR_INVALID_ARG, MC_ERR_INVALID_ARG, MC_ERR_NOT_FOUND};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    /* A good WRITE first: nothing of the call starts. */
    mc_request_t two[2] = {{.opcode = MC_WRITE, .local = p.src, .segment = p.seg,
                            .remote = (uint64_t)(uintptr_t)p.dst, .length = 4096},
                           bad[i]};
    assert_int_equal(mc_batch_submit(b, two, 2), want[i]);
    mc_request_status_t rs;
    assert_int_equal(mc_batch_status(b, 0, &rs), MC_ERR_INVALID_ARG); /* nothing submitted */
  }
  /* The largest message goes, unregistered memory is fine. */
  for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 7);
  mc_request_t ok = notify_req(p.seg, big, MC_NOTIFY_MAX_BYTES);
  assert_int_equal(mc_transfer(p.from, &ok, 1, tu_wait_ms(10000)), MC_OK);
  static char got[MC_NOTIFY_MAX_BYTES];
  mc_notification_t info = {.size = sizeof info};
  assert_int_equal(mc_notify_recv(p.to, &info, got, sizeof got), MC_OK);
  assert_int_equal(info.length, MC_NOTIFY_MAX_BYTES);
  assert_memory_equal(got, big, MC_NOTIFY_MAX_BYTES);
  mc_segment_info_t si = {.size = sizeof si};
  assert_int_equal(mc_segment_query(p.from, p.seg, &si), MC_OK);
  assert_int_equal(info.incarnation != 0, 1);
  /* Bad calls. */
  assert_int_equal(mc_notify_recv(NULL, &info, got, 1), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_notify_recv(p.to, NULL, got, 1), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_notify_recv(p.to, &info, NULL, 1), MC_ERR_INVALID_ARG);
  int fd;
  assert_int_equal(mc_engine_event_fd(NULL, &fd), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_engine_event_fd(p.to, NULL), MC_ERR_INVALID_ARG);
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "notify_queue", "0"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "notify_queue", "1048577"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(cfg, "notify_queue", "1048576"), MC_OK);
  mc_config_destroy(cfg);
  mc_batch_destroy(b);
  pair_down(&p);
}

/* Four threads, each with its own batch, send 250 NOTIFYs each to one peer while a fifth drains
 * the peer's queue: every notification arrives once, and each thread's in its submit order. */
struct sender {
  struct pair *p;
  uint32_t id;
};

static void *send_many(void *arg) {
  struct sender *s = arg;
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(s->p->from, 1, &b), MC_OK);
  for (uint32_t i = 0; i < 250; i++) {
    uint32_t msg[2] = {s->id, i};
    mc_request_t r = notify_req(s->p->seg, msg, sizeof msg);
    assert_int_equal(mc_batch_submit(b, &r, 1), MC_OK);
    assert_int_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_OK);
    assert_int_equal(mc_batch_reset(b), MC_OK);
  }
  mc_batch_destroy(b);
  return NULL;
}

static void test_threads_each_in_order(void **s) {
  (void)s;
  struct pair p;
  assert_int_equal(pair_up(&p, "tcp", NULL), 0);
  int ep = epoll_on(p.to);
  struct sender snd[4];
  pthread_t th[4];
  for (uint32_t k = 0; k < 4; k++) {
    snd[k] = (struct sender){&p, k};
    pthread_create(&th[k], NULL, send_many, &snd[k]);
  }
  uint32_t next[4] = {0, 0, 0, 0};
  for (int n = 0; n < 1000; n++) {
    mc_notification_t info;
    uint32_t msg[2];
    assert_int_equal(recv_one(p.to, ep, &info, msg, sizeof msg, 10000), 0);
    assert_true(msg[0] < 4);
    assert_int_equal(msg[1], next[msg[0]]);
    next[msg[0]]++;
  }
  for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
  mc_notification_t info = {.size = sizeof info};
  assert_int_equal(mc_notify_recv(p.to, &info, NULL, 0), MC_ERR_NOT_FOUND);
  close(ep);
  pair_down(&p);
}

/* ---------------------------------------------------------------- restart, event fd */

/* A NOTIFY submitted against the descriptor of an engine that restarted (same name, new
 * incarnation) is refused, never given to the new one; reopened, the new one gets them. */
static void test_restarted_peer(void **s) {
  (void)s;
  mc_engine_t *from = tu_engine("transports", "tcp", "heartbeat_ms", "60000", NULL);
  mc_engine_t *old = tu_engine("transports", "tcp", NULL);
  assert_non_null(from);
  assert_non_null(old);
  char name[64];
  snprintf(name, sizeof name, "%s", mc_engine_name(old));
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(from, name, &seg), MC_OK);
  mc_segment_info_t si = {.size = sizeof si};
  assert_int_equal(mc_segment_query(from, seg, &si), MC_OK);
  uint64_t old_inc = si.incarnation;
  mc_engine_destroy(old);
  mc_engine_t *neu = tu_engine("transports", "tcp", "listen", name, NULL);
  assert_non_null(neu);
  const char m[] = "for the old one";
  mc_request_t r = notify_req(seg, m, sizeof m);
  mc_status_t st = mc_transfer(from, &r, 1, tu_wait_ms(10000));
  assert_int_equal(st, MC_ERR_PEER_DOWN);
  char got[64];
  mc_notification_t info = {.size = sizeof info};
  assert_int_equal(mc_notify_recv(neu, &info, got, sizeof got), MC_ERR_NOT_FOUND);
  /* A fresh view of the new incarnation: delivered. */
  assert_int_equal(mc_segment_close(from, seg), MC_OK);
  assert_int_equal(mc_segment_open(from, name, &seg), MC_OK);
  assert_int_equal(mc_segment_query(from, seg, &si), MC_OK);
  assert_int_not_equal(si.incarnation, old_inc);
  r.segment = seg;
  assert_int_equal(mc_transfer(from, &r, 1, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(mc_notify_recv(neu, &info, got, sizeof got), MC_OK);
  assert_string_equal(got, m);
  mc_engine_destroy(from);
  mc_engine_destroy(neu);
}

/* The event fd polls readable when a batch's requests all ended (no notification involved). */
static void test_event_fd_batch_end(void **s) {
  (void)s;
  struct pair p;
  assert_int_equal(pair_up(&p, "tcp", NULL), 0);
  int ep = epoll_on(p.from);
  struct epoll_event ev;
  assert_int_equal(epoll_wait(ep, &ev, 1, 0), 0); /* nothing yet */
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(p.from, 2, &b), MC_OK);
  mc_request_t w = {.opcode = MC_WRITE, .local = p.src, .segment = p.seg,
                    .remote = (uint64_t)(uintptr_t)p.dst, .length = 4u << 20};
  assert_int_equal(mc_batch_submit(b, &w, 1), MC_OK);
  assert_int_equal(epoll_wait(ep, &ev, 1, (int)tu_slack_ms(10000)), 1);
  uint64_t v;
  assert_int_equal(read(ev.data.fd, &v, sizeof v), (ssize_t)sizeof v);
  assert_int_equal(mc_batch_wait(b, 0), MC_OK);
  assert_int_equal(epoll_wait(ep, &ev, 1, 0), 0); /* drained */
  close(ep);
  mc_batch_destroy(b);
  pair_down(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_invalid_at_submit),
      cmocka_unit_test(test_bytes_tcp),
      cmocka_unit_test(test_bytes_shm),
      cmocka_unit_test(test_bytes_local),
      cmocka_unit_test(test_bytes_rdma),
      cmocka_unit_test(test_order_tcp),
      cmocka_unit_test(test_order_shm),
      cmocka_unit_test(test_order_local),
      cmocka_unit_test(test_order_rdma),
      cmocka_unit_test(test_failed_tcp),
      cmocka_unit_test(test_failed_shm),
      cmocka_unit_test(test_failed_local),
      cmocka_unit_test(test_failed_rdma),
      cmocka_unit_test(test_canceled_never_delivered),
      cmocka_unit_test(test_full_queue_busy),
      cmocka_unit_test(test_threads_each_in_order),
      cmocka_unit_test(test_restarted_peer),
      cmocka_unit_test(test_event_fd_batch_end),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
