// The RDMA transport's peer-facing messages: the QP exchange over the control channel (request
// and reply) and the two descriptor blobs (transports.rdma and a buffer's ext.rdma).
//
// Wire format (JSON, see rdma_transport.cpp for who sends what and why):
//   connect request  {"op":"connect","from":NAME,"inc":INC,"to_inc":INC,"lnic":S,"rnic":S,
//                     "lid":L,"gid":HEX32,"mtu":M,"qps":[{"qpn":Q,"psn":P},...]}
//   connect reply    {"lid":L,"gid":HEX32,"mtu":M,"qps":[{"qpn":Q,"psn":P},...]}
//   keys request     {"op":"keys","from":NAME,"to_inc":INC,"addr":A}
//   keys reply       {"addr":BUFFER_ADDR,"len":BUFFER_LEN,"rkeys":[K,...]}
//   transports.rdma  {"fabric":S,"nics":[{"name":S,"lid":L,"gid":HEX32,"mtu":M},...]}
//   buffer ext.rdma  {"rkeys":[K,...]}, and for a buffer registered as several regions (a NIC's
//                    max_mr_size, or rdma_max_mr_size, below its length) also
//                    "region":R,"more":[[K,...],...]: region i>0 covers [addr+i*R, addr+(i+1)*R)
//                    (the last one ends with the buffer) and has the keys more[i-1]. A peer that
//                    predates regions reads only rkeys: its requests past the first region are
//                    refused by the NIC (remote access error, then MC_ERR_DENIED), never misplaced.
// Every number is range checked here (LID 16 bits, QPN and PSN 24 bits, MTU a power of two in
// 256..4096, QP and NIC counts bounded), so the transport never sees a value hardware would
// reject or misread.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "proto/codec.h"

namespace mc::proto {

constexpr size_t kRdmaMaxQps = 64;           // QPs per endpoint either side accepts
constexpr size_t kRdmaMaxNics = 64;          // NICs one engine may publish
constexpr size_t kRdmaMaxRegions = 1 << 16;  // memory regions of one buffer
constexpr uint64_t kRdmaMinRegion = 4096;    // the smallest region a buffer is cut into

struct RdmaQpInfo {
  uint32_t qpn = 0;
  uint32_t psn = 0;
};

// The address of one port: LID (InfiniBand) and GID (RoCE, or IB with a GRH).
struct RdmaAddr {
  uint16_t lid = 0;
  uint8_t gid[16] = {};
  uint32_t mtu = 0;
};

struct RdmaConnectReq {
  static constexpr const char *kWhat = "rdma connect request";
  std::string from, lnic, rnic;
  uint64_t inc = 0, to_inc = 0;
  RdmaAddr addr;
  std::vector<RdmaQpInfo> qps;
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

struct RdmaConnectReply {
  static constexpr const char *kWhat = "rdma connect reply";
  RdmaAddr addr;
  std::vector<RdmaQpInfo> qps;
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

// Asks the target for the current rkeys of the buffer holding addr: a peer whose cached rkey
// was refused (the target changed the buffer's access, which gives it new keys) refreshes them
// once before failing the request.
struct RdmaKeysReq {
  static constexpr const char *kWhat = "rdma keys request";
  std::string from;
  uint64_t to_inc = 0;
  uint64_t addr = 0;
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

struct RdmaKeysReply {
  static constexpr const char *kWhat = "rdma keys reply";
  uint64_t addr = 0, len = 0;
  std::vector<uint32_t> rkeys;
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

// The "op" of a control request on channel "rdma" ("connect" or "keys"), to pick its codec.
struct RdmaOp {
  static constexpr const char *kWhat = "rdma control request";
  std::string op;
  std::string from;  // when present, for messages
  bool read(Reader &r, const json &root);
};

struct RdmaNicDesc {
  std::string name;
  RdmaAddr addr;
};

struct RdmaFabricDesc {
  static constexpr const char *kWhat = "rdma descriptor";
  std::string fabric;
  std::vector<RdmaNicDesc> nics;
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

struct RdmaBufExt {
  static constexpr const char *kWhat = "rdma buffer keys";
  std::vector<uint32_t> rkeys;              // the first region's, one per NIC
  uint64_t region = 0;                      // 0: one region, the whole buffer
  std::vector<std::vector<uint32_t>> more;  // regions 1.., each as many keys as rkeys
  bool read(Reader &r, const json &root);
  std::string to_json() const;
};

}  // namespace mc::proto
