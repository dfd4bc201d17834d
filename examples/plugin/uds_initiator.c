/* The initiator side: slices queue on the transport; a fixed pool of worker threads (uds_workers,
 * default 2) runs them one at a time each, over connections pooled per path. Threads do not
 * grow with peers; sockets do (at most one per worker and path in use, UDS_IDLE_FDS idle). */
#include <stdlib.h>
#include <unistd.h>

#include "uds.h"

static void set_timeouts(int fd, uint32_t ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Files fd as in use on p (fail_path shuts it down); 0, or -1 when p failed since gen. t->mu held. */
static int mark_busy(struct uds_path *p, int fd, uint64_t gen) {
  if (gen != p->gen) return -1;
  for (int i = 0; i < UDS_BUSY_FDS; i++)
    if (p->busy[i] < 0) {
      p->busy[i] = fd;
      return 0;
    }
  return -1; /* cannot happen: one busy socket per worker */
}

static void unmark_busy(struct uds_path *p, int fd) {
  for (int i = 0; i < UDS_BUSY_FDS; i++)
    if (p->busy[i] == fd) p->busy[i] = -1;
}

/* A new connection to the peer: a ticket over mc's control channel (checking that the engine
 * answering is still the incarnation this path was made for), then the socket. */
static int dial(struct uds_tp *t, struct uds_path *p, mc_status_t *st) {
  void *rep = NULL;
  size_t n = 0;
  uint64_t inc = 0;
  *st = t->ops->control_call(t->h, p->control_addr, "ticket", 6, &rep, &n, &inc);
  if (*st != MC_OK) return -1;
  char ticket[UDS_TICKET_LEN];
  int good = n == UDS_TICKET_LEN && inc == p->incarnation;
  if (good) memcpy(ticket, rep, UDS_TICKET_LEN);
  t->ops->free_buffer(rep);
  if (!good) {
    *st = MC_ERR_PEER_DOWN; /* another engine answers there now */
    return -1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  socklen_t len = uds_abstract_addr(p->sockname, &sa);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, len) != 0) {
    if (fd >= 0) close(fd);
    t->ops->path_down(t->h, p);
    *st = MC_ERR_PEER_DOWN;
    return -1;
  }
  set_timeouts(fd, t->timeout_ms);
  if (uds_send_all(fd, ticket, sizeof ticket) != 0) {
    close(fd);
    *st = MC_ERR_PEER_DOWN;
    return -1;
  }
  __atomic_add_fetch(&t->connections, 1, __ATOMIC_RELAXED);
  return fd;
}

/* A connection for one request, filed busy: a pooled one, else a new one. -1 with *st set. */
static int get_conn(struct uds_tp *t, struct uds_path *p, uint64_t gen, mc_status_t *st) {
  pthread_mutex_lock(&t->mu);
  int fd = -1;
  if (gen == p->gen && p->nidle > 0) fd = p->idle[--p->nidle];
  if (fd >= 0) mark_busy(p, fd, gen);
  *st = p->fail_status;
  int failed = gen != p->gen;
  pthread_mutex_unlock(&t->mu);
  if (failed || fd >= 0) return fd;
  fd = dial(t, p, st);
  if (fd < 0) return -1;
  pthread_mutex_lock(&t->mu);
  if (mark_busy(p, fd, gen) != 0) {
    *st = p->fail_status;
    close(fd);
    fd = -1;
  }
  pthread_mutex_unlock(&t->mu);
  return fd;
}

/* Ends a request's use of fd: back to the pool when it is clean and the path did not fail. */
static void put_conn(struct uds_tp *t, struct uds_path *p, int fd, uint64_t gen, int clean) {
  pthread_mutex_lock(&t->mu);
  unmark_busy(p, fd);
  if (clean && gen == p->gen && p->nidle < UDS_IDLE_FDS) {
    p->idle[p->nidle++] = fd;
    fd = -1;
  }
  pthread_mutex_unlock(&t->mu);
  if (fd >= 0) close(fd);
}

/* A READ's payload into local memory, drained instead once its batch is canceled. */
static int recv_read(struct uds_tp *t, int fd, const mc_tp_slice_t *s, int *canceled) {
  char scratch[65536];
  char *dst = (char *)s->local;
  for (uint64_t off = 0; off < s->len;) {
    uint64_t n = s->len - off < sizeof scratch ? s->len - off : sizeof scratch;
    if (!*canceled && t->ops->canceled(t->h, s)) *canceled = 1;
    if (uds_recv_all(fd, *canceled ? scratch : dst + off, n) != 0) return -1;
    off += n;
  }
  return 0;
}

/* Runs one slice over a connection; its status. */
static mc_status_t run_slice(struct uds_tp *t, struct uds_item *it) {
  const mc_tp_slice_t *s = &it->s;
  if (t->ops->canceled(t->h, s)) return MC_ERR_CANCELED;
  mc_status_t st;
  int fd = get_conn(t, it->p, it->gen, &st);
  if (fd < 0) return st;
  struct uds_header h = {UDS_MAGIC, s->op, s->remote, s->len};
  int32_t reply = MC_ERR_TRANSPORT;
  int canceled = 0;
  int rc = uds_send_all(fd, &h, sizeof h);
  if (rc == 0 && s->op == MC_WRITE) rc = uds_send_all(fd, s->local, s->len);
  if (rc == 0) rc = uds_recv_all(fd, &reply, sizeof reply);
  if (rc == 0 && s->op == MC_READ && reply == MC_OK) rc = recv_read(t, fd, s, &canceled);
  int timed_out = rc != 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  put_conn(t, it->p, fd, it->gen, rc == 0);
  if (rc != 0) {
    pthread_mutex_lock(&t->mu);
    st = it->gen != it->p->gen ? it->p->fail_status : timed_out ? MC_ERR_TIMEOUT : MC_ERR_PEER_DOWN;
    pthread_mutex_unlock(&t->mu);
    return st;
  }
  if (canceled) return MC_ERR_CANCELED;
  if (reply == MC_OK) __atomic_add_fetch(&t->bytes, s->len, __ATOMIC_RELAXED);
  return reply;
}

static void *worker(void *arg) {
  struct uds_tp *t = arg;
  for (;;) {
    pthread_mutex_lock(&t->mu);
    while (!t->head && !t->stopping) pthread_cond_wait(&t->cv, &t->mu);
    struct uds_item *it = t->head;
    if (!it) {
      pthread_mutex_unlock(&t->mu);
      return NULL;
    }
    t->head = it->next;
    if (!t->head) t->tail = NULL;
    int stopping = t->stopping;
    it->p->refs++;
    pthread_mutex_unlock(&t->mu);
    mc_status_t st = stopping ? MC_ERR_PEER_DOWN : run_slice(t, it);
    __atomic_add_fetch(st == MC_OK ? &t->requests : &t->failed, 1, __ATOMIC_RELAXED);
    t->ops->complete(t->h, &it->s, st);
    pthread_mutex_lock(&t->mu);
    it->p->refs--;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    free(it);
  }
}

int uds_workers_start(struct uds_tp *t, int n) {
  for (t->nworkers = 0; t->nworkers < n; t->nworkers++)
    if (pthread_create(&t->workers[t->nworkers], NULL, worker, t) != 0) return -1;
  return 0;
}

void uds_workers_stop(struct uds_tp *t) {
  pthread_mutex_lock(&t->mu);
  t->stopping = 1;
  for (struct uds_path *p = t->paths; p; p = p->next)
    for (int i = 0; i < UDS_BUSY_FDS; i++)
      if (p->busy[i] >= 0) shutdown(p->busy[i], SHUT_RDWR);
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
  for (int i = 0; i < t->nworkers; i++) pthread_join(t->workers[i], NULL);
  t->nworkers = 0;
}

void uds_enqueue(struct uds_tp *t, struct uds_path *p, const mc_tp_slice_t *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    struct uds_item *it = calloc(1, sizeof *it);
    if (!it) {
      t->ops->complete(t->h, &s[i], MC_ERR_NO_MEMORY);
      continue;
    }
    it->p = p;
    it->s = s[i];
    pthread_mutex_lock(&t->mu);
    it->gen = p->gen;
    if (t->tail) t->tail->next = it;
    else t->head = it;
    t->tail = it;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
  }
}

void uds_path_fail(struct uds_tp *t, struct uds_path *p, mc_status_t status) {
  pthread_mutex_lock(&t->mu);
  p->gen++;
  p->fail_status = status;
  for (int i = 0; i < UDS_BUSY_FDS; i++)
    if (p->busy[i] >= 0) shutdown(p->busy[i], SHUT_RDWR);
  for (int i = 0; i < p->nidle; i++) close(p->idle[i]);
  p->nidle = 0;
  pthread_mutex_unlock(&t->mu);
}

/* Ends a path: what is queued on it fails, workers running its slices finish, then it goes. */
void uds_path_free(struct uds_tp *t, struct uds_path *p) {
  uds_path_fail(t, p, MC_ERR_PEER_DOWN);
  struct uds_item *mine = NULL;
  pthread_mutex_lock(&t->mu);
  for (struct uds_item **pp = &t->head; *pp;) {
    struct uds_item *it = *pp;
    if (it->p != p) {
      pp = &it->next;
      continue;
    }
    *pp = it->next;
    it->next = mine;
    mine = it;
  }
  t->tail = NULL;
  for (struct uds_item *it = t->head; it; it = it->next) t->tail = it;
  while (p->refs > 0) pthread_cond_wait(&t->cv, &t->mu);
  for (struct uds_path **pp = &t->paths; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  pthread_mutex_unlock(&t->mu);
  while (mine) {
    struct uds_item *it = mine;
    mine = it->next;
    t->ops->complete(t->h, &it->s, MC_ERR_PEER_DOWN);
    free(it);
  }
  free(p);
}
