/* The example "uds" transport plugin: same-host transfers over a Unix stream socket, with no
 * shared memory (every request's bytes go through the socket). Shared by its three files:
 *   uds_plugin.c     the ops table libmc loads (create, destroy, describe, connect, control, ...)
 *   uds_initiator.c  paths to peers: a queue and a fixed pool of worker threads
 *   uds_target.c     the listening socket that serves peers against registered memory */
#ifndef UDS_H
#define UDS_H

#include <mc_transport_plugin.h>
#include <pthread.h>
#include <string.h>
#include <sys/un.h>

#include "uds_wire.h"

#define UDS_TICKETS 64
#define UDS_MAX_WORKERS 64
#define UDS_IDLE_FDS 8
#define UDS_BUSY_FDS UDS_MAX_WORKERS

struct uds_tp;

/* A path to one peer. Guarded by its transport's mu. */
struct uds_path {
  struct uds_tp *t;
  struct uds_path *next;       /* in t->paths */
  char sockname[108];          /* the peer's abstract socket name */
  char control_addr[280];      /* HOST:PORT of the peer's control channel */
  uint64_t incarnation;        /* the peer's, from its descriptor */
  uint64_t gen;                /* bumped by fail_path: work queued before it fails */
  mc_status_t fail_status;     /* the status of that failure */
  int idle[UDS_IDLE_FDS];      /* connected, ticketed sockets ready for a request */
  int nidle;
  int busy[UDS_BUSY_FDS];      /* sockets a worker uses now (-1: free slot); fail_path shuts them */
  int refs;                    /* workers running one of its slices */
};

/* One queued slice. */
struct uds_item {
  struct uds_item *next;
  struct uds_path *p;
  uint64_t gen;
  mc_tp_slice_t s;
};

/* One served connection on the target side. */
struct uds_conn {
  struct uds_conn *next;
  struct uds_tp *t;
  int fd;
  int done; /* its thread ended (atomic) */
  pthread_t thread;
};

struct uds_tp {
  mc_tp_host_t *h;
  const mc_tp_host_ops_t *ops;
  uint32_t timeout_ms;
  pthread_mutex_t mu;  /* guards everything below except the atomics */
  pthread_cond_t cv;   /* queue changed, a path's refs dropped, or stopping */
  int stopping;
  /* initiator */
  struct uds_item *head, *tail;
  struct uds_path *paths;
  pthread_t workers[UDS_MAX_WORKERS];
  int nworkers;
  /* target */
  int lfd;
  char sockname[108];
  pthread_t acceptor;
  struct uds_conn *conns;
  char tickets[UDS_TICKETS][UDS_TICKET_LEN + 1];
  int next_ticket;
  /* counters (atomic) */
  uint64_t requests, bytes, failed, served, connections;
};

/* The sockaddr of an abstract socket name (no file: it goes away with its process). */
static inline socklen_t uds_abstract_addr(const char *name, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  size_t n = strlen(name);
  if (n > sizeof sa->sun_path - 2) n = sizeof sa->sun_path - 2;
  memcpy(sa->sun_path + 1, name, n);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

int uds_target_start(struct uds_tp *t);
void uds_target_stop(struct uds_tp *t);
int uds_new_ticket(struct uds_tp *t, char out[UDS_TICKET_LEN + 1]);

int uds_workers_start(struct uds_tp *t, int n);
void uds_workers_stop(struct uds_tp *t);
void uds_enqueue(struct uds_tp *t, struct uds_path *p, const mc_tp_slice_t *s, size_t n);
void uds_path_fail(struct uds_tp *t, struct uds_path *p, mc_status_t status);
void uds_path_free(struct uds_tp *t, struct uds_path *p);

#endif
