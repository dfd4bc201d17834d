#include "proto/samehost_msg.h"

#include <mc.h>

#include <algorithm>

#include "util/hex.h"

namespace mc::proto {
namespace {

// An abstract socket name: what sockaddr_un can hold after the leading NUL, and no NUL inside
// (the name would silently end there and reach another socket).
bool read_socket(Reader &r, const json &root, std::string *out) {
  if (!r.get(root, "", "socket", out)) return false;
  if (out->empty() || out->size() > 100)
    return r.fail("socket", "is not an abstract socket name of 1 to 100 bytes");
  if (out->find('\0') != std::string::npos) return r.fail("socket", "holds a NUL byte");
  return true;
}

bool read_pid(Reader &r, const json &root, int64_t *pid) {
  if (!r.get(root, "", "pid", pid)) return false;
  // 0 and -1 mean "this process group" / "every process" to process_vm_* and kill: never act on them.
  if (*pid <= 0 || *pid > 0x3fffffff) return r.fail("pid", "is not a process id (1 to 2^30-1)");
  return true;
}

// One buffer range: non-empty and not wrapping the address space.
bool check_range(Reader &r, const std::string &at, uint64_t addr, uint64_t len) {
  if (len == 0) return r.fail_at(at, "len", "is 0");
  if (addr + len < addr) return r.fail_at(at, "len", "makes the range wrap the address space");
  return true;
}

bool check_access(Reader &r, const std::string &at, uint32_t access) {
  if (access & ~uint32_t(MC_ACCESS_READ | MC_ACCESS_WRITE))
    return r.fail_at(at, "access", "has unknown bits");
  return true;
}

// Buffers arrive in address order from an honest peer; anything else (or two that overlap)
// would make one remote address mean two things.
template <class Buf>
bool check_disjoint(Reader &r, const std::vector<Buf> &b) {
  for (size_t i = 1; i < b.size(); i++)
    if (b[i].addr < b[i - 1].addr + b[i - 1].len)
      return r.fail_at(Reader::index("buffers", i), "addr", "overlaps or precedes the buffer before it");
  return true;
}

}  // namespace

bool ShmBlob::read(Reader &r, const json &root) { return read_socket(r, root, &socket); }
std::string ShmBlob::to_json() const { return json{{"socket", socket}}.dump(); }
bool NvlinkBlob::read(Reader &r, const json &root) { return read_socket(r, root, &socket); }
std::string NvlinkBlob::to_json() const { return json{{"socket", socket}}.dump(); }

bool ShmHello::read(Reader &r, const json &root) {
  if (!read_pid(r, root, &pid) || !r.get(root, "", "ctrl", &ctrl)) return false;
  if (ctrl == 0) return r.fail("ctrl", "is 0");
  return true;
}
std::string ShmHello::to_json() const { return json{{"pid", pid}, {"ctrl", ctrl}}.dump(); }

bool NvlinkHello::read(Reader &r, const json &root) { return read_pid(r, root, &pid); }
std::string NvlinkHello::to_json() const { return json{{"pid", pid}}.dump(); }

bool ShmListBuf::read_own(Reader &r, const json &o, const std::string &at) {
  return r.get(o, at, "memfd", &memfd);
}
void ShmListBuf::write_own(json &o) const { o["memfd"] = memfd; }

bool NvListBuf::read_own(Reader &r, const json &o, const std::string &at) {
  if (!r.get(o, at, "dev", &dev) || !r.get(o, at, "vmm", &vmm)) return false;
  if (dev < 0) return r.fail_at(at, "dev", "is negative");
  if (access == 0) return true;  // listed without a handle: requests to it fail DENIED
  if (vmm) {
    std::string cp = Reader::join(at, "chunks");
    const json *c = r.array(o, at, "chunks", kMaxNvChunks);
    if (!c) return false;
    if (c->empty()) return r.fail(cp, "is empty");
    for (size_t k = 0; k < c->size(); k++) {
      std::string ck = Reader::index(cp, k);
      const json &e = (*c)[k];
      if (!e.is_array() || e.size() != 2) return r.fail(ck, "is not an [addr, size] pair");
      uint64_t ca = 0, cs = 0;
      if (!r.at(e, ck, 0, &ca) || !r.at(e, ck, 1, &cs)) return false;
      if (cs == 0 || ca + cs < ca) return r.fail(ck, "is an empty or wrapping range");
      chunks.emplace_back(ca, cs);
    }
    return true;
  }
  std::string h;
  if (!r.get(o, at, "ipc", &h) || !r.get(o, at, "base", &base)) return false;
  ipc.assign(kIpcHandleBytes, '\0');
  if (!hex::decode(h, ipc.data(), kIpcHandleBytes)) return r.fail_at(at, "ipc", "is not 128 hex digits");
  if (base > addr) return r.fail_at(at, "base", "lies above the buffer's address");
  return true;
}

void NvListBuf::write_own(json &o) const {
  o["dev"] = dev;
  o["vmm"] = vmm;
  if (access == 0) return;
  if (vmm) {
    json c = json::array();
    for (auto &[ca, cs] : chunks) c.push_back({ca, cs});
    o["chunks"] = std::move(c);
  } else {
    o["ipc"] = hex::encode(ipc.data(), ipc.size());
    o["base"] = base;
  }
}

template <class Buf>
bool SamehostList<Buf>::read(Reader &r, const json &root) {
  if (!r.get(root, "", "epoch", &epoch)) return false;
  const json *a = r.array(root, "", "buffers", kMaxSamehostBuffers);
  if (!a) return false;
  buffers.resize(a->size());
  for (size_t i = 0; i < a->size(); i++) {
    const json &o = (*a)[i];
    std::string at = Reader::index("buffers", i);
    Buf &b = buffers[i];
    if (!r.get(o, at, "addr", &b.addr) || !r.get(o, at, "len", &b.len) || !r.get(o, at, "access", &b.access))
      return false;
    if (!check_range(r, at, b.addr, b.len) || !check_access(r, at, b.access) || !b.read_own(r, o, at))
      return false;
  }
  return check_disjoint(r, buffers);
}

template <class Buf>
std::string SamehostList<Buf>::to_json() const {
  json a = json::array();
  for (auto &b : buffers) {
    json o = {{"addr", b.addr}, {"len", b.len}, {"access", b.access}};
    b.write_own(o);
    a.push_back(std::move(o));
  }
  return json{{"epoch", epoch}, {"buffers", std::move(a)}}.dump();
}

template struct SamehostList<ShmListBuf>;
template struct SamehostList<NvListBuf>;

std::string fd_request(uint64_t addr) { return "FD " + std::to_string(addr); }

bool parse_fd_request(std::string_view req, uint64_t *addr) {
  if (req.size() < 4 || req.size() > 23 || req.substr(0, 3) != "FD ") return false;
  if (req[3] == '0' && req.size() > 4) return false;  // one spelling per address
  uint64_t v = 0;
  for (char c : req.substr(3)) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *addr = v;
  return true;
}

}  // namespace mc::proto
