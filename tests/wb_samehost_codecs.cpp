// White-box tests of the same-host codecs (src/proto/samehost_msg.h): every message an honest
// peer sends decodes back to what it encoded; every malformed one (a string where a number
// belongs, negative, float, missing field, wrong type, truncated JSON, huge array, wrapping or
// empty or overlapping ranges, pid 0 / -1, bad hex) is refused with the status code of its kind
// and a message naming the peer, the message and the field, and never throws.
//
// And the shared same-host stack on a real abstract socket (src/transport/samehost/): the
// server answers requests of many admitted peers from one thread, drops a hostile one (a huge
// length, an unknown request) and goes on serving the others; the client closes a descriptor
// that came with a refusal; the watch loop reports a hang-up once, and never after unwatch.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "proto/samehost_msg.h"
#include "proto/unix_msg.h"
#include "transport/samehost/peer_conn.h"
#include "transport/samehost/unix_server.h"
#include "transport/samehost/watch_loop.h"

extern "C" {
#include <cmocka.h>
}

using namespace mc::proto;

namespace {

const char *kPeer = "peer-x:1234";

// Decodes text as Msg and checks it is refused with code and a message holding peer, kWhat and
// want (the field's path); the output struct stays untouched.
template <class Msg>
void refused(const std::string &text, mc_status_t code, const char *want) {
  Msg m;
  std::string before = m.to_json();
  mc::Status st = decode(text, kPeer, code, &m);
  if (st.ok() || st.code() != code || st.message().find(want) == std::string::npos ||
      st.message().find(kPeer) == std::string::npos || st.message().find(Msg::kWhat) == std::string::npos) {
    std::fprintf(stderr, "%s: input %.200s\n  got %s (%d), wanted field %s\n", Msg::kWhat, text.c_str(),
                 st.message().c_str(), st.code(), want);
    fail();
  }
  assert_string_equal(m.to_json().c_str(), before.c_str());
}

template <class Msg>
Msg accepted(const std::string &text, mc_status_t code) {
  Msg m;
  mc::Status st = decode(text, kPeer, code, &m);
  if (!st.ok()) std::fprintf(stderr, "%s: %s\n", Msg::kWhat, st.message().c_str());
  assert_true(st.ok());
  return m;
}

void blobs(void **) {
  for (int nv = 0; nv < 2; nv++) {
    auto ok = [&](const std::string &t) {
      return nv ? accepted<NvlinkBlob>(t, MC_ERR_METADATA).socket : accepted<ShmBlob>(t, MC_ERR_METADATA).socket;
    };
    auto bad = [&](const std::string &t, const char *f) {
      nv ? refused<NvlinkBlob>(t, MC_ERR_METADATA, f) : refused<ShmBlob>(t, MC_ERR_METADATA, f);
    };
    assert_string_equal(ok(R"({"socket":"mc-shm-1-2"})").c_str(), "mc-shm-1-2");
    bad(R"({"socket":[1]})", "'socket'");  // the descriptor seen in redis (issue 18)
    bad(R"({"socket":1})", "'socket'");
    bad(R"({"socket":null})", "'socket'");
    bad(R"({"sock":"x"})", "'socket'");
    bad(R"({"socket":""})", "'socket'");
    bad(R"({"socket":"a\u0000b"})", "'socket'");
    bad("{\"socket\":\"" + std::string(200, 'a') + "\"}", "'socket'");
    bad(R"({"socket":"x")", "the message");
    bad(R"(["socket"])", "the message");
    bad("", "the message");
  }
  ShmBlob b;
  b.socket = "mc-shm-9";
  assert_string_equal(accepted<ShmBlob>(b.to_json(), MC_ERR_METADATA).socket.c_str(), "mc-shm-9");
}

void hellos(void **) {
  ShmHello h;
  h.pid = 4242;
  h.ctrl = 0x7f0000001000;
  ShmHello g = accepted<ShmHello>(h.to_json(), MC_ERR_TRANSPORT);
  assert_int_equal(g.pid, 4242);
  assert_true(g.ctrl == 0x7f0000001000);
  refused<ShmHello>(R"({"pid":"4242","ctrl":1})", MC_ERR_TRANSPORT, "'pid'");
  refused<ShmHello>(R"({"pid":-1,"ctrl":1})", MC_ERR_TRANSPORT, "'pid'");
  refused<ShmHello>(R"({"pid":0,"ctrl":1})", MC_ERR_TRANSPORT, "'pid'");
  refused<ShmHello>(R"({"pid":1.5,"ctrl":1})", MC_ERR_TRANSPORT, "'pid'");
  refused<ShmHello>(R"({"pid":99999999999,"ctrl":1})", MC_ERR_TRANSPORT, "'pid'");
  refused<ShmHello>(R"({"ctrl":1})", MC_ERR_TRANSPORT, "'pid'");
  refused<ShmHello>(R"({"pid":7})", MC_ERR_TRANSPORT, "'ctrl'");
  refused<ShmHello>(R"({"pid":7,"ctrl":0})", MC_ERR_TRANSPORT, "'ctrl'");
  refused<ShmHello>(R"({"pid":7,"ctrl":-5})", MC_ERR_TRANSPORT, "'ctrl'");
  refused<ShmHello>(R"({"pid":7,"ctrl":"0x10"})", MC_ERR_TRANSPORT, "'ctrl'");
  refused<ShmHello>(R"({"pid":7,)", MC_ERR_TRANSPORT, "the message");
  NvlinkHello n;
  n.pid = 17;
  assert_int_equal(accepted<NvlinkHello>(n.to_json(), MC_ERR_TRANSPORT).pid, 17);
  refused<NvlinkHello>(R"({"pid":[17]})", MC_ERR_TRANSPORT, "'pid'");
  refused<NvlinkHello>(R"({"pid":-1})", MC_ERR_TRANSPORT, "'pid'");
  refused<NvlinkHello>(R"({})", MC_ERR_TRANSPORT, "'pid'");
}

std::string shm_list(const std::string &bufs) { return R"({"epoch":3,"buffers":[)" + bufs + "]}"; }

void shm_lists(void **) {
  ShmList l;
  l.epoch = 9;
  auto buf = [](uint64_t addr, uint64_t len, bool memfd, uint32_t access) {
    ShmListBuf b;
    b.addr = addr;
    b.len = len;
    b.memfd = memfd;
    b.access = access;
    return b;
  };
  l.buffers.push_back(buf(0x1000, 0x1000, true, MC_ACCESS_READ));
  l.buffers.push_back(buf(0x2000, 0x10, false, MC_ACCESS_READ | MC_ACCESS_WRITE));
  ShmList g = accepted<ShmList>(l.to_json(), MC_ERR_TRANSPORT);
  assert_string_equal(g.to_json().c_str(), l.to_json().c_str());
  assert_int_equal(accepted<ShmList>(shm_list(""), MC_ERR_TRANSPORT).buffers.size(), 0);
  auto bad = [](const std::string &t, const char *f) { refused<ShmList>(t, MC_ERR_TRANSPORT, f); };
  bad(R"({"epoch":"3","buffers":[]})", "'epoch'");
  bad(R"({"epoch":-3,"buffers":[]})", "'epoch'");
  bad(R"({"epoch":3.5,"buffers":[]})", "'epoch'");
  bad(R"({"buffers":[]})", "'epoch'");
  bad(R"({"epoch":3})", "'buffers'");
  bad(R"({"epoch":3,"buffers":{}})", "'buffers'");
  bad(shm_list("[4096,4096,true,3]"), "'buffers[0]'");  // the old positional form
  bad(shm_list(R"({"addr":"4096","len":1,"memfd":true,"access":3})"), "'buffers[0].addr'");
  bad(shm_list(R"({"addr":4096,"len":-1,"memfd":true,"access":3})"), "'buffers[0].len'");
  bad(shm_list(R"({"addr":4096,"len":0,"memfd":true,"access":3})"), "'buffers[0].len'");
  bad(shm_list(R"({"addr":18446744073709551615,"len":2,"memfd":true,"access":3})"), "'buffers[0].len'");
  bad(shm_list(R"({"addr":4096,"len":1,"memfd":1,"access":3})"), "'buffers[0].memfd'");
  bad(shm_list(R"({"addr":4096,"len":1,"memfd":true,"access":8})"), "'buffers[0].access'");
  bad(shm_list(R"({"addr":4096,"len":1,"memfd":true})"), "'buffers[0].access'");
  bad(shm_list(R"({"addr":4096,"len":4096,"memfd":true,"access":3},{"addr":8000,"len":1,"memfd":true,"access":3})"),
      "'buffers[1].addr'");
  bad(shm_list(R"({"addr":8192,"len":1,"memfd":true,"access":3},{"addr":4096,"len":1,"memfd":true,"access":3})"),
      "'buffers[1].addr'");
  std::string huge;
  for (size_t i = 0; i <= kMaxSamehostBuffers; i++) huge += i ? ",0" : "0";
  bad(shm_list(huge), "'buffers'");
  bad(shm_list(R"({"addr":4096)"), "the message");
}

std::string nv_list(const std::string &bufs) { return R"({"epoch":1,"buffers":[)" + bufs + "]}"; }

void nvlink_lists(void **) {
  NvlinkList l;
  l.epoch = 5;
  NvListBuf a;
  a.addr = 0x10000;
  a.len = 0x1000;
  a.dev = 1;
  a.access = 3;
  a.ipc.assign(kIpcHandleBytes, '\x5a');
  a.base = 0x8000;
  NvListBuf b;
  b.addr = 0x20000;
  b.len = 0x2000;
  b.vmm = true;
  b.access = 1;
  b.chunks = {{0x20000, 0x1000}, {0x21000, 0x1000}};
  NvListBuf c;  // no access: listed without a handle
  c.addr = 0x30000;
  c.len = 1;
  l.buffers = {a, b, c};
  NvlinkList g = accepted<NvlinkList>(l.to_json(), MC_ERR_TRANSPORT);
  assert_string_equal(g.to_json().c_str(), l.to_json().c_str());
  assert_true(g.buffers[0].ipc == a.ipc);
  auto bad = [](const std::string &t, const char *f) { refused<NvlinkList>(t, MC_ERR_TRANSPORT, f); };
  const std::string ipc(128, 'a');
  bad(nv_list(R"({"addr":1,"len":1,"dev":"0","vmm":false,"access":0})"), "'buffers[0].dev'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":-1,"vmm":false,"access":0})"), "'buffers[0].dev'");
  bad(nv_list(R"({"addr":1,"len":0,"dev":0,"vmm":false,"access":0})"), "'buffers[0].len'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":"no","access":0})"), "'buffers[0].vmm'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":false,"access":3,"base":0})"), "'buffers[0].ipc'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":false,"access":3,"base":0,"ipc":"zz"})"), "'buffers[0].ipc'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":false,"access":3,"ipc":")" + ipc + R"("})"), "'buffers[0].base'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":false,"access":3,"base":2,"ipc":")" + ipc + R"("})"),
      "'buffers[0].base'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":true,"access":3})"), "'buffers[0].chunks'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":true,"access":3,"chunks":[]})"), "'buffers[0].chunks'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":true,"access":3,"chunks":[[1]]})"), "'buffers[0].chunks[0]'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":true,"access":3,"chunks":[[1,"2"]]})"), "'buffers[0].chunks[0][1]'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":true,"access":3,"chunks":[[18446744073709551615,2]]})"),
      "'buffers[0].chunks[0]'");
  bad(nv_list(R"({"addr":1,"len":1,"dev":0,"vmm":true,"access":3,"chunks":[[1,0]]})"), "'buffers[0].chunks[0]'");
  bad(nv_list(R"({"addr":1,"len":9,"dev":0,"vmm":false,"access":0},{"addr":5,"len":1,"dev":0,"vmm":false,"access":0})"),
      "'buffers[1].addr'");
  bad(R"({"epoch":1})", "'buffers'");
}

void fd_requests(void **) {
  uint64_t a = 0;
  assert_true(parse_fd_request(fd_request(18446744073709551615ull), &a));
  assert_true(a == 18446744073709551615ull);
  assert_true(parse_fd_request("FD 0", &a) && a == 0);
  for (const char *bad : {"FD ", "FD", "FD -1", "FD +1", "FD 1x", "FD 18446744073709551616", "FD 0x10", "fd 1",
                          "FD  1", "FD 1 ", "FD 01", "FD 99999999999999999999999"}) {
    a = 77;
    if (parse_fd_request(bad, &a)) std::fprintf(stderr, "accepted '%s'\n", bad);
    assert_false(parse_fd_request(bad, &a));
    assert_true(a == 77);
  }
}

// ------------------------------------------------------------------ the shared same-host stack

int count_dir(const char *path) {
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  while (dirent *e = readdir(d))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

// The task count once it stopped moving (handshake threads end just after their reply).
int settled_tasks(int want_at_most) {
  int n = count_dir("/proc/self/task");
  for (int i = 0; i < 200 && n > want_at_most; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    n = count_dir("/proc/self/task");
  }
  return n;
}

struct TestServer {
  mc::samehost::UnixServer srv;
  int pipe_fds[2] = {-1, -1};
  std::string name = "mc-wb-samehost-" + std::to_string(getpid());
  TestServer() {
    assert_int_equal(pipe(pipe_fds), 0);
    mc::samehost::UnixServer::Options o{"test", name, "", 7, 2000, 1u << 16};
    // "LIST" -> "L" + fd; "NO" -> a refusal that (wrongly) carries an fd; "DENY" -> ERR DENIED.
    auto h = [this](const std::string &q, std::string *r, mc::Fd *f) {
      if (q == "LIST") {
        *r = "L";
        f->reset(dup(pipe_fds[0]));
      } else if (q == "NO") {
        *r = "ERR nope";
        f->reset(dup(pipe_fds[0]));
      } else if (q == "DENY") {
        *r = "ERR DENIED not yours";
      } else if (q == "WATCH") {
      } else {
        *r = "ERR unknown request";
        return false;
      }
      return true;
    };
    assert_true(srv.start(o, "{\"hi\":1}", pipe_fds[1], h, nullptr).ok());
  }
  ~TestServer() {
    srv.stop();
    close(pipe_fds[0]);
    close(pipe_fds[1]);
  }
  std::unique_ptr<mc::samehost::PeerConn> conn() {
    auto c = std::make_unique<mc::samehost::PeerConn>("same-host peer t", 1u << 16);
    std::string hello;
    mc::Fd hf;
    mc::Status st = c->open(name, "", 7, 2000, &hello, &hf);
    assert_true(st.ok());
    assert_string_equal(hello.c_str(), "{\"hi\":1}");
    assert_true(hf.valid());
    return c;
  }
};

void server_one_thread_for_all_peers(void **) {
  TestServer ts;
  int before = settled_tasks(0);
  std::vector<std::unique_ptr<mc::samehost::PeerConn>> conns;
  for (int i = 0; i < 64; i++) conns.push_back(ts.conn());
  // Every connection is served, from the one loop thread.
  for (auto &c : conns) {
    std::string r;
    mc::Fd f;
    assert_true(c->request("LIST", &r, &f).ok());
    assert_string_equal(r.c_str(), "L");
    assert_true(f.valid());
  }
  int after = settled_tasks(before);
  std::printf("server: %d threads before 64 admitted peers, %d with them\n", before, after);
  assert_true(after <= before);
  // Another incarnation is refused before anything is handed over.
  mc::samehost::PeerConn wrong("same-host peer t", 1u << 16);
  std::string hello;
  mc::Fd hf;
  assert_false(wrong.open(ts.name, "", 8, 2000, &hello, &hf).ok());
  assert_false(hf.valid());
}

void client_closes_fds_of_refusals(void **) {
  TestServer ts;
  auto c = ts.conn();
  int fds = count_dir("/proc/self/fd");
  for (int i = 0; i < 32; i++) {
    std::string r;
    mc::Fd f;
    mc::Status st = c->request("NO", &r, &f);
    assert_int_equal(st.code(), MC_ERR_TRANSPORT);
    assert_true(st.message().find("same-host peer t: nope") != std::string::npos);
    assert_false(f.valid());
    st = c->request("DENY", &r, &f);
    assert_int_equal(st.code(), MC_ERR_DENIED);
  }
  assert_int_equal(count_dir("/proc/self/fd"), fds);  // no descriptor leaked
}

void server_drops_hostile_peers(void **) {
  TestServer ts;
  auto good = ts.conn();
  // An admitted peer that announces a 4 GiB message, one that sends an unknown request, one
  // that hangs up mid-message: each loses its own connection only.
  auto huge = ts.conn();
  const unsigned char len[4] = {0xff, 0xff, 0xff, 0xff};
  assert_int_equal(send(huge->fd(), len, 4, MSG_NOSIGNAL), 4);
  auto odd = ts.conn();
  std::string r;
  mc::Fd f;
  assert_int_equal(odd->request("BOGUS", &r, &f).code(), MC_ERR_TRANSPORT);
  assert_int_equal(odd->request("LIST", &r, &f).code(), MC_ERR_PEER_DOWN);
  auto cut = ts.conn();
  const unsigned char part[6] = {10, 0, 0, 0, 'L', 'I'};
  assert_int_equal(send(cut->fd(), part, 6, MSG_NOSIGNAL), 6);
  shutdown(cut->fd(), SHUT_WR);
  char c;
  assert_true(recv(huge->fd(), &c, 1, 0) <= 0);  // closed by the server
  assert_true(good->request("LIST", &r, &f).ok());
  assert_string_equal(r.c_str(), "L");
}

void watch_loop_reports_hangups(void **) {
  mc::Status st;
  auto w = mc::samehost::WatchLoop::create(&st);
  assert_non_null(w.get());
  int a[2], b[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
  std::atomic<int> fired_a{0}, fired_b{0};
  uint64_t ia = 0, ib = 0;
  assert_true(w->watch(a[0], [&] { fired_a++; }, &ia));
  assert_true(w->watch(b[0], [&] { fired_b++; }, &ib));
  assert_int_equal(w->watched(), 2);
  w->unwatch(ib);  // never fires after this, even when its peer goes
  close(b[1]);
  close(a[1]);
  for (int i = 0; i < 500 && fired_a.load() == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  assert_int_equal(fired_a.load(), 1);
  assert_int_equal(fired_b.load(), 0);
  assert_int_equal(w->watched(), 0);
  w->unwatch(ia);  // after it fired: nothing to do
  close(a[0]);
  close(b[0]);
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(blobs),        cmocka_unit_test(hellos),      cmocka_unit_test(shm_lists),
      cmocka_unit_test(nvlink_lists), cmocka_unit_test(fd_requests),
      cmocka_unit_test(server_one_thread_for_all_peers), cmocka_unit_test(client_closes_fds_of_refusals),
      cmocka_unit_test(server_drops_hostile_peers),      cmocka_unit_test(watch_loop_reports_hangups),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
