/* register_bench - registration figures of issue 19 ("Measured").
 *
 *   register_bench stall TRANSPORTS [RDMA_DEVICES]
 *     Two engines in this process; a thread WRITEs 8 bytes from an already registered buffer
 *     to the other engine again and again (mc_transfer, to completion) while the main thread
 *     registers 1 GiB of touched memory. Prints the registration's duration, the longest
 *     transfer before it (same length of time) and the longest one that overlapped it.
 *   register_bench batch TRANSPORTS [ROUNDS] [busy]
 *     10,000 buffers of 4 KiB in one mc_buffer_register_batch (then unregistered again),
 *     ROUNDS times (7) with no peer, then ROUNDS times while a peer engine in another process
 *     (this program, exec'd as "peer") has the segment open: idle, or with "busy" READing
 *     8 bytes of the engine's one other buffer in a loop. Prints every round and the medians.
 *   register_bench peer NAME TRANSPORTS idle|busy   (used by "batch") opens NAME, says OPEN,
 *     then waits or READs.
 * Engine keys from MC_* variables as usual. */
#define _GNU_SOURCE
#include <mc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NBUF 10000u
#define PAGE 4096u
#define GIB (1ull << 30)

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "register_bench: %s: %s\n", what, mc_last_error());
  exit(1);
}

static mc_engine_t *make_engine(const char *transports, const char *rdma_devices) {
  mc_config_t *c;
  mc_engine_t *e;
  if (mc_config_create(&c) != MC_OK) die("config");
  if (mc_config_set(c, "transports", transports) != MC_OK) die("transports");
  if (rdma_devices && mc_config_set(c, "rdma_devices", rdma_devices) != MC_OK) die("rdma_devices");
  if (mc_engine_create(c, &e) != MC_OK) die("engine create");
  mc_config_destroy(c);
  return e;
}

/* ------------------------------------------------------------------ stall */

struct writer {
  mc_engine_t *e;
  mc_request_t req;
  atomic_int stop;
  _Atomic double reg_start, reg_end; /* 0 until the main thread sets them */
  double max_before, max_during;
  long n_during, failures;
};

/* Each transfer's latency is booked as "during" when it overlapped the registration. */
static void *writer_main(void *arg) {
  struct writer *w = arg;
  while (!atomic_load(&w->stop)) {
    double t0 = now_s();
    if (mc_transfer(w->e, &w->req, 1, 30000) != MC_OK) w->failures++;
    double t1 = now_s(), lat = t1 - t0;
    double rs = atomic_load(&w->reg_start), re = atomic_load(&w->reg_end);
    if (rs == 0) {
      if (lat > w->max_before) w->max_before = lat;
    } else if (t1 >= rs && (re == 0 || t0 <= re)) {
      if (lat > w->max_during) w->max_during = lat;
      w->n_during++;
    }
  }
  return NULL;
}

static int stall(const char *transports, const char *rdma_devices) {
  mc_engine_t *ini = make_engine(transports, rdma_devices), *tgt = make_engine(transports, rdma_devices);
  static char src[PAGE], dst[PAGE];
  if (mc_buffer_register(ini, src, sizeof src, "cpu") != MC_OK) die("register src");
  if (mc_buffer_register(tgt, dst, sizeof dst, "cpu") != MC_OK) die("register dst");
  mc_segment_t s;
  if (mc_segment_open(ini, mc_engine_name(tgt), &s) != MC_OK) die("open");
  char *big = mmap(NULL, GIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (big == MAP_FAILED) die("mmap 1 GiB");
  struct writer w = {.e = ini, .req = {MC_WRITE, 0, src, s, (uint64_t)(uintptr_t)dst, 8}};
  pthread_t th;
  pthread_create(&th, NULL, writer_main, &w);
  double t_before = now_s();
  usleep(500000);
  /* The registration is timed; the writer's "before" window is about as long (>= 0.5 s). */
  double t0 = now_s();
  atomic_store(&w.reg_start, t0);
  mc_status_t st = mc_buffer_register(ini, big, GIB, "cpu");
  double t1 = now_s();
  atomic_store(&w.reg_end, t1);
  if (t1 - t0 > t0 - t_before) usleep((useconds_t)((t1 - t0) * 1e6));
  usleep(100000);
  atomic_store(&w.stop, 1);
  pthread_join(th, NULL);
  printf("stall transports=%s rdma_devices=%s register_1GiB_ms=%.2f status=%d "
         "max_transfer_before_ms=%.3f max_transfer_during_ms=%.3f transfers_during=%ld failures=%ld\n",
         transports, rdma_devices ? rdma_devices : "-", (t1 - t0) * 1e3, st, w.max_before * 1e3,
         w.max_during * 1e3, w.n_during, w.failures);
  if (st == MC_OK) mc_buffer_unregister(ini, big);
  mc_engine_destroy(ini);
  mc_engine_destroy(tgt);
  munmap(big, GIB);
  return st == MC_OK ? 0 : 1;
}

/* ------------------------------------------------------------------ batch */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* ROUNDS registrations of NBUF buffers; their median in ms; every round printed. */
static double rounds(mc_engine_t *e, char *mem, int n, const char *what) {
  static mc_buffer_desc_t d[NBUF];
  static void *a[NBUF];
  double ms[64];
  for (unsigned i = 0; i < NBUF; i++) d[i] = (mc_buffer_desc_t){mem + (size_t)i * PAGE, PAGE, "cpu"}, a[i] = d[i].addr;
  printf("batch %s:", what);
  for (int r = 0; r < n; r++) {
    double t0 = now_s();
    if (mc_buffer_register_batch(e, d, NBUF) != MC_OK) die("register_batch");
    ms[r] = (now_s() - t0) * 1e3;
    printf(" %.1f", ms[r]);
    fflush(stdout);
    if (mc_buffer_unregister_batch(e, a, NBUF) != MC_OK) die("unregister_batch");
    usleep(200000);
  }
  qsort(ms, (size_t)n, sizeof ms[0], cmp_d);
  printf(" ms (median %.1f, min %.1f, max %.1f)\n", ms[n / 2], ms[0], ms[n - 1]);
  return ms[n / 2];
}

/* The peer: exec'd (this process has engine threads), so its engine starts in a clean process. */
static pid_t start_peer(const char *name, const char *transports, const char *how) {
  int fds[2];
  if (pipe(fds) != 0) exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execl("/proc/self/exe", "register_bench", "peer", name, transports, how, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  char line[64] = "";
  FILE *in = fdopen(fds[0], "r");
  if (!fgets(line, sizeof line, in) || strncmp(line, "OPEN", 4) != 0) {
    fprintf(stderr, "register_bench: the peer did not open the segment\n");
    exit(1);
  }
  fclose(in);
  return pid;
}

static int batch(const char *transports, int n, const char *how) {
  if (n < 1 || n > 64) n = 7;
  mc_engine_t *e = make_engine(transports, NULL);
  static char one[PAGE];  /* what a busy peer READs */
  if (mc_buffer_register(e, one, sizeof one, "cpu") != MC_OK) die("register");
  char *mem = mmap(NULL, (size_t)NBUF * PAGE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  double alone = rounds(e, mem, n, "no peer");
  pid_t pid = start_peer(mc_engine_name(e), transports, how);
  usleep(500000);
  double with = rounds(e, mem, n, strcmp(how, "busy") ? "peer attached, idle" : "peer attached, READing");
  printf("batch transports=%s buffers=%u rounds=%d peer=%s median_no_peer_ms=%.1f median_peer_ms=%.1f\n",
         transports, NBUF, n, how, alone, with);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  mc_engine_destroy(e);
  return 0;
}

static _Noreturn void peer(const char *name, const char *transports, const char *how) {
  mc_engine_t *e = make_engine(transports, NULL);
  mc_segment_t s;
  if (mc_segment_open(e, name, &s) != MC_OK) die("peer open");
  static char local[PAGE];
  if (mc_buffer_register(e, local, sizeof local, "cpu") != MC_OK) die("peer register");
  mc_buffer_info_t b;
  size_t cnt = 0;
  if (mc_segment_buffers(e, s, &b, 1, &cnt) != MC_OK || cnt < 1) die("peer buffers");
  printf("OPEN\n");
  fflush(stdout);
  if (strcmp(how, "busy") != 0)
    for (;;) pause();
  mc_request_t r = {MC_READ, 0, local, s, b.addr, 8};
  for (;;) (void)mc_transfer(e, &r, 1, 5000);  /* failures (a killed parent) end by PDEATHSIG */
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "stall") == 0) return stall(argv[2], argc > 3 ? argv[3] : NULL);
  if (argc >= 3 && strcmp(argv[1], "batch") == 0) return batch(argv[2], argc > 3 ? atoi(argv[3]) : 7, argc > 4 ? argv[4] : "idle");
  if (argc >= 5 && strcmp(argv[1], "peer") == 0) peer(argv[2], argv[3], argv[4]);
  fprintf(stderr, "usage: register_bench stall TRANSPORTS [RDMA_DEVICES] | batch TRANSPORTS [ROUNDS] [busy]\n");
  return 2;
}
