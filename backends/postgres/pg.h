/* PostgreSQL backend, shared by its files only: the client, connection and
 * lock structs, the table of what differs between the two modes, and the
 * connection layer (pg-conn.c) and monitor (pg-monitor.c) that both modes
 * use.  pg.c opens a client and dispatches to its mode: pg-advisory.c or
 * pg-lease.c. */
#ifndef DLOCK_PG_H
#define DLOCK_PG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "backends/postgres/pg-codec.h"

#define SQL_MAX 1400

typedef struct pgc {
  pthread_mutex_t mu; /* one statement at a time */
  PGconn *pg;         /* NULL once closed */
  int fd;
  int pid;            /* the server process behind it */
  int64_t keep_ms;    /* advisory: the server keeps an unreachable session this long */
  struct pgc *next;
  /* guarded by the client's mu: */
  dlock_backend_lock **held; /* advisory locks this session holds */
  size_t nheld, capheld;
  int users;   /* threads that picked it and have not put it back */
  int waiting; /* given to one blocking wait */
  int dead;    /* broken: its locks were reported lost */
  int hup;     /* the monitor saw the server close it */
  /* The server said FATAL: the session is ending.  Under mu. */
  int fatal;
  /* The statements (bits by enum dlock__pg_sql) prepared on this session,
   * which a new connection starts without.  Under mu. */
  uint32_t prepared;
} pg_conn;

typedef struct pg_lock {
  pg_conn *conn; /* advisory: the session that holds it */
  int64_t key;   /* advisory key */
  /* Advisory: claimed for giving back, by its release or by a break of
   * this client, so that one unlock alone is sent (a second could free a
   * later acquisition of the key on the same session) and its renewal
   * answers DLOCK_ELOST.  Under the client's mu. */
  int given_back;
} pg_lock;

typedef struct pg_waiter {
  const char *key;
  int fired;
  struct pg_waiter *next;
} pg_waiter;

struct pg_client;

/* What one mode does, chosen at open from ?mode=.  The operations are the
 * vtable's (see include/dlock/backend.h), on the client's state. */
typedef struct pg_mode {
  const char *name; /* its ?mode= */
  /* Its locks live in the server session that took them: a pooler, which
   * shares sessions, is refused, and every session is told to outlive a
   * lease (dlock__pg_session_keep) before it serves. */
  int session_locks;
  /* It keeps lease rows: the schema has the table and its index. */
  int rows;
  /* The client's caps once its first connection has shown whether a
   * pooler is in the way, from the vtable's. */
  uint32_t (*caps)(const struct pg_client *pc, uint32_t caps);
  int (*try_acquire)(struct pg_client *pc, dlock_backend_lock *bl);
  int (*acquire)(struct pg_client *pc, dlock_backend_lock *bl, int64_t deadline_ns);
  int (*renew_many)(struct pg_client *pc, dlock_backend_lock **bls, size_t n, int *rcs);
  int (*release)(struct pg_client *pc, dlock_backend_lock *bl);
  int (*inspect)(struct pg_client *pc, const char *key, size_t keylen, dlock_info *info);
  int (*list)(struct pg_client *pc, const char *prefix, size_t prefixlen,
              dlock_backend_emit_fn emit, void *ud);
  int (*force_release)(struct pg_client *pc, const char *key, size_t keylen,
                       const dlock_info *holder, dlock_info *broken);
} pg_mode;

extern const pg_mode dlock__pg_advisory;
extern const pg_mode dlock__pg_lease;

typedef struct pg_client {
  dlock_backend_client *bc;
  const pg_mode *mode;
  int pooled; /* reached through a pooler: no session state to rely on */
  /* advisory: a grant waits for the postmaster to admit a connection
   * (?confirm_grants=, see confirm_grant) */
  int confirm;
  dlock__pg_names names;
  char sql[DLOCK__PG_SQL_COUNT][SQL_MAX];
  char stmt[DLOCK__PG_SQL_COUNT][DLOCK__PG_STMT_NAME_MAX]; /* their prepared names */
  /* Statements go as named prepared statements (see dlock__pg_exec): set
   * at open, cleared for good when the server lost one. */
  atomic_int named;
  char *conninfo;   /* for libpq, secrets included: never printed */
  const char *where; /* redacted URL, for messages */
  const dlock_url *url; /* the client's, for hiding its secrets in libpq's messages */
  /* The URL parameters handed to libpq (pointing into URL), which libpq
   * may quote back. */
  const char **lp_names, **lp_values;
  size_t lp_n;
  int64_t connect_timeout_ms, timeout_ms;

  pthread_mutex_t mu;
  pthread_cond_t cv; /* a waiter was fired */
  int mu_ready;
  pg_conn *conns;
  size_t nconns;

  /* lease waits */
  pthread_mutex_t lmu; /* serialises (re)connecting the listener */
  PGconn *listener;
  pg_waiter *waiters;

  /* monitor */
  pthread_t mon;
  int mon_started;
  int stop;
  int evfd;
  /* The monitor looks at the held locks every MONITOR_TICK_MS (see
   * pg-monitor.c) while there are any, and for a while after, so that
   * taking and giving back locks costs no wake-up; only the first lock
   * after a quiet spell wakes it. */
  int mon_sleeping;
  int64_t last_held_ns;

  /* lease rows: the clean-up runs (the expires_at index exists), and not
   * before gc_next_ns; gc_busy while one thread runs it.  Under mu. */
  int gc;
  int gc_busy;
  int64_t gc_next_ns;

  /* DLOCK_PG_CTL_STATS */
  atomic_uint_fast64_t n_statements, n_prepares, n_renewals, n_unprepared;
} pg_client;

/* ---- time ---- */

static inline int64_t ms_left(int64_t deadline_ns) {
  if (deadline_ns < 0)
    return -1;
  int64_t d = deadline_ns - dlock_backend_now_ns();
  return d <= 0 ? 0 : (d + 999999) / 1000000;
}

static inline int64_t deadline_after(int64_t ms) {
  return dlock_backend_now_ns() + ms * 1000000;
}

static inline int64_t earlier(int64_t a, int64_t b) {
  if (a < 0)
    return b;
  if (b < 0)
    return a;
  return a < b ? a : b;
}

/* poll() on one descriptor until DEADLINE_NS (-1: forever).  1 ready, 0
 * deadline passed, -1 error. */
DLOCK__HIDDEN int dlock__pg_wait_fd(int fd, short events, int64_t deadline_ns);

/* ---- errors and statements (pg-conn.c) ---- */

/* The first line of libpq's message M, with what it quotes hidden unless
 * known to be harmless: libpq quotes the parts of the connection string it
 * rejects or could not use, and those may be secrets. */
DLOCK__HIDDEN const char *dlock__pg_libpq_text(const pg_client *pc, const char *m, char *buf,
                                               size_t len);

/* The SQLSTATE of this thread's last statement: "" if it succeeded or
 * failed without an answer. */
DLOCK__HIDDEN const char *dlock__pg_last_state(void);

/* Send SQL and collect its result by DEADLINE_NS (-1: none): the first
 * error if any statement failed, else the first result.  NPARAMS < 0 sends
 * SQL as a simple query, which may hold several statements.  *broken is
 * set when the connection can no longer be used (it failed, or a reply is
 * still outstanding). */
DLOCK__HIDDEN int dlock__pg_run(pg_client *pc, PGconn *pg, const char *what, const char *sql,
                                int nparams, const char *const *params, int64_t deadline_ns,
                                PGresult **out, int *broken);

/* Statement WHICH of the client's on CN (its mu held), as dlock__pg_run
 * runs one: a named statement, prepared on the session first if it is not
 * yet, while the client uses them; unnamed otherwise, or for a simple
 * query (NPARAMS < 0). */
DLOCK__HIDDEN int dlock__pg_exec(pg_client *pc, pg_conn *cn, const char *what,
                                 enum dlock__pg_sql which, int nparams,
                                 const char *const *params, int64_t deadline_ns, PGresult **out,
                                 int *broken);

/* ---- connections (pg-conn.c) ---- */

/* A new connection, non-blocking, its notices quieted: 0 or a code. */
DLOCK__HIDDEN int dlock__pg_connect(pg_client *pc, PGconn **out);

/* Sessions whose locks live in them: make the server keep an unreachable
 * session at least TTL_MS (our validity ends sooner), with cn->mu held. */
DLOCK__HIDDEN int dlock__pg_session_keep(pg_client *pc, pg_conn *cn, int64_t ttl_ms,
                                         int *broken);

DLOCK__HIDDEN void dlock__pg_conn_free(pg_conn *cn);

/* Pick a connection for one short statement (WAIT = 0) or for a blocking
 * wait (WAIT = 1: holding nothing, used by no one), opening one if needed.
 * Returns it with its mu locked. */
DLOCK__HIDDEN int dlock__pg_conn_get(pg_client *pc, int wait, pg_conn **out);

/* Give back a connection from dlock__pg_conn_get(), or one pinned with
 * users++ and its mu locked.  BROKEN: the last statement left it unusable;
 * ending it reports every lock it holds lost. */
DLOCK__HIDDEN void dlock__pg_conn_put(pg_client *pc, pg_conn *cn, int broken);

/* One statement on whichever connection is free, for statements that tie
 * nothing to a session. */
DLOCK__HIDDEN int dlock__pg_run_any(pg_client *pc, const char *what, enum dlock__pg_sql which,
                                    int nparams, const char *const *params, int64_t deadline_ns,
                                    PGresult **out);

/* The locks a session holds (the monitor watches those sessions).  Under
 * pc->mu. */
DLOCK__HIDDEN int dlock__pg_held_add(pg_conn *cn, dlock_backend_lock *bl);
DLOCK__HIDDEN void dlock__pg_held_remove(pg_conn *cn, dlock_backend_lock *bl);
/* BL holds nothing on CN any more, and the caller has not picked CN: CN
 * is closed if that leaves it of no use.  Takes pc->mu. */
DLOCK__HIDDEN void dlock__pg_held_drop(pg_client *pc, pg_conn *cn, dlock_backend_lock *bl);

/* ---- the monitor (pg-monitor.c) ---- */

DLOCK__HIDDEN int dlock__pg_monitor_start(pg_client *pc);
/* Stops it if it runs. */
DLOCK__HIDDEN void dlock__pg_monitor_stop(pg_client *pc);
DLOCK__HIDDEN void dlock__pg_wake_monitor(pg_client *pc);

#endif
