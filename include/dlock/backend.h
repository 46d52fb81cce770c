/* The backend interface: what a lock store plugs into.
 *
 * A backend is one const struct dlock_backend_ops.  The core owns every
 * policy (reentrancy, validity deadlines, the renew scheduler, retries,
 * metrics, loss reporting); a backend only talks to its store.  The core
 * allocates the backend's private state from the declared sizes and calls
 * the operations only through its dispatch layer, which checks the version
 * and turns a NULL optional operation into DLOCK_ENOTSUP.
 *
 * The struct is append-only: operations added later go at the end, and the
 * core calls one only when ops->version says it is there.
 */
#ifndef DLOCK_BACKEND_H
#define DLOCK_BACKEND_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dlock/dlock.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1: through control.  2: list and force_release. */
#define DLOCK_BACKEND_VERSION 2

/* A parsed URL.  Read it through the accessors below. */
typedef struct dlock_url dlock_url;

DLOCK_EXTERN const char *dlock_url_scheme(const dlock_url *u);
/* Userinfo, percent-decoded; NULL when absent. */
DLOCK_EXTERN const char *dlock_url_user(const dlock_url *u);
DLOCK_EXTERN const char *dlock_url_password(const dlock_url *u);
/* Hosts in "h1:p1,h2:p2" order; the port is 0 when the URL has none. */
DLOCK_EXTERN size_t dlock_url_host_count(const dlock_url *u);
DLOCK_EXTERN const char *dlock_url_host(const dlock_url *u, size_t i);
DLOCK_EXTERN int dlock_url_port(const dlock_url *u, size_t i);
/* The path, percent-decoded, "" when absent ("/0" for redis://h/0). */
DLOCK_EXTERN const char *dlock_url_path(const dlock_url *u);
/* The URL with secrets replaced by "***", for messages. */
DLOCK_EXTERN const char *dlock_url_redacted(const dlock_url *u);
/* The URL exactly as given, secrets included: for handing to a store's own
 * parser, never for messages or logs. */
DLOCK_EXTERN const char *dlock_url_string(const dlock_url *u);

/* Query parameters.  Reading a parameter marks it as known; after the
 * backend's open() returns, the core rejects the URL if any parameter was
 * never read ("unknown parameter"), so typos do not pass silently.
 * Returns 1 and sets *value (percent-decoded) if present, 0 if absent. */
DLOCK_EXTERN int dlock_url_param(dlock_url *u, const char *name, const char **value);
/* A duration ("250ms", "15s", "2m", bare number = ms) into *ms, or DEF when
 * absent.  DLOCK_EINVAL with a message when malformed or negative. */
DLOCK_EXTERN int dlock_url_param_duration(dlock_url *u, const char *name, int64_t def,
                                          int64_t *ms);
/* An integer in [min, max], or DEF when absent. */
DLOCK_EXTERN int dlock_url_param_int(dlock_url *u, const char *name, long long def,
                                     long long min, long long max, long long *out);
/* A boolean (1/0, true/false, yes/no, on/off), or DEF when absent. */
DLOCK_EXTERN int dlock_url_param_bool(dlock_url *u, const char *name, int def, int *out);
/* Every parameter in URL order, for backends that pass the ones they do not
 * know on to a store library (which then rejects typos itself).  Returns 1
 * and marks parameter I as read, with *claimed saying whether the core or
 * the backend had already read it; 0 when I is past the end. */
DLOCK_EXTERN size_t dlock_url_param_count(const dlock_url *u);
DLOCK_EXTERN int dlock_url_param_at(dlock_url *u, size_t i, const char **name,
                                    const char **value, int *claimed);

/* What the core hands a backend for each client. */
typedef struct dlock_backend_client {
  void *priv;                 /* ops->client_size bytes, zeroed */
  int64_t connect_timeout_ms; /* URL ?connect_timeout=, default 2000 */
  int64_t timeout_ms;         /* URL ?timeout= (one request), default 5000 */
  int64_t default_ttl_ms;     /* URL ?ttl=, default 15000 */
  const char *prefix;         /* URL ?prefix= if given, else NULL (backend default) */
  /* ops->caps to begin with; open() may change it when what the store
   * guarantees depends on the URL (a mode, a pooler in the way). */
  uint32_t caps;
  /* Set by open() when a lock outlives its ttl at the store for as long as
   * the session it rides on lives, and the client's other locks keep that
   * session alive (etcd leases, Consul and ZooKeeper sessions, PostgreSQL's
   * session advisory locks).  The core then gives back, with release() on
   * a thread of its own, every lock whose validity ran out unrenewed and
   * every release or attempt the store left unanswered, and tries again
   * until the store answers.  So release() must keep what it needs when it fails with
   * DLOCK_ECONN or DLOCK_ETIMEDOUT: it is called again for the same lock. */
  bool give_back_expired;
  /* Set by open() when the store may carry out a request for up to this
   * many ms after its client stopped waiting for the answer (a Consul
   * agent without a leader holds requests, then applies them).  An attempt
   * the core gave back may then be granted after its give-back, so the
   * core calls release() for it again, at the pace of its retries and
   * until one answer comes after late_ms has passed since the attempt
   * failed.  It looks only while this client has no other use of the key
   * (a look finds the attempt's own grant, by owner, or nothing), and
   * those looks keep the key from this client's acquires only while one
   * is on its way.  Such a backend leaves bl->sent_ns set after a failed
   * attempt only when the attempt's last request got no answer, also when
   * it returns DLOCK_ETIMEDOUT at the end of a wait: the core gives that
   * attempt back as well.  0: the store answers or drops every request
   * within the request timeout. */
  int64_t late_ms;
} dlock_backend_client;

/* What the core hands a backend for each acquisition. */
typedef struct dlock_backend_lock {
  void *priv;          /* ops->lock_size bytes, zeroed before try/acquire */
  const char *key;     /* 1..DLOCK_KEY_MAX bytes, NUL-terminated */
  size_t keylen;
  const char *owner;   /* fresh 128-bit random owner token, 32 hex digits */
  const char *label;   /* owner label for inspect, never NULL */
  int64_t ttl_ms;      /* requested lease; renew uses the current value.  A
                          backend may lower it, on acquire or renew, to the
                          lease the store granted (a ZooKeeper session
                          timeout clamped by the server); the core counts
                          the deadline and the renewal period from that. */
  /* Set by the backend: */
  uint64_t token;      /* fencing token on success */
  int64_t sent_ns;     /* dlock_backend_now_ns() taken just before sending the
                          request that succeeded (acquire or renew); the
                          validity deadline counts from here.  The core
                          zeroes it before each attempt; an attempt that
                          fails with ECONN or ETIMEDOUT and left it set
                          (its request may have reached the store) is given
                          back by owner with release().  A backend that
                          cleans up unanswered attempts itself leaves it 0
                          on failure. */
  int64_t holder_ttl_ms; /* on DLOCK_EBUSY: the holder's remaining lease if
                            known (caps the core's fallback backoff), else -1 */
  /* Set by the core before renew/renew_many: past this dlock_backend_now_ns()
   * time the lock is lost whatever the store answers, so the request should
   * give up by then rather than wait out the full request timeout.  0 = no
   * bound but the backend's own timeout. */
  int64_t io_deadline_ns;
} dlock_backend_lock;

/* How list() hands over one held lock: KEY is KEYLEN bytes as callers name
 * it (without the client's ?prefix=), INFO what inspect() would say of it.
 * A non-zero return ends the walk, and list() returns that value. */
typedef int (*dlock_backend_emit_fn)(void *ud, const char *key, size_t keylen,
                                     const dlock_info *info);

typedef struct dlock_backend_ops {
  uint32_t version;             /* DLOCK_BACKEND_VERSION */
  const char *name;             /* "redis" */
  const char *const *schemes;   /* NULL-terminated: {"redis", NULL} */
  uint32_t caps;                /* DLOCK_CAP_* */
  size_t client_size;           /* bytes of private state per client */
  size_t lock_size;             /* bytes of private state per lock */

  /* Connect / validate.  Reads its URL parameters.  On failure returns a
   * negative code (message set with dlock_seterr); close() is not called. */
  int (*open)(dlock_backend_client *bc, dlock_url *url);
  /* Free everything; locks still held were already released by the core. */
  void (*close)(dlock_backend_client *bc);

  /* One attempt.  0 and bl->token set, or DLOCK_EBUSY (bl->holder_ttl_ms
   * set if known), or another negative code. */
  int (*try_acquire)(dlock_backend_client *bc, dlock_backend_lock *bl);
  /* Optional: acquire, waiting on the store's own notification until
   * deadline_ns (dlock_backend_now_ns() clock; -1 = forever).  Returns
   * DLOCK_ETIMEDOUT when the deadline passes.  When NULL the core loops over
   * try_acquire with backoff and jitter. */
  int (*acquire)(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline_ns);
  /* Extend to bl->ttl_ms if the store still names bl->owner: 0, or
   * DLOCK_ELOST if it does not, or a transient code.  May be NULL when
   * renew_many is there: the core then renews one lock as a batch of one. */
  int (*renew)(dlock_backend_client *bc, dlock_backend_lock *bl);
  /* Release if the store still names bl->owner: 0, or DLOCK_ELOST. */
  int (*release)(dlock_backend_client *bc, dlock_backend_lock *bl);

  /* Optional: renew N locks in as few round trips as possible; rcs[i] gets
   * what renew() would have returned for bls[i].  Returns 0 when every
   * result was filled in, or a negative code that applies to all. */
  int (*renew_many)(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                    int *rcs);
  /* Optional: what the store says about KEY. */
  int (*inspect)(dlock_backend_client *bc, const char *key, size_t keylen,
                 dlock_info *info);
  /* Optional escape hatch for backend-specific operations; BL may be NULL. */
  int (*control)(dlock_backend_client *bc, dlock_backend_lock *bl, int op, void *arg);

  /* Version 2. */

  /* Optional: every lock held now whose key begins with the PREFIXLEN bytes
   * of PREFIX, each handed to EMIT once, in any order.  Returns 0 when the
   * walk is complete, EMIT's non-zero value when it stopped it, or a
   * negative code.  A store that names locks in a form that cannot be
   * turned back into keys (hashes) returns DLOCK_ENOTSUP saying so. */
  int (*list)(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
              dlock_backend_emit_fn emit, void *ud);
  /* Optional: an operator's forced release of KEY.  Only while the store
   * names HOLDER's holder: its owner when HOLDER->owner is not "", else its
   * token when HOLDER->token is not 0, else whoever holds KEY (a store that
   * names holders by neither may check HOLDER->label, what its inspect
   * said: PostgreSQL advisory mode, the server process); the check
   * and the release are one step at the store.  0 with *BROKEN what the
   * store said of the holder it released (BROKEN->held 0: nobody held KEY,
   * nothing done); DLOCK_EBUSY when KEY is held by another than HOLDER's
   * holder; or another negative code.  The holder's renewal (or its watch)
   * must then fail with DLOCK_ELOST, and waiters are woken as by a
   * release. */
  int (*force_release)(dlock_backend_client *bc, const char *key, size_t keylen,
                       const dlock_info *holder, dlock_info *broken);
} dlock_backend_ops;

/* Make a backend available by its schemes (out-of-tree backends; built-ins
 * are always there).  DLOCK_EINVAL if a scheme is taken or the struct is
 * malformed. */
DLOCK_EXTERN int dlock_backend_register(const dlock_backend_ops *ops);

/* Helpers for backends. */

/* Store a printf-style message for the calling thread and return CODE. */
DLOCK_EXTERN int dlock_seterr(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* CLOCK_BOOTTIME in nanoseconds: monotonic, and counting through a suspend
 * of the machine as the store's lease does.  Compare it only with itself. */
DLOCK_EXTERN int64_t dlock_backend_now_ns(void);
/* The deadline of one request: DEADLINE_NS (dlock_backend_now_ns() clock;
 * -1 = none) or one request timeout of BC from now, whichever comes
 * first. */
DLOCK_EXTERN int64_t dlock_backend_deadline(const dlock_backend_client *bc, int64_t deadline_ns);
/* A condition variable for dlock_backend_cond_wait: its waits end on time
 * whatever happens to the wall clock.  0, or DLOCK_ENOMEM. */
DLOCK_EXTERN int dlock_backend_cond_init(pthread_cond_t *cv);
/* Wait on CV, with MU held, until woken or until DEADLINE_NS (the
 * dlock_backend_now_ns() clock; -1 = no limit).  0 when woken (perhaps
 * spuriously: check the condition again), DLOCK_ETIMEDOUT once the
 * deadline has passed, without waiting; DLOCK_EINVAL without CV or MU. */
DLOCK_EXTERN int dlock_backend_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu,
                                         int64_t deadline_ns);

/* For stores that tell the holder about loss (a session expired, a watched
 * lock node vanished): the core turns the lock(s) LOST at once and has
 * on_lost delivered on the renew thread.  Callable from any thread,
 * including the store library's event thread (it only takes a mutex that
 * the core never holds across backend calls).  BL must belong to a lock
 * whose acquire has begun and whose release has not yet returned.  While
 * the acquire is still running, the report makes it fail with DLOCK_ELOST;
 * a lock already LOST or released is left alone. */
DLOCK_EXTERN void dlock_backend_lock_lost(dlock_backend_client *bc, dlock_backend_lock *bl);
/* Every lock the client holds is lost (e.g. the session that carried them
 * all expired). */
DLOCK_EXTERN void dlock_backend_all_lost(dlock_backend_client *bc);

/* A message for the application's log (dlock/log.h): reconnects,
 * failovers, sessions re-established.  The core puts the client's redacted
 * URL in front and scrubs the URL's secrets from the text, so a store's own
 * message may be quoted.  A no-op while no log function is set. */
DLOCK_EXTERN void dlock_backend_log(dlock_backend_client *bc, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
