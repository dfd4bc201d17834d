// The messages of the same-host transports (shm and nvlink), one typed codec each.
//
// Every one of them comes from another process (a same-host peer, or a descriptor that a peer
// put in the metadata store) and is decoded only through proto::decode(), so a string where a
// number belongs, a negative pid, a wrapping range or a huge array ends in a Status naming the
// peer, the message and the field, on whatever thread read it. Ranges are checked here, once,
// so the transports act only on a list that makes sense: every buffer non-empty, not wrapping
// the address space, not overlapping the next one.
//
// Wire (4-byte length + text on the abstract Unix socket, proto/unix_msg.h), after admission:
//   descriptor transports.shm / .nvlink   {"socket":"<abstract name>"}
//   admission reply, shm                  {"pid":P,"ctrl":A}        + the control page's memfd
//   admission reply, nvlink               {"pid":P}                 + the control page's memfd
//   "LIST" -> shm                         {"epoch":E,"buffers":[{"addr","len","memfd","access"}]}
//   "LIST" -> nvlink                      {"epoch":E,"buffers":[{"addr","len","dev","vmm","access",
//                                           "chunks":[[a,n],...] | "ipc":"<128 hex>","base":B}]}
//   "FD <addr, decimal>" -> "OK" + fd, or "ERR [DENIED ]<why>"
// Buffers are named fields, never positions, in both transports.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proto/codec.h"

namespace mc::proto {

// Bounds on what a peer may make us hold: a LIST longer than this is refused, not allocated.
inline constexpr size_t kMaxSamehostBuffers = 1 << 16;
inline constexpr size_t kMaxNvChunks = 1 << 12;
inline constexpr size_t kIpcHandleBytes = 64;  // CU_IPC_HANDLE_SIZE, without the CUDA headers

struct ShmBlob {
  static constexpr const char *kWhat = "shm descriptor entry";
  std::string socket;
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

struct NvlinkBlob {
  static constexpr const char *kWhat = "nvlink descriptor entry";
  std::string socket;
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

struct ShmHello {
  static constexpr const char *kWhat = "shm admission reply";
  int64_t pid = 0;    // > 0: used for cross-memory attach
  uint64_t ctrl = 0;  // the control page's address in the peer's process, != 0
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

struct NvlinkHello {
  static constexpr const char *kWhat = "nvlink admission reply";
  int64_t pid = 0;
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

// One buffer of a LIST reply: the fields every same-host buffer has, read and checked once by
// the LIST codec below (non-empty, not wrapping, known access bits, in address order and
// disjoint); each transport adds its own fields through read_own / write_own.
struct ListBufBase {
  uint64_t addr = 0, len = 0;
  uint32_t access = 0;  // MC_ACCESS_* bits only
};

struct ShmListBuf : ListBufBase {
  static constexpr const char *kListWhat = "shm LIST reply";
  bool memfd = false;
  bool read_own(Reader &r, const json &o, const std::string &at);
  void write_own(json &o) const;
};

struct NvListBuf : ListBufBase {
  static constexpr const char *kListWhat = "nvlink LIST reply";
  int dev = 0;
  bool vmm = false;
  std::vector<std::pair<uint64_t, uint64_t>> chunks;  // vmm and access != 0: (addr, size), non-empty
  std::string ipc;                                    // !vmm and access != 0: kIpcHandleBytes raw bytes
  uint64_t base = 0;                                  // !vmm and access != 0: <= addr
  bool read_own(Reader &r, const json &o, const std::string &at);
  void write_own(json &o) const;
};

// The one LIST codec of both transports: {"epoch":E,"buffers":[{named fields}...]}.
template <class Buf>
struct SamehostList {
  static constexpr const char *kWhat = Buf::kListWhat;
  uint64_t epoch = 0;
  std::vector<Buf> buffers;  // sorted by addr, disjoint
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};
using ShmList = SamehostList<ShmListBuf>;
using NvlinkList = SamehostList<NvListBuf>;
extern template struct SamehostList<ShmListBuf>;
extern template struct SamehostList<NvListBuf>;

// "FD <addr>" (the same in both transports): the request text, and its strict parse (decimal
// digits only, no sign, no overflow, nothing after).
std::string fd_request(uint64_t addr);
bool parse_fd_request(std::string_view req, uint64_t *addr);

}  // namespace mc::proto
