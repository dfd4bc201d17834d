/* Fault figures (bench/fault.sh builds and runs this): for one transport and one health
 * configuration, the time from a peer's death (SIGKILL) and from its hang (SIGSTOP) to
 * MC_SEGMENT_UNREACHABLE as reported to the segment callback, the time from a restarted peer
 * answering (it printed its segment) to the first verified transfer to it, and the requests
 * lost (left pending) or corrupted (wrong bytes) over N kill/restart cycles under continuous
 * checksummed traffic; then SIGSTOP/SIGCONT rounds: detection, and whether transfers work again
 * after SIGCONT. Usage: fault_bench tcp|shm CYCLES HEARTBEAT_MS PEER_TIMEOUT_MS STOPS */
#define _GNU_SOURCE
#include "fault/fault_util.h"

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void dist(const char *what, uint64_t *v, int n) {
  if (n <= 0) {
    printf("  %-46s: no data\n", what);
    return;
  }
  qsort(v, (size_t)n, sizeof *v, cmp_u64);
  uint64_t sum = 0;
  for (int i = 0; i < n; i++) sum += v[i];
  printf("  %-46s: %d runs, min %llu, median %llu, avg %llu, p95 %llu, max %llu ms\n", what, n,
         (unsigned long long)v[0], (unsigned long long)v[n / 2], (unsigned long long)(sum / (uint64_t)n),
         (unsigned long long)v[(n * 95) / 100 < n ? (n * 95) / 100 : n - 1], (unsigned long long)v[n - 1]);
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: fault_bench tcp|shm CYCLES HEARTBEAT_MS PEER_TIMEOUT_MS STOPS\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  srand((unsigned)tu_now_ms());
  int tcp = strcmp(argv[1], "tcp") == 0;
  int cycles = atoi(argv[2]), stops = atoi(argv[5]);
  if (cycles > 1024) cycles = 1024;
  const char *hb = argv[3], *pt = argv[4];
  const char *const keys[] = {"timeout_ms=2000", NULL};
  size_t len = 8 << 20;
  struct fu_target t;
  if (fu_start_target(&t, len, 1, tcp ? "plain" : "alloc", NULL, -1, keys) != 0) return 1;
  mc_engine_t *e = tu_engine("timeout_ms", "2000", "heartbeat_ms", hb, "peer_timeout_ms", pt, "transports",
                             tcp ? "tcp" : "auto", NULL);
  if (!e) return 1;
  struct fu_events *ev = calloc(1, sizeof *ev);
  fu_events_init(ev);
  mc_engine_set_segment_callback(e, fu_on_segment, ev);
  mc_segment_t s;
  if (mc_segment_open(e, t.name, &s) != MC_OK) {
    fprintf(stderr, "open: %s\n", mc_last_error());
    return 1;
  }
  mc_segment_info_t info = {.size = sizeof info};
  mc_segment_query(e, s, &info);
  printf("transport %-4s heartbeat_ms %-5s peer_timeout_ms %-5s (goals: detection <= %d ms, resumption <= 500 ms)\n",
         info.transport, hb, pt, atoi(hb) + atoi(pt));
  /* Kill/restart cycles under checksummed traffic. */
  struct fu_traffic *tr = calloc(1, sizeof *tr);
  struct fu_cycle_result *r = calloc(1, sizeof *r);
  int rc = fu_cycles(e, s, ev, &t, len, tcp ? "plain" : "alloc", cycles, 2000, -1, keys, tr, r);
  int n = r->cycles_done < 1024 ? r->cycles_done : 1024;
  dist("SIGKILL -> UNREACHABLE (callback)", r->detect_ms, n - r->detect_missed);
  dist("restart answering -> first verified transfer", r->resume_ms, n);
  printf("  %d kill/restart cycles: rejoins %llu; requests %llu submitted, %llu completed, %llu failed, %llu refused "
         "at submit; lost (left pending) %llu, corrupted (wrong bytes) %llu over %llu verified transfers\n",
         r->cycles_done, (unsigned long long)r->rejoins, (unsigned long long)tr->submitted,
         (unsigned long long)tr->completed, (unsigned long long)tr->failed, (unsigned long long)tr->refused_at_submit,
         (unsigned long long)tr->stuck, (unsigned long long)tr->wrong_bytes, (unsigned long long)tr->verified);
  printf("  initiator over the cycles: RSS %ld -> %ld KiB, fds %d -> %d, threads %d -> %d\n", r->rss_start_kb,
         r->rss_end_kb, r->fd_start, r->fd_end, r->threads_start, r->threads_end);
  if (rc != 0) printf("  ERROR: %s\n", r->error);
  if (tr->first_error[0]) printf("  ERROR: %s\n", tr->first_error);
  /* SIGSTOP past peer_timeout_ms, then SIGCONT: detection through the probes, and recovery. */
  uint64_t *sd = calloc((size_t)stops + 1, sizeof *sd), *rd = calloc((size_t)stops + 1, sizeof *rd);
  int ns = 0, nr = 0, dead_after = 0;
  void *lb = NULL;
  mc_buffer_alloc(e, 1 << 20, NULL, &lb);
  for (int i = 0; i < stops && t.pid > 0; i++) {
    if (fu_wait_state(e, s, MC_SEGMENT_OK, 0, 10000, NULL) != 0) break;
    size_t evn = fu_events_count(ev);
    usleep((unsigned)(rand() % 1000) * (unsigned)atoi(hb)); /* a random phase against the heartbeat */
    uint64_t t0 = tu_now_ms();
    kill(t.pid, SIGSTOP);
    long ei = fu_wait_event(ev, evn, MC_SEGMENT_UNREACHABLE, 0, 60000);
    if (ei >= 0) sd[ns++] = ev->ev[ei].ms - t0;
    evn = fu_events_count(ev);
    uint64_t t1 = tu_now_ms();
    kill(t.pid, SIGCONT);
    /* Recovery: the first verified READ after SIGCONT (the peer answers at once). */
    int ok = 0;
    mc_request_t rq = {MC_READ, 0, lb, s, t.addr, 1 << 20};
    while (tu_now_ms() - t1 < 5000) {
      if (mc_transfer(e, &rq, 1, 5000) == MC_OK && tu_check(lb, 1 << 20, t.seed) == -1) {
        ok = 1;
        break;
      }
      usleep(1000);
    }
    if (ok) rd[nr++] = tu_now_ms() - t1;
    else dead_after++;
  }
  dist("SIGSTOP -> UNREACHABLE (callback)", sd, ns);
  dist("SIGCONT -> first verified transfer", rd, nr);
  if (dead_after)
    printf("  ERROR: %d of %d SIGSTOP/SIGCONT rounds: no transfer worked within 5 s of SIGCONT\n", dead_after,
           ns);
  fflush(stdout);
  mc_engine_destroy(e);
  fu_kill_all();
  return rc != 0 || tr->stuck || tr->wrong_bytes || dead_after;
}
