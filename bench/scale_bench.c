/* scale_bench TRANSPORTS N [PROCS] - what N open segments cost the engine that opened them.
 *
 * PROCS peer processes (default 4), forked before this process starts any thread, host N/PROCS
 * engines each (transports=TRANSPORTS, one 64 KiB buffer each). The observing engine in this
 * process opens all N segments, moves 8 bytes to each (so that data paths exist), lets the
 * engine settle and then reads, for this process only: threads (/proc/self/task), fds
 * (/proc/self/fd), VmRSS, and CPU time over IDLE seconds of idleness (getrusage); beside it the
 * CPU time the PROCS peer processes used in the same window (/proc/PID/stat), so that a cost
 * moved from the observer to its peers shows. Then it
 * SIGKILLs peer process 0 and times until every segment of that process reports UNREACHABLE
 * (segment callback, or mc_segment_query polled every 5 ms, whichever says so first).
 * Prints one line of key=value pairs for bench/scale.sh. Engine keys come from MC_* variables
 * as usual (MC_HEARTBEAT_MS, MC_PEER_TIMEOUT_MS); IDLE (seconds, 10) sets the idle window. */
#define _GNU_SOURCE
#include <dirent.h>
#include <mc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64
#define NAME_LEN 128
#define PEER_BUF (64u << 10)

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "scale_bench: %s: %s\n", what, mc_last_error());
  exit(1);
}

static mc_engine_t *make_engine(const char *transports) {
  mc_config_t *c;
  mc_engine_t *e;
  if (mc_config_create(&c) != MC_OK) die("config");
  if (mc_config_set(c, "transports", transports) != MC_OK) die("transports");
  if (mc_engine_create(c, &e) != MC_OK) die("engine create");
  mc_config_destroy(c);
  return e;
}

/* A peer process: n engines, their names written one per line to fd, then "READY". Lives until
 * killed (or its parent dies). */
static void peer_main(const char *transports, int n, int fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  FILE *out = fdopen(fd, "w");
  for (int i = 0; i < n; i++) {
    mc_engine_t *e = make_engine(transports);
    void *buf = calloc(1, PEER_BUF);
    if (!buf || mc_buffer_register(e, buf, PEER_BUF, "cpu") != MC_OK) die("peer register");
    fprintf(out, "%s\n", mc_engine_name(e));
  }
  fprintf(out, "READY\n");
  fflush(out);
  for (;;) pause();
}

static long count_dir(const char *path) {
  DIR *d = opendir(path);
  long n = 0;
  if (!d) return -1;
  for (struct dirent *de; (de = readdir(d));)
    if (de->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &v) == 1) break;
  if (f) fclose(f);
  return v;
}

static double cpu_s(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

/* CPU seconds (user + system) the peer processes used so far, from /proc/PID/stat. */
static double peers_cpu_s(const pid_t *pids, int n) {
  double s = 0;
  long tick = sysconf(_SC_CLK_TCK);
  for (int p = 0; p < n; p++) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pids[p]);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    const char *r = strrchr(buf, ')'); /* the command may hold spaces: fields follow the last ')' */
    unsigned long ut = 0, st = 0;
    if (r && sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
      s += (double)(ut + st) / (double)tick;
  }
  return s;
}

/* ------------------------------------------------------------------ state of the run */

static int g_n, g_procs;
static char (*g_names)[NAME_LEN];  /* [n]: peer engine names, process p holds [p*n/procs, ..) */
static mc_segment_t *g_seg;        /* [n] */
static _Atomic double *g_down_at;  /* [n]: first time seen UNREACHABLE, 0 = not yet */
static pid_t g_pid[MAX_PROCS];

/* The peer process that hosts engine i (process p hosts [p*n/procs, (p+1)*n/procs)). */
static int owner_of(int i) {
  int p = 0;
  while (p + 1 < g_procs && (long)(p + 1) * g_n / g_procs <= i) p++;
  return p;
}

static void on_segment(mc_segment_t s, uint32_t state, uint64_t inc, void *user) {
  (void)inc, (void)user;
  if (state != MC_SEGMENT_UNREACHABLE) return;
  for (int i = 0; i < g_n; i++) {
    double zero = 0;
    if (g_seg[i] == s) atomic_compare_exchange_strong(&g_down_at[i], &zero, now_s());
  }
}

static void start_peers(const char *transports) {
  for (int p = 0; p < g_procs; p++) {
    int lo = (int)((long)p * g_n / g_procs), hi = (int)((long)(p + 1) * g_n / g_procs);
    int fds[2];
    if (pipe(fds) != 0) exit(1);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      peer_main(transports, hi - lo, fds[1]);
    }
    close(fds[1]);
    g_pid[p] = pid;
    FILE *in = fdopen(fds[0], "r");
    char line[NAME_LEN];
    int i = lo;
    while (fgets(line, sizeof line, in) && strncmp(line, "READY", 5) != 0 && i < hi) {
      line[strcspn(line, "\n")] = 0;
      snprintf(g_names[i++], NAME_LEN, "%s", line);
    }
    fclose(in);
    if (i != hi) {
      fprintf(stderr, "scale_bench: peer process %d gave %d of %d names\n", p, i - lo, hi - lo);
      exit(1);
    }
  }
}

/* Opens every segment and WRITEs 8 bytes to each peer's buffer. */
static void open_all(mc_engine_t *e, char *local) {
  for (int i = 0; i < g_n; i++) {
    if (mc_segment_open(e, g_names[i], &g_seg[i]) != MC_OK) die(g_names[i]);
    mc_buffer_info_t b;
    size_t cnt = 0;
    if (mc_segment_buffers(e, g_seg[i], &b, 1, &cnt) != MC_OK || cnt != 1) die("segment buffers");
    mc_request_t r = {MC_WRITE, 0, local + 8 * (i % 512), g_seg[i], b.addr, 8};
    if (mc_transfer(e, &r, 1, 30000) != MC_OK) die("first write");
  }
}

/* SIGKILLs peer process 0; returns the seconds until all its segments are UNREACHABLE (the
 * last one), -1 when not within limit_s. *others counts other processes' segments that went
 * down meanwhile. */
static double kill_and_time(mc_engine_t *e, double limit_s, int *others) {
  double t0 = now_s();
  kill(g_pid[0], SIGKILL);
  waitpid(g_pid[0], NULL, 0);
  g_pid[0] = 0;
  for (;;) {
    int pending = 0;
    for (int i = 0; i < g_n && owner_of(i) == 0; i++) {
      mc_segment_info_t info = {.size = sizeof info};
      double zero = 0;
      if (atomic_load(&g_down_at[i]) == 0 && mc_segment_query(e, g_seg[i], &info) == MC_OK &&
          info.state == MC_SEGMENT_UNREACHABLE)
        atomic_compare_exchange_strong(&g_down_at[i], &zero, now_s());
      if (atomic_load(&g_down_at[i]) == 0) pending++;
    }
    if (!pending || now_s() - t0 > limit_s) break;
    usleep(5000);
  }
  double last = 0;
  *others = 0;
  for (int i = 0; i < g_n; i++) {
    double d = atomic_load(&g_down_at[i]);
    if (owner_of(i) != 0) *others += d != 0;
    else if (d == 0) return -1;
    else if (d - t0 > last) last = d - t0;
  }
  return last;
}

static long env_long(const char *name, long dflt) {
  const char *v = getenv(name);
  return v && *v ? atol(v) : dflt;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: scale_bench TRANSPORTS N [PROCS]\n");
    return 2;
  }
  const char *transports = argv[1];
  g_n = atoi(argv[2]);
  g_procs = argc > 3 ? atoi(argv[3]) : 4;
  if (g_n < 1 || g_procs < 1 || g_procs > MAX_PROCS || g_procs > g_n) return 2;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  g_names = calloc((size_t)g_n, NAME_LEN);
  g_seg = calloc((size_t)g_n, sizeof *g_seg);
  g_down_at = calloc((size_t)g_n, sizeof *g_down_at);
  double t_start = now_s();
  start_peers(transports);
  double t_peers = now_s();

  long base_threads = count_dir("/proc/self/task"), base_fds = count_dir("/proc/self/fd");
  mc_engine_t *e = make_engine(transports);
  long eng_threads = count_dir("/proc/self/task"), eng_fds = count_dir("/proc/self/fd");
  static char local[4096];
  if (mc_buffer_register(e, local, sizeof local, "cpu") != MC_OK) die("register");
  mc_engine_set_segment_callback(e, on_segment, NULL);
  long rss0 = rss_kib();
  open_all(e, local);
  double t_open = now_s();
  sleep(2);
  long threads = count_dir("/proc/self/task"), fds = count_dir("/proc/self/fd"), rss = rss_kib();
  long idle = env_long("IDLE", 10);
  double c0 = cpu_s(), p0 = peers_cpu_s(g_pid, g_procs), w0 = now_s();
  sleep((unsigned)idle);
  double cpu_pct = 100.0 * (cpu_s() - c0) / (now_s() - w0);
  double peers_pct = 100.0 * (peers_cpu_s(g_pid, g_procs) - p0) / (now_s() - w0);

  long hb = env_long("MC_HEARTBEAT_MS", 1000), pto = env_long("MC_PEER_TIMEOUT_MS", 3000);
  int others = 0;
  double down = kill_and_time(e, 3.0 * (hb + pto) / 1000.0 + 10, &others);
  printf("transports=%s n=%d procs=%d base_threads=%ld engine_threads=%ld threads=%ld "
         "base_fds=%ld engine_fds=%ld fds=%ld rss_before_open_kib=%ld rss_kib=%ld "
         "idle_s=%ld idle_cpu_pct=%.3f killed=%d down_ms=%.0f others_down=%d heartbeat_ms=%ld "
         "peer_timeout_ms=%ld peers_up_s=%.1f open_s=%.1f peers_idle_cpu_pct=%.3f\n",
         transports, g_n, g_procs, base_threads, eng_threads, threads, base_fds, eng_fds, fds,
         rss0, rss, idle, cpu_pct, (int)((long)g_n / g_procs) /* process 0's share */, down < 0 ? -1.0 : down * 1000,
         others, hb, pto, t_peers - t_start, t_open - t_peers, peers_pct);
  fflush(stdout);
  for (int p = 1; p < g_procs; p++) kill(g_pid[p], SIGKILL);
  for (int p = 1; p < g_procs; p++) waitpid(g_pid[p], NULL, 0);
  mc_engine_destroy(e);
  return 0;
}
