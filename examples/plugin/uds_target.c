/* The target side: a listening abstract Unix socket, one thread per accepted connection, each
 * request served against this engine's registered memory through the host's pin/unpin. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/un.h>
#include <unistd.h>

#include "uds.h"

static void set_timeouts(int fd, uint32_t ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Takes a ticket handed out by uds_new_ticket: 1 when it was valid (it is then used up). */
static int take_ticket(struct uds_tp *t, const char *ticket) {
  int ok = 0;
  pthread_mutex_lock(&t->mu);
  for (int i = 0; i < UDS_TICKETS; i++)
    if (t->tickets[i][0] && memcmp(t->tickets[i], ticket, UDS_TICKET_LEN) == 0) {
      t->tickets[i][0] = 0;
      ok = 1;
      break;
    }
  pthread_mutex_unlock(&t->mu);
  return ok;
}

int uds_new_ticket(struct uds_tp *t, char out[UDS_TICKET_LEN + 1]) {
  unsigned char r[UDS_TICKET_LEN / 2];
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return -1;
  for (size_t i = 0; i < sizeof r; i++) snprintf(out + 2 * i, 3, "%02x", r[i]);
  pthread_mutex_lock(&t->mu);
  memcpy(t->tickets[t->next_ticket], out, UDS_TICKET_LEN + 1);
  t->next_ticket = (t->next_ticket + 1) % UDS_TICKETS; /* the oldest unused one expires */
  pthread_mutex_unlock(&t->mu);
  return 0;
}

/* Serves one request; -1 when the connection must close. */
static int serve_one(struct uds_tp *t, int fd, const struct uds_header *h) {
  char scratch[65536]; /* where a refused WRITE's payload is drained */
  if (h->magic != UDS_MAGIC || (h->op != MC_READ && h->op != MC_WRITE) || h->len == 0) return -1;
  mc_status_t st = t->ops->pin(t->h, h->addr, h->len, h->op);
  int rc = 0;
  if (h->op == MC_WRITE) {
    if (st == MC_OK) {
      rc = uds_recv_all(fd, (void *)(uintptr_t)h->addr, h->len);
    } else { /* refused: drain the payload so the stream stays in step */
      for (uint64_t left = h->len; left && rc == 0; left -= left < sizeof scratch ? left : sizeof scratch)
        rc = uds_recv_all(fd, scratch, left < sizeof scratch ? left : sizeof scratch);
    }
    if (st == MC_OK) t->ops->unpin(t->h, h->addr, h->len);
    int32_t s32 = rc == 0 ? st : MC_ERR_TRANSPORT;
    if (rc == 0) rc = uds_send_all(fd, &s32, sizeof s32);
  } else {
    int32_t s32 = st;
    rc = uds_send_all(fd, &s32, sizeof s32);
    if (st == MC_OK) {
      if (rc == 0) rc = uds_send_all(fd, (const void *)(uintptr_t)h->addr, h->len);
      t->ops->unpin(t->h, h->addr, h->len);
    }
  }
  if (rc == 0) __atomic_add_fetch(&t->served, 1, __ATOMIC_RELAXED);
  return rc;
}

static void *serve_thread(void *arg) {
  struct uds_conn *c = arg;
  struct uds_tp *t = c->t;
  char ticket[UDS_TICKET_LEN];
  set_timeouts(c->fd, t->timeout_ms);
  if (uds_recv_all(c->fd, ticket, sizeof ticket) == 0 && take_ticket(t, ticket)) {
    for (;;) {
      /* Between requests wait without a time limit: an idle pooled connection is fine. destroy
       * shuts the socket down to end the wait. */
      struct pollfd pfd = {c->fd, POLLIN, 0};
      if (poll(&pfd, 1, -1) < 0 && errno != EINTR) break;
      struct uds_header h;
      if (uds_recv_all(c->fd, &h, sizeof h) != 0 || serve_one(t, c->fd, &h) != 0) break;
    }
  }
  __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* Joins and frees connections whose thread ended (all of them when all != 0). Called with t->mu
 * not held. */
static void reap(struct uds_tp *t, int all) {
  pthread_mutex_lock(&t->mu);
  struct uds_conn **pp = &t->conns;
  while (*pp) {
    struct uds_conn *c = *pp;
    if (!all && !__atomic_load_n(&c->done, __ATOMIC_ACQUIRE)) {
      pp = &c->next;
      continue;
    }
    *pp = c->next;
    shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&t->mu);
    pthread_join(c->thread, NULL);
    close(c->fd);
    free(c);
    pthread_mutex_lock(&t->mu);
    pp = &t->conns;
  }
  pthread_mutex_unlock(&t->mu);
}

static void *accept_thread(void *arg) {
  struct uds_tp *t = arg;
  for (;;) {
    int fd = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      break; /* destroy shut the socket down */
    }
    reap(t, 0);
    struct uds_conn *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->t = t;
    c->fd = fd;
    pthread_mutex_lock(&t->mu);
    if (t->stopping || pthread_create(&c->thread, NULL, serve_thread, c) != 0) {
      pthread_mutex_unlock(&t->mu);
      close(fd);
      free(c);
      continue;
    }
    c->next = t->conns;
    t->conns = c;
    pthread_mutex_unlock(&t->mu);
  }
  return NULL;
}

int uds_target_start(struct uds_tp *t) {
  unsigned char r[8];
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return -1;
  snprintf(t->sockname, sizeof t->sockname, "mc-uds-%d-%02x%02x%02x%02x%02x%02x%02x%02x", (int)getpid(), r[0], r[1],
           r[2], r[3], r[4], r[5], r[6], r[7]);
  t->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (t->lfd < 0) return -1;
  struct sockaddr_un sa;
  socklen_t len = uds_abstract_addr(t->sockname, &sa);
  if (bind(t->lfd, (struct sockaddr *)&sa, len) != 0 || listen(t->lfd, 128) != 0 ||
      pthread_create(&t->acceptor, NULL, accept_thread, t) != 0) {
    close(t->lfd);
    t->lfd = -1;
    return -1;
  }
  return 0;
}

void uds_target_stop(struct uds_tp *t) {
  if (t->lfd < 0) return;
  shutdown(t->lfd, SHUT_RDWR); /* wakes accept() */
  pthread_join(t->acceptor, NULL);
  close(t->lfd);
  t->lfd = -1;
  reap(t, 1);
}
