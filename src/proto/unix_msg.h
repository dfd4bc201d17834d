// Same-host Unix sockets in the abstract namespace, with length-prefixed messages that may
// carry one file descriptor (SCM_RIGHTS), and the admission both same-host transports (shm and
// nvlink) run on them before they hand over anything (control pages, memfds, CUDA IPC handles,
// VMM fds).
#pragma once
#include <cstdint>
#include <string>

#include "util/net.h"

namespace mc {

// Message: 4-byte little-endian length + body; the fd (if any) rides the first byte.
bool unix_send_msg(int fd, const std::string &body, int pass_fd = -1);
// Receives one message of at most max_len bytes; *got_fd (may be NULL) gets a passed fd or -1.
bool unix_recv_msg(int fd, std::string *body, int *got_fd, uint32_t max_len);
// Binds and listens on "\0name".
Status unix_listen(const std::string &name, Fd *out);
// Connects to "\0name" and sets an I/O timeout of timeout_ms.
Status unix_connect(const std::string &name, uint32_t timeout_ms, Fd *out);

// The same-host admission. An abstract Unix socket can be reached by any process of the host,
// whatever its user, so with an auth_token the socket runs the mutual HMAC challenge-response
// of proto/wire.h (the same proofs as TCP, proto/auth.h) in text form:
//   client "HELLO <incarnation, 16 hex>[ <nonce_c, 64 hex>]"   (a nonce only with a token)
//   server "CHALLENGE <nonce_s, 64 hex> <proof_s, 64 hex>"      (token engines only)
//   client "AUTH <proof_c, 64 hex>"
//   server: the transport's own admission reply (e.g. its control page), only now.
// Without a token on either side HELLO is answered by the admission reply at once. A token
// mismatch in either direction (one side has none, or they differ) is refused: the server sends
// "ERR DENIED <why>" (the client, when it finds the server's proof wrong, sends "ERR DENIED
// <why>" and hangs up). Another incarnation, a malformed or missing HELLO: "ERR <why>". No
// message ever carries the token.

// Client side on a connected socket: HELLO (and AUTH when token is set). On MC_OK *reply and
// *got_fd hold the server's admission reply (the fd -1 if none; the caller owns it). A refusal is
// MC_ERR_DENIED with the server's reason; `who` names the server in messages ("same-host peer
// NAME"). Blocks up to the socket's I/O timeout per message.
Status unix_hello(int fd, const std::string &token, uint64_t incarnation, const std::string &who,
                  uint32_t max_len, std::string *reply, int *got_fd);

// Server side on an accepted socket (the caller sets its I/O timeout: the handshake deadline).
// MC_OK: admitted; the caller sends its admission reply next. Otherwise the client has been told
// where it should be, and the status says why: MC_ERR_DENIED for an auth_token refusal (count it,
// log it), MC_ERR_PEER_DOWN when the client hung up or timed out, MC_ERR_TRANSPORT for a
// protocol error or another incarnation.
Status unix_admit(int fd, const std::string &token, uint64_t incarnation, uint32_t max_len);

}  // namespace mc
