// The same-host transport.
//
// Every engine listens on an abstract Unix socket ("\0mc-shm-<pid>-<incarnation>") published in
// its descriptor. An initiator on the same host (same boot id) connects, proves it expects the
// target's current incarnation, and receives over SCM_RIGHTS:
//  - the target's control page (a 4 KiB memfd, see CtrlPage), mapped by both sides;
//  - on demand, the memfd behind each buffer the target got from mc_buffer_alloc: the initiator
//    maps it once and from then on every READ/WRITE into it is a memcpy in its own process.
// Buffers the user registered from ordinary memory are reached with cross-memory attach
// (process_vm_readv/writev: one system call per slice) when the kernel's ptrace rules allow it,
// which is checked once at connect; otherwise the engine sends them over TCP.
//
// The control page, the epoch window that makes unregister safe, the socket's admission and
// its one serving thread for all peers, the request connection and the one thread that
// watches every peer's WATCH connection are the same-host stack's, shared with nvlink
// (transport/samehost/: ctrl_page.h says why the page exists). This file keeps the copy engine.
//
// A second connection ("WATCH") stays open and idle: it closes when the target engine is
// destroyed or its process dies, and the initiator then fails everything to that peer at once
// (PEER_DOWN) and tells the engine. Mappings of a dead peer stay valid (memfd), so no SIGBUS.
//
// The data path (submit): slices that continue each other on both sides (the engine's pieces of
// one request, adjacent requests) form runs, and a run is one copy, so that memcpy sees the
// whole size and picks its method. Runs up to kInline are copied on the submitting thread under
// one active window, and the whole call ends with one liveness check (CtrlPage::alive) for its
// WRITEs: no hand-off, no allocation, no system call. Larger runs are cut into parts of about
// kPart. A call with one part copies it itself; with more, the workers take parts from the
// front of the queue while the submitting thread takes its own back from the end, so a request
// never waits for a worker that has no CPU. Runs of kStreamMin and more are copied with
// non-temporal stores.
//
// Messages on the socket: 4-byte little-endian length + text; a reply may carry one fd. Every
// message read from a peer (descriptor entry, admission reply, LIST reply, FD request) is
// decoded only through its codec in proto/samehost_msg.h, which checks types and ranges and
// never throws: a bad one fails that peer's path or requests with the field named.
//
// Admission: an abstract Unix socket can be reached by any process of the host (whatever its
// user), so with an auth_token the socket runs the TCP handshake of proto/wire.h in text form
// (proto/unix_msg.h: unix_hello / unix_admit, shared with nvlink) before it hands over anything
// (control page, memfds):
//   "HELLO <incarnation> <nonce_c hex>" -> "CHALLENGE <nonce_s hex> <proof_s hex>"
//   "AUTH <proof_c hex>"                -> the control page, as without a token
// A refusal is "ERR DENIED <why>". At most kMaxPending connections may be in their handshake,
// each for at most min(timeout_ms, kHandshakeMs) per message (samehost/unix_server.h).
//
// Access (mc_buffer_set_access): LIST carries each buffer's access bits; FD hands a buffer that
// peers may not write as a read-only file (reopened O_RDONLY through /proc/self/fd), which the
// initiator maps PROT_READ, and refuses the memfd of a buffer peers may not read (such buffers
// are reached with cross-memory attach where allowed, else over tcp, where the target checks
// every request). A change bumps the epoch like an
// unregister, so no copy that started under the old rights is still running when it returns.
// Buffers reached with cross-memory attach have no kernel-side guard beyond ptrace's: there the
// initiator's check against the current LIST (under the epoch protocol) is the protection, and
// a process allowed to attach could read or write the target anyway.
#include "transport/shm/shm_transport.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstddef>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "proto/auth.h"
#include "transport/shm/copy.h"
#include "util/spin.h"
#include "util/cpu_crowding.h"
#include "util/share_payoff.h"
#include "util/tsc_clock.h"
#include "util/json_writer.h"
#include "util/log.h"
#include "util/net.h"
#include "util/thread_sums.h"
#include "proto/unix_msg.h"
#include "proto/wire.h"
#include "proto/samehost_msg.h"
#include "transport/samehost/ctrl_page.h"
#include "transport/samehost/epoch_window.h"
#include "transport/samehost/peer_conn.h"
#include "transport/samehost/unix_server.h"
#include "transport/samehost/watch_loop.h"

namespace mc {
namespace {

using nlohmann::json;

constexpr uint64_t kCtrlMagic = 0x4d43534852434c32ull;  // "MCSHRCL2"
constexpr uint64_t kInline =
    256 * 1024;  // runs of slices up to this size are copied on the submitting thread
// A larger run of contiguous slices is cut into parts of about kPart bytes, shared out at run
// time between the submitting thread and the workers that can run beside it.
constexpr uint64_t kPart = 4ull << 20;
// A run that is one slice larger than kInline (a 1 MiB request is one slice by default) is
// split into parts of at least this size, one for the submitting thread and one for each worker
// that can run beside it; the slice ends once, when its last part did.
constexpr uint64_t kSplitMin = 128ull << 10;
// A call of small runs (none over kInline) that add up to this many bytes is shared by halves
// (share_halves) with a worker that watches for work. Measured on the 2-vCPU EPYC VM
// (bench/results/small.txt): 64 KiB x 8 on one block each side, READ 147-155 and WRITE 123-168
// GB/s shared against 90-97 copied alone (interleaved, 3 rounds). Over cross-memory attach
// too: two threads moved 64 KiB x 8 on one block at 13.0-14.5 GB/s against 11.0-12.9 for one
// (EPYC VM, bench/relayout.sh and an interleaved A/B).
constexpr uint64_t kShareSmall = 256ull << 10;
constexpr uint64_t kHalfMin = 16ull << 10;
// Of the calls that would be shared by halves but find no worker watching, one in kPokeEvery
// wakes a worker to watch (watcher_ready); each poke that finds no worker watching by the next
// one doubles that, up to one in kPokeMax (beside busy loops a woken worker only takes a CPU
// from them and the caller, and does not watch: the CPUs are crowded).
constexpr uint32_t kPokeEvery = 16, kPokeMax = 1024;
// A worker that finished a part watches the queue this long before it sleeps: waking a sleeping
// thread costs tens of microseconds on a VM, as long as copying a whole MiB.
constexpr auto kWorkerSpin = std::chrono::microseconds(50);
// With shm_share=always a worker watches this long after work, and every call shared by halves
// that finds none watching wakes one: sharing is wanted even where calls come slowly (a
// sanitizer build, a loaded host).
constexpr auto kAlwaysWatch = std::chrono::microseconds(2000);
// Runs from this size on are copied with non-temporal stores (copy.h): they would push
// everything else out of the caches anyway, and streaming saves reading the destination first.
constexpr uint64_t kStreamMin = 128ull << 20;
constexpr uint32_t kMaxMsg = 64u << 20;

using samehost::CtrlPage;  // ctrl_page.h: the epoch protocol and the alive mutex
using samehost::EpochWindow;

class ShmTransport;

struct RemoteBuf {
  uint64_t addr;
  uint64_t length;
  bool memfd;
  char *map = nullptr;  // our mapping of its memfd, once mapped
  uint32_t access = MC_ACCESS_READ | MC_ACCESS_WRITE;
  // Reached through our mapping of its memfd; a memfd buffer peers may not read is not handed
  // out, so it is reached like plain memory (cross-memory attach), or not at all.
  bool via_map() const { return memfd && (access & MC_ACCESS_READ); }
};

// One peer on this host.
class ShmPeer : public PeerPath, public std::enable_shared_from_this<ShmPeer> {
 public:
  ShmPeer(ShmTransport *t, std::shared_ptr<samehost::WatchLoop> w) : t_(t), watch_loop_(std::move(w)) {}
  ~ShmPeer() override;
  Status open(const Descriptor &d);
  // Re-reads the target's buffer list and epoch.
  Status refresh();
  bool opened_ = false;  // the first LIST is in (set before any other thread sees the peer)
  // Runs slices [0, n) to their end without reporting them: st[i] gets slice i's status. Then
  // report() ends them (one liveness check for all their WRITEs, then Host::complete each).
  void run(const Slice *s, size_t n, mc_status_t *st, bool stream = false);
  void report(const Slice *s, size_t n, mc_status_t *st);
  // Transport::copy_now: one small request that lies in one buffer of the current list, mapped
  // or attachable and allowing op, copied under its own active window; false (nothing copied,
  // nothing counted) for anything else, which run() then settles the careful way.
  bool copy_small(uint32_t op, void *local, uint64_t remote, uint64_t len, mc_status_t *st);
  void report_one(const Slice &x, mc_status_t *st);
  bool cma_ok() const { return cma_ok_; }
  void set_dead(const std::string &why);
  // Whether the target's transport still runs, as seen after the copies that precede the call.
  bool target_alive() const { return ctrl_.target_alive(); }
  std::atomic<bool> dead{false};

 private:
  Status map_buffer(RemoteBuf &b);
  // Copies len bytes between local and the target's [remote, remote+len), which lies in b.
  mc_status_t copy_one(const Slice &s, RemoteBuf &b, uint64_t remote, char *local, uint64_t len);
  // One slice the careful way: maps what it needs, refreshes a stale list, checks coverage and
  // access across adjacent buffers.
  mc_status_t run_one(const Slice &s);
  mc_status_t map_for(const Slice &s);
  bool again_after_change(uint64_t *deadline, mc_status_t *st);
  mc_status_t copy_covered(const Slice &s);
  // The common case: consecutive slices that each lie in one mapped (or attachable) buffer the
  // current list lets us use, copied under one active window; returns how many it ran (st[] set).
  size_t run_window(const Slice *s, size_t n, mc_status_t *st, bool stream);

  ShmTransport *t_;
  std::string name_;
  int pid_ = 0;
  uint64_t incarnation_ = 0;
  std::unique_ptr<samehost::PeerConn> conn_, watch_;  // requests; the idle WATCH connection
  std::shared_ptr<samehost::WatchLoop> watch_loop_;   // the transport's one watching thread
  uint64_t watch_id_ = 0;
  samehost::CtrlView ctrl_;
  bool cma_ok_ = false;
  // bufs_mu_ guards bufs_ and epoch_. Mappings are never unmapped before the peer is dropped,
  // so a copy racing with a refresh never touches an unmapped page.
  std::shared_mutex bufs_mu_;
  std::map<uint64_t, RemoteBuf> bufs_;
  std::vector<std::pair<char *, uint64_t>> maps_;  // every mapping made, for the destructor
  uint64_t epoch_ = 0;
};

class ShmTransport : public Transport {
 public:
  ShmTransport(const ShmOptions &o, Host *t) : target_(t), o_(o) {}
  ~ShmTransport() override { shutdown(); }
  Status start();
  const char *name() const override { return "shm"; }
  bool reachable(const Descriptor &d) override {
    return !d.host_id.empty() && d.host_id == host_boot_id() && d.transports.count("shm");
  }
  Status check_descriptor(const Descriptor &d) override {
    auto e = d.transports.find("shm");
    proto::ShmBlob blob;
    return e == d.transports.end() ? Status::Ok() : proto::decode(e->second, d.name, MC_ERR_METADATA, &blob);
  }
  void describe(Descriptor &d) override;
  Status on_register(const LocalRegion &r) override;
  void on_unregister(const LocalRegion &r) override;
  Status on_access_change(const LocalRegion &r) override;
  std::shared_ptr<PeerPath> connect(const Descriptor &d) override;
  void update(PeerPath &peer, const Descriptor &d) override {
    (void)d;
    static_cast<ShmPeer &>(peer).refresh();
  }
  void submit(PeerPath &peer, Slice *slices, size_t n) override;
  bool copy_now(PeerPath &peer, uint32_t op, void *local, uint64_t remote, uint64_t len,
                mc_status_t *st) override {
    return static_cast<ShmPeer &>(peer).copy_small(op, local, remote, len, st);
  }
  void fail_path(PeerPath &peer, mc_status_t st, const std::string &why) override {
    (void)st;
    static_cast<ShmPeer &>(peer).set_dead(why);
  }
  // A memfd buffer is mapped, which needs read access; plain memory, and a memfd buffer peers
  // may not read, need cross-memory attach (else they go over tcp, where the target checks
  // every request).
  bool usable(PeerPath &peer) override { return !static_cast<ShmPeer &>(peer).dead.load(); }
  bool accepts_buffer(PeerPath &peer, const BufferDesc &remote) const override {
    if (remote.ext.count("shm") && (remote.access & MC_ACCESS_READ)) return true;
    return static_cast<ShmPeer &>(peer).cma_ok();
  }
  void shutdown() override;
  std::string stats_json() override;

  uint32_t timeout_ms() const { return o_.timeout_ms; }
  const std::string &token() const { return o_.auth_token; }
  // Counted by every copying thread in a row of its own (util/thread_sums.h).
  enum Sum : size_t {
    kCopied,
    kCma,
    kSlicesOk,
    kSlicesFailed,
    kCrowdedAlone,
    kPayoffAlone,
    kHalvesShared,
    kHalvesTakenBack,
    kHalvesUnwatched
  };
  ThreadSums<9> sums;
  std::atomic<uint64_t> maps{0};
  Host *target_;  // the engine: completions (ShmPeer reports through it too)
  // The watching thread of all our peers' WATCH connections, made with the first peer.
  std::shared_ptr<samehost::WatchLoop> watch_loop(Status *st);

 private:
  // One request of an admitted same-host connection (samehost::UnixServer::Handler).
  bool handle(const std::string &req, std::string *reply, Fd *fd);
  void list_reply(std::string *reply);
  void fd_reply(uint64_t addr, std::string *reply, Fd *fd);
  void worker();
  void watch_for_work(bool poked);
  // Whether submit shares a call of these slices with the workers now, and whether (and in
  // which size class) payoff_ judges it once shared.
  struct ShareCall {
    bool share = false;
    bool timed = false;
    bool halves = false;  // shared by halves (share_halves), with a watching worker
    int cls = -1;
  };
  ShareCall share_now(const Slice *slices, size_t n);
  // The times of a shared call for payoff_: from its start to the end of its last job (the
  // submitting thread's own share is one more part), and of that thread's own share.
  struct CallClock {
    uint64_t started;
    int cls;
    std::atomic<uint32_t> left;
    std::atomic<uint64_t> mine_ns{0};
    // The CPUs the submitting thread and a worker ran its parts on: one CPU for both means no
    // core was idle for the worker (it ran by taking turns with that thread).
    std::atomic<int> mine_cpu{-1}, helper_cpu{-1};
    CallClock(uint64_t t, int c, uint32_t parts) : started(t), cls(c), left(parts) {}
  };
  // One part of a timed call ended: the last one has payoff_ judge the call.
  void clock_part_done(CallClock &c);
  SharePayoff payoff_;
  AdaptiveSpin worker_spin_{static_cast<uint32_t>(kWorkerSpin.count())};
  // After an epoch bump: waits (bounded) until no peer copy that may have missed it still runs.
  void wait_for_copies(const char *why) { ctrl_.wait_for_copies(o_.timeout_ms, "shm", why); }

  ShmOptions o_;
  std::string sock_name_;
  samehost::CtrlOwner ctrl_;
  samehost::UnixServer server_;
  std::atomic<bool> stopping_{false};
  std::mutex watch_mu_;  // guards watch_loop_
  std::shared_ptr<samehost::WatchLoop> watch_loop_;
  // mu_ guards regions_.
  std::mutex mu_;
  struct Region {
    uint64_t length;
    int fd;           // our dup of its memfd, or -1
    uint32_t access;  // MC_ACCESS_* for peers
  };
  std::map<uint64_t, Region> regions_;
  // Workers for large slices; qmu_ guards queue_ and qstop_.
  std::vector<std::thread> workers_;
  size_t parallel_ = 1;  // workers that can copy at the same time as the submitting thread
  std::mutex qmu_;
  std::condition_variable qcv_;
  // Slices cut into parts that several threads copy (see kSplitMin): each slice
  // ends once, when the last part of the group did, with the first failure of its own parts.
  struct Group {
    std::vector<Slice> orig;
    std::unique_ptr<std::atomic<int32_t>[]> err;  // per slice of orig
    std::atomic<uint32_t> left{0};                // parts still to end
  };
  struct Job {
    std::vector<Slice> s;  // contiguous on both sides: one copy
    bool stream;           // part of a run of kStreamMin or more
    std::shared_ptr<ShmPeer> peer;
    const void *owner;  // the submitting thread, which takes back what no worker took yet
    std::shared_ptr<Group> group = nullptr;      // s are parts of group->orig...
    std::vector<uint32_t> idx = {};              // ...s[k] a part of group->orig[idx[k]]
    std::shared_ptr<CallClock> clock = nullptr;  // a shared call's time, when it is a sample
  };
  // finish_job's work, without the call's clock.
  void run_job(Job &j, std::vector<mc_status_t> &st, bool run, mc_status_t fail);
  // submit's steps (see there).
  void plan_jobs(Slice *slices, size_t n, size_t parts_max, const char *me, std::vector<Job> &jobs,
                 std::vector<Slice> &small);
  void queue_jobs(std::vector<Job> &jobs, ShmPeer &peer, std::vector<mc_status_t> &st);
  uint64_t take_back(const char *me, std::vector<mc_status_t> &st);
  // A call shared by halves: the second halves, handed to a watching worker through box_. The
  // submitting thread copies the first halves meanwhile, takes the second ones back if no
  // worker took them by then, else waits for them, and ends the whole call itself.
  struct HalfJob {
    std::vector<Slice> s;
    std::vector<mc_status_t> st;
    ShmPeer *peer = nullptr;        // held by the submitting thread until done
    int cpu = -1;                   // the CPU the worker ran them on
    std::atomic<bool> done{false};  // the worker's last touch
  };
  std::atomic<HalfJob *> box_{nullptr};
  // Shares small (a call's small runs) by halves and ends them; false: nothing done (another
  // call's halves are out), copy them alone.
  bool share_halves(const std::vector<Slice> &small, ShmPeer &peer, const ShareCall &call, uint64_t t0);
  // The worker's side: takes the halves in box_, if any, and copies them.
  bool take_halves();
  // Whether a worker watches for work now (a call is shared by halves only then); pokes one
  // to watch now and then when none does.
  bool watcher_ready();
  std::atomic<size_t> watching_{0};  // workers in watch_for_work's loop
  bool poke_ = false;                // a worker is asked to watch (under qmu_)
  std::atomic<uint32_t> unwatched_{0};
  std::atomic<uint32_t> poke_every_{kPokeEvery};
  // One part of g ended: the group's slices end with the last one.
  void end_part(Group &g);
  // Runs a job (st: room for its slices) and ends its slices, or only fails them (run false).
  void finish_job(Job &j, std::vector<mc_status_t> &st, bool run, mc_status_t fail = MC_OK);
  std::deque<Job> queue_;
  std::atomic<size_t> queued_{0};  // queue_.size(), for workers that watch it without the lock
  // Workers watching queued_ right now (at most parallel_): a submit wakes sleeping workers only
  // for the parts that these do not take.
  std::atomic<size_t> spinners_{0};
  // Workers copying a part right now (at most parallel_; changed under qmu_ when it grows).
  std::atomic<size_t> active_{0};
  bool qstop_ = false;
  std::atomic<bool> qstop_seen_{false};
};

// ------------------------------------------------------------------------------ target side

Status ShmTransport::start() {
  (void)shmcopy::loop_name();  // the copy loop's measurement (copy.h) here, not in a first request
  Status cs = ctrl_.create("mc-shm-ctrl", kCtrlMagic, o_.incarnation);
  if (!cs.ok()) return cs;
  char nm[64];
  std::snprintf(nm, sizeof nm, "mc-shm-%d-%016" PRIx64, static_cast<int>(getpid()), o_.incarnation);
  sock_name_ = nm;
  proto::ShmHello h;
  h.pid = getpid();
  h.ctrl = reinterpret_cast<uint64_t>(ctrl_.page());
  samehost::UnixServer::Options so{"shm", sock_name_, o_.auth_token, o_.incarnation, o_.timeout_ms, kMaxMsg};
  Status ls = server_.start(
      so, h.to_json(), ctrl_.fd(),
      [this](const std::string &q, std::string *r, Fd *f) { return handle(q, r, f); }, &ctrl_.page()->alive);
  if (!ls.ok()) return ls;
  for (uint32_t i = 0; i < o_.workers; i++) workers_.emplace_back([this] { worker(); });
  // On a host of few CPUs, more copying threads than CPUs only take turns.
  unsigned ncpu = std::max(1u, std::thread::hardware_concurrency());
  parallel_ = std::min<size_t>(workers_.size(), ncpu > 1 ? ncpu - 1 : 1);
  return Status::Ok();
}

void ShmTransport::describe(Descriptor &d) {
  proto::ShmBlob blob;
  blob.socket = sock_name_;
  d.transports["shm"] = blob.to_json();
  std::lock_guard<std::mutex> lk(mu_);
  for (auto &b : d.buffers) {
    auto it = regions_.find(b.addr);
    if (it != regions_.end() && it->second.fd >= 0) b.ext["shm"] = "{\"memfd\":true}";
  }
}

Status ShmTransport::on_register(const LocalRegion &r) {
  int fd = -1;
  if (r.memfd >= 0) {
    fd = ::fcntl(r.memfd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return Err(MC_ERR_NO_MEMORY, std::string("dup of a memfd: ") + std::strerror(errno));
  }
  std::lock_guard<std::mutex> lk(mu_);
  regions_[r.addr] = {r.length, fd, r.access};
  return Status::Ok();
}

void ShmTransport::on_unregister(const LocalRegion &r) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = regions_.find(r.addr);
    if (it != regions_.end()) {
      if (it->second.fd >= 0) ::close(it->second.fd);
      regions_.erase(it);
    }
    ctrl_.bump_epoch();
  }
  wait_for_copies("an unregister");
}

Status ShmTransport::on_access_change(const LocalRegion &r) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = regions_.find(r.addr);
    if (it != regions_.end()) it->second.access = r.access;
    ctrl_.bump_epoch();  // with the change, as LIST reads both
  }
  wait_for_copies("an access change");
  return Status::Ok();
}

bool ShmTransport::handle(const std::string &req, std::string *reply, Fd *fd) {
  if (req == "WATCH") return true;  // stays open and idle: closes when this engine or process goes away
  if (req == "LIST") {
    list_reply(reply);
    return true;
  }
  if (uint64_t a = 0; proto::parse_fd_request(req, &a)) {
    fd_reply(a, reply, fd);
    return true;
  }
  *reply = "ERR unknown request";
  return false;
}

void ShmTransport::list_reply(std::string *reply) {
  proto::ShmList l;
  {
    std::lock_guard<std::mutex> lk(mu_);
    l.epoch = ctrl_.page()->epoch.load();
    for (auto &[a, r] : regions_) {
      proto::ShmListBuf b;
      b.addr = a;
      b.len = r.length;
      b.access = r.access;
      b.memfd = r.fd >= 0;
      l.buffers.push_back(b);
    }
  }
  *reply = l.to_json();
}

void ShmTransport::fd_reply(uint64_t a, std::string *reply, Fd *fd) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = regions_.find(a);
  if (it == regions_.end() || it->second.fd < 0) {
    *reply = "ERR no such memfd buffer";
  } else if (!(it->second.access & MC_ACCESS_READ)) {
    *reply = "ERR DENIED peers may not read this buffer";
  } else if (!(it->second.access & MC_ACCESS_WRITE)) {
    // A new read-only open file of the same memfd: the peer cannot map it writable.
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", it->second.fd);
    fd->reset(::open(path, O_RDONLY | O_CLOEXEC));
  } else {
    fd->reset(::fcntl(it->second.fd, F_DUPFD_CLOEXEC, 0));
  }
  if (reply->empty()) *reply = fd->valid() ? "OK" : "ERR cannot reopen the buffer's memfd";
}

std::shared_ptr<samehost::WatchLoop> ShmTransport::watch_loop(Status *st) {
  std::lock_guard<std::mutex> lk(watch_mu_);
  if (!watch_loop_) watch_loop_ = samehost::WatchLoop::create(st);
  return watch_loop_;
}

// ------------------------------------------------------------------------------ initiator side

ShmPeer::~ShmPeer() {
  dead.store(true);
  if (watch_loop_ && watch_id_) watch_loop_->unwatch(watch_id_);
  for (auto &[p, n] : maps_) ::munmap(p, n);
}

void ShmPeer::set_dead(const std::string &why) {
  if (!dead.exchange(true)) MC_LOGI("shm: peer " << name_ << " is gone: " << why);
}

Status ShmPeer::open(const Descriptor &d) {
  name_ = d.name;
  incarnation_ = d.incarnation;
  proto::ShmBlob blob;
  auto entry = d.transports.find("shm");
  Status st = entry == d.transports.end()
                  ? Err(MC_ERR_METADATA, "the descriptor of " + name_ + " has no shm entry")
                  : proto::decode(entry->second, name_, MC_ERR_METADATA, &blob);
  if (!st.ok()) return st;
  const std::string &sock = blob.socket;
  conn_ = std::make_unique<samehost::PeerConn>("same-host peer " + name_, kMaxMsg);
  std::string reply;
  Fd cf;
  st = conn_->open(sock, t_->token(), incarnation_, t_->timeout_ms(), &reply, &cf);
  if (!st.ok()) return st;
  proto::ShmHello hello;
  st = proto::decode(reply, name_, MC_ERR_TRANSPORT, &hello);
  if (!st.ok()) return st;
  if (!cf.valid()) return Err(MC_ERR_TRANSPORT, "same-host peer " + name_ + " sent no control page");
  pid_ = static_cast<int>(hello.pid);
  st = ctrl_.map(cf.get(), kCtrlMagic, incarnation_, "same-host peer " + name_);
  if (!st.ok()) return st;
  // Cross-memory attach: read the target's own view of its control page.
  uint64_t remote_ctrl = hello.ctrl;
  uint64_t magic = 0;
  iovec li{&magic, sizeof magic}, ri{reinterpret_cast<void *>(remote_ctrl), sizeof magic};
  ssize_t n = ::process_vm_readv(pid_, &li, 1, &ri, 1, 0);
  cma_ok_ = n == static_cast<ssize_t>(sizeof magic) && magic == kCtrlMagic;
  if (!cma_ok_)
    MC_LOGW("shm: cross-memory attach to peer " << name_ << " (pid " << pid_ << ") is not permitted ("
                                                << (n < 0 ? std::strerror(errno) : "short read")
                                                << "); its plain registered buffers go over tcp, "
                                                   "buffers from mc_buffer_alloc over shm");
  st = refresh();
  if (!st.ok()) return st;
  opened_ = true;
  // The watch connection: its close tells us at once that the peer is gone.
  watch_ = std::make_unique<samehost::PeerConn>("same-host peer " + name_, kMaxMsg);
  std::string r2;
  Fd wf;
  st = watch_->open(sock, t_->token(), incarnation_, t_->timeout_ms(), &r2, &wf);
  if (!st.ok()) return Err(st.code(), "watch connection: " + st.message());
  watch_->post("WATCH");
  set_io_timeout(watch_->fd(), 0);
  if (!watch_loop_) return Err(MC_ERR_INTERNAL, "shm: no watch loop");
  bool watching = watch_loop_->watch(
      watch_->fd(),
      [this] {
        if (!dead.load()) {
          set_dead("its same-host socket closed");
          fire_down();
        }
      },
      &watch_id_);
  if (!watching)
    return Err(MC_ERR_INTERNAL, std::string("shm: epoll of a watch connection: ") + std::strerror(errno));
  return Status::Ok();
}

Status ShmPeer::refresh() {
  std::string reply;
  Status st = conn_->request("LIST", &reply, nullptr);
  if (!st.ok()) return st;
  proto::ShmList list;
  st = proto::decode(reply, name_, MC_ERR_TRANSPORT, &list);
  if (!st.ok()) {
    // Logged once: here for a refresh (a request's thread fails this peer's requests with it),
    // by connect()'s fallback message while the path opens.
    if (opened_) MC_LOGW("shm: " << st.message());
    return st;
  }
  std::unique_lock<std::shared_mutex> lk(bufs_mu_);
  std::map<uint64_t, RemoteBuf> nb;
  for (auto &b : list.buffers) {
    RemoteBuf r{b.addr, b.len, b.memfd, nullptr, b.access};
    // A mapping made under other rights is not reused (a read-only one cannot take writes; a
    // writable one must not outlive the right to write). It stays mapped until the peer goes.
    auto old = bufs_.find(r.addr);
    if (old != bufs_.end() && old->second.length == r.length && old->second.memfd == r.memfd &&
        old->second.access == r.access)
      r.map = old->second.map;
    nb[r.addr] = r;
  }
  bufs_.swap(nb);
  epoch_ = list.epoch;
  return Status::Ok();
}

Status ShmPeer::map_buffer(RemoteBuf &b) {
  std::string reply;
  Fd f;
  Status st = conn_->request(proto::fd_request(b.addr), &reply, &f);
  if (!st.ok()) return st;
  if (!f.valid()) return Err(MC_ERR_TRANSPORT, "same-host peer " + name_ + " sent no memfd");
  int prot = (b.access & MC_ACCESS_WRITE) ? PROT_READ | PROT_WRITE : PROT_READ;
  void *p = ::mmap(nullptr, b.length, prot, MAP_SHARED, f.get(), 0);
  if (p == MAP_FAILED)
    return Err(MC_ERR_NO_MEMORY, std::string("mmap of a peer's buffer: ") + std::strerror(errno));
  b.map = static_cast<char *>(p);
  maps_.emplace_back(b.map, b.length);
  t_->maps++;
  return Status::Ok();
}

mc_status_t ShmPeer::copy_one(const Slice &s, RemoteBuf &b, uint64_t remote, char *local, uint64_t len) {
  if (b.via_map()) {
    char *r = b.map + (remote - b.addr);
    if (s.op == MC_WRITE)
      std::memcpy(r, local, len);
    else
      std::memcpy(local, r, len);
    t_->sums.add(ShmTransport::kCopied, len);
    return MC_OK;
  }
  iovec li{local, len}, ri{reinterpret_cast<void *>(remote), len};
  uint64_t done = 0;
  while (done < len) {
    li.iov_base = local + done;
    li.iov_len = len - done;
    ri.iov_base = reinterpret_cast<void *>(remote + done);
    ri.iov_len = len - done;
    ssize_t n = s.op == MC_WRITE ? ::process_vm_writev(pid_, &li, 1, &ri, 1, 0)
                                 : ::process_vm_readv(pid_, &li, 1, &ri, 1, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return (n < 0 && errno == ESRCH) ? MC_ERR_PEER_DOWN : MC_ERR_TRANSPORT;
    }
    done += static_cast<uint64_t>(n);
  }
  t_->sums.add(ShmTransport::kCma, len);
  return MC_OK;
}

// Bounds how long one active window stays open (a target's unregister waits for it, at most
// timeout_ms): 1 GiB is well under a second even for a slow copy.
constexpr uint64_t kWindowBytes = 1ull << 30;
constexpr size_t kWindowSlices = 1024;

size_t ShmPeer::run_window(const Slice *s, size_t n, mc_status_t *st, bool stream) {
  size_t k = 0;
  uint64_t bytes = 0, mapped = 0;
  // Slices that continue each other on both sides (the pieces of one request, adjacent
  // requests) are copied as one run: one memcpy call, which picks its best method for the size.
  char *run_dst = nullptr;
  const char *run_src = nullptr;
  uint64_t run_len = 0;
  auto flush = [&] {
    if (run_len) shmcopy::run(run_dst, run_src, run_len, stream);
    mapped += run_len;
    run_len = 0;
  };
  EpochWindow win(ctrl_.page());
  {
    std::shared_lock<std::shared_mutex> lk(bufs_mu_);
    if (win.current(epoch_)) {
      RemoteBuf *b = nullptr;
      for (; k < n && k < kWindowSlices && bytes < kWindowBytes; k++) {
        const Slice &x = s[k];
        if (k > 0 && t_->target_->canceled(x)) break;
        if (!b || x.remote < b->addr || x.remote + x.len > b->addr + b->length) {
          auto it = bufs_.upper_bound(x.remote);
          if (it == bufs_.begin()) break;
          b = &std::prev(it)->second;
          if (x.remote < b->addr || x.remote + x.len > b->addr + b->length) break;  // crosses or misses
        }
        if (b->via_map() ? !b->map : !cma_ok_) break;
        if (!(b->access & (x.op == MC_WRITE ? MC_ACCESS_WRITE : MC_ACCESS_READ))) break;
        char *local = static_cast<char *>(x.local);
        if (b->via_map()) {
          char *r = b->map + (x.remote - b->addr);
          char *dst = x.op == MC_WRITE ? r : local;
          const char *src = x.op == MC_WRITE ? local : r;
          if (run_len && run_dst + run_len == dst && run_src + run_len == src) {
            run_len += x.len;
          } else {
            flush();
            run_dst = dst;
            run_src = src;
            run_len = x.len;
          }
          st[k] = MC_OK;  // copied by the flush before the window closes
        } else {
          flush();
          st[k] = copy_one(x, *b, x.remote, local, x.len);
          if (st[k] != MC_OK) {
            k++;
            break;
          }
        }
        bytes += x.len;
      }
      flush();
    }
  }
  win.close();
  if (mapped) t_->sums.add(ShmTransport::kCopied, mapped);
  return k;
}

void ShmPeer::run(const Slice *s, size_t n, mc_status_t *st, bool stream) {
  for (size_t i = 0; i < n;) {
    if (dead.load()) {
      st[i++] = MC_ERR_PEER_DOWN;
      continue;
    }
    if (t_->target_->canceled(s[i])) {
      st[i++] = MC_ERR_CANCELED;
      continue;
    }
    size_t k = run_window(s + i, n - i, st + i, stream);
    if (k == 0) {
      st[i] = run_one(s[i]);
      k = 1;
    }
    i += k;
  }
}

void ShmPeer::report(const Slice *s, size_t n, mc_status_t *st) {
  // A WRITE into a mapping is COMPLETED only if the target still lives: its mapping of the memfd
  // is gone once its process is, and ours would keep the bytes from nobody. The kernel marks
  // the target's alive mutex before its death is visible to anyone (CtrlPage::alive), so a
  // dead owner seen here, after the copies, turns their WRITEs into PEER_DOWN: one load serves
  // every slice of the call.
  bool wrote = false;
  for (size_t i = 0; i < n && !wrote; i++) wrote = st[i] == MC_OK && s[i].op == MC_WRITE;
  if (wrote && !target_alive())
    for (size_t i = 0; i < n; i++)
      if (st[i] == MC_OK && s[i].op == MC_WRITE) st[i] = MC_ERR_PEER_DOWN;
  uint64_t ok = 0;
  for (size_t i = 0; i < n; i++) ok += st[i] == MC_OK;
  if (ok) t_->sums.add(ShmTransport::kSlicesOk, ok);
  if (ok != n) t_->sums.add(ShmTransport::kSlicesFailed, n - ok);
  t_->target_->complete(s, st, n);
}

bool ShmPeer::copy_small(uint32_t op, void *local, uint64_t remote, uint64_t len, mc_status_t *st) {
  const Slice x{local, remote, len, nullptr, op};
  if (dead.load()) {
    *st = MC_ERR_PEER_DOWN;  // as run() ends it
  } else {
    EpochWindow win(ctrl_.page());
    std::shared_lock<std::shared_mutex> lk(bufs_mu_);
    if (!win.current(epoch_)) return false;  // the list may be stale: run_one refreshes it
    auto it = bufs_.upper_bound(remote);
    if (it == bufs_.begin()) return false;
    RemoteBuf &b = std::prev(it)->second;
    if (remote < b.addr || remote + len > b.addr + b.length) return false;  // crosses or misses
    if (b.via_map() ? !b.map : !cma_ok_) return false;
    if (!(b.access & (op == MC_WRITE ? MC_ACCESS_WRITE : MC_ACCESS_READ))) return false;
    *st = copy_one(x, b, remote, static_cast<char *>(local), len);
  }
  report_one(x, st);
  return true;
}

// report() for one slice that no batch knows of: the liveness check after a WRITE, the counts.
void ShmPeer::report_one(const Slice &x, mc_status_t *st) {
  if (*st == MC_OK && x.op == MC_WRITE && !target_alive()) *st = MC_ERR_PEER_DOWN;
  t_->sums.add(*st == MC_OK ? ShmTransport::kSlicesOk : ShmTransport::kSlicesFailed, 1);
}

// Maps the target's buffers [s.remote, +s.len) crosses that are not mapped yet (mapping asks
// the target); MC_OK, or the refusal's status. Before the slice's active window opens.
mc_status_t ShmPeer::map_for(const Slice &s) {
  bool need_map = false;
  {
    std::shared_lock<std::shared_mutex> lk(bufs_mu_);
    auto it = bufs_.upper_bound(s.remote);
    if (it != bufs_.begin()) {
      --it;
      for (uint64_t cur = s.remote, end = s.remote + s.len; it != bufs_.end() && cur < end; ++it) {
        if (it->second.via_map() && !it->second.map) need_map = true;
        cur = it->second.addr + it->second.length;
      }
    }
  }
  if (!need_map) return MC_OK;
  std::unique_lock<std::shared_mutex> lk(bufs_mu_);
  auto it = bufs_.upper_bound(s.remote);
  if (it != bufs_.begin()) --it;
  for (uint64_t cur = s.remote, end = s.remote + s.len; it != bufs_.end() && cur < end; ++it) {
    if (it->second.via_map() && !it->second.map) {
      Status ms = map_buffer(it->second);
      if (!ms.ok()) {
        MC_LOGI("shm: " << ms.message());
        return (ms.code() == MC_ERR_PEER_DOWN || ms.code() == MC_ERR_DENIED) ? ms.code() : MC_ERR_TRANSPORT;
      }
    }
    cur = it->second.addr + it->second.length;
  }
  return MC_OK;
}

// The target changed its buffer list under a slice (its epoch moved since the list was read):
// re-reads it so the slice can try again, for as long as timeout_ms allows from the first
// change (*deadline, 0 until then). A target that changes its rights faster than a refresh
// completes ends the slice MC_ERR_TIMEOUT: never a loop without end, never a transport error
// for a change the contract allows.
bool ShmPeer::again_after_change(uint64_t *deadline, mc_status_t *st) {
  uint64_t now = now_ms();
  if (!*deadline) {
    *deadline = now + t_->timeout_ms();
  } else if (now >= *deadline) {
    *st = MC_ERR_TIMEOUT;
    return false;
  }
  Status rs = refresh();
  if (!rs.ok()) {
    *st = rs.code() == MC_ERR_PEER_DOWN ? MC_ERR_PEER_DOWN : MC_ERR_TRANSPORT;
    return false;
  }
  *st = MC_OK;
  return true;
}

// Checks that the target's current buffers cover the slice and allow its op (adjacent buffers
// may be crossed), then copies. Caller holds bufs_mu_ shared inside a current active window:
// the rights checked are the target's current ones.
mc_status_t ShmPeer::copy_covered(const Slice &s) {
  uint64_t cur = s.remote, end = s.remote + s.len;
  char *local = static_cast<char *>(s.local);
  auto it = bufs_.upper_bound(cur);
  if (it == bufs_.begin()) return MC_ERR_OUT_OF_RANGE;  // the target has not registered this range
  const uint32_t need = s.op == MC_WRITE ? MC_ACCESS_WRITE : MC_ACCESS_READ;
  bool reachable = true, allowed = true;
  // Check the whole range before the first byte moves: a refused slice writes nothing.
  for (auto c = std::prev(it); cur < end; ++c) {
    if (c == bufs_.end() || cur < c->second.addr || cur >= c->second.addr + c->second.length)
      return MC_ERR_OUT_OF_RANGE;  // the target has not registered (all of) this range
    if (c->second.via_map() ? !c->second.map : !cma_ok_) reachable = false;
    if (!(c->second.access & need)) allowed = false;
    cur = c->second.addr + c->second.length;
  }
  if (!reachable) return MC_ERR_TRANSPORT;  // registered, but neither mapped here nor reachable by CMA
  if (!allowed) return MC_ERR_DENIED;       // the target's buffer does not let peers do this
  mc_status_t st = MC_OK;
  cur = s.remote;
  for (--it; cur < end && st == MC_OK; ++it) {
    uint64_t n = std::min(end, it->second.addr + it->second.length) - cur;
    st = copy_one(s, it->second, cur, local + (cur - s.remote), n);
    cur += n;
  }
  return st;
}

mc_status_t ShmPeer::run_one(const Slice &s) {
  uint64_t deadline = 0;
  bool listed_again = false;
  for (;;) {
    if (dead.load()) return MC_ERR_PEER_DOWN;
    mc_status_t st = map_for(s);
    if (st != MC_OK) {
      // Mapped under rights the target has changed since (a read-only file where the stale
      // list still said writable, or a refusal): refresh the list and try again.
      bool stale;
      {
        std::shared_lock<std::shared_mutex> rl(bufs_mu_);
        stale = ctrl_.page()->epoch.load(std::memory_order_seq_cst) != epoch_;
      }
      if (!stale || st == MC_ERR_PEER_DOWN) return st;
      if (!again_after_change(&deadline, &st)) return st;
      continue;
    }
    EpochWindow win(ctrl_.page());
    std::shared_lock<std::shared_mutex> lk(bufs_mu_);
    if (win.current(epoch_)) {
      st = copy_covered(s);
      // The engine checked the range against the target's descriptor: a list here that does not
      // cover it may be older than that descriptor (a refresh that could not reach the target).
      // Asked once more; a target that cannot answer ends the slice with why, not OUT_OF_RANGE.
      if (st != MC_ERR_OUT_OF_RANGE || listed_again) return st;
      listed_again = true;
    }
    lk.unlock();
    win.close();
    if (!again_after_change(&deadline, &st)) return st;
  }
}

std::shared_ptr<PeerPath> ShmTransport::connect(const Descriptor &d) {
  Status st;
  auto w = watch_loop(&st);
  if (!w) {
    MC_LOGW("shm: cannot use the same-host path to " << d.name << " (" << st.message() << "); using tcp");
    return nullptr;
  }
  auto p = std::make_shared<ShmPeer>(this, std::move(w));
  st = p->open(d);
  if (!st.ok()) {
    MC_LOGW("shm: cannot use the same-host path to " << d.name << " (" << st.message() << "); using tcp");
    return nullptr;
  }
  return p;
}

namespace {
bool continues(const Slice &a, const Slice &b) {
  return a.op == b.op && static_cast<char *>(a.local) + a.len == b.local && a.remote + a.len == b.remote;
}
}  // namespace

// Runs one job (or fails it without running, when run is false) and ends what it completes: its
// own slices, or, for parts of a group, the group's slices once its last part ended.
void ShmTransport::finish_job(Job &j, std::vector<mc_status_t> &st, bool run, mc_status_t fail) {
  run_job(j, st, run, fail);
  if (j.clock) clock_part_done(*j.clock);
}

void ShmTransport::clock_part_done(CallClock &c) {
  if (c.left.fetch_sub(1, std::memory_order_acq_rel) == 1)
    payoff_.judge(c.cls, TscClock::ns_between(c.started, TscClock::ticks()),
                  c.mine_ns.load(std::memory_order_relaxed),
                  c.mine_cpu.load(std::memory_order_relaxed) == c.helper_cpu.load(std::memory_order_relaxed));
}

void ShmTransport::run_job(Job &j, std::vector<mc_status_t> &st, bool run, mc_status_t fail) {
  if (st.size() < j.s.size()) st.resize(j.s.size());
  if (run) {
    j.peer->run(j.s.data(), j.s.size(), st.data(), j.stream);
  } else {
    for (size_t i = 0; i < j.s.size(); i++) st[i] = fail;
  }
  if (!j.group) {
    if (run) {
      j.peer->report(j.s.data(), j.s.size(), st.data());
    } else {
      sums.add(kSlicesFailed, j.s.size());
      for (size_t i = 0; i < j.s.size(); i++) target_->complete(j.s[i], fail);
    }
    return;
  }
  Group &g = *j.group;
  // Parts of a group: the liveness check that report() makes for WRITEs, then the group's
  // slices end with its last part.
  bool wrote = false;
  for (size_t i = 0; i < j.s.size() && !wrote; i++) wrote = st[i] == MC_OK && j.s[i].op == MC_WRITE;
  const bool dead = run && wrote && !j.peer->target_alive();
  for (size_t i = 0; i < j.s.size(); i++) {
    mc_status_t mine = st[i];
    if (dead && mine == MC_OK && j.s[i].op == MC_WRITE) mine = MC_ERR_PEER_DOWN;
    if (mine != MC_OK) {
      int32_t expect = MC_OK;
      g.err[j.idx[i]].compare_exchange_strong(expect, mine);
    }
  }
  end_part(g);
}

void ShmTransport::end_part(Group &g) {
  if (g.left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    const size_t m = g.orig.size();
    std::vector<mc_status_t> end(m);
    uint64_t ok = 0;
    for (size_t i = 0; i < m; i++) ok += (end[i] = g.err[i].load()) == MC_OK;
    if (ok) sums.add(kSlicesOk, ok);
    if (ok != m) sums.add(kSlicesFailed, m - ok);
    target_->complete(g.orig.data(), end.data(), m);
  }
}

// Small runs are copied here at once (a hand-off costs more than the copy). A large run is cut
// into parts (at slice boundaries, or a single large slice into pieces): the workers take them
// from the front of the queue while this thread takes its own back from the end, so a request
// is never slower than one thread copying it, and a busy or slow-to-wake worker does not hold it
// up. submit() therefore returns after this thread's share of the copying (small slices: all
// of it).
void ShmTransport::submit(PeerPath &path, Slice *slices, size_t n) {
  auto &peer = static_cast<ShmPeer &>(path);
  thread_local const char me = 0;
  thread_local std::vector<Slice> small;
  thread_local std::vector<mc_status_t> st;
  std::vector<Job> jobs;
  small.clear();
  const ShareCall call = share_now(slices, n);
  const uint64_t t0 = call.timed ? TscClock::ticks() : 0;
  const size_t parts_max = call.share ? parallel_ + 1 : 1;
  plan_jobs(slices, n, parts_max, &me, jobs, small);
  const bool halves = call.share && call.halves && small.size() > 1;
  const bool share = jobs.size() > 1 && parts_max > 1;
  std::shared_ptr<CallClock> clock;
  if (share) {
    if (call.timed) {
      clock = std::make_shared<CallClock>(t0, call.cls, static_cast<uint32_t>(jobs.size() + 1));
      for (auto &jb : jobs) jb.clock = clock;
    }
    queue_jobs(jobs, peer, st);
  }
  if (!small.empty() && !(halves && share_halves(small, peer, call, t0))) {
    if (st.size() < small.size()) st.resize(small.size());
    peer.run(small.data(), small.size(), st.data(), false);
    peer.report(small.data(), small.size(), st.data());
  }
  if (!share) {  // nothing to share out
    for (auto &jb : jobs) {
      jb.peer = peer.shared_from_this();
      finish_job(jb, st, true);
    }
    return;
  }
  const uint64_t own = take_back(&me, st);
  if (clock) {
    // This thread's own part (the first one it took back; all it did if a worker took that).
    clock->mine_ns.store(TscClock::ns_between(t0, own ? own : TscClock::ticks()), std::memory_order_relaxed);
    clock->mine_cpu.store(sched_getcpu(), std::memory_order_relaxed);
    clock_part_done(*clock);
  }
}

// The runs of slices (slices that continue each other) as jobs: up to kInline bytes into
// *small (copied here at once), larger ones whole (parts_max 1) or cut for parts_max threads.
void ShmTransport::plan_jobs(Slice *slices, size_t n, size_t parts_max, const char *me,
                             std::vector<Job> &jobs, std::vector<Slice> &small) {
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    uint64_t len = slices[i].len;
    while (j < n && continues(slices[j - 1], slices[j])) len += slices[j++].len;
    bool stream = len >= kStreamMin;
    if (len <= kInline) {
      small.insert(small.end(), slices + i, slices + j);
    } else if (parts_max == 1) {
      jobs.push_back({std::vector<Slice>(slices + i, slices + j), stream, nullptr, me});
    } else if (j == i + 1 && len <= kPart) {
      // One slice: cut into pieces, one per thread that can copy now.
      const uint64_t parts = std::min<uint64_t>(parts_max, len / kSplitMin);
      auto g = std::make_shared<Group>();
      g->orig.assign(1, slices[i]);
      g->err.reset(new std::atomic<int32_t>[1]);
      g->err[0].store(MC_OK, std::memory_order_relaxed);
      g->left.store(static_cast<uint32_t>(parts), std::memory_order_relaxed);
      const uint64_t piece = (len / parts + 63) & ~uint64_t(63);
      for (uint64_t off = 0, k = 0; k < parts; k++, off += piece) {
        Slice part = slices[i];
        part.local = static_cast<char *>(part.local) + off;
        part.remote += off;
        part.len = k + 1 == parts ? len - off : piece;
        jobs.push_back({std::vector<Slice>{part}, stream, nullptr, me, g, {0}});
      }
    } else {
      // Parts of about len / parts_max bytes (kInline to kPart), at slice boundaries.
      const uint64_t target = std::clamp<uint64_t>(len / parts_max, kInline, kPart);
      for (size_t a = i; a < j;) {
        size_t b = a;
        uint64_t got = 0;
        while (b < j && got < target) got += slices[b++].len;
        if (j - b > 0 && len - got < target / 2) b = j;  // no small last part
        jobs.push_back({std::vector<Slice>(slices + a, slices + b), stream, nullptr, me});
        len -= got;
        a = b;
      }
    }
    i = j;
  }
}

// Many small runs that add up to a large copy (a batch of 64 KiB blocks): every slice of
// 2 * kHalfMin bytes or more is cut in two halves, the first ones copied by this thread and
// the second ones by a worker, so that each thread always takes the same half of a block
// (two threads writing the same lines would only take them from each other). The hand-off is
// one pointer (box_) that the worker watches, each side copies its halves under one active
// window, and this thread ends the call: the threads touch few lines in common. (Through the
// queue, with the worker claiming halves one by one and ending its part itself, both threads
// copied at half speed and a shared call took longer than one copied alone.)
bool ShmTransport::share_halves(const std::vector<Slice> &small, ShmPeer &peer, const ShareCall &call,
                                uint64_t t0) {
  thread_local HalfJob h;
  thread_local std::vector<Slice> mine;
  thread_local std::vector<uint32_t> theirs_of;  // the index in small of each of h.s
  thread_local std::vector<mc_status_t> st;
  mine.clear();
  h.s.clear();
  theirs_of.clear();
  for (size_t k = 0; k < small.size(); k++) {
    const Slice &x = small[k];
    const uint64_t half = x.len < 2 * kHalfMin ? x.len : (x.len / 2 + 63) & ~uint64_t(63);
    mine.push_back(x);
    mine.back().len = half;
    if (half == x.len) continue;
    Slice b = x;
    b.local = static_cast<char *>(x.local) + half;
    b.remote = x.remote + half;
    b.len = x.len - half;
    h.s.push_back(b);
    theirs_of.push_back(static_cast<uint32_t>(k));
  }
  h.st.resize(h.s.size());
  st.resize(mine.size());
  h.peer = &peer;
  h.cpu = -1;
  h.done.store(false, std::memory_order_relaxed);
  HalfJob *none = nullptr;
  if (!box_.compare_exchange_strong(none, &h, std::memory_order_acq_rel)) return false;
  sums.add(kHalvesShared, 1);
  // Takes the second halves back if no worker took them, else waits for the worker to end them.
  auto settle = [&] {
    HalfJob *back = &h;
    if (box_.compare_exchange_strong(back, nullptr, std::memory_order_acq_rel)) return true;
    for (unsigned i = 0; !h.done.load(std::memory_order_acquire); i++) {  // a few us
#if defined(__x86_64__)
      _mm_pause();
#endif
      if ((i & 1023) == 1023) std::this_thread::yield();
    }
    return false;
  };
  try {
    peer.run(mine.data(), mine.size(), st.data(), false);
  } catch (...) {  // (a refresh that ran out of memory): the worker must not outlive this call
    settle();
    throw;
  }
  const uint64_t own = TscClock::ticks();
  const bool taken_back = settle();
  if (taken_back) {
    sums.add(kHalvesTakenBack, 1);
    peer.run(h.s.data(), h.s.size(), h.st.data(), false);
  }
  // A slice failed if either half did.
  for (size_t k = 0; k < h.s.size(); k++)
    if (h.st[k] != MC_OK && st[theirs_of[k]] == MC_OK) st[theirs_of[k]] = h.st[k];
  if (call.timed)
    payoff_.judge(call.cls, TscClock::ns_between(t0, TscClock::ticks()), TscClock::ns_between(t0, own),
                  taken_back || h.cpu == sched_getcpu());
  peer.report(small.data(), small.size(), st.data());
  return true;
}

bool ShmTransport::take_halves() {
  if (!box_.load(std::memory_order_relaxed)) return false;
  HalfJob *h = box_.exchange(nullptr, std::memory_order_acq_rel);
  if (!h) return false;
  h->cpu = sched_getcpu();
  if (stopping_.load()) {
    for (auto &x : h->st) x = MC_ERR_PEER_DOWN;  // engine destroy: as queued parts end
  } else {
    try {
      h->peer->run(h->s.data(), h->s.size(), h->st.data(), false);
    } catch (...) {  // out of memory in a refresh: the halves fail, the caller still ends them
      for (auto &x : h->st) x = MC_ERR_TRANSPORT;
    }
  }
  h->done.store(true, std::memory_order_release);
  return true;
}

// A call shared by halves takes 2-5 us alone: waking a sleeping worker for it (10-100 us on the
// VMs here) costs more than it saves, and the submitting thread would take the halves back
// before the worker ran. So it goes to a worker that watches already; where none does, one
// call in kPokeEvery (fewer while pokes bring no watcher) wakes one to watch, and it keeps
// watching while calls keep coming.
bool ShmTransport::watcher_ready() {
  if (watching_.load(std::memory_order_acquire) > 0) {
    if (poke_every_.load(std::memory_order_relaxed) != kPokeEvery)
      poke_every_.store(kPokeEvery, std::memory_order_relaxed);
    return true;
  }
  sums.add(kHalvesUnwatched, 1);
  const uint32_t every = poke_every_.load(std::memory_order_relaxed);
  if (unwatched_.fetch_add(1, std::memory_order_relaxed) % every == 0 ||
      o_.share == ShmOptions::Share::kAlways) {
    if (every < kPokeMax) poke_every_.store(every * 2, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(qmu_);
      poke_ = true;
    }
    qcv_.notify_one();
  }
  return false;
}

// Queues a call's jobs for the workers (or, stopping, fails them) and wakes as many as can take
// one beside this thread.
void ShmTransport::queue_jobs(std::vector<Job> &jobs, ShmPeer &peer, std::vector<mc_status_t> &st) {
  auto keep = peer.shared_from_this();  // queued parts keep the peer alive on the workers
  size_t queued = 0;
  {
    std::lock_guard<std::mutex> lk(qmu_);
    if (!qstop_) {
      for (auto &jb : jobs) {
        jb.peer = keep;
        queue_.push_back(std::move(jb));
      }
      queued = jobs.size();
      queued_.store(queue_.size(), std::memory_order_release);
      jobs.clear();
    }
  }
  for (auto &jb : jobs) {  // stopping: not queued
    jb.peer = keep;
    finish_job(jb, st, false, MC_ERR_PEER_DOWN);
  }
  // One part is this thread's; a watching worker takes one without being woken (if it stops
  // watching first, this thread takes the part back in take_back).
  const size_t watching = spinners_.load(std::memory_order_acquire);
  for (size_t w = watching; w + 1 < queued && w < parallel_; w++) qcv_.notify_one();
}

// Takes back this thread's parts that no worker started yet, newest first, and runs them.
// Returns the TscClock ticks at which the first one ended (this thread's own part: the newest),
// 0 if none was left.
uint64_t ShmTransport::take_back(const char *me, std::vector<mc_status_t> &st) {
  uint64_t first = 0;
  for (;;) {
    Job jb;
    {
      std::lock_guard<std::mutex> lk(qmu_);
      if (queue_.empty() || queue_.back().owner != me) break;
      jb = std::move(queue_.back());
      queue_.pop_back();
      queued_.store(queue_.size(), std::memory_order_release);
    }
    finish_job(jb, st, !stopping_.load(), MC_ERR_PEER_DOWN);
    if (!first) first = TscClock::ticks();
  }
  return first;
}

// Shared with workers only while it pays. Not while the CPUs are crowded (util/cpu_crowding.h):
// where other work holds them, a worker preempted in the middle of its part makes the request
// wait a time slice. And not while copying alone was faster lately for calls of this size
// (util/share_payoff.h): the submitting thread can hold a core of its own and see no crowding,
// while every worker waits behind other work (busy.sh, two busy loops: 1 MiB at 27 GB/s shared
// against 34-36 alone and for memcpy). Asked only for calls large enough to share at all, and
// not for calls of kPart or more: those are copied in parts of milliseconds each (DRAM-bound),
// where a preempted part costs about what a part does, and in a quiet run the copying threads
// themselves wait for the CPUs that the others hold, which the reading cannot tell from other
// work (bench/results/small_regress.txt: 16 and 256 MiB lost 7-27% when copied alone).
ShmTransport::ShareCall ShmTransport::share_now(const Slice *slices, size_t n) {
  ShareCall c;
  if (workers_.empty() || parallel_ == 0 || o_.share == ShmOptions::Share::kNever) return c;
  uint64_t bytes = 0, run = 0, longest = 0, halvable = 0;
  for (size_t i = 0; i < n; i++) {
    bytes += slices[i].len;
    run = i > 0 && continues(slices[i - 1], slices[i]) ? run + slices[i].len : slices[i].len;
    longest = std::max(longest, run);
    if (slices[i].len >= 2 * kHalfMin) halvable += slices[i].len;
  }
  c.share = true;
  if (bytes < kInline || bytes >= kPart) return c;
  c.cls = SharePayoff::class_of(bytes);
  // Small runs only, mostly of slices that can be cut in halves.
  c.halves = longest <= kInline && bytes >= kShareSmall && halvable * 2 >= bytes;
  if (o_.share == ShmOptions::Share::kAlways) {
    c.share = !c.halves || watcher_ready();
  } else if (cpu_crowding::crowded()) {
    sums.add(kCrowdedAlone, 1);
    c.share = false;
  } else if (c.halves && !watcher_ready()) {
    c.share = false;  // before the payoff's choice: its runs of probes go to a watching worker
  } else if (c.cls >= 0) {
    const SharePayoff::Choice pick = payoff_.choose(c.cls);
    c.timed = pick.judge;
    if (!pick.share) {
      sums.add(kPayoffAlone, 1);
      c.share = false;
    }
  }
  return c;
}

void ShmTransport::watch_for_work(bool poked) {
  // No watch while the CPUs are crowded (unless shm_share=always): it would hold a core the
  // submitting thread needs.
  // (Workers take no readings of their own: there are more of them than cores, and a wait for a
  // CPU that another worker holds is this transport's doing, not other work's.)
  const bool always = o_.share == ShmOptions::Share::kAlways;
  const auto budget = always                         ? std::chrono::microseconds(kAlwaysWatch)
                      : cpu_crowding::crowded(false) ? std::chrono::microseconds(0)
                      : poked                        ? std::chrono::microseconds(kWorkerSpin)
                                                     : worker_spin_.budget();
  if (budget.count() == 0) return;
  auto waiting = [&] {
    return queued_.load(std::memory_order_acquire) == 0 && !box_.load(std::memory_order_acquire) &&
           !qstop_seen_.load(std::memory_order_relaxed);
  };
  const auto until = std::chrono::steady_clock::now() + budget;
  watching_.fetch_add(1, std::memory_order_acq_rel);
  for (unsigned i = 0; waiting(); i++) {
#if defined(__x86_64__)
    _mm_pause();
#endif
    if ((i & 63) == 63 && std::chrono::steady_clock::now() >= until) break;
  }
  watching_.fetch_sub(1, std::memory_order_acq_rel);
  waiting() ? worker_spin_.wasted() : worker_spin_.paid();
}

void ShmTransport::worker() {
  std::vector<mc_status_t> st;
  bool worked = false, poked = false;
  for (;;) {
    if (worked && spinners_.fetch_add(1, std::memory_order_acq_rel) + active_.load() < parallel_) {
      // Just finished a part: more may follow at once (a stream of large requests). Only as
      // many workers watch or copy as can run beside the submitting thread: more would take CPU
      // from it, and only as long as watching paid lately (util/spin.h: not where no core is
      // idle).
      watch_for_work(poked);
      spinners_.fetch_sub(1, std::memory_order_acq_rel);
    } else if (worked) {
      spinners_.fetch_sub(1, std::memory_order_acq_rel);
    }
    poked = false;
    if (take_halves()) {
      worked = true;
      continue;
    }
    Job j;
    {
      std::unique_lock<std::mutex> lk(qmu_);
      // At most parallel_ workers copy at once (with the submitting thread, one a core): a worker
      // that finished takes the next part itself, so the others need no wake-up for it.
      auto can_take = [&] { return !queue_.empty() && active_.load() < parallel_; };
      qcv_.wait(lk, [&] { return qstop_ || poke_ || can_take(); });
      if (!qstop_ && !can_take()) {  // poked: watch for the calls to come
        poke_ = false;
        worked = poked = true;
        continue;
      }
      if (queue_.empty()) return;
      j = std::move(queue_.front());
      queue_.pop_front();
      queued_.store(queue_.size(), std::memory_order_release);
      active_.fetch_add(1);
    }
    if (j.clock) j.clock->helper_cpu.store(sched_getcpu(), std::memory_order_relaxed);
    // engine destroy: queued work fails, it does not run
    finish_job(j, st, !stopping_.load(), MC_ERR_PEER_DOWN);
    active_.fetch_sub(1);
    worked = true;
  }
}

void ShmTransport::shutdown() {
  if (stopping_.exchange(true)) return;
  server_.stop();  // releases the alive mutex and closes every peer's connections
  {
    std::lock_guard<std::mutex> lk(qmu_);
    qstop_ = true;
    qstop_seen_.store(true);
    // Workers drain the queue before they exit; with stopping_ set, each queued part ends
    // PEER_DOWN without running (worker()), so only the parts already copying delay this.
  }
  qcv_.notify_all();
  for (auto &t : workers_) t.join();
  workers_.clear();
  std::lock_guard<std::mutex> lk(mu_);
  for (auto &[a, r] : regions_)
    if (r.fd >= 0) ::close(r.fd);
  regions_.clear();
}

std::string ShmTransport::stats_json() {
  JsonObject o;
  o.num("bytes_copied", sums.sum(kCopied));
  o.num("bytes_cma", sums.sum(kCma));
  o.num("slices_completed", sums.sum(kSlicesOk));
  o.num("slices_failed", sums.sum(kSlicesFailed));
  o.num("worker_spin_us", worker_spin_.current_us());
  o.num("worker_spins_wasted", worker_spin_.wasted_count());
  o.str("copy_loop", shmcopy::loop_name());
  o.num("buffers_mapped", maps.load());
  o.num("calls_alone_crowded", sums.sum(kCrowdedAlone));  // not shared: no core was idle
  o.num("calls_alone_payoff", sums.sum(kPayoffAlone));    // not shared: alone was faster lately
  // Each size class's score of recent shared calls (util/share_payoff.h): negative, alone.
  std::string scores = "{";
  for (unsigned c = 0; c < SharePayoff::kClasses; c++)
    scores += (c ? ",\"" : "\"") + std::to_string(1u << (SharePayoff::kMinLog2 + c - 10)) +
              "K\":" + std::to_string(payoff_.score(static_cast<int>(c)));
  o.raw("share_scores", scores + "}");
  o.num("shared_calls_paid", payoff_.paid());
  o.num("shared_calls_unpaid", payoff_.unpaid());
  // Calls shared by halves (share_halves): handed out, taken back (no worker took them in
  // time), and not handed out (no worker watched).
  o.num("halves_shared", sums.sum(kHalvesShared));
  o.num("halves_taken_back", sums.sum(kHalvesTakenBack));
  o.num("halves_unwatched", sums.sum(kHalvesUnwatched));
  o.num("handshakes_denied", server_.hs_denied.load());
  o.num("handshakes_dropped", server_.hs_dropped.load());
  return o.done();
}

}  // namespace

std::unique_ptr<Transport> make_shm_transport(const ShmOptions &o, Host *target, Status *st) {
  auto t = std::make_unique<ShmTransport>(o, target);
  *st = t->start();
  if (!st->ok()) return nullptr;
  return t;
}

}  // namespace mc
