/* Costs that grow with peers are memory, never threads: an engine with many open segments runs
 * the same threads as one with a few, and a peer process that dies takes all of its segments
 * to MC_SEGMENT_UNREACHABLE within peer_timeout_ms plus one heartbeat.
 * The peers are engines in a child process (this program re-run with --peers N), so that only
 * the observer's own threads are counted (/proc/self/task). */
#define _GNU_SOURCE
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

#define MAX_PEERS 256

static int threads_now(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* The child: n engines, their names on stdout one per line, then "ready"; exits when stdin
 * closes. */
static int peers_main(int n) {
  mc_engine_t *e[MAX_PEERS];
  for (int i = 0; i < n; i++) {
    e[i] = tu_engine("transports", "tcp", "workers", "1", NULL);
    if (!e[i]) return 1;
    printf("%s\n", mc_engine_name(e[i]));
  }
  printf("ready\n");
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  for (int i = 0; i < n; i++) mc_engine_destroy(e[i]);
  return 0;
}

struct peers {
  pid_t pid;
  int in;
  int n;
  char names[MAX_PEERS][128];
};

static void peers_start(struct peers *p, int n) {
  char ns[16];
  snprintf(ns, sizeof ns, "%d", n);
  int to_child;
  FILE *f = NULL;
  pid_t pid = tu_spawn_self(&to_child, &f, "--peers", ns, (char *)NULL);
  assert_true(pid > 0);
  p->pid = pid;
  p->in = to_child;
  p->n = 0;
  char line[128];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (strcmp(line, "ready") == 0) break;
    assert_true(p->n < MAX_PEERS);
    snprintf(p->names[p->n++], sizeof p->names[0], "%s", line);
  }
  fclose(f);
  assert_int_equal(p->n, n);
}

static void peers_kill(struct peers *p) {
  kill(p->pid, SIGKILL);
  waitpid(p->pid, NULL, 0);
  close(p->in);
}

static void test_threads_do_not_grow_with_segments(void **state) {
  (void)state;
  int n = 40 * tu_scale();
  if (n > MAX_PEERS) n = MAX_PEERS;
  struct peers p;
  peers_start(&p, n);
  mc_engine_t *e = tu_engine("transports", "tcp", "heartbeat_ms", "100", "peer_timeout_ms", "500", NULL);
  assert_non_null(e);
  mc_segment_t seg[MAX_PEERS];
  assert_int_equal(mc_segment_open(e, p.names[0], &seg[0]), MC_OK);
  int t1 = threads_now();
  for (int i = 1; i < n; i++) assert_int_equal(mc_segment_open(e, p.names[i], &seg[i]), MC_OK);
  usleep(300000); /* a few heartbeats: every segment probed */
  int tn = threads_now();
  print_message("threads with 1 open segment: %d, with %d: %d\n", t1, n, tn);
  assert_true(tn - t1 <= 2);
  for (int i = 0; i < n; i++) {
    mc_segment_info_t info = {.size = sizeof info};
    assert_int_equal(mc_segment_query(e, seg[i], &info), MC_OK);
    assert_int_equal(info.state, MC_SEGMENT_OK);
  }
  /* The peers' process dies: every segment is unreachable within peer_timeout_ms plus one
   * heartbeat (here the ports refuse at once). */
  peers_kill(&p);
  uint64_t t0 = tu_now_ms(), limit = (500 + 100 + 200) * (uint64_t)tu_slack();
  int down = 0;
  while (tu_now_ms() - t0 < 5000 * (uint64_t)tu_slack()) {
    down = 0;
    for (int i = 0; i < n; i++) {
      mc_segment_info_t info = {.size = sizeof info};
      assert_int_equal(mc_segment_query(e, seg[i], &info), MC_OK);
      down += info.state == MC_SEGMENT_UNREACHABLE;
    }
    if (down == n) break;
    usleep(10000);
  }
  uint64_t took = tu_now_ms() - t0;
  print_message("%d of %d segments unreachable after %llu ms (limit %llu)\n", down, n, (unsigned long long)took,
                (unsigned long long)limit);
  assert_int_equal(down, n);
  assert_true(took <= limit);
  mc_engine_destroy(e);
}

int main(int argc, char **argv) {
  if (argc > 2 && strcmp(argv[1], "--peers") == 0) return peers_main(atoi(argv[2]));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_threads_do_not_grow_with_segments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
