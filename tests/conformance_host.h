// A test Host for the transport conformance suite (wb_conformance.cpp): what an engine gives a
// transport, kept small enough to check. It records every completion per request, pins test
// buffers with their access rights, builds descriptors from the transports' describe() and
// forwards control requests to the named transport's handle_control.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "control/listener.h"
#include "proto/descriptor.h"
#include "transport/host.h"
#include "transport/registry.h"
#include "transport/transport.h"
#include "util/net.h"

namespace conf {

using namespace mc;

// The plugin files a program loaded (mc_conformance --plugin): a test host lists them in its
// options, as an engine created with `plugins` does, so their transports create instances.
inline std::vector<std::string> &plugin_files() {
  static std::vector<std::string> v;
  return v;
}

struct Batch;

// One request of a test batch; a Slice's slot points at it (the host casts it back).
struct Req {
  Batch *batch = nullptr;
  void *local = nullptr;
  uint64_t remote = 0;
  uint64_t len = 0;
  uint32_t op = MC_READ;
  uint64_t seed = 0;
  std::atomic<int> reports{0};
  std::atomic<int> status{MC_OK};
  // At its first report with MC_OK: whether the data was already in place (READ: local memory;
  // WRITE: the target's memory, which lives in this process).
  std::atomic<bool> data_in_place{false};
};

// A batch of requests and their slices (one request each, or merged: several adjacent whole
// requests in one slice, their Reqs consecutive as the engine keeps them), with the
// bookkeeping to wait for them.
struct Batch {
  static constexpr size_t kMax = 1024;
  std::unique_ptr<Req[]> store{new Req[kMax]};
  std::vector<Req *> reqs;
  std::vector<Slice> slices;
  std::atomic<bool> canceled{false};
  // A transport's own segment (a file): remote addresses are offsets into this view of it
  // (a shared mapping of the file), where the host checks a WRITE's bytes. nullptr: memory.
  char *view = nullptr;
  std::mutex mu;  // guards reported
  std::condition_variable cv;
  size_t reported = 0;  // requests reported at least once

  Req *next(void *local, uint64_t remote, uint64_t len, uint32_t op, uint64_t seed) {
    if (reqs.size() == kMax) std::abort();  // a case built more requests than a batch holds
    Req *r = &store[reqs.size()];
    r->batch = this;
    r->local = local;
    r->remote = remote;
    r->len = len;
    r->op = op;
    r->seed = seed;
    reqs.push_back(r);
    return r;
  }
  void add(void *local, uint64_t remote, uint64_t len, uint32_t op, uint64_t seed) {
    Req *r = next(local, remote, len, op, seed);
    slices.push_back(Slice{local, remote, len, reinterpret_cast<RequestSlot *>(r), op});
  }
  // k requests of len bytes each, adjacent locally and remotely, as one merged slice; request
  // i's bytes follow the pattern of seed + i.
  void add_merged(char *local, uint64_t remote, uint64_t len, uint32_t k, uint32_t op, uint64_t seed) {
    Req *first = nullptr;
    for (uint32_t i = 0; i < k; i++) {
      Req *r = next(local + i * len, remote + i * len, len, op, seed + i);
      if (!first) first = r;
    }
    slices.push_back(Slice{local, remote, len * k, reinterpret_cast<RequestSlot *>(first), op, k});
  }
  // True when every request was reported within ms.
  bool wait(int ms) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::milliseconds(ms), [&] { return reported == reqs.size(); });
  }
  size_t count_status(mc_status_t st) const {
    size_t n = 0;
    for (auto &r : reqs) n += r->status.load() == st;
    return n;
  }
  bool each_reported_once() const {
    for (auto &r : reqs)
      if (r->reports.load() != 1) return false;
    return true;
  }
};

// The deterministic pattern of a request's bytes.
inline void fill(void *p, size_t n, uint64_t seed) {
  auto *b = static_cast<unsigned char *>(p);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[i] = static_cast<unsigned char>(x);
  }
}
inline bool holds(const void *p, size_t n, uint64_t seed) {
  std::vector<unsigned char> v(n);
  fill(v.data(), n, seed);
  return std::memcmp(p, v.data(), n) == 0;
}
inline bool all_zero(const void *p, size_t n) {
  auto *b = static_cast<const unsigned char *>(p);
  return std::all_of(b, b + n, [](unsigned char c) { return c == 0; });
}

// Anonymous memory, page aligned and zeroed, unmapped when it goes. Or, for a transport that
// serves segments of its own (file://), a new file of n zero bytes mapped shared: addr() is
// then the file offset, and p sees what the transport wrote (through the page cache).
struct Mem {
  explicit Mem(size_t n) : len(n) {
    void *m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p = m == MAP_FAILED ? nullptr : static_cast<char *>(m);
  }
  Mem(size_t n, const char *dir) : len(n) {
    path = std::string(dir) + "/mc-conformance.XXXXXX";
    int fd = ::mkstemp(path.data());
    void *m = MAP_FAILED;
    if (fd >= 0 && ::ftruncate(fd, static_cast<off_t>(n)) == 0)
      m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0) ::close(fd);
    p = m == MAP_FAILED ? nullptr : static_cast<char *>(m);
  }
  ~Mem() {
    if (p) ::munmap(p, len);
    if (!path.empty()) ::unlink(path.c_str());
  }
  Mem(const Mem &) = delete;
  Mem &operator=(const Mem &) = delete;
  uint64_t addr(size_t off = 0) const { return path.empty() ? reinterpret_cast<uint64_t>(p + off) : off; }
  char *p;
  size_t len;
  std::string path;  // the file, or "" for memory
};

class TestHost : public Host, public control::Target {
 public:
  // listen: where the control listener binds ("127.0.0.1:0" for any port).
  TestHost(const std::string &listen, uint32_t timeout_ms) {
    opts_.listen = listen;
    opts_.timeout_ms = timeout_ms;
    opts_.workers = 2;
    opts_.transport_values["rdma_devices"] = "sim";
    opts_.plugins = plugin_files();
    std::random_device rd;
    do incarnation_ = (uint64_t(rd()) << 32) ^ rd();
    while (incarnation_ == 0);
  }
  ~TestHost() override { stop(); }

  // Starts the listener (control channel; tcp data connections), then `name`. *avail false:
  // the factory said `name` is not available on this machine.
  Status start(const std::string &name, bool *avail) {
    *avail = true;
    control::ListenerOptions lo;
    Status ls = parse_host_port(opts_.listen, &lo.listen);
    if (!ls.ok()) return ls;
    lo.timeout_ms = opts_.timeout_ms;
    HostPort bound;
    ls = control::Listener::start(lo, this, &listener_, &bound);
    if (!ls.ok()) return ls;
    tcp_ = bound.str();
    name_ = tcp_;
    for (auto &e : transport_registry())
      if (e.name == name) {
        Status st = create(e);
        if (!st.ok()) return st;
      }
    *avail = transport(name) != nullptr;
    return Status::Ok();
  }
  // Shuts every transport down (the target going away); idempotent.
  // The listener stops first: a peer's control request served while a transport shuts down
  // would reach a transport being torn down (seen as a hang in rdma/fail_path under load: a
  // connect request inside the simulated NIC's freed heap).
  void stop() {
    if (listener_) listener_->shutdown();
    for (auto it = transports_.rbegin(); it != transports_.rend(); ++it) (*it)->shutdown();
    transports_.clear();
  }
  Transport *transport(const std::string &name) const {
    for (auto &t : transports_)
      if (name == t->name()) return t.get();
    return nullptr;
  }

  // Registers [p, p+n) with every transport, as mc_buffer_register does.
  Status add(void *p, uint64_t n, uint32_t access = MC_ACCESS_READ | MC_ACCESS_WRITE) {
    LocalRegion r{reinterpret_cast<uint64_t>(p), n, "cpu", -1, access};
    {
      std::lock_guard<std::mutex> lk(mu_);
      bufs_[r.addr] = {n, access, 0};
      version_++;
    }
    for (auto &t : transports_) {
      Status st = t->on_register(r);
      if (!st.ok()) return st;
    }
    return Status::Ok();
  }
  // Changes a registered buffer's rights, as mc_buffer_set_access does.
  Status set_access(void *p, uint32_t access) {
    uint64_t a = reinterpret_cast<uint64_t>(p);
    LocalRegion r{a, 0, "cpu", -1, access};
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = bufs_.find(a);
      if (it == bufs_.end()) return Err(MC_ERR_INVALID_ARG, "not registered");
      it->second.access = access;
      r.length = it->second.len;
      version_++;
    }
    for (auto &t : transports_) {
      Status st = t->on_access_change(r);
      if (!st.ok()) return st;
    }
    return Status::Ok();
  }
  Descriptor descriptor() {
    Descriptor d;
    d.name = name_;
    d.incarnation = incarnation_;
    d.host_id = host_boot_id();
    d.pid = getpid();
    d.tcp = tcp_;
    {
      std::lock_guard<std::mutex> lk(mu_);
      d.version = version_;
      for (auto &[a, b] : bufs_) d.buffers.push_back({a, b.len, "cpu", {}, b.access});
    }
    d.set_min_access();
    for (auto &t : transports_) t->describe(d);
    return d;
  }
  int64_t pinned() const {
    std::lock_guard<std::mutex> lk(mu_);
    int64_t n = 0;
    for (auto &[a, b] : bufs_) n += b.pins;
    return n;
  }
  int64_t extra_reports() const { return extra_.load(); }
  const std::string &listen_addr() const { return tcp_; }

  // ---- Host
  void complete(const Slice &s, mc_status_t status) override {
    for (uint32_t k = 0; k < s.count; k++) report(reinterpret_cast<Req *>(s.slot) + k, status);
  }
  void complete(const Slice *s, const mc_status_t *st, size_t n) override {
    for (size_t i = 0; i < n; i++) complete(s[i], st[i]);
  }
  bool canceled(const Slice &s) const override {
    return reinterpret_cast<Req *>(s.slot)->batch->canceled.load();
  }
  mc_status_t pin(uint64_t addr, uint64_t len, uint32_t op) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (len == 0 || addr + len < addr) return MC_ERR_OUT_OF_RANGE;
    auto it = bufs_.upper_bound(addr);
    if (it == bufs_.begin()) return MC_ERR_OUT_OF_RANGE;
    --it;
    // The run of adjacent buffers covering [addr, addr+len), and whether each allows op.
    uint32_t need = op == MC_WRITE ? MC_ACCESS_WRITE : MC_ACCESS_READ;
    bool denied = false;
    uint64_t at = addr;
    std::vector<Buf *> run;
    for (auto c = it; at < addr + len; ++c) {
      if (c == bufs_.end() || c->first > at || c->first + c->second.len <= at) return MC_ERR_OUT_OF_RANGE;
      denied |= !(c->second.access & need);
      run.push_back(&c->second);
      at = c->first + c->second.len;
    }
    if (denied) return MC_ERR_DENIED;
    for (Buf *b : run) b->pins++;
    return MC_OK;
  }
  void unpin(uint64_t addr, uint64_t len) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = --bufs_.upper_bound(addr);
    for (auto c = it; c != bufs_.end() && c->first < addr + len; ++c) c->second.pins--;
  }
  std::string descriptor_json() override { return descriptor().to_json(); }
  Status control(const std::string &channel, const std::string &request, std::string *reply) override {
    if (Transport *t = transport(channel)) return t->handle_control(request, reply);
    return Err(MC_ERR_UNSUPPORTED, "no transport \"" + channel + "\" in this test host");
  }
  uint64_t incarnation() const override { return incarnation_; }
  const EngineOptions &options() const override { return opts_; }
  const std::string &engine_name() const override { return name_; }
  bool wait_started() override { return true; }
  std::string descriptor_delta_json(uint64_t, uint64_t) override { return descriptor_json(); }
  void serve_data(std::function<void(Fd fd, std::string readahead)> h) override {
    if (listener_) listener_->set_data_handler(std::move(h));
  }

 private:
  // One request's report: the first sets its status and checks its data; later ones are counted.
  void report(Req *r, mc_status_t status) {
    if (r->reports.fetch_add(1) != 0) {
      extra_++;
      return;
    }
    r->status.store(status);
    if (status == MC_OK) {
      const void *dst = r->op == MC_READ     ? r->local
                        : r->batch->view ? r->batch->view + r->remote
                                         : reinterpret_cast<const void *>(r->remote);
      r->data_in_place.store(holds(dst, r->len, r->seed));
    }
    std::lock_guard<std::mutex> lk(r->batch->mu);
    r->batch->reported++;
    r->batch->cv.notify_all();
  }
  struct Buf {
    uint64_t len;
    uint32_t access;
    int64_t pins;
  };
  Status create(const TransportEntry &e) {
    Status st;
    auto t = e.create(*this, &st);
    if (!st.ok()) return st;
    if (t) transports_.push_back(std::move(t));
    return Status::Ok();
  }

  EngineOptions opts_;
  uint64_t incarnation_ = 0;
  std::string name_ = "conformance", tcp_;
  std::unique_ptr<control::Listener> listener_;
  std::vector<std::unique_ptr<Transport>> transports_;
  mutable std::mutex mu_;  // guards bufs_ and version_
  std::map<uint64_t, Buf> bufs_;
  uint64_t version_ = 1;
  std::atomic<int64_t> extra_{0};
};

}  // namespace conf
