// The nvlink transport.
//
// Export (target side). Every registered "cuda:N" buffer is made shareable once, at register:
//  - memory from cudaMalloc/cuMemAlloc: cuIpcGetMemHandle (64 bytes) of its allocation, plus
//    the allocation's base, since the handle opens the whole allocation;
//  - memory from the VMM API (cuMemCreate + cuMemMap, as PyTorch's expandable segments): each
//    mapping that the buffer touches is exported with cuMemExportToShareableHandle as a POSIX
//    file descriptor. The allocation must have been created with the POSIX fd handle type.
// Buffers that cannot be exported still register; peers then reach them over TCP (staging).
//
// Every engine listens on an abstract Unix socket ("\0mc-nvl-<pid>-<incarnation>", named in its
// descriptor). An initiator on the same host connects and is admitted (proto/unix_msg.h: it
// proves it expects the target's current incarnation and, with an auth_token, that it holds the
// token, by the mutual HMAC challenge-response shm and TCP run); only then does it get the
// target's control page (a memfd, SCM_RIGHTS); LIST returns the exported buffers with their
// handles; FD <addr> returns one VMM mapping's fd. A refused process gets no handle of any kind:
// "ERR DENIED <why>" is all it reads. The socket, its admission and its one serving thread for
// all peers, the control page and the request connection are the same-host stack's, shared with
// shm (transport/samehost/); this file keeps the CUDA side: export, import, copies. Every message read from a
// peer (descriptor entry, admission reply, LIST reply, FD request) goes through its codec in
// proto/samehost_msg.h (by field name, as shm's), which checks types and ranges, never throws.
//
// Access (mc_buffer_set_access). A CUDA IPC mapping cannot be made read-only by its exporter
// (cuIpcOpenMemHandle has no such flag, and a VMM importer picks its own cuMemSetAccess rights),
// so what peers may do is enforced where the copy is issued, by the initiator: every slice is
// checked against the access bits of the target's current LIST (the epoch protocol below makes
// "current" exact: a change bumps the epoch and waits for copies in flight, like an
// unregister), and a forbidden slice fails with MC_ERR_DENIED before any copy is queued. A
// buffer peers may neither read nor write (access 0) is listed without its handle, and FD
// refuses its mappings: no process gets a way to it at all. As for shm's cross-memory attach,
// the admission (the token) is what keeps other code from mapping buffers it may not write.
//
// Import (initiator side): once per (peer incarnation, buffer, local GPU), on first use:
// cuIpcOpenMemHandle (lazy peer access) or, for VMM, cuMemImportFromShareableHandle + cuMemMap
// into a reserved range + cuMemSetAccess for the local GPU. A new incarnation of the peer drops
// the PeerPath, whose destructor closes and unmaps every import: nothing is ever copied through
// a mapping of an older incarnation.
//
// Copies: cuMemcpyAsync on a few streams per local GPU (slices adjacent on both sides are
// merged first; large copies queue on one stream, small ones spread over the others, see
// kBulkMin), one event per stream used per submit; a completion thread polls the events and
// reports the slices only after their copies finished. mc's streams do not wait for work the
// caller queued on its own streams: the caller orders that (as for any copy engine user).
//
// Unregister safety, as in the shm transport (samehost/ctrl_page.h): the target's control page
// holds an epoch (bumped on every unregister of an exported buffer) and an "active" count. An
// initiator opens an EpochWindow (active++),
// checks the epoch against the one of its buffer list (re-LISTing when it changed), enqueues its
// copies and drops active only when their events completed; the target's unregister bumps the
// epoch, then waits (bounded by timeout_ms) for active to reach 0. The window of a copy group
// travels with its Op to the completion thread and closes there. So after mc_buffer_unregister
// returns, no peer copy into that memory is running or can start.
#include "transport/nvlink/nvlink_transport.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "gpu/cuda_loader.h"
#include "util/json_writer.h"
#include "util/log.h"
#include "util/net.h"
#include "proto/unix_msg.h"
#include "proto/samehost_msg.h"
#include "proto/wire.h"
#include "transport/samehost/ctrl_page.h"
#include "transport/samehost/epoch_window.h"
#include "transport/samehost/peer_conn.h"
#include "transport/samehost/unix_server.h"

namespace mc {
namespace {

using nlohmann::json;
using namespace mc::cuda;

constexpr uint64_t kCtrlMagic = 0x4d434e564c434c31ull;  // "MCNVLCL1"
constexpr uint32_t kMaxMsg = 16u << 20;
constexpr uint64_t kMaxMerge = 256ull << 20;  // adjacent slices merge into copies up to this
// Copies of at least kBulkMin bytes all go to one stream per GPU, one after the other: measured
// on two H200s, concurrent large copies over several streams (copy engines) to one peer moved
// 20-25% less than the same copies back to back. Smaller copies are latency-bound and spread
// over the other streams, where they overlap. MC_NVLINK_BULK_MIN (bytes) overrides it.
constexpr uint64_t kBulkMin = 1ull << 20;
// How long the completion thread keeps polling for new copies after its last completion before
// it sleeps (see completion_loop).
constexpr uint64_t kIdleSpinUs = 200;

// The control page and its epoch protocol are the same-host stack's (samehost/ctrl_page.h);
// here `active` counts initiator copy groups in flight, all peers together.
using samehost::CtrlPage;
using samehost::EpochWindow;

// Messages on the socket: 4-byte length + text; a reply may carry one fd.

// ------------------------------------------------------------------------------ structures

// One exported buffer (target side).
struct Export {
  uint64_t length = 0;
  int dev = -1;
  bool vmm = false;
  uint32_t access = MC_ACCESS_READ | MC_ACCESS_WRITE;  // what peers may do (mc_buffer_set_access)
  CUipcMemHandle ipc{};
  uint64_t base = 0;  // the cudaMalloc allocation's base (the handle opens the whole of it)
  struct Chunk {
    uint64_t addr, size;
    int fd;
    CUmemGenericAllocationHandle h;
  };
  std::vector<Chunk> chunks;  // VMM mappings covering the buffer, in address order
};

// A buffer of a peer as listed by it (initiator side).
struct RemoteBuf {
  uint64_t addr = 0, length = 0;
  int dev = -1;
  bool vmm = false;
  uint32_t access = 0;  // enforced here: an IPC mapping cannot be made read-only by its owner
  std::string ipc;      // 64 raw bytes
  uint64_t base = 0;
  std::vector<std::pair<uint64_t, uint64_t>> chunks;
  bool same_as(const RemoteBuf &o) const {
    return addr == o.addr && length == o.length && vmm == o.vmm && ipc == o.ipc && base == o.base &&
           chunks == o.chunks;
  }
};

// Our mapping of one remote buffer, for one local GPU.
struct Import {
  int dev = -1;
  CUdeviceptr ptr = 0;  // the remote buffer's first byte in our address space
  // How to undo it: an IPC open (shared by buffers of one allocation), or a VMM range.
  std::string ipc_key;
  CUdeviceptr va = 0;
  uint64_t va_size = 0;
};

class NvTransport;

class NvPeer : public PeerPath, public std::enable_shared_from_this<NvPeer> {
 public:
  explicit NvPeer(NvTransport *t) : t_(t) {}
  ~NvPeer() override;
  Status open(const Descriptor &d);
  // Re-reads the peer's buffer list; imports of buffers that changed or went away retire.
  Status refresh();
  bool opened_ = false;  // the first LIST is in (set before any other thread sees the peer)
  // The remote range [raddr, raddr+*avail) mapped for GPU dev, importing it on first use;
  // MC_ERR_DENIED when the buffer's access forbids op.
  Status translate(uint64_t raddr, int dev, uint32_t op, CUdeviceptr *out, uint64_t *avail);
  void set_dead(const std::string &why) {
    if (!dead.exchange(true)) MC_LOGI("nvlink: peer " << name_ << " is gone: " << why);
  }

  std::atomic<bool> dead{false};
  std::atomic<bool> stale{false};
  std::atomic<int64_t> inflight{0};  // copy groups in flight
  CtrlPage *ctrl = nullptr;          // ctrl_view_'s page, once open
  uint64_t epoch() {
    std::shared_lock<std::shared_mutex> lk(mu_);
    return epoch_;
  }

 private:
  Status import_locked(const RemoteBuf &b, int dev, Import *out);
  void close_import(Import &im);

  NvTransport *t_;
  std::string name_;
  uint64_t incarnation_ = 0;
  bool same_process_ = false;
  std::unique_ptr<samehost::PeerConn> conn_;
  samehost::CtrlView ctrl_view_;
  // mu_ guards bufs_, epoch_, imports_, ipc_opens_ and retired_.
  std::shared_mutex mu_;
  std::map<uint64_t, RemoteBuf> bufs_;
  uint64_t epoch_ = 0;
  std::map<std::pair<uint64_t, int>, Import> imports_;  // (remote addr, local GPU)
  struct IpcOpen {
    CUdeviceptr ptr;
    int refs;
  };
  std::map<std::string, IpcOpen> ipc_opens_;  // (handle bytes + GPU) -> our open of it
  std::vector<Import> retired_;  // imports of buffers that changed; closed once nothing is in flight
};

// One copy: dst <- src, len bytes (device addresses in this process).
struct NvCopy {
  CUdeviceptr dst, src;
  uint64_t len;
};

// One group of copies issued by one submit call on one local GPU, reported together.
struct Op {
  std::shared_ptr<NvPeer> peer;
  int dev = -1;
  std::vector<Slice> slices;
  std::vector<CUevent> events;
  size_t next_event = 0;  // events before this one completed
  mc_status_t status = MC_OK;
  uint64_t bytes = 0;
  EpochWindow win;  // the target's active window, open until the events completed
};

class NvTransport : public Transport {
 public:
  NvTransport(const NvlinkOptions &o, Host *t) : o_(o), target_(t) {
    const char *v = std::getenv("MC_NVLINK_BULK_MIN");
    if (v && std::strtoull(v, nullptr, 10) > 0) bulk_min_ = std::strtoull(v, nullptr, 10);
    const char *w = std::getenv("MC_NVLINK_IDLE_SPIN_US");
    if (w && *w) idle_spin_us_ = std::strtoull(w, nullptr, 10);
  }
  ~NvTransport() override { shutdown(); }
  Status start();
  const char *name() const override { return "nvlink"; }
  bool reachable(const Descriptor &d) override {
    return !d.host_id.empty() && d.host_id == host_boot_id() && d.transports.count("nvlink");
  }
  Status check_descriptor(const Descriptor &d) override {
    auto e = d.transports.find("nvlink");
    proto::NvlinkBlob blob;
    return e == d.transports.end() ? Status::Ok() : proto::decode(e->second, d.name, MC_ERR_METADATA, &blob);
  }
  void describe(Descriptor &d) override;
  Status on_register(const LocalRegion &r) override;
  void on_unregister(const LocalRegion &r) override;
  Status on_access_change(const LocalRegion &r) override;
  std::shared_ptr<PeerPath> connect(const Descriptor &d) override;
  void update(PeerPath &peer, const Descriptor &d) override {
    (void)d;
    static_cast<NvPeer &>(peer).stale.store(true);
  }
  void fail_path(PeerPath &peer, mc_status_t st, const std::string &why) override {
    (void)st;
    static_cast<NvPeer &>(peer).set_dead(why);
  }
  bool accepts(const std::string &l, const std::string &r) const override {
    return l.rfind("cuda", 0) == 0 && r.rfind("cuda", 0) == 0;
  }
  bool accepts_buffer(PeerPath &peer, const BufferDesc &remote) const override {
    (void)peer;
    return remote.ext.count("nvlink") != 0;
  }
  void submit(PeerPath &peer, Slice *slices, size_t n) override {
    submit_on(peer, slices, n, false, nullptr);
  }
  bool submit_on_stream(PeerPath &peer, Slice *slices, size_t n, void *stream) override;
  void shutdown() override;
  std::string stats_json() override;
  std::string peer_stats(const std::string &peer_name, PeerPath &peer) override {
    (void)peer_name;
    return "\"nvlink_inflight\":" + std::to_string(static_cast<NvPeer &>(peer).inflight.load());
  }

  uint32_t timeout_ms() const { return o_.timeout_ms; }
  CUevent get_event(int dev);
  void put_event(int dev, CUevent e);
  std::atomic<uint64_t> bytes{0}, copies{0}, slices_ok{0}, slices_failed{0}, imports{0}, imports_closed{0},
      refreshes{0}, exports{0}, export_failures{0};
  // Same-host admission: refusals of connecting processes (target side), connections dropped
  // over the pending cap, and our own connections a peer refused or we refused (initiator side).
  std::atomic<uint64_t> connects_denied{0};
  std::atomic<int64_t> imports_open{0};
  const std::string &token() const { return o_.auth_token; }

 private:
  // One request of an admitted same-host connection (samehost::UnixServer::Handler).
  bool handle(const std::string &req, std::string *reply, Fd *fd);
  void list_reply(std::string *reply);
  void fd_reply(uint64_t addr, std::string *reply, Fd *fd);
  void completion_loop();
  void drain();
  Status export_buffer(const LocalRegion &r, Export *e);
  // The GPU of the local registered buffer holding p and the bytes left in it; -1 if none.
  int local_dev(const void *p, uint64_t *avail);
  struct Streams {
    std::vector<CUstream> s;
    std::atomic<uint32_t> rr{0};
  };
  Streams *streams(int dev, Status *st);
  void finish(std::unique_ptr<Op> op);
  // submit(), with every copy on the caller's stream `user` when on_user (its context current).
  void submit_on(PeerPath &peer, Slice *slices, size_t n, bool on_user, CUstream user);
  // Queues a group's copies (on its GPU's streams, or on user) and one event per stream used.
  void issue(Op &op, const std::vector<NvCopy> &list, Streams *ss, bool on_user, CUstream user);

  NvlinkOptions o_;
  Host *target_;
  uint64_t bulk_min_ = kBulkMin;
  std::string sock_name_;
  samehost::CtrlOwner ctrl_;
  samehost::UnixServer server_;
  std::atomic<bool> stopping_{false};
  // mu_ guards exports_.
  std::shared_mutex mu_;
  std::map<uint64_t, Export> exports_;
  // gpu_mu_ guards streams_ and events_.
  std::mutex gpu_mu_;
  std::map<int, std::unique_ptr<Streams>> streams_;
  std::map<int, std::vector<CUevent>> events_;
  // The completion thread; cmu_ guards ops_ and cstop_.
  std::thread completer_;
  std::mutex cmu_;
  std::condition_variable ccv_;
  std::vector<std::unique_ptr<Op>> ops_;
  bool cstop_ = false;
  std::atomic<uint32_t> queued_{0};  // ops_ is not empty (read without cmu_ while spinning)
  uint64_t idle_spin_us_ = kIdleSpinUs;
};

// ------------------------------------------------------------------------------ target side

Status NvTransport::start() {
  Status cs = ctrl_.create("mc-nvl-ctrl", kCtrlMagic, o_.incarnation);
  if (!cs.ok()) return cs;
  char nm[64];
  std::snprintf(nm, sizeof nm, "mc-nvl-%d-%016" PRIx64, static_cast<int>(getpid()), o_.incarnation);
  sock_name_ = nm;
  proto::NvlinkHello h;
  h.pid = getpid();
  samehost::UnixServer::Options so{"nvlink",       sock_name_,    o_.auth_token,
                                   o_.incarnation, o_.timeout_ms, kMaxMsg};
  Status ls = server_.start(
      so, h.to_json(), ctrl_.fd(),
      [this](const std::string &q, std::string *r, Fd *f) { return handle(q, r, f); }, &ctrl_.page()->alive);
  if (!ls.ok()) return ls;
  completer_ = std::thread([this] { completion_loop(); });
  return Status::Ok();
}

void NvTransport::describe(Descriptor &d) {
  proto::NvlinkBlob blob;
  blob.socket = sock_name_;
  d.transports["nvlink"] = blob.to_json();
  std::shared_lock<std::shared_mutex> lk(mu_);
  for (auto &b : d.buffers) {
    auto it = exports_.find(b.addr);
    if (it != exports_.end()) b.ext["nvlink"] = json{{"dev", it->second.dev}, {"vmm", it->second.vmm}}.dump();
  }
}

Status NvTransport::export_buffer(const LocalRegion &r, Export *e) {
  int dev = -1;
  if (r.location.size() > 5) dev = std::atoi(r.location.c_str() + 5);
  Status st = use_device(dev);
  if (!st.ok()) return st;
  const Api *a = api();
  e->length = r.length;
  e->dev = dev;
  int legacy = 0;
  a->cuPointerGetAttribute(&legacy, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, r.addr);
  if (legacy) {
    size_t size = 0;
    CUdeviceptr base = 0;
    st = check("cuMemGetAddressRange", a->cuMemGetAddressRange(&base, &size, r.addr));
    if (st.ok()) st = check("cuIpcGetMemHandle", a->cuIpcGetMemHandle(&e->ipc, r.addr));
    if (!st.ok()) return st;
    if (base + size < r.addr + r.length)
      return Err(MC_ERR_INVALID_ARG, "the buffer spans several cudaMalloc allocations");
    e->base = base;
    return Status::Ok();
  }
  // VMM memory: one exported fd per mapping the buffer touches.
  if (!a->cuMemRetainAllocationHandle || !a->cuMemExportToShareableHandle)
    return Err(MC_ERR_UNSUPPORTED, "the CUDA driver has no VMM export");
  e->vmm = true;
  uint64_t p = r.addr, end = r.addr + r.length;
  while (p < end) {
    uint64_t base = 0, size = 0;
    if (a->cuPointerGetAttribute(&base, CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR, p) != CUDA_SUCCESS ||
        a->cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_MAPPING_SIZE, p) != CUDA_SUCCESS || size == 0) {
      base = size = 0;
      a->cuPointerGetAttribute(&base, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, p);
      a->cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, p);
    }
    if (size == 0 || base > p || base + size <= p) {
      char at[32];
      std::snprintf(at, sizeof at, "0x%" PRIx64, p);
      st = Err(MC_ERR_INVALID_ARG, std::string("cannot find the VMM mapping at ") + at);
      break;
    }
    Export::Chunk c{base, size, -1, 0};
    st = check("cuMemRetainAllocationHandle",
               a->cuMemRetainAllocationHandle(&c.h, reinterpret_cast<void *>(p)), MC_ERR_INVALID_ARG);
    if (!st.ok()) break;
    int fd = -1;
    CUresult rr = a->cuMemExportToShareableHandle(&fd, c.h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
    if (rr != CUDA_SUCCESS) {
      a->cuMemRelease(c.h);
      st = Err(MC_ERR_UNSUPPORTED, error_text("cuMemExportToShareableHandle", rr) +
                                       " (VMM memory must be created with the POSIX fd handle type)");
      break;
    }
    c.fd = fd;
    e->chunks.push_back(c);
    p = base + size;
  }
  if (!st.ok()) {
    for (auto &c : e->chunks) {
      ::close(c.fd);
      a->cuMemRelease(c.h);
    }
    e->chunks.clear();
  }
  return st;
}

Status NvTransport::on_register(const LocalRegion &r) {
  if (r.location.rfind("cuda", 0) != 0) return Status::Ok();
  Export e;
  e.access = r.access;
  Status st = export_buffer(r, &e);
  if (!st.ok()) {
    // Still registered: same-host peers reach it over TCP through staging.
    export_failures++;
    MC_LOGW("nvlink: buffer at 0x" << std::hex << r.addr << std::dec << " (" << r.length
                                   << " bytes) is not shareable over CUDA IPC: " << st.message());
    return Status::Ok();
  }
  exports++;
  std::unique_lock<std::shared_mutex> lk(mu_);
  exports_[r.addr] = std::move(e);
  return Status::Ok();
}

void NvTransport::on_unregister(const LocalRegion &r) {
  Export gone;
  {
    std::unique_lock<std::shared_mutex> lk(mu_);
    auto it = exports_.find(r.addr);
    if (it == exports_.end()) return;
    gone = std::move(it->second);
    exports_.erase(it);
    ctrl_.bump_epoch();
  }
  drain();
  const Api *a = api();
  for (auto &c : gone.chunks) {
    ::close(c.fd);
    a->cuMemRelease(c.h);
  }
}

Status NvTransport::on_access_change(const LocalRegion &r) {
  {
    std::unique_lock<std::shared_mutex> lk(mu_);
    auto it = exports_.find(r.addr);
    if (it == exports_.end()) return Status::Ok();
    it->second.access = r.access;
    ctrl_.bump_epoch();
  }
  drain();
  return Status::Ok();
}

// Waits for peer copies that started before they could see the new epoch.
void NvTransport::drain() {
  ctrl_.wait_for_copies(o_.timeout_ms, "nvlink", "an unregister or access change");
}

bool NvTransport::handle(const std::string &req, std::string *reply, Fd *fd) {
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

void NvTransport::list_reply(std::string *reply) {
  proto::NvlinkList l;
  {
    std::shared_lock<std::shared_mutex> lk(mu_);
    l.epoch = ctrl_.page()->epoch.load();
    for (auto &[a, e] : exports_) {
      proto::NvListBuf b;
      b.addr = a;
      b.len = e.length;
      b.dev = e.dev;
      b.vmm = e.vmm;
      b.access = e.access;
      if (e.access == 0) {
        // Peers may not touch it: listed (so a request fails DENIED, not "no buffer") but
        // without a handle.
      } else if (e.vmm) {
        for (auto &ch : e.chunks) b.chunks.emplace_back(ch.addr, ch.size);
      } else {
        b.ipc.assign(reinterpret_cast<const char *>(&e.ipc), sizeof e.ipc);
        b.base = e.base;
      }
      l.buffers.push_back(std::move(b));
    }
  }
  *reply = l.to_json();
}

void NvTransport::fd_reply(uint64_t a, std::string *reply, Fd *fd) {
  bool denied = false;
  {
    std::shared_lock<std::shared_mutex> lk(mu_);
    for (auto &[addr, e] : exports_)
      for (auto &c : e.chunks)
        if (c.addr == a && !fd->valid() && !denied) {
          if (e.access == 0)
            denied = true;
          else
            fd->reset(::fcntl(c.fd, F_DUPFD_CLOEXEC, 0));
        }
  }
  *reply = fd->valid() ? "OK"
           : denied    ? "ERR DENIED peers may not use this buffer"
                       : "ERR no such exported mapping";
}

// ------------------------------------------------------------------------------ initiator side

NvPeer::~NvPeer() {
  // Only reached once no Op holds the peer: no copy through these mappings is running.
  for (auto &[k, im] : imports_) close_import(im);
  for (auto &im : retired_) close_import(im);
}

void NvPeer::close_import(Import &im) {
  const Api *a = api();
  if (!a || im.dev < 0) return;
  if (!use_device(im.dev).ok()) return;
  if (im.va) {
    a->cuMemUnmap(im.va, im.va_size);
    a->cuMemAddressFree(im.va, im.va_size);
  } else if (!im.ipc_key.empty()) {
    auto it = ipc_opens_.find(im.ipc_key);
    if (it != ipc_opens_.end() && --it->second.refs == 0) {
      a->cuIpcCloseMemHandle(it->second.ptr);
      ipc_opens_.erase(it);
    }
  }
  if (im.va || !im.ipc_key.empty()) {
    t_->imports_closed++;
    t_->imports_open--;
  }
  im.dev = -1;
}

Status NvPeer::open(const Descriptor &d) {
  name_ = d.name;
  incarnation_ = d.incarnation;
  same_process_ = d.pid == static_cast<int64_t>(getpid());
  proto::NvlinkBlob blob;
  auto entry = d.transports.find("nvlink");
  Status bs = entry == d.transports.end()
                  ? Err(MC_ERR_METADATA, "nvlink: the descriptor of " + name_ + " has no nvlink entry")
                  : proto::decode(entry->second, name_, MC_ERR_METADATA, &blob);
  if (!bs.ok()) return bs;
  conn_ = std::make_unique<samehost::PeerConn>("nvlink: peer " + name_, kMaxMsg);
  std::string reply;
  Fd cf;  // closed on every path
  Status st = conn_->open(blob.socket, t_->token(), incarnation_, t_->timeout_ms(), &reply, &cf);
  if (!st.ok()) return st;
  proto::NvlinkHello hello;
  st = proto::decode(reply, name_, MC_ERR_TRANSPORT, &hello);
  if (!st.ok()) return st;
  if (!cf.valid()) return Err(MC_ERR_TRANSPORT, "nvlink: peer " + name_ + " sent no control page");
  st = ctrl_view_.map(cf.get(), kCtrlMagic, incarnation_, "nvlink: peer " + name_);
  if (!st.ok()) return st;
  ctrl = ctrl_view_.page();
  st = refresh();
  opened_ = st.ok();
  return st;
}

Status NvPeer::refresh() {
  std::string reply;
  Status st = conn_->request("LIST", &reply, nullptr);
  if (!st.ok()) return st;
  proto::NvlinkList list;
  st = proto::decode(reply, name_, MC_ERR_TRANSPORT, &list);
  if (!st.ok()) {
    // Logged once: here for a refresh (a request's thread fails this peer's requests with it),
    // by connect()'s fallback message while the path opens.
    if (opened_) MC_LOGW("nvlink: " << st.message());
    return st;
  }
  std::map<uint64_t, RemoteBuf> nb;
  for (auto &b : list.buffers) {
    RemoteBuf r;
    r.addr = b.addr;
    r.length = b.len;
    r.dev = b.dev;
    r.vmm = b.vmm;
    r.access = b.access;
    r.chunks = std::move(b.chunks);
    r.ipc = std::move(b.ipc);
    r.base = b.base;
    nb[r.addr] = std::move(r);
  }
  t_->refreshes++;
  std::unique_lock<std::shared_mutex> lk(mu_);
  // Imports of buffers that went away or changed retire: never used again.
  for (auto it = imports_.begin(); it != imports_.end();) {
    auto b = nb.find(it->first.first);
    auto o = bufs_.find(it->first.first);
    if (b == nb.end() || o == bufs_.end() || !b->second.same_as(o->second)) {
      retired_.push_back(std::move(it->second));
      it = imports_.erase(it);
    } else {
      ++it;
    }
  }
  if (inflight.load() == 0) {
    for (auto &im : retired_) close_import(im);
    retired_.clear();
  }
  bufs_ = std::move(nb);
  epoch_ = list.epoch;
  stale.store(false);
  return Status::Ok();
}

Status NvPeer::import_locked(const RemoteBuf &b, int dev, Import *out) {
  if (b.access == 0 || (b.vmm ? b.chunks.empty() : b.ipc.size() != CU_IPC_HANDLE_SIZE))
    return Err(MC_ERR_DENIED, "nvlink: peer " + name_ + " does not let peers use this buffer");
  const Api *a = api();
  Status st = use_device(dev);
  if (!st.ok()) return st;
  out->dev = dev;
  if (same_process_) {
    // Our own process's memory (two engines in one process): the address works as is, once
    // this GPU may access the owner's.
    if (b.dev != dev) {
      Status s2 = use_device(b.dev);
      if (!s2.ok()) return s2;
      st = use_device(dev);
      if (!st.ok()) return st;
      CUresult r = a->cuCtxEnablePeerAccess(primary_context(b.dev), 0);
      if (r != CUDA_SUCCESS && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
        return check("cuCtxEnablePeerAccess", r);
    }
    out->ptr = b.addr;
    return Status::Ok();
  }
  if (!b.vmm) {
    std::string key = b.ipc + std::to_string(dev);
    auto it = ipc_opens_.find(key);
    if (it == ipc_opens_.end()) {
      CUipcMemHandle h;
      std::memcpy(&h, b.ipc.data(), sizeof h);
      CUdeviceptr p = 0;
      st = check("cuIpcOpenMemHandle", a->cuIpcOpenMemHandle(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
      if (!st.ok()) return st;
      it = ipc_opens_.emplace(key, IpcOpen{p, 0}).first;
    }
    it->second.refs++;
    out->ipc_key = key;
    out->ptr = it->second.ptr + (b.addr - b.base);
    t_->imports++;
    t_->imports_open++;
    return Status::Ok();
  }
  if (!a->cuMemAddressReserve || !a->cuMemImportFromShareableHandle || !a->cuMemMap || !a->cuMemSetAccess)
    return Err(MC_ERR_UNSUPPORTED, "the CUDA driver has no VMM import");
  uint64_t total = 0;
  for (auto &c : b.chunks) total += c.second;
  CUdeviceptr va = 0;
  st = check("cuMemAddressReserve", a->cuMemAddressReserve(&va, total, 0, 0, 0));
  if (!st.ok()) return st;
  uint64_t off = 0, mapped = 0;
  for (auto &c : b.chunks) {
    std::string reply;
    Fd fd;
    st = conn_->request(proto::fd_request(c.first), &reply, &fd);
    if (st.ok() && !fd.valid()) st = Err(MC_ERR_TRANSPORT, "nvlink: peer " + name_ + " sent no fd");
    if (!st.ok()) break;
    CUmemGenericAllocationHandle h = 0;
    CUresult r =
        a->cuMemImportFromShareableHandle(&h, reinterpret_cast<void *>(static_cast<intptr_t>(fd.get())),
                                          CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    fd.reset();
    if (r != CUDA_SUCCESS) {
      st = check("cuMemImportFromShareableHandle", r);
      break;
    }
    r = a->cuMemMap(va + off, c.second, 0, h, 0);
    a->cuMemRelease(h);  // the mapping keeps the memory
    if (r != CUDA_SUCCESS) {
      st = check("cuMemMap", r);
      break;
    }
    off += c.second;
    mapped = off;
  }
  if (st.ok()) {
    CUmemAccessDesc ad{};
    ad.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    ad.location.id = dev;
    ad.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    st = check("cuMemSetAccess", a->cuMemSetAccess(va, total, &ad, 1));
  }
  if (!st.ok()) {
    if (mapped) a->cuMemUnmap(va, mapped);
    a->cuMemAddressFree(va, total);
    return st;
  }
  out->va = va;
  out->va_size = total;
  out->ptr = va + (b.addr - b.chunks.front().first);
  t_->imports++;
  t_->imports_open++;
  return Status::Ok();
}

Status NvPeer::translate(uint64_t raddr, int dev, uint32_t op, CUdeviceptr *out, uint64_t *avail) {
  for (int pass = 0; pass < 2; pass++) {
    {
      std::shared_lock<std::shared_mutex> lk(mu_);
      auto it = bufs_.upper_bound(raddr);
      if (it != bufs_.begin()) {
        --it;
        const RemoteBuf &b = it->second;
        if (raddr < b.addr + b.length) {
          if (!(b.access & (op == MC_WRITE ? MC_ACCESS_WRITE : MC_ACCESS_READ)))
            return Err(MC_ERR_DENIED, "nvlink: peer " + name_ + "'s buffer does not allow this " +
                                          (op == MC_WRITE ? "WRITE" : "READ"));
          auto im = imports_.find({b.addr, dev});
          if (im != imports_.end()) {
            *out = im->second.ptr + (raddr - b.addr);
            *avail = b.addr + b.length - raddr;
            return Status::Ok();
          }
        }
      }
    }
    {
      std::unique_lock<std::shared_mutex> lk(mu_);
      auto it = bufs_.upper_bound(raddr);
      if (it != bufs_.begin()) {
        --it;
        const RemoteBuf &b = it->second;
        if (raddr < b.addr + b.length) {
          if (imports_.count({b.addr, dev})) continue;  // another thread imported it meanwhile
          Import im;
          Status st = import_locked(b, dev, &im);
          if (!st.ok()) return st;
          imports_[{b.addr, dev}] = std::move(im);
          continue;
        }
      }
    }
    if (pass == 0) {
      Status st = refresh();  // a buffer the peer registered after our last LIST
      if (!st.ok()) return st;
    }
  }
  return Err(MC_ERR_TRANSPORT, "nvlink: peer " + name_ + " exports no GPU buffer at this address");
}

// ------------------------------------------------------------------------------ data path

int NvTransport::local_dev(const void *p, uint64_t *avail) {
  uint64_t a = reinterpret_cast<uint64_t>(p);
  std::shared_lock<std::shared_mutex> lk(mu_);
  auto it = exports_.upper_bound(a);
  if (it != exports_.begin()) {
    --it;
    if (a < it->first + it->second.length) {
      *avail = it->first + it->second.length - a;
      return it->second.dev;
    }
  }
  lk.unlock();
  // Not exported (export failed): ask the driver.
  PointerInfo pi = pointer_info(p);
  if (!pi.device) return -1;
  uint64_t start = 0, size = 0;
  api()->cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, a);
  api()->cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, a);
  *avail = (size && start <= a && a < start + size) ? start + size - a : 1;
  return pi.ordinal;
}

NvTransport::Streams *NvTransport::streams(int dev, Status *st) {
  std::lock_guard<std::mutex> lk(gpu_mu_);
  auto &s = streams_[dev];
  if (s) return s.get();
  *st = use_device(dev);
  if (!st->ok()) return nullptr;
  auto ns = std::make_unique<Streams>();
  for (uint32_t i = 0; i < std::max<uint32_t>(1, o_.streams); i++) {
    CUstream x = nullptr;
    *st = check("cuStreamCreate", api()->cuStreamCreate(&x, CU_STREAM_NON_BLOCKING));
    if (!st->ok()) {
      for (auto y : ns->s) api()->cuStreamDestroy(y);
      return nullptr;
    }
    ns->s.push_back(x);
  }
  s = std::move(ns);
  return s.get();
}

CUevent NvTransport::get_event(int dev) {
  {
    std::lock_guard<std::mutex> lk(gpu_mu_);
    auto &v = events_[dev];
    if (!v.empty()) {
      CUevent e = v.back();
      v.pop_back();
      return e;
    }
  }
  CUevent e = nullptr;
  if (api()->cuEventCreate(&e, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) return nullptr;
  return e;
}

void NvTransport::put_event(int dev, CUevent e) {
  std::lock_guard<std::mutex> lk(gpu_mu_);
  events_[dev].push_back(e);
}

// The caller's stream can carry the copies when its context is the primary context of the GPU
// that every slice's local memory is on (the context the imports were made in): then they are
// ordered by the stream itself, with no hand-off to any thread.
bool NvTransport::submit_on_stream(PeerPath &path, Slice *s, size_t n, void *stream) {
  if (n == 0 || stopping_.load()) return false;
  int dev = -1;
  for (size_t i = 0; i < n; i++) {
    uint64_t avail = 0;
    int d = local_dev(s[i].local, &avail);
    if (d < 0 || (dev >= 0 && d != dev) || avail < s[i].len) return false;
    dev = d;
  }
  CUcontext cur = nullptr;
  if (api()->cuCtxGetCurrent(&cur) != CUDA_SUCCESS || !cur) return false;
  if (!primary_context(dev)) {
    Status st = use_device(dev);  // retains it (the caller's context is current again below)
    Status back;
    swap_context(cur, &back);
    if (!st.ok() || !back.ok()) return false;
  }
  if (cur != primary_context(dev)) return false;
  submit_on(path, s, n, true, static_cast<CUstream>(stream));
  return true;
}

void NvTransport::submit_on(PeerPath &path, Slice *s, size_t n, bool on_user, CUstream user) {
  auto peer = static_cast<NvPeer &>(path).shared_from_this();
  std::vector<std::pair<Slice, mc_status_t>> early;  // reported before returning, no lock held
  auto report_early = [&] {
    for (auto &[sl, st] : early) {
      (st == MC_OK ? slices_ok : slices_failed)++;
      target_->complete(sl, st);
    }
  };
  if (stopping_.load() || peer->dead.load()) {
    for (size_t i = 0; i < n; i++) early.push_back({s[i], MC_ERR_PEER_DOWN});
    report_early();
    return;
  }
  // Enter the target's active window with a buffer list of its current epoch. inflight is held
  // for the whole call too, so a refresh inside it never closes a mapping this call already uses.
  CtrlPage *pc = peer->ctrl;
  peer->inflight.fetch_add(1);
  EpochWindow win(pc);
  bool entered = false;
  Status rst;
  for (int attempt = 0; attempt < 3; attempt++) {
    if (!peer->stale.load() && win.current(peer->epoch())) {
      entered = true;
      break;
    }
    win.close();
    rst = peer->refresh();
    win = EpochWindow(pc);
    if (!rst.ok()) break;
  }
  if (!entered) {
    win.close();
    peer->inflight.fetch_sub(1);
    MC_LOGI(
        "nvlink: cannot reach the buffers of peer: " << (rst.ok() ? "they keep changing" : rst.message()));
    mc_status_t code = rst.code() == MC_ERR_PEER_DOWN ? MC_ERR_PEER_DOWN : MC_ERR_TRANSPORT;
    for (size_t i = 0; i < n; i++) early.push_back({s[i], code});
    report_early();
    return;
  }

  // Cut slices into copies (at buffer ends on either side) and merge runs adjacent on both.
  struct Group {
    std::unique_ptr<Op> op;
    std::vector<NvCopy> copies;
  };
  std::vector<Group> groups;  // one per local GPU, few
  for (size_t i = 0; i < n; i++) {
    const Slice &sl = s[i];
    if (target_->canceled(sl)) {
      early.push_back({sl, MC_ERR_CANCELED});
      continue;
    }
    std::vector<NvCopy> mine;
    int dev = -1;
    mc_status_t st = MC_OK;
    for (uint64_t off = 0; off < sl.len && st == MC_OK;) {
      char *lp = static_cast<char *>(sl.local) + off;
      uint64_t lavail = 0;
      int d = local_dev(lp, &lavail);
      if (d < 0 || (dev >= 0 && d != dev)) {
        st = MC_ERR_TRANSPORT;  // not GPU memory, or a slice over two GPUs (the engine merges none)
        break;
      }
      dev = d;
      CUdeviceptr rp = 0;
      uint64_t ravail = 0;
      Status ts = peer->translate(sl.remote + off, dev, sl.op, &rp, &ravail);
      if (!ts.ok()) {
        MC_LOGI(ts.message());
        st = (ts.code() == MC_ERR_PEER_DOWN || ts.code() == MC_ERR_DENIED) ? ts.code() : MC_ERR_TRANSPORT;
        break;
      }
      uint64_t len = std::min({sl.len - off, lavail, ravail});
      CUdeviceptr l = reinterpret_cast<CUdeviceptr>(lp);
      if (sl.op == MC_WRITE)
        mine.push_back({rp, l, len});
      else
        mine.push_back({l, rp, len});
      off += len;
    }
    if (st != MC_OK) {
      early.push_back({sl, st});
      continue;
    }
    Group *g = nullptr;
    for (auto &x : groups)
      if (x.op->dev == dev) g = &x;
    if (!g) {
      groups.push_back({std::make_unique<Op>(), {}});
      g = &groups.back();
      g->op->peer = peer;
      g->op->dev = dev;
    }
    for (auto &c : mine) {
      if (!g->copies.empty()) {
        NvCopy &b = g->copies.back();
        if (b.dst + b.len == c.dst && b.src + b.len == c.src && b.len + c.len <= kMaxMerge) {
          b.len += c.len;
          continue;
        }
      }
      g->copies.push_back(c);
    }
    g->op->slices.push_back(sl);
    g->op->bytes += sl.len;
  }

  // Issue each group's copies over its GPU's streams; one event per stream used.
  const Api *a = api();
  for (auto &g : groups) {
    Op &op = *g.op;
    Status st = use_device(op.dev);
    Streams *ss = st.ok() ? streams(op.dev, &st) : nullptr;
    if (!ss) {
      MC_LOGW("nvlink: " << st.message());
      for (auto &sl : op.slices) early.push_back({sl, MC_ERR_TRANSPORT});
      op.slices.clear();
      continue;
    }
    issue(op, g.copies, ss, on_user, user);
    peer->inflight.fetch_add(1);
    op.win = EpochWindow(pc);  // held until the events completed
    std::unique_lock<std::mutex> lk(cmu_);
    if (cstop_) {
      // Shut down while we issued: no completion thread any more, so wait for the copies here.
      lk.unlock();
      for (auto e : op.events) a->cuEventSynchronize(e);
      finish(std::move(g.op));
      continue;
    }
    ops_.push_back(std::move(g.op));
    queued_.store(1, std::memory_order_release);
    ccv_.notify_one();
  }
  win.close();
  peer->inflight.fetch_sub(1);
  report_early();
}

void NvTransport::issue(Op &op, const std::vector<NvCopy> &list, Streams *ss, bool on_user, CUstream user) {
  const Api *a = api();
  uint32_t ns = on_user ? 1 : static_cast<uint32_t>(ss->s.size());
  auto stream_of = [&](uint32_t k) { return on_user ? user : ss->s[k]; };
  std::vector<bool> used(ns, false);
  uint32_t rr = on_user ? 0 : ss->rr.fetch_add(1);
  for (auto &c : list) {
    uint32_t k = (c.len >= bulk_min_ || ns == 1) ? 0 : 1 + rr++ % (ns - 1);
    CUresult r = a->cuMemcpyAsync(c.dst, c.src, c.len, stream_of(k));
    if (r != CUDA_SUCCESS) {
      MC_LOGW("nvlink: " << error_text("cuMemcpyAsync", r));
      op.status = MC_ERR_TRANSPORT;
      break;
    }
    used[k] = true;
    copies++;
  }
  for (uint32_t k = 0; k < ns; k++) {
    if (!used[k]) continue;
    CUevent e = get_event(op.dev);
    if (!e || a->cuEventRecord(e, stream_of(k)) != CUDA_SUCCESS) {
      // Without an event we cannot tell when the copy ends: wait for the stream here.
      if (e) put_event(op.dev, e);
      a->cuStreamSynchronize(stream_of(k));
      op.status = MC_ERR_TRANSPORT;
      continue;
    }
    op.events.push_back(e);
  }
}

void NvTransport::finish(std::unique_ptr<Op> op) {
  for (auto e : op->events) put_event(op->dev, e);
  op->peer->inflight.fetch_sub(1);
  op->win.close();
  if (op->status == MC_OK) bytes += op->bytes;
  for (auto &sl : op->slices) {
    (op->status == MC_OK ? slices_ok : slices_failed)++;
    target_->complete(sl, op->status);
  }
}

// Polls the events of every op in flight. While copies run it spins (yielding), so small copies
// complete within microseconds; with nothing in flight it sleeps on the condition variable.
void NvTransport::completion_loop() {
  const Api *a = api();
  std::vector<std::unique_ptr<Op>> mine, done;
  uint64_t idle_since = now_us();
  for (;;) {
    if (mine.empty()) {
      // Stay awake for a moment after the last completion: the next request of a caller that
      // submits one at a time then needs no wake-up (a futex wake costs 5-10 us, more than a
      // small copy). MC_NVLINK_IDLE_SPIN_US sets how long (0: sleep at once).
      const uint64_t t0 = now_us();
      while (queued_.load(std::memory_order_acquire) == 0 && now_us() - t0 < idle_spin_us_)
        std::this_thread::yield();
    }
    {
      std::unique_lock<std::mutex> lk(cmu_);
      if (mine.empty()) ccv_.wait(lk, [&] { return cstop_ || !ops_.empty(); });
      for (auto &o : ops_) mine.push_back(std::move(o));
      ops_.clear();
      queued_.store(0, std::memory_order_relaxed);
      if (cstop_ && mine.empty()) return;
    }
    for (auto &op : mine) {
      use_device(op->dev);
      while (op->next_event < op->events.size()) {
        CUresult r = a->cuEventQuery(op->events[op->next_event]);
        if (r == CUDA_ERROR_NOT_READY) break;
        if (r != CUDA_SUCCESS) {
          MC_LOGW("nvlink: " << error_text("a copy failed (cuEventQuery)", r));
          op->status = MC_ERR_TRANSPORT;
        }
        op->next_event++;
      }
    }
    size_t keep = 0;
    for (auto &op : mine) {
      if (op->next_event == op->events.size())
        done.push_back(std::move(op));
      else
        mine[keep++] = std::move(op);
    }
    mine.resize(keep);
    if (!done.empty()) {
      for (auto &op : done) finish(std::move(op));
      done.clear();
      idle_since = now_us();
    } else if (!mine.empty()) {
      // Copies in flight end within milliseconds: spin (yielding) for that long, so completions
      // are seen at once; only then back off to short sleeps.
      if (now_us() - idle_since < 5000)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
}

std::shared_ptr<PeerPath> NvTransport::connect(const Descriptor &d) {
  auto p = std::make_shared<NvPeer>(this);
  Status st = p->open(d);
  if (!st.ok()) {
    if (st.code() == MC_ERR_DENIED) connects_denied++;
    MC_LOGW("nvlink: cannot reach " << d.name << " over CUDA IPC (" << st.message()
                                    << "); GPU buffers go over tcp");
    return nullptr;
  }
  return p;
}

void NvTransport::shutdown() {
  stopping_.store(true);
  server_.stop();
  // Copies on the GPU cannot be taken back: the completion thread runs until they ended.
  {
    std::lock_guard<std::mutex> lk(cmu_);
    cstop_ = true;
    ccv_.notify_all();
  }
  if (completer_.joinable()) completer_.join();
}

std::string NvTransport::stats_json() {
  JsonObject o;
  o.num("bytes_copied", bytes.load());
  o.num("copies", copies.load());
  o.num("slices_completed", slices_ok.load());
  o.num("slices_failed", slices_failed.load());
  o.num("exports", exports.load());
  o.num("export_failures", export_failures.load());
  o.num("imports", imports.load());
  o.num("imports_open", imports_open.load());
  o.num("imports_closed", imports_closed.load());
  o.num("list_refreshes", refreshes.load());
  o.num("handshakes_denied", server_.hs_denied.load());
  o.num("handshakes_dropped", server_.hs_dropped.load());
  o.num("connects_denied", connects_denied.load());
  return o.done();
}

}  // namespace

std::unique_ptr<Transport> make_nvlink_transport(const NvlinkOptions &o, Host *target, std::string *why) {
  if (!cuda::api()) {
    *why = cuda::why_unavailable();
    return nullptr;
  }
  auto t = std::make_unique<NvTransport>(o, target);
  Status st = t->start();
  if (!st.ok()) {
    *why = st.message();
    return nullptr;
  }
  return t;
}

}  // namespace mc
