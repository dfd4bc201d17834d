/* Shared helpers for the cmocka tests (C11). */
#ifndef MC_TESTUTIL_H
#define MC_TESTUTIL_H
#include <stdint.h>
#include <stddef.h>
#include <mc.h>

/* MC_TEST_SCALE from the environment (1 in `make test`, larger in `make test-long`). */
int tu_scale(void);
/* Monotonic milliseconds. */
uint64_t tu_now_ms(void);
/* Fills buf with a pattern derived from seed; tu_check returns the first mismatching index or -1. */
void tu_fill(void *buf, size_t len, uint64_t seed);
long long tu_check(const void *buf, size_t len, uint64_t seed);
/* Creates an engine on 127.0.0.1:0 with optional extra key/value pairs (NULL-terminated). */
mc_engine_t *tu_engine(const char *key, ...);
#endif
