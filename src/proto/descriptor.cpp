#include "proto/descriptor.h"

#include "proto/codec.h"
#include "util/hex.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

namespace mc {

using nlohmann::json;

std::string Descriptor::to_json() const {
  json j;
  j["major"] = kMajor;
  j["minor"] = kMinor;
  j["name"] = name;
  j["incarnation"] = hex::u64(incarnation);
  j["version"] = version;
  j["host_id"] = host_id;
  j["pid"] = pid;
  j["tcp"] = tcp;
  json bufs = json::array();
  for (auto &b : buffers) {
    json jb = {{"addr", b.addr}, {"length", b.length}, {"location", b.location}, {"access", b.access}};
    if (!b.ext.empty()) {
      json e = json::object();
      for (auto &[k, v] : b.ext) e[k] = json::parse(v, nullptr, false);
      jb["ext"] = std::move(e);
    }
    bufs.push_back(std::move(jb));
  }
  j["buffers"] = std::move(bufs);
  if (!transports.empty()) {
    json t = json::object();
    for (auto &[k, v] : transports) t[k] = json::parse(v, nullptr, false);
    j["transports"] = std::move(t);
  }
  return j.dump();
}

std::string Descriptor::to_delta_json(uint64_t base, const std::vector<uint64_t> &removed) const {
  json j = json::parse(to_json());
  j["delta"] = true;
  j["base"] = base;
  j["removed"] = removed;
  return j.dump();
}

namespace {
// The descriptor as a peer or a store sends it, read through the one codec: every field typed
// and range-checked, the first bad one named with the peer. A delta carries "base" and
// "removed" besides (Descriptor::to_delta_json).
struct DescriptorMsg {
  static constexpr const char *kWhat = "segment descriptor";
  static constexpr size_t kMaxBuffers = size_t(1) << 24;
  Descriptor d;
  bool delta = false;
  uint64_t base = 0;
  std::vector<uint64_t> removed;

  bool read(proto::Reader &r, const json &j) {
    int major = 0;
    if (!r.get(j, "", "major", &major)) return false;
    if (major != Descriptor::kMajor)
      return r.fail("major", "says major version " + std::to_string(major) + "; this mc reads version " +
                                 std::to_string(Descriptor::kMajor) + " (upgrade the older side)");
    std::string inc;
    if (!r.get(j, "", "name", &d.name) || !r.get(j, "", "incarnation", &inc)) return false;
    if (!hex::parse_u64(inc, &d.incarnation)) return r.fail("incarnation", "is not 1 to 16 hex digits");
    if (!r.get(j, "", "version", &d.version) || !r.opt(j, "", "host_id", &d.host_id) ||
        !r.opt(j, "", "pid", &d.pid) || !r.opt(j, "", "tcp", &d.tcp))
      return false;
    const json *bufs = r.array(j, "", "buffers", kMaxBuffers);
    if (!bufs) return false;
    d.buffers.reserve(bufs->size());
    for (size_t i = 0; i < bufs->size(); i++)
      if (!read_buffer(r, (*bufs)[i], proto::Reader::index("buffers", i))) return false;
    const json *t = r.object(j, "", "transports", /*required=*/false);
    if (!t) return false;
    for (auto &[k, v] : t->items()) d.transports[k] = v.dump();
    if (j.contains("delta")) return read_delta(r, j);
    return true;
  }

  bool read_buffer(proto::Reader &r, const json &b, const std::string &path) {
    BufferDesc bd;
    bd.location = "cpu";
    if (!r.get(b, path, "addr", &bd.addr) || !r.get(b, path, "length", &bd.length) ||
        !r.opt(b, path, "location", &bd.location) || !r.opt(b, path, "access", &bd.access))
      return false;
    if (bd.access > 3)
      return r.fail_at(path, "access", "is not a combination of MC_ACCESS_READ and MC_ACCESS_WRITE");
    if (bd.length == 0) return r.fail_at(path, "length", "is 0");
    if (bd.addr + bd.length < bd.addr)
      return r.fail_at(path, "length", "runs past the end of the address space");
    const json *ext = r.object(b, path, "ext", /*required=*/false);
    if (!ext) return false;
    for (auto &[k, v] : ext->items()) bd.ext[k] = v.dump();
    d.buffers.push_back(std::move(bd));
    return true;
  }

  bool read_delta(proto::Reader &r, const json &j) {
    delta = true;
    if (!r.get(j, "", "base", &base)) return false;
    const json *rm = r.array(j, "", "removed", kMaxBuffers);
    if (!rm) return false;
    removed.resize(rm->size());
    for (size_t i = 0; i < rm->size(); i++)
      if (!r.at(*rm, "removed", i, &removed[i])) return false;
    return true;
  }
};

// Sorted by address and not overlapping, as every reader of a Descriptor assumes.
Status check_layout(Descriptor &d, const std::string &peer) {
  std::sort(d.buffers.begin(), d.buffers.end(),
            [](const BufferDesc &a, const BufferDesc &b) { return a.addr < b.addr; });
  for (size_t i = 1; i < d.buffers.size(); i++)
    if (d.buffers[i - 1].addr + d.buffers[i - 1].length > d.buffers[i].addr)
      return Err(MC_ERR_METADATA,
                 "segment descriptor from peer " + peer + ": field 'buffers' has overlapping buffers");
  d.set_min_access();
  return Status::Ok();
}
}  // namespace

Status Descriptor::from_json_update(const std::string &text, const Descriptor &have, Descriptor *out,
                                    const std::string &peer) {
  DescriptorMsg m;
  Status st = proto::decode(text, peer, MC_ERR_METADATA, &m);
  if (!st.ok()) return st;
  if (!m.delta) {
    st = check_layout(m.d, peer);
    if (st.ok()) *out = std::move(m.d);
    return st;
  }
  if (m.d.incarnation != have.incarnation || m.base != have.version)
    return Err(MC_ERR_METADATA, "descriptor delta from peer " + peer + " does not apply to the version held");
  try {
    std::map<uint64_t, BufferDesc> bufs;
    for (auto &b : have.buffers) bufs[b.addr] = b;
    for (uint64_t a : m.removed) bufs.erase(a);
    for (auto &b : m.d.buffers) bufs[b.addr] = std::move(b);
    Descriptor d = std::move(m.d);
    d.buffers.clear();
    d.buffers.reserve(bufs.size());
    for (auto &[a, b] : bufs) d.buffers.push_back(std::move(b));
    if (d.transports.empty()) d.transports = have.transports;
    st = check_layout(d, peer);
    if (st.ok()) *out = std::move(d);
    return st;
  } catch (const std::exception &e) {
    return Err(MC_ERR_METADATA, "descriptor delta from peer " + peer + ": " + e.what());
  }
}

Status Descriptor::from_json(const std::string &text, Descriptor *out, const std::string &peer) {
  DescriptorMsg m;
  Status st = proto::decode(text, peer, MC_ERR_METADATA, &m);
  if (!st.ok()) return st;
  try {
    st = check_layout(m.d, peer);
  } catch (const std::exception &e) {
    return Err(MC_ERR_METADATA, "segment descriptor from peer " + peer + ": " + e.what());
  }
  if (st.ok()) *out = std::move(m.d);
  return st;
}

bool Descriptor::covers(uint64_t addr, uint64_t len) const {
  if (len == 0 || addr + len < addr) return false;
  auto it = std::upper_bound(buffers.begin(), buffers.end(), addr,
                             [](uint64_t a, const BufferDesc &b) { return a < b.addr; });
  if (it == buffers.begin()) return false;
  --it;
  uint64_t end = addr + len;
  uint64_t covered = it->addr + it->length;
  if (covered <= addr) return false;
  while (covered < end) {
    ++it;
    if (it == buffers.end() || it->addr != covered) return false;
    covered = it->addr + it->length;
  }
  return true;
}

const BufferDesc *Descriptor::find(uint64_t addr) const {
  auto it = std::upper_bound(buffers.begin(), buffers.end(), addr,
                             [](uint64_t a, const BufferDesc &b) { return a < b.addr; });
  if (it == buffers.begin()) return nullptr;
  --it;
  return addr < it->addr + it->length ? &*it : nullptr;
}

uint32_t Descriptor::access_of(uint64_t addr, uint64_t len) const {
  auto it = std::upper_bound(buffers.begin(), buffers.end(), addr,
                             [](uint64_t a, const BufferDesc &b) { return a < b.addr; });
  if (it == buffers.begin()) return 0;
  --it;
  uint32_t acc = 3;
  for (uint64_t end = addr + len; it != buffers.end() && it->addr < end; ++it) acc &= it->access;
  return acc;
}

void Descriptor::set_min_access() {
  uint32_t m = 3;
  for (auto &b : buffers) m &= b.access;
  min_access = m;
}

uint64_t Descriptor::total_bytes() const {
  uint64_t t = 0;
  for (auto &b : buffers) t += b.length;
  return t;
}

const std::string &host_boot_id() {
  static const std::string id = [] {
    std::ifstream f("/proc/sys/kernel/random/boot_id");
    std::string s;
    std::getline(f, s);
    return s;
  }();
  return id;
}

}  // namespace mc
