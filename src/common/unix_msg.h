// Same-host Unix sockets in the abstract namespace, with length-prefixed messages that may
// carry one file descriptor (SCM_RIGHTS). Shared by the shm and nvlink transports.
#pragma once
#include <cstdint>
#include <string>

#include "common/net.h"

namespace mc {

// Message: 4-byte little-endian length + body; the fd (if any) rides the first byte.
bool unix_send_msg(int fd, const std::string &body, int pass_fd = -1);
// Receives one message of at most max_len bytes; *got_fd (may be NULL) gets a passed fd or -1.
bool unix_recv_msg(int fd, std::string *body, int *got_fd, uint32_t max_len);
// Binds and listens on "\0name".
Status unix_listen(const std::string &name, Fd *out);
// Connects to "\0name" and sets an I/O timeout of timeout_ms.
Status unix_connect(const std::string &name, uint32_t timeout_ms, Fd *out);

}  // namespace mc
