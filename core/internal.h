/* Internal interfaces shared by core/, backends/ and the tests.  Not installed. */
#ifndef DLOCK_INTERNAL_H
#define DLOCK_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend-util.h"
#include "dlock/backend.h"
#include "dlock/dlock.h"

/* ---- url.c (pure: no I/O) ---- */

/* Parse URL into a newly allocated dlock_url.  DLOCK_EINVAL with a message
 * naming what is wrong (never echoing a password). */
DLOCK__HIDDEN int dlock__url_parse(const char *s, dlock_url **out);
DLOCK__HIDDEN void dlock__url_free(dlock_url *u);
/* DLOCK_EINVAL naming the first parameter nobody read, else 0. */
DLOCK__HIDDEN int dlock__url_check_unused(const dlock_url *u);
/* "15s" -> 15000.  0 or DLOCK_EINVAL. */
DLOCK__HIDDEN int dlock__parse_duration(const char *s, int64_t *ms);
/* Durations as URLs spell them ("1.5s", "250ms", "2m", "1h"), with a bare
 * number meaning BARE_MS milliseconds each (1 in URLs, 1000 on the command
 * line); at most DLOCK__DURATION_MAX_MS.  0 or DLOCK_EINVAL. */
#define DLOCK__DURATION_MAX_MS DLOCK_DURATION_MAX_MS
DLOCK__HIDDEN int dlock__duration_parse(const char *s, int64_t bare_ms, int64_t *ms);

/* ---- util.c ---- */

/* A number naming the calling thread, never reused within the process
 * (pthread_t values are reused once a thread exits). */
DLOCK__HIDDEN uint64_t dlock__thread_serial(void);

/* ---- registry.c ---- */

DLOCK__HIDDEN const dlock_backend_ops *dlock__registry_find(const char *scheme);
/* Every scheme this library accepts (built in and registered), comma-separated. */
DLOCK__HIDDEN void dlock__registry_schemes(char *buf, size_t len);
DLOCK__HIDDEN int dlock__ops_check(const dlock_backend_ops *ops);

/* ---- errors.c ---- */

/* From now until the call that restores the value returned, every message
 * this thread sets is scrubbed of U's secrets as it is made (NULL: none). */
DLOCK__HIDDEN const dlock_url *dlock__err_scope(const dlock_url *u);
/* dlock__err_scrub on any buffer of at most 512 bytes; *CUT: the text in
 * BUF was cut to fit (updated). */
DLOCK__HIDDEN void dlock__scrub(const dlock_url *u, char *buf, size_t size, bool *cut);

/* ---- log.c ---- */

/* One message for the application's log function, if it wants LEVEL:
 * "<redacted URL>: <text>", scrubbed of C's secrets.  C may be NULL. */
DLOCK__HIDDEN void dlock__log(const dlock_client *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
DLOCK__HIDDEN void dlock__vlog(const dlock_client *c, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Whether a message of LEVEL would go anywhere: spares building one. */
DLOCK__HIDDEN bool dlock__log_on(int level);

/* ---- metrics.c ---- */

typedef struct dlock__hist {
  _Atomic uint64_t count;
  _Atomic uint64_t sum_us;
  _Atomic uint64_t buckets[DLOCK_HIST_BUCKETS];
} dlock__hist;

typedef struct dlock__metrics {
  _Atomic uint64_t acquire_ok, acquire_busy, acquire_timeout, acquire_error;
  _Atomic uint64_t release, renew_ok, renew_failed, lost, held_now;
  _Atomic uint64_t acquire_retries, giveback, giveback_pending;
  dlock__hist acquire_wait, hold_time;
} dlock__metrics;

DLOCK__HIDDEN void dlock__hist_add(dlock__hist *h, int64_t ns);
DLOCK__HIDDEN void dlock__metrics_acquire_result(dlock__metrics *m, int rc);

/* ---- built-in backends ---- */

extern const dlock_backend_ops dlock__mem_ops;
extern const dlock_backend_ops dlock__file_ops;
#ifdef DLOCK_HAVE_REDIS
extern const dlock_backend_ops dlock__redis_ops;
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
extern const dlock_backend_ops dlock__zk_ops;
#endif
#ifdef DLOCK_HAVE_POSTGRES
extern const dlock_backend_ops dlock__pg_ops;
#endif
#ifdef DLOCK_HAVE_ETCD
extern const dlock_backend_ops dlock__etcd_ops;
#endif
#ifdef DLOCK_HAVE_CONSUL
extern const dlock_backend_ops dlock__consul_ops;
#endif

/* ---- clients and lock handles ---- */

typedef struct dlock__entry dlock__entry;

struct dlock_lock {
  dlock_client *client;
  dlock_backend_lock bl;     /* what the backend sees */
  char *key;
  char *label;
  char owner[33];
  bool inflight;             /* a backend call on it is running */
  bool auto_renew;
  bool lost_pending;         /* on_lost still to be delivered */
  bool lost_early;           /* the backend reported loss before acquire returned */
  /* An attempt (or a release, on a store with bc.give_back_expired) whose
   * answer never came, so the store may keep it: the give-back thread
   * gives it back (it stays in the key table meanwhile, so no new attempt
   * of this client on the key can overlap the give-back). */
  bool giveback;
  /* With bc.give_back_expired: a lock whose validity ran out, which the
   * store may still keep for the client's session.  The give-back thread
   * gives it back (paced by giveback_tries and giveback_next_ns); once the
   * store has answered (returned), release() is not called for it again. */
  bool owed, returned;
  /* With bc.late_ms: an attempt whose give-back was answered while the
   * store may still grant it (before late_until_ns), looked at again; an
   * entry of the table that reserves its key only while a look is on its
   * way (inflight). */
  bool watch;
  int holds;
  int state;                 /* DLOCK_HELD / DLOCK_LOST / DLOCK_RELEASED, or 0 while acquiring */
  int giveback_tries;
  int renew_failures;
  uint64_t thread;           /* dlock__thread_serial() of the acquirer (reentrancy) */
  int64_t giveback_next_ns;
  int64_t giveback_until_ns; /* the store has expired it on its own by then */
  int64_t late_until_ns;     /* with bc.late_ms, for an unanswered attempt; 0: none */
  dlock_lost_fn on_lost;
  void *on_lost_arg;
  int64_t acquired_ns;
  int64_t valid_until_ns;    /* INT64_MAX when the store has no expiry */
  int64_t next_renew_ns;
  /* intrusive links */
  struct dlock_lock *hnext;  /* hash chain */
  struct dlock_lock *prev, *next; /* all held locks of the client */
};

struct dlock_client {
  const dlock_backend_ops *ops;
  dlock_backend_client bc;
  dlock_url *url;
  char *redacted;
  const char *require;       /* URL ?require=, checked once the backend is open */
  int64_t margin_floor_ms;
  /* retry policy for backends that cannot notify */
  int64_t retry_initial_ms, retry_max_ms;
  double retry_multiplier, retry_jitter;

  pthread_mutex_t mu;
  pthread_cond_t cv;         /* lock table changed / inflight cleared */
  struct dlock_lock **table; /* key -> lock, chained */
  size_t table_size, table_count;
  struct dlock_lock *head;   /* list of all entries */

  /* renew scheduler */
  pthread_t renew_thread;
  bool renew_started, renew_stop;
  pthread_cond_t renew_cv;
  /* When the renew thread will next look at the locks, INT64_MAX while it
   * sleeps with nothing due, INT64_MIN while it is awake.  Acquire wakes it
   * only for a lock due earlier, which keeps a context switch off the
   * acquire path. */
  int64_t renew_wake_ns;
  /* the give-back thread (giveback.c), started with the first entry */
  pthread_t gb_thread;
  bool gb_started, gb_stop;
  pthread_cond_t gb_cv;
  char default_label[128];

  dlock__metrics metrics;
};

/* ---- table.c: the key table (c->table, c->head), under c->mu ---- */

/* The first entry of KEY in C's table that keeps KEY from this client's
 * acquires (every entry but a watched attempt between its looks), or
 * NULL. */
DLOCK__HIDDEN struct dlock_lock *dlock__table_find(dlock_client *c, const char *key);
/* The entry of KEY that thread SELF holds (or lost), if any, else the first
 * such entry of KEY, or NULL. */
DLOCK__HIDDEN struct dlock_lock *dlock__table_find_for(dlock_client *c, const char *key,
                                                       uint64_t self);
/* Link L into the table and the list of all entries. */
DLOCK__HIDDEN void dlock__table_add(dlock_client *c, struct dlock_lock *l);
/* Unlink L, which is in the table; a watched attempt of its key that
 * waited for it to go is due for a look now (the give-back thread is woken). */
DLOCK__HIDDEN void dlock__table_remove(dlock_client *c, struct dlock_lock *l);

/* ---- client.c / renew.c ---- */

DLOCK__HIDDEN int dlock__renew_start(dlock_client *c);
DLOCK__HIDDEN void dlock__renew_stop(dlock_client *c);
DLOCK__HIDDEN void dlock__renew_kick(dlock_client *c);
/* One renewal through the backend: its renew, or else its renew_many of
 * one lock. */
DLOCK__HIDDEN int dlock__renew_one(dlock_client *c, dlock_backend_lock *bl);
/* Safety margin subtracted from the ttl for the local validity deadline. */
DLOCK__HIDDEN int64_t dlock__margin_ns(const dlock_client *c, int64_t ttl_ms);
/* Local validity deadline of a lease of TTL_MS whose request left at SENT_NS. */
DLOCK__HIDDEN int64_t dlock__validity_deadline(const dlock_client *c, int64_t sent_ns,
                                               int64_t ttl_ms);
/* ---- giveback.c ---- */

/* Under c->mu: the give-back thread, started if it is not yet (and not
 * stopped); 0, or a negative code when it cannot start. */
DLOCK__HIDDEN int dlock__giveback_start(dlock_client *c);
/* Hand L, whose attempt (or release) failed without an answer, to the
 * give-back thread; it is freed when that is done.  WHY ends
 * the log line.  Not under c->mu. */
DLOCK__HIDDEN void dlock__giveback(dlock_client *c, struct dlock_lock *l, const char *why);
/* Wake the give-back thread: an entry is due. */
DLOCK__HIDDEN void dlock__giveback_kick(dlock_client *c);
/* Stop it (close); no entry is given back afterwards. */
DLOCK__HIDDEN void dlock__giveback_stop(dlock_client *c);
/* Under c->mu: L, an attempt whose give-back the store answered while it
 * may still grant it late (bc.late_ms), is looked at again from now on.
 * 0, or a negative code when no thread can (L is then the caller's to
 * drop). */
DLOCK__HIDDEN int dlock__giveback_watch(dlock_client *c, struct dlock_lock *l);
/* Under c->mu: L, LOST by its deadline, is to be given back by the
 * give-back thread while it stays the caller's handle
 * (bc.give_back_expired). */
DLOCK__HIDDEN void dlock__owe(dlock_client *c, struct dlock_lock *l);
/* Free a lock handle and its backend state. */
DLOCK__HIDDEN void dlock__lock_free(struct dlock_lock *l);
/* Under c->mu: turn L LOST (once), count it and log WHY. */
DLOCK__HIDDEN void dlock__mark_lost(dlock_client *c, struct dlock_lock *l, const char *why);
/* Every public call on a client runs between these two: begin puts the
 * thread's messages in C's error scope (a store library may quote the URL,
 * secrets included) and returns the scope to go back to; end scrubs what
 * a failure left and restores it, passing RC through. */
DLOCK__HIDDEN const dlock_url *dlock__api_begin(const dlock_client *c);
DLOCK__HIDDEN int dlock__api_end(const dlock_client *c, const dlock_url *was, int rc);

#endif
