/* etcd backend: etcd's gRPC API as a transport (etcd-transport.h), for
 * etcd+grpc:// and etcd+grpcs:// URLs.
 *
 * HTTP/2 through libnghttp2 over sockets of our own: without TLS (h2c,
 * prior knowledge) for etcd+grpc://, over OpenSSL with ALPN "h2" for
 * etcd+grpcs:// (the server's certificate checked against ?cacert= or the
 * system's CAs and its address, a client certificate from ?cert= and
 * ?key=), so that every call is one round trip on a warm connection and
 * a stream stays open as long as we want it.  Not libcurl: its 7.88
 * (Debian 12) fails the second call on a reused h2c connection once a
 * gRPC answer's trailers came ("Error in the HTTP2 framing layer"), and
 * a bidirectional stream wants frames sent when we choose.  No thread of
 * its own: the caller's thread drives its connection, each wait bounded
 * by poll() with what is left of its deadline, and the grpc-timeout
 * header tells the server the same bound.
 *
 *  - Unary calls (txn, grant, revoke, timetolive, status, authenticate)
 *    take a connection from a pool (one caller at a time on each), as the
 *    gateway's libcurl handles do, and give it back when it answered.
 *  - Keepalives go on ONE long-lived LeaseKeepAlive stream on a
 *    connection of its own: each refresh sends a request on it and reads
 *    the answer, under a mutex (the server answers in order).  A refresh
 *    that fails or runs out of time closes that connection, so no late
 *    answer is ever taken for a newer request's confirmation.
 *  - A wait for a key is one Watch stream on a pooled connection, reset
 *    when the wait ends.
 *
 * A connection that fails, times out or says GOAWAY is closed, never
 * reused; the call moves on to the next endpoint as the gateway path
 * does.  An idle connection is looked at before reuse, and a reused one
 * that fails before any answer is replaced once on the same endpoint
 * (the server closes idle connections). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "backends/etcd/etcd-grpc-codec.h"
#include "backends/etcd/etcd-transport.h"
#include "backends/http/http.h"

/* HTTP/2 flow-control windows we offer the server: a listing's page or a
 * thousand-key check answer never waits for a WINDOW_UPDATE. */
#define WINDOW (16 << 20)
/* What a watch stream's grpc-timeout allows past the caller's own end of
 * it: the server ends the stream only if we vanished, never first. */
#define WATCH_GRACE_NS 5000000000LL

typedef struct gstream {
  int32_t id;
  dlock__grpc_buf out; /* what is still to be sent, from out_off */
  size_t out_off;
  bool out_end;        /* half-close once OUT is sent */
  uint8_t *in;         /* DATA received and not yet taken as messages */
  size_t inlen, incap;
  int http_status;
  int grpc_status;     /* -1 until seen */
  char grpc_msg[256];
  bool closed, too_big;
  uint32_t reset;      /* RST_STREAM code, when closed that way */
  bool answered;       /* any frame of the answer came */
} gstream;

typedef struct gconn {
  int fd;
  SSL *ssl; /* NULL without TLS */
  nghttp2_session *h2;
  size_t ep;
  bool dead;   /* broken, refused or GOAWAY: not to be used again */
  bool reused; /* has served a call before */
  char why[160];
} gconn;

typedef struct grpc_tp {
  dlock__etcd_host host;
  pthread_mutex_t mu;
  SSL_CTX *tls; /* etcd+grpcs:// */
  char **names; /* "host:port", also the :authority */
  char **hosts;
  char **ports;
  size_t n, cur;
  uint64_t failovers;
  gconn **idle;
  size_t nidle, capidle;
  int64_t connect_timeout_ms;
  pthread_mutex_t ka_mu; /* the keepalive stream, one refresh at a time */
  gconn *ka;
  gstream *ka_st;
  uint64_t ka_gen; /* the token generation the stream was opened with */
} grpc_tp;

static int64_t now_ns(void) { return dlock_backend_now_ns(); }

/* ---- endpoints ---- */

static size_t current(grpc_tp *g) {
  pthread_mutex_lock(&g->mu);
  size_t ep = g->cur;
  pthread_mutex_unlock(&g->mu);
  return ep;
}

static void move_on(void *tp, size_t from) {
  grpc_tp *g = tp;
  if (g->n > 1)
    dlock_backend_log(g->host.bc, DLOCK_LOG_WARN,
                      "etcd: %s did not answer, or cannot serve now: trying the next endpoint",
                      g->names[from]);
  pthread_mutex_lock(&g->mu);
  if (g->cur == from && g->n > 1) {
    g->cur = (from + 1) % g->n;
    g->failovers++;
  }
  pthread_mutex_unlock(&g->mu);
}

/* ---- nghttp2 callbacks ---- */

static gstream *stream_of(nghttp2_session *s, int32_t id) {
  return nghttp2_session_get_stream_user_data(s, id);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
  (void)flags;
  (void)ud;
  gstream *st = f->hd.type == NGHTTP2_HEADERS ? stream_of(s, f->hd.stream_id) : NULL;
  if (!st)
    return 0;
  st->answered = true;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    int v = dlock__grpc_status((const char *)value, valuelen);
    st->http_status = v > 0 ? v : 0;
  } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    int v = dlock__grpc_status((const char *)value, valuelen);
    st->grpc_status = v >= 0 ? v : 2; /* UNKNOWN, as gRPC reads a bad one */
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    dlock__grpc_message((const char *)value, valuelen, st->grpc_msg, sizeof st->grpc_msg);
  }
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *ud) {
  (void)flags;
  (void)ud;
  gstream *st = stream_of(s, id);
  if (!st)
    return 0;
  st->answered = true;
  if (st->inlen + len > DLOCK__GRPC_MSG_MAX + 5) {
    st->too_big = true;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  if (st->inlen + len > st->incap) {
    size_t cap = st->incap ? st->incap : 1024;
    while (cap < st->inlen + len)
      cap *= 2;
    uint8_t *p = realloc(st->in, cap);
    if (!p)
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->in = p;
    st->incap = cap;
  }
  memcpy(st->in + st->inlen, data, len);
  st->inlen += len;
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t err, void *ud) {
  (void)ud;
  gstream *st = stream_of(s, id);
  if (st) {
    st->closed = true;
    st->reset = err;
  }
  return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)s;
  gconn *c = ud;
  if (f->hd.type == NGHTTP2_GOAWAY) {
    c->dead = true; /* streams it did not take are closed, refused */
    snprintf(c->why, sizeof c->why, "the server is closing the connection (GOAWAY)");
  }
  return 0;
}

static ssize_t read_out(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                        uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)s;
  (void)id;
  (void)ud;
  gstream *st = src->ptr;
  size_t left = st->out.len - st->out_off;
  if (left == 0 && !st->out_end)
    return NGHTTP2_ERR_DEFERRED;
  size_t n = left < len ? left : len;
  if (n)
    memcpy(buf, st->out.data + st->out_off, n);
  st->out_off += n;
  if (st->out_end && st->out_off == st->out.len)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static pthread_once_t cbs_once = PTHREAD_ONCE_INIT;
static nghttp2_session_callbacks *cbs;

static void cbs_init(void) {
  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    cbs = NULL;
    return;
  }
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
}

/* The same callbacks for every session, made once; NULL when out of
 * memory. */
static nghttp2_session_callbacks *callbacks(void) {
  pthread_once(&cbs_once, cbs_init);
  return cbs;
}

/* ---- connections ---- */

static void conn_free(gconn *c) {
  if (!c)
    return;
  if (c->h2)
    nghttp2_session_del(c->h2);
  /* No close_notify: nobody waits for one, and sending it could block. */
  SSL_free(c->ssl);
  if (c->fd >= 0)
    close(c->fd);
  free(c);
}

static void fail(gconn *c, const char *what, int err) {
  if (!c->dead)
    snprintf(c->why, sizeof c->why, "%s%s%s", what, err ? ": " : "", err ? strerror(err) : "");
  c->dead = true;
}

/* Wait until C's socket is ready for what the last read or write wants
 * (EVENTS), or DEADLINE.  false when the time ran out. */
static bool wait_io(gconn *c, short events, int64_t deadline) {
  for (;;) {
    /* Past the deadline one look still, without waiting: what has come
     * is read (an idle connection's check before reuse). */
    int64_t left = (deadline - now_ns() + 999999) / 1000000;
    struct pollfd pf = {c->fd, events, 0};
    int pr = poll(&pf, 1, left <= 0 ? 0 : (int)(left > 60000 ? 60000 : left));
    if (pr > 0)
      return true;
    if ((pr < 0 && errno != EINTR) || (pr == 0 && now_ns() >= deadline))
      return false;
  }
}

/* OpenSSL's socket BIO writes with write(2), which raises SIGPIPE on a
 * connection the peer has reset, and a library must not count on its
 * process ignoring that signal: around each TLS call the signal is
 * blocked in this thread, and one the call raised is taken back before
 * it is unblocked.  Only a call that failed on its socket can have raised
 * one: after any other, a SIGPIPE pending is someone else's and stays. */
typedef struct pipe_guard {
  sigset_t old;
  bool was_pending;
} pipe_guard;

static void pipe_block(pipe_guard *pg) {
  sigset_t pipe, pend;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pg->was_pending = sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, &pg->old);
}

static void pipe_unblock(pipe_guard *pg, int ssl_err) {
  int e = errno;
  sigset_t pipe, pend;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  bool failed = ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_SSL;
  if (failed && !pg->was_pending && sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE)) {
    const struct timespec now = {0, 0};
    while (sigtimedwait(&pipe, NULL, &now) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &pg->old, NULL);
  errno = e;
}

/* One write or read on C's socket, through TLS when it has it: the bytes
 * moved, 0 when it would block (*EVENTS what to wait for), -1 broken
 * (c->dead, with why), -2 the peer closed (reads). */
static ssize_t io(gconn *c, bool write, void *p, size_t n, short *events) {
  *events = write ? POLLOUT : POLLIN;
  if (!c->ssl) {
    ssize_t r = write ? send(c->fd, p, n, MSG_NOSIGNAL) : recv(c->fd, p, n, 0);
    if (r > 0)
      return r;
    if (r == 0 && !write)
      return -2;
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    fail(c, write ? "send" : "recv", errno);
    return -1;
  }
  ERR_clear_error();
  int len = n > INT32_MAX ? INT32_MAX : (int)n;
  pipe_guard pg; /* a read may write too (a key update, an alert) */
  pipe_block(&pg);
  int r = write ? SSL_write(c->ssl, p, len) : SSL_read(c->ssl, p, len);
  int err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
  pipe_unblock(&pg, err);
  if (r > 0)
    return r;
  switch (err) {
  case SSL_ERROR_WANT_READ:
    *events = POLLIN;
    return 0;
  case SSL_ERROR_WANT_WRITE:
    *events = POLLOUT;
    return 0;
  case SSL_ERROR_ZERO_RETURN:
    return -2;
  case SSL_ERROR_SYSCALL:
    if (errno == EINTR)
      return 0;
    if (!write && (errno == 0 || r == 0))
      return -2;
    fail(c, write ? "send" : "recv", errno);
    return -1;
  default: {
    char e[120];
    ERR_error_string_n(ERR_get_error(), e, sizeof e);
    fail(c, e, 0);
    return -1;
  }
  }
}

/* Write what nghttp2 has to send, until DEADLINE.  false when the
 * connection broke or the time ran out (then c->dead). */
static bool flush(gconn *c, int64_t deadline) {
  while (!c->dead && nghttp2_session_want_write(c->h2)) {
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(c->h2, &p);
    if (n < 0) {
      fail(c, nghttp2_strerror((int)n), 0);
      break;
    }
    if (n == 0)
      break;
    size_t off = 0;
    while (off < (size_t)n) {
      short ev;
      ssize_t w = io(c, true, (void *)(p + off), (size_t)n - off, &ev);
      if (w > 0) {
        off += (size_t)w;
        /* A peer that takes a little at a time must not hold the call
         * past its deadline either. */
        if (off < (size_t)n && now_ns() >= deadline) {
          fail(c, "timed out sending", 0);
          return false;
        }
        continue;
      }
      if (w < 0) {
        if (w == -2)
          fail(c, "the server closed the connection", 0);
        return false;
      }
      if (!wait_io(c, ev, deadline)) {
        fail(c, "timed out sending", 0);
        return false;
      }
    }
  }
  return !c->dead;
}

/* Read what has come, waiting until DEADLINE for something.  1 something
 * was read, 0 the time ran out, -1 the connection broke. */
static int take_in(gconn *c, int64_t deadline) {
  short ev = POLLIN;
  for (;;) {
    /* What TLS has already decrypted does not make the socket readable. */
    if (!(c->ssl && SSL_pending(c->ssl) > 0) && !wait_io(c, ev, deadline))
      return 0;
    uint8_t buf[16384];
    ssize_t n = io(c, false, buf, sizeof buf, &ev);
    /* A TLS record without data for us (a session ticket, a key update)
     * makes the socket readable again: past the deadline, no more. */
    if (n == 0 && now_ns() >= deadline)
      return 0;
    if (n == 0)
      continue;
    if (n < 0) {
      if (n == -2)
        fail(c, "the server closed the connection", 0);
      return -1;
    }
    ssize_t r = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
    if (r < 0) {
      fail(c, nghttp2_strerror((int)r), 0);
      return -1;
    }
    return 1;
  }
}

/* TLS on the connected socket FD to endpoint EP, by END: the handshake,
 * then the checks (the certificate chain and the endpoint's name or
 * address, by OpenSSL; HTTP/2 agreed by ALPN).  *FATAL when no endpoint
 * would do better (our own files, a certificate that does not verify). */
static SSL *tls_start(grpc_tp *g, int fd, size_t ep, int64_t end, char *why, size_t whylen,
                      bool *fatal) {
  SSL *ssl = SSL_new(g->tls);
  if (!ssl || SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  const char *host = g->hosts[ep];
  unsigned char addr[16];
  bool ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
  X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
  int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host)
              : SSL_set_tlsext_host_name(ssl, host) == 1 && SSL_set1_host(ssl, host) == 1;
  if (ok != 1) {
    SSL_free(ssl);
    snprintf(why, whylen, "cannot check the certificate of %s", g->names[ep]);
    return NULL;
  }
  gconn tmp = {.fd = fd, .ssl = ssl};
  for (;;) {
    ERR_clear_error();
    pipe_guard pg;
    pipe_block(&pg);
    int r = SSL_connect(ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
    pipe_unblock(&pg, e);
    if (r == 1)
      break;
    short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (want && now_ns() < end && wait_io(&tmp, want, end))
      continue;
    long vr = SSL_get_verify_result(ssl);
    if (!want && vr != X509_V_OK) {
      snprintf(why, whylen, "TLS: the certificate of %s does not verify: %s", g->names[ep],
               X509_verify_cert_error_string(vr));
      *fatal = true;
    } else if (!want) {
      char es[120];
      unsigned long err = ERR_get_error();
      ERR_error_string_n(err, es, sizeof es);
      snprintf(why, whylen, "TLS handshake: %s", err ? es : "the connection closed");
    } else {
      snprintf(why, whylen, "TLS handshake: timed out");
    }
    SSL_free(ssl);
    return NULL;
  }
  const unsigned char *proto = NULL;
  unsigned plen = 0;
  SSL_get0_alpn_selected(ssl, &proto, &plen);
  if (plen != 2 || memcmp(proto, "h2", 2) != 0) {
    snprintf(why, whylen, "TLS: %s did not agree to HTTP/2 (ALPN)", g->names[ep]);
    SSL_free(ssl);
    return NULL;
  }
  return ssl;
}

/* A connection to endpoint EP, within the connect timeout and DEADLINE.
 * NULL with *WHY set when it cannot be made. */
static gconn *conn_new(grpc_tp *g, size_t ep, int64_t deadline, char *why, size_t whylen,
                       bool *fatal) {
  int64_t end = now_ns() + g->connect_timeout_ms * 1000000;
  if (end > deadline)
    end = deadline;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  int gr = getaddrinfo(g->hosts[ep], g->ports[ep], &hints, &ai);
  if (gr != 0) {
    snprintf(why, whylen, "%s", gai_strerror(gr));
    return NULL;
  }
  int fd = -1, err = 0;
  for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
      err = errno;
      close(fd);
      fd = -1;
      continue;
    }
    for (;;) {
      int64_t left = (end - now_ns() + 999999) / 1000000;
      struct pollfd pf = {fd, POLLOUT, 0};
      int pr = left > 0 ? poll(&pf, 1, (int)left) : 0;
      if (pr < 0 && errno == EINTR)
        continue;
      socklen_t sl = sizeof err;
      if (pr <= 0)
        err = ETIMEDOUT;
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
        err = errno;
      break;
    }
    if (err) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(ai);
  if (fd < 0) {
    snprintf(why, whylen, "connect: %s", strerror(err ? err : ECONNREFUSED));
    return NULL;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  SSL *ssl = NULL;
  if (g->tls && !(ssl = tls_start(g, fd, ep, end, why, whylen, fatal))) {
    close(fd);
    return NULL;
  }
  gconn *c = calloc(1, sizeof *c);
  if (!c || !callbacks() || nghttp2_session_client_new(&c->h2, callbacks(), c) != 0) {
    free(c);
    SSL_free(ssl);
    close(fd);
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  c->fd = fd;
  c->ssl = ssl;
  c->ep = ep;
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW}};
  if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
      nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, WINDOW) != 0) {
    conn_free(c);
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  return c;
}

/* An idle connection to EP that still looks alive, else a new one. */
static gconn *conn_get(grpc_tp *g, size_t ep, int64_t deadline, char *why, size_t whylen,
                       bool *fatal) {
  for (;;) {
    gconn *c = NULL;
    pthread_mutex_lock(&g->mu);
    for (size_t i = g->nidle; i-- > 0;)
      if (g->idle[i]->ep == ep) {
        c = g->idle[i];
        g->idle[i] = g->idle[--g->nidle];
        break;
      }
    pthread_mutex_unlock(&g->mu);
    if (!c)
      return conn_new(g, ep, deadline, why, whylen, fatal);
    /* What the server sent while it was idle: a GOAWAY, a close, pings. */
    struct pollfd pf = {c->fd, POLLIN, 0};
    if (poll(&pf, 1, 0) > 0 || (c->ssl && SSL_pending(c->ssl) > 0))
      take_in(c, now_ns());
    if (!c->dead && flush(c, deadline))
      return c;
    conn_free(c);
  }
}

static void conn_put(grpc_tp *g, gconn *c) {
  if (c->dead || !nghttp2_session_want_read(c->h2)) {
    conn_free(c);
    return;
  }
  c->reused = true;
  pthread_mutex_lock(&g->mu);
  if (g->nidle == g->capidle) {
    size_t cap = g->capidle ? g->capidle * 2 : 8;
    gconn **n = realloc(g->idle, cap * sizeof *n);
    if (n) {
      g->idle = n;
      g->capidle = cap;
    }
  }
  if (g->nidle < g->capidle) {
    g->idle[g->nidle++] = c;
    c = NULL;
  }
  pthread_mutex_unlock(&g->mu);
  conn_free(c);
}

/* ---- streams ---- */

static void stream_free(gconn *c, gstream *st) {
  if (!st)
    return;
  if (c && c->h2 && st->id > 0)
    nghttp2_session_set_stream_user_data(c->h2, st->id, NULL);
  free(st->in);
  dlock__grpc_buf_free(&st->out);
  free(st);
}

/* Open a call of PATH on C carrying MSG (a whole gRPC message), half-
 * closed after it when UNARY, with the token (if any) and a grpc-timeout
 * of TIMEOUT_NS.  NULL when out of memory. */
static gstream *stream_open(gconn *c, grpc_tp *g, const char *path, const dlock__grpc_buf *msg,
                            bool unary, const char *token, int64_t timeout_ns) {
  gstream *st = calloc(1, sizeof *st);
  if (!st)
    return NULL;
  st->grpc_status = -1;
  st->out_end = unary;
  st->out.data = malloc(msg->len);
  if (!st->out.data) {
    free(st);
    return NULL;
  }
  memcpy(st->out.data, msg->data, msg->len);
  st->out.len = st->out.cap = msg->len;
  char tmo[12];
  dlock__grpc_timeout(timeout_ns, tmo);
#define NV(n, v, fl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), (fl)}
  const char *auth = g->names[c->ep];
  nghttp2_nv hdrs[] = {
      NV(":method", "POST", NGHTTP2_NV_FLAG_NONE),
      NV(":scheme", c->ssl ? "https" : "http", NGHTTP2_NV_FLAG_NONE),
      NV(":path", path, NGHTTP2_NV_FLAG_NONE),
      NV(":authority", auth, NGHTTP2_NV_FLAG_NONE),
      NV("content-type", "application/grpc", NGHTTP2_NV_FLAG_NONE),
      NV("te", "trailers", NGHTTP2_NV_FLAG_NONE),
      NV("grpc-timeout", tmo, NGHTTP2_NV_FLAG_NONE),
      /* A member without a leader refuses at once (so we try the next
       * one) instead of holding the call until its own timeout, and
       * cancels a watch instead of leaving it silently stale. */
      NV("hasleader", "true", NGHTTP2_NV_FLAG_NONE),
      /* Never in the HPACK table. */
      NV("token", token ? token : "", NGHTTP2_NV_FLAG_NO_INDEX),
  };
#undef NV
  size_t nh = sizeof hdrs / sizeof hdrs[0] - (token ? 0 : 1);
  nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_out};
  int32_t id = nghttp2_submit_request(c->h2, NULL, hdrs, nh, &dp, st);
  if (id < 0) {
    stream_free(NULL, st);
    fail(c, nghttp2_strerror(id), 0);
    return NULL;
  }
  st->id = id;
  return st;
}

/* Send MSG on the open stream ST (whose last message has gone). */
static bool stream_send(gconn *c, gstream *st, const dlock__grpc_buf *msg) {
  if (st->out_off != st->out.len)
    return false;
  st->out.len = st->out_off = 0;
  st->out.bad = false;
  if (st->out.cap < msg->len) {
    uint8_t *p = realloc(st->out.data, msg->len);
    if (!p)
      return false;
    st->out.data = p;
    st->out.cap = msg->len;
  }
  memcpy(st->out.data, msg->data, msg->len);
  st->out.len = msg->len;
  return nghttp2_session_resume_data(c->h2, st->id) == 0;
}

/* Drive C until ST has a whole message (1, its body in *M, *MN bytes, to be
 * consumed with stream_consume), has closed (0), or DEADLINE came or the
 * connection broke (-1, c->dead or not). */
static int stream_next(gconn *c, gstream *st, int64_t deadline, const uint8_t **m, size_t *mn,
                       size_t *used) {
  bool late = false;
  for (;;) {
    if (!flush(c, deadline))
      return -1;
    int fr = dlock__grpc_frame(st->in, st->inlen, m, mn, used);
    if (fr < 0) {
      fail(c, "an answer that is no gRPC message of ours", 0);
      return -1;
    }
    if (fr == 1)
      return 1;
    if (st->closed)
      return 0;
    /* A peer that keeps the socket readable (pings, an answer sent a
     * little at a time) must not hold the call past its deadline; once it
     * has come, one look still, for what arrived meanwhile. */
    if (c->dead || late)
      return -1;
    late = now_ns() >= deadline;
    int r = take_in(c, deadline);
    if (r <= 0)
      return -1;
  }
}

static void stream_consume(gstream *st, size_t used) {
  memmove(st->in, st->in + used, st->inlen - used);
  st->inlen -= used;
}

/* End ST early (the caller is done with it): reset, sent at once. */
static void stream_cancel(gconn *c, gstream *st, int64_t deadline) {
  if (!st->closed && !c->dead) {
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    flush(c, deadline);
  }
}

/* ---- unary calls ---- */

static void sleep_until(int64_t until) {
  int64_t d = until - now_ns();
  if (d <= 0)
    return;
  struct timespec ts = {d / 1000000000, d % 1000000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

enum { A_DONE, A_STATUS, A_BROKE };

/* One attempt of a unary call on C.  A_DONE with the answer's body in
 * RESP, A_STATUS with *CODE and MSG the server's refusal, A_BROKE when the
 * connection failed or the time ran out (WHY says which). */
static int attempt(grpc_tp *g, gconn *c, const char *path, const dlock__grpc_buf *req,
                   const char *token, int64_t deadline, dlock__grpc_buf *resp, int *code,
                   char *msg, size_t msglen, bool *answered, char *why, size_t whylen) {
  gstream *st = stream_open(c, g, path, req, true, token, deadline - now_ns());
  if (!st) {
    snprintf(why, whylen, "out of memory");
    return A_BROKE;
  }
  const uint8_t *m = NULL;
  size_t mn = 0, used = 0;
  int r = stream_next(c, st, deadline, &m, &mn, &used);
  /* The rest, to the trailers; reading it may move ST's buffer, so the
   * answer is looked for in it only once the stream has ended. */
  for (bool late = false; r == 1 && !st->closed;) {
    if (!flush(c, deadline) || c->dead || late) {
      r = -1;
      break;
    }
    late = now_ns() >= deadline;
    if (take_in(c, deadline) <= 0)
      r = -1;
  }
  size_t at = 0;
  int u = r == 1 ? dlock__grpc_unary(st->in, st->inlen, &at, &mn) : 0;
  bool have = u == 1;
  if (u < 0)
    r = -2; /* a second answer to a unary call, or part of one */
  *answered = st->answered;
  int out;
  if (r == -2 || st->too_big) {
    snprintf(why, whylen, r == -2 ? "two answers to one call" : "an answer too large");
    fail(c, why, 0);
    out = A_BROKE;
  } else if (r == -1 || !st->closed) {
    snprintf(why, whylen, "%s", c->why[0] ? c->why : "timed out");
    fail(c, "timed out", 0);
    out = A_BROKE;
  } else if (st->grpc_status > 0) {
    *code = st->grpc_status;
    snprintf(msg, msglen, "%s", st->grpc_msg[0] ? st->grpc_msg : "(no message)");
    out = A_STATUS;
  } else if (st->grpc_status < 0) {
    /* No gRPC status: reset, or not a gRPC server. */
    if (st->http_status && st->http_status != 200)
      snprintf(why, whylen, "HTTP %d, not a gRPC answer", st->http_status);
    else if (st->reset)
      snprintf(why, whylen, "the call was reset (%s)", nghttp2_http2_strerror(st->reset));
    else
      snprintf(why, whylen, "an answer without a gRPC status");
    out = A_BROKE;
  } else if (!have) {
    snprintf(why, whylen, "an answer without a message");
    fail(c, why, 0);
    out = A_BROKE;
  } else {
    resp->len = 0;
    resp->bad = false;
    /* The body, without its prefix, at the buffer's start. */
    if (resp->cap < mn + 1) {
      uint8_t *p = realloc(resp->data, mn + 1);
      if (!p) {
        snprintf(why, whylen, "out of memory");
        stream_free(c, st);
        return A_BROKE;
      }
      resp->data = p;
      resp->cap = mn + 1;
    }
    memcpy(resp->data, st->in + at, mn);
    resp->len = mn;
    out = A_DONE;
  }
  stream_free(c, st);
  return out;
}

/* The unary call PATH with REQ until DEADLINE, over every endpoint as the
 * gateway's dlock__http_send goes: the next one when one cannot be
 * reached or cannot serve, pauses growing from 20 ms to 0.5 s between
 * rounds, each endpoint not yet tried in a round an equal share of the
 * time left.  AUTH_REQ: logging in (no token, no relogin).  0 with RESP
 * the answer's body, or a negative code with a message. */
static int call(grpc_tp *g, const char *path, const dlock__grpc_buf *req, int64_t deadline,
                bool auth_req, dlock__grpc_buf *resp, enum dlock__etcd_fault *fault) {
  enum dlock__etcd_fault dummy;
  if (!fault)
    fault = &dummy;
  *fault = DLOCK__ETCD_F_NONE;
  if (req->bad)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  size_t tried = 0;
  int reauths = 0;
  int64_t backoff = 20000000;
  char why[256] = "";
  for (;;) {
    size_t ep = current(g);
    int64_t attempt_end = deadline;
    size_t untried = g->n - tried % g->n;
    if (untried > 1)
      attempt_end = now_ns() + (deadline - now_ns()) / (int64_t)untried;
    uint64_t gen = 0;
    char *token = auth_req ? NULL : g->host.token(g->host.ctx, &gen);
    int verdict = A_BROKE, code = 0;
    char msg[256] = "";
    bool fatal = false;
    for (int fresh = 0; fresh < 2; fresh++) {
      gconn *c = conn_get(g, ep, attempt_end, why, sizeof why, &fatal);
      if (!c)
        break;
      bool answered = false, reused = c->reused;
      verdict = attempt(g, c, path, req, token, attempt_end, resp, &code, msg, sizeof msg,
                        &answered, why, sizeof why);
      if (verdict == A_BROKE)
        c->dead = true;
      conn_put(g, c);
      /* A kept connection the server had closed meanwhile: once more on
       * a new one, unless the time is up. */
      if (verdict != A_BROKE || !reused || answered || now_ns() >= attempt_end)
        break;
    }
    if (token) {
      explicit_bzero(token, strlen(token));
      free(token);
    }
    if (verdict == A_DONE)
      return 0;
    if (fatal)
      return dlock_seterr(DLOCK_ECONN, "etcd: %s: %s", g->names[ep], why);
    if (verdict == A_STATUS) {
      enum dlock__etcd_fault f = dlock__etcd_grpc_fault(code, msg);
      /* etcd 3.4 answers a call without a token "user name is empty": the
       * same cure as an expired token. */
      if (f == DLOCK__ETCD_F_AUTH && g->host.auth && strstr(msg, "user name is empty"))
        f = DLOCK__ETCD_F_REAUTH;
      *fault = f;
      if (f == DLOCK__ETCD_F_REAUTH && g->host.auth && !auth_req && reauths++ < 2) {
        int rc = g->host.relogin(g->host.ctx, gen, deadline);
        if (rc < 0)
          return rc;
        continue;
      }
      if (f != DLOCK__ETCD_F_RETRY)
        return dlock_seterr(dlock__etcd_fault_code(f), "etcd: %s", msg);
      snprintf(why, sizeof why, "%s", msg);
    }
    move_on(g, ep);
    int64_t now = now_ns();
    if (++tried % g->n == 0) {
      int64_t until = now + backoff + (int64_t)dlock__random_below((uint64_t)backoff);
      backoff = backoff * 2 > 500000000 ? 500000000 : backoff * 2;
      if (until < deadline) {
        sleep_until(until);
        continue;
      }
    } else if (now < deadline) {
      continue;
    }
    return dlock_seterr(DLOCK_ECONN, "etcd: no endpoint answered %s: %s", path, why);
  }
}

/* ---- the transport ---- */

/* A file parameter of the URL: 0 absent, 1 with *V, or a negative code. */
static int file_param(dlock_url *url, const char *name, const char **v) {
  if (!dlock_url_param(url, name, v))
    return 0;
  if (!**v)
    return dlock_seterr(DLOCK_EINVAL, "etcd: ?%s= needs a file name", name);
  return 1;
}

/* etcd+grpcs://: the TLS context every connection starts from.  Only the
 * CA bundle's name goes into a message: the others name the client's
 * credentials. */
static int tls_open(grpc_tp *g, dlock_url *url) {
  bool tls = strcmp(dlock_url_scheme(url), "etcd+grpcs") == 0;
  const char *ca = NULL, *cert = NULL, *key = NULL;
  int a = file_param(url, "cacert", &ca), b = a < 0 ? 0 : file_param(url, "cert", &cert);
  int k = a < 0 || b < 0 ? 0 : file_param(url, "key", &key);
  if (a < 0 || b < 0 || k < 0)
    return a < 0 ? a : b < 0 ? b : k;
  if (!tls && (a || b || k))
    return dlock_seterr(DLOCK_EINVAL, "etcd: cacert, cert and key need etcd+grpcs://");
  if (b != k)
    return dlock_seterr(DLOCK_EINVAL, "etcd: ?cert= and ?key= go together");
  if (!tls)
    return 0;
  g->tls = SSL_CTX_new(TLS_client_method());
  if (!g->tls)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: cannot make a TLS context");
  SSL_CTX_set_min_proto_version(g->tls, TLS1_2_VERSION);
  SSL_CTX_set_verify(g->tls, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_mode(g->tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  static const unsigned char alpn[] = {2, 'h', '2'};
  if (SSL_CTX_set_alpn_protos(g->tls, alpn, sizeof alpn) != 0)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: cannot make a TLS context");
  if (ca ? SSL_CTX_load_verify_locations(g->tls, ca, NULL) != 1
         : SSL_CTX_set_default_verify_paths(g->tls) != 1)
    return dlock_seterr(DLOCK_EINVAL, "etcd: cannot read the CA bundle %s", ca ? ca : "");
  if (cert && (SSL_CTX_use_certificate_chain_file(g->tls, cert) != 1 ||
               SSL_CTX_use_PrivateKey_file(g->tls, key, SSL_FILETYPE_PEM) != 1 ||
               SSL_CTX_check_private_key(g->tls) != 1))
    return dlock_seterr(DLOCK_EINVAL, "etcd: cannot use the client certificate and key of "
                        "?cert= and ?key= (unreadable, or not a pair)");
  ERR_clear_error();
  return 0;
}

static int g_open(void **tp, const dlock__etcd_host *host, dlock_url *url) {
  grpc_tp *g = calloc(1, sizeof *g);
  *tp = g;
  if (!g)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  g->host = *host;
  g->connect_timeout_ms = host->bc->connect_timeout_ms;
  pthread_mutex_init(&g->mu, NULL);
  pthread_mutex_init(&g->ka_mu, NULL);
  int rc = tls_open(g, url);
  if (rc < 0)
    return rc;
  size_t n = dlock_url_host_count(url);
  if (n == 0)
    return dlock_seterr(DLOCK_EINVAL, "etcd: the URL names no endpoint");
  g->names = calloc(n, sizeof *g->names);
  g->hosts = calloc(n, sizeof *g->hosts);
  g->ports = calloc(n, sizeof *g->ports);
  if (!g->names || !g->hosts || !g->ports)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  for (size_t i = 0; i < n; i++) {
    const char *h = dlock_url_host(url, i);
    int port = dlock_url_port(url, i);
    if (!h[0])
      return dlock_seterr(DLOCK_EINVAL, "etcd: endpoint %zu has no host", i + 1);
    bool v6 = strchr(h, ':') != NULL;
    char p[16];
    snprintf(p, sizeof p, "%d", port ? port : 2379);
    g->hosts[i] = strdup(h);
    g->ports[i] = strdup(p);
    if (asprintf(&g->names[i], "%s%s%s:%s", v6 ? "[" : "", h, v6 ? "]" : "", p) < 0)
      g->names[i] = NULL;
    g->n = i + 1;
    if (!g->hosts[i] || !g->ports[i] || !g->names[i])
      return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  }
  return 0;
}

static void ka_drop(grpc_tp *g) {
  stream_free(g->ka, g->ka_st);
  g->ka_st = NULL;
  conn_free(g->ka);
  g->ka = NULL;
}

static void g_close(void *tp) {
  grpc_tp *g = tp;
  if (!g)
    return;
  ka_drop(g);
  for (size_t i = 0; i < g->nidle; i++)
    conn_free(g->idle[i]);
  free(g->idle);
  for (size_t i = 0; i < g->n; i++) {
    free(g->names[i]);
    free(g->hosts[i]);
    free(g->ports[i]);
  }
  free(g->names);
  free(g->hosts);
  free(g->ports);
  SSL_CTX_free(g->tls);
  pthread_mutex_destroy(&g->mu);
  pthread_mutex_destroy(&g->ka_mu);
  free(g);
}

static size_t g_endpoints(void *tp) { return ((grpc_tp *)tp)->n; }

static void g_endpoint(void *tp, char *out) {
  grpc_tp *g = tp;
  snprintf(out, DLOCK_ETCD_ENDPOINT_MAX, "%s", g->names[current(g)]);
}

static uint64_t g_failovers(void *tp) {
  grpc_tp *g = tp;
  pthread_mutex_lock(&g->mu);
  uint64_t n = g->failovers;
  pthread_mutex_unlock(&g->mu);
  return n;
}

static int g_txn(void *tp, const dlock__etcd_txreq *t, int64_t deadline, dlock__etcd_txn *out,
                 enum dlock__etcd_fault *fault) {
  memset(out, 0, sizeof *out);
  dlock__grpc_buf req = {0}, resp = {0};
  dlock__grpc_req_txn(&req, t);
  int rc = call(tp, DLOCK__GRPC_TXN, &req, deadline, false, &resp, fault);
  if (rc == 0)
    rc = dlock__grpc_parse_txn(resp.data, resp.len, out);
  dlock__grpc_buf_free(&req);
  dlock__grpc_buf_free(&resp);
  return rc;
}

static int g_grant(void *tp, int64_t ttl_s, int64_t deadline, int64_t *id, int64_t *granted_s) {
  dlock__grpc_buf req = {0}, resp = {0};
  dlock__grpc_req_grant(&req, ttl_s);
  int rc = call(tp, DLOCK__GRPC_GRANT, &req, deadline, false, &resp, NULL);
  if (rc == 0)
    rc = dlock__grpc_parse_grant(resp.data, resp.len, id, granted_s);
  dlock__grpc_buf_free(&req);
  dlock__grpc_buf_free(&resp);
  return rc;
}

static int g_revoke(void *tp, int64_t id, int64_t deadline) {
  dlock__grpc_buf req = {0}, resp = {0};
  dlock__grpc_req_lease(&req, id);
  int rc = call(tp, DLOCK__GRPC_REVOKE, &req, deadline, false, &resp, NULL);
  dlock__grpc_buf_free(&req);
  dlock__grpc_buf_free(&resp);
  return rc;
}

static int g_timetolive(void *tp, int64_t id, int64_t deadline, int64_t *ttl_ms,
                        dlock__etcd_keys *keys) {
  dlock__grpc_buf req = {0}, resp = {0};
  *ttl_ms = -1;
  dlock__grpc_req_timetolive(&req, id, keys != NULL);
  int rc = call(tp, DLOCK__GRPC_TIMETOLIVE, &req, deadline, false, &resp, NULL);
  if (rc == 0)
    rc = dlock__grpc_parse_timetolive(resp.data, resp.len, ttl_ms, keys);
  dlock__grpc_buf_free(&req);
  dlock__grpc_buf_free(&resp);
  return rc;
}

static int g_authenticate(void *tp, const char *user, const char *password, int64_t deadline,
                          char **token) {
  dlock__grpc_buf req = {0}, resp = {0};
  *token = NULL;
  dlock__grpc_req_auth(&req, user, password);
  int rc = call(tp, DLOCK__GRPC_AUTH, &req, deadline, true, &resp, NULL);
  if (rc == 0)
    rc = dlock__grpc_parse_auth(resp.data, resp.len, token);
  if (req.data)
    explicit_bzero(req.data, req.cap);
  if (resp.data)
    explicit_bzero(resp.data, resp.cap);
  dlock__grpc_buf_free(&req);
  dlock__grpc_buf_free(&resp);
  return rc;
}

static int g_status(void *tp, int64_t deadline) {
  dlock__grpc_buf req = {0}, resp = {0};
  dlock__grpc_req_status(&req);
  int rc = call(tp, DLOCK__GRPC_STATUS, &req, deadline, false, &resp, NULL);
  int64_t rev;
  if (rc == 0)
    rc = dlock__grpc_parse_header(resp.data, resp.len, &rev);
  dlock__grpc_buf_free(&req);
  dlock__grpc_buf_free(&resp);
  return rc;
}

/* One keepalive on the stream, opened (on a connection of its own to the
 * current endpoint) when there is none.  Under ka_mu.  0 with *TTL_S, a
 * negative code with a message, or 1: the stream broke or the server
 * cannot serve it now (*EP the endpoint), with WHY. */
static int ka_once(grpc_tp *g, int64_t id, int64_t deadline, int64_t *ttl_s, size_t *ep,
                   int *code, char *why, size_t whylen) {
  dlock__grpc_buf req = {0};
  dlock__grpc_req_lease(&req, id);
  if (req.bad)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  int rc = 1;
  *code = 0;
  if (!g->ka) {
    *ep = current(g);
    bool fatal = false;
    g->ka = conn_new(g, *ep, deadline, why, whylen, &fatal);
    if (!g->ka) {
      dlock__grpc_buf_free(&req);
      return 1;
    }
    char *token = g->host.token(g->host.ctx, &g->ka_gen);
    /* The stream lives as long as the connection: a day is "forever" in
     * grpc-timeout's terms, and a refresh's own deadline bounds each
     * wait on it. */
    g->ka_st = stream_open(g->ka, g, DLOCK__GRPC_KEEPALIVE, &req, false, token,
                           86400 * INT64_C(1000000000));
    if (token) {
      explicit_bzero(token, strlen(token));
      free(token);
    }
    if (!g->ka_st) {
      dlock__grpc_buf_free(&req);
      ka_drop(g);
      return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
    }
  } else if (!stream_send(g->ka, g->ka_st, &req)) {
    dlock__grpc_buf_free(&req);
    ka_drop(g);
    snprintf(why, whylen, "the keepalive stream is stuck");
    return 1;
  }
  dlock__grpc_buf_free(&req);
  *ep = g->ka->ep;
  for (;;) {
    const uint8_t *m;
    size_t mn, used;
    int r = stream_next(g->ka, g->ka_st, deadline, &m, &mn, &used);
    if (r == 1) {
      int64_t got = 0;
      rc = dlock__grpc_parse_keepalive(m, mn, &got, ttl_s);
      stream_consume(g->ka_st, used);
      if (rc == 0 && got != id)
        continue; /* not ours: cannot be, since one is asked at a time */
      break;
    }
    if (r == 0) {
      *code = g->ka_st->grpc_status > 0 ? g->ka_st->grpc_status : 0;
      snprintf(why, whylen, "%.190s", g->ka_st->grpc_msg[0] ? g->ka_st->grpc_msg
                                                         : "the keepalive stream ended");
    } else {
      snprintf(why, whylen, "%s", g->ka->why[0] ? g->ka->why : "timed out");
    }
    rc = 1;
    break;
  }
  if (rc != 0)
    ka_drop(g);
  return rc;
}

static int g_keepalive(void *tp, int64_t id, int64_t deadline, int64_t *ttl_s) {
  grpc_tp *g = tp;
  *ttl_s = 0;
  /* Another lease's refresh may hold the stream until its own deadline:
   * this one waits no longer than its own, timed on a monotonic clock
   * where the C library can (a wall clock set back would stretch the wait
   * past the deadline). */
#ifdef DLOCK_HAVE_MUTEX_CLOCKLOCK
  const clockid_t clk = CLOCK_MONOTONIC;
#else
  const clockid_t clk = CLOCK_REALTIME;
#endif
  struct timespec until;
  clock_gettime(clk, &until);
  int64_t left = deadline - now_ns();
  int64_t at = (int64_t)until.tv_nsec + (left > 0 ? left : 0);
  until.tv_sec += (time_t)(at / 1000000000);
  until.tv_nsec = (long)(at % 1000000000);
#ifdef DLOCK_HAVE_MUTEX_CLOCKLOCK
  int locked = deadline < 0 ? pthread_mutex_lock(&g->ka_mu)
                            : pthread_mutex_clocklock(&g->ka_mu, clk, &until);
#else
  int locked = deadline < 0 ? pthread_mutex_lock(&g->ka_mu)
                            : pthread_mutex_timedlock(&g->ka_mu, &until);
#endif
  if (locked != 0)
    return dlock_seterr(DLOCK_ETIMEDOUT, "etcd: lease keepalive: the keepalive stream stayed "
                        "busy with another lease until the deadline");
  int rc, reauths = 0;
  size_t tried = 0;
  char why[256] = "";
  for (;;) {
    size_t ep = current(g);
    int code = 0;
    rc = ka_once(g, id, deadline, ttl_s, &ep, &code, why, sizeof why);
    if (rc <= 0)
      break;
    enum dlock__etcd_fault f = code ? dlock__etcd_grpc_fault(code, why) : DLOCK__ETCD_F_RETRY;
    if (f == DLOCK__ETCD_F_REAUTH && g->host.auth && reauths++ < 2) {
      if ((rc = g->host.relogin(g->host.ctx, g->ka_gen, deadline)) < 0)
        break;
      continue;
    }
    if (f != DLOCK__ETCD_F_RETRY) {
      rc = dlock_seterr(dlock__etcd_fault_code(f), "etcd: lease keepalive: %s", why);
      break;
    }
    move_on(g, ep);
    if (now_ns() >= deadline) {
      rc = dlock_seterr(DLOCK_ECONN, "etcd: lease keepalive: no endpoint answered: %s", why);
      break;
    }
    if (++tried % g->n == 0)
      dlock__http_pause(deadline);
  }
  pthread_mutex_unlock(&g->ka_mu);
  return rc;
}

static int g_watch(void *tp, const char *key, int64_t start, int64_t until,
                   dlock__etcd_watch_fn fn, void *ud, uint64_t *gen, size_t *epp) {
  grpc_tp *g = tp;
  size_t ep = current(g);
  *epp = ep;
  char why[256];
  bool fatal = false;
  gconn *c = conn_get(g, ep, until, why, sizeof why, &fatal);
  if (!c && fatal)
    return dlock_seterr(DLOCK_ECONN, "etcd: %s: %s", g->names[ep], why);
  if (!c) {
    move_on(g, ep);
    return DLOCK__ETCD_WATCH_BROKE;
  }
  dlock__grpc_buf req = {0};
  dlock__grpc_req_watch(&req, key, start);
  char *token = req.bad ? NULL : g->host.token(g->host.ctx, gen);
  gstream *st = req.bad ? NULL
                        : stream_open(c, g, DLOCK__GRPC_WATCH, &req, false, token,
                                      until - now_ns() + WATCH_GRACE_NS);
  if (token) {
    explicit_bzero(token, strlen(token));
    free(token);
  }
  dlock__grpc_buf_free(&req);
  if (!st) {
    conn_put(g, c);
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  }
  int rc = DLOCK__ETCD_WATCH_BROKE;
  for (;;) {
    const uint8_t *m;
    size_t mn, used;
    int r = stream_next(c, st, until, &m, &mn, &used);
    if (r == 1) {
      dlock__etcd_watch_ev ev;
      int pr = dlock__grpc_parse_watch(m, mn, &ev);
      stream_consume(st, used);
      if (pr == 0 && fn(ud, &ev)) {
        rc = DLOCK__ETCD_WATCH_STOPPED;
        break;
      }
      continue;
    }
    if (r == 0 && st->grpc_status > 0) {
      /* Ended with a status: an error answer, as the gateway's
       * {"error":...} line is. */
      dlock__etcd_watch_ev ev;
      memset(&ev, 0, sizeof ev);
      ev.error = 1;
      snprintf(ev.msg, sizeof ev.msg, "%s", st->grpc_msg);
      ev.fault = dlock__etcd_grpc_fault(st->grpc_status, st->grpc_msg);
      if (now_ns() < until && fn(ud, &ev)) {
        rc = DLOCK__ETCD_WATCH_STOPPED;
        break;
      }
    }
    if (r < 0 && !c->dead && now_ns() >= until) {
      rc = DLOCK__ETCD_WATCH_UNTIL;
      /* Quiet all along: whether the server is still there is not known,
       * and the connection is not kept. */
      c->dead = true;
      break;
    }
    if (r < 0)
      move_on(g, ep);
    rc = DLOCK__ETCD_WATCH_BROKE;
    break;
  }
  stream_cancel(c, st, now_ns() + 100000000);
  stream_free(c, st);
  conn_put(g, c);
  return rc;
}

const dlock__etcd_transport dlock__etcd_grpc = {
    .name = "grpc",
    .open = g_open,
    .close = g_close,
    .endpoints = g_endpoints,
    .endpoint = g_endpoint,
    .failovers = g_failovers,
    .txn = g_txn,
    .grant = g_grant,
    .keepalive = g_keepalive,
    .revoke = g_revoke,
    .timetolive = g_timetolive,
    .authenticate = g_authenticate,
    .status = g_status,
    .watch = g_watch,
    .move_on = move_on,
};
