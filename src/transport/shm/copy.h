// The shm transport's copy of one run of bytes between mapped memory and local memory.
#pragma once

#include <cstdint>

namespace mc {
namespace shmcopy {

// Copies len bytes. stream: non-temporal stores that leave the caches alone (runs of hundreds
// of MiB); otherwise the faster of glibc's memcpy and a 32-byte vector loop for this CPU, as
// measured once per process (loop_name).
void run(char *dst, const char *src, uint64_t len, bool stream);

// What copies runs of 1 KiB to 2 MiB in this process (measured at the first call of this or
// run(); the shm transport calls it when it starts): "avx2", "memcpy"
// or one below 32 KiB and the other from 32 KiB on.
const char *loop_name();

}  // namespace shmcopy
}  // namespace mc
