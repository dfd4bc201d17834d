// White-box tests of the transport registry (src/transport/registry.h) and the host interface
// (src/transport/host.h): the table's shape, every transport key validated by Config in one
// place, `transports` taking exactly the registered names, transport keys reaching
// EngineOptions, and a transport created through the registry against a host that is not the
// engine (a transport reaches nothing of the engine but Host).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "transport/registry.h"
#include "util/config.h"

extern "C" {
#include <cmocka.h>
}

namespace {

using mc::TransportEntry;

void table_shape(void **) {
  const auto &reg = mc::transport_registry();
  assert_true(reg.size() >= 2);
  std::set<std::string> names;
  int selves = 0;
  for (size_t i = 0; i < reg.size(); i++) {
    const TransportEntry &e = reg[i];
    assert_false(e.name.empty());
    assert_true(names.insert(e.name).second);  // unique
    assert_true(static_cast<bool>(e.create));
    selves += e.role == TransportEntry::Role::kSelf;
    // Created in order of preference (the listener is the engine's, not a transport's).
    if (i > 0) assert_true(reg[i - 1].preference <= e.preference);
  }
  assert_int_equal(selves, 1);
  std::printf("  registry: %zu transports: %s\n", reg.size(), mc::transport_names().c_str());
}

void keys_validated_in_one_place(void **) {
  std::set<std::string> seen;
  for (auto &k : mc::engine_config_keys()) assert_true(seen.insert(k.key).second);
  size_t tkeys = 0;
  for (auto &e : mc::transport_registry())
    for (auto &k : e.keys) {
      tkeys++;
      assert_true(seen.insert(k.key).second);  // no clash with the engine's or another's keys
      assert_false(k.what.empty());
      assert_false(k.doc.empty());
      // Config knows it, and refuses junk with the form it expects.
      bool listed = false;
      for (auto &n : mc::Config::keys()) listed |= n == k.key;
      assert_true(listed);
      mc::Status st = mc::Config::validate(k.key, "not a value \x01");
      assert_int_equal(st.code(), MC_ERR_INVALID_ARG);
      assert_non_null(std::strstr(st.message().c_str(), k.what.c_str()));
    }
  assert_int_equal(tkeys, mc::transport_config_keys().size());
  assert_true(tkeys > 0);
  // Documented values of transport keys pass (mc.h).
  for (auto [k, v] : {std::pair{"tcp_connections", "3"}, std::pair{"rdma_devices", "sim:2"},
                      std::pair{"rdma_gid_index", "auto"}, std::pair{"rdma_mtu", "1024"}})
    assert_true(mc::Config::validate(k, v).ok());
  assert_false(mc::Config::validate("tcp_connections", "65").ok());
  assert_false(mc::Config::validate("rdma_mtu", "1000").ok());
}

void transports_key_takes_registered_names(void **) {
  std::string all;
  for (auto &e : mc::transport_registry()) {
    assert_true(mc::Config::validate("transports", e.name).ok());
    all += (all.empty() ? "" : ",") + e.name;
  }
  assert_true(mc::Config::validate("transports", all).ok());
  assert_true(mc::Config::validate("transports", "auto").ok());
  mc::Status st = mc::Config::validate("transports", "carrier-pigeon");
  assert_int_equal(st.code(), MC_ERR_INVALID_ARG);
  for (auto &e : mc::transport_registry()) assert_non_null(std::strstr(st.message().c_str(), e.name.c_str()));
  assert_false(mc::Config::validate("transports", "tcp,,shm").ok());
}

void transport_values_reach_options(void **) {
  mc::Config cfg;
  assert_true(cfg.set("tcp_connections", "7").ok());
  assert_true(cfg.set("rdma_mtu", "1024").ok());
  assert_false(cfg.set("rdma_mtu", "17").ok());  // refused: the earlier value stays
  mc::EngineOptions o;
  assert_true(mc::resolve_options(cfg, &o).ok());
  assert_string_equal(o.value("tcp_connections").c_str(), "7");
  assert_string_equal(o.value("rdma_mtu").c_str(), "1024");
  if (!std::getenv("MC_RDMA_PORT")) assert_true(o.value("rdma_port").empty());
  for (auto &[k, v] : o.transport_values) {
    bool known = false;
    for (auto &tk : mc::transport_config_keys()) known |= tk.key == k;
    assert_true(known);
  }
}

// A host that is not the engine: counts completions, pins everything.
class FakeHost : public mc::Host {
 public:
  void complete(const mc::Slice &s, mc_status_t st) override {
    std::lock_guard<std::mutex> lk(mu);
    done.push_back({s.slot, st});
    cv.notify_all();
  }
  void complete(const mc::Slice *s, const mc_status_t *st, size_t n) override {
    for (size_t i = 0; i < n; i++) complete(s[i], st[i]);
  }
  bool canceled(const mc::Slice &) const override { return cancel; }
  mc_status_t pin(uint64_t, uint64_t, uint32_t) override {
    pins++;
    return deny ? MC_ERR_DENIED : MC_OK;
  }
  void unpin(uint64_t, uint64_t) override { unpins++; }
  std::string descriptor_json() override { return "{}"; }
  mc::Status control(const std::string &, const std::string &, std::string *) override {
    return mc::Err(MC_ERR_UNSUPPORTED, "none");
  }
  uint64_t incarnation() const override { return 42; }
  const mc::EngineOptions &options() const override { return opts; }
  const std::string &engine_name() const override { return name; }

  bool wait_for(size_t n) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(5), [&] { return done.size() >= n; });
  }
  mc::EngineOptions opts;
  std::string name = "fake";
  bool cancel = false, deny = false;
  int pins = 0, unpins = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<mc::RequestSlot *, mc_status_t>> done;
};

// The self transport, made through its registry entry against FakeHost: each slice completes
// exactly once through the host, with the data moved; a denied pin and a canceled batch end
// their slices with the matching status and move nothing.
void self_transport_through_host(void **) {
  const TransportEntry *self = nullptr;
  const auto reg = mc::transport_registry();  // a snapshot by value: keep it while self is used
  for (auto &e : reg)
    if (e.role == TransportEntry::Role::kSelf) self = &e;
  assert_non_null(self);
  FakeHost h;
  h.opts.workers = 2;
  mc::Status st;
  auto t = self->create(h, &st);
  assert_true(st.ok());
  assert_non_null(t.get());
  mc::Descriptor d;
  auto path = t->connect(d);
  assert_non_null(path.get());
  std::vector<char> src(256 * 1024, 7), dst(256 * 1024, 0);
  int tags[3];
  auto slot = [&](int i) { return reinterpret_cast<mc::RequestSlot *>(&tags[i]); };
  // A small slice (copied by the submitter) and a large one (by a worker).
  mc::Slice s[2] = {{dst.data(), reinterpret_cast<uint64_t>(src.data()), 100, slot(0), MC_READ},
                    {dst.data() + 1024, reinterpret_cast<uint64_t>(src.data() + 1024), 200 * 1024, slot(1), MC_READ}};
  t->submit(*path, s, 2);
  assert_true(h.wait_for(2));
  assert_int_equal(h.done.size(), 2);
  for (auto &[sl, code] : h.done) assert_int_equal(code, MC_OK);
  assert_int_equal(dst[99], 7);
  assert_int_equal(dst[100], 0);
  assert_int_equal(dst[1024 + 200 * 1024 - 1], 7);
  assert_int_equal(h.pins, h.unpins);
  h.deny = true;
  mc::Slice denied = {dst.data() + 500, reinterpret_cast<uint64_t>(src.data()), 10, slot(2), MC_WRITE};
  t->submit(*path, &denied, 1);
  assert_true(h.wait_for(3));
  assert_int_equal(h.done[2].second, MC_ERR_DENIED);
  h.cancel = true;
  h.deny = false;
  std::memset(dst.data(), 0, 16);
  mc::Slice c = {dst.data(), reinterpret_cast<uint64_t>(src.data()), 16, slot(0), MC_READ};
  t->submit(*path, &c, 1);
  assert_true(h.wait_for(4));
  assert_int_equal(h.done[3].second, MC_ERR_CANCELED);
  assert_int_equal(dst[0], 0);
  t->shutdown();
  assert_int_equal(h.done.size(), 4);  // nothing reported twice
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(table_shape),
      cmocka_unit_test(keys_validated_in_one_place),
      cmocka_unit_test(transports_key_takes_registered_names),
      cmocka_unit_test(transport_values_reach_options),
      cmocka_unit_test(self_transport_through_host),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
