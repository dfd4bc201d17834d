#include "proto/rdma_msg.h"

#include "util/hex.h"

namespace mc::proto {
namespace {

// lid, gid and mtu of object o (the root of a connect message or one NIC of a descriptor).
bool read_addr(Reader &r, const json &o, std::string_view path, RdmaAddr *a) {
  uint32_t lid = 0, mtu = 0;
  std::string gid;
  if (!r.get(o, path, "lid", &lid) || !r.get(o, path, "gid", &gid) || !r.get(o, path, "mtu", &mtu))
    return false;
  if (lid > 0xffff) return r.fail_at(path, "lid", "is not a 16-bit LID");
  if (!hex::decode(gid, a->gid, 16)) return r.fail_at(path, "gid", "is not 32 hex digits");
  if (mtu < 256 || mtu > 4096 || (mtu & (mtu - 1)))
    return r.fail_at(path, "mtu", "is not a path MTU (256..4096, a power of two)");
  a->lid = static_cast<uint16_t>(lid);
  a->mtu = mtu;
  return true;
}

bool read_qps(Reader &r, const json &root, std::vector<RdmaQpInfo> *out) {
  const json *a = r.array(root, "", "qps", kRdmaMaxQps);
  if (!a) return false;
  if (a->empty()) return r.fail("qps", "is empty");
  for (size_t i = 0; i < a->size(); i++) {
    std::string p = Reader::index("qps", i);
    RdmaQpInfo q;
    if (!r.get((*a)[i], p, "qpn", &q.qpn) || !r.get((*a)[i], p, "psn", &q.psn)) return false;
    if (q.qpn == 0 || q.qpn >= (1u << 24)) return r.fail_at(p, "qpn", "is not a 24-bit QP number");
    if (q.psn >= (1u << 24)) return r.fail_at(p, "psn", "is not a 24-bit PSN");
    out->push_back(q);
  }
  return true;
}

void put_addr(json &j, const RdmaAddr &a) {
  j["lid"] = a.lid;
  j["gid"] = hex::encode(a.gid, 16);
  j["mtu"] = a.mtu;
}

json qps_json(const std::vector<RdmaQpInfo> &qps) {
  json a = json::array();
  for (auto &q : qps) a.push_back({{"qpn", q.qpn}, {"psn", q.psn}});
  return a;
}

}  // namespace

bool RdmaConnectReq::read(Reader &r, const json &root) {
  std::string op;
  if (!r.get(root, "", "op", &op)) return false;
  if (op != "connect") return r.fail("op", "is not \"connect\"");
  return r.get(root, "", "from", &from) && r.get(root, "", "inc", &inc) &&
         r.get(root, "", "to_inc", &to_inc) && r.get(root, "", "lnic", &lnic) &&
         r.get(root, "", "rnic", &rnic) && read_addr(r, root, "", &addr) && read_qps(r, root, &qps);
}

std::string RdmaConnectReq::to_json() const {
  json j{{"op", "connect"}, {"from", from}, {"inc", inc}, {"to_inc", to_inc}, {"lnic", lnic}, {"rnic", rnic}};
  put_addr(j, addr);
  j["qps"] = qps_json(qps);
  return j.dump();
}

bool RdmaConnectReply::read(Reader &r, const json &root) {
  return read_addr(r, root, "", &addr) && read_qps(r, root, &qps);
}

std::string RdmaConnectReply::to_json() const {
  json j = json::object();
  put_addr(j, addr);
  j["qps"] = qps_json(qps);
  return j.dump();
}

bool RdmaKeysReq::read(Reader &r, const json &root) {
  std::string op;
  if (!r.get(root, "", "op", &op)) return false;
  if (op != "keys") return r.fail("op", "is not \"keys\"");
  return r.get(root, "", "from", &from) && r.get(root, "", "to_inc", &to_inc) &&
         r.get(root, "", "addr", &addr);
}

std::string RdmaKeysReq::to_json() const {
  return json{{"op", "keys"}, {"from", from}, {"to_inc", to_inc}, {"addr", addr}}.dump();
}

bool RdmaKeysReply::read(Reader &r, const json &root) {
  if (!r.get(root, "", "addr", &addr) || !r.get(root, "", "len", &len)) return false;
  if (len == 0 || addr + len < addr)
    return r.fail("len", "is not a buffer length (zero, or the range wraps)");
  const json *a = r.array(root, "", "rkeys", kRdmaMaxNics);
  if (!a) return false;
  rkeys.resize(a->size());
  for (size_t i = 0; i < a->size(); i++)
    if (!r.at(*a, "rkeys", i, &rkeys[i])) return false;
  return true;
}

std::string RdmaKeysReply::to_json() const {
  return json{{"addr", addr}, {"len", len}, {"rkeys", rkeys}}.dump();
}

bool RdmaOp::read(Reader &r, const json &root) {
  return r.get(root, "", "op", &op) && r.opt(root, "", "from", &from);
}

bool RdmaFabricDesc::read(Reader &r, const json &root) {
  if (!r.get(root, "", "fabric", &fabric)) return false;
  const json *a = r.array(root, "", "nics", kRdmaMaxNics);
  if (!a) return false;
  for (size_t i = 0; i < a->size(); i++) {
    std::string p = Reader::index("nics", i);
    RdmaNicDesc n;
    if (!r.get((*a)[i], p, "name", &n.name) || !read_addr(r, (*a)[i], p, &n.addr)) return false;
    if (n.name.empty()) return r.fail_at(p, "name", "is empty");
    nics.push_back(std::move(n));
  }
  return true;
}

std::string RdmaFabricDesc::to_json() const {
  json a = json::array();
  for (auto &n : nics) {
    json j{{"name", n.name}};
    put_addr(j, n.addr);
    a.push_back(std::move(j));
  }
  return json{{"fabric", fabric}, {"nics", std::move(a)}}.dump();
}

bool RdmaBufExt::read(Reader &r, const json &root) {
  const json *a = r.array(root, "", "rkeys", kRdmaMaxNics);
  if (!a) return false;
  rkeys.resize(a->size());
  for (size_t i = 0; i < a->size(); i++)
    if (!r.at(*a, "rkeys", i, &rkeys[i])) return false;
  if (!r.opt(root, "", "region", &region)) return false;
  const json *m = r.array(root, "", "more", kRdmaMaxRegions - 1, false);
  if (!m) return false;
  if (m->empty()) return true;
  if (region < kRdmaMinRegion)
    return r.fail("region", "is missing or below 4096 while \"more\" lists regions");
  more.resize(m->size());
  for (size_t i = 0; i < m->size(); i++) {
    std::string p = Reader::index("more", i);
    const json &e = (*m)[i];
    if (!e.is_array()) return r.fail(p, "is not an array");
    if (e.size() != rkeys.size()) return r.fail(p, "has another number of keys than rkeys");
    more[i].resize(e.size());
    for (size_t k = 0; k < e.size(); k++)
      if (!r.at(e, p, k, &more[i][k])) return false;
  }
  return true;
}

std::string RdmaBufExt::to_json() const {
  json j{{"rkeys", rkeys}};
  if (!more.empty()) {
    j["region"] = region;
    j["more"] = more;
  }
  return j.dump();
}

}  // namespace mc::proto
