/* Shared helpers for the cmocka tests (C11). */
#ifndef MC_TESTUTIL_H
#define MC_TESTUTIL_H
#include <stdint.h>
#include <stddef.h>
#include <mc.h>
#include <stdio.h>
#include <sys/types.h>

/* MC_TEST_SCALE from the environment (1 in `make test`, larger in `make test-long`). */
int tu_scale(void);
/* MC_TEST_SLACK from the environment (default 1, 4 in a sanitizer build; make test-asan,
 * test-tsan and test-valgrind set MC_TEST_SLACK=4): every
 * time limit a test asserts on or waits for is multiplied by it, so that a loaded or instrumented
 * machine never fails a correct build. tu_slack_ms(ms) is ms * tu_slack(). */
int tu_slack(void);
uint64_t tu_slack_ms(uint64_t ms);
/* The same for the int timeout_ms of mc_batch_wait and mc_transfer where a test waits for
 * requests to end (not for a timeout): ms * tu_slack(), at most INT_MAX. */
int tu_wait_ms(int ms);
/* Prints the line scripts/run-tests.sh reads for why a case skipped: "MC-SKIP: reason", or with
 * required != 0 "MC-SKIP-REQUIRED: reason" for a suite that must run where `make test` runs (the
 * runner then fails unless MC_ALLOW_SKIP=1). Use TU_SKIP / TU_SKIP_REQUIRED (after cmocka.h). */
void tu_skip_note(int required, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define TU_SKIP(...) do { tu_skip_note(0, __VA_ARGS__); skip(); } while (0)
#define TU_SKIP_REQUIRED(...) do { tu_skip_note(1, __VA_ARGS__); skip(); } while (0)
/* Monotonic milliseconds. */
uint64_t tu_now_ms(void);
/* Fills buf with a pattern derived from seed; tu_check returns the first mismatching index or -1. */
void tu_fill(void *buf, size_t len, uint64_t seed);
long long tu_check(const void *buf, size_t len, uint64_t seed);
/* Creates an engine on 127.0.0.1:0 with optional extra key/value pairs (NULL-terminated). */
mc_engine_t *tu_engine(const char *key, ...);
/* Runs this test program again as a child with the given arguments (NULL-terminated; argv[0] is
 * /proc/self/exe), its stdin and stdout on pipes; the child gets SIGKILL when this process dies.
 * Returns the child's pid, or -1 when it could not be started. *to_child (write end of the
 * child's stdin) and *from_child (reads its stdout) are the caller's to close. */
pid_t tu_spawn_self(int *to_child, FILE **from_child, const char *arg, ...);
/* The 40-byte wire header (src/proto/wire.h), for tests that speak the protocol by hand. */
#pragma pack(push, 1)
struct tu_wire_hdr {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  uint64_t id;
  uint64_t addr;
  uint64_t len;
  int32_t status;
  uint32_t aux;
};
#pragma pack(pop)
#define TU_WIRE_MAGIC 0x3157434dU
/* A blocking TCP connection to an engine named "host:port" (IPv4 host), or -1. */
int tu_dial(const char *name);
#endif
