/* TCP relay for network faults; see relay.h. */
#include "relay.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64

/* Bytes read from one side, to be written to the other at DUE_NS. */
typedef struct chunk {
  struct chunk *next;
  int64_t due_ns;
  size_t len, off;
  char data[];
} chunk;

/* One direction of a connection: what is read from IN goes to OUT. */
typedef struct pipe_dir {
  int in, out;
  chunk *head, *tail;
} pipe_dir;

typedef struct conn {
  bool used;
  int cfd, sfd;
  pipe_dir up;   /* client -> store */
  pipe_dir down; /* store -> client */
} conn;

struct cmd {
  int mode;
  int64_t to_store_ms, to_client_ms;
};

struct conf_relay {
  pthread_t th;
  int lfd;
  int port;
  int ctl[2]; /* commands in */
  int ack[2]; /* one byte per applied command */
  struct addrinfo *target;
  int mode;
  int64_t to_store_ns, to_client_ns;
  conn conns[MAX_CONNS];
};

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void dir_clear(pipe_dir *d) {
  while (d->head) {
    chunk *c = d->head;
    d->head = c->next;
    free(c);
  }
  d->tail = NULL;
}

static void conn_close(conn *c) {
  if (!c->used)
    return;
  dir_clear(&c->up);
  dir_clear(&c->down);
  close(c->cfd);
  close(c->sfd);
  c->used = false;
}

static int connect_target(const conf_relay *r) {
  for (const struct addrinfo *a = r->target; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0)
      continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    close(fd);
  }
  return -1;
}

static void accept_one(conf_relay *r) {
  int cfd = accept(r->lfd, NULL, NULL);
  if (cfd < 0)
    return;
  if (r->mode == CONF_RELAY_CUT) {
    close(cfd);
    return;
  }
  int slot = -1;
  for (int i = 0; i < MAX_CONNS && slot < 0; i++)
    if (!r->conns[i].used)
      slot = i;
  int sfd = slot >= 0 ? connect_target(r) : -1;
  if (sfd < 0) {
    close(cfd);
    return;
  }
  int one = 1;
  setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  conn *c = &r->conns[slot];
  memset(c, 0, sizeof *c);
  c->used = true;
  c->cfd = cfd;
  c->sfd = sfd;
  c->up = (pipe_dir){.in = cfd, .out = sfd};
  c->down = (pipe_dir){.in = sfd, .out = cfd};
}

/* Write what is due.  False when the other side is gone. */
static bool dir_flush(pipe_dir *d, int64_t now) {
  while (d->head && d->head->due_ns <= now) {
    chunk *c = d->head;
    ssize_t w = send(d->out, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    c->off += (size_t)w;
    if (c->off < c->len)
      continue;
    d->head = c->next;
    if (!d->head)
      d->tail = NULL;
    free(c);
  }
  return true;
}

/* Read from D->in and queue it (or drop it: DROP, or DELAY_NS < 0).  False
 * at EOF or error. */
static bool dir_read(conf_relay *r, pipe_dir *d, int64_t delay_ns) {
  char buf[65536];
  ssize_t n = recv(d->in, buf, sizeof buf, 0);
  if (n < 0 && errno == EINTR)
    return true;
  if (n <= 0)
    return false;
  if (r->mode == CONF_RELAY_DROP || delay_ns < 0)
    return true;
  chunk *c = malloc(sizeof *c + (size_t)n);
  if (!c)
    return false;
  c->next = NULL;
  c->due_ns = mono_ns() + delay_ns;
  c->len = (size_t)n;
  c->off = 0;
  memcpy(c->data, buf, (size_t)n);
  if (d->tail)
    d->tail->next = c;
  else
    d->head = c;
  d->tail = c;
  return true;
}

/* False when asked to stop. */
static bool apply_cmd(conf_relay *r) {
  struct cmd m;
  ssize_t n = read(r->ctl[0], &m, sizeof m);
  if (n != (ssize_t)sizeof m || m.mode < 0)
    return false;
  r->mode = m.mode;
  r->to_store_ns = m.to_store_ms < 0 ? -1 : m.to_store_ms * 1000000;
  r->to_client_ns = m.to_client_ms < 0 ? -1 : m.to_client_ms * 1000000;
  for (int i = 0; i < MAX_CONNS; i++) {
    conn *c = &r->conns[i];
    if (!c->used)
      continue;
    if (m.mode == CONF_RELAY_CUT) {
      conn_close(c);
      continue;
    }
    if (m.mode == CONF_RELAY_DROP || m.to_store_ms < 0)
      dir_clear(&c->up);
    if (m.mode == CONF_RELAY_DROP || m.to_client_ms < 0)
      dir_clear(&c->down);
  }
  char one = 1;
  return write(r->ack[1], &one, 1) == 1;
}

static void *relay_main(void *arg) {
  conf_relay *r = arg;
  struct pollfd pf[2 + 2 * MAX_CONNS];
  int owner[2 + 2 * MAX_CONNS];
  for (;;) {
    int64_t now = mono_ns(), next = INT64_MAX;
    int np = 0;
    pf[np++] = (struct pollfd){.fd = r->ctl[0], .events = POLLIN};
    pf[np++] = (struct pollfd){.fd = r->lfd, .events = POLLIN};
    for (int i = 0; i < MAX_CONNS; i++) {
      conn *c = &r->conns[i];
      if (!c->used)
        continue;
      if (!dir_flush(&c->up, now) || !dir_flush(&c->down, now)) {
        conn_close(c);
        continue;
      }
      if (c->up.head && c->up.head->due_ns < next)
        next = c->up.head->due_ns;
      if (c->down.head && c->down.head->due_ns < next)
        next = c->down.head->due_ns;
      owner[np] = i;
      pf[np++] = (struct pollfd){.fd = c->cfd, .events = POLLIN};
      owner[np] = i;
      pf[np++] = (struct pollfd){.fd = c->sfd, .events = POLLIN};
    }
    int timeout = -1;
    if (next != INT64_MAX)
      timeout = next <= now ? 0 : (int)((next - now + 999999) / 1000000);
    int rc = poll(pf, (nfds_t)np, timeout);
    if (rc < 0 && errno != EINTR)
      break;
    if (rc <= 0)
      continue;
    if (pf[0].revents && !apply_cmd(r))
      break;
    if (pf[1].revents & POLLIN)
      accept_one(r);
    for (int k = 2; k < np; k++) {
      if (!pf[k].revents)
        continue;
      conn *c = &r->conns[owner[k]];
      if (!c->used || (pf[k].fd != c->cfd && pf[k].fd != c->sfd))
        continue; /* closed or replaced during this round */
      bool up = pf[k].fd == c->cfd;
      if (!dir_read(r, up ? &c->up : &c->down, up ? r->to_store_ns : r->to_client_ns))
        conn_close(c);
    }
  }
  for (int i = 0; i < MAX_CONNS; i++)
    conn_close(&r->conns[i]);
  return NULL;
}

conf_relay *conf_relay_start(const char *host, int port) {
  conf_relay *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->ctl[0] = r->ctl[1] = r->ack[0] = r->ack[1] = r->lfd = -1;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  int gai = getaddrinfo(host, ps, &hints, &r->target);
  if (gai != 0) {
    fprintf(stderr, "relay: %s:%d: %s\n", host, port, gai_strerror(gai));
    free(r);
    return NULL;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  r->lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(r->lfd, 16) != 0 || getsockname(r->lfd, (struct sockaddr *)&sa, &sl) != 0 ||
      pipe(r->ctl) != 0 || pipe(r->ack) != 0) {
    fprintf(stderr, "relay: cannot listen: %s\n", strerror(errno));
    goto fail;
  }
  r->port = ntohs(sa.sin_port);
  r->mode = CONF_RELAY_PASS;
  if (pthread_create(&r->th, NULL, relay_main, r) != 0) {
    fprintf(stderr, "relay: cannot start its thread\n");
    goto fail;
  }
  return r;
fail:
  for (int i = 0; i < 2; i++) {
    if (r->ctl[i] >= 0)
      close(r->ctl[i]);
    if (r->ack[i] >= 0)
      close(r->ack[i]);
  }
  if (r->lfd >= 0)
    close(r->lfd);
  freeaddrinfo(r->target);
  free(r);
  return NULL;
}

int conf_relay_port(const conf_relay *r) { return r->port; }

static int send_cmd(conf_relay *r, const struct cmd *m) {
  if (write(r->ctl[1], m, sizeof *m) != (ssize_t)sizeof *m)
    return -1;
  if (m->mode < 0)
    return 0;
  char one;
  return read(r->ack[0], &one, 1) == 1 ? 0 : -1;
}

int conf_relay_set(conf_relay *r, enum conf_relay_mode mode, int64_t to_store_ms,
                   int64_t to_client_ms) {
  if (to_store_ms < -1 || to_client_ms < -1)
    return -1;
  struct cmd m = {.mode = (int)mode, .to_store_ms = to_store_ms, .to_client_ms = to_client_ms};
  return send_cmd(r, &m);
}

void conf_relay_stop(conf_relay *r) {
  if (!r)
    return;
  struct cmd m = {.mode = -1};
  send_cmd(r, &m);
  pthread_join(r->th, NULL);
  for (int i = 0; i < 2; i++) {
    close(r->ctl[i]);
    close(r->ack[i]);
  }
  close(r->lfd);
  freeaddrinfo(r->target);
  free(r);
}
