/* mc_cluster_node: one engine of the cluster demo (examples/cluster/demo.py), through the public
 * API only. It joins the cluster under its name (metadata etcd://..., auth_token from
 * MC_AUTH_TOKEN), hands KV blocks to every other node as disaggregated serving does (WRITE the
 * block into the peer's inbox, then in the same batch a NOTIFY naming it; the peer checks every
 * byte and NOTIFYs an ack back), and reports on stdout what it sees:
 *   READY NAME INCARNATION              the engine serves
 *   EV MS PEER STATE INCARNATION [rejoin]  the segment callback: a state change or a rejoin
 *   TRAFFIC MS PEER INCARNATION         blocks start to flow to that incarnation of PEER
 *   DRAINED                             after SIGUSR1: no new block is sent, none is in flight
 *   SUMMARY {json}                      at SIGTERM: per-peer counts and mc_engine_stats_json
 * Messages: "H ADDR" (hello: my inbox starts at ADDR), "D SEQ SLOT" (a block is in your inbox
 * slot SLOT of mine), "A SEQ SLOT OK" (ack). Every node knows the full node list, so the index of
 * a sender picks its part of an inbox. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mc.h"

#define MAX_NODES 16
#define SLOTS 4
#define CTL 8 /* small batches per peer for hellos and acks */
#define ACK_TIMEOUT_MS 10000

enum slot_state { FREE, INFLIGHT, WAITACK };

struct slot {
  int state, acked, drop;
  uint64_t seq, t_ms, inc; /* inc: the peer's incarnation the block was sent to */
  uint64_t epoch;          /* the peer's rejoins this node had seen when the block was sent */
  mc_batch_t *b;
};

struct peer {
  const char *name;
  mc_segment_t seg;
  uint64_t inc;          /* incarnation as last queried */
  uint64_t inbox;        /* my part of its inbox (its hello), valid for base_inc */
  uint64_t base_inc;     /* incarnation whose hello set inbox */
  uint64_t hello_inc;    /* incarnation my hello reached */
  uint64_t traffic_inc;  /* incarnation TRAFFIC was printed for */
  uint64_t cb_inc;       /* incarnation last seen by the callback */
  struct slot s[SLOTS];
  mc_batch_t *ctl[CTL];
  int hello_pending;
  uint64_t next_open_ms;
  /* counters */
  uint64_t completed, failed, acked, bad, lost, rejoins, after_ok, after_failed, after_acked;
  uint64_t rejoin_ms;
};

struct event {
  mc_segment_t seg;
  uint32_t state;
  uint64_t inc, ms;
};

static struct {
  const char *name, *listen, *metadata, *metrics, *sets[32];
  int nsets, me, n;
  const char *nodes[MAX_NODES];
  size_t block;
  mc_engine_t *e;
  char *inbox, *outbox; /* inbox: n x SLOTS blocks; outbox: n x SLOTS blocks */
  struct peer p[MAX_NODES];
  uint64_t seq, verified, verify_bad, t0, t_end;
  pthread_mutex_t mu; /* guards ev, nev */
  struct event ev[256];
  int nev;
} g = {.block = 64 << 10, .mu = PTHREAD_MUTEX_INITIALIZER};

static volatile sig_atomic_t quiesce, term;
static void on_sig(int s) { (s == SIGUSR1 ? (void)(quiesce = 1) : (void)(term = 1)); }

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void die(const char *what, mc_status_t st) {
  fprintf(stderr, "%s: %s: %s (%s)\n", g.name, what, mc_status_str(st), mc_last_error());
  exit(1);
}

/* Word k of block (from, seq): a value only that block has there. */
static uint64_t word(int from, uint64_t seq, size_t k) {
  uint64_t x = seq * 0x9E3779B97F4A7C15ull ^ ((uint64_t)from << 56) ^ (k * 0xD6E8FEB86659FD93ull);
  x ^= x >> 31;
  return x * 0xBF58476D1CE4E5B9ull;
}

static char *slot_mem(char *base, int node, int slot) {
  return base + ((size_t)node * SLOTS + (size_t)slot) * g.block;
}

static void on_segment(mc_segment_t seg, uint32_t state, uint64_t inc, void *user) {
  (void)user;
  pthread_mutex_lock(&g.mu);
  if (g.nev < (int)(sizeof g.ev / sizeof g.ev[0])) g.ev[g.nev++] = (struct event){seg, state, inc, now_ms()};
  pthread_mutex_unlock(&g.mu);
}

/* A free (not pending) control batch of peer p, reset; NULL when all are busy. */
static mc_batch_t *ctl_batch(struct peer *p) {
  for (int i = 0; i < CTL - 1; i++) { /* the last one carries hellos */
    if (!p->ctl[i] && mc_batch_create(g.e, 1, &p->ctl[i]) != MC_OK) return NULL;
    if (mc_batch_reset(p->ctl[i]) == MC_OK) return p->ctl[i];
  }
  return NULL;
}

static int send_msg(struct peer *p, const char *msg) {
  mc_batch_t *b = ctl_batch(p);
  if (!b) return -1;
  mc_request_t r = {MC_NOTIFY, 0, (void *)msg, p->seg, 0, strlen(msg)};
  return mc_batch_submit(b, &r, 1) == MC_OK ? 0 : -1;
}

/* Slots of a peer that came back as a new process (incarnation inc): what was in flight to the
 * old one is lost. Blocks already sent to the new one (its hello may come before the callback)
 * stay: their slots are free only once checked. */
static void forget_slots(struct peer *p, uint64_t inc) {
  for (int i = 0; i < SLOTS; i++) {
    struct slot *s = &p->s[i];
    if (s->inc == inc) continue;
    if (s->state == WAITACK) s->state = FREE, p->lost++;
    if (s->state == INFLIGHT) s->drop = 1;
  }
}

static void drain_events(void) {
  pthread_mutex_lock(&g.mu);
  struct event ev[256];
  int n = g.nev;
  memcpy(ev, g.ev, sizeof ev[0] * (size_t)n);
  g.nev = 0;
  pthread_mutex_unlock(&g.mu);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < g.n; j++) {
      struct peer *p = &g.p[j];
      if (j == g.me || p->seg != ev[i].seg) continue;
      int rejoin = p->cb_inc && ev[i].inc != p->cb_inc;
      p->cb_inc = ev[i].inc;
      if (rejoin) p->rejoins++, p->rejoin_ms = ev[i].ms, forget_slots(p, ev[i].inc);
      printf("EV %" PRIu64 " %s %s %016" PRIx64 "%s\n", ev[i].ms, p->name,
             ev[i].state == MC_SEGMENT_OK ? "OK" : "UNREACHABLE", ev[i].inc, rejoin ? " rejoin" : "");
    }
}

static int node_of(const char *name) {
  for (int j = 0; j < g.n; j++)
    if (strcmp(g.nodes[j], name) == 0) return j;
  return -1;
}

/* Checks the block peer `from` says it put in its slot of my inbox, and acks it. */
static void on_data(int from, uint64_t seq, int slot) {
  const uint64_t *w = (const uint64_t *)slot_mem(g.inbox, from, slot);
  int ok = 1;
  for (size_t k = 0; k < g.block / 8 && ok; k++) ok = w[k] == word(from, seq, k);
  ok ? g.verified++ : g.verify_bad++;
  if (!ok) {
    size_t k = 0, diff = 0;
    while (k < g.block / 8 && w[k] == word(from, seq, k)) k++;
    for (size_t i = k; i < g.block / 8; i++) diff += w[i] != word(from, seq, i);
    fprintf(stderr, "%s: block %" PRIu64 " from %s (slot %d): bytes differ from word %zu on, %zu of %zu words\n",
            g.name, seq, g.nodes[from], slot, k, diff, g.block / 8);
  }
  char msg[64];
  snprintf(msg, sizeof msg, "A %" PRIu64 " %d %d", seq, slot, ok);
  if (g.p[from].seg) send_msg(&g.p[from], msg);
}

static void on_ack(struct peer *p, uint64_t seq, int slot, int ok) {
  struct slot *s = &p->s[slot];
  if (s->state == FREE || s->seq != seq) return; /* late: the slot was given up */
  ok ? p->acked++ : p->bad++;
  if (!ok) fprintf(stderr, "%s: %s found block %" PRIu64 " (slot %d) wrong\n", g.name, p->name, seq, slot);
  if (ok && s->epoch) p->after_acked++;
  if (s->state == WAITACK) s->state = FREE;
  else s->acked = 1;
}

static void drain_notifications(void) {
  mc_notification_t info;
  char buf[MC_NOTIFY_MAX_BYTES + 1]; /* any message fits: none can stay queued */
  for (;;) {
    info.size = sizeof info;
    mc_status_t st = mc_notify_recv(g.e, &info, buf, sizeof buf - 1);
    if (st != MC_OK) return;
    buf[info.length] = 0;
    int from = node_of(info.peer);
    if (from < 0 || from == g.me) continue;
    uint64_t a = 0;
    int slot = -1, ok = 0;
    if (sscanf(buf, "H %" SCNu64, &a) == 1) {
      g.p[from].inbox = a + (uint64_t)g.me * SLOTS * g.block;
      g.p[from].base_inc = info.incarnation;
    } else if (sscanf(buf, "D %" SCNu64 " %d", &a, &slot) == 2 && slot >= 0 && slot < SLOTS) {
      on_data(from, a, slot);
    } else if (sscanf(buf, "A %" SCNu64 " %d %d", &a, &slot, &ok) == 3 && slot >= 0 && slot < SLOTS) {
      on_ack(&g.p[from], a, slot, ok);
    }
  }
}

/* Ends of data batches: a failed one frees its slot; a completed one waits for its ack. */
static void poll_slots(struct peer *p, uint64_t now) {
  for (int i = 0; i < SLOTS; i++) {
    struct slot *s = &p->s[i];
    if (s->state == WAITACK && now - s->t_ms > ACK_TIMEOUT_MS) s->state = FREE, p->lost++;
    if (s->state != INFLIGHT) continue;
    mc_status_t st = mc_batch_wait(s->b, 0);
    if (st == MC_ERR_TIMEOUT) continue;
    int after = s->epoch > 0; /* sent after this node saw the peer rejoin */
    if (st == MC_OK) {
      p->completed++, p->after_ok += after;
      s->state = s->acked || s->drop ? FREE : WAITACK;
    } else {
      p->failed++, p->after_failed += after;
      if (after)
        fprintf(stderr, "%s: block %" PRIu64 " to %s sent %" PRIu64 " ms after its rejoin failed: %s\n", g.name,
                s->seq, p->name, s->t_ms - p->rejoin_ms, mc_status_str(st));
      s->state = FREE;
    }
  }
}

static void send_block(struct peer *p, int j, int i) {
  struct slot *s = &p->s[i];
  uint64_t seq = ++g.seq;
  uint64_t *w = (uint64_t *)slot_mem(g.outbox, j, i);
  for (size_t k = 0; k < g.block / 8; k++) w[k] = word(g.me, seq, k);
  char msg[64];
  snprintf(msg, sizeof msg, "D %" PRIu64 " %d", seq, i);
  mc_request_t r[2] = {{MC_WRITE, 0, w, p->seg, p->inbox + (uint64_t)i * g.block, g.block},
                       {MC_NOTIFY, 0, msg, p->seg, 0, strlen(msg)}};
  if (!s->b && mc_batch_create(g.e, 2, &s->b) != MC_OK) die("mc_batch_create", MC_ERR_NO_MEMORY);
  mc_batch_reset(s->b);
  *s = (struct slot){INFLIGHT, 0, 0, seq, now_ms(), p->inc, p->rejoins, s->b};
  if (mc_batch_submit(s->b, r, 2) != MC_OK) s->state = FREE, p->failed++;
}

/* Opens, greets and feeds one peer. */
static void step_peer(int j, uint64_t now) {
  struct peer *p = &g.p[j];
  if (!p->seg) {
    if (now < p->next_open_ms) return;
    p->next_open_ms = now + 100;
    if (mc_segment_open(g.e, p->name, &p->seg) != MC_OK) p->seg = 0;
    return;
  }
  mc_segment_info_t info = {.size = sizeof info};
  if (mc_segment_query(g.e, p->seg, &info) != MC_OK) return;
  p->inc = info.incarnation;
  if (p->hello_pending) {
    mc_batch_t *b = p->ctl[CTL - 1];
    mc_status_t st = mc_batch_wait(b, 0);
    if (st != MC_ERR_TIMEOUT) p->hello_pending = 0, p->hello_inc = st == MC_OK ? p->inc : 0;
  }
  poll_slots(p, now);
  if (info.state != MC_SEGMENT_OK) return;
  if (p->hello_inc != p->inc && !p->hello_pending) {
    char msg[64];
    snprintf(msg, sizeof msg, "H %" PRIu64, (uint64_t)(uintptr_t)g.inbox);
    mc_request_t r = {MC_NOTIFY, 0, msg, p->seg, 0, strlen(msg)};
    if (!p->ctl[CTL - 1] && mc_batch_create(g.e, 1, &p->ctl[CTL - 1]) != MC_OK) return;
    if (mc_batch_reset(p->ctl[CTL - 1]) == MC_OK && mc_batch_submit(p->ctl[CTL - 1], &r, 1) == MC_OK)
      p->hello_pending = 1;
  }
  if (quiesce || p->base_inc != p->inc) return;
  if (p->traffic_inc != p->inc) printf("TRAFFIC %" PRIu64 " %s %016" PRIx64 "\n", now, p->name, p->inc);
  p->traffic_inc = p->inc;
  for (int i = 0; i < SLOTS; i++)
    if (p->s[i].state == FREE) send_block(p, j, i);
}

static int busy(void) {
  for (int j = 0; j < g.n; j++)
    for (int i = 0; i < SLOTS && j != g.me; i++)
      if (g.p[j].s[i].state != FREE) return 1;
  return 0;
}

static void summary(void) {
  size_t need = 0;
  mc_engine_stats_json(g.e, NULL, 0, &need);
  char *stats = malloc(need + 4096);
  if (!stats || mc_engine_stats_json(g.e, stats, need + 4096, &need) != MC_OK) die("stats", MC_ERR_NO_MEMORY);
  printf("SUMMARY {\"name\":\"%s\",\"block\":%zu,\"t_start\":%" PRIu64 ",\"t_end\":%" PRIu64
         ",\"verified\":%" PRIu64 ",\"verify_bad\":%" PRIu64 ",\"peers\":[",
         g.name, g.block, g.t0, g.t_end ? g.t_end : now_ms(), g.verified, g.verify_bad);
  int first = 1;
  for (int j = 0; j < g.n; j++) {
    struct peer *p = &g.p[j];
    if (j == g.me) continue;
    printf("%s{\"peer\":\"%s\",\"completed\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"acked\":%" PRIu64
           ",\"bad\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"rejoins\":%" PRIu64 ",\"after_rejoin_completed\":%" PRIu64
           ",\"after_rejoin_failed\":%" PRIu64 ",\"after_rejoin_acked\":%" PRIu64 "}",
           first ? "" : ",", p->name, p->completed, p->failed, p->acked, p->bad, p->lost, p->rejoins, p->after_ok,
           p->after_failed, p->after_acked);
    first = 0;
  }
  printf("],\"stats\":%s}\n", stats);
  free(stats);
}

static void create_engine(void) {
  mc_config_t *cfg;
  if (mc_config_create(&cfg) != MC_OK) die("mc_config_create", MC_ERR_NO_MEMORY);
  const char *keys[] = {"name", "listen", "metadata", "metrics_listen"};
  const char *vals[] = {g.name, g.listen, g.metadata, g.metrics};
  mc_status_t st;
  for (int i = 0; i < 4; i++)
    if (vals[i] && (st = mc_config_set(cfg, keys[i], vals[i])) != MC_OK) die(keys[i], st);
  for (int i = 0; i < g.nsets; i++) {
    char kv[256];
    snprintf(kv, sizeof kv, "%s", g.sets[i]);
    char *eq = strchr(kv, '=');
    if (!eq) die("--set KEY=VALUE", MC_ERR_INVALID_ARG);
    *eq = 0;
    if ((st = mc_config_set(cfg, kv, eq + 1)) != MC_OK) die(kv, st);
  }
  /* A restarted node may find its name still held by its dead self for a moment: retry. */
  uint64_t until = now_ms() + 15000;
  while ((st = mc_engine_create(cfg, &g.e)) != MC_OK && now_ms() < until) usleep(200000);
  if (st != MC_OK) die("mc_engine_create", st);
  mc_config_destroy(cfg);
}

static void setup(void) {
  create_engine();
  size_t len = (size_t)g.n * SLOTS * g.block;
  g.inbox = aligned_alloc(4096, len);
  g.outbox = aligned_alloc(4096, len);
  if (!g.inbox || !g.outbox) die("memory", MC_ERR_NO_MEMORY);
  memset(g.inbox, 0, len);
  memset(g.outbox, 0, len);
  mc_status_t st;
  if ((st = mc_buffer_register(g.e, g.inbox, len, "cpu")) != MC_OK) die("register inbox", st);
  if ((st = mc_buffer_register(g.e, g.outbox, len, "cpu")) != MC_OK) die("register outbox", st);
  if ((st = mc_engine_set_segment_callback(g.e, on_segment, NULL)) != MC_OK) die("segment callback", st);
  for (int j = 0; j < g.n; j++) g.p[j].name = g.nodes[j];
  size_t need = 0;
  char buf[4096];
  mc_engine_stats_json(g.e, buf, sizeof buf, &need);
  const char *inc = strstr(buf, "\"incarnation\":");
  printf("READY %s %016" PRIx64 "\n", g.name, (uint64_t)(inc ? strtoull(inc + 14, NULL, 10) : 0));
}

static void parse_args(int argc, char **argv) {
  char *nodes = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--name")) g.name = v;
    else if (!strcmp(k, "--listen")) g.listen = v;
    else if (!strcmp(k, "--metadata")) g.metadata = v;
    else if (!strcmp(k, "--metrics")) g.metrics = v;
    else if (!strcmp(k, "--nodes")) nodes = strdup(v);
    else if (!strcmp(k, "--block-kib")) g.block = (size_t)atoi(v) << 10;
    else if (!strcmp(k, "--set") && g.nsets < 32) g.sets[g.nsets++] = v;
    else fprintf(stderr, "unknown option %s\n", k), exit(2);
  }
  if (!g.name || !nodes || g.block < 4096 || g.block > (64u << 20)) {
    fprintf(stderr,
            "usage: mc_cluster_node --name N --nodes N0,N1,... [--listen H:P] [--metadata URL] "
            "[--metrics H:P] [--block-kib K] [--set KEY=VALUE]...\n");
    exit(2);
  }
  g.me = -1;
  for (char *save, *t = strtok_r(nodes, ",", &save); t && g.n < MAX_NODES; t = strtok_r(NULL, ",", &save)) {
    if (!strcmp(t, g.name)) g.me = g.n;
    g.nodes[g.n++] = t;
  }
  if (g.me < 0) fprintf(stderr, "--name must be one of --nodes\n"), exit(2);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  /* The demo started us (ip netns exec execs this program): when it dies, so do we. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 1;
  parse_args(argc, argv);
  signal(SIGUSR1, on_sig);
  signal(SIGTERM, on_sig);
  signal(SIGINT, on_sig);
  setup();
  int efd = -1;
  if (mc_engine_event_fd(g.e, &efd) != MC_OK) efd = -1;
  g.t0 = now_ms();
  int drained = 0;
  while (!term) {
    struct pollfd pfd = {efd, POLLIN, 0};
    if (poll(&pfd, efd >= 0 ? 1 : 0, 2) > 0) {
      uint64_t v;
      if (read(efd, &v, sizeof v) < 0 && errno != EAGAIN) perror("event fd");
    }
    drain_events();
    drain_notifications();
    uint64_t now = now_ms();
    for (int j = 0; j < g.n; j++)
      if (j != g.me) step_peer(j, now);
    if (quiesce && !drained && !busy()) {
      g.t_end = now_ms();
      printf("DRAINED\n");
      drained = 1;
    }
  }
  drain_events();
  summary();
  /* Requests still in flight end when the engine goes; the batches after it. */
  mc_engine_destroy(g.e);
  for (int j = 0; j < g.n; j++) {
    for (int i = 0; i < SLOTS; i++) mc_batch_destroy(g.p[j].s[i].b);
    for (int i = 0; i < CTL; i++) mc_batch_destroy(g.p[j].ctl[i]);
  }
  return 0;
}
