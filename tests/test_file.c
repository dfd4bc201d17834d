/* File segments (file:///abs/path): create and grow, bad names, bounds, read-only files,
 * aligned (O_DIRECT) and unaligned requests, sync=1, a 100,000-request batch, cancel in flight,
 * a request that times out (and one canceled while stalled),
 * and a full file system (a small tmpfs this test mounts in a mount namespace of its own). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"

static char g_dir[256];

static int make_dir(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/mc-file-test.XXXXXX");
  assert_non_null(mkdtemp(g_dir));
  chmod(g_dir, 0755);
  return 0;
}

static int remove_dir(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void uri(char *out, size_t cap, const char *name, const char *query) {
  snprintf(out, cap, "file://%s/%s%s", g_dir, name, query ? query : "");
}

static void path_of(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_dir, name); }

static void *aligned_mem(size_t n) {
  void *p = NULL;
  assert_int_equal(posix_memalign(&p, 4096, n), 0);
  memset(p, 0, n);
  return p;
}

static uint64_t stat_num(mc_engine_t *e, const char *key) {
  char buf[16384];
  size_t need = 0;
  assert_int_equal(mc_engine_stats_json(e, buf, sizeof buf, &need), MC_OK);
  const char *f = strstr(buf, "\"file\":");
  assert_non_null(f);
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *v = strstr(f, k);
  assert_non_null(v);
  return strtoull(v + strlen(k), NULL, 10);
}

static mc_status_t one(mc_engine_t *e, uint32_t op, void *local, mc_segment_t seg, uint64_t off, uint64_t len) {
  mc_request_t r = {op, 0, local, seg, off, len};
  return mc_transfer(e, &r, 1, tu_wait_ms(10000));
}

/* Creates with size=, writes and reads back (the bytes land in the file), grows, never shrinks. */
static void test_create_grow(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  assert_non_null(e);
  char u[512], p[512];
  uri(u, sizeof u, "a", "?size=1M");
  path_of(p, sizeof p, "a");
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  struct stat sb;
  assert_int_equal(stat(p, &sb), 0);
  assert_int_equal(sb.st_size, 1 << 20);
  mc_segment_info_t info = {.size = sizeof info};
  assert_int_equal(mc_segment_query(e, seg, &info), MC_OK);
  assert_string_equal(info.transport, "file");
  assert_int_equal(info.total_bytes, 1 << 20);
  assert_int_equal(info.state, MC_SEGMENT_OK);
  mc_buffer_info_t b[2];
  size_t n = 0;
  assert_int_equal(mc_segment_buffers(e, seg, b, 2, &n), MC_OK);
  assert_int_equal(n, 1);
  assert_int_equal(b[0].addr, 0);
  assert_int_equal(b[0].length, 1 << 20);
  assert_string_equal(b[0].location, "file");

  size_t len = 300000;
  char *buf = malloc(2 * len);
  assert_int_equal(mc_buffer_register(e, buf, 2 * len, "cpu"), MC_OK);
  tu_fill(buf, len, 7);
  assert_int_equal(one(e, MC_WRITE, buf, seg, 12345, len), MC_OK);
  assert_int_equal(one(e, MC_READ, buf + len, seg, 12345, len), MC_OK);
  assert_int_equal(tu_check(buf + len, len, 7), -1);
  char *direct = malloc(len);
  int fd = open(p, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, direct, len, 12345), (ssize_t)len);
  assert_int_equal(tu_check(direct, len, 7), -1);
  assert_int_equal(mc_segment_close(e, seg), MC_OK);

  uri(u, sizeof u, "a", "?size=2M");  // grows, keeps the bytes
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  assert_int_equal(fstat(fd, &sb), 0);
  assert_int_equal(sb.st_size, 2 << 20);
  memset(buf + len, 0, len);
  assert_int_equal(one(e, MC_READ, buf + len, seg, 12345, len), MC_OK);
  assert_int_equal(tu_check(buf + len, len, 7), -1);
  assert_int_equal(mc_segment_close(e, seg), MC_OK);

  uri(u, sizeof u, "a", "?size=4K");  // never shrinks: the segment is the whole file
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  assert_int_equal(mc_segment_query(e, seg, &info), MC_OK);
  assert_int_equal(info.total_bytes, 2 << 20);
  mc_segment_t seg2;
  uri(u, sizeof u, "a", NULL);  // an existing file opens without size=
  assert_int_equal(mc_segment_open(e, u, &seg2), MC_OK);
  assert_int_equal(mc_segment_query(e, seg2, &info), MC_OK);
  assert_int_equal(info.total_bytes, 2 << 20);
  assert_int_equal(mc_segment_close(e, seg), MC_OK);
  assert_int_equal(mc_segment_close(e, seg2), MC_OK);
  close(fd);
  assert_int_equal(mc_buffer_unregister(e, buf), MC_OK);
  mc_engine_destroy(e);
  free(buf);
  free(direct);
}

static void expect_open_error(mc_engine_t *e, const char *name, mc_status_t st, const char *needle) {
  mc_segment_t seg = 0;
  mc_status_t got = mc_segment_open(e, name, &seg);
  print_message("  %s -> %s: %s\n", name, mc_status_str(got), mc_last_error());
  assert_int_equal(got, st);
  assert_non_null(strstr(mc_last_error(), needle));
}

/* Relative, missing, a directory, a character device, an empty file, bad query keys. */
static void test_bad_names(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  assert_non_null(e);
  char u[512], p[512];
  expect_open_error(e, "file://relative/x", MC_ERR_INVALID_ARG, "relative/x\" is not absolute");
  uri(u, sizeof u, "missing", NULL);
  expect_open_error(e, u, MC_ERR_NOT_FOUND, "/missing (add ?size=N");
  uri(u, sizeof u, "no/such/dir", "?size=4K");
  expect_open_error(e, u, MC_ERR_NOT_FOUND, "directory on its path does not exist");
  snprintf(u, sizeof u, "file://%s", g_dir);
  expect_open_error(e, u, MC_ERR_INVALID_ARG, "is a directory");
  expect_open_error(e, "file:///dev/null", MC_ERR_INVALID_ARG, "/dev/null is not a regular file or block device");
  path_of(p, sizeof p, "empty");
  int fd = open(p, O_CREAT | O_WRONLY, 0644);
  assert_true(fd >= 0);
  close(fd);
  uri(u, sizeof u, "empty", NULL);
  expect_open_error(e, u, MC_ERR_INVALID_ARG, "is empty");
  uri(u, sizeof u, "b", "?size=0");
  expect_open_error(e, u, MC_ERR_INVALID_ARG, "bad value \"0\" for size");
  uri(u, sizeof u, "b", "?size=1M&color=red");
  expect_open_error(e, u, MC_ERR_INVALID_ARG, "unknown query key \"color\"");
  uri(u, sizeof u, "b", "?sync=2");
  expect_open_error(e, u, MC_ERR_INVALID_ARG, "bad value \"2\" for sync");
  assert_int_equal(access(p, F_OK), 0);
  path_of(p, sizeof p, "b");
  assert_int_not_equal(access(p, F_OK), 0);  // nothing was created by a refused open
  mc_engine_destroy(e);
  /* The queue depth key is validated like every key. */
  mc_config_t *c;
  assert_int_equal(mc_config_create(&c), MC_OK);
  assert_int_equal(mc_config_set(c, "file_queue_depth", "0"), MC_ERR_INVALID_ARG);
  assert_int_equal(mc_config_set(c, "file_queue_depth", "32"), MC_OK);
  mc_config_destroy(c);
}

/* Requests past the end are refused at submit, nothing started. */
static void test_bounds(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  char u[512];
  uri(u, sizeof u, "bounds", "?size=64K");
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  char *buf = calloc(1, 1 << 17);
  assert_int_equal(mc_buffer_register(e, buf, 1 << 17, "cpu"), MC_OK);
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(e, 4, &b), MC_OK);
  mc_request_t ok = {MC_WRITE, 0, buf, seg, 0, 65536};
  mc_request_t past = {MC_WRITE, 0, buf, seg, 65536 - 100, 200};
  mc_request_t reqs[2] = {ok, past};
  assert_int_equal(mc_batch_submit(b, reqs, 2), MC_ERR_OUT_OF_RANGE);
  mc_request_t far = {MC_READ, 0, buf, seg, 1 << 20, 10};
  assert_int_equal(mc_batch_submit(b, &far, 1), MC_ERR_OUT_OF_RANGE);
  assert_int_equal(mc_batch_submit(b, &ok, 1), MC_OK);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_OK);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  assert_int_equal(stat_num(e, "slices_failed"), 0);
  mc_engine_destroy(e);
  free(buf);
}

/* The checks of a read-only file, run in a process that may not write it. */
static int read_only_case(const char *name) {
  mc_engine_t *e = tu_engine(NULL);
  if (!e) return 10;
  mc_segment_t seg;
  if (mc_segment_open(e, name, &seg) != MC_OK) return 11;
  mc_buffer_info_t b;
  size_t n = 0;
  if (mc_segment_buffers(e, seg, &b, 1, &n) != MC_OK || n != 1 || b.length != 8192) return 12;
  char *buf = calloc(1, 8192);
  if (mc_buffer_register(e, buf, 8192, "cpu") != MC_OK) return 13;
  if (one(e, MC_READ, buf, seg, 0, 8192) != MC_OK || tu_check(buf, 8192, 3) != -1) return 14;
  mc_request_t w = {MC_WRITE, 0, buf, seg, 0, 4096};
  mc_batch_t *bt;
  if (mc_batch_create(e, 1, &bt) != MC_OK) return 15;
  if (mc_batch_submit(bt, &w, 1) != MC_ERR_DENIED) return 16;
  if (!strstr(mc_last_error(), "does not let peers write")) return 17;
  mc_batch_destroy(bt);
  char grow[600];
  snprintf(grow, sizeof grow, "%s?size=1M", name);
  mc_segment_t s2;
  if (mc_segment_open(e, grow, &s2) != MC_ERR_DENIED) return 18;
  mc_engine_destroy(e);
  free(buf);
  return 0;
}

/* A file this process may only read gives a READ-only segment (root may write any file: the
 * case then runs in a child that drops to uid 65534). */
static void test_read_only(void **state) {
  (void)state;
  char u[512], p[512];
  path_of(p, sizeof p, "ro");
  char data[8192];
  tu_fill(data, sizeof data, 3);
  int fd = open(p, O_CREAT | O_WRONLY, 0444);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, sizeof data), (ssize_t)sizeof data);
  close(fd);
  uri(u, sizeof u, "ro", NULL);
  if (geteuid() != 0) {
    assert_int_equal(read_only_case(u), 0);
    return;
  }
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(9);
    _exit(read_only_case(u));
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  print_message("  read-only case as uid 65534: exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

/* Aligned requests take O_DIRECT where the file system has it; unaligned ones the page cache;
 * both move the right bytes, and sync=1 works the same. */
static void test_aligned_unaligned(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  char u[512];
  for (int sync = 0; sync < 2; sync++) {
    uri(u, sizeof u, sync ? "al-sync" : "al", sync ? "?size=4M&sync=1" : "?size=4M");
    mc_segment_t seg;
    assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
    size_t len = 4 << 20;
    char *src = aligned_mem(len), *dst = aligned_mem(len);
    assert_int_equal(mc_buffer_register(e, src, len, "cpu"), MC_OK);
    assert_int_equal(mc_buffer_register(e, dst, len, "cpu"), MC_OK);
    tu_fill(src, len, 40 + sync);
    uint64_t d0 = stat_num(e, "direct_ops"), b0 = stat_num(e, "buffered_ops"), f0 = stat_num(e, "fixed_buffer_ops");
    mc_request_t w[3] = {{MC_WRITE, 0, src, seg, 0, 1 << 20},
                         {MC_WRITE, 0, src + (1 << 20), seg, 1 << 20, 65536},
                         {MC_WRITE, 0, src + (2 << 20) + 1, seg, (2 << 20) + 1, 100000}};
    assert_int_equal(mc_transfer(e, w, 3, tu_wait_ms(10000)), MC_OK);
    mc_request_t r[3] = {{MC_READ, 0, dst, seg, 0, 1 << 20},
                         {MC_READ, 0, dst + (1 << 20), seg, 1 << 20, 65536},
                         {MC_READ, 0, dst + (2 << 20) + 1, seg, (2 << 20) + 1, 100000}};
    assert_int_equal(mc_transfer(e, r, 3, tu_wait_ms(10000)), MC_OK);
    assert_memory_equal(src, dst, (1 << 20) + 65536);
    assert_memory_equal(src + (2 << 20) + 1, dst + (2 << 20) + 1, 100000);
    uint64_t d = stat_num(e, "direct_ops") - d0, bu = stat_num(e, "buffered_ops") - b0;
    uint64_t fx = stat_num(e, "fixed_buffer_ops") - f0;
    print_message("  sync=%d: %llu direct, %llu buffered operations, %llu on fixed buffers\n", sync,
                  (unsigned long long)d, (unsigned long long)bu, (unsigned long long)fx);
    // Registered buffers take io_uring's fixed-buffer path (root: no RLIMIT_MEMLOCK; others may
    // be refused it, and then go the plain way).
    if (geteuid() == 0) assert_int_equal(fx, d + bu);
    assert_true(bu >= 2);  // the unaligned WRITE and READ
    assert_true(d >= 4);   // ext4, xfs and tmpfs (6.6+) take O_DIRECT here
    assert_int_equal(mc_segment_close(e, seg), MC_OK);
    assert_int_equal(mc_buffer_unregister(e, src), MC_OK);
    assert_int_equal(mc_buffer_unregister(e, dst), MC_OK);
    free(src);
    free(dst);
  }
  mc_engine_destroy(e);
}

/* 100,000 scattered 512-byte pages in one batch each way (the KV offload pattern). */
static void test_many_pages(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine(NULL);
  enum { kPages = 100000, kPage = 512, kSlots = 131072 };
  char u[512];
  uri(u, sizeof u, "pages", "?size=64M");
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  char *src = aligned_mem((size_t)kPages * kPage), *dst = aligned_mem((size_t)kPages * kPage);
  assert_int_equal(mc_buffer_register(e, src, (size_t)kPages * kPage, "cpu"), MC_OK);
  assert_int_equal(mc_buffer_register(e, dst, (size_t)kPages * kPage, "cpu"), MC_OK);
  tu_fill(src, (size_t)kPages * kPage, 99);
  mc_request_t *reqs = calloc(kPages, sizeof *reqs);
  for (size_t i = 0; i < kPages; i++) {
    uint64_t slot = (i * 48271u + 11) % kSlots;  // a permutation of the file's slots
    reqs[i] = (mc_request_t){MC_WRITE, 0, src + i * kPage, seg, slot * kPage, kPage};
  }
  uint64_t t0 = tu_now_ms();
  assert_int_equal(mc_transfer(e, reqs, kPages, tu_wait_ms(20000)), MC_OK);
  uint64_t t1 = tu_now_ms();
  for (size_t i = 0; i < kPages; i++) {
    reqs[i].opcode = MC_READ;
    reqs[i].local = dst + i * kPage;
  }
  assert_int_equal(mc_transfer(e, reqs, kPages, tu_wait_ms(20000)), MC_OK);
  uint64_t t2 = tu_now_ms();
  assert_memory_equal(src, dst, (size_t)kPages * kPage);
  print_message("  100000 x 512 B: WRITE %llu ms, READ %llu ms\n", (unsigned long long)(t1 - t0),
                (unsigned long long)(t2 - t1));
  mc_engine_destroy(e);
  free(reqs);
  free(src);
  free(dst);
}

/* Canceled while READs are in flight: every request ends, none pending, some completed before
 * the cancel and the rest canceled, and no byte lands in local memory after mc_batch_cancel
 * returned. 4096 READs of 256 KiB (1 GiB from a sparse file) through one ring of depth 4. */
static void test_cancel_in_flight(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine("file_queue_depth", "4", "workers", "1", NULL);
  enum { kN = 4096, kLen = 256 << 10, kLocal = 256 };
  char u[512];
  uri(u, sizeof u, "cancel", "?size=1G&direct=0");
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  char *buf = aligned_mem((size_t)kLocal * kLen);
  assert_int_equal(mc_buffer_register(e, buf, (size_t)kLocal * kLen, "cpu"), MC_OK);
  memset(buf, 0xAA, (size_t)kLocal * kLen);
  mc_request_t *reqs = calloc(kN, sizeof *reqs);
  for (size_t i = 0; i < kN; i++)
    reqs[i] = (mc_request_t){MC_READ, 0, buf + (i % kLocal) * kLen, seg, i * (uint64_t)kLen, kLen};
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(e, kN, &b), MC_OK);
  assert_int_equal(mc_batch_submit(b, reqs, kN), MC_OK);
  mc_request_status_t s;
  uint64_t until = tu_now_ms() + tu_slack_ms(5000);
  do {  // in flight: the first READ ended
    assert_int_equal(mc_batch_status(b, 0, &s), MC_OK);
  } while (s.state == MC_REQUEST_PENDING && tu_now_ms() < until);
  assert_int_equal(mc_batch_cancel(b), MC_OK);
  size_t ok = 0, canceled = 0;
  for (size_t i = 0; i < kN; i++) {
    assert_int_equal(mc_batch_status(b, i, &s), MC_OK);
    assert_int_not_equal(s.state, MC_REQUEST_PENDING);
    if (s.state == MC_REQUEST_COMPLETED) ok++;
    if (s.state == MC_REQUEST_FAILED && s.error == MC_ERR_CANCELED) canceled++;
  }
  print_message("  %zu of %d READs completed, %zu canceled\n", ok, kN, canceled);
  assert_int_equal(ok + canceled, kN);
  assert_true(ok > 0);
  assert_true(canceled > 0);
  char *snap = malloc((size_t)kLocal * kLen);
  memcpy(snap, buf, (size_t)kLocal * kLen);
  usleep(100000);
  assert_memory_equal(snap, buf, (size_t)kLocal * kLen);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  mc_engine_destroy(e);
  free(snap);
  free(reqs);
  free(buf);
}

/* A file request that makes no progress ends FAILED with MC_ERR_TIMEOUT after the engine's
 * timeout_ms, like any other, and nothing else is hurt: the other requests of its batch complete
 * with their bytes, the ring's slot is free again, later requests run. Also a stalled request
 * canceled in flight. The stall is the file transport's test hook (MC_FILE_TEST_STALL=OFFSET
 * when the engine is made: a slice covering OFFSET waits on an empty pipe until canceled),
 * since a regular file cannot be made slow at will. */
static mc_engine_t *stalled_engine(const char *timeout_ms) {
  setenv("MC_FILE_TEST_STALL", "1048576", 1);
  mc_engine_t *e = tu_engine("file_queue_depth", "4", "workers", "1", "timeout_ms", timeout_ms, NULL);
  unsetenv("MC_FILE_TEST_STALL");
  return e;
}

static void test_timeout(void **state) {
  (void)state;
  enum { kN = 8, kLen = 1 << 20 };
  mc_engine_t *e = stalled_engine("300");
  char u[512];
  uri(u, sizeof u, "timeout", "?size=8M");
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  unsigned char *buf = aligned_mem((size_t)kN * kLen);
  assert_int_equal(mc_buffer_register(e, buf, (size_t)kN * kLen, "cpu"), MC_OK);
  for (size_t i = 0; i < (size_t)kN * kLen; i++) buf[i] = (unsigned char)(i * 7 + i / 4099);
  mc_request_t reqs[kN];
  for (int i = 0; i < kN; i++) reqs[i] = (mc_request_t){MC_WRITE, 0, buf + (size_t)i * kLen, seg, (uint64_t)i * kLen, kLen};
  for (int op = 0; op < 2; op++) {  /* WRITE, then READ back into a cleared buffer */
    if (op == 1) {
      for (int i = 0; i < kN; i++) reqs[i].opcode = MC_READ;
      memset(buf, 0, (size_t)kN * kLen);
    }
    mc_batch_t *b;
    assert_int_equal(mc_batch_create(e, kN, &b), MC_OK);
    uint64_t t0 = tu_now_ms();
    assert_int_equal(mc_batch_submit(b, reqs, kN), MC_OK);
    assert_int_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_ERR_TIMEOUT);
    uint64_t took = tu_now_ms() - t0;
    for (int i = 0; i < kN; i++) {
      mc_request_status_t s;
      assert_int_equal(mc_batch_status(b, (size_t)i, &s), MC_OK);
      assert_int_equal(s.state, i == 1 ? MC_REQUEST_FAILED : MC_REQUEST_COMPLETED);
      if (i == 1) assert_int_equal(s.error, MC_ERR_TIMEOUT);
    }
    print_message("  %s: the stalled request timed out after %llu ms (timeout_ms 300)\n", op ? "READ" : "WRITE",
                  (unsigned long long)took);
    assert_true(took >= 300);
    assert_true(took < 300 + tu_slack_ms(3000));
    assert_int_equal(mc_batch_destroy(b), MC_OK);
  }
  for (size_t i = 0; i < (size_t)kN * kLen; i++)
    if (i / kLen != 1 && buf[i] != (unsigned char)(i * 7 + i / 4099)) fail_msg("READ back: byte %zu differs", i);
  /* The ring goes on: every slot (depth 4) serves again, the stalled range aside. */
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < kN; i++)
      if (i != 1) assert_int_equal(one(e, MC_READ, buf + (size_t)i * kLen, seg, (uint64_t)i * kLen, kLen), MC_OK);
  assert_int_equal(stat_num(e, "slices_failed"), 2);
  mc_engine_destroy(e);

  /* Canceled while stalled (timeout_ms far away): ends CANCELED soon, not TIMEOUT. */
  e = stalled_engine("60000");
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  assert_int_equal(mc_buffer_register(e, buf, (size_t)kN * kLen, "cpu"), MC_OK);
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(e, 2, &b), MC_OK);
  assert_int_equal(mc_batch_submit(b, reqs, 2), MC_OK);
  mc_request_status_t s;
  uint64_t until = tu_now_ms() + tu_slack_ms(5000);
  do {  /* the one at 0 completed: the stalled one is in the kernel's hands */
    assert_int_equal(mc_batch_status(b, 0, &s), MC_OK);
  } while (s.state == MC_REQUEST_PENDING && tu_now_ms() < until);
  assert_int_equal(s.state, MC_REQUEST_COMPLETED);
  usleep(100000);
  assert_int_equal(mc_batch_status(b, 1, &s), MC_OK);
  assert_int_equal(s.state, MC_REQUEST_PENDING);
  uint64_t t0 = tu_now_ms();
  assert_int_equal(mc_batch_cancel(b), MC_OK);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(10000)), MC_ERR_CANCELED);
  assert_int_equal(mc_batch_status(b, 1, &s), MC_OK);
  assert_int_equal(s.state, MC_REQUEST_FAILED);
  assert_int_equal(s.error, MC_ERR_CANCELED);
  print_message("  canceled in flight: ended after %llu ms\n", (unsigned long long)(tu_now_ms() - t0));
  assert_true(tu_now_ms() - t0 < tu_slack_ms(3000));
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  mc_engine_destroy(e);
  free(buf);
}

/* The segment closed while its requests run: they run to their end (mc_segment_close), and the
 * last one, whose report releases the segment on a worker thread, closes the file there. */
static void test_close_while_running(void **state) {
  (void)state;
  mc_engine_t *e = tu_engine("file_queue_depth", "2", "workers", "1", NULL);
  enum { kN = 64, kLen = 256 << 10 };
  char u[512];
  uri(u, sizeof u, "closing", "?size=16M");
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(e, u, &seg), MC_OK);
  char *buf = aligned_mem((size_t)kN * kLen);
  assert_int_equal(mc_buffer_register(e, buf, (size_t)kN * kLen, "cpu"), MC_OK);
  tu_fill(buf, (size_t)kN * kLen, 77);
  mc_request_t reqs[kN];
  for (size_t i = 0; i < kN; i++) reqs[i] = (mc_request_t){MC_WRITE, 0, buf + i * kLen, seg, i * (uint64_t)kLen, kLen};
  mc_batch_t *b;
  assert_int_equal(mc_batch_create(e, kN, &b), MC_OK);
  assert_int_equal(mc_batch_submit(b, reqs, kN), MC_OK);
  assert_int_equal(mc_segment_close(e, seg), MC_OK);
  assert_int_equal(mc_batch_wait(b, tu_wait_ms(20000)), MC_OK);
  assert_int_equal(mc_batch_destroy(b), MC_OK);
  assert_int_equal(stat_num(e, "segments_open"), 0);
  char p[512];
  path_of(p, sizeof p, "closing");
  int fd = open(p, O_RDONLY);
  assert_true(fd >= 0);
  char *back = malloc(kLen);
  assert_int_equal(pread(fd, back, kLen, (kN - 1) * (off_t)kLen), kLen);
  assert_memory_equal(back, buf + (size_t)(kN - 1) * kLen, kLen);
  close(fd);
  free(back);
  mc_engine_destroy(e);
  free(buf);
}

/* ------------------------------------------------------------------ a full file system */

static char g_log[1024];
static void keep_log(int level, const char *m, void *user) {
  (void)level;
  (void)user;
  if (strstr(m, "errno")) snprintf(g_log, sizeof g_log, "%s", m);
}

/* A mount namespace of our own: as root (CAP_SYS_ADMIN) directly, else through a user
 * namespace (unprivileged, where the kernel allows it). 0, or the reason in why. */
static int own_mount_ns(char *why, size_t cap) {
  if (unshare(CLONE_NEWNS) != 0) {
    int e1 = errno;
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      snprintf(why, cap, "unshare(CLONE_NEWNS): %s; unshare(CLONE_NEWUSER|CLONE_NEWNS): %s", strerror(e1),
               strerror(errno));
      return -1;
    }
    char m[64];
    int fd = open("/proc/self/setgroups", O_WRONLY);
    if (fd >= 0 && (write(fd, "deny", 4) < 0 || close(fd) != 0)) return -1;
    snprintf(m, sizeof m, "0 %u 1", (unsigned)uid);
    fd = open("/proc/self/uid_map", O_WRONLY);
    if (fd < 0 || write(fd, m, strlen(m)) < 0 || close(fd) != 0) return -1;
    snprintf(m, sizeof m, "0 %u 1", (unsigned)gid);
    fd = open("/proc/self/gid_map", O_WRONLY);
    if (fd < 0 || write(fd, m, strlen(m)) < 0 || close(fd) != 0) return -1;
  }
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    snprintf(why, cap, "making / private in the new mount namespace: %s", strerror(errno));
    return -1;
  }
  return 0;
}

/* Run in a fresh child process (test_enospc): a 1 MiB tmpfs, a 4 MiB file on it, WRITEs until
 * the file system is full. Prints what it saw; exit 0 when every check held. */
static int enospc_child(void) {
  char why[512] = "", dir[] = "/tmp/mc-enospc.XXXXXX";
  if (!mkdtemp(dir)) return 20;
  if (own_mount_ns(why, sizeof why) != 0 || mount("tmpfs", dir, "tmpfs", 0, "size=1m") != 0) {
    printf("cannot mount a small tmpfs: %s%s\n", why, why[0] ? "" : strerror(errno));
    rmdir(dir);
    return 21;
  }
  mc_log_set_handler(keep_log, NULL);
  mc_engine_t *e = tu_engine(NULL);
  char u[300];
  snprintf(u, sizeof u, "file://%s/full?size=4M", dir);
  mc_segment_t seg;
  if (!e || mc_segment_open(e, u, &seg) != MC_OK) return 22;
  enum { kLen = 256 << 10, kN = 16 };
  char *buf = aligned_mem((size_t)kN * kLen), *back = aligned_mem(kLen);
  if (mc_buffer_register(e, buf, (size_t)kN * kLen, "cpu") || mc_buffer_register(e, back, kLen, "cpu")) return 23;
  tu_fill(buf, (size_t)kN * kLen, 5);
  size_t ok = 0, failed = 0;
  for (size_t i = 0; i < kN; i++) {  // one at a time: the first that finds the disk full fails
    mc_status_t st = one(e, MC_WRITE, buf + i * kLen, seg, i * (uint64_t)kLen, kLen);
    if (st == MC_OK && failed) return 24;  // nothing succeeds past a full disk here
    if (st == MC_OK) ok++; else if (st == MC_ERR_TRANSPORT) failed++; else return 25;
  }
  char stats[16384];
  size_t need;
  mc_engine_stats_json(e, stats, sizeof stats, &need);
  printf("%zu WRITEs of 256 KiB completed, %zu failed; log: %s\n", ok, failed, g_log);
  if (ok == 0 || failed == 0) return 26;
  if (!strstr(g_log, "No space left on device (errno 28)") || !strstr(stats, "No space left on device (errno 28)"))
    return 27;
  /* Nothing else hurt: what was written reads back, the engine and the segment still work. */
  if (one(e, MC_READ, back, seg, 0, kLen) != MC_OK || tu_check(back, kLen, 5) != -1) return 28;
  if (one(e, MC_WRITE, buf + kLen, seg, 0, kLen) != MC_OK) return 29;  // rewriting allocated space
  mc_engine_destroy(e);
  free(buf);
  free(back);
  umount(dir);
  rmdir(dir);
  return 0;
}

/* ENOSPC is a FAILED request (MC_ERR_TRANSPORT) with the errno in the log and in the stats'
 * last_error; the engine, the segment and the bytes already written are fine. */
static void test_enospc(void **state) {
  (void)state;
  int to = -1;
  FILE *from = NULL;
  pid_t pid = tu_spawn_self(&to, &from, "enospc", NULL);
  assert_true(pid > 0);
  close(to);
  char line[1024];
  while (fgets(line, sizeof line, from)) print_message("  child: %s", line);
  fclose(from);
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  if (WEXITSTATUS(st) == 21)
    fail_msg("this machine lets the test mount no tmpfs (needs CAP_SYS_ADMIN or unprivileged user namespaces)");
  assert_int_equal(WEXITSTATUS(st), 0);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "enospc") == 0) return enospc_child();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_grow),     cmocka_unit_test(test_bad_names),
      cmocka_unit_test(test_bounds),          cmocka_unit_test(test_read_only),
      cmocka_unit_test(test_aligned_unaligned), cmocka_unit_test(test_many_pages),
      cmocka_unit_test(test_cancel_in_flight), cmocka_unit_test(test_close_while_running),
      cmocka_unit_test(test_timeout),         cmocka_unit_test(test_enospc),
  };
  return cmocka_run_group_tests_name("file", tests, make_dir, remove_dir);
}
