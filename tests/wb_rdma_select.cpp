// rdma_devices by pattern: globs and !exclusions pick among the devices seen (select_devices),
// the simulated NIC presents named devices (MC_SIM_NIC_NAMES) so an engine can select among
// them and move data over the chosen ones, and a pattern matching nothing fails engine creation
// with the list of devices seen.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc.h"
#include "transport/rdma/nic_select.h"

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

namespace {

const std::vector<std::string> kSeen = {"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3", "irdma0", "bnxt_re1"};

std::vector<std::string> pick(const char *spec) {
  std::vector<std::string> out;
  Status st = rdma::select_devices(spec, kSeen, &out);
  if (!st.ok()) assert_int_equal(st.code(), MC_ERR_NOT_FOUND);
  return out;
}

void test_select(void **) {
  using V = std::vector<std::string>;
  assert_true(pick("mlx5_*,!mlx5_3") == (V{"mlx5_0", "mlx5_1", "mlx5_2"}));
  assert_true(pick("!mlx5_*") == (V{"irdma0", "bnxt_re1"}));
  assert_true(pick("mlx5_[02],irdma?") == (V{"mlx5_0", "mlx5_2", "irdma0"}));
  assert_true(pick("*,!*_re*,!mlx5_1") == (V{"mlx5_0", "mlx5_2", "mlx5_3", "irdma0"}));
  assert_true(pick("mlx5_1") == (V{"mlx5_1"}));
  std::vector<std::string> out;
  Status st = rdma::select_devices("mlx9_*,!mlx5_3", kSeen, &out);
  assert_int_equal(st.code(), MC_ERR_NOT_FOUND);
  assert_true(out.empty());
  for (auto &n : kSeen) assert_non_null(strstr(st.message().c_str(), n.c_str()));
  assert_non_null(strstr(st.message().c_str(), "mlx9_*"));
  st = rdma::select_devices("mlx5_*", {}, &out);
  assert_non_null(strstr(st.message().c_str(), "devices seen: none"));
  assert_true(rdma::is_device_pattern("mlx5_*") && rdma::is_device_pattern("!a"));
  assert_false(rdma::is_device_pattern("mlx5_0,mlx5_1"));
}

mc_status_t create(const char *devices, mc_engine_t **e) {
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  assert_int_equal(mc_config_set(cfg, "transports", "rdma"), MC_OK);
  mc_status_t st = mc_config_set(cfg, "rdma_devices", devices);
  if (st == MC_OK) st = mc_engine_create(cfg, e);
  mc_config_destroy(cfg);
  return st;
}

json rdma_stats(mc_engine_t *e) {
  size_t need = 0;
  mc_engine_stats_json(e, nullptr, 0, &need);
  std::string s(need + 64, '\0');
  assert_int_equal(mc_engine_stats_json(e, s.data(), s.size(), &need), MC_OK);
  s.resize(need - 1);
  return json::parse(s)["rdma"];
}

void test_engine_select(void **) {
  setenv("MC_SIM_NIC_NAMES", "mlx5_0,mlx5_1,mlx5_2,mlx5_3", 1);
  mc_engine_t *a = nullptr, *b = nullptr;
  assert_int_equal(create("sim:mlx5_*,!mlx5_3", &a), MC_OK);
  json devs = rdma_stats(a)["devices"];
  assert_true(devs == json({"mlx5_0", "mlx5_1", "mlx5_2"}));
  assert_int_equal(create("sim:2", &b), MC_OK);
  // Data moves over the chosen NICs (striped over all three).
  size_t len = 3 << 20;
  std::vector<char> l(len), r(len);
  for (size_t i = 0; i < len; i++) l[i] = static_cast<char>(i * 7 + 3);
  assert_int_equal(mc_buffer_register(a, l.data(), len, nullptr), MC_OK);
  assert_int_equal(mc_buffer_register(b, r.data(), len, nullptr), MC_OK);
  mc_segment_t seg;
  assert_int_equal(mc_segment_open(a, mc_engine_name(b), &seg), MC_OK);
  std::vector<mc_request_t> rq;
  for (size_t i = 0; i < 12; i++)
    rq.push_back({MC_WRITE, 0, l.data() + i * (len / 12), seg, reinterpret_cast<uint64_t>(r.data() + i * (len / 12)),
                  len / 12});
  assert_int_equal(mc_transfer(a, rq.data(), rq.size(), 10000), MC_OK);
  assert_int_equal(std::memcmp(l.data(), r.data(), len), 0);
  // The names are taken while a lives; a second engine asking for them is refused.
  mc_engine_t *c = nullptr;
  assert_int_not_equal(create("sim:mlx5_0", &c), MC_OK);
  mc_engine_destroy(a);
  mc_engine_destroy(b);
  // Nothing matches: creation fails naming the pattern and every device seen.
  assert_int_equal(create("sim:mlx9_*,!mlx5_3", &c), MC_ERR_NOT_FOUND);
  const char *why = mc_last_error();
  assert_non_null(strstr(why, "mlx9_*"));
  for (const char *n : {"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"}) assert_non_null(strstr(why, n));
  unsetenv("MC_SIM_NIC_NAMES");
  assert_int_equal(create("sim:mlx5_*", &c), MC_ERR_INVALID_ARG);  // no named NICs to pick from
  assert_non_null(strstr(mc_last_error(), "MC_SIM_NIC_NAMES"));
  // Malformed lists are refused by the key's validator.
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  for (const char *bad : {"mlx5_*,", "!", "mlx5 0", "sim:", "a,,b"})
    assert_int_equal(mc_config_set(cfg, "rdma_devices", bad), MC_ERR_INVALID_ARG);
  for (const char *good : {"mlx5_*,!mlx5_3", "!mlx5_3", "sim:mlx5_[01]", "mlx5_0"})
    assert_int_equal(mc_config_set(cfg, "rdma_devices", good), MC_OK);
  mc_config_destroy(cfg);
}

}  // namespace

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_select),
      cmocka_unit_test(test_engine_select),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
