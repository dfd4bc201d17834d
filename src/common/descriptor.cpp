#include "common/descriptor.h"

#include "util/hex.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

namespace mc {

using nlohmann::json;

namespace {
// nlohmann's get<uint64_t>() / get<int64_t>() on a floating-point number is a C cast: undefined
// for -1.5 or 1e300. A peer's descriptor is untrusted: take integers only.
uint64_t get_u64(const json &v) {
  if (!v.is_number_unsigned()) throw json::type_error::create(302, "expected a non-negative integer", &v);
  return v.get<uint64_t>();
}
int64_t get_i64(const json &v) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX))
    throw json::type_error::create(302, "expected an integer", &v);
  return v.get<int64_t>();
}
}  // namespace

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

Status Descriptor::from_json_update(const std::string &text, const Descriptor &have, Descriptor *out) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Err(MC_ERR_METADATA, "segment descriptor is not a JSON object");
  if (!j.contains("delta")) return from_json(text, out);
  Descriptor part;
  Status st = from_json(text, &part);
  if (!st.ok()) return st;
  try {
    uint64_t base = get_u64(j.at("base"));
    if (part.incarnation != have.incarnation || base != have.version)
      return Err(MC_ERR_METADATA, "descriptor delta does not apply to the version held");
    std::map<uint64_t, BufferDesc> bufs;
    for (auto &b : have.buffers) bufs[b.addr] = b;
    for (auto &a : j.at("removed")) bufs.erase(get_u64(a));
    for (auto &b : part.buffers) bufs[b.addr] = b;
    Descriptor d = part;
    d.buffers.clear();
    d.buffers.reserve(bufs.size());
    for (auto &[a, b] : bufs) d.buffers.push_back(std::move(b));
    if (d.transports.empty()) d.transports = have.transports;
    for (size_t i = 1; i < d.buffers.size(); i++)
      if (d.buffers[i - 1].addr + d.buffers[i - 1].length > d.buffers[i].addr)
        return Err(MC_ERR_METADATA, "descriptor delta leaves overlapping buffers");
    d.set_min_access();
    *out = std::move(d);
    return Status::Ok();
  } catch (const json::exception &e) {
    return Err(MC_ERR_METADATA, std::string("descriptor delta is malformed: ") + e.what());
  }
}

Status Descriptor::from_json(const std::string &text, Descriptor *out) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return Err(MC_ERR_METADATA, "segment descriptor is not a JSON object");
  try {
    if (!j.contains("major") || !j["major"].is_number_integer())
      return Err(MC_ERR_METADATA, "segment descriptor has no integer \"major\" version");
    int major = j["major"].get<int>();
    if (major != kMajor)
      return Err(MC_ERR_METADATA, "segment descriptor has major version " + std::to_string(major) +
                                      "; this mc reads version " + std::to_string(kMajor) +
                                      " (upgrade the older side)");
    Descriptor d;
    d.name = j.at("name").get<std::string>();
    std::string inc = j.at("incarnation").get<std::string>();
    if (!hex::parse_u64(inc, &d.incarnation))
      return Err(MC_ERR_METADATA, "segment descriptor has a malformed incarnation");
    d.version = get_u64(j.at("version"));
    d.host_id = j.value("host_id", std::string());
    d.pid = j.contains("pid") ? get_i64(j["pid"]) : 0;
    d.tcp = j.value("tcp", std::string());
    for (auto &b : j.at("buffers")) {
      BufferDesc bd;
      bd.addr = get_u64(b.at("addr"));
      bd.length = get_u64(b.at("length"));
      bd.location = b.value("location", std::string("cpu"));
      if (b.contains("access")) {
        if (!b["access"].is_number_unsigned() || b["access"].get<uint64_t>() > 3)
          return Err(MC_ERR_METADATA, "segment descriptor has a malformed buffer access");
        bd.access = static_cast<uint32_t>(b["access"].get<uint64_t>());
      }
      if (b.contains("ext") && b["ext"].is_object())
        for (auto &[k, v] : b["ext"].items()) bd.ext[k] = v.dump();
      if (bd.length == 0 || bd.addr + bd.length < bd.addr)
        return Err(MC_ERR_METADATA, "segment descriptor has a malformed buffer");
      d.buffers.push_back(std::move(bd));
    }
    if (j.contains("transports") && j["transports"].is_object())
      for (auto &[k, v] : j["transports"].items()) d.transports[k] = v.dump();
    std::sort(d.buffers.begin(), d.buffers.end(),
              [](const BufferDesc &a, const BufferDesc &b) { return a.addr < b.addr; });
    for (size_t i = 1; i < d.buffers.size(); i++)
      if (d.buffers[i - 1].addr + d.buffers[i - 1].length > d.buffers[i].addr)
        return Err(MC_ERR_METADATA, "segment descriptor has overlapping buffers");
    d.set_min_access();
    *out = std::move(d);
    return Status::Ok();
  } catch (const json::exception &e) {
    return Err(MC_ERR_METADATA, std::string("segment descriptor is malformed: ") + e.what());
  }
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
