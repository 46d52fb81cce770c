/* dlock: one distributed-lock API over many lock stores.
 *
 *   dlock_client *c;
 *   if (dlock_open("redis://127.0.0.1:16390/0?ttl=15s", &c) < 0)
 *     fprintf(stderr, "%s\n", dlock_client_errmsg(NULL));
 *   dlock_options o = DLOCK_OPTIONS_INIT;
 *   o.wait_ms = 5000;
 *   dlock_lock *l;
 *   if (dlock_acquire(c, "jobs/42", &o, &l) == 0) {
 *     use(dlock_lock_token(l));     fencing token, pass it to the resource
 *     dlock_release(l);
 *   }
 *   dlock_close(c);
 *
 * Thread safety: a client may be used from any number of threads at once.
 * A lock handle may be released from any thread; reentrancy is per
 * (client, thread).
 *
 * Error messages: every failing call stores a message for the calling thread;
 * dlock_client_errmsg() returns it.  Messages never contain passwords or
 * tokens taken from URLs.
 */
#ifndef DLOCK_DLOCK_H
#define DLOCK_DLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "dlock/errors.h"
#include "dlock/export.h"
#include "dlock/log.h"
#include "dlock/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dlock_client dlock_client;
typedef struct dlock_lock dlock_lock;

/* Longest key accepted, in bytes.  Keys are 1..DLOCK_KEY_MAX bytes of UTF-8. */
#define DLOCK_KEY_MAX 512
/* Longest lease accepted (30 days), in ms. */
#define DLOCK_TTL_MAX_MS (30LL * 24 * 3600 * 1000)
/* Longest finite wait accepted (about 100 years), in ms; -1 waits forever. */
#define DLOCK_WAIT_MAX_MS (100LL * 366 * 24 * 3600 * 1000)

/* Called once, on the client's renew thread, when a held lock is lost (the
 * store no longer has it, a renewal was refused, or its validity deadline
 * passed).  It must not block and must not call into the same client; the
 * handle stays valid until the caller releases it. */
typedef void (*dlock_lost_fn)(const char *key, uint64_t token, void *arg);

typedef struct dlock_options {
  int64_t ttl_ms;     /* lease length; 0 = the client's default (URL ?ttl=) */
  int64_t wait_ms;    /* dlock_acquire only: 0 = try once, -1 = forever */
  int auto_renew;     /* renew at ttl/3 on the client's renew thread */
  dlock_lost_fn on_lost;
  void *on_lost_arg;
  const char *owner_label; /* free text shown by dlock_inspect; NULL = host:pid */
} dlock_options;

#define DLOCK_OPTIONS_INIT {0, -1, 1, NULL, NULL, NULL}

/* Lock states, as returned by dlock_lock_state(). */
enum dlock_state {
  DLOCK_HELD = 1,
  DLOCK_LOST = 2,
  DLOCK_RELEASED = 3
};

/* Capability bits, see dlock_client_caps(). */
enum dlock_cap {
  DLOCK_CAP_FENCING = 1u << 0,      /* tokens strictly increase per key */
  DLOCK_CAP_NATIVE_WAIT = 1u << 1,  /* waiters are woken by the store */
  DLOCK_CAP_FAIR = 1u << 2,         /* waiters are granted in arrival order */
  DLOCK_CAP_LOSS_DETECT = 1u << 3,  /* the store can tell us a lock is gone */
  DLOCK_CAP_SERVER_TTL = 1u << 4,   /* the store expires locks by itself */
  DLOCK_CAP_CROSS_HOST = 1u << 5,   /* locks exclude across machines */
  DLOCK_CAP_CROSS_PROCESS = 1u << 6, /* locks exclude across processes */
  DLOCK_CAP_HOLDER_INFO = 1u << 7,   /* inspect names the holder: token, owner, label */
  DLOCK_CAP_LIST = 1u << 8,          /* dlock_list names every held lock (dlock/admin.h) */
  DLOCK_CAP_BREAK = 1u << 9          /* dlock_break can release another's lock */
};

typedef struct dlock_info {
  int held;            /* 1 if someone holds the key now */
  uint64_t token;      /* fencing token of the current (or last) holder; 0 = unknown */
  int64_t ttl_ms;      /* remaining lease, -1 = unknown or no expiry */
  char owner[64];      /* holder's owner token (hex), "" if unknown */
  char label[128];     /* holder's owner label, "" if unknown */
} dlock_info;

/* Open a client for the store named by URL.  Unknown schemes, malformed URLs
 * and unknown query parameters give DLOCK_EINVAL; an unreachable store gives
 * DLOCK_ECONN within the connect timeout.  *out is untouched on failure. */
DLOCK_EXTERN int dlock_open(const char *url, dlock_client **out);

/* Release everything the client still holds and free it.  NULL is fine.
 * Handles of this client must not be used afterwards. */
DLOCK_EXTERN void dlock_close(dlock_client *c);

/* Acquire KEY, waiting up to opts->wait_ms.  On success *out is the handle
 * (the same handle, with its hold count raised, if this thread already holds
 * KEY through C).  DLOCK_ETIMEDOUT when the wait runs out. */
DLOCK_EXTERN int dlock_acquire(dlock_client *c, const char *key,
                               const dlock_options *opts, dlock_lock **out);

/* Like dlock_acquire with wait_ms = 0: DLOCK_EBUSY if someone else holds it. */
DLOCK_EXTERN int dlock_try_acquire(dlock_client *c, const char *key,
                                   const dlock_options *opts, dlock_lock **out);

/* Extend the lease to ttl_ms from now (0 = the lock's current ttl).
 * DLOCK_ELOST if the store no longer names us as the holder. */
DLOCK_EXTERN int dlock_renew(dlock_lock *l, int64_t ttl_ms);

/* Drop one hold; the last one releases at the store and frees L.
 * 0 on success; DLOCK_ELOST if the lock had been lost (L is freed anyway). */
DLOCK_EXTERN int dlock_release(dlock_lock *l);

/* DLOCK_HELD, DLOCK_LOST or DLOCK_RELEASED; a negative code for a bad handle.
 * Says LOST as soon as the validity deadline has passed, reply or not. */
DLOCK_EXTERN int dlock_lock_state(const dlock_lock *l);

DLOCK_EXTERN uint64_t dlock_lock_token(const dlock_lock *l);
DLOCK_EXTERN const char *dlock_lock_key(const dlock_lock *l);
/* The owner token of this acquisition (32 hex digits). */
DLOCK_EXTERN const char *dlock_lock_owner(const dlock_lock *l);
/* Milliseconds of local validity left; -1 if the store has no expiry. */
DLOCK_EXTERN int64_t dlock_lock_remaining_ms(const dlock_lock *l);
/* Current hold count (reentrant acquisitions by the holding thread). */
DLOCK_EXTERN int dlock_lock_holds(const dlock_lock *l);

/* What the store says about KEY, whoever holds it. */
DLOCK_EXTERN int dlock_inspect(dlock_client *c, const char *key, dlock_info *info);

/* Backend-specific operations (see the backend's documentation).  L may be
 * NULL for client-level operations. */
DLOCK_EXTERN int dlock_control(dlock_client *c, dlock_lock *l, int op, void *arg);

/* DLOCK_CAP_* bits of the client's backend. */
DLOCK_EXTERN unsigned dlock_client_caps(const dlock_client *c);
/* Name of the backend ("redis", "file", ...). */
DLOCK_EXTERN const char *dlock_client_backend(const dlock_client *c);
/* The client's URL with any password or token replaced by "***". */
DLOCK_EXTERN const char *dlock_client_url(const dlock_client *c);
/* Default ttl in ms for this client (URL ?ttl=, else 15000). */
DLOCK_EXTERN int64_t dlock_client_ttl_ms(const dlock_client *c);

/* Message for the last failure on the calling thread (C is accepted for
 * symmetry and may be NULL).  Never NULL; "" when there is none. */
DLOCK_EXTERN const char *dlock_client_errmsg(const dlock_client *c);

/* Redact a URL for display: the password and known secret parameters are
 * replaced by "***".  Writes at most len bytes including the NUL; returns
 * the length it needed, or a negative code. */
DLOCK_EXTERN int dlock_url_redact(const char *url, char *buf, size_t len);

/* Longest duration dlock_duration_parse accepts (about 100 years), in ms. */
#define DLOCK_DURATION_MAX_MS INT64_C(3200000000000)
/* A duration as URL parameters spell them, into *ms: decimal digits with
 * an optional fraction, then "ms", "s", "m" or "h" ("250ms", "1.5s",
 * "2m"); a number without a unit counts BARE_MS milliseconds each (1 in
 * URLs; 1000 reads it as seconds, as the dlock command does).  Fractions
 * round to the nearest ms.  Signs, spaces, exponents and anything longer
 * than DLOCK_DURATION_MAX_MS are DLOCK_EINVAL, as is a BARE_MS outside
 * [1, DLOCK_DURATION_MAX_MS]. */
DLOCK_EXTERN int dlock_duration_parse(const char *s, int64_t bare_ms, int64_t *ms);

DLOCK_EXTERN const char *dlock_version(void);

#ifdef __cplusplus
}
#endif
#endif
