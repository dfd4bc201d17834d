/* Two processes: a target process (helper_target) and this initiator. Data verified both ways;
 * the target killed (SIGKILL) or paused (SIGSTOP) mid-transfer fails requests promptly. */
#define _GNU_SOURCE
#include <libgen.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

struct target {
  pid_t pid;
  char name[256];
};

static void start_target(struct target *t, size_t size, uint64_t seed) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  assert_true(n > 0);
  exe[n] = 0;
  char helper[PATH_MAX + 32];
  snprintf(helper, sizeof helper, "%s/helper_target", dirname(exe));
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  char sz[32], sd[32];
  snprintf(sz, sizeof sz, "%zu", size);
  snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execl(helper, helper, sz, sd, "timeout_ms=2000", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[256] = {0};
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  assert_int_equal(strncmp(line, "segment: ", 9), 0);
  line[strcspn(line, "\n")] = 0;
  snprintf(t->name, sizeof t->name, "%s", line + 9);
  t->pid = pid;
}

static void stop_target(struct target *t, int sig) {
  if (t->pid <= 0) return;
  kill(t->pid, sig);
  int status;
  waitpid(t->pid, &status, 0);
  t->pid = 0;
}

static void test_two_processes(void **state) {
  (void)state;
  size_t len = 64 << 20;
  struct target t;
  start_target(&t, len, 31337);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", "transports", "tcp,local", NULL);
  char *l = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_int_equal(mc_buffer_register(e, l, len, NULL), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  mc_buffer_info_t bi;
  size_t count;
  assert_int_equal(mc_segment_buffers(e, s, &bi, 1, &count), MC_OK);
  assert_int_equal(count, 1);
  assert_int_equal(bi.length, len);
  /* READ the target's pattern. */
  mc_request_t r = {MC_READ, 0, l, s, bi.addr, len};
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(20000)), MC_OK);
  assert_int_equal(tu_check(l, len, 31337), -1);
  /* WRITE a new pattern in pieces, READ it back into a cleared buffer. */
  tu_fill(l, len, 777);
  mc_request_t w[16];
  for (int i = 0; i < 16; i++) w[i] = (mc_request_t){MC_WRITE, 0, l + i * (len / 16), s, bi.addr + i * (len / 16), len / 16};
  assert_int_equal(mc_transfer(e, w, 16, tu_wait_ms(20000)), MC_OK);
  memset(l, 0, len);
  assert_int_equal(mc_transfer(e, &r, 1, tu_wait_ms(20000)), MC_OK);
  assert_int_equal(tu_check(l, len, 777), -1);
  stop_target(&t, SIGTERM);
  /* The target is gone: transfers fail promptly with PEER_DOWN/TRANSPORT. */
  uint64_t t0 = tu_now_ms();
  mc_status_t st = mc_transfer(e, &r, 1, tu_wait_ms(20000));
  assert_true(st == MC_ERR_PEER_DOWN || st == MC_ERR_TRANSPORT);
  assert_true(tu_now_ms() - t0 < tu_slack_ms(2500));
  mc_engine_destroy(e);
  munmap(l, len);
}

static void run_with_fault(int sig) {
  size_t len = 64 << 20;
  struct target t;
  start_target(&t, len, 1);
  mc_engine_t *e = tu_engine("timeout_ms", "2000", "transports", "tcp,local", NULL);
  char *l = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_int_equal(mc_buffer_register(e, l, len, NULL), MC_OK);
  mc_segment_t s;
  assert_int_equal(mc_segment_open(e, t.name, &s), MC_OK);
  mc_buffer_info_t bi;
  size_t count;
  assert_int_equal(mc_segment_buffers(e, s, &bi, 1, &count), MC_OK);
  size_t n = 64 * tu_scale();
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(e, n, &b), MC_OK);
  mc_request_t *rq = calloc(n, sizeof *rq);
  for (size_t i = 0; i < n; i++)
    rq[i] = (mc_request_t){i % 3 ? MC_WRITE : MC_READ, 0, l + (i % 64) * (1 << 20), s, bi.addr + (i % 64) * (1 << 20), 1 << 20};
  assert_int_equal(mc_batch_submit(b, rq, n), MC_OK);
  usleep(2000);
  kill(t.pid, sig);
  uint64_t t0 = tu_now_ms();
  mc_status_t w = mc_batch_wait(b, tu_wait_ms(10000));
  uint64_t took = tu_now_ms() - t0;
  print_message("signal %d: batch ended with %s after %llu ms\n", sig, mc_status_str(w), (unsigned long long)took);
  assert_int_not_equal(w, MC_ERR_TIMEOUT);
  /* Killed: seen at once through the closed connections. Paused: within timeout_ms (2000). */
  assert_true(took < (sig == SIGKILL ? 1500u : 4000u) * (uint64_t)tu_slack());
  size_t failed = 0;
  for (size_t i = 0; i < n; i++) {
    mc_request_status_t st;
    assert_int_equal(mc_batch_status(b, i, &st), MC_OK);
    assert_int_not_equal(st.state, MC_REQUEST_PENDING);
    if (st.state == MC_REQUEST_FAILED) {
      failed++;
      assert_true(st.error == MC_ERR_PEER_DOWN || st.error == MC_ERR_TRANSPORT);
    }
  }
  print_message("%zu of %zu requests failed\n", failed, n);
  if (sig == SIGSTOP) {
    kill(t.pid, SIGCONT);
    /* Same peer, same incarnation: it serves again. */
    mc_request_t one = {MC_READ, 0, l, s, bi.addr, 4096};
    mc_status_t st2 = mc_transfer(e, &one, 1, tu_wait_ms(10000));
    assert_int_equal(st2, MC_OK);
  }
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  free(rq);
  stop_target(&t, SIGKILL);
  mc_engine_destroy(e);
  munmap(l, len);
}

static void test_target_killed(void **state) {
  (void)state;
  run_with_fault(SIGKILL);
}

static void test_target_paused(void **state) {
  (void)state;
  run_with_fault(SIGSTOP);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_processes),
      cmocka_unit_test(test_target_killed),
      cmocka_unit_test(test_target_paused),
  };
  return cmocka_run_group_tests_name("process", tests, NULL, NULL);
}
