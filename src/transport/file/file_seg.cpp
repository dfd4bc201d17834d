#include "transport/file/file_seg.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace mc::file {

FileSeg::~FileSeg() {
  gds.close();
  if (dfd >= 0) close(dfd);
  if (fd >= 0) close(fd);
}

namespace {

std::string err_text(int e) { return std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"; }

// Opens read-write (creating it when size= was given), else read-only for a file this process
// may only read. *why says what failed.
mc_status_t open_fd(FileSeg &f, std::string *why) {
  const std::string &p = f.u.path;
  int flags = O_RDWR | O_CLOEXEC | (f.u.has_size ? O_CREAT : 0);
  struct stat before {};
  bool existed = stat(p.c_str(), &before) == 0;
  f.fd = open(p.c_str(), flags, 0644);
  if (f.fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM) && existed)
    f.fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
  else
    f.writable = f.fd >= 0;
  if (f.fd >= 0) {
    f.created = !existed;
    return MC_OK;
  }
  int e = errno;
  if (e == ENOENT && !f.u.has_size) {
    *why = f.uri + ": no file " + p + " (add ?size=N to create it)";
    return MC_ERR_NOT_FOUND;
  }
  if (e == ENOENT || e == ENOTDIR) {
    *why = f.uri + ": cannot create " + p + ": a directory on its path does not exist (" + err_text(e) + ")";
    return MC_ERR_NOT_FOUND;
  }
  if (e == EISDIR) {
    *why = f.uri + ": " + p + " is a directory, not a regular file or block device";
    return MC_ERR_INVALID_ARG;
  }
  *why = f.uri + ": cannot open " + p + ": " + err_text(e);
  return e == EACCES || e == EPERM || e == EROFS ? MC_ERR_DENIED : MC_ERR_INVALID_ARG;
}

// The file's length, grown to size= when asked.
mc_status_t size_file(FileSeg &f, const struct stat &st, std::string *why) {
  const std::string &p = f.u.path;
  bool blk = S_ISBLK(st.st_mode);
  uint64_t have = static_cast<uint64_t>(st.st_size);
  if (blk && ioctl(f.fd, BLKGETSIZE64, &have) != 0) {
    *why = f.uri + ": cannot read the size of block device " + p + ": " + err_text(errno);
    return MC_ERR_INVALID_ARG;
  }
  if (f.u.has_size && have < f.u.size) {
    if (blk) {
      *why = f.uri + ": block device " + p + " has " + std::to_string(have) +
             " bytes, fewer than size=" + std::to_string(f.u.size);
      return MC_ERR_INVALID_ARG;
    }
    if (!f.writable) {
      *why = f.uri + ": " + p + " is read-only and shorter (" + std::to_string(have) +
             " bytes) than size=" + std::to_string(f.u.size);
      return MC_ERR_DENIED;
    }
    if (ftruncate(f.fd, static_cast<off_t>(f.u.size)) != 0) {
      *why = f.uri + ": cannot grow " + p + " to " + std::to_string(f.u.size) + " bytes: " + err_text(errno);
      return MC_ERR_INVALID_ARG;
    }
    have = f.u.size;
  }
  if (have == 0) {
    *why = f.uri + ": " + p + " is empty (add ?size=N to give it a length)";
    return MC_ERR_INVALID_ARG;
  }
  f.size = have;
  return MC_OK;
}

// A second descriptor on the same inode with O_DIRECT, used for aligned requests.
void open_direct(FileSeg &f, bool blk) {
  if (!f.u.direct) return;
  std::string self = "/proc/self/fd/" + std::to_string(f.fd);
  f.dfd = open(self.c_str(), (f.writable ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
  if (f.dfd >= 0 && !dio_alignment(f.dfd, blk, &f.mem_align, &f.off_align)) {
    close(f.dfd);
    f.dfd = -1;
  }
}

}  // namespace

mc_status_t open_file_segment(const std::string &uri, std::unique_ptr<FileSeg> *out, std::string *why) {
  auto f = std::make_unique<FileSeg>();
  f->uri = uri;
  if (!parse_file_uri(uri, &f->u, why)) return MC_ERR_INVALID_ARG;
  mc_status_t st = open_fd(*f, why);
  if (st != MC_OK) return st;
  struct stat sb {};
  if (fstat(f->fd, &sb) != 0) {
    *why = uri + ": cannot stat " + f->u.path + ": " + err_text(errno);
    return MC_ERR_INVALID_ARG;
  }
  if (!S_ISREG(sb.st_mode) && !S_ISBLK(sb.st_mode)) {
    *why = uri + ": " + f->u.path + " is not a regular file or block device";
    return MC_ERR_INVALID_ARG;
  }
  st = size_file(*f, sb, why);
  if (st != MC_OK) {
    if (f->created) unlink(f->u.path.c_str());
    return st;
  }
  open_direct(*f, S_ISBLK(sb.st_mode));
  *out = std::move(f);
  return MC_OK;
}

}  // namespace mc::file
