/* A C program outside the mc tree, built only as README.md's "Use it from C" says: two engines
 * in one process, 1 MiB WRITTEN to the target over loopback and READ back, compared byte for
 * byte. Exit 0 only when both directions moved the exact bytes. */
#include <mc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call) do { mc_status_t s_ = (call); if (s_ != MC_OK) { \
  fprintf(stderr, "%s: %s: %s\n", #call, mc_status_str(s_), mc_last_error()); return 1; } } while (0)
#define LEN (1u << 20)

int main(void) {
  static unsigned char target_mem[LEN], src[LEN], back[LEN];
  mc_engine_t *target, *initiator;
  CHECK(mc_engine_create(NULL, &target));
  CHECK(mc_engine_create(NULL, &initiator));
  CHECK(mc_buffer_register(target, target_mem, LEN, NULL));
  CHECK(mc_buffer_register(initiator, src, LEN, NULL));
  CHECK(mc_buffer_register(initiator, back, LEN, NULL));
  srand(42);
  for (size_t i = 0; i < LEN; i++) src[i] = (unsigned char)rand();

  mc_segment_t seg;
  CHECK(mc_segment_open(initiator, mc_engine_name(target), &seg));
  mc_request_t req = {MC_WRITE, 0, src, seg, (uint64_t)(uintptr_t)target_mem, LEN};
  CHECK(mc_transfer(initiator, &req, 1, -1));
  int wrote = memcmp(src, target_mem, LEN) == 0;
  req = (mc_request_t){MC_READ, 0, back, seg, (uint64_t)(uintptr_t)target_mem, LEN};
  CHECK(mc_transfer(initiator, &req, 1, -1));
  int read = memcmp(src, back, LEN) == 0;
  printf("c consumer: libmc %s, wrote %u bytes match=%d, read back match=%d\n",
         mc_version_string(), LEN, wrote, read);
  mc_engine_destroy(initiator);
  mc_engine_destroy(target);
  return wrote && read ? 0 : 1;
}
