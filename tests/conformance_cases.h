// The transport conformance suite: the same contract cases against any transport of
// transport_registry() (built in, or a plugin loaded first), driven through the Host interface
// (tests/conformance_host.h) with no engine: exactly-once completion, cancel, failure of a path, rejoin with a new incarnation,
// out-of-range, access rights, spans across buffers. Each runs as "<transport>/<case>"; a
// transport that cannot run a case by design, or is not available here, skips it with the
// reason (counted by cmocka). A new transport is done when it passes the whole list.
// Included by one file of each program that runs it: tests/wb_conformance.cpp (every built-in
// transport) and tools/mc_conformance.cpp (one transport by name, installed).
#pragma once
#include <dirent.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "conformance_host.h"

// cmocka last: it defines macros (fail) that clash with the standard library. It declares a
// volatile-qualified parameter, deprecated in C++20 (g++ 13 warns).
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

using namespace conf;

namespace {

int slack() {
  const char *s = getenv("MC_TEST_SLACK");
  int v = s && *s ? atoi(s) : 1;
  return v > 0 ? v : 1;
}
constexpr uint32_t kTimeoutMs = 1500;  // the transports' timeout of no progress
constexpr size_t kBuf = 4 << 20;      // the target's buffer
// Bound on any batch of a case: the transports' timeout plus room for this loaded machine.
int bound_ms() { return int(kTimeoutMs) * 3 * slack(); }

// A transport whose target is its own host (role kSelf): it serves its own engine only.
bool serves_self(const std::string &name) {
  for (auto &e : transport_registry())
    if (e.name == name) return e.role == TransportEntry::Role::kSelf;
  return false;
}

// One case's world: an initiator host, a target host (the same one for a kSelf transport), the
// transport under test on the initiator and its path to the target. Batches outlive the hosts,
// so a late report lands in live bookkeeping and is counted.
struct Ctx {
  std::string name;
  std::vector<std::unique_ptr<Mem>> mems;
  std::vector<std::unique_ptr<Batch>> batches;
  std::unique_ptr<TestHost> a, b;
  TestHost *target = nullptr;
  Transport *t = nullptr;
  std::shared_ptr<PeerPath> path;
  char *view = nullptr;  // a transport's own segment (file): the mapping batches check against

  ~Ctx() {
    path.reset();
    if (a) a->stop();
    if (b) b->stop();
  }
  // Memory that outlives the hosts (a transport may still hold it until stopped).
  Mem &mem(size_t n) {
    mems.push_back(std::make_unique<Mem>(n));
    assert_non_null(mems.back()->p);
    return *mems.back();
  }
  // A new file of n zero bytes, mapped: the target of a transport that serves file segments.
  Mem &file(size_t n) {
    mems.push_back(std::make_unique<Mem>(n, "/tmp"));
    assert_non_null(mems.back()->p);
    return *mems.back();
  }
  Batch &batch() {
    batches.push_back(std::make_unique<Batch>());
    batches.back()->view = view;
    return *batches.back();
  }
  // The transport's own segment over file f (t->open_uri): the path to it, f its view.
  void open_own(Mem &f) {
    Descriptor d;
    // direct=0: a shared mapping sees the transport's bytes through the page cache.
    std::string uri = t->scheme() + "://" + f.path + "?direct=0";
    assert_int_equal(t->open_uri(uri, &d, &path).code(), MC_OK);
    assert_non_null(path.get());
    assert_int_equal(d.buffers.size(), 1);
    assert_int_equal(d.buffers[0].length, f.len);
    view = f.p;
  }
  // The path to the target's current descriptor; fails the case when there is none.
  void connect() {
    Descriptor d = target->descriptor();
    assert_true(t->reachable(d));
    path = t->connect(d);
    assert_non_null(path.get());
  }
  // Submits and waits for every report; each request must be reported exactly once.
  void run(Batch &bt, bool expect_all_reported = true) {
    t->submit(*path, bt.slices.data(), bt.slices.size());
    bool done = bt.wait(bound_ms());
    if (expect_all_reported) assert_true(done);
    settle();
    assert_true(bt.each_reported_once());
    assert_int_equal(a->extra_reports(), 0);
  }
  // Time for a late report or a late write to show.
  static void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(30 * slack())); }
};

// Starts hosts and the transport; "" when the case can run, else why it cannot here.
std::string setup(Ctx &c, const std::string &name) {
  c.name = name;
  bool avail = false;
  c.a = std::make_unique<TestHost>("127.0.0.1:0", kTimeoutMs);
  assert_int_equal(c.a->start(name, &avail).code(), MC_OK);
  if (!avail) return name + " is not available on this machine (its factory logged why)";
  c.t = c.a->transport(name);
  if (!c.t->scheme().empty()) return "";  // it serves segments of its own: the target is a file
  // The suite's hosts live in this process and register host memory. A transport that moves
  // only device memory (nvlink: CUDA IPC, which a process cannot open from itself) needs a
  // target in another process with GPU buffers, which this suite does not have yet.
  if (!c.t->accepts("cpu", "cpu"))
    return name + " moves no host memory, and this suite has no GPU target in another process yet";
  if (serves_self(name)) {
    c.target = c.a.get();
  } else {
    c.b = std::make_unique<TestHost>("127.0.0.1:0", kTimeoutMs);
    assert_int_equal(c.b->start(name, &avail).code(), MC_OK);
    assert_true(avail);
    c.target = c.b.get();
  }
  return "";
}

// Requests alternating READ and WRITE over local and remote memory of equal size, lengths
// from one byte to 1 MiB; READ sources and WRITE sources hold their pattern, the rest zero.
void mixed(Batch &bt, Mem &local, Mem &remote, uint64_t seed) {
  static const uint64_t lens[] = {1, 100, 4096, 65536 + 7, 300000, 1 << 20, 17, 200000};
  uint64_t off = 0;
  for (size_t i = 0;; i++) {
    uint64_t len = lens[i % (sizeof lens / sizeof lens[0])];
    if (off + len > local.len) break;
    uint32_t op = i % 2 ? MC_WRITE : MC_READ;
    fill(op == MC_READ ? remote.p + off : local.p + off, len, seed + i);
    bt.add(local.p + off, remote.addr(off), len, op, seed + i);
    off += len + 64;  // a gap that must stay untouched
  }
}

// Known deviations from the contract, each a counted skip with its reason until the transport
// is fixed; a listed transport that conforms passes (and its entry should go).
const char *known_deviation(const std::string &transport, const std::string &case_name) {
  struct Dev {
    const char *transport, *case_name, *why;
  };
  // A transport whose refusal is known to differ from the contract, with why; none today (the
  // first entry only keeps the array non-empty and matches nothing).
  static const Dev devs[] = {
      {"", "", ""},
  };
  for (auto &d : devs)
    if (transport == d.transport && case_name == d.case_name) return d.why;
  return nullptr;
}

// ------------------------------------------------------------------------------ cases

// Every slice reported once, after its data is in place; then no byte moves any more. Plain
// slices of 1 B to 1 MiB, then merged ones.
void case_exactly_once(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.mem(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p, remote.len).code(), MC_OK);
  c.connect();
  for (int round = 0; round < 2; round++) {
    Batch &bt = c.batch();
    mixed(bt, local, remote, 1000 * (round + 1));
    c.run(bt);
    assert_int_equal(bt.count_status(MC_OK), bt.reqs.size());
    for (auto &r : bt.reqs) {
      assert_true(r->data_in_place.load());
      // Overwrite what was just moved: the transport must not touch it any more.
      void *dst = r->op == MC_READ ? r->local : reinterpret_cast<void *>(r->remote);
      std::memset(dst, 0xA5, r->len);
    }
    std::vector<char> l(local.p, local.p + local.len), m(remote.p, remote.p + remote.len);
    Ctx::settle();
    assert_memory_equal(l.data(), local.p, local.len);
    assert_memory_equal(m.data(), remote.p, remote.len);
    std::memset(local.p, 0, local.len);
    std::memset(remote.p, 0, remote.len);
  }
  // Merged slices (Slice::count > 1): each of their requests reported once, data in place.
  Batch &m = c.batch();
  for (uint32_t g = 0; g < 8; g++) {
    uint64_t off = g * 262144;
    uint32_t op = g % 2 ? MC_WRITE : MC_READ;
    for (uint32_t k = 0; k < 8; k++)
      fill((op == MC_READ ? remote.p : local.p) + off + k * 4096, 4096, 5000 + g * 8 + k);
    m.add_merged(local.p + off, remote.addr(off), 4096, 8, op, 5000 + g * 8);
  }
  c.run(m);
  assert_int_equal(m.count_status(MC_OK), m.reqs.size());
  for (auto &r : m.reqs) assert_true(r->data_in_place.load());
  assert_int_equal(c.target->pinned(), 0);
}

// A batch canceled before it starts ends CANCELED and moves nothing; one canceled while it
// runs ends with each slice OK or CANCELED and writes no READ data after its report.
void case_cancel(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.mem(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p, remote.len).code(), MC_OK);
  c.connect();
  Batch &before = c.batch();
  for (int i = 0; i < 8; i++) {
    uint64_t off = uint64_t(i) * (kBuf / 8), len = kBuf / 8 - 4096;
    uint32_t op = i % 2 ? MC_WRITE : MC_READ;
    fill(op == MC_READ ? remote.p + off : local.p + off, len, 50 + i);
    before.add(local.p + off, remote.addr(off), len, op, 50 + i);
  }
  std::vector<char> l0(local.p, local.p + local.len), r0(remote.p, remote.p + remote.len);
  before.canceled = true;
  c.run(before);
  assert_int_equal(before.count_status(MC_ERR_CANCELED), before.reqs.size());
  assert_memory_equal(l0.data(), local.p, local.len);
  assert_memory_equal(r0.data(), remote.p, remote.len);

  Batch &during = c.batch();
  std::memset(local.p, 0, local.len);
  for (int i = 0; i < 16; i++) {
    uint64_t off = uint64_t(i) * (kBuf / 16);
    fill(remote.p + off, kBuf / 16, 70 + i);
    during.add(local.p + off, remote.addr(off), kBuf / 16, MC_READ, 70 + i);
  }
  // Canceled from another thread while the submit runs (some transports copy in submit).
  std::thread canceler([&] {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    during.canceled = true;
  });
  c.t->submit(*c.path, during.slices.data(), during.slices.size());
  canceler.join();
  assert_true(during.wait(bound_ms()));
  std::vector<char> l1(local.p, local.p + local.len);
  Ctx::settle();
  assert_true(during.each_reported_once());
  assert_int_equal(during.count_status(MC_OK) + during.count_status(MC_ERR_CANCELED), during.reqs.size());
  for (auto &r : during.reqs)
    if (r->status.load() == MC_OK) assert_true(r->data_in_place.load());
  assert_memory_equal(l1.data(), local.p, local.len);
  print_message("  %zu of %zu READs ended CANCELED\n", during.count_status(MC_ERR_CANCELED), during.reqs.size());
}

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif
// Runs f, which reads or rewrites the target's memory while a WRITE reported FAILED may still
// land its own bytes there (over tcp the target's socket may still hold them after the cut): a
// race the failure contract allows, so under ThreadSanitizer these accesses of the test's are
// hidden from it (it reported them against the target's recv, tcp/fail_path, in a CI-style run).
template <class F>
void touch_landing_memory(F f) {
#if defined(__SANITIZE_THREAD__)
  __tsan_ignore_thread_begin();
#endif
  f();
#if defined(__SANITIZE_THREAD__)
  __tsan_ignore_thread_end();
#endif
}

// The target's memory after a cut, against its copy m taken at the reports: unchanged, except
// that a WRITE reported FAILED may still land its own bytes in its own range. That is the
// failure contract (README: FAILED means the range may be partly written; later requests are
// fenced from it), and over tcp an initiator's cut cannot stop what the target's socket had
// already queued: the reset may reach the target after the initiator reported.
void expect_remote_settled(Batch &bt, const std::vector<char> &m, Mem &remote) {
  std::vector<char> want(m), now;
  touch_landing_memory([&] { now.assign(remote.p, remote.p + remote.len); });
  for (Req *r : bt.reqs) {
    if (r->op != MC_WRITE || r->status.load() == MC_OK) continue;
    uint64_t off = r->remote - remote.addr();
    const char *src = static_cast<const char *>(r->local);
    for (uint64_t i = 0; i < r->len; i++)
      if (now[off + i] == src[i]) want[off + i] = src[i];
  }
  assert_memory_equal(want.data(), now.data(), now.size());
}

// Submits 32 requests of 128 KiB, runs `cut` at once and expects every one reported once
// within the bound, OK or failed, with no byte moving after its report (a failed WRITE's own
// range aside, expect_remote_settled).
void cut_while_running(Ctx &c, Mem &local, Mem &remote, const std::function<void()> &cut) {
  Batch &bt = c.batch();
  for (int i = 0; i < 32; i++) {
    uint64_t off = uint64_t(i) * (kBuf / 32);
    uint32_t op = i % 2 ? MC_WRITE : MC_READ;
    touch_landing_memory([&] { fill(op == MC_READ ? remote.p + off : local.p + off, kBuf / 32, 300 + i); });
    bt.add(local.p + off, remote.addr(off), kBuf / 32, op, 300 + i);
  }
  // Cut from this thread while another submits (some transports copy in submit).
  std::thread submitter([&] { c.t->submit(*c.path, bt.slices.data(), bt.slices.size()); });
  std::this_thread::sleep_for(std::chrono::microseconds(200));
  cut();
  submitter.join();
  assert_true(bt.wait(bound_ms()));
  std::vector<char> l(local.p, local.p + local.len), m;
  touch_landing_memory([&] { m.assign(remote.p, remote.p + remote.len); });
  Ctx::settle();
  assert_true(bt.each_reported_once());
  assert_int_equal(c.a->extra_reports(), 0);
  assert_memory_equal(l.data(), local.p, local.len);
  expect_remote_settled(bt, m, remote);
  size_t ok = bt.count_status(MC_OK);
  for (auto &r : bt.reqs)
    if (r->status.load() == MC_OK) assert_true(r->data_in_place.load());
  print_message("  %zu of %zu ended OK, the rest failed\n", ok, bt.reqs.size());
}

// fail_path ends everything in flight; then the target going away does too.
void case_fail_path(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.mem(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p, remote.len).code(), MC_OK);
  c.connect();
  cut_while_running(c, local, remote, [&] { c.t->fail_path(*c.path, MC_ERR_PEER_DOWN, "conformance: path failed"); });
  std::memset(local.p, 0, local.len);
  touch_landing_memory([&] { std::memset(remote.p, 0, remote.len); });
  c.path.reset();
  c.connect();
  cut_while_running(c, local, remote, [&] { c.target->stop(); });
  // A path to a target that is gone fails what comes after, within the bound.
  Batch &after = c.batch();
  after.add(local.p, remote.addr(), 4096, MC_WRITE, 9);
  c.run(after);
  assert_int_equal(after.count_status(MC_OK), 0);
}

// A target restarted on the same address with another incarnation and the same memory: the old
// path moves nothing into it, a new path works.
void case_rejoin(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.mem(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p, remote.len).code(), MC_OK);
  c.connect();
  Batch &first = c.batch();
  fill(local.p, 65536, 1);
  first.add(local.p, remote.addr(), 65536, MC_WRITE, 1);
  c.run(first);
  assert_int_equal(first.count_status(MC_OK), 1);

  std::string addr = c.b->listen_addr();
  uint64_t old_inc = c.b->incarnation();
  c.b->stop();
  c.b = std::make_unique<TestHost>(addr, kTimeoutMs);
  bool avail = false;
  assert_int_equal(c.b->start(c.name, &avail).code(), MC_OK);
  assert_true(avail);
  assert_true(c.b->incarnation() != old_inc);
  c.target = c.b.get();
  assert_int_equal(c.target->add(remote.p, remote.len).code(), MC_OK);
  std::memset(remote.p, 0, remote.len);

  Batch &stale = c.batch();
  fill(local.p, 65536, 2);
  stale.add(local.p, remote.addr(), 65536, MC_WRITE, 2);
  stale.add(local.p + 65536, remote.addr(65536), 65536, MC_READ, 3);
  fill(remote.p + 65536, 65536, 3);
  c.run(stale);
  assert_int_equal(stale.count_status(MC_OK), 0);
  assert_true(all_zero(remote.p, 65536));
  assert_true(all_zero(local.p + 65536, 65536));

  c.t->fail_path(*c.path, MC_ERR_PEER_DOWN, "conformance: replaced");
  c.path.reset();
  c.connect();
  Batch &fresh = c.batch();
  mixed(fresh, local, remote, 4000);
  c.run(fresh);
  assert_int_equal(fresh.count_status(MC_OK), fresh.reqs.size());
  for (auto &r : fresh.reqs) assert_true(r->data_in_place.load());
}

// Requests reaching past the target's registered buffer (the first half of remote) are
// refused and write nothing, on either side. Returns how many of *total ended OUT_OF_RANGE.
size_t refuse_out_of_range(Ctx &c, Mem &local, Mem &remote, size_t *total) {
  fill(local.p, kBuf, 11);
  fill(remote.p + kBuf, kBuf, 12);
  std::vector<char> tail(remote.p + kBuf, remote.p + 2 * kBuf), src(local.p, local.p + kBuf);
  Batch &bt = c.batch();
  bt.add(local.p, remote.addr(kBuf - 100), 200, MC_WRITE, 11);            // straddles the end
  bt.add(local.p + 4096, remote.addr(kBuf + 4096), 4096, MC_WRITE, 11);   // wholly outside
  bt.add(local.p + 65536, remote.addr(kBuf - 8), 4096, MC_READ, 12);      // straddles the end
  bt.add(local.p + 131072, remote.addr(kBuf + 8192), 4096, MC_READ, 12);  // wholly outside
  c.run(bt);
  size_t exact = 0;
  for (auto &r : bt.reqs) {
    print_message("  %s at +%llu: %s\n", r->op == MC_READ ? "READ" : "WRITE",
                  (unsigned long long)(r->remote - remote.addr()), mc_status_str(r->status.load()));
    assert_int_not_equal(r->status.load(), MC_OK);
    exact += r->status.load() == MC_ERR_OUT_OF_RANGE;
  }
  assert_memory_equal(tail.data(), remote.p + kBuf, kBuf);
  assert_true(all_zero(remote.p + kBuf - 100, 100));
  assert_memory_equal(src.data(), local.p, kBuf);
  assert_int_equal(c.target->pinned(), 0);
  *total = bt.reqs.size();
  return exact;
}

// Out-of-range requests end OUT_OF_RANGE. Refused and nothing written but under another status
// is a failure, unless it is a known deviation of this transport: then a counted skip with its
// reason (no local with a destructor is alive here: skip() leaves by longjmp).
void case_out_of_range(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.mem(2 * kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p, kBuf).code(), MC_OK);  // the second half is not registered
  c.connect();
  size_t total = 0;
  if (refuse_out_of_range(c, local, remote, &total) == total) return;
  const char *why = known_deviation(c.name, "out_of_range");
  if (!why) {
    fail_msg("%s reports a refused out-of-range request with another status than OUT_OF_RANGE", c.name.c_str());
    return;
  }
  print_message("MC-SKIP: known deviation, refused but not as OUT_OF_RANGE: %s/out_of_range: %s\n", c.name.c_str(), why);
  skip();
}

// WRITE to a buffer peers may only read, READ from one they may only write: DENIED, nothing
// moved. Once with the rights in the descriptor the path was made from, once changed after.
void denied_both_ways(Ctx &c, Mem &local, Mem &ro, Mem &wo, const char *when) {
  fill(local.p, kBuf, 21);
  std::memset(ro.p, 0, ro.len);
  fill(wo.p, wo.len, 22);
  std::vector<char> l(local.p, local.p + local.len);
  Batch &bt = c.batch();
  bt.add(local.p, ro.addr(), 65536, MC_WRITE, 21);
  bt.add(local.p + 65536, wo.addr(), 65536, MC_READ, 22);
  c.run(bt);
  for (auto &r : bt.reqs) {
    print_message("  %s %s: %s\n", when, r->op == MC_READ ? "READ of write-only" : "WRITE to read-only",
                  mc_status_str(r->status.load()));
    assert_int_equal(r->status.load(), MC_ERR_DENIED);
  }
  assert_true(all_zero(ro.p, ro.len));
  assert_memory_equal(l.data(), local.p, local.len);
  assert_int_equal(c.target->pinned(), 0);
}

void case_access(Ctx &c) {
  Mem &local = c.mem(kBuf), &ro = c.mem(1 << 20), &wo = c.mem(1 << 20);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(ro.p, ro.len, MC_ACCESS_READ).code(), MC_OK);
  assert_int_equal(c.target->add(wo.p, wo.len, MC_ACCESS_WRITE).code(), MC_OK);
  c.connect();
  denied_both_ways(c, local, ro, wo, "described");
  // The other way round, changed after the path was made: the initiator's view is stale.
  Mem &ro2 = c.mem(1 << 20), &wo2 = c.mem(1 << 20);
  assert_int_equal(c.target->add(ro2.p, ro2.len).code(), MC_OK);
  assert_int_equal(c.target->add(wo2.p, wo2.len).code(), MC_OK);
  c.path.reset();
  c.connect();
  assert_int_equal(c.target->set_access(ro2.p, MC_ACCESS_READ).code(), MC_OK);
  assert_int_equal(c.target->set_access(wo2.p, MC_ACCESS_WRITE).code(), MC_OK);
  denied_both_ways(c, local, ro2, wo2, "changed after connect");
}

// Rights flipped between READ and READ|WRITE while WRITEs run, as fast as the target can: each
// request ends OK (its bytes in place when it is reported: the target's range is cleared before
// each round and every round writes a new pattern) or DENIED. A descriptor that changed under a
// request is the initiator's to refresh, however often it changes: never a transport error.
void case_access_flips(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.mem(1 << 20);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p, remote.len).code(), MC_OK);
  c.connect();
  constexpr int kRounds = 150, kReqs = 8;
  constexpr uint64_t kLen = 4096;
  std::atomic<bool> stop{false};
  std::atomic<int> flips{0}, flip_errors{0};
  std::thread flipper([&] {
    for (int k = 0; !stop.load(); k++) {
      uint32_t acc = k % 2 ? MC_ACCESS_READ | MC_ACCESS_WRITE : MC_ACCESS_READ;
      if (!c.target->set_access(remote.p, acc).ok()) flip_errors++;
      flips++;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  });
  int ok = 0, denied = 0, other = 0, unreported = 0, missing = 0;
  mc_status_t first_other = MC_OK;
  for (int round = 0; round < kRounds; round++) {
    // The previous round is all reported: nothing may touch the target's range any more.
    std::memset(remote.p, 0, kReqs * kLen);
    Batch &bt = c.batch();
    for (int i = 0; i < kReqs; i++) {
      uint64_t seed = 60 + uint64_t(round) * kReqs + i;
      fill(local.p + i * kLen, kLen, seed);
      bt.add(local.p + i * kLen, remote.addr(i * kLen), kLen, MC_WRITE, seed);
    }
    c.t->submit(*c.path, bt.slices.data(), bt.slices.size());
    if (!bt.wait(bound_ms())) unreported++;
    for (auto &r : bt.reqs) {
      mc_status_t st = mc_status_t(r->status.load());
      if (st == MC_OK) ok++, missing += !r->data_in_place.load();
      else if (st == MC_ERR_DENIED) denied++;
      else if (!other++) first_other = st;
    }
  }
  stop = true;
  flipper.join();
  print_message("  %d rights changes: %d WRITEs OK (%d without their bytes), %d DENIED, %d other (first: %s), "
                "%d batches unreported\n",
                flips.load(), ok, missing, denied, other, mc_status_str(first_other), unreported);
  assert_int_equal(flip_errors.load(), 0);
  assert_int_equal(unreported, 0);
  assert_int_equal(missing, 0);
  assert_int_equal(other, 0);
  assert_int_equal(ok + denied, kRounds * kReqs);
  assert_int_equal(c.target->set_access(remote.p, MC_ACCESS_READ | MC_ACCESS_WRITE).code(), MC_OK);
  std::memset(remote.p, 0, kLen);
  fill(local.p, kLen, 59);
  Batch &last = c.batch();
  last.add(local.p, remote.addr(0), kLen, MC_WRITE, 59);
  c.run(last);
  assert_int_equal(last.reqs[0]->status.load(), MC_OK);
  assert_true(last.reqs[0]->data_in_place.load());
  assert_int_equal(c.target->pinned(), 0);
}

// Requests covering two adjacent registered buffers move all their bytes.
void case_spans(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.mem(kBuf);
  const uint64_t mid = kBuf / 2;
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p, mid).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p + mid, mid).code(), MC_OK);
  c.connect();
  Batch &r = c.batch();
  fill(remote.p + mid - 600000, 1 << 20, 32);
  r.add(local.p, remote.addr(mid - 600000), 1 << 20, MC_READ, 32);
  r.add(local.p + (1 << 20) + 4096, remote.addr(mid - 600000), 1 << 20, MC_READ, 32);
  c.run(r);
  Batch &w = c.batch();
  fill(local.p + mid, 300000, 33);
  w.add(local.p + mid, remote.addr(mid - 100000), 300000, MC_WRITE, 33);
  c.run(w);
  Batch &w2 = c.batch();  // overlaps w's range at the target: a batch of its own
  fill(local.p + mid + 400000, 3, 34);
  w2.add(local.p + mid + 400000, remote.addr(mid - 1), 3, MC_WRITE, 34);
  c.run(w2);
  for (Batch *b : {&r, &w, &w2}) {
    for (auto &q : b->reqs) {
      print_message("  %s across the boundary: %s\n", q->op == MC_READ ? "READ" : "WRITE", mc_status_str(q->status.load()));
      assert_int_equal(q->status.load(), MC_OK);
      assert_true(q->data_in_place.load());
    }
  }
  assert_int_equal(c.target->pinned(), 0);
}

// Descriptors open in this process (/proc/self/fd).
int open_fds() {
  int n = 0;
  if (DIR *d = opendir("/proc/self/fd")) {
    while (readdir(d)) n++;
    closedir(d);
  }
  return n;
}

// A peer that goes down: once the engine dropped the path (after fail_path), the transport keeps
// nothing of it: the path object is freed and the descriptors it opened are closed, within a
// bound (a transport may release them from its own threads).
void case_peer_down_cleanup(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.mem(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  assert_int_equal(c.target->add(remote.p, remote.len).code(), MC_OK);
  int before = open_fds();
  c.connect();
  Batch &b = c.batch();
  mixed(b, local, remote, 64);
  c.run(b);
  assert_int_equal(b.count_status(MC_OK), b.reqs.size());
  for (auto &r : b.reqs) assert_true(r->data_in_place.load());
  c.target->stop();
  c.t->fail_path(*c.path, MC_ERR_PEER_DOWN, "conformance: peer down");
  std::weak_ptr<PeerPath> gone = c.path;
  c.path.reset();
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(5000 * slack());
  while ((!gone.expired() || open_fds() > before) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  print_message("  after the peer went down: path %s, fds %d (%d before connecting)\n",
                gone.expired() ? "freed" : "STILL HELD", open_fds(), before);
  assert_true(gone.expired());
  assert_true(open_fds() <= before);
}

// ------------------------------------------------------------------------------ own segments
// A transport that serves segments of its own (a scheme: file://) has no target host: its
// target is a file, read through a shared mapping. The same promises, where they apply.

void own_exactly_once(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.file(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  c.open_own(remote);
  for (int round = 0; round < 2; round++) {
    Batch &bt = c.batch();
    mixed(bt, local, remote, 1000 * (round + 1));
    c.run(bt);
    assert_int_equal(bt.count_status(MC_OK), bt.reqs.size());
    for (auto &r : bt.reqs) {
      assert_true(r->data_in_place.load());
      std::memset(r->op == MC_READ ? static_cast<char *>(r->local) : remote.p + r->remote, 0xA5, r->len);
    }
    std::vector<char> l(local.p, local.p + local.len), m(remote.p, remote.p + remote.len);
    Ctx::settle();
    assert_memory_equal(l.data(), local.p, local.len);
    assert_memory_equal(m.data(), remote.p, remote.len);
    std::memset(local.p, 0, local.len);
    std::memset(remote.p, 0, remote.len);
  }
  Batch &m = c.batch();
  for (uint32_t g = 0; g < 8; g++) {
    uint64_t off = g * 262144;
    uint32_t op = g % 2 ? MC_WRITE : MC_READ;
    for (uint32_t k = 0; k < 8; k++)
      fill((op == MC_READ ? remote.p : local.p) + off + k * 4096, 4096, 5000 + g * 8 + k);
    m.add_merged(local.p + off, remote.addr(off), 4096, 8, op, 5000 + g * 8);
  }
  c.run(m);
  assert_int_equal(m.count_status(MC_OK), m.reqs.size());
  for (auto &r : m.reqs) assert_true(r->data_in_place.load());
}

void own_cancel(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.file(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  c.open_own(remote);
  Batch &before = c.batch();
  for (int i = 0; i < 8; i++) {
    uint64_t off = uint64_t(i) * (kBuf / 8), len = kBuf / 8 - 4096;
    uint32_t op = i % 2 ? MC_WRITE : MC_READ;
    fill(op == MC_READ ? remote.p + off : local.p + off, len, 50 + i);
    before.add(local.p + off, remote.addr(off), len, op, 50 + i);
  }
  std::vector<char> l0(local.p, local.p + local.len), r0(remote.p, remote.p + remote.len);
  before.canceled = true;
  c.run(before);
  assert_int_equal(before.count_status(MC_ERR_CANCELED), before.reqs.size());
  assert_memory_equal(l0.data(), local.p, local.len);
  assert_memory_equal(r0.data(), remote.p, remote.len);
  Batch &during = c.batch();
  std::memset(local.p, 0, local.len);
  for (int i = 0; i < 16; i++) {
    uint64_t off = uint64_t(i) * (kBuf / 16);
    fill(remote.p + off, kBuf / 16, 70 + i);
    during.add(local.p + off, remote.addr(off), kBuf / 16, MC_READ, 70 + i);
  }
  std::thread canceler([&] {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    during.canceled = true;
  });
  c.t->submit(*c.path, during.slices.data(), during.slices.size());
  canceler.join();
  assert_true(during.wait(bound_ms()));
  std::vector<char> l1(local.p, local.p + local.len);
  Ctx::settle();
  assert_true(during.each_reported_once());
  assert_int_equal(during.count_status(MC_OK) + during.count_status(MC_ERR_CANCELED), during.reqs.size());
  for (auto &r : during.reqs)
    if (r->status.load() == MC_OK) assert_true(r->data_in_place.load());
  assert_memory_equal(l1.data(), local.p, local.len);
}

// fail_path ends what is queued or in flight; later submits on the path run again.
void own_fail_path(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.file(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  c.open_own(remote);
  cut_while_running(c, local, remote, [&] { c.t->fail_path(*c.path, MC_ERR_PEER_DOWN, "conformance: path failed"); });
  Batch &after = c.batch();
  fill(local.p, 65536, 9);
  after.add(local.p, remote.addr(), 65536, MC_WRITE, 9);
  c.run(after);
  assert_int_equal(after.count_status(MC_OK), 1);
  assert_true(after.reqs[0]->data_in_place.load());
}

// Past the end of the file: OUT_OF_RANGE, nothing written, the file not grown.
void own_out_of_range(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.file(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  c.open_own(remote);
  fill(local.p, kBuf, 11);
  std::vector<char> src(local.p, local.p + kBuf);
  Batch &bt = c.batch();
  bt.add(local.p, remote.addr(kBuf - 100), 200, MC_WRITE, 11);
  bt.add(local.p + 4096, remote.addr(kBuf + 4096), 4096, MC_WRITE, 11);
  bt.add(local.p + 65536, remote.addr(kBuf - 8), 4096, MC_READ, 12);
  bt.add(local.p + 131072, remote.addr(kBuf + 8192), 4096, MC_READ, 12);
  c.run(bt);
  for (auto &r : bt.reqs) assert_int_equal(r->status.load(), MC_ERR_OUT_OF_RANGE);
  assert_true(all_zero(remote.p, kBuf));
  assert_memory_equal(src.data(), local.p, kBuf);
  struct stat sb {};
  assert_int_equal(::stat(remote.path.c_str(), &sb), 0);
  assert_int_equal(sb.st_size, kBuf);
}

int open_fds();
// The path dropped after fail_path: freed, and the file's descriptors closed, within a bound.
void own_cleanup(Ctx &c) {
  Mem &local = c.mem(kBuf), &remote = c.file(kBuf);
  assert_int_equal(c.a->add(local.p, local.len).code(), MC_OK);
  c.open_own(c.file(4096));  // the transport's own threads and rings start with its first segment
  c.path.reset();
  int before = open_fds();
  c.open_own(remote);
  Batch &b = c.batch();
  mixed(b, local, remote, 64);
  c.run(b);
  assert_int_equal(b.count_status(MC_OK), b.reqs.size());
  c.t->fail_path(*c.path, MC_ERR_PEER_DOWN, "conformance: closed");
  std::weak_ptr<PeerPath> gone = c.path;
  c.path.reset();
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(5000 * slack());
  while ((!gone.expired() || open_fds() > before) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  assert_true(gone.expired());
  assert_true(open_fds() <= before);
}

// ------------------------------------------------------------------------------ the table

struct CaseDef {
  const char *name;
  void (*fn)(Ctx &);
  bool needs_peer;  // a case a transport that serves only its own engine cannot have
  // The case against a transport's own segment (a file), or nullptr with own_skip saying why.
  void (*own)(Ctx &);
  const char *own_skip;
};
const CaseDef kCases[] = {
    {"exactly_once", case_exactly_once, false, own_exactly_once, nullptr},
    {"cancel", case_cancel, false, own_cancel, nullptr},
    {"fail_path", case_fail_path, true, own_fail_path, nullptr},
    {"rejoin", case_rejoin, true, nullptr, "a file has no incarnation: no engine behind it restarts"},
    {"out_of_range", case_out_of_range, false, own_out_of_range, nullptr},
    {"access", case_access, false, nullptr,
     "a file's rights are the file system's (read-only files: tests/test_file.c test_read_only, as a "
     "non-root user)"},
    {"access_flips", case_access_flips, false, nullptr,
     "a file's rights are the file system's: nothing changes them under a request"},
    {"spans", case_spans, false, nullptr, "a file segment is one buffer: there is no boundary to span"},
    {"peer_down_cleanup", case_peer_down_cleanup, true, own_cleanup, nullptr},
};

struct Arg {
  std::string transport;
  const CaseDef *c;
  Ctx *ctx = nullptr;  // the running case's world; ended by the teardown, even after a failure
};

int g_skipped = 0;  // cases of this run that skipped (cmocka counts them but does not return it)

void run_case(void **state) {
  auto *arg = static_cast<Arg *>(*state);
  if (arg->c->needs_peer && serves_self(arg->transport)) {
    print_message("MC-SKIP: a transport that serves only its own engine has no peer path to fail and no "
                  "target that can go away or come back: %s/%s\n",
                  arg->transport.c_str(), arg->c->name);
    g_skipped++;
    skip();
  }
  // cmocka leaves a failing or skipping test by longjmp, past any destructor: the case's world
  // lives on the heap and the teardown ends it (hosts stopped, then batches and memory freed).
  arg->ctx = new Ctx;
  Ctx &c = *arg->ctx;
  bool skipping = false;
  {  // skip() leaves by longjmp: no local with a destructor may be alive then
    std::string why = setup(c, arg->transport);
    if (!why.empty()) print_message("MC-SKIP: %s: %s/%s\n", why.c_str(), arg->transport.c_str(), arg->c->name);
    skipping = !why.empty();
  }
  if (skipping) {
    g_skipped++;
    skip();
  }
  if (!c.t->scheme().empty()) {
    if (!arg->c->own) {
      print_message("MC-SKIP: %s/%s: %s\n", arg->transport.c_str(), arg->c->name, arg->c->own_skip);
      g_skipped++;
      skip();
    }
    arg->c->own(c);
    return;
  }
  arg->c->fn(c);
}

int end_case(void **state) {
  auto *arg = static_cast<Arg *>(*state);
  delete arg->ctx;
  arg->ctx = nullptr;
  return 0;
}

}  // namespace

namespace conf {

struct SuiteResult {
  int cases = 0, failed = 0, skipped = 0;
};

// Runs every case against each of `transports` as one cmocka group named `group` (cmocka prints
// each case and its own summary).
inline SuiteResult run_suite(const char *group, const std::vector<std::string> &transports) {
  std::vector<Arg> args;
  std::vector<std::string> names;
  for (auto &t : transports)
    for (auto &k : kCases) {
      args.push_back({t, &k});
      names.push_back(t + "/" + k.name);
    }
  std::vector<CMUnitTest> tests;
  for (size_t i = 0; i < args.size(); i++)
    tests.push_back({names[i].c_str(), run_case, nullptr, end_case, &args[i]});
  g_skipped = 0;
  SuiteResult r;
  r.cases = static_cast<int>(tests.size());
  r.failed = _cmocka_run_group_tests(group, tests.data(), tests.size(), nullptr, nullptr);
  r.skipped = g_skipped;
  return r;
}

}  // namespace conf
