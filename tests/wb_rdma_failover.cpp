// RDMA -> TCP failover: engines joined by rdma (simulated NICs) and tcp move data while the
// initiator's NICs are killed and revived under traffic. With every NIC down, new requests and
// the slices that were in flight go over tcp (failover_requests, failover_slices, the rdma
// transport's handed_over); once a NIC is back, rdma carries again. Every transfer completes and
// every byte is checked, both directions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc.h"
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

namespace {

mc_engine_t *create(const char *devices, const char *timeout_ms = nullptr) {
  mc_config_t *cfg;
  assert_int_equal(mc_config_create(&cfg), MC_OK);
  if (timeout_ms) assert_int_equal(mc_config_set(cfg, "timeout_ms", timeout_ms), MC_OK);
  assert_int_equal(mc_config_set(cfg, "metrics_listen", "127.0.0.1:0"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "transports", "rdma,tcp"), MC_OK);
  assert_int_equal(mc_config_set(cfg, "rdma_devices", devices), MC_OK);
  mc_engine_t *e = nullptr;
  assert_int_equal(mc_engine_create(cfg, &e), MC_OK);
  mc_config_destroy(cfg);
  return e;
}

json stats(mc_engine_t *e) {
  size_t need = 0;
  mc_engine_stats_json(e, nullptr, 0, &need);
  std::string s(need + 256, '\0');
  assert_int_equal(mc_engine_stats_json(e, s.data(), s.size(), &need), MC_OK);
  s.resize(need - 1);
  return json::parse(s);
}

uint64_t rdma_bytes(mc_engine_t *e) {
  uint64_t b = 0;
  json nb = stats(e)["rdma"]["nic_bytes"];
  for (auto &[n, v] : nb.items()) b += v.get<uint64_t>();
  return b;
}

// The value of the sample NAME (no labels) on the engine's GET /metrics page.
uint64_t metric(mc_engine_t *e, const char *name) {
  std::string listen = stats(e)["metrics"]["listen"].get<std::string>();
  int port = std::atoi(listen.substr(listen.rfind(':') + 1).c_str());
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
  const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
  assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
  std::string page;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) page.append(buf, static_cast<size_t>(n));
  close(fd);
  std::string key = std::string("\n") + name + " ";
  size_t at = page.find(key);
  if (at == std::string::npos) fail_msg("%s not on the metrics page", name);
  return std::strtoull(page.c_str() + at + key.size(), nullptr, 10);
}

constexpr size_t kLen = 4 << 20, kReqs = 32;

struct Traffic {
  mc_engine_t *a, *b;
  mc_segment_t seg;
  std::vector<char> src, back, dst;
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0}, bad{0};
  std::string why;

  // One round: WRITE a pattern of this round to b, READ it back, check both.
  bool round(int r) {
    for (size_t i = 0; i < kLen; i++) src[i] = static_cast<char>(i * 31 + r * 7 + (i >> 12));
    std::vector<mc_request_t> rq;
    size_t piece = kLen / kReqs;
    for (int op : {MC_WRITE, MC_READ}) {
      rq.clear();
      char *local = op == MC_WRITE ? src.data() : back.data();
      for (size_t i = 0; i < kReqs; i++)
        rq.push_back({static_cast<uint32_t>(op), 0, local + i * piece, seg,
                      reinterpret_cast<uint64_t>(dst.data() + i * piece), piece});
      mc_status_t st = mc_transfer(a, rq.data(), rq.size(), 20000);
      if (st != MC_OK) {
        why = std::string(op == MC_WRITE ? "WRITE" : "READ") + " failed: " + mc_last_error();
        return false;
      }
    }
    if (std::memcmp(src.data(), dst.data(), kLen) != 0) return why = "WRITE bytes differ", false;
    if (std::memcmp(src.data(), back.data(), kLen) != 0) return why = "READ bytes differ", false;
    return true;
  }
  void run() {
    for (int r = 1; !stop.load(); r++) {
      if (!round(r)) {
        bad++;
        return;
      }
      rounds++;
    }
  }
};

// Waits (bounded) until the traffic thread completed n more rounds.
void wait_rounds(Traffic &t, int n) {
  int until = t.rounds.load() + n;
  for (int i = 0; i < 2000 && t.rounds.load() < until && !t.bad.load(); i++) usleep(5000);
}

void start(Traffic &t) {
  t.src.resize(kLen);
  t.back.resize(kLen);
  t.dst.resize(kLen);
  assert_int_equal(mc_buffer_register(t.a, t.src.data(), kLen, nullptr), MC_OK);
  assert_int_equal(mc_buffer_register(t.a, t.back.data(), kLen, nullptr), MC_OK);
  assert_int_equal(mc_buffer_register(t.b, t.dst.data(), kLen, nullptr), MC_OK);
  assert_int_equal(mc_segment_open(t.a, mc_engine_name(t.b), &t.seg), MC_OK);
}

// Stops the traffic; every round completed and checked, none failed; the engine's counters.
json stop(Traffic &t, std::thread &th) {
  t.stop = true;
  th.join();
  if (t.bad.load()) fail_msg("%s", t.why.c_str());
  json s = stats(t.a);
  assert_int_equal(s["requests_failed"].get<uint64_t>(), 0);
  // The failover counters are served on /metrics too, with the values the stats report.
  assert_int_equal(metric(t.a, "mc_failover_requests_total"), s["failover_requests"].get<uint64_t>());
  assert_int_equal(metric(t.a, "mc_failover_slices_total"), s["failover_slices"].get<uint64_t>());
  fprintf(stderr, "rounds %d, failover_requests %llu, failover_slices %llu, handed_over %llu\n", t.rounds.load(),
          (unsigned long long)s["failover_requests"].get<uint64_t>(),
          (unsigned long long)s["failover_slices"].get<uint64_t>(),
          (unsigned long long)s["rdma"]["handed_over"].get<uint64_t>());
  mc_segment_close(t.a, t.seg);
  mc_engine_destroy(t.a);
  mc_engine_destroy(t.b);
  return s;
}

void test_failover_under_traffic(void **) {
  setenv("MC_SIM_NIC_NAMES", "fo_0,fo_1", 1);
  Traffic t;
  t.a = create("sim:fo_*");
  t.b = create("sim:2");
  start(t);
  std::thread th([&] { t.run(); });
  wait_rounds(t, 2);
  if (t.bad.load()) stop(t, th);
  uint64_t before = rdma_bytes(t.a);
  if (before == 0) fprintf(stderr, "%s\n", stats(t.a).dump().c_str());
  assert_true(before > 0);  // rdma carries at first
  // One NIC down: the other carries; both down: tcp; back: rdma again. Twice.
  for (int cycle = 0; cycle < 2; cycle++) {
    assert_true(rdma::sim::kill_nic("fo_0"));
    wait_rounds(t, 2);
    assert_true(rdma::sim::kill_nic("fo_1"));
    wait_rounds(t, 3);
    uint64_t down = rdma_bytes(t.a);
    wait_rounds(t, 3);
    assert_int_equal(rdma_bytes(t.a), down);  // nothing over rdma while every NIC is down
    assert_true(rdma::sim::revive_nic("fo_0"));
    assert_true(rdma::sim::revive_nic("fo_1"));
    for (int i = 0; i < 400 && rdma_bytes(t.a) == down && !t.bad.load(); i++) usleep(5000);
    assert_true(rdma_bytes(t.a) > down);  // back on rdma
    wait_rounds(t, 2);
  }
  json s = stop(t, th);
  assert_true(s["failover_requests"].get<uint64_t>() > 0);
  unsetenv("MC_SIM_NIC_NAMES");
}

// The peer's NICs die instead: our QPs time out (ACK retries), its NICs refuse new connections
// and back off, and with no peer NIC left the work goes over tcp; back on rdma once they return.
void test_peer_nics_die(void **) {
  setenv("MC_SIM_NIC_NAMES", "fp_a0,fp_a1,fp_b0,fp_b1", 1);
  Traffic t;
  t.a = create("sim:fp_a*", "1000");
  t.b = create("sim:fp_b*", "1000");
  start(t);
  std::thread th([&] { t.run(); });
  wait_rounds(t, 2);
  if (t.bad.load()) stop(t, th);
  assert_true(rdma::sim::kill_nic("fp_b0"));
  assert_true(rdma::sim::kill_nic("fp_b1"));
  json s0 = stats(t.a);
  for (int i = 0; i < 1000 && !t.bad.load(); i++) {
    json s1 = stats(t.a);
    if (s1["failover_requests"].get<uint64_t>() + s1["failover_slices"].get<uint64_t>() >
        s0["failover_requests"].get<uint64_t>() + s0["failover_slices"].get<uint64_t>())
      break;
    usleep(5000);
  }
  wait_rounds(t, 3);  // over tcp
  uint64_t down = rdma_bytes(t.a);
  assert_true(rdma::sim::revive_nic("fp_b0"));
  assert_true(rdma::sim::revive_nic("fp_b1"));
  for (int i = 0; i < 600 && rdma_bytes(t.a) == down && !t.bad.load(); i++) usleep(5000);
  assert_true(rdma_bytes(t.a) > down);  // back on rdma
  wait_rounds(t, 2);
  json s = stop(t, th);
  assert_true(s["failover_requests"].get<uint64_t>() + s["failover_slices"].get<uint64_t>() > 0);
  unsetenv("MC_SIM_NIC_NAMES");
}

}  // namespace

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_failover_under_traffic),
      cmocka_unit_test(test_peer_nics_die),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
