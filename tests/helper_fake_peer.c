/* A fake same-host peer for test_hostile_peer: it looks like an mc engine on this host (a
 * control listener on TCP loopback that answers GET_DESC with a descriptor naming this host's
 * boot id, so the initiator picks the shm path) and speaks the shm protocol on an abstract Unix
 * socket (4-byte little-endian length + text, an fd riding the first byte; src/proto/unix_msg.h)
 * but sends one malformed message, chosen by argv[1]:
 *   blob_array, blob_number     the descriptor's transports.shm is {"socket":[1]} / {"socket":5}
 *   hello_pid_string, hello_pid_neg, hello_truncated   the admission reply after HELLO
 *   list_string, list_wrap, list_huge                  the LIST reply while the path opens
 *   relist_float, relist_overlap   the first LIST is good; the control page's epoch is then bumped
 *                                  and the next LIST (sent from a request's thread) is bad
 * Anything else on TCP (a data connection's READ) is answered by closing the connection.
 * Prints "<port> <buffer address>\n" on stdout once listening; runs until killed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <signal.h>
#include <unistd.h>

#define MAGIC 0x3157434dU
enum { HELLO = 12, GET_DESC = 1, DESC = 2 };
#pragma pack(push, 1)
struct hdr {
  uint32_t magic;
  uint16_t version, type;
  uint64_t id, addr, len;
  int32_t status;
  uint32_t aux;
};
#pragma pack(pop)

struct ctrl_page {  /* the first fields of shm's CtrlPage */
  uint64_t magic, incarnation;
  _Atomic uint64_t epoch, active;
};

static const char *g_mode;
static const uint64_t g_inc = 0x1234abcd5678ef01ULL;
static char g_sock[64];
static int g_ctrl_fd;
static struct ctrl_page *g_ctrl;
static int g_port;
static char g_buf[1 << 16];
static atomic_int g_lists;

static int mode(const char *m) { return strcmp(g_mode, m) == 0; }

static int read_all(int fd, void *p, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = read(fd, (char *)p + got, n - got);
    if (r <= 0) return 0;
    got += (size_t)r;
  }
  return 1;
}

static int send_msg(int fd, const char *body, size_t n, int pass_fd) {
  char *m = malloc(4 + n);
  uint32_t len = (uint32_t)n;
  memcpy(m, &len, 4);
  memcpy(m + 4, body, n);
  struct iovec iov = {m, 4 + n};
  char cbuf[CMSG_SPACE(sizeof(int))];
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (pass_fd >= 0) {
    memset(cbuf, 0, sizeof cbuf);
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
  free(m);
  return w == (ssize_t)(4 + n);
}

static int send_text(int fd, const char *s, int pass_fd) { return send_msg(fd, s, strlen(s), pass_fd); }

static char *recv_msg(int fd) {
  uint32_t n;
  if (!read_all(fd, &n, 4) || n > (1 << 20)) return NULL;
  char *b = calloc(1, n + 1);
  if (!read_all(fd, b, n)) {
    free(b);
    return NULL;
  }
  return b;
}

static void send_list(int fd) {
  int k = atomic_fetch_add(&g_lists, 1);
  int bad_now = (strncmp(g_mode, "list_", 5) == 0) || (strncmp(g_mode, "relist_", 7) == 0 && k > 0);
  char m[256];
  if (!bad_now) {
    /* The page's epoch moves on before the list that names epoch 1 leaves, so the first
     * request sees another epoch and asks again: the bad LIST then comes from a request's
     * thread, not from the open. */
    if (strncmp(g_mode, "relist_", 7) == 0) atomic_store(&g_ctrl->epoch, 2);
    snprintf(m, sizeof m, "{\"epoch\":1,\"buffers\":[]}");
    send_text(fd, m, -1);
    return;
  }
  if (mode("list_huge")) {
    size_t n = 70000, cap = n * 2 + 64;
    char *h = malloc(cap);
    size_t at = (size_t)sprintf(h, "{\"epoch\":1,\"buffers\":[");
    for (size_t i = 0; i < n; i++) at += (size_t)sprintf(h + at, i ? ",0" : "0");
    at += (size_t)sprintf(h + at, "]}");
    send_msg(fd, h, at, -1);
    free(h);
    return;
  }
  uint64_t a = (uint64_t)(uintptr_t)g_buf;
  if (mode("list_string"))
    snprintf(m, sizeof m, "{\"epoch\":1,\"buffers\":[{\"addr\":\"%llu\",\"len\":65536,\"memfd\":false,\"access\":3}]}",
             (unsigned long long)a);
  else if (mode("list_wrap"))
    snprintf(m, sizeof m, "{\"epoch\":1,\"buffers\":[{\"addr\":18446744073709551615,\"len\":2,\"memfd\":false,\"access\":3}]}");
  else if (mode("relist_float"))
    snprintf(m, sizeof m, "{\"epoch\":2.5,\"buffers\":[]}");
  else /* relist_overlap */
    snprintf(m, sizeof m,
             "{\"epoch\":2,\"buffers\":[{\"addr\":%llu,\"len\":65536,\"memfd\":false,\"access\":3},"
             "{\"addr\":%llu,\"len\":16,\"memfd\":false,\"access\":3}]}",
             (unsigned long long)a, (unsigned long long)a + 8);
  send_text(fd, m, -1);
}

static void *serve_unix(void *arg) {
  int fd = (int)(intptr_t)arg;
  char *req = recv_msg(fd); /* HELLO <incarnation> */
  if (!req) goto out;
  free(req);
  char m[128];
  if (mode("hello_pid_string"))
    snprintf(m, sizeof m, "{\"pid\":\"%d\",\"ctrl\":%llu}", (int)getpid(), (unsigned long long)(uintptr_t)g_ctrl);
  else if (mode("hello_pid_neg"))
    snprintf(m, sizeof m, "{\"pid\":-1,\"ctrl\":%llu}", (unsigned long long)(uintptr_t)g_ctrl);
  else if (mode("hello_truncated"))
    snprintf(m, sizeof m, "{\"pid\":%d,\"ct", (int)getpid());
  else
    snprintf(m, sizeof m, "{\"pid\":%d,\"ctrl\":%llu}", (int)getpid(), (unsigned long long)(uintptr_t)g_ctrl);
  if (!send_text(fd, m, g_ctrl_fd)) goto out;
  while ((req = recv_msg(fd)) != NULL) {
    int list = strcmp(req, "LIST") == 0, watch = strcmp(req, "WATCH") == 0;
    free(req);
    if (watch) continue;
    if (!list) {
      send_text(fd, "ERR unknown request", -1);
      break;
    }
    send_list(fd);
  }
out:
  close(fd);
  return NULL;
}

static void reply_desc(int fd) {
  char boot[64] = {0};
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
  if (f) {
    if (!fgets(boot, sizeof boot, f)) boot[0] = 0;
    fclose(f);
  }
  boot[strcspn(boot, "\n")] = 0;
  const char *blob = mode("blob_array") ? "{\"socket\":[1]}" : mode("blob_number") ? "{\"socket\":5}" : NULL;
  char sock_blob[128];
  if (!blob) {
    snprintf(sock_blob, sizeof sock_blob, "{\"socket\":\"%s\"}", g_sock);
    blob = sock_blob;
  }
  char d[1024];
  int n = snprintf(d, sizeof d,
                   "{\"major\":1,\"minor\":0,\"name\":\"127.0.0.1:%d\",\"incarnation\":\"%016llx\",\"version\":1,"
                   "\"host_id\":\"%s\",\"pid\":%d,\"tcp\":\"127.0.0.1:%d\",\"buffers\":[{\"addr\":%llu,"
                   "\"length\":%zu,\"location\":\"cpu\",\"access\":3}],\"transports\":{\"shm\":%s}}",
                   g_port, (unsigned long long)g_inc, boot, (int)getpid(), g_port,
                   (unsigned long long)(uintptr_t)g_buf, sizeof g_buf, blob);
  struct hdr h = {MAGIC, 1, DESC, 0, g_inc, (uint64_t)n, 0, 0};
  if (write(fd, &h, sizeof h) != (ssize_t)sizeof h || write(fd, d, (size_t)n) != n) return;
}

static void *serve_tcp(void *arg) {
  int fd = (int)(intptr_t)arg;
  struct hdr h;
  while (read_all(fd, &h, sizeof h) && h.magic == MAGIC) {
    if (h.type == HELLO && h.len == 0) continue;
    if (h.type != GET_DESC) break; /* a data request: hang up, the initiator must fail it */
    reply_desc(fd);
  }
  close(fd);
  return NULL;
}

static void *accept_loop(void *arg) {
  int ls = (int)(intptr_t)arg;
  for (;;) {
    int c = accept(ls, NULL, NULL);
    if (c < 0) continue;
    pthread_t t;
    pthread_create(&t, NULL, serve_unix, (void *)(intptr_t)c);
    pthread_detach(t);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  g_mode = argv[1];
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGPIPE, SIG_IGN);
  g_ctrl_fd = memfd_create("fake-ctrl", MFD_CLOEXEC);
  if (g_ctrl_fd < 0 || ftruncate(g_ctrl_fd, 4096) != 0) return 3;
  g_ctrl = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, g_ctrl_fd, 0);
  if (g_ctrl == MAP_FAILED) return 3;
  g_ctrl->magic = 0x4d43534852434c32ULL; /* shm's kCtrlMagic */
  g_ctrl->incarnation = g_inc;
  atomic_store(&g_ctrl->epoch, 1);

  snprintf(g_sock, sizeof g_sock, "mc-fake-%d", (int)getpid());
  int us = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un ua = {0};
  ua.sun_family = AF_UNIX;
  memcpy(ua.sun_path + 1, g_sock, strlen(g_sock));
  socklen_t ul = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(g_sock));
  if (bind(us, (struct sockaddr *)&ua, ul) != 0 || listen(us, 16) != 0) return 4;

  int ts = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in ta = {0};
  ta.sin_family = AF_INET;
  ta.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t tl = sizeof ta;
  if (bind(ts, (struct sockaddr *)&ta, tl) != 0 || listen(ts, 16) != 0 ||
      getsockname(ts, (struct sockaddr *)&ta, &tl) != 0)
    return 5;
  g_port = ntohs(ta.sin_port);
  pthread_t t;
  pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)us);
  printf("%d %llu\n", g_port, (unsigned long long)(uintptr_t)g_buf);
  fflush(stdout);
  for (;;) {
    int c = accept(ts, NULL, NULL);
    if (c < 0) continue;
    pthread_t w;
    pthread_create(&w, NULL, serve_tcp, (void *)(intptr_t)c);
    pthread_detach(w);
  }
}
