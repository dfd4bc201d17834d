#include "transport/samehost/peer_conn.h"

#include "proto/unix_msg.h"

namespace mc::samehost {

Status PeerConn::open(const std::string &socket, const std::string &token, uint64_t incarnation,
                      uint32_t timeout_ms, std::string *hello, Fd *hello_fd) {
  Status st = unix_connect(socket, timeout_ms, &sock_);
  if (!st.ok()) return st;
  int got = -1;
  st = unix_hello(sock_.get(), token, incarnation, who_, max_msg_, hello, &got);
  Fd f(got);  // closed on every path that does not hand it out
  if (!st.ok()) return st;
  *hello_fd = std::move(f);
  return Status::Ok();
}

Status PeerConn::request(const std::string &req, std::string *reply, Fd *fd) {
  std::lock_guard<std::mutex> lk(mu_);
  int got = -1;
  bool ok = unix_send_msg(sock_.get(), req) && unix_recv_msg(sock_.get(), reply, &got, max_msg_);
  Fd f(got);
  if (!ok) return Err(MC_ERR_PEER_DOWN, who_ + " closed its same-host socket");
  if (reply->rfind("ERR DENIED ", 0) == 0)
    return Err(MC_ERR_DENIED, who_ + " denied access: " + reply->substr(11));
  if (reply->rfind("ERR", 0) == 0)
    return Err(MC_ERR_TRANSPORT, who_ + ": " + reply->substr(reply->size() > 3 ? 4 : 3));
  if (fd) *fd = std::move(f);
  return Status::Ok();
}

bool PeerConn::post(const std::string &msg) {
  std::lock_guard<std::mutex> lk(mu_);
  return unix_send_msg(sock_.get(), msg);
}

}  // namespace mc::samehost
