/* Two engines in one process: publish a buffer, open it by name, WRITE into it, READ it back.
 * Build: cc hello.c $(pkg-config --cflags --libs mc) */
#include <mc.h>
#include <stdio.h>
#include <string.h>

#define CHECK(call) do { mc_status_t s_ = (call); if (s_ != MC_OK) { \
  fprintf(stderr, "%s: %s: %s\n", #call, mc_status_str(s_), mc_last_error()); return 1; } } while (0)

int main(void) {
  static char target_mem[1 << 20], local_mem[1 << 20];
  mc_engine_t *target, *initiator;
  CHECK(mc_engine_create(NULL, &target));          /* listens on 127.0.0.1, a free port */
  CHECK(mc_engine_create(NULL, &initiator));
  CHECK(mc_buffer_register(target, target_mem, sizeof target_mem, NULL));
  CHECK(mc_buffer_register(initiator, local_mem, sizeof local_mem, NULL));

  mc_segment_t seg;                                 /* open the target's segment by its name */
  CHECK(mc_segment_open(initiator, mc_engine_name(target), &seg));
  strcpy(local_mem, "hello over mc");
  mc_request_t req = {MC_WRITE, 0, local_mem, seg, (uint64_t)(uintptr_t)target_mem, 4096};
  CHECK(mc_transfer(initiator, &req, 1, 5000));     /* all-or-error, bounded wait */

  memset(local_mem, 0, 4096);
  req.opcode = MC_READ;
  CHECK(mc_transfer(initiator, &req, 1, 5000));
  printf("read back: %s (target %s)\n", local_mem, mc_engine_name(target));
  mc_engine_destroy(initiator);
  mc_engine_destroy(target);
  return strcmp(local_mem, "hello over mc") != 0;
}
