/* Redis backend: connections, the pool, the subscriber wait and the ops.
 * What goes over the wire (scripts, keys, values, reply shapes) lives in
 * redis-codec.c; this file only moves it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include "backends/redis/redis-codec.h"

/* Idle connections kept per client; more are opened on demand and closed
 * when returned to a full pool. */
#define POOL_IDLE_MAX 16
/* Locks renewed by one script call.  A call holds the server for its whole
 * run, a few ms per thousand locks, so a batch larger than this goes as
 * several calls of equal size, pipelined on one connection: one round trip
 * for all, and other clients served between them. */
#define RENEW_KEYS_MAX 1000
/* Waiting on a holder whose key has no expiry (PTTL -1, only when something
 * else wrote it): re-check after this many ms, doubling up to the max. */
#define NOTTL_WAIT_MIN_MS 5
#define NOTTL_WAIT_MAX_MS 1000
/* Bytes of output buffer a connection keeps once its requests are sent. */
#define OBUF_KEEP_MAX 16384
/* Replies read while leaving pub/sub mode before giving the connection up. */
#define UNSUBSCRIBE_MAX_REPLIES 4096

typedef struct redis_client {
  pthread_mutex_t mu; /* guards idle[] and nidle */
  int mu_ready;
  redisContext *idle[POOL_IDLE_MAX];
  int64_t idle_since[POOL_IDLE_MAX]; /* dlock_backend_now_ns() when returned */
  size_t nidle;

  int unix_socket;
  char *host; /* host name, or the socket path */
  int port;
  char *where; /* "host:port" or the socket path, for messages */
  char *user;
  char *password;
  long long db;
  char *prefix;
  int64_t connect_timeout_ms;
  int64_t timeout_ms;
  int64_t fence_ttl_ms; /* 0: fence counters never expire */
  char sha[DLOCK__REDIS_NSCRIPTS][41];
} redis_client;

/* ---- sending ----
 * hiredis 0.14 writes with write(2), so a server that went away would kill
 * the process with SIGPIPE, and a library may neither ignore that signal
 * process-wide nor juggle signal masks on every request.  So hiredis only
 * formats: the bytes it buffered are sent here with MSG_NOSIGNAL, and its
 * reply reader then finds nothing left to write. */

static int send_buffered(redisContext *c) {
  while (c->obuf && sdslen(c->obuf) > 0) {
    size_t len = sdslen(c->obuf);
    ssize_t n = send(c->fd, c->obuf, len > INT_MAX ? INT_MAX : len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      c->err = REDIS_ERR_IO;
      snprintf(c->errstr, sizeof c->errstr, "%s", strerror(errno));
      return REDIS_ERR;
    }
    sdsrange(c->obuf, (int)n, -1);
  }
  /* sdsrange keeps the buffer's size: after a pipeline of renewals that
   * would hold a pooled connection's largest request for good. */
  if (c->obuf && sdsavail(c->obuf) > OBUF_KEEP_MAX) {
    sds fresh = sdsempty();
    if (!fresh) {
      c->err = REDIS_ERR_OOM;
      snprintf(c->errstr, sizeof c->errstr, "out of memory");
      return REDIS_ERR;
    }
    sdsfree(c->obuf);
    c->obuf = fresh;
  }
  return REDIS_OK;
}

static int get_reply(redisContext *c, void **reply) {
  if (send_buffered(c) != REDIS_OK)
    return REDIS_ERR;
  return redisGetReply(c, reply);
}

/* Appends one request to C's output buffer.  The codec formats it (on the
 * stack when it is small): hiredis's own formatting grows a string argument
 * by argument, which costs more than the rest of an acquire's client side. */
static int append_argv(redisContext *c, int argc, const char **argv, const size_t *lens) {
  char stack[1024];
  size_t n = dlock__redis_format(stack, sizeof stack, argc, argv, lens);
  char *buf = stack;
  if (n > sizeof stack) {
    buf = malloc(n);
    if (!buf)
      return REDIS_ERR;
    dlock__redis_format(buf, n, argc, argv, lens);
  }
  int r = redisAppendFormattedCommand(c, buf, n);
  if (buf != stack)
    free(buf);
  return r;
}

/* ---- connections ---- */

static struct timeval ms_to_tv(int64_t ms) {
  struct timeval tv;
  tv.tv_sec = (time_t)(ms / 1000);
  tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
  return tv;
}

/* C failed doing WHAT.  Everything on the socket is DLOCK_ECONN: the
 * operation may or may not have reached the server, and retrying later can
 * help.  TIMEOUT_MS is the socket timeout that was in force. */
static int io_error(const redis_client *rc, const redisContext *c, const char *what,
                    int err_no, int64_t timeout_ms) {
  if (c->err == REDIS_ERR_OOM)
    return dlock_seterr(DLOCK_ENOMEM, "redis: %s: out of memory", what);
  if (c->err == REDIS_ERR_IO && (err_no == EAGAIN || err_no == EWOULDBLOCK))
    return dlock_seterr(DLOCK_ECONN, "redis: %s: no reply from %s within %lld ms", what,
                        rc->where, (long long)timeout_ms);
  return dlock_seterr(DLOCK_ECONN, "redis: %s: %s: %s", what, rc->where,
                      c->errstr[0] ? c->errstr : "I/O error");
}

static int command(const redis_client *rc, redisContext *c, const char *what, int argc,
                   const char **argv, const size_t *lens, int64_t timeout_ms,
                   redisReply **out) {
  if (append_argv(c, argc, argv, lens) != REDIS_OK)
    return dlock_seterr(DLOCK_ENOMEM, "redis: %s: out of memory", what);
  errno = 0;
  void *v = NULL;
  int ok = get_reply(c, &v);
  int e = errno;
  if (ok != REDIS_OK || !v)
    return io_error(rc, c, what, e, timeout_ms);
  *out = v;
  return 0;
}

static int set_timeout(const redis_client *rc, redisContext *c, int64_t ms) {
  /* A zero timeval clears the socket timeout: no limit. */
  struct timeval tv = ms_to_tv(ms > 0 ? ms : 0);
  if (redisSetTimeout(c, tv) != REDIS_OK)
    return dlock_seterr(DLOCK_ECONN, "redis: cannot set the socket timeout on %s: %s",
                        rc->where, c->errstr);
  return 0;
}

/* AUTH and SELECT are part of connecting, so they run under the connect
 * timeout; the request timeout is set once the connection is ready. */
static int handshake(const redis_client *rc, redisContext *c) {
  int r = set_timeout(rc, c, rc->connect_timeout_ms);
  if (r < 0)
    return r;
  redisReply *rep = NULL;
  if (rc->user || rc->password) {
    const char *argv[3];
    size_t lens[3];
    int argc = 0;
    argv[argc] = "AUTH";
    lens[argc++] = 4;
    if (rc->user) {
      argv[argc] = rc->user;
      lens[argc++] = strlen(rc->user);
    }
    const char *pw = rc->password ? rc->password : "";
    argv[argc] = pw;
    lens[argc++] = strlen(pw);
    r = command(rc, c, "AUTH", argc, argv, lens, rc->connect_timeout_ms, &rep);
    if (r < 0)
      return r;
    r = dlock__redis_decode_auth(rep, rc->password);
    freeReplyObject(rep);
    if (r < 0)
      return r;
  }
  if (rc->db != 0) {
    char db[24];
    int n = snprintf(db, sizeof db, "%lld", rc->db);
    const char *argv[2] = {"SELECT", db};
    size_t lens[2] = {6, (size_t)n};
    r = command(rc, c, "SELECT", 2, argv, lens, rc->connect_timeout_ms, &rep);
    if (r < 0)
      return r;
    r = dlock__redis_decode_ok(rep, "SELECT");
    freeReplyObject(rep);
    if (r < 0)
      return r;
  }
  return set_timeout(rc, c, rc->timeout_ms);
}

static int conn_open(const redis_client *rc, redisContext **out) {
  redisContext *c;
  if (rc->connect_timeout_ms > 0) {
    struct timeval tv = ms_to_tv(rc->connect_timeout_ms);
    c = rc->unix_socket ? redisConnectUnixWithTimeout(rc->host, tv)
                        : redisConnectWithTimeout(rc->host, rc->port, tv);
  } else {
    c = rc->unix_socket ? redisConnectUnix(rc->host) : redisConnect(rc->host, rc->port);
  }
  if (!c)
    return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory connecting to %s", rc->where);
  int r = 0;
  /* hiredis does not open its socket close-on-exec; a child that inherited
   * it would keep the connection (and whatever the store ties to it) alive. */
  if (!c->err && c->fd >= 0)
    fcntl(c->fd, F_SETFD, fcntl(c->fd, F_GETFD) | FD_CLOEXEC);
  if (c->err)
    r = dlock_seterr(DLOCK_ECONN, "redis: cannot connect to %s: %s", rc->where,
                     c->errstr[0] ? c->errstr : "connection failed");
  else if (!rc->unix_socket && redisEnableKeepAlive(c) != REDIS_OK)
    r = dlock_seterr(DLOCK_ECONN, "redis: cannot enable keepalive on %s: %s", rc->where,
                     c->errstr);
  else
    r = handshake(rc, c);
  if (r < 0) {
    redisFree(c);
    return r;
  }
  *out = c;
  return 0;
}

/* An idle connection has nothing to read: Redis sends nothing unasked
 * outside pub/sub.  Readable means the server closed it (restart, client
 * timeout) or something is wrong; better found now than after a request
 * that might then have to be retried without knowing whether it ran. */
#define IDLE_CHECK_AFTER_NS 200000000 /* 200 ms */

static int conn_idle_ok(const redisContext *c, int64_t since) {
  /* A connection back from a request moments ago is busy traffic; the
   * check (a syscall) is for ones that sat long enough for the server to
   * have gone away.  Missing a close in that window costs only an ECONN. */
  if (c->err == 0 && dlock_backend_now_ns() - since < IDLE_CHECK_AFTER_NS)
    return 1;
  struct pollfd p = {.fd = c->fd, .events = POLLIN, .revents = 0};
  return c->err == 0 && poll(&p, 1, 0) == 0;
}

static int pool_get(redis_client *rc, redisContext **out) {
  for (;;) {
    redisContext *c = NULL;
    pthread_mutex_lock(&rc->mu);
    int64_t since = 0;
    if (rc->nidle > 0) {
      c = rc->idle[--rc->nidle];
      since = rc->idle_since[rc->nidle];
    }
    pthread_mutex_unlock(&rc->mu);
    if (!c)
      return conn_open(rc, out);
    if (conn_idle_ok(c, since)) {
      *out = c;
      return 0;
    }
    redisFree(c);
  }
}

/* Give C back, or close it if it failed (its state is unknown) or the pool
 * is full. */
static void pool_put(redis_client *rc, redisContext *c) {
  if (!c)
    return;
  if (c->err == 0) {
    pthread_mutex_lock(&rc->mu);
    if (rc->nidle < POOL_IDLE_MAX) {
      rc->idle_since[rc->nidle] = dlock_backend_now_ns();
      rc->idle[rc->nidle++] = c;
      c = NULL;
    }
    pthread_mutex_unlock(&rc->mu);
  }
  if (c)
    redisFree(c);
}

/* ---- scripts ---- */

typedef struct script_call {
  dlock__redis_script_id id;
  int argc;
  const char *argv[9];
  size_t lens[9];
} script_call;

static void sc_init(script_call *sc, const redis_client *rc, dlock__redis_script_id id,
                    int nkeys) {
  static const char *const nk[] = {"0", "1", "2", "3"};
  sc->id = id;
  sc->argc = 3;
  sc->argv[0] = "EVALSHA";
  sc->lens[0] = 7;
  sc->argv[1] = rc->sha[id];
  sc->lens[1] = 40;
  sc->argv[2] = nk[nkeys];
  sc->lens[2] = 1;
}

static void sc_add(script_call *sc, const char *p, size_t len) {
  sc->argv[sc->argc] = p;
  sc->lens[sc->argc++] = len;
}

/* The server's script cache is empty after a restart, failover or SCRIPT
 * FLUSH; sending the text makes the call work and reloads the cache. */
static void sc_use_eval(script_call *sc) {
  const char *text = dlock__redis_script(sc->id);
  sc->argv[0] = "EVAL";
  sc->lens[0] = 4;
  sc->argv[1] = text;
  sc->lens[1] = strlen(text);
}

/* Run SC on C: EVALSHA, then EVAL after NOSCRIPT.  *SENT_NS (if given) is
 * taken just before each send, so it belongs to the request that answered. */
static int sc_run(const redis_client *rc, redisContext *c, script_call *sc, int64_t *sent_ns,
                  redisReply **out) {
  const char *what = dlock__redis_script_name(sc->id);
  redisReply *rep = NULL;
  if (sent_ns)
    *sent_ns = dlock_backend_now_ns();
  int r = command(rc, c, what, sc->argc, sc->argv, sc->lens, rc->timeout_ms, &rep);
  if (r < 0)
    return r;
  if (dlock__redis_is_noscript(rep)) {
    freeReplyObject(rep);
    sc_use_eval(sc);
    if (sent_ns)
      *sent_ns = dlock_backend_now_ns();
    r = command(rc, c, what, sc->argc, sc->argv, sc->lens, rc->timeout_ms, &rep);
    if (r < 0)
      return r;
  }
  *out = rep;
  return 0;
}

static int load_scripts(redis_client *rc, redisContext *c) {
  for (int i = 0; i < DLOCK__REDIS_NSCRIPTS; i++) {
    const char *text = dlock__redis_script((dlock__redis_script_id)i);
    const char *argv[3] = {"SCRIPT", "LOAD", text};
    size_t lens[3] = {6, 4, strlen(text)};
    if (append_argv(c, 3, argv, lens) != REDIS_OK)
      return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
  }
  /* Read every reply even after a bad one, so the connection stays in step;
   * the first failure is the one reported. */
  int first = 0;
  for (int i = 0; i < DLOCK__REDIS_NSCRIPTS; i++) {
    void *v = NULL;
    errno = 0;
    if (get_reply(c, &v) != REDIS_OK || !v)
      return io_error(rc, c, "SCRIPT LOAD", errno, rc->timeout_ms);
    int r = dlock__redis_decode_sha(v, rc->sha[i]);
    freeReplyObject(v);
    if (r < 0 && first == 0)
      first = r;
  }
  return first;
}

/* ---- keys ---- */

typedef struct keyset {
  char *lock, *fence, *chan;
  size_t lock_len, fence_len, chan_len;
} keyset;

static void keys_free(keyset *k) {
  free(k->lock);
  free(k->fence);
  free(k->chan);
}

/* Builds the keys named by WANT (bit 0 lock, 1 fence, 2 channel). */
static int keys_build(const redis_client *rc, const char *key, size_t keylen, int want,
                      keyset *k) {
  memset(k, 0, sizeof *k);
  if (want & 1)
    k->lock = dlock__redis_key(rc->prefix, DLOCK__REDIS_KEY_LOCK, key, keylen, &k->lock_len);
  if (want & 2)
    k->fence =
        dlock__redis_key(rc->prefix, DLOCK__REDIS_KEY_FENCE, key, keylen, &k->fence_len);
  if (want & 4)
    k->chan = dlock__redis_key(rc->prefix, DLOCK__REDIS_KEY_CHAN, key, keylen, &k->chan_len);
  if (((want & 1) && !k->lock) || ((want & 2) && !k->fence) || ((want & 4) && !k->chan)) {
    keys_free(k);
    return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
  }
  return 0;
}
#define K_LOCK 1
#define K_FENCE 2
#define K_CHAN 4

/* ---- operations on one connection ---- */

static int attempt(const redis_client *rc, redisContext *c, dlock_backend_lock *bl) {
  keyset k;
  int r = keys_build(rc, bl->key, bl->keylen, K_LOCK | K_FENCE, &k);
  if (r < 0)
    return r;
  char ttl[24], fence_ttl[24];
  int tl = snprintf(ttl, sizeof ttl, "%lld", (long long)bl->ttl_ms);
  /* The counter outlives the lock it fences by a ttl at least, so tokens
   * stay one counter's while a key is busy. */
  int64_t fttl = rc->fence_ttl_ms;
  if (fttl > 0 && fttl < 2 * bl->ttl_ms)
    fttl = 2 * bl->ttl_ms;
  int fl = snprintf(fence_ttl, sizeof fence_ttl, "%lld", (long long)fttl);
  script_call sc;
  sc_init(&sc, rc, DLOCK__REDIS_ACQUIRE, 2);
  sc_add(&sc, k.lock, k.lock_len);
  sc_add(&sc, k.fence, k.fence_len);
  sc_add(&sc, bl->owner, strlen(bl->owner));
  sc_add(&sc, ttl, (size_t)tl);
  sc_add(&sc, bl->label, strlen(bl->label));
  sc_add(&sc, fence_ttl, (size_t)fl);
  redisReply *rep = NULL;
  r = sc_run(rc, c, &sc, &bl->sent_ns, &rep);
  keys_free(&k);
  if (r < 0)
    return r;
  dlock__redis_acquire_result res;
  r = dlock__redis_decode_acquire(rep, &res);
  freeReplyObject(rep);
  if (r < 0)
    return r;
  if (res.acquired) {
    bl->token = res.token;
    return 0;
  }
  bl->holder_ttl_ms = res.pttl;
  if (res.pttl >= 0)
    return dlock_seterr(DLOCK_EBUSY, "redis: lock is held by another owner (%lld ms left)",
                        (long long)res.pttl);
  return dlock_seterr(DLOCK_EBUSY, "redis: lock is held by another owner");
}

/* One attempt on a pooled connection. */
static int attempt_pooled(redis_client *rc, dlock_backend_lock *bl) {
  redisContext *c;
  int r = pool_get(rc, &c);
  if (r < 0)
    return r;
  r = attempt(rc, c, bl);
  pool_put(rc, c);
  return r;
}

/* The owner token and the ':' after it in the value, as the release and
 * renew scripts compare it: 0, or DLOCK_EINVAL for a token the core would
 * never make. */
#define OWNER_ARG_MAX 64
static int owner_arg(const char *owner, char out[OWNER_ARG_MAX], size_t *len) {
  size_t n = strlen(owner);
  if (n == 0 || n + 1 >= OWNER_ARG_MAX)
    return dlock_seterr(DLOCK_EINVAL, "redis: an owner token of %zu bytes", n);
  memcpy(out, owner, n);
  out[n] = ':';
  out[n + 1] = '\0';
  *len = n + 1;
  return 0;
}

static int do_release(const redis_client *rc, redisContext *c, dlock_backend_lock *bl) {
  char owner[OWNER_ARG_MAX];
  size_t olen;
  int r = owner_arg(bl->owner, owner, &olen);
  if (r < 0)
    return r;
  keyset k;
  r = keys_build(rc, bl->key, bl->keylen, K_LOCK | K_CHAN, &k);
  if (r < 0)
    return r;
  script_call sc;
  sc_init(&sc, rc, DLOCK__REDIS_RELEASE, 2);
  sc_add(&sc, k.lock, k.lock_len);
  sc_add(&sc, k.chan, k.chan_len);
  sc_add(&sc, owner, olen);
  redisReply *rep = NULL;
  r = sc_run(rc, c, &sc, NULL, &rep);
  keys_free(&k);
  if (r < 0)
    return r;
  int ok = 0;
  r = dlock__redis_decode_flag(rep, "release", &ok);
  freeReplyObject(rep);
  if (r < 0)
    return r;
  if (!ok)
    return dlock_seterr(DLOCK_ELOST,
                        "redis: release: the lock had expired or was taken by another owner");
  return 0;
}

/* One renew script call for BLS[0..N): its arguments, and the key and
 * owner strings they point at. */
typedef struct renew_call {
  size_t n;
  const char **argv;
  size_t *lens;
  char **keys;
  char *text; /* each owner with its ':' and each ttl, NUL-separated */
  char nkeys[24];
} renew_call;

static void renew_call_free(renew_call *call) {
  for (size_t i = 0; call->keys && i < call->n; i++)
    free(call->keys[i]);
  free(call->keys);
  free(call->argv);
  free(call->lens);
  free(call->text);
  memset(call, 0, sizeof *call);
}

static int renew_call_build(const redis_client *rc, dlock_backend_lock **bls, size_t n,
                            renew_call *call) {
  memset(call, 0, sizeof *call);
  call->n = n;
  call->argv = malloc((3 + 3 * n) * sizeof *call->argv);
  call->lens = malloc((3 + 3 * n) * sizeof *call->lens);
  call->keys = calloc(n, sizeof *call->keys);
  call->text = malloc(n * (OWNER_ARG_MAX + 24));
  if (!call->argv || !call->lens || !call->keys || !call->text)
    goto oom;
  call->argv[0] = "EVALSHA";
  call->lens[0] = 7;
  call->argv[1] = rc->sha[DLOCK__REDIS_RENEW];
  call->lens[1] = 40;
  call->argv[2] = call->nkeys;
  call->lens[2] = (size_t)snprintf(call->nkeys, sizeof call->nkeys, "%zu", n);
  char *t = call->text;
  for (size_t i = 0; i < n; i++) {
    call->keys[i] = dlock__redis_key(rc->prefix, DLOCK__REDIS_KEY_LOCK, bls[i]->key,
                                     bls[i]->keylen, &call->lens[3 + i]);
    if (!call->keys[i])
      goto oom;
    call->argv[3 + i] = call->keys[i];
    size_t olen;
    int r = owner_arg(bls[i]->owner, t, &olen);
    if (r < 0) {
      renew_call_free(call);
      return r;
    }
    call->argv[3 + n + 2 * i] = t;
    call->lens[3 + n + 2 * i] = olen;
    t += olen + 1;
    int tl = snprintf(t, 24, "%lld", (long long)bls[i]->ttl_ms);
    call->argv[3 + n + 2 * i + 1] = t;
    call->lens[3 + n + 2 * i + 1] = (size_t)tl;
    t += tl + 1;
  }
  return 0;
oom:
  renew_call_free(call);
  return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
}

/* Appends CALL as EVALSHA, or as EVAL with the script's text. */
static int renew_call_append(redisContext *c, renew_call *call, int eval) {
  if (eval) {
    const char *text = dlock__redis_script(DLOCK__REDIS_RENEW);
    call->argv[0] = "EVAL";
    call->lens[0] = 4;
    call->argv[1] = text;
    call->lens[1] = strlen(text);
  }
  if (append_argv(c, (int)(3 + 3 * call->n), call->argv, call->lens) != REDIS_OK)
    return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
  return 0;
}

/* Renew BLS[0..N) in one pipeline on C, then once more with EVAL for any
 * that met NOSCRIPT.  A negative return means C is out of step and must be
 * closed (an I/O error, or commands appended and never read). */
static int renew_batch_io(const redis_client *rc, redisContext *c, dlock_backend_lock **bls,
                          size_t n, int *rcs, int64_t timeout_ms);

static int renew_batch(const redis_client *rc, redisContext *c, dlock_backend_lock **bls,
                       size_t n, int *rcs) {
  /* No point waiting for a reply past the moment the first of these locks
   * is lost anyway: the core must hear about it then, not a timeout later. */
  int64_t until = 0;
  for (size_t i = 0; i < n; i++)
    if (bls[i]->io_deadline_ns && (!until || bls[i]->io_deadline_ns < until))
      until = bls[i]->io_deadline_ns;
  int64_t limit_ms = rc->timeout_ms;
  if (until) {
    int64_t left_ms = (until - dlock_backend_now_ns()) / 1000000;
    if (left_ms <= 0)
      return dlock_seterr(DLOCK_ECONN, "redis: renew: the lock's validity ran out first");
    if (left_ms < limit_ms)
      limit_ms = left_ms;
  }
  if (limit_ms != rc->timeout_ms && set_timeout(rc, c, limit_ms) < 0)
    return DLOCK_ECONN;
  int r = renew_batch_io(rc, c, bls, n, rcs, limit_ms);
  if (r >= 0 && limit_ms != rc->timeout_ms && set_timeout(rc, c, rc->timeout_ms) < 0)
    r = DLOCK_ECONN;
  return r;
}

/* The results of CALL, covering BLS[0..CALL->n), from its reply REP. */
static void renew_results(const redisReply *rep, const renew_call *call, int64_t sent,
                          dlock_backend_lock **bls, int *rcs, unsigned char *flags) {
  int r = dlock__redis_decode_renew(rep, call->n, flags);
  for (size_t i = 0; i < call->n; i++) {
    if (r < 0) {
      rcs[i] = r;
    } else if (flags[i]) {
      rcs[i] = 0;
      bls[i]->sent_ns = sent;
    } else {
      rcs[i] = dlock_seterr(DLOCK_ELOST,
                            "redis: renew: the lock had expired or was taken by another owner");
    }
  }
}

static int renew_batch_io(const redis_client *rc, redisContext *c, dlock_backend_lock **bls,
                          size_t n, int *rcs, int64_t timeout_ms) {
  size_t ncalls = (n + RENEW_KEYS_MAX - 1) / RENEW_KEYS_MAX;
  renew_call *calls = calloc(ncalls, sizeof *calls);
  size_t *first = calloc(ncalls, sizeof *first);
  unsigned char *noscript = calloc(ncalls, 1);
  unsigned char *flags = malloc(n);
  int r = 0;
  size_t built = 0;
  if (!calls || !first || !noscript || !flags) {
    r = dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
    goto out;
  }
  /* Calls of equal size: 1001 locks go as 501 + 500, not 1000 + 1. */
  for (; built < ncalls; built++) {
    first[built] = n * built / ncalls;
    size_t end = n * (built + 1) / ncalls;
    r = renew_call_build(rc, bls + first[built], end - first[built], &calls[built]);
    if (r < 0)
      goto out;
  }
  for (int pass = 0; pass < 2; pass++) {
    size_t count = 0;
    int64_t now = dlock_backend_now_ns();
    for (size_t i = 0; i < ncalls; i++) {
      if (pass == 1 && !noscript[i])
        continue;
      r = renew_call_append(c, &calls[i], pass == 1);
      if (r < 0)
        goto out;
      count++;
    }
    if (count == 0)
      break;
    for (size_t i = 0; i < ncalls; i++) {
      if (pass == 1 && !noscript[i])
        continue;
      void *v = NULL;
      errno = 0;
      if (get_reply(c, &v) != REDIS_OK || !v) {
        r = io_error(rc, c, "renew", errno, timeout_ms);
        goto out;
      }
      redisReply *rep = v;
      noscript[i] = pass == 0 && dlock__redis_is_noscript(rep);
      if (!noscript[i])
        renew_results(rep, &calls[i], now, bls + first[i], rcs + first[i], flags);
      freeReplyObject(rep);
    }
  }
out:
  for (size_t i = 0; calls && i < built; i++)
    renew_call_free(&calls[i]);
  free(calls);
  free(first);
  free(noscript);
  free(flags);
  return r;
}

/* ---- waiting ---- */

/* Leave pub/sub mode and return SUB to the pool if it is back in step,
 * else close it. */
static void sub_finish(redis_client *rc, redisContext *sub, int broken) {
  if (broken || sub->err) {
    redisFree(sub);
    return;
  }
  const char *argv[1] = {"UNSUBSCRIBE"};
  size_t lens[1] = {11};
  if (append_argv(sub, 1, argv, lens) != REDIS_OK) {
    redisFree(sub);
    return;
  }
  /* Messages published before the server saw UNSUBSCRIBE may still be in
   * front of its reply; skip them.  A count of 0 means no subscriptions
   * are left and the connection takes ordinary commands again. */
  for (int i = 0; i < UNSUBSCRIBE_MAX_REPLIES; i++) {
    void *v = NULL;
    if (get_reply(sub, &v) != REDIS_OK || !v)
      break;
    long long count = -1;
    int kind = dlock__redis_decode_push(v, &count);
    freeReplyObject(v);
    if (kind == DLOCK__REDIS_PUSH_MESSAGE)
      continue;
    if (kind == DLOCK__REDIS_PUSH_UNSUBSCRIBE && count == 0) {
      pool_put(rc, sub);
      return;
    }
    if (kind != DLOCK__REDIS_PUSH_UNSUBSCRIBE)
      break;
  }
  redisFree(sub);
}

/* Wait up to WAIT_MS for a message on SUB.  1 = a message came, 0 = the
 * time ran out, negative = SUB failed (*BROKEN set).  hiredis 0.14 kills a
 * context whose blocking read times out, so the waiting is done with
 * poll(2) and the socket is read only once it is readable. */
static int wait_message(const redis_client *rc, redisContext *sub, int64_t wait_ms,
                        int *broken) {
  int64_t end = dlock_backend_now_ns() + wait_ms * 1000000;
  for (;;) {
    int got = 0;
    for (;;) {
      void *v = NULL;
      if (redisGetReplyFromReader(sub, &v) != REDIS_OK) {
        *broken = 1;
        return io_error(rc, sub, "wait", 0, 0);
      }
      if (!v)
        break;
      int kind = dlock__redis_decode_push(v, NULL);
      freeReplyObject(v);
      if (kind < 0) {
        *broken = 1;
        return kind;
      }
      if (kind == DLOCK__REDIS_PUSH_MESSAGE)
        got = 1;
    }
    if (got)
      return 1;
    int64_t left_ns = end - dlock_backend_now_ns();
    if (left_ns <= 0)
      return 0;
    int64_t left_ms = (left_ns + 999999) / 1000000;
    struct pollfd p = {.fd = sub->fd, .events = POLLIN, .revents = 0};
    int n = poll(&p, 1, left_ms > INT_MAX ? INT_MAX : (int)left_ms);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      *broken = 1;
      return dlock_seterr(DLOCK_ECONN, "redis: wait: poll: %s", strerror(errno));
    }
    if (n == 0)
      continue;
    errno = 0;
    if (redisBufferRead(sub) != REDIS_OK) {
      *broken = 1;
      return io_error(rc, sub, "wait", errno, 0);
    }
  }
}

static int subscribe(const redis_client *rc, redisContext *sub, const keyset *k) {
  const char *argv[2] = {"SUBSCRIBE", k->chan};
  size_t lens[2] = {9, k->chan_len};
  redisReply *rep = NULL;
  int r = command(rc, sub, "SUBSCRIBE", 2, argv, lens, rc->timeout_ms, &rep);
  if (r < 0)
    return r;
  long long count = 0;
  int kind = dlock__redis_decode_push(rep, &count);
  freeReplyObject(rep);
  if (kind < 0)
    return kind;
  if (kind != DLOCK__REDIS_PUSH_SUBSCRIBE || count != 1)
    return dlock_seterr(DLOCK_EBACKEND, "redis: SUBSCRIBE: unexpected reply");
  return 0;
}

static int timed_out(void) {
  return dlock_seterr(DLOCK_ETIMEDOUT, "redis: timed out waiting for the lock");
}

/* Subscribed before each retry, so a release between a busy answer and the
 * wait is already queued on SUB.  Expiry publishes nothing, hence the wait
 * never exceeds the holder's PTTL. */
static int wait_loop(redis_client *rc, dlock_backend_lock *bl, int64_t deadline_ns,
                     redisContext *sub, int *broken) {
  int64_t nottl_ms = NOTTL_WAIT_MIN_MS;
  for (;;) {
    int r = attempt_pooled(rc, bl);
    if (r != DLOCK_EBUSY)
      return r;
    int64_t now = dlock_backend_now_ns();
    if (deadline_ns >= 0 && now >= deadline_ns)
      return timed_out();
    int64_t wait_ms;
    if (bl->holder_ttl_ms >= 0) {
      /* The key is gone once the server's clock is past its expiry; one
       * more millisecond makes sure the retry does not land on the edge. */
      wait_ms = bl->holder_ttl_ms + 1;
      nottl_ms = NOTTL_WAIT_MIN_MS;
    } else {
      wait_ms = nottl_ms;
      nottl_ms = nottl_ms * 2 > NOTTL_WAIT_MAX_MS ? NOTTL_WAIT_MAX_MS : nottl_ms * 2;
    }
    if (deadline_ns >= 0) {
      int64_t left_ms = (deadline_ns - now + 999999) / 1000000;
      if (left_ms < wait_ms)
        wait_ms = left_ms;
    }
    r = wait_message(rc, sub, wait_ms, broken);
    if (r < 0)
      return r;
  }
}

/* ---- ops ---- */

static void client_free(redis_client *rc) {
  for (size_t i = 0; i < rc->nidle; i++)
    redisFree(rc->idle[i]);
  rc->nidle = 0;
  free(rc->host);
  free(rc->where);
  free(rc->user);
  if (rc->password) {
    /* Do not leave the secret in freed heap memory. */
    volatile char *p = rc->password;
    while (*p)
      *p++ = '\0';
    free(rc->password);
  }
  free(rc->prefix);
  if (rc->mu_ready)
    pthread_mutex_destroy(&rc->mu);
  memset(rc, 0, sizeof *rc);
}

static int parse_db(const char *path, long long *db) {
  /* "", "/" -> 0; "/N" -> N */
  if (path[0] == '/')
    path++;
  if (path[0] == '\0') {
    *db = 0;
    return 0;
  }
  uint64_t v;
  if (dlock__redis_parse_u64(path, strlen(path), &v) < 0 || v > INT_MAX)
    return dlock_seterr(DLOCK_EINVAL,
                        "redis: the URL path must be a database number (like /0), not \"%s\"",
                        path);
  *db = (long long)v;
  return 0;
}

static int parse_target(redis_client *rc, dlock_url *url) {
  const char *scheme = dlock_url_scheme(url);
  rc->unix_socket = scheme && strcmp(scheme, "redis+unix") == 0;
  size_t nhosts = dlock_url_host_count(url);
  const char *path = dlock_url_path(url);
  if (!path)
    path = "";

  if (rc->unix_socket) {
    if (nhosts > 1 || (nhosts == 1 && dlock_url_host(url, 0)[0] != '\0' &&
                       strcmp(dlock_url_host(url, 0), "localhost") != 0))
      return dlock_seterr(DLOCK_EINVAL,
                          "redis: redis+unix:// takes a socket path, not a host "
                          "(redis+unix:///path/to/redis.sock)");
    if (path[0] != '/')
      return dlock_seterr(DLOCK_EINVAL,
                          "redis: redis+unix:// needs an absolute socket path "
                          "(redis+unix:///path/to/redis.sock)");
    long long db = 0;
    int r = dlock_url_param_int(url, "db", 0, 0, INT_MAX, &db);
    if (r < 0)
      return r;
    rc->db = db;
    rc->host = strdup(path);
    rc->where = strdup(path);
    rc->port = 0;
  } else {
    if (nhosts != 1)
      return dlock_seterr(DLOCK_EINVAL, "redis: expected exactly one host, got %zu", nhosts);
    const char *h = dlock_url_host(url, 0);
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
      /* IPv6 literal: hiredis wants it without brackets. */
      h++;
      hl -= 2;
    }
    if (hl == 0)
      return dlock_seterr(DLOCK_EINVAL, "redis: the URL has no host");
    int port = dlock_url_port(url, 0);
    if (port == 0)
      port = 6379;
    if (port < 1 || port > 65535)
      return dlock_seterr(DLOCK_EINVAL, "redis: port %d out of range", port);
    int r = parse_db(path, &rc->db);
    if (r < 0)
      return r;
    rc->port = port;
    rc->host = strndup(h, hl);
    if (rc->host) {
      size_t wl = hl + 16;
      rc->where = malloc(wl);
      if (rc->where)
        snprintf(rc->where, wl, "%s%s%s:%d", strchr(rc->host, ':') ? "[" : "", rc->host,
                 strchr(rc->host, ':') ? "]" : "", port);
    }
  }
  if (!rc->host || !rc->where)
    return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");

  const char *user = dlock_url_user(url);
  const char *pass = dlock_url_password(url);
  if (user && user[0]) {
    rc->user = strdup(user);
    if (!rc->user)
      return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
  }
  /* "user@" alone authenticates with an empty password, which an ACL user
   * marked nopass accepts. */
  if (pass || rc->user) {
    rc->password = strdup(pass ? pass : "");
    if (!rc->password)
      return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
  }
  return 0;
}

static int redis_open(dlock_backend_client *bc, dlock_url *url) {
  redis_client *rc = bc->priv;
  int r = 0;
  if (pthread_mutex_init(&rc->mu, NULL) != 0) {
    r = dlock_seterr(DLOCK_ENOMEM, "redis: cannot create a mutex");
    goto fail;
  }
  rc->mu_ready = 1;
  rc->connect_timeout_ms = bc->connect_timeout_ms;
  rc->timeout_ms = bc->timeout_ms;
  r = parse_target(rc, url);
  if (r < 0)
    goto fail;
  r = dlock_url_param_duration(url, "fence_ttl", DLOCK__REDIS_FENCE_TTL_MS, &rc->fence_ttl_ms);
  if (r < 0)
    goto fail;
  rc->prefix = strdup(bc->prefix ? bc->prefix : DLOCK__REDIS_DEFAULT_PREFIX);
  if (!rc->prefix) {
    r = dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
    goto fail;
  }
  /* Connect now so a wrong address or password fails here, not at the
   * first lock; the connection then seeds the pool. */
  redisContext *c;
  r = conn_open(rc, &c);
  if (r < 0)
    goto fail;
  r = load_scripts(rc, c);
  if (r < 0) {
    redisFree(c);
    goto fail;
  }
  pool_put(rc, c);
  return 0;
fail:
  client_free(rc);
  return r;
}

static void redis_close(dlock_backend_client *bc) {
  redis_client *rc = bc->priv;
  if (rc)
    client_free(rc);
}

static int redis_try_acquire(dlock_backend_client *bc, dlock_backend_lock *bl) {
  redis_client *rc = bc->priv;
  bl->holder_ttl_ms = -1;
  int r = attempt_pooled(rc, bl);
  return r;
}

static int redis_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline_ns) {
  redis_client *rc = bc->priv;
  bl->holder_ttl_ms = -1;
  /* Uncontended locks need no subscriber: try first. */
  int r = attempt_pooled(rc, bl);
  if (r != DLOCK_EBUSY)
    goto out;
  if (deadline_ns >= 0 && dlock_backend_now_ns() >= deadline_ns) {
    r = timed_out();
    goto out;
  }
  keyset k;
  r = keys_build(rc, bl->key, bl->keylen, K_CHAN, &k);
  if (r < 0)
    goto out;
  redisContext *sub;
  r = pool_get(rc, &sub);
  if (r == 0) {
    int broken = 0;
    r = subscribe(rc, sub, &k);
    if (r < 0)
      broken = 1;
    else
      r = wait_loop(rc, bl, deadline_ns, sub, &broken);
    /* A store that stopped answering the attempt would leave UNSUBSCRIBE
     * unanswered too, and waiting a timeout for that reply would push the
     * caller's return a whole request past its deadline: close instead. */
    if (r == DLOCK_ECONN)
      broken = 1;
    sub_finish(rc, sub, broken);
  }
  keys_free(&k);
out:
  return r;
}

static int redis_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  redis_client *rc = bc->priv;
  redisContext *c;
  int r = pool_get(rc, &c);
  if (r == 0) {
    r = do_release(rc, c, bl);
    pool_put(rc, c);
  }
  return r;
}

static int redis_renew(dlock_backend_client *bc, dlock_backend_lock *bl) {
  int rcode = 0;
  dlock_backend_lock *one[1] = {bl};
  redis_client *rc = bc->priv;
  redisContext *c;
  int r = pool_get(rc, &c);
  if (r == 0) {
    r = renew_batch(rc, c, one, 1, &rcode);
    if (r < 0) {
      redisFree(c);
    } else {
      pool_put(rc, c);
      r = rcode;
    }
  }
  return r;
}

static int redis_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                            int *rcs) {
  redis_client *rc = bc->priv;
  if (n == 0)
    return 0;
  redisContext *c;
  int r = pool_get(rc, &c);
  if (r == 0) {
    r = renew_batch(rc, c, bls, n, rcs);
    if (r < 0)
      redisFree(c);
    else
      pool_put(rc, c);
  }
  return r;
}

static int redis_inspect(dlock_backend_client *bc, const char *key, size_t keylen,
                         dlock_info *info) {
  redis_client *rc = bc->priv;
  keyset k;
  int r = keys_build(rc, key, keylen, K_LOCK | K_FENCE, &k);
  if (r < 0)
    goto out;
  redisContext *c;
  r = pool_get(rc, &c);
  if (r == 0) {
    script_call sc;
    sc_init(&sc, rc, DLOCK__REDIS_INSPECT, 2);
    sc_add(&sc, k.lock, k.lock_len);
    sc_add(&sc, k.fence, k.fence_len);
    redisReply *rep = NULL;
    r = sc_run(rc, c, &sc, NULL, &rep);
    if (r == 0) {
      r = dlock__redis_decode_inspect(rep, info);
      freeReplyObject(rep);
    }
    pool_put(rc, c);
  }
  keys_free(&k);
out:
  return r;
}

/* Keys per SCAN page; each page's values come in one script call. */
#define LIST_PAGE 500

/* The LIST script over the N lock keys of a SCAN page (KEYS), EVALSHA and
 * then EVAL after NOSCRIPT; too many arguments for a script_call. */
static int list_values(const redis_client *rc, redisContext *c, const redisReply *keys,
                       redisReply **out) {
  size_t n = keys->elements, argc = n + 3;
  const char **argv = malloc(argc * sizeof *argv);
  size_t *lens = malloc(argc * sizeof *lens);
  char nk[24];
  int r = 0;
  if (!argv || !lens) {
    r = dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
    goto out;
  }
  snprintf(nk, sizeof nk, "%zu", n);
  argv[0] = "EVALSHA";
  lens[0] = 7;
  argv[1] = rc->sha[DLOCK__REDIS_LIST];
  lens[1] = 40;
  argv[2] = nk;
  lens[2] = strlen(nk);
  for (size_t i = 0; i < n; i++) {
    argv[3 + i] = keys->element[i]->str;
    lens[3 + i] = keys->element[i]->len;
  }
  r = command(rc, c, "list", (int)argc, argv, lens, rc->timeout_ms, out);
  if (r == 0 && dlock__redis_is_noscript(*out)) {
    freeReplyObject(*out);
    *out = NULL;
    argv[0] = "EVAL";
    lens[0] = 4;
    argv[1] = dlock__redis_script(DLOCK__REDIS_LIST);
    lens[1] = strlen(argv[1]);
    r = command(rc, c, "list", (int)argc, argv, lens, rc->timeout_ms, out);
  }
out:
  free(argv);
  free(lens);
  return r;
}

/* One SCAN page: the holders among its keys go to EMIT.  *CURSOR is the
 * next page's ("0" after the last). */
static int list_page(const redis_client *rc, redisContext *c, const char *pattern,
                     size_t patlen, char cursor[32], const char *prefix, size_t prefixlen,
                     dlock_backend_emit_fn emit, void *ud) {
  char count[16];
  snprintf(count, sizeof count, "%d", LIST_PAGE);
  const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", count};
  size_t lens[6] = {4, strlen(cursor), 5, patlen, 5, strlen(count)};
  redisReply *rep = NULL, *vals = NULL;
  int r = command(rc, c, "SCAN", 6, argv, lens, rc->timeout_ms, &rep);
  if (r < 0)
    return r;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 || !rep->element[0] ||
      rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len >= 32 ||
      !rep->element[1] || rep->element[1]->type != REDIS_REPLY_ARRAY) {
    r = rep->type == REDIS_REPLY_ERROR ? dlock__redis_reply_error(rep, "SCAN")
                                       : dlock_seterr(DLOCK_EBACKEND, "redis: SCAN: unexpected reply");
    goto out;
  }
  memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
  cursor[rep->element[0]->len] = '\0';
  const redisReply *keys = rep->element[1];
  for (size_t i = 0; i < keys->elements; i++)
    if (!keys->element[i] || keys->element[i]->type != REDIS_REPLY_STRING) {
      r = dlock_seterr(DLOCK_EBACKEND, "redis: SCAN: a key that is not a string");
      goto out;
    }
  if (keys->elements == 0)
    goto out;
  if ((r = list_values(rc, c, keys, &vals)) < 0)
    goto out;
  for (size_t i = 0; i < keys->elements && r == 0; i++) {
    const char *key;
    size_t keylen;
    dlock_info info;
    if (dlock__redis_lock_key_of(rc->prefix, keys->element[i]->str, keys->element[i]->len, &key,
                                 &keylen) < 0 ||
        keylen < prefixlen || memcmp(key, prefix, prefixlen) != 0)
      continue;
    if ((r = dlock__redis_decode_list(vals, i, &info)) < 0)
      break;
    if (info.held)
      r = emit(ud, key, keylen, &info);
  }
out:
  freeReplyObject(rep);
  if (vals)
    freeReplyObject(vals);
  return r;
}

/* SCAN may report a key twice (the table grew during the walk); that is
 * within what dlock_list promises of a store that changes meanwhile. */
static int redis_list(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
                      dlock_backend_emit_fn emit, void *ud) {
  redis_client *rc = bc->priv;
  size_t patlen;
  char *pattern = dlock__redis_scan_pattern(rc->prefix, prefix, prefixlen, &patlen);
  if (!pattern)
    return dlock_seterr(DLOCK_ENOMEM, "redis: out of memory");
  redisContext *c;
  int r = pool_get(rc, &c);
  if (r == 0) {
    char cursor[32] = "0";
    do
      r = list_page(rc, c, pattern, patlen, cursor, prefix, prefixlen, emit, ud);
    while (r == 0 && strcmp(cursor, "0") != 0);
    /* A walk the callback ended leaves the connection in step; one that
     * failed on the wire has c->err set and is not kept. */
    pool_put(rc, c);
  }
  free(pattern);
  return r;
}

static int redis_force_release(dlock_backend_client *bc, const char *key, size_t keylen,
                               const dlock_info *holder, dlock_info *broken) {
  redis_client *rc = bc->priv;
  keyset k;
  int r = keys_build(rc, key, keylen, K_LOCK | K_CHAN, &k);
  if (r < 0)
    return r;
  char token[24];
  int tl = snprintf(token, sizeof token, "%llu", (unsigned long long)holder->token);
  redisContext *c;
  r = pool_get(rc, &c);
  if (r == 0) {
    script_call sc;
    sc_init(&sc, rc, DLOCK__REDIS_BREAK, 2);
    sc_add(&sc, k.lock, k.lock_len);
    sc_add(&sc, k.chan, k.chan_len);
    sc_add(&sc, holder->owner, strlen(holder->owner));
    sc_add(&sc, token, (size_t)tl);
    redisReply *rep = NULL;
    r = sc_run(rc, c, &sc, NULL, &rep);
    if (r == 0) {
      int status = 0;
      dlock_info info;
      r = dlock__redis_decode_break(rep, &status, &info);
      freeReplyObject(rep);
      if (r == 0 && status == 2)
        r = dlock_seterr(DLOCK_EBUSY, "redis: '%s' is held by another holder (token %llu)", key,
                         (unsigned long long)info.token);
      else if (r == 0)
        *broken = info;
    }
    pool_put(rc, c);
  }
  keys_free(&k);
  return r;
}

static const char *const redis_schemes[] = {"redis", "redis+unix", NULL};

const dlock_backend_ops dlock__redis_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "redis",
    .schemes = redis_schemes,
    .caps = DLOCK_CAP_FENCING | DLOCK_CAP_NATIVE_WAIT | DLOCK_CAP_SERVER_TTL | DLOCK_CAP_HOLDER_INFO |
            DLOCK_CAP_CROSS_HOST | DLOCK_CAP_CROSS_PROCESS | DLOCK_CAP_LIST | DLOCK_CAP_BREAK,
    .client_size = sizeof(redis_client),
    .lock_size = 0,
    .open = redis_open,
    .close = redis_close,
    .try_acquire = redis_try_acquire,
    .acquire = redis_acquire,
    .renew = redis_renew,
    .release = redis_release,
    .renew_many = redis_renew_many,
    .inspect = redis_inspect,
    .control = NULL,
    .list = redis_list,
    .force_release = redis_force_release,
};
