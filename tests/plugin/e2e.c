/* An engine created with plugins=<the example plugin> and transports=uds moves data end to end
 * between two processes, built against the installed library alone (scripts/test-plugin.sh):
 *   e2e PLUGIN BAD_PLUGIN
 * The child (target) registers 8 MiB holding a pattern and reports its name and address; the
 * parent READs the first 4 MiB and WRITEs another pattern into the second 4 MiB through the
 * plugin; the child checks what landed. Also: the plugin's own key is validated like a built-in
 * key, and an engine asking for a missing or a version-mismatched plugin is refused with
 * MC_ERR_UNSUPPORTED naming the file. Exit 0 only when all of it held. */
#include <mc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define LEN (8u << 20)
#define HALF (LEN / 2)
#define CHECK(call) do { mc_status_t s_ = (call); if (s_ != MC_OK) { \
  fprintf(stderr, "e2e: %s: %s: %s\n", #call, mc_status_str(s_), mc_last_error()); return 1; } } while (0)

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 2654435761u + seed) >> 13);
}

static int engine_with(const char *plugins, mc_engine_t **e) {
  mc_config_t *cfg;
  CHECK(mc_config_create(&cfg));
  CHECK(mc_config_set(cfg, "plugins", plugins));
  CHECK(mc_config_set(cfg, "transports", "uds"));
  CHECK(mc_config_set(cfg, "uds_workers", "3"));
  CHECK(mc_config_set(cfg, "timeout_ms", "3000"));
  mc_status_t st = mc_engine_create(cfg, e);
  mc_config_destroy(cfg);
  if (st != MC_OK) fprintf(stderr, "e2e: mc_engine_create: %s: %s\n", mc_status_str(st), mc_last_error());
  return st == MC_OK ? 0 : 1;
}

static int target(const char *plugin, int to_parent, int from_parent) {
  static unsigned char mem[LEN], want[HALF];
  mc_engine_t *e;
  if (engine_with(plugin, &e)) return 1;
  fill(mem, HALF, 7);
  CHECK(mc_buffer_register(e, mem, LEN, "cpu"));
  dprintf(to_parent, "%s %llu\n", mc_engine_name(e), (unsigned long long)(uintptr_t)mem);
  char c;
  if (read(from_parent, &c, 1) != 1) return 1; /* the parent is done */
  fill(want, HALF, 9);
  int ok = memcmp(mem + HALF, want, HALF) == 0;
  printf("e2e target: WRITE over uds landed: %s\n", ok ? "yes" : "NO");
  fflush(stdout); /* the child leaves by _exit */
  mc_engine_destroy(e);
  return ok ? 0 : 1;
}

static int initiator(const char *plugin, const char *name, uint64_t remote) {
  static unsigned char local[LEN], want[HALF];
  mc_engine_t *e;
  if (engine_with(plugin, &e)) return 1;
  CHECK(mc_buffer_register(e, local, LEN, "cpu"));
  mc_segment_t seg;
  CHECK(mc_segment_open(e, name, &seg));
  mc_request_t req[2] = {{MC_READ, 0, local, seg, remote, HALF}, {MC_WRITE, 0, local + HALF, seg, remote + HALF, HALF}};
  fill(local + HALF, HALF, 9);
  CHECK(mc_transfer(e, req, 2, 10000));
  fill(want, HALF, 7);
  int ok = memcmp(local, want, HALF) == 0;
  static char stats[65536];
  size_t need;
  CHECK(mc_engine_stats_json(e, stats, sizeof stats, &need));
  const char *u = strstr(stats, "\"uds\":{\"requests\":");
  long reqs = u ? strtol(u + strlen("\"uds\":{\"requests\":"), NULL, 10) : -1;
  printf("e2e initiator: READ over uds matches: %s; uds requests: %ld\n", ok ? "yes" : "NO", reqs);
  mc_engine_destroy(e);
  return ok && reqs >= 2 ? 0 : 1;
}

/* A plugin that cannot be loaded fails mc_engine_create with MC_ERR_UNSUPPORTED naming it and,
 * for a version mismatch, both versions. */
static int refused(const char *plugin, const char *must_say1, const char *must_say2) {
  mc_config_t *cfg;
  mc_engine_t *e = NULL;
  CHECK(mc_config_create(&cfg));
  CHECK(mc_config_set(cfg, "plugins", plugin));
  mc_status_t st = mc_engine_create(cfg, &e);
  mc_config_destroy(cfg);
  const char *msg = mc_last_error();
  int ok = st == MC_ERR_UNSUPPORTED && strstr(msg, plugin) && strstr(msg, must_say1) && strstr(msg, must_say2);
  printf("e2e: plugins=%s: %s: %s (%s)\n", plugin, mc_status_str(st), msg, ok ? "as expected" : "WRONG");
  if (e) mc_engine_destroy(e);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: e2e PLUGIN BAD_VERSION_PLUGIN MISSING_PLUGIN\n");
    return 2;
  }
  int fail = refused(argv[2], "interface version 2", "1..1") + refused(argv[3], argv[3], "No such file");
  mc_config_t *cfg;
  CHECK(mc_config_create(&cfg));
  CHECK(mc_config_set(cfg, "plugins", argv[1]));
  mc_status_t bad = mc_config_set(cfg, "uds_workers", "0"), good = mc_config_set(cfg, "uds_workers", "2");
  printf("e2e: uds_workers=0: %s; uds_workers=2: %s\n", mc_status_str(bad), mc_status_str(good));
  fail += bad != MC_ERR_INVALID_ARG || good != MC_OK;
  mc_config_destroy(cfg);

  int up[2], down[2];
  if (pipe(up) || pipe(down)) return 1;
  fflush(stdout); /* or the child would print what the parent buffered */
  pid_t pid = fork();
  if (pid == 0) {
    close(up[0]);
    close(down[1]);
    _exit(target(argv[1], up[1], down[0]));
  }
  close(up[1]);
  close(down[0]);
  char line[512] = {0};
  FILE *f = fdopen(up[0], "r");
  char name[300];
  unsigned long long addr = 0;
  if (!f || !fgets(line, sizeof line, f) || sscanf(line, "%299s %llu", name, &addr) != 2) {
    fprintf(stderr, "e2e: the target reported nothing\n");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 1;
  }
  fail += initiator(argv[1], name, addr);
  if (write(down[1], "x", 1) != 1) fail++;
  int status = 0;
  waitpid(pid, &status, 0);
  fail += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  printf("e2e: %s\n", fail ? "FAILED" : "passed");
  return fail ? 1 : 0;
}
