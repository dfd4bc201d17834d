/* The example plugin's wire format over a Unix stream socket, and blocking I/O helpers.
 *
 * A connection starts with the 32-character ticket the initiator got from the target over mc's
 * admitted control channel (so only admitted peers reach the socket). Then, per request:
 *   initiator -> target: header {magic, op, addr, len} (little-endian host order: same host)
 *   WRITE: the header is followed by len bytes; the target answers one int32 status.
 *   READ:  the target answers one int32 status, then len bytes when it is MC_OK.
 * The target serves requests against its registered memory through the host's pin/unpin. */
#ifndef UDS_WIRE_H
#define UDS_WIRE_H

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define UDS_MAGIC 0x75647331u /* "uds1" */
#define UDS_TICKET_LEN 32

struct uds_header {
  uint32_t magic;
  uint32_t op;
  uint64_t addr;
  uint64_t len;
};

/* Sends or receives exactly n bytes; 0, or -1 on error or end of stream (errno set; EAGAIN when
 * the socket's timeout ran out). */
static inline int uds_send_all(int fd, const void *p, uint64_t n) {
  const char *c = (const char *)p;
  while (n) {
    ssize_t k = send(fd, c, n > (1u << 30) ? (1u << 30) : n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    c += k;
    n -= (uint64_t)k;
  }
  return 0;
}

static inline int uds_recv_all(int fd, void *p, uint64_t n) {
  char *c = (char *)p;
  while (n) {
    ssize_t k = recv(fd, c, n > (1u << 30) ? (1u << 30) : n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k == 0) errno = ECONNRESET;
    if (k <= 0) return -1;
    c += k;
    n -= (uint64_t)k;
  }
  return 0;
}

#endif
