// A segment descriptor: what a peer needs to address an engine's buffers.
//
// JSON, versioned by "major"/"minor". Readers reject an unknown major version with
// MC_ERR_METADATA; a larger minor only adds fields, which readers ignore.
//   {
//     "major": 1, "minor": 0,
//     "name": "127.0.0.1:15000",          // the name peers open it by
//     "incarnation": "9f3c...",          // 16 hex digits: random per engine start
//     "version": 7,                       // bumps on every register/unregister
//     "host_id": "boot-id",               // /proc/sys/kernel/random/boot_id: same-host detection
//     "pid": 1234,
//     "tcp": "127.0.0.1:15000",           // where the TCP data path and control channel listen
//     "buffers": [ {"addr": 140..., "length": 1048576, "location": "cpu",
//                   "access": 3,                         // MC_ACCESS_* bits; absent: 3
//                   "ext": {"rdma": {...}}} ],           // sorted by addr; ext per transport
//     "transports": {"shm": {...}, "rdma": {...}}      // each transport's own endpoint data
//   }
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "util/status.h"

namespace mc {

struct BufferDesc {
  uint64_t addr = 0;
  uint64_t length = 0;
  std::string location;
  std::map<std::string, std::string> ext;  // transport name -> JSON text
  uint32_t access = 3;                     // MC_ACCESS_READ | MC_ACCESS_WRITE: what peers may do
};

struct Descriptor {
  static constexpr int kMajor = 1;
  static constexpr int kMinor = 0;
  std::string name;
  uint64_t incarnation = 0;
  uint64_t version = 0;
  std::string host_id;
  int64_t pid = 0;
  std::string tcp;
  std::vector<BufferDesc> buffers;                // sorted by addr, non-overlapping
  std::map<std::string, std::string> transports;  // transport name -> JSON text
  // The access bits every buffer has (AND over buffers), so a submit skips the per-buffer
  // check when they allow the request. 0 until computed (set_min_access): check per buffer.
  uint32_t min_access = 0;

  std::string to_json() const;
  // Parses text from `peer` (named in errors) through the one descriptor codec; never throws;
  // MC_ERR_METADATA naming the field when anything is malformed.
  static Status from_json(const std::string &text, Descriptor *out, const std::string &peer = "");
  // A delta: this descriptor's header fields and version, `buffers` holding only the buffers
  // added or changed since version `base`, plus "removed": the addresses gone since then.
  //   {..., "delta": true, "base": 6, "version": 9, "buffers": [...], "removed": [140...]}
  std::string to_delta_json(uint64_t base, const std::vector<uint64_t> &removed) const;
  // Parses text, a full descriptor or a delta against `have` (same incarnation, base equal to
  // have.version); MC_ERR_METADATA when a delta does not apply.
  static Status from_json_update(const std::string &text, const Descriptor &have, Descriptor *out,
                                 const std::string &peer = "");
  // True when [addr, addr+len) is covered by adjacent buffers.
  bool covers(uint64_t addr, uint64_t len) const;
  // The buffer containing addr, or nullptr.
  const BufferDesc *find(uint64_t addr) const;
  // The access bits common to the buffers covering [addr, addr+len) (call after covers()).
  uint32_t access_of(uint64_t addr, uint64_t len) const;
  void set_min_access();
  uint64_t total_bytes() const;
};

// This machine's boot id (empty if unknown).
const std::string &host_boot_id();

}  // namespace mc
