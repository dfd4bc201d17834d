/* Shared helpers for the fault tests (tests/test_fault_*.c) and bench/fault_bench.c: target
 * processes (helper_fault_target) started, killed and restarted under the same name, the
 * initiator's RSS and descriptor count, a segment-callback recorder and the kill/restart cycle
 * driver with checksummed traffic. Header-only (static functions) so that every test program,
 * built by the Makefile from its one .c file plus testutil.c, can use it. */
#ifndef MC_FAULT_UTIL_H
#define MC_FAULT_UTIL_H
#define FU_UNUSED __attribute__((unused))
/* Sanitizer builds (make test-asan / test-tsan) run everything several times slower and ASan's
 * quarantine grows RSS: RSS checks only print there. Time bounds get tu_slack() (testutil.h:
 * MC_TEST_SLACK, 4 by default in a sanitizer build) times their slack. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FU_SANITIZED 1
#else
#define FU_SANITIZED 0
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../testutil.h"

/* ------------------------------------------------------------------ children */

#define FU_MAX_CHILDREN 32
static pid_t fu_children[FU_MAX_CHILDREN];

static FU_UNUSED void fu_child_add(pid_t p) {
  for (int i = 0; i < FU_MAX_CHILDREN; i++)
    if (fu_children[i] == 0) {
      fu_children[i] = p;
      return;
    }
}

static FU_UNUSED void fu_child_forget(pid_t p) {
  for (int i = 0; i < FU_MAX_CHILDREN; i++)
    if (fu_children[i] == p) fu_children[i] = 0;
}

/* Kills (SIGKILL) and reaps every child still registered. Safe to call at any time. */
static FU_UNUSED void fu_kill_all(void) {
  for (int i = 0; i < FU_MAX_CHILDREN; i++)
    if (fu_children[i] > 0) {
      kill(fu_children[i], SIGCONT);
      kill(fu_children[i], SIGKILL);
      waitpid(fu_children[i], NULL, 0);
      fu_children[i] = 0;
    }
}

static FU_UNUSED int fu_teardown(void **state) {
  (void)state;
  fu_kill_all();
  return 0;
}

/* The directory of this executable (build/tests), where the helpers are. */
static FU_UNUSED void fu_exe_dir(char *out, size_t cap) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    snprintf(out, cap, ".");
    return;
  }
  exe[n] = 0;
  snprintf(out, cap, "%s", dirname(exe));
}

/* ------------------------------------------------------------------ targets */

struct fu_target {
  pid_t pid;
  char name[400];       /* HOST:PORT */
  uint64_t addr;        /* the registered buffer's address in the target */
  uint64_t incarnation; /* the target engine's incarnation */
  uint64_t seed;        /* its buffer was filled with tu_fill(seed) */
  uint64_t up_ms;       /* when it printed its segment (it answers from then on) */
};

/* Reads one line from fd within deadline (monotonic ms). Returns 0 or -1. */
static FU_UNUSED int fu_read_line(int fd, char *buf, size_t cap, uint64_t deadline) {
  size_t n = 0;
  while (n + 1 < cap) {
    uint64_t now = tu_now_ms();
    if (now >= deadline) return -1;
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, (int)(deadline - now));
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return -1;
    }
    char c;
    ssize_t k = read(fd, &c, 1);
    if (k <= 0) return -1;
    if (c == '\n') break;
    buf[n++] = c;
  }
  buf[n] = 0;
  return 0;
}

/* Starts helper_fault_target SIZE SEED MEM with listen=LISTEN (NULL: 127.0.0.1:0) and the given
 * extra key=value strings (NULL-terminated array, may be NULL). MEM: "alloc" (memfd, mappable by
 * same-host peers) or "plain". netns_fd >= 0: the child joins that network namespace first.
 * Returns 0, or -1 with a message on stderr (the child is killed then). */
static FU_UNUSED int fu_start_target(struct fu_target *t, size_t size, uint64_t seed, const char *mem,
                                     const char *listen, int netns_fd, const char *const *extra) {
  char dir[PATH_MAX], helper[PATH_MAX + 32];
  fu_exe_dir(dir, sizeof dir);
  snprintf(helper, sizeof helper, "%s/helper_fault_target", dir);
  if (access(helper, X_OK) != 0) {
    /* bench/fault_bench runs from elsewhere: MC_FAULT_HELPER names the helper. */
    const char *h = getenv("MC_FAULT_HELPER");
    if (h) snprintf(helper, sizeof helper, "%s", h);
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  char sz[32], sd[32], ls[420];
  snprintf(sz, sizeof sz, "%zu", size);
  snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
  snprintf(ls, sizeof ls, "listen=%s", listen ? listen : "127.0.0.1:0");
  const char *argv[32];
  int ac = 0;
  argv[ac++] = helper;
  argv[ac++] = sz;
  argv[ac++] = sd;
  argv[ac++] = mem ? mem : "plain";
  argv[ac++] = ls;
  for (int i = 0; extra && extra[i] && ac < 30; i++) argv[ac++] = extra[i];
  argv[ac] = NULL;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) _exit(126);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) {
      perror("setns");
      _exit(125);
    }
    dup2(fds[1], 1);
    execv(helper, (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  fu_child_add(pid);
  char line[400];
  uint64_t deadline = tu_now_ms() + tu_slack_ms(10000);
  int ok = fu_read_line(fds[0], line, sizeof line, deadline) == 0 && strncmp(line, "segment: ", 9) == 0;
  if (ok) {
    t->up_ms = tu_now_ms();
    snprintf(t->name, sizeof t->name, "%s", line + 9);
    ok = fu_read_line(fds[0], line, sizeof line, deadline) == 0 && strncmp(line, "addr: ", 6) == 0;
  }
  if (ok) {
    t->addr = strtoull(line + 6, NULL, 16);
    ok = fu_read_line(fds[0], line, sizeof line, deadline) == 0 && strncmp(line, "incarnation: ", 13) == 0;
  }
  close(fds[0]);
  if (!ok) {
    fprintf(stderr, "fault: target %s (listen %s) did not start\n", helper, ls + 7);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fu_child_forget(pid);
    return -1;
  }
  t->incarnation = strtoull(line + 13, NULL, 10);
  t->seed = seed;
  t->pid = pid;
  return 0;
}

/* Sends sig and, unless it is SIGSTOP/SIGCONT, reaps the child. SIGSTOP returns once the child
 * is stopped: kill() only queues it, and a request sent right after could still be served. */
static FU_UNUSED void fu_signal_target(struct fu_target *t, int sig) {
  if (t->pid <= 0) return;
  kill(t->pid, sig);
  if (sig == SIGSTOP) {
    int st;
    while (waitpid(t->pid, &st, WUNTRACED) < 0 && errno == EINTR) {
    }
  }
  if (sig == SIGSTOP || sig == SIGCONT) return;
  if (sig != SIGKILL) kill(t->pid, SIGCONT);
  waitpid(t->pid, NULL, 0);
  fu_child_forget(t->pid);
  t->pid = 0;
}

/* Restarts a target under the same name (its port), retrying while the port is still busy. */
static FU_UNUSED int fu_restart_target(struct fu_target *t, size_t size, uint64_t seed, const char *mem,
                                       int netns_fd, const char *const *extra) {
  char name[400];
  snprintf(name, sizeof name, "%s", t->name);
  for (int i = 0; i < 50; i++) {
    if (fu_start_target(t, size, seed, mem, name, netns_fd, extra) == 0) {
      if (strcmp(t->name, name) == 0) return 0;
      fu_signal_target(t, SIGKILL);
      return -1;
    }
    usleep(100000);
  }
  return -1;
}

/* ------------------------------------------------------------------ the initiator's resources */

static FU_UNUSED long fu_rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long v = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) v = strtol(line + 6, NULL, 10);
  fclose(f);
  return v;
}

static FU_UNUSED int fu_fd_count(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the DIR's own descriptor */
}

static FU_UNUSED int fu_thread_count(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* ------------------------------------------------------------------ segment callback recorder */

struct fu_event {
  mc_segment_t seg;
  uint32_t state;
  uint64_t incarnation;
  uint64_t ms;
};

#define FU_MAX_EVENTS 4096
struct fu_events {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t n;
  struct fu_event ev[FU_MAX_EVENTS];
};

static FU_UNUSED void fu_events_init(struct fu_events *e) {
  memset(e, 0, sizeof *e);
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
}

static FU_UNUSED void fu_on_segment(mc_segment_t seg, uint32_t state, uint64_t inc, void *user) {
  struct fu_events *e = user;
  pthread_mutex_lock(&e->mu);
  if (e->n < FU_MAX_EVENTS) e->ev[e->n++] = (struct fu_event){seg, state, inc, tu_now_ms()};
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

/* Waits for an event at index >= from with the given state (and incarnation, unless 0).
 * Returns its index or -1 after timeout_ms (times tu_slack()). */
static FU_UNUSED long fu_wait_event(struct fu_events *e, size_t from, uint32_t state, uint64_t inc,
                                    int timeout_ms) {
  uint64_t deadline = tu_now_ms() + tu_slack_ms((uint64_t)timeout_ms);
  pthread_mutex_lock(&e->mu);
  for (;;) {
    for (size_t i = from; i < e->n; i++)
      if (e->ev[i].state == state && (inc == 0 || e->ev[i].incarnation == inc)) {
        pthread_mutex_unlock(&e->mu);
        return (long)i;
      }
    uint64_t now = tu_now_ms();
    if (now >= deadline) break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t wait = deadline - now < 20 ? deadline - now : 20;
    ts.tv_nsec += (long)(wait * 1000000);
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&e->cv, &e->mu, &ts);
  }
  pthread_mutex_unlock(&e->mu);
  return -1;
}

static FU_UNUSED size_t fu_events_count(struct fu_events *e) {
  pthread_mutex_lock(&e->mu);
  size_t n = e->n;
  pthread_mutex_unlock(&e->mu);
  return n;
}

/* Polls mc_segment_query until state (and incarnation unless 0) or timeout_ms (times
 * tu_slack()). 0 or -1. */
static FU_UNUSED int fu_wait_state(mc_engine_t *e, mc_segment_t s, uint32_t state, uint64_t inc,
                                   int timeout_ms, mc_segment_info_t *out) {
  uint64_t deadline = tu_now_ms() + tu_slack_ms((uint64_t)timeout_ms);
  mc_segment_info_t info = {.size = sizeof info};
  for (;;) {
    if (mc_segment_query(e, s, &info) == MC_OK && info.state == state &&
        (inc == 0 || info.incarnation == inc)) {
      if (out) *out = info;
      return 0;
    }
    if (tu_now_ms() >= deadline) {
      if (out) *out = info;
      return -1;
    }
    usleep(2000);
  }
}

/* ------------------------------------------------------------------ checksummed traffic */

/* A target buffer is FU_REGIONS regions of region bytes. Region 0 is only read: it must hold the
 * pattern the serving incarnation was started with. Regions 1.. get a fresh pattern written and
 * read back. A result counts only when the segment's incarnation was the same before the WRITE
 * and after the READ (then both were served by one incarnation: the HELLO / watch-socket checks
 * guarantee that a request validated against one incarnation is never served by another), and
 * only when that incarnation had announced itself before the WRITE: a target's buffer from
 * mc_buffer_alloc is registered, and reachable by peers that fetch its descriptor, before the
 * target has filled it with its pattern (helper_fault_target prints its lines after the fill,
 * and the driver records the incarnation after those lines). A WRITE that lands while the target
 * still fills is overwritten by the target itself: not the engine's doing. Such iterations run
 * their requests (each must still end) but verify nothing (counted in unannounced). */
#define FU_REGIONS 8
#define FU_MAX_INCS 1024

struct fu_traffic {
  mc_engine_t *e;
  mc_segment_t seg;
  size_t region;             /* bytes per region */
  char *wbuf, *rbuf, *zbuf;  /* registered local buffers, region bytes each */
  int timeout_ms;            /* bound for one wait: the engine's timeout_ms plus slack */
  volatile int stop;
  pthread_t thr;
  /* incarnation -> seed of every target started (written by the driver). */
  pthread_mutex_t mu;
  uint64_t incs[FU_MAX_INCS], seeds[FU_MAX_INCS];
  size_t ninc;
  /* results */
  uint64_t iterations, submitted, completed, failed, refused_at_submit, stuck, wrong_bytes,
      verified, stale_discarded, unannounced;
  uint64_t last_ok_inc, last_ok_ms; /* the last verified read of region 0 */
  char first_error[256];
  char last_failure[256]; /* the last failed request or submit (diagnostics) */
  volatile uint64_t hint_addr; /* the current target's buffer, from the driver */
  uint64_t empty_descriptor; /* iterations that found no buffer in the descriptor as last known */
};

static FU_UNUSED void fu_traffic_add_inc(struct fu_traffic *t, uint64_t inc, uint64_t seed) {
  pthread_mutex_lock(&t->mu);
  if (t->ninc < FU_MAX_INCS) {
    t->incs[t->ninc] = inc;
    t->seeds[t->ninc] = seed;
    t->ninc++;
  }
  pthread_mutex_unlock(&t->mu);
}

static FU_UNUSED int fu_traffic_seed(struct fu_traffic *t, uint64_t inc, uint64_t *seed) {
  int found = 0;
  pthread_mutex_lock(&t->mu);
  for (size_t i = 0; i < t->ninc; i++)
    if (t->incs[i] == inc) {
      *seed = t->seeds[i];
      found = 1;
    }
  pthread_mutex_unlock(&t->mu);
  return found;
}

static FU_UNUSED void fu_traffic_last_ok(struct fu_traffic *t, uint64_t *inc, uint64_t *ms) {
  pthread_mutex_lock(&t->mu);
  *inc = t->last_ok_inc;
  *ms = t->last_ok_ms;
  pthread_mutex_unlock(&t->mu);
}

static FU_UNUSED long long fu_count_wrong(const char *buf, size_t len, uint64_t seed) {
  /* Bytes differing from the pattern (the pattern is compared in 8-byte words). */
  char *ref = malloc(len);
  if (!ref) return (long long)len;
  tu_fill(ref, len, seed);
  long long n = 0;
  for (size_t i = 0; i < len; i++) n += buf[i] != ref[i];
  free(ref);
  return n;
}

/* Runs one request on batch b; returns its final status, or 1 when it stayed pending past the
 * bound (a contract violation: counted in stuck). */
static FU_UNUSED int fu_one(struct fu_traffic *t, mc_batch_t *b, uint32_t op, void *local, uint64_t remote,
                            size_t len) {
  mc_request_t r = {op, 0, local, t->seg, remote, len};
  mc_batch_reset(b);
  mc_status_t st = mc_batch_submit(b, &r, 1);
  if (st != MC_OK) {
    t->refused_at_submit++;
    snprintf(t->last_failure, sizeof t->last_failure, "submit: %s", mc_last_error());
    return st;
  }
  t->submitted++;
  mc_status_t w = mc_batch_wait(b, t->timeout_ms);
  mc_request_status_t rs;
  mc_batch_status(b, 0, &rs);
  if (w == MC_ERR_TIMEOUT || rs.state == MC_REQUEST_PENDING) {
    t->stuck++;
    if (!t->first_error[0])
      snprintf(t->first_error, sizeof t->first_error, "a request stayed pending for %d ms", t->timeout_ms);
    mc_batch_wait(b, -1);  /* the contract says it ends; keep the memory valid until it does */
    mc_batch_status(b, 0, &rs);
  }
  if (rs.state == MC_REQUEST_COMPLETED) {
    t->completed++;
    return MC_OK;
  }
  t->failed++;
  snprintf(t->last_failure, sizeof t->last_failure, "%s of 0x%llx: %s", op == MC_READ ? "READ" : "WRITE",
           (unsigned long long)remote, mc_status_str(rs.error));
  return rs.error ? rs.error : MC_ERR_INTERNAL;
}

static FU_UNUSED void *fu_traffic_main(void *arg) {
  struct fu_traffic *t = arg;
  mc_batch_t *b = NULL;
  if (mc_batch_create(t->e, 1, &b) != MC_OK) return NULL;
  mc_buffer_info_t bi[4];
  size_t nb = 0;
  uint64_t k = 0;
  while (!t->stop) {
    t->iterations++;
    mc_segment_info_t q1 = {.size = sizeof q1}, q2 = {.size = sizeof q2};
    mc_segment_query(t->e, t->seg, &q1);
    if (q1.state != MC_SEGMENT_OK) {
      /* New submits must fail at once while unreachable (the submit alone is timed, with the
       * slack a loaded machine needs: at load ~27 on 2 cores a thread waited 144-357 ms). */
      mc_request_t r = {MC_READ, 0, t->zbuf, t->seg, 0, 1};
      if (mc_segment_buffers(t->e, t->seg, bi, 4, &nb) == MC_OK && nb > 0) r.remote = bi[0].addr;
      mc_batch_reset(b);
      uint64_t t0 = tu_now_ms();
      mc_status_t st = mc_batch_submit(b, &r, 1);
      uint64_t took = tu_now_ms() - t0;
      if (st == MC_OK) {
        t->submitted++;
        mc_batch_wait(b, -1);
        mc_request_status_t rs;
        mc_batch_status(b, 0, &rs);
        if (rs.state == MC_REQUEST_COMPLETED) t->completed++;
        else t->failed++;
      } else {
        t->refused_at_submit++;
        if (st != MC_ERR_PEER_DOWN && !t->first_error[0])
          snprintf(t->first_error, sizeof t->first_error, "submit to an unreachable segment: %s",
                   mc_status_str(st));
      }
      if (took > tu_slack_ms(100) && st != MC_OK && !t->first_error[0])
        snprintf(t->first_error, sizeof t->first_error, "a submit to an unreachable segment took %llu ms",
                 (unsigned long long)took);
      usleep(1000);
      continue;
    }
    /* A probe may have caught a restarted target before it registered its buffer: the
     * descriptor as last known is then empty until a submit misses it and refreshes it. Use
     * the address the target printed then (the submit refreshes the descriptor). */
    uint64_t seed0 = 0;
    const int announced = fu_traffic_seed(t, q1.incarnation, &seed0);
    uint64_t base = t->hint_addr;
    if (mc_segment_buffers(t->e, t->seg, bi, 4, &nb) == MC_OK && nb >= 1) base = bi[0].addr;
    else t->empty_descriptor++;
    k++;
    size_t reg = 1 + (size_t)(k % (FU_REGIONS - 1));
    uint64_t wseed = 0x5eed0000ull + k * 7919u;
    tu_fill(t->wbuf, t->region, wseed);
    memset(t->rbuf, 0, t->region);
    memset(t->zbuf, 0, t->region);
    int ws = fu_one(t, b, MC_WRITE, t->wbuf, base + reg * t->region, t->region);
    int rs = ws == MC_OK ? fu_one(t, b, MC_READ, t->rbuf, base + reg * t->region, t->region) : ws;
    int zs = fu_one(t, b, MC_READ, t->zbuf, base, t->region);
    mc_segment_query(t->e, t->seg, &q2);
    if (q1.incarnation != q2.incarnation) {
      t->stale_discarded++;
      continue;
    }
    if (!announced) {
      t->unannounced++;
      continue;
    }
    if (ws == MC_OK && rs == MC_OK) {
      long long bad = fu_count_wrong(t->rbuf, t->region, wseed);
      t->wrong_bytes += (uint64_t)bad;
      t->verified++;
      if (bad && !t->first_error[0])
        snprintf(t->first_error, sizeof t->first_error, "%lld wrong bytes read back from region %zu", bad, reg);
    }
    if (zs == MC_OK) {
      long long bad = fu_count_wrong(t->zbuf, t->region, seed0);
      t->wrong_bytes += (uint64_t)bad;
      t->verified++;
      if (bad && !t->first_error[0])
        snprintf(t->first_error, sizeof t->first_error, "%lld wrong bytes in the target's own pattern", bad);
      if (!bad) {
        pthread_mutex_lock(&t->mu);
        t->last_ok_inc = q2.incarnation;
        t->last_ok_ms = tu_now_ms();
        pthread_mutex_unlock(&t->mu);
      }
    }
  }
  mc_batch_destroy(b);
  return NULL;
}

/* Registers the local buffers (from mc_buffer_alloc) and starts the traffic thread. */
static FU_UNUSED int fu_traffic_start(struct fu_traffic *t, mc_engine_t *e, mc_segment_t seg, size_t region,
                                      int timeout_ms) {
  memset(t, 0, sizeof *t);
  pthread_mutex_init(&t->mu, NULL);
  t->e = e;
  t->seg = seg;
  t->region = region;
  t->timeout_ms = timeout_ms;
  void *p = NULL;
  if (mc_buffer_alloc(e, 3 * region, NULL, &p) != MC_OK) return -1;
  t->wbuf = p;
  t->rbuf = t->wbuf + region;
  t->zbuf = t->rbuf + region;
  return pthread_create(&t->thr, NULL, fu_traffic_main, t) == 0 ? 0 : -1;
}

static FU_UNUSED void fu_traffic_stop(struct fu_traffic *t) {
  t->stop = 1;
  pthread_join(t->thr, NULL);
  mc_buffer_free(t->e, t->wbuf);
}

/* ------------------------------------------------------------------ kill/restart cycles */

struct fu_cycle_result {
  int cycles_done;
  uint64_t detect_max_ms, detect_sum_ms;      /* kill -> UNREACHABLE callback */
  uint64_t resume_max_ms, resume_sum_ms;      /* restart answering -> first verified read */
  int detect_missed;                          /* kill never reported UNREACHABLE (a quick rejoin) */
  uint64_t detect_ms[1024], resume_ms[1024];   /* per cycle (the first 1024) */
  uint64_t rejoins;
  long rss_start_kb, rss_end_kb;
  int fd_start, fd_end, threads_start, threads_end;
  char error[512];
};

/* Runs `cycles` kill -9 / restart cycles of target t under continuous traffic. The engine must
 * have the recorder ev installed as its segment callback. */
static FU_UNUSED int fu_cycles(mc_engine_t *e, mc_segment_t seg, struct fu_events *ev, struct fu_target *t,
                               size_t size, const char *mem, int cycles, int engine_timeout_ms,
                               int netns_fd, const char *const *extra, struct fu_traffic *tr,
                               struct fu_cycle_result *res) {
  memset(res, 0, sizeof *res);
  size_t region = size / FU_REGIONS;
  if (fu_traffic_start(tr, e, seg, region, engine_timeout_ms + 3000) != 0) {
    snprintf(res->error, sizeof res->error, "cannot start traffic");
    return -1;
  }
  tr->hint_addr = t->addr;
  fu_traffic_add_inc(tr, t->incarnation, t->seed);
  uint64_t baseline_rejoins = 0;
  mc_segment_info_t info = {.size = sizeof info};
  mc_segment_query(e, seg, &info);
  baseline_rejoins = info.rejoins;
  int rc = 0;
  for (int c = 0; c < cycles; c++) {
    /* Traffic verified on the current incarnation first. */
    uint64_t inc = 0, ms = 0, t0 = tu_now_ms();
    for (;;) {
      fu_traffic_last_ok(tr, &inc, &ms);
      if (inc == t->incarnation && ms > t->up_ms) break;
      if (tu_now_ms() - t0 > tu_slack_ms(10000)) {
        snprintf(res->error, sizeof res->error, "cycle %d: no verified transfer to incarnation %llu within 10 s",
                 c, (unsigned long long)t->incarnation);
        rc = -1;
        goto out;
      }
      usleep(1000);
    }
    if (c == 0) {
      /* Baselines after the first connections and mappings exist. */
      usleep(20000);
      res->rss_start_kb = fu_rss_kb();
      res->fd_start = fu_fd_count();
      res->threads_start = fu_thread_count();
    }
    usleep(10000 + (unsigned)(rand() % 30000)); /* kill at a random point of the traffic */
    size_t evn = fu_events_count(ev);
    uint64_t kill_ms = tu_now_ms();
    fu_signal_target(t, SIGKILL);
    long ei = fu_wait_event(ev, evn, MC_SEGMENT_UNREACHABLE, 0, 10000);
    if (ei >= 0) {
      uint64_t d = ev->ev[ei].ms - kill_ms;
      if (c < 1024) res->detect_ms[c] = d;
      res->detect_sum_ms += d;
      if (d > res->detect_max_ms) res->detect_max_ms = d;
    } else {
      res->detect_missed++;
    }
    uint64_t seed = 1000 + (uint64_t)c * 31 + (uint64_t)rand() % 17;
    if (fu_restart_target(t, size, seed, mem, netns_fd, extra) != 0) {
      snprintf(res->error, sizeof res->error, "cycle %d: the target did not restart under its name", c);
      rc = -1;
      goto out;
    }
    fu_traffic_add_inc(tr, t->incarnation, seed);
    tr->hint_addr = t->addr;
    /* Resumption: first verified read of the new incarnation's pattern. */
    t0 = tu_now_ms();
    for (;;) {
      fu_traffic_last_ok(tr, &inc, &ms);
      if (inc == t->incarnation) break;
      if (tu_now_ms() - t0 > tu_slack_ms(10000)) {
        mc_segment_info_t qi = {.size = sizeof qi};
        mc_segment_query(e, seg, &qi);
        snprintf(res->error, sizeof res->error,
                 "cycle %d: no transfer completed to the restarted target within 10 s (segment state %u, "
                 "incarnation %s, transport %s; traffic iterations %llu, iterations before the target announced itself %llu; "
                 "last failure: %.120s)",
                 c, qi.state, qi.incarnation == t->incarnation ? "new" : "old", qi.transport,
                 (unsigned long long)tr->iterations, (unsigned long long)tr->unannounced, tr->last_failure);
        rc = -1;
        goto out;
      }
      usleep(500);
    }
    uint64_t r = ms > t->up_ms ? ms - t->up_ms : 0;
    if (c < 1024) res->resume_ms[c] = r;
    res->resume_sum_ms += r;
    if (r > res->resume_max_ms) res->resume_max_ms = r;
    res->cycles_done = c + 1;
  }
out:
  fu_traffic_stop(tr);
  mc_segment_query(e, seg, &info);
  res->rejoins = info.rejoins - baseline_rejoins;
  res->rss_end_kb = fu_rss_kb();
  res->fd_end = fu_fd_count();
  res->threads_end = fu_thread_count();
  return rc;
}

#endif
