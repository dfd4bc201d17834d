// One client (initiator) connection to a peer, served by one event loop: a non-blocking connect,
// the admission handshake (auth::ClientHandshake), BIND, then requests written in order and
// replies read in the same order. The submit path only queues slices and wakes the loop; the
// loop alone touches the socket, the slices in flight and their local memory, so it alone
// completes them: every slice exactly once, after the loop stopped touching its memory.
#pragma once
#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proto/auth.h"
#include "proto/wire.h"
#include "transport/host.h"
#include "transport/tcp/fences.h"
#include "transport/tcp/io_loop.h"
#include "util/net.h"

namespace mc::tcp {

constexpr size_t kReadBuf = 256 * 1024;  // replies' headers and small payloads are read into this

// The transport's counters (stats_json), shared by its connections.
struct Counters {
  std::atomic<uint64_t> bytes_sent{0}, bytes_received{0}, slices_ok{0}, slices_failed{0};
  std::atomic<uint64_t> conns_opened{0}, conns_failed{0}, fences_sent{0};
};

// What a connection needs from its transport; outlives every connection.
struct ClientEnv {
  Host *host = nullptr;
  Counters *counters = nullptr;
  uint32_t timeout_ms = 5000;
  std::string token;
  uint64_t nonce = 1;  // this transport's BIND id
};

class ClientConn : public IoHandler, public std::enable_shared_from_this<ClientConn> {
 public:
  ClientConn(const ClientEnv *env, IoLoop *loop, HostPort addr, uint64_t incarnation, uint64_t seq,
             std::shared_ptr<Fences> fences, std::shared_ptr<std::atomic<uint64_t>> heard);
  ~ClientConn() override;
  // Any thread. Connects on the loop; false when the loop no longer runs (the connection is
  // then broken and empty).
  bool start();
  // Any thread: queues slices and wakes the loop; false (nothing queued) when broken or retired.
  bool enqueue(const Slice *s, size_t n);
  // Opened before the latest breakage of a connection to this peer: takes no new work.
  bool stale() { return epoch_ < fences_->current(); }
  // Any thread: finish what was queued, then close cleanly (nothing fails).
  void retire();
  // Any thread: break the connection; its slices fail with st on the loop.
  void fail(mc_status_t st, const std::string &why);
  bool broken() {
    std::lock_guard<std::mutex> lk(mu_);
    return broken_;
  }
  // Only once the loop is gone (shutdown): fails whatever is still queued or in flight.
  void abandon();

  void on_events(uint32_t events) override;
  void on_tick(uint64_t now) override;
  void on_stop() override;

 private:
  // One part of the byte stream to send: host bytes, or device memory staged through bounce_.
  struct Piece {
    const char *p;
    uint64_t n;
    bool device;
    bool payload;       // a WRITE's data (counted in bytes_sent)
    bool ends_request;  // the last piece of a request: its header in hdrs_ can go
  };
  struct Inflight {
    Slice s;
    uint64_t id;
  };
  enum Phase { kConnecting, kHandshake, kReady, kClosed };
  enum RecvPhase { kHeader, kErrorText, kPayload };

  void begin();
  void connected();
  void handshake_readable();
  void handshake_done();
  bool send_raw();
  void kick();
  bool refill();
  void try_send();
  ssize_t send_host_pieces();
  ssize_t send_device_piece();
  void advance_sent(uint64_t n);
  void on_readable();
  int recv_unit();
  void on_header();
  void on_error_text();
  ssize_t pull(char *dst, size_t n);
  int recv_payload();
  bool stage_chunk(char *dst);
  void complete_front(mc_status_t st);
  void break_now(mc_status_t st, const std::string &why);
  void teardown();
  void fail_slices(std::deque<Slice> &q, std::deque<Inflight> &f, mc_status_t st, const std::string &why);
  void want_out(bool on);
  std::string who() const { return addr_.str(); }

  const ClientEnv *env_;
  IoLoop *loop_;
  HostPort addr_;
  uint64_t incarnation_;
  uint64_t seq_;  // this connection's number in its BIND
  std::shared_ptr<Fences> fences_;
  std::shared_ptr<std::atomic<uint64_t>> heard_;  // the path's heard_ms: set on every receive
  uint64_t epoch_ = 0;                            // fences_->epoch when it was opened
  std::vector<uint64_t> carried_;                 // broken connections its BIND names (set once, in the ctor)

  // mu_ guards the fields up to the blank line: what other threads hand to the loop.
  std::mutex mu_;
  std::deque<Slice> queue_;  // not sent yet
  bool broken_ = false;
  bool retired_ = false;
  mc_status_t status_ = MC_OK;
  std::string why_;

  std::atomic<bool> kick_pending_{false};
  // The loop thread alone touches everything below.
  Phase phase_ = kConnecting;
  Fd fd_;
  uint64_t deadline_ = 0;       // connect + handshake must end by then
  uint64_t last_progress_ = 0;  // ms
  std::unique_ptr<auth::ClientHandshake> hs_;
  bool out_armed_ = false;
  bool ticking_ = true;  // the loop calls on_tick (it does from add() on)
  bool wr_shut_ = false;
  bool confirmed_ = false;
  bool need_ok_ = false;  // with a token, the server's verdict (AUTH_OK) comes first
  std::deque<Inflight> inflight_;
  uint64_t next_id_ = 1;
  std::deque<wire::Header> hdrs_;
  std::deque<Piece> pieces_;
  std::string pending_out_;  // handshake bytes a short send left over
  std::vector<char> sbounce_;
  uint64_t sb_len_ = 0, sb_off_ = 0;
  std::unique_ptr<char[]> rbuf_;  // kReadBuf bytes, not zeroed: an idle connection touches none of it
  size_t rpos_ = 0, rend_ = 0;
  RecvPhase rphase_ = kHeader;
  wire::Header rh_{};
  uint64_t rdone_ = 0;
  bool rskip_ = false;    // a canceled READ's data: drained, never written
  bool rdev_ = false;     // the READ's destination is GPU memory: staged through rbounce_
  uint64_t rpulled_ = 0;  // bytes read from the socket in this wake-up
  std::string rtext_;
  std::vector<char> rbounce_;
};

}  // namespace mc::tcp
