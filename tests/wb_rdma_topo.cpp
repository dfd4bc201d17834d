// NIC choice by topology (transport/rdma/nic_topo.h): against a fake sysfs tree built here
// (MC_SYSFS_ROOT), a buffer's transfers go over the NICs nearest its GPU or NUMA node - under
// one PCIe switch, then one host bridge, then one NUMA node - spread over equally near ones;
// rdma_affinity pins them; a near NIC that goes down leaves its work to the far ones.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc.h"
#include "transport/rdma/nic_topo.h"
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
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string g_root;

// A PCI device at path (below devices/) on NUMA node numa.
void add_dev(const std::string &path, int numa) {
  fs::create_directories(g_root + "/devices/" + path);
  std::ofstream(g_root + "/devices/" + path + "/numa_node") << numa << "\n";
  std::string bdf = path.substr(path.rfind('/') + 1);
  fs::create_directories(g_root + "/bus/pci/devices");
  fs::create_symlink(g_root + "/devices/" + path, g_root + "/bus/pci/devices/" + bdf);
}

void add_nic(const std::string &name, const std::string &path, int numa) {
  add_dev(path, numa);
  fs::create_directories(g_root + "/class/infiniband/" + name);
  fs::create_symlink("../../../devices/" + path, g_root + "/class/infiniband/" + name + "/device");
}

// Two host bridges. Under pci0000:00, one switch holds GPU 0 and NICs mlx5_0 and mlx5_2 (the
// near ones); mlx5_1 and GPU 1 hang off pci0000:80 (NUMA 1); mlx5_3 is on NUMA 0 under a third
// host bridge.
int setup(void **) {
  char tmpl[] = "/tmp/mc_sysfs_XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  g_root = tmpl;
  const std::string sw = "pci0000:00/0000:00:01.0/0000:01:00.0/";
  add_dev(sw + "0000:02:00.0/0000:03:00.0", 0);  // GPU 0
  add_nic("mlx5_0", sw + "0000:02:01.0/0000:04:00.0", 0);
  add_nic("mlx5_1", "pci0000:80/0000:80:01.0/0000:81:00.0", 1);
  add_nic("mlx5_2", sw + "0000:02:02.0/0000:05:00.0", 0);
  add_nic("mlx5_3", "pci0000:40/0000:40:01.0/0000:41:00.0", 0);
  add_dev("pci0000:80/0000:80:02.0/0000:82:00.0", 1);  // GPU 1
  setenv("MC_SYSFS_ROOT", g_root.c_str(), 1);
  setenv("MC_SIM_GPU_PCI", "0000:03:00.0,0000:82:00.0", 1);
  return 0;
}

int teardown(void **) {
  fs::remove_all(g_root);
  unsetenv("MC_SYSFS_ROOT");
  unsetenv("MC_SIM_GPU_PCI");
  return 0;
}

std::vector<rdma::Place> places(std::vector<std::string> names) {
  std::vector<rdma::Place> v;
  for (auto &n : names) v.push_back(rdma::nic_place(n));
  return v;
}

void test_nearest(void **) {
  auto all = places({"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"});
  assert_int_equal(all[0].numa, 0);
  assert_int_equal(all[1].numa, 1);
  assert_int_equal(all[0].pci.size(), 5);
  auto gpu0 = rdma::memory_place("cuda:0"), gpu1 = rdma::memory_place("cuda:1");
  assert_int_equal(rdma::distance(gpu0, all[0]), 0);  // one switch
  assert_int_equal(rdma::distance(gpu0, all[3]), 2);  // one NUMA node only
  assert_int_equal(rdma::distance(gpu0, all[1]), 3);
  assert_int_equal(rdma::distance(gpu1, all[1]), 1);  // one host bridge
  // Equally near NICs share the work; the nearest class wins.
  assert_int_equal(rdma::nearest(gpu0, all), 0b0101);
  assert_int_equal(rdma::nearest(gpu1, all), 0b0010);
  assert_int_equal(rdma::nearest(rdma::memory_place("cpu:0"), all), 0b1101);
  assert_int_equal(rdma::nearest(rdma::memory_place("cpu:1"), all), 0b0010);
  // A machine with a near and a far NIC: the near one only.
  assert_int_equal(rdma::nearest(gpu0, places({"mlx5_1", "mlx5_0"})), 0b10);
  // Nothing known: no preference.
  assert_int_equal(rdma::nearest(rdma::memory_place("cpu"), all), 0);
  assert_int_equal(rdma::nearest(rdma::memory_place("cuda:7"), all), 0);
  assert_int_equal(rdma::nearest(gpu0, places({"mcsim1", "mcsim2"})), 0);
}

void test_parse_affinity(void **) {
  std::map<std::string, std::vector<std::string>> m;
  assert_true(rdma::parse_affinity("cuda:0=mlx5_0,mlx5_1;cuda:1=mlx5_2;cpu:1=mlx5_3", &m));
  assert_int_equal(m.size(), 3);
  assert_true(m["cuda:0"] == (std::vector<std::string>{"mlx5_0", "mlx5_1"}));
  assert_true(rdma::parse_affinity("", &m) && m.empty());
  for (const char *bad : {"cuda:0", "cuda:0=", "cuda:0=a,", "cuda:0=a;", "gpu:0=a", "cuda:0=a;cuda:0=b",
                          "cuda:x=a", "cpu=a", "cuda:0=a b", ";cuda:0=a"})
    assert_false(rdma::parse_affinity(bad, &m));
}

mc_engine_t *create(const char *devices, const char *affinity, mc_status_t want = MC_OK,
                    const char *reg_threads = nullptr) {
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  if (reg_threads) assert_int_equal(mc_config_set(cfg, "rdma_register_threads", reg_threads), MC_OK);
  assert_int_equal(mc_config_set(cfg, "transports", "rdma"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "rdma_devices", devices), MC_OK);
  if (affinity) assert_int_equal(mc_config_set(cfg, "rdma_affinity", affinity), MC_OK);
  mc_engine_t *e = nullptr;
  mc_status_t st = mc_engine_create(cfg, &e);
  if (st != want) fprintf(stderr, "engine_create: %s\n", mc_last_error());
  assert_int_equal(st, want);
  mc_config_destroy(cfg);
  return e;
}

json nic_bytes(mc_engine_t *e) {
  size_t need = 0;
  mc_engine_stats_json(e, nullptr, 0, &need);
  std::string s(need + 64, '\0');
  assert_int_equal(mc_engine_stats_json(e, s.data(), s.size(), &need), MC_OK);
  s.resize(need - 1);
  return json::parse(s)["rdma"]["nic_bytes"];
}

// WRITEs len bytes of a buffer registered at location to b, checks them; the bytes each of a's
// NICs carried meanwhile.
std::vector<uint64_t> moved(mc_engine_t *a, mc_engine_t *b, const char *location, size_t len) {
  std::vector<char> l(len), r(len);
  for (size_t i = 0; i < len; i++) l[i] = static_cast<char>(i * 13 + len);
  assert_int_equal(mc_buffer_register(a, l.data(), len, location), MC_OK);
  assert_int_equal(mc_buffer_register(b, r.data(), len, nullptr), MC_OK);
  json before = nic_bytes(a);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(a, mc_engine_name(b), &seg), MC_OK);
  std::vector<mc_request_t> rq;
  size_t piece = len / 16;
  for (size_t i = 0; i < 16; i++)
    rq.push_back({MC_WRITE, 0, l.data() + i * piece, seg, reinterpret_cast<uint64_t>(r.data() + i * piece), piece});
  mc_status_t st = mc_transfer(a, rq.data(), rq.size(), 10000);
  if (st != MC_OK) fprintf(stderr, "transfer: %s\n", mc_last_error());
  assert_int_equal(st, MC_OK);
  assert_int_equal(std::memcmp(l.data(), r.data(), len), 0);
  json after = nic_bytes(a);
  std::vector<uint64_t> v;
  for (const char *n : {"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"})
    v.push_back(after[n].get<uint64_t>() - before[n].get<uint64_t>());
  mc_segment_close(a, seg);
  assert_int_equal(mc_buffer_unregister(a, l.data()), MC_OK);
  assert_int_equal(mc_buffer_unregister(b, r.data()), MC_OK);
  return v;
}

void test_engine_near(void **) {
  setenv("MC_SIM_NIC_NAMES", "mlx5_0,mlx5_1,mlx5_2,mlx5_3", 1);
  mc_engine_t *a = create("sim:mlx5_*", nullptr), *b = create("sim:2", nullptr);
  const size_t len = 8 << 20;  // 8 slices of 1 MiB (the 16 requests merge in pairs)
  auto v = moved(a, b, "cpu:1", len);  // NUMA 1: mlx5_1 alone
  assert_true(v == (std::vector<uint64_t>{0, len, 0, 0}));
  v = moved(a, b, "cpu:0", len);  // NUMA 0: spread over mlx5_0, mlx5_2, mlx5_3
  assert_int_equal(v[0] + v[2] + v[3], len);
  assert_int_equal(v[1], 0);
  assert_true(v[0] > 0 && v[2] > 0 && v[3] > 0);
  v = moved(a, b, "cpu", len);  // no preference: all four
  for (auto x : v) assert_true(x > 0);
  // The near NIC goes down: its buffer's work goes to the others, and back when it returns.
  assert_true(rdma::sim::kill_nic("mlx5_1"));
  usleep(100 * 1000);
  v = moved(a, b, "cpu:1", len);
  assert_int_equal(v[1], 0);
  assert_int_equal(v[0] + v[2] + v[3], len);
  assert_true(rdma::sim::revive_nic("mlx5_1"));
  for (int i = 0; i < 100 && moved(a, b, "cpu:1", 4096)[1] == 0; i++) usleep(20 * 1000);
  v = moved(a, b, "cpu:1", len);
  assert_true(v == (std::vector<uint64_t>{0, len, 0, 0}));
  mc_engine_destroy(a);
  // rdma_affinity pins: NUMA 0's buffers over the far mlx5_1 and mlx5_3 only.
  a = create("sim:mlx5_*", "cpu:0=mlx5_1,mlx5_3");
  v = moved(a, b, "cpu:0", len);
  assert_int_equal(v[0] + v[2], 0);
  assert_true(v[1] > 0 && v[3] > 0);
  mc_engine_destroy(a);
  // A pinned NIC the engine does not have fails its creation, naming it.
  create("sim:mlx5_[01]", "cuda:0=mlx5_2", MC_ERR_NOT_FOUND);
  assert_non_null(strstr(mc_last_error(), "mlx5_2"));
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "rdma_affinity", "cuda:0=mlx5_0,"), MC_ERR_INVALID_ARG);
  mc_config_destroy(cfg);
  mc_engine_destroy(b);
  unsetenv("MC_SIM_NIC_NAMES");
}

// Registration on the NICs at once (one thread per NIC, or 3 threads for 4 NICs) or one after
// another gives every NIC its keys: transfers over each NIC move the right bytes.
void test_register_threads(void **) {
  setenv("MC_SIM_NIC_NAMES", "mlx5_0,mlx5_1,mlx5_2,mlx5_3", 1);
  mc_engine_t *b = create("sim:2", nullptr);
  for (const char *th : {"1", "3", "auto"}) {
    mc_engine_t *a = create("sim:mlx5_*", nullptr, MC_OK, th);
    auto v = moved(a, b, "cpu", 8 << 20);
    for (auto x : v) assert_true(x > 0);
    mc_engine_destroy(a);
  }
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  for (const char *bad : {"0", "65", "x"})
    assert_int_equal(mc_config_set(cfg, "rdma_register_threads", bad), MC_ERR_INVALID_ARG);
  mc_config_destroy(cfg);
  mc_engine_destroy(b);
  unsetenv("MC_SIM_NIC_NAMES");
}

}  // namespace

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nearest),
      cmocka_unit_test(test_parse_affinity),
      cmocka_unit_test(test_engine_near),
      cmocka_unit_test(test_register_threads),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
