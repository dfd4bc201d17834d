// One served (target) data connection, handed over by the engine's listener and served by one
// event loop: BIND (with its fences), then READ/WRITE against registered memory, PING, and
// ERROR before closing on a bad request. Requests are parsed as bytes come; replies go out in
// request order, small ones gathered into one buffer so a burst of requests costs one send,
// a large READ's data sent straight from the pinned memory, GPU memory staged chunk-wise. It
// stops reading while its replies back up, so a peer that does not read cannot grow it.
#pragma once
#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "proto/wire.h"
#include "transport/host.h"
#include "transport/tcp/io_loop.h"
#include "transport/tcp/served_binds.h"
#include "util/net.h"

namespace mc::tcp {

struct Counters;

// What a served connection needs from its transport; outlives every connection.
struct ServedEnv {
  Host *host = nullptr;
  Counters *counters = nullptr;
  ServedBinds *binds = nullptr;
  uint32_t timeout_ms = 5000;
  std::atomic<uint64_t> requests{0}, refused{0};
};

class ServedConn : public IoHandler, public std::enable_shared_from_this<ServedConn> {
 public:
  // readahead: bytes the listener already read from fd, beginning at a message header.
  ServedConn(ServedEnv *env, IoLoop *loop, Fd fd, std::string readahead);
  ~ServedConn() override;
  // Any thread: starts serving on the loop; false (fd closed) when the loop no longer runs.
  static bool adopt(ServedEnv *env, IoLoop *loop, Fd fd, std::string readahead);

  void on_events(uint32_t events) override;
  void on_tick(uint64_t now) override;
  void on_stop() override { close_now(); }

 private:
  enum Phase { kHeader, kBindList, kBindWait, kWriteData, kDrain, kClosing, kClosed };
  // One part of the reply stream: bytes owned here, or a READ's data in pinned memory (host,
  // or GPU memory staged through sbounce_), unpinned once sent.
  struct Out {
    std::vector<char> own;
    const char *ext = nullptr;
    uint64_t len = 0, off = 0;
    bool device = false;
    uint64_t pin_addr = 0;  // pin_len = len when ext
    const char *data() const { return (ext ? ext : own.data()) + off; }
    uint64_t size() const { return (ext ? len : own.size()) - off; }
  };

  void begin();
  void pump();
  void process();
  int step();
  ssize_t pull(char *dst, size_t n);
  int pull_into(char *dst, uint64_t total);
  void on_request();
  void on_write(mc_status_t st);
  void on_read(mc_status_t st);
  int recv_write();
  int recv_drain();
  void do_bind(bool first);
  void retry_bind();
  void refuse(const std::string &why, mc_status_t code = MC_ERR_TRANSPORT, bool warn = true);
  void put(const void *p, size_t n);
  void put_user(const void *p, size_t n);  // put() of registered memory (see its comment)
  void put_header(const wire::Header &h) { put(&h, sizeof h); }
  void put_ref(uint64_t addr, uint64_t len, bool device);
  void try_send();
  ssize_t send_host();
  ssize_t send_device();
  void advance(uint64_t n);
  void drop_front();
  bool paused() const;
  bool reading() const {
    return phase_ == kHeader || phase_ == kBindList || phase_ == kWriteData || phase_ == kDrain;
  }
  bool mid_request() const { return phase_ != kHeader || rdone_ > 0 || !out_.empty(); }
  void update_events();
  void close_now();

  ServedEnv *env_;
  IoLoop *loop_;
  bool ticking_ = true;  // the loop calls on_tick (from add() on; off while idle)
  Fd fd_;
  Phase phase_ = kHeader;
  uint64_t last_progress_ = 0;
  uint32_t armed_ = 0;  // the events asked of the loop

  // Requests in.
  std::vector<char> rbuf_;
  size_t rpos_ = 0, rend_ = 0;
  uint64_t rpulled_ = 0;    // bytes read from the socket in this wake-up
  bool exact_hdr_ = false;  // the last WRITE carried a large payload: read the next header alone
  bool rdrained_ = false;   // a read in this wake-up came back short: the socket is empty
  bool sfull_ = false;      // the last send came back short: the socket's buffer is full
  wire::Header rh_{};       // the request being read
  uint64_t rdone_ = 0;      // bytes of the current unit (header, BIND list, payload) read
  std::vector<uint64_t> dead_;
  bool bound_ = false;
  ServedBinds::Key key_{0, 0};
  uint64_t bind_deadline_ = 0;
  bool wdev_ = false;  // the WRITE's destination is GPU memory: staged through rbounce_
  mc_status_t wst_ = MC_OK;
  std::vector<char> rbounce_;

  // Replies out.
  std::deque<Out> out_;
  uint64_t owned_ = 0;  // bytes of `own` pieces queued
  std::vector<char> sbounce_;
  uint64_t sb_len_ = 0, sb_off_ = 0;
};

}  // namespace mc::tcp
