// Kept apart from file_seg.cpp: <linux/stat.h>'s struct statx (with stx_dio_*) and glibc's
// <sys/stat.h> cannot be included together.
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/stat.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace mc::file {

bool dio_alignment(int fd, bool block_device, uint32_t *mem_align, uint32_t *off_align) {
  struct statx sx {};
  if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
    if (sx.stx_dio_offset_align == 0) return false;  // the file system does no direct I/O on it
    *mem_align = sx.stx_dio_mem_align ? sx.stx_dio_mem_align : sx.stx_dio_offset_align;
    *off_align = sx.stx_dio_offset_align;
    return true;
  }
  int lbs = 0;
  if (block_device && ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0) {
    *mem_align = *off_align = static_cast<uint32_t>(lbs);
    return true;
  }
  *mem_align = *off_align = 4096;  // the safe choice where the kernel does not say
  return true;
}

}  // namespace mc::file
