// The RDMA transport's memory regions cut at the NIC's largest region (max_mr_size, lowered by
// MC_SIM_MAX_MR_SIZE on the simulated NIC or by the rdma_max_mr_size key): a buffer becomes
// several regions with their own keys, requests are cut at region edges on both sides (spans
// 1:1, 1:2, 2:1, 2:2 and many:many, bytes checked, neighbours untouched), the keys travel in the
// descriptor (codec cases), and a peer that goes down leaves no QP, endpoint or region behind.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc.h"
#include "proto/codec.h"
#include "proto/rdma_msg.h"
#include "transport/rdma/nic.h"
#include "transport/rdma/sim_nic.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wvolatile"
#endif
extern "C" {
#include <cmocka.h>
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

using namespace mc;
using namespace mc::rdma;
using nlohmann::json;

namespace {

constexpr size_t kRa = 64 << 10;  // the initiator's regions (its NIC's max_mr_size)
constexpr size_t kRb = 48 << 10;  // the target's regions (rdma_max_mr_size)
constexpr size_t kLen = 256 << 10;

void fill(char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 9)) & 0xff);
}
bool check(const char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != static_cast<char>((i * 131 + seed * 7 + (i >> 9)) & 0xff)) return false;
  return true;
}
bool zero(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

mc_engine_t *engine(const char *max_mr_env, const char *max_mr_key) {
  if (max_mr_env)
    setenv("MC_SIM_MAX_MR_SIZE", max_mr_env, 1);
  else
    unsetenv("MC_SIM_MAX_MR_SIZE");
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "transports", "rdma"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "rdma_devices", "sim"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "heartbeat_ms", "50"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "peer_timeout_ms", "500"), MC_OK);
  if (max_mr_key) assert_int_equal(mc_config_set(cfg, "rdma_max_mr_size", max_mr_key), MC_OK);
  mc_engine_t *e = nullptr;
  mc_status_t st = mc_engine_create(cfg, &e);
  if (st != MC_OK) fprintf(stderr, "engine: %s\n", mc_last_error());
  assert_int_equal(st, MC_OK);
  mc_config_destroy(cfg);
  unsetenv("MC_SIM_MAX_MR_SIZE");
  return e;
}

json rdma_stats(mc_engine_t *e) {
  size_t need = 0;
  mc_engine_stats_json(e, nullptr, 0, &need);
  std::string s(need + 64, '\0');
  assert_int_equal(mc_engine_stats_json(e, s.data(), s.size(), &need), MC_OK);
  s.resize(need - 1);
  return json::parse(s)["rdma"];
}

char *big(size_t n) {
  void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  return static_cast<char *>(p);
}

// The simulated NIC refuses a region above its max_mr_size, as verbs does (EINVAL).
void test_sim_max_mr(void **) {
  setenv("MC_SIM_MAX_MR_SIZE", "64K", 1);
  std::vector<std::unique_ptr<Device>> devs;
  Status st = open_devices("sim", 0, 0, &devs);
  unsetenv("MC_SIM_MAX_MR_SIZE");
  assert_true(st.ok());
  assert_int_equal(devs[0]->max_mr_size(), kRa);
  char *p = big(kRa * 2);
  std::unique_ptr<Mr> m;
  assert_true(devs[0]->reg_mr(p, kRa, kLocalWrite | kRemoteRead, &m).ok());
  m.reset();
  st = devs[0]->reg_mr(p, kRa + 1, kLocalWrite | kRemoteRead, &m);
  assert_false(st.ok());
  assert_non_null(strstr(st.message().c_str(), "max_mr_size"));
  munmap(p, kRa * 2);
  setenv("MC_SIM_MAX_MR_SIZE", "12", 1);
  devs.clear();
  assert_false(open_devices("sim", 0, 0, &devs).ok());
  unsetenv("MC_SIM_MAX_MR_SIZE");
}

struct Span {
  const char *name;
  size_t lo, ro, len;
  uint64_t pieces;  // work requests the span becomes (edges crossed on either side + 1)
};

// One WRITE and one READ of s, bytes checked, the rest of both buffers untouched, and the
// request cut into exactly s.pieces work requests.
void run_span(mc_engine_t *a, mc_engine_t *b, mc_segment_t seg, char *la, char *rb, const Span &s) {
  (void)b;
  std::memset(la, 0, kLen);
  std::memset(rb, 0, kLen);
  fill(la + s.lo, s.len, 1);
  uint64_t before = rdma_stats(a)["wr_posted"].get<uint64_t>();
  mc_request_t w{MC_WRITE, 0, la + s.lo, seg, reinterpret_cast<uint64_t>(rb + s.ro), s.len};
  assert_int_equal(mc_transfer(a, &w, 1, 10000), MC_OK);
  assert_true(check(rb + s.ro, s.len, 1));
  assert_true(zero(rb, s.ro) && zero(rb + s.ro + s.len, kLen - s.ro - s.len));
  assert_int_equal(rdma_stats(a)["wr_posted"].get<uint64_t>() - before, s.pieces);
  std::memset(la, 0, kLen);
  fill(rb + s.ro, s.len, 2);
  mc_request_t r{MC_READ, 0, la + s.lo, seg, reinterpret_cast<uint64_t>(rb + s.ro), s.len};
  assert_int_equal(mc_transfer(a, &r, 1, 10000), MC_OK);
  assert_true(check(la + s.lo, s.len, 2));
  assert_true(zero(la, s.lo) && zero(la + s.lo + s.len, kLen - s.lo - s.len));
  fprintf(stderr, "span %s: %zu bytes, %llu work requests each way\n", s.name, s.len,
          static_cast<unsigned long long>(s.pieces));
}

void test_spans(void **) {
  mc_engine_t *a = engine("64K", nullptr), *b = engine(nullptr, "48K");
  char *la = big(kLen), *rb = big(kLen);
  assert_int_equal(mc_buffer_register(a, la, kLen, nullptr), MC_OK);
  assert_int_equal(mc_buffer_register(b, rb, kLen, nullptr), MC_OK);
  json sa = rdma_stats(a), sb = rdma_stats(b);
  assert_int_equal(sa["mr_region_max"].get<uint64_t>(), kRa);
  assert_int_equal(sb["mr_region_max"].get<uint64_t>(), kRb);
  assert_int_equal(sa["mr_regions"].get<uint64_t>(), (kLen + kRa - 1) / kRa);  // 4
  assert_int_equal(sb["mr_regions"].get<uint64_t>(), (kLen + kRb - 1) / kRb);  // 6, the last 16K
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(a, mc_engine_name(b), &seg), MC_OK);
  mc_segment_info_t info{};
  info.size = sizeof info;
  assert_int_equal(mc_segment_query(a, seg, &info), MC_OK);
  assert_string_equal(info.transport, "rdma");
  const Span spans[] = {
      {"1:1", 1000, 2000, 16 << 10, 1},
      {"1:2", 1000, kRb - (8 << 10), 16 << 10, 2},
      {"2:1", kRa - (8 << 10), 2000, 16 << 10, 2},
      {"2:2 (edges at different offsets)", kRa - (4 << 10), kRb - (12 << 10), 16 << 10, 3},
      {"2:2 (edges at the same offset)", kRa - 100, 2 * kRb - 100, 300, 2},
      // local edges at 64K, 128K, 192K; remote ones at 48K, 96K, 144K, 192K: 7 cuts, none shared.
      {"4:5", 77, 4099, 3 * kRa + 123, 8},
      {"last remote region", kRa, 5 * kRb + 1, kLen - 5 * kRb - 1, 1},
  };
  for (auto &s : spans) run_span(a, b, seg, la, rb, s);
  // Past the end of the last remote region: refused, nothing written.
  std::memset(rb, 0, kLen);
  mc_request_t w{MC_WRITE, 0, la, seg, reinterpret_cast<uint64_t>(rb + kLen - 100), 200};
  assert_int_equal(mc_transfer(a, &w, 1, 10000), MC_ERR_OUT_OF_RANGE);
  assert_true(zero(rb, kLen));
  // Unregistering frees every region.
  assert_int_equal(mc_segment_close(a, seg), MC_OK);
  assert_int_equal(mc_buffer_unregister(b, rb), MC_OK);
  assert_int_equal(rdma_stats(b)["mr_regions"].get<uint64_t>(), 0);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  munmap(la, kLen);
  munmap(rb, kLen);
}

// An access change gives every region new keys; the initiator refreshes the one it was refused
// and the request still completes across the edge.
void test_access_change(void **) {
  mc_engine_t *a = engine("64K", nullptr), *b = engine("64K", nullptr);
  char *la = big(kLen), *rb = big(kLen);
  assert_int_equal(mc_buffer_register(a, la, kLen, nullptr), MC_OK);
  assert_int_equal(mc_buffer_register(b, rb, kLen, nullptr), MC_OK);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(a, mc_engine_name(b), &seg), MC_OK);
  fill(la, kLen, 5);
  mc_request_t w{MC_WRITE, 0, la, seg, reinterpret_cast<uint64_t>(rb), kLen};
  assert_int_equal(mc_transfer(a, &w, 1, 10000), MC_OK);
  assert_int_equal(mc_buffer_set_access(b, rb, MC_ACCESS_READ), MC_OK);
  std::memset(rb, 0, kLen);
  assert_int_not_equal(mc_transfer(a, &w, 1, 10000), MC_OK);  // a WRITE is now refused
  assert_true(zero(rb, kLen));
  fill(rb, kLen, 6);
  std::memset(la, 0, kLen);
  mc_request_t r{MC_READ, 0, la + 10, seg, reinterpret_cast<uint64_t>(rb + 10), kLen - 20};
  assert_int_equal(mc_transfer(a, &r, 1, 10000), MC_OK);
  assert_int_equal(std::memcmp(la + 10, rb + 10, kLen - 20), 0);
  assert_int_equal(rdma_stats(b)["mr_regions"].get<uint64_t>(), 4);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  munmap(la, kLen);
  munmap(rb, kLen);
}

Status decode_ext(const std::string &text, proto::RdmaBufExt *e) {
  return proto::decode(text, "peer", MC_ERR_METADATA, e);
}

// The descriptor's region fields: old form (rkeys only) still reads; new form round-trips;
// malformed ones are refused naming the field.
void test_codec(void **) {
  proto::RdmaBufExt e;
  assert_true(decode_ext(R"({"rkeys":[7,8]})", &e).ok());
  assert_int_equal(e.region, 0);
  assert_true(e.more.empty());
  assert_string_equal(e.to_json().c_str(), R"({"rkeys":[7,8]})");
  proto::RdmaBufExt n;
  n.rkeys = {1, 2};
  n.region = 65536;
  n.more = {{3, 4}, {5, 6}};
  proto::RdmaBufExt back;
  assert_true(decode_ext(n.to_json(), &back).ok());
  assert_int_equal(back.region, 65536);
  assert_true(back.more == n.more);
  const char *bad[] = {
      R"({"rkeys":[1,2],"more":[[3,4]]})",                  // no region
      R"({"rkeys":[1,2],"region":100,"more":[[3,4]]})",     // below 4096
      R"({"rkeys":[1,2],"region":65536,"more":[[3]]})",     // key count
      R"({"rkeys":[1,2],"region":65536,"more":[3,4]})",     // not nested
      R"({"rkeys":[1,2],"region":"x","more":[[3,4]]})",     // type
      R"({"rkeys":[1,2],"region":65536,"more":[[3,-4]]})",  // a negative key
  };
  for (const char *b : bad) {
    proto::RdmaBufExt x;
    Status st = decode_ext(b, &x);
    assert_false(st.ok());
    assert_int_equal(st.code(), MC_ERR_METADATA);
  }
}

bool contains(const std::vector<std::string> &v, const std::string &s) {
  for (auto &x : v)
    if (x == s) return true;
  return false;
}

// A peer that goes down (destroyed: its NIC, QPs and regions vanish from the fabric) is marked
// UNREACHABLE, and the initiator closes its paths to it: no endpoint, no live QP in its stats or
// in its NIC's control memory.
void test_peer_down_cleanup(void **) {
  mc_engine_t *a = engine("64K", nullptr), *b = engine("64K", nullptr);
  char *la = big(kLen), *rb = big(kLen);
  assert_int_equal(mc_buffer_register(a, la, kLen, nullptr), MC_OK);
  assert_int_equal(mc_buffer_register(b, rb, kLen, nullptr), MC_OK);
  std::string anic = rdma_stats(a)["devices"][0].get<std::string>();
  std::string bnic = rdma_stats(b)["devices"][0].get<std::string>();
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(a, mc_engine_name(b), &seg), MC_OK);
  fill(la, kLen, 9);
  mc_request_t w{MC_WRITE, 0, la, seg, reinterpret_cast<uint64_t>(rb), kLen};
  assert_int_equal(mc_transfer(a, &w, 1, 10000), MC_OK);
  json s = rdma_stats(a);
  assert_true(s["qps_live"].get<uint64_t>() > 0);
  assert_true(s["endpoints"].get<uint64_t>() > 0);
  sim::HeapReport hr;
  assert_true(sim::heap_report(anic, &hr));
  assert_true(hr.live_qps > 0);
  mc_engine_destroy(b);
  assert_false(contains(sim::nic_names(), bnic));  // its QPs and regions went with its NIC
  mc_segment_info_t info{};
  info.size = sizeof info;
  for (int i = 0; i < 200; i++) {
    assert_int_equal(mc_segment_query(a, seg, &info), MC_OK);
    if (info.state == MC_SEGMENT_UNREACHABLE && rdma_stats(a)["qps_live"].get<uint64_t>() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  assert_int_equal(info.state, MC_SEGMENT_UNREACHABLE);
  s = rdma_stats(a);
  assert_int_equal(s["qps_live"].get<uint64_t>(), 0);
  assert_int_equal(s["endpoints"].get<uint64_t>(), 0);
  assert_int_equal(s["qps_created"].get<uint64_t>(), s["qps_destroyed"].get<uint64_t>());
  assert_true(s["paths_closed"].get<uint64_t>() > 0);
  assert_true(sim::heap_report(anic, &hr));
  assert_int_equal(hr.live_qps, 0);
  assert_int_equal(hr.stats.used, 0);
  assert_int_equal(s["mr_regions"].get<uint64_t>(), 4);  // its own regions stay
  mc_request_t again{MC_WRITE, 0, la, seg, reinterpret_cast<uint64_t>(rb), 4096};
  assert_int_equal(mc_transfer(a, &again, 1, 10000), MC_ERR_PEER_DOWN);
  mc_engine_destroy(a);
  munmap(la, kLen);
  munmap(rb, kLen);
}

}  // namespace

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sim_max_mr),
      cmocka_unit_test(test_codec),
      cmocka_unit_test(test_spans),
      cmocka_unit_test(test_access_change),
      cmocka_unit_test(test_peer_down_cleanup),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
