/* PostgreSQL backend: connections, the monitor thread and the operations.
 * Names, SQL text and value decoding live in pg-codec.c; this file only
 * moves them.
 *
 * Advisory mode: a lock lives exactly as long as the server session that
 * took it, so a held lock pins its connection.  Many locks share a few
 * connections; a blocking wait (the server's own lock queue) gets a
 * connection to itself, which then keeps the lock it obtained.  A monitor
 * thread watches every connection that holds locks for the server closing
 * it (POLLRDHUP), so a terminated session is reported LOST at once, not at
 * the next renewal.
 *
 * Lease mode: every statement stands alone, so any pooled connection
 * serves any lock (PgBouncer transaction pooling included).  Waiters sleep
 * until a NOTIFY from a release, read by the monitor on a dedicated LISTEN
 * connection, or until the holder's lease runs out.  Behind a pooler
 * LISTEN cannot work, so waiters poll with backoff capped by that expiry.
 *
 * An operator's list and break: lease rows are listed by name, and a break
 * ends one row's lease in the statement that checks its holder, as a
 * release would.  An advisory lock is only a hash in pg_locks, so those
 * cannot be listed, and another client's can be broken only by ending the
 * whole session that holds it (see adv_break). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backends/postgres/pg-codec.h"

/* Connections used for short statements at once; past this, callers share. */
#define ACTIVE_MAX 8
/* Connections kept open while holding nothing. */
#define IDLE_MAX 4
/* Locks renewed (lease) per statement. */
#define RENEW_BATCH 1000
/* Polling behind a pooler: first and largest pause, ms. */
#define POLL_MIN_MS 5
#define POLL_MAX_MS 500
#define SQL_MAX 1400
/* How soon the monitor watches a newly held lock's session, and how late
 * it may give back one whose lease ran out (the core has called it lost
 * by then already, so lateness costs others time, never safety). */
#define MONITOR_TICK_MS 200
#define MONITOR_LINGER_MS 5000
/* Lease rows deleted per clean-up statement, and how often a client runs
 * one when the last one found less than that. */
#define GC_BATCH 1000
#define GC_PERIOD_MS 1000
/* Longest a clean-up statement may hold up the operation it follows. */
#define GC_MAX_MS 250
/* Lease rows listed per statement. */
#define LIST_BATCH 500
/* Looks at an advisory lock's holder before a break gives up on a key
 * that changes hands under it. */
#define BREAK_ATTEMPTS 3

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
} pg_conn;

typedef struct pg_lock {
  pg_conn *conn; /* advisory: the session that holds it */
  int64_t key;   /* advisory key */
  /* Advisory locks do not expire at the server, so the monitor gives back
   * one that went a whole ttl without renewal: a holder that stops renewing
   * loses its lock after the ttl here as with every other store.  Both
   * under the client's mu. */
  int64_t expires_ns;
  int expired;
} pg_lock;

typedef struct pg_waiter {
  const char *key;
  int fired;
  struct pg_waiter *next;
} pg_waiter;

typedef struct pg_client {
  dlock_backend_client *bc;
  int mode;
  int pooled; /* reached through a pooler: no session state to rely on */
  /* advisory: a grant waits for the postmaster to admit a connection
   * (?confirm_grants=, see confirm_grant) */
  int confirm;
  dlock__pg_names names;
  char sql[DLOCK__PG_SQL_COUNT][SQL_MAX];
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
  /* The monitor looks at the held locks every MONITOR_TICK_MS while there
   * are any, and for a while after, so that taking and giving back locks
   * costs no wake-up; only the first lock after a quiet spell wakes it. */
  int mon_sleeping;
  int64_t last_held_ns;

  /* lease rows: the clean-up runs (the expires_at index exists), and not
   * before gc_next_ns; gc_busy while one thread runs it.  Under mu. */
  int gc;
  int gc_busy;
  int64_t gc_next_ns;
} pg_client;

/* ---- time ---- */

static int64_t ms_left(int64_t deadline_ns) {
  if (deadline_ns < 0)
    return -1;
  int64_t d = deadline_ns - dlock_backend_now_ns();
  return d <= 0 ? 0 : (d + 999999) / 1000000;
}

static int64_t deadline_after(int64_t ms) {
  return dlock_backend_now_ns() + ms * 1000000;
}

static int64_t earlier(int64_t a, int64_t b) {
  if (a < 0)
    return b;
  if (b < 0)
    return a;
  return a < b ? a : b;
}

/* poll() on one descriptor until DEADLINE_NS (-1: forever).  1 ready, 0
 * deadline passed, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline_ns) {
  for (;;) {
    int64_t ms = ms_left(deadline_ns);
    if (ms == 0)
      return 0;
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, ms < 0 || ms > 60000 ? 60000 : (int)ms);
    if (n > 0)
      return 1;
    if (n < 0 && errno != EINTR)
      return -1;
  }
}

static void wake_monitor(pg_client *pc) {
  uint64_t one = 1;
  if (pc->evfd >= 0 && write(pc->evfd, &one, sizeof one) < 0) {
    /* A full counter still wakes the monitor. */
  }
}

/* ---- errors ---- */

/* The first line of libpq's message M, with what it quotes hidden unless
 * known to be harmless: libpq quotes the parts of the connection string it
 * rejects or could not use, and those may be secrets. */
static const char *libpq_text(const pg_client *pc, const char *m, char *buf, size_t len) {
  return dlock__pg_safe_message(pc->url, pc->lp_names, pc->lp_values, pc->lp_n, m, buf, len);
}

static int conn_error(pg_client *pc, PGconn *pg, const char *what) {
  char b[256];
  int rc = dlock_seterr(DLOCK_ECONN, "postgres: %s on %s: %s", what, pc->where,
                        libpq_text(pc, pg ? PQerrorMessage(pg) : NULL, b, sizeof b));
  dlock__err_scrub(pc->url);
  return rc;
}

/* The SQLSTATE of this thread's last failed statement. */
static _Thread_local char last_state[6];

static int result_error(pg_client *pc, const PGresult *r, const char *what) {
  const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  snprintf(last_state, sizeof last_state, "%s", st ? st : "");
  const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  int code = dlock__pg_sqlstate_code(st);
  if (code == DLOCK_ETIMEDOUT)
    return dlock_seterr(code, "postgres: %s: timed out", what);
  dlock_seterr(code, "postgres: %s on %s: %s (SQLSTATE %s)", what, pc->where,
               msg ? msg : "error", st ? st : "?");
  /* The server's text: not libpq's quoting of the connection string, but
   * scrubbed all the same. */
  dlock__err_scrub(pc->url);
  return code;
}

static void quiet_notices(void *arg, const char *message) {
  /* pg_advisory_unlock() of a lock not held warns; the result says it. */
  (void)arg;
  (void)message;
}

/* A server ending a session (pg_terminate_backend, a shutdown) first sends
 * a FATAL error, and only then frees the session's locks and closes the
 * socket.  libpq hands an error that comes while no statement runs to the
 * notice receiver; noting it here lets the locks be called lost from that
 * message on, not from the close that follows the freeing. */
static void session_notice(void *arg, const PGresult *r) {
  pg_conn *cn = arg;
  const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
    cn->fatal = 1;
}

/* ---- statements ---- */

static int result_ok(const PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

/* Send SQL and collect its result by DEADLINE_NS (-1: none): the first
 * error if any statement failed, else the first result.  NPARAMS < 0 sends
 * SQL as a simple query, which may hold several statements.  *broken is
 * set when the connection can no longer be used (it failed, or a reply is
 * still outstanding). */
static int run(pg_client *pc, PGconn *pg, const char *what, const char *sql, int nparams,
               const char *const *params, int64_t deadline_ns, PGresult **out, int *broken) {
  *out = NULL;
  int sent = nparams < 0 ? PQsendQuery(pg, sql)
                         : PQsendQueryParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
  if (!sent) {
    *broken = 1;
    return conn_error(pc, pg, what);
  }
  int f;
  while ((f = PQflush(pg)) == 1) {
    int w = wait_fd(PQsocket(pg), POLLOUT, deadline_ns);
    if (w <= 0) {
      *broken = 1;
      return w == 0 ? dlock_seterr(DLOCK_ECONN, "postgres: %s: cannot send to %s in time",
                                   what, pc->where)
                    : conn_error(pc, pg, what);
    }
  }
  if (f < 0) {
    *broken = 1;
    return conn_error(pc, pg, what);
  }
  PGresult *first = NULL;
  for (;;) {
    while (PQisBusy(pg)) {
      int w = wait_fd(PQsocket(pg), POLLIN, deadline_ns);
      if (w == 0) {
        PQclear(first);
        *broken = 1;
        return dlock_seterr(DLOCK_ECONN, "postgres: %s: no reply from %s in time", what,
                            pc->where);
      }
      if (w < 0 || !PQconsumeInput(pg)) {
        PQclear(first);
        *broken = 1;
        return conn_error(pc, pg, what);
      }
    }
    PGresult *r = PQgetResult(pg);
    if (!r)
      break;
    if (!first || (result_ok(first) && !result_ok(r))) {
      PQclear(first);
      first = r;
    } else {
      PQclear(r);
    }
  }
  if (PQstatus(pg) == CONNECTION_BAD)
    *broken = 1;
  if (!first)
    return *broken ? conn_error(pc, pg, what)
                   : dlock_seterr(DLOCK_EBACKEND, "postgres: %s: no result", what);
  if (!result_ok(first)) {
    int rc = result_error(pc, first, what);
    PQclear(first);
    if (rc == DLOCK_ECONN)
      *broken = 1;
    return rc;
  }
  *out = first;
  return 0;
}

/* ---- connections ---- */

static int connect_pg(pg_client *pc, PGconn **out) {
  char tcp_user_timeout[24], idle[24];
  /* A dead peer is noticed within about the request timeout: unacked data
   * fails after it, and an idle connection is probed every few seconds. */
  snprintf(tcp_user_timeout, sizeof tcp_user_timeout, "%lld", (long long)pc->timeout_ms);
  int64_t idle_s = pc->bc->default_ttl_ms / 3000;
  snprintf(idle, sizeof idle, "%lld", (long long)(idle_s < 1 ? 1 : idle_s > 30 ? 30 : idle_s));
  /* Ours first, then the URL (as "dbname", expanded): what the caller's URL
   * says wins. */
  const char *const keys[] = {"keepalives", "keepalives_idle", "keepalives_interval",
                              "keepalives_count", "tcp_user_timeout", "application_name",
                              "dbname", NULL};
  const char *const vals[] = {"1", idle, "2", "3", tcp_user_timeout, "dlock", pc->conninfo,
                              NULL};
  PGconn *pg = PQconnectStartParams(keys, vals, 1);
  if (!pg)
    return dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
  int64_t deadline = pc->connect_timeout_ms > 0 ? deadline_after(pc->connect_timeout_ms) : -1;
  PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
  if (PQstatus(pg) == CONNECTION_BAD)
    ps = PGRES_POLLING_FAILED;
  while (ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
    int w = wait_fd(PQsocket(pg), ps == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
    if (w == 0) {
      PQfinish(pg);
      return dlock_seterr(DLOCK_ECONN, "postgres: cannot connect to %s within %lld ms",
                          pc->where, (long long)pc->connect_timeout_ms);
    }
    ps = PQconnectPoll(pg);
  }
  if (ps == PGRES_POLLING_FAILED) {
    char b[256];
    const char *m = libpq_text(pc, PQerrorMessage(pg), b, sizeof b);
    int code = strstr(m, "password") || strstr(m, "authentication") ? DLOCK_EAUTH : DLOCK_ECONN;
    PQfinish(pg);
    dlock_seterr(code, "postgres: cannot connect to %s: %s", pc->where, m);
    dlock__err_scrub(pc->url);
    return code;
  }
  PQsetNoticeProcessor(pg, quiet_notices, NULL);
  if (PQsetnonblocking(pg, 1) != 0) {
    int rc = conn_error(pc, pg, "setting up the connection");
    PQfinish(pg);
    return rc;
  }
  *out = pg;
  return 0;
}

/* Whether PG talks to the server process it announced at login.  A pooler
 * answers the login itself, with a made-up process id, and may run each
 * statement on another server session. */
static int check_session(pg_client *pc, PGconn *pg, int *pid) {
  PGresult *r;
  int broken = 0;
  int rc = run(pc, pg, "checking the session", pc->sql[DLOCK__PG_SQL_PING], 0, NULL,
               deadline_after(pc->timeout_ms), &r, &broken);
  if (rc < 0)
    return rc;
  int64_t v = 0;
  rc = PQntuples(r) == 1 ? dlock__pg_parse_i64(PQgetvalue(r, 0, 0), &v)
                         : dlock_seterr(DLOCK_EBACKEND, "postgres: no backend pid");
  PQclear(r);
  if (rc < 0)
    return rc;
  *pid = (int)v;
  return v == PQbackendPID(pg) ? 0 : 1;
}

/* Advisory sessions: make the server keep an unreachable session at least
 * TTL_MS (our validity ends sooner), with cn->mu held. */
static int session_settings(pg_client *pc, pg_conn *cn, int64_t ttl_ms, int *broken) {
  if (cn->keep_ms >= ttl_ms)
    return 0;
  int64_t s = (ttl_ms + 999) / 1000;
  s = s < 10 ? 10 : s;
  char sec[24];
  snprintf(sec, sizeof sec, "%lld", (long long)s);
  const char *params[1] = {sec};
  PGresult *r;
  int rc = run(pc, cn->pg, "setting up the session", pc->sql[DLOCK__PG_SQL_SESSION], 1, params,
               deadline_after(pc->timeout_ms), &r, broken);
  if (rc == 0) {
    PQclear(r);
    cn->keep_ms = s * 1000;
  }
  return rc;
}

static void conn_free(pg_conn *cn) {
  if (cn->pg)
    PQfinish(cn->pg);
  pthread_mutex_destroy(&cn->mu);
  free(cn->held);
  free(cn);
}

static int conn_new(pg_client *pc, pg_conn **out) {
  pg_conn *cn = calloc(1, sizeof *cn);
  if (!cn)
    return dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
  if (pthread_mutex_init(&cn->mu, NULL) != 0) {
    free(cn);
    return dlock_seterr(DLOCK_ENOMEM, "postgres: cannot create a mutex");
  }
  int rc = connect_pg(pc, &cn->pg);
  if (rc == 0) {
    PQsetNoticeReceiver(cn->pg, session_notice, cn);
    cn->fd = PQsocket(cn->pg);
    rc = check_session(pc, cn->pg, &cn->pid);
    if (rc == 1 && pc->mode == DLOCK__PG_ADVISORY)
      rc = dlock_seterr(DLOCK_EINVAL,
                        "postgres: %s reaches the server through a connection pooler (the "
                        "session's process id is not the one announced at login); advisory "
                        "locks live in a server session, which a pooler shares, so they "
                        "would not exclude anyone: use ?mode=lease",
                        pc->where);
    else if (rc == 1)
      rc = 0;
    int broken = 0;
    if (rc == 0 && pc->mode == DLOCK__PG_ADVISORY)
      rc = session_settings(pc, cn, pc->bc->default_ttl_ms, &broken);
  }
  if (rc < 0) {
    conn_free(cn);
    return rc;
  }
  *out = cn;
  return 0;
}

/* Under pc->mu. */
static void conn_unlink(pg_client *pc, pg_conn *cn) {
  for (pg_conn **p = &pc->conns; *p; p = &(*p)->next)
    if (*p == cn) {
      *p = cn->next;
      pc->nconns--;
      return;
    }
}

/* Under pc->mu: the connection can be closed (broken with nothing left on
 * it, or one idle connection too many). */
static int conn_disposable(pg_client *pc, pg_conn *cn) {
  if (cn->users || cn->nheld || cn->waiting)
    return 0;
  if (cn->dead)
    return 1;
  size_t idle = 0;
  for (pg_conn *o = pc->conns; o; o = o->next)
    if (!o->dead && !o->users && !o->nheld && !o->waiting)
      idle++;
  return idle > IDLE_MAX;
}

/* Called with cn->mu held and cn picked: the session is gone, so every
 * lock on it is gone too (the server released them when it ended). */
static void conn_kill(pg_client *pc, pg_conn *cn) {
  pthread_mutex_lock(&pc->mu);
  if (!cn->dead) {
    cn->dead = 1;
    for (size_t i = 0; i < cn->nheld; i++)
      dlock_backend_lock_lost(pc->bc, cn->held[i]);
  }
  pthread_mutex_unlock(&pc->mu);
  if (cn->pg) {
    PQfinish(cn->pg);
    cn->pg = NULL;
  }
}

/* Pick a connection for one short statement (WAIT = 0) or for a blocking
 * wait (WAIT = 1: holding nothing, used by no one), opening one if needed.
 * Returns it with its mu locked. */
static int conn_get(pg_client *pc, int wait, pg_conn **out) {
  pg_conn *cn = NULL, *least = NULL;
  size_t live = 0;
  pthread_mutex_lock(&pc->mu);
  for (pg_conn *o = pc->conns; o; o = o->next) {
    if (o->dead || o->waiting || o->hup)
      continue;
    live++;
    if (wait ? (!o->users && !o->nheld) : !o->users) {
      cn = o;
      break;
    }
    if (!wait && (!least || o->users < least->users))
      least = o;
  }
  if (!cn && !wait && live >= ACTIVE_MAX)
    cn = least;
  if (cn) {
    cn->users++;
    cn->waiting = wait;
  }
  pthread_mutex_unlock(&pc->mu);
  if (!cn) {
    int rc = conn_new(pc, &cn);
    if (rc < 0)
      return rc;
    cn->users = 1;
    cn->waiting = wait;
    pthread_mutex_lock(&pc->mu);
    cn->next = pc->conns;
    pc->conns = cn;
    pc->nconns++;
    pthread_mutex_unlock(&pc->mu);
  }
  pthread_mutex_lock(&cn->mu);
  *out = cn;
  return 0;
}

/* Give back a connection from conn_get().  BROKEN: the last statement left
 * it unusable. */
static void conn_put(pg_client *pc, pg_conn *cn, int broken) {
  if (!broken && cn->pg) {
    pthread_mutex_lock(&pc->mu);
    int hup = cn->hup;
    pthread_mutex_unlock(&pc->mu);
    /* The monitor saw the server close it while we had it: see whether
     * the session really ended. */
    if (hup && (!PQconsumeInput(cn->pg) || PQstatus(cn->pg) == CONNECTION_BAD))
      broken = 1;
  }
  if (cn->fatal)
    broken = 1;
  if (broken || !cn->pg)
    conn_kill(pc, cn);
  pthread_mutex_unlock(&cn->mu);
  pthread_mutex_lock(&pc->mu);
  cn->users--;
  cn->waiting = 0;
  cn->hup = 0;
  int dispose = conn_disposable(pc, cn);
  if (dispose)
    conn_unlink(pc, cn);
  pthread_mutex_unlock(&pc->mu);
  if (dispose)
    conn_free(cn);
}

/* One statement on whichever connection is free, for statements that tie
 * nothing to a session. */
static int run_any(pg_client *pc, const char *what, const char *sql, int nparams,
                   const char *const *params, int64_t deadline_ns, PGresult **out) {
  pg_conn *cn;
  int rc = conn_get(pc, 0, &cn);
  if (rc < 0)
    return rc;
  int broken = 0;
  rc = run(pc, cn->pg, what, sql, nparams, params, deadline_ns, out, &broken);
  conn_put(pc, cn, broken);
  return rc;
}

/* Under pc->mu. */
static int held_add(pg_conn *cn, dlock_backend_lock *bl) {
  if (cn->nheld == cn->capheld) {
    size_t cap = cn->capheld ? cn->capheld * 2 : 16;
    dlock_backend_lock **h = realloc(cn->held, cap * sizeof *h);
    if (!h)
      return dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
    cn->held = h;
    cn->capheld = cap;
  }
  cn->held[cn->nheld++] = bl;
  return 0;
}

static void held_remove(pg_conn *cn, dlock_backend_lock *bl) {
  for (size_t i = 0; i < cn->nheld; i++)
    if (cn->held[i] == bl) {
      cn->held[i] = cn->held[--cn->nheld];
      return;
    }
}

/* ---- the monitor ---- */

static void fire_waiters(pg_client *pc, const char *key) {
  for (pg_waiter *w = pc->waiters; w; w = w->next)
    if (!key || strcmp(w->key, key) == 0)
      w->fired = 1;
  pthread_cond_broadcast(&pc->cv);
}

static void listener_read(pg_client *pc) {
  PGconn *l = pc->listener;
  int ok = PQconsumeInput(l) && PQstatus(l) != CONNECTION_BAD;
  PGnotify *n;
  pthread_mutex_lock(&pc->mu);
  while ((n = PQnotifies(l)) != NULL) {
    fire_waiters(pc, n->extra);
    PQfreemem(n);
  }
  if (!ok) {
    /* Releases may go unseen now: every waiter re-checks, and the next one
     * to wait connects a new listener. */
    pc->listener = NULL;
    fire_waiters(pc, NULL);
  }
  pthread_mutex_unlock(&pc->mu);
  if (!ok)
    PQfinish(l);
}

/* A connection the server closed or spoke on while idle (REVENTS): if no
 * one is using it, find out now; otherwise its user does, on conn_put().
 * Bytes that come while a statement runs are its reply. */
static void monitor_hup(pg_client *pc, pg_conn *cn, short revents) {
  pthread_mutex_lock(&pc->mu);
  int mine = 0;
  for (pg_conn *o = pc->conns; o; o = o->next)
    if (o == cn && !o->dead && !o->hup && (o->users == 0 || (revents & ~POLLIN))) {
      o->hup = 1;
      if (!o->users) {
        o->users = 1;
        mine = 1;
      }
    }
  pthread_mutex_unlock(&pc->mu);
  if (mine) {
    pthread_mutex_lock(&cn->mu);
    conn_put(pc, cn, 0);
  }
}

/* Under pc->mu: the earliest lease end among held advisory locks. */
static int64_t next_expiry(pg_client *pc) {
  int64_t best = -1;
  for (pg_conn *o = pc->conns; o; o = o->next)
    for (size_t i = 0; i < o->nheld; i++) {
      pg_lock *pl = o->held[i]->priv;
      if (!pl->expired && (best < 0 || pl->expires_ns < best))
        best = pl->expires_ns;
    }
  return best;
}

/* Give back, at the server, every advisory lock whose lease ran out. */
static void expire_due(pg_client *pc) {
  int64_t now = dlock_backend_now_ns();
  for (;;) {
    pg_conn *cn = NULL;
    int64_t key = 0;
    pthread_mutex_lock(&pc->mu);
    for (pg_conn *o = pc->conns; o && !cn; o = o->next)
      for (size_t i = 0; i < o->nheld; i++) {
        pg_lock *pl = o->held[i]->priv;
        if (!pl->expired && pl->expires_ns <= now) {
          pl->expired = 1;
          dlock_backend_lock_lost(pc->bc, o->held[i]);
          if (!o->dead) {
            cn = o;
            key = pl->key;
            cn->users++;
          }
          break;
        }
      }
    pthread_mutex_unlock(&pc->mu);
    if (!cn)
      return;
    pthread_mutex_lock(&cn->mu);
    int broken = 0;
    if (cn->pg) {
      char kbuf[24];
      snprintf(kbuf, sizeof kbuf, "%" PRId64, key);
      const char *params[1] = {kbuf};
      PGresult *r;
      if (run(pc, cn->pg, "unlock", pc->sql[DLOCK__PG_SQL_ADV_UNLOCK], 1, params,
              deadline_after(pc->timeout_ms), &r, &broken) == 0)
        PQclear(r);
    }
    conn_put(pc, cn, broken);
  }
}

static void *monitor_main(void *arg) {
  pg_client *pc = arg;
  struct pollfd *pfd = NULL;
  pg_conn **who = NULL;
  size_t cap = 0;
  for (;;) {
    pthread_mutex_lock(&pc->mu);
    if (pc->stop) {
      pthread_mutex_unlock(&pc->mu);
      break;
    }
    size_t need = pc->nconns + 2;
    if (need > cap) {
      struct pollfd *np = realloc(pfd, need * sizeof *np);
      if (np)
        pfd = np;
      pg_conn **nw = realloc(who, need * sizeof *nw);
      if (nw)
        who = nw;
      if (np && nw)
        cap = need;
    }
    size_t n = 0;
    if (cap > 0) {
      pfd[n] = (struct pollfd){.fd = pc->evfd, .events = POLLIN};
      who[n++] = NULL;
      if (pc->listener) {
        pfd[n] = (struct pollfd){.fd = PQsocket(pc->listener), .events = POLLIN};
        who[n++] = NULL;
      }
      for (pg_conn *o = pc->conns; o && n < cap; o = o->next)
        if (o->nheld && !o->dead && !o->hup && o->pg) {
          /* An idle session that holds locks has nothing to say but that
           * it is ending (see session_notice); a busy one, its reply. */
          pfd[n] = (struct pollfd){.fd = o->fd,
                                   .events = (short)(o->users ? POLLRDHUP : POLLRDHUP | POLLIN)};
          who[n++] = o;
        }
    }
    int64_t expiry = next_expiry(pc);
    int64_t now = dlock_backend_now_ns();
    int active = expiry >= 0 || now - pc->last_held_ns < MONITOR_LINGER_MS * 1000000LL;
    pc->mon_sleeping = !active;
    int64_t wake_ns = active ? earlier(expiry, now + MONITOR_TICK_MS * 1000000LL) : -1;
    int has_listener = pc->listener != NULL;
    pthread_mutex_unlock(&pc->mu);
    if (cap == 0) {
      /* Out of memory: the renewals still find dead sessions. */
      struct timespec ts = {0, 100 * 1000000};
      nanosleep(&ts, NULL);
      continue;
    }
    int64_t ms = ms_left(wake_ns);
    int r = poll(pfd, n, ms < 0 ? -1 : ms > 60000 ? 60000 : (int)ms);
    if (expiry >= 0 && dlock_backend_now_ns() >= expiry)
      expire_due(pc);
    if (r <= 0)
      continue;
    if (pfd[0].revents & POLLIN) {
      uint64_t v;
      if (read(pc->evfd, &v, sizeof v) < 0) {
        /* EAGAIN: already drained */
      }
    }
    size_t i = 1;
    if (has_listener) {
      if (pfd[1].revents)
        listener_read(pc);
      i = 2;
    }
    for (; i < n; i++)
      if (pfd[i].revents)
        monitor_hup(pc, who[i], pfd[i].revents);
  }
  free(pfd);
  free(who);
  return NULL;
}

/* ---- setup ---- */

static int ensure_schema(pg_client *pc) {
  PGresult *r;
  int64_t dl = deadline_after(pc->timeout_ms);
  int rc = run_any(pc, "checking the schema", pc->sql[DLOCK__PG_SQL_SCHEMA_CHECK], 0, NULL, dl,
                   &r);
  if (rc < 0)
    return rc;
  int seq = 0, table = 0, index = 0;
  if (PQntuples(r) != 1 || PQnfields(r) != 3 ||
      dlock__pg_parse_bool(PQgetvalue(r, 0, 0), &seq) < 0 ||
      dlock__pg_parse_bool(PQgetvalue(r, 0, 1), &table) < 0 ||
      dlock__pg_parse_bool(PQgetvalue(r, 0, 2), &index) < 0)
    rc = dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply checking the schema");
  PQclear(r);
  int want_table = pc->mode == DLOCK__PG_LEASE;
  pc->gc = want_table && index;
  if (rc == 0 && seq && table && want_table && !index) {
    /* A table made by an earlier version: without the index the clean-up
     * would scan it whole, so it runs only if the index can be made.  A
     * user who may not create it still gets locks, and rows that stay. */
    rc = run_any(pc, "creating the lease index", pc->sql[DLOCK__PG_SQL_SCHEMA_CREATE_INDEX], -1,
                 NULL, dl, &r);
    if (rc == 0) {
      PQclear(r);
      pc->gc = 1;
    }
    return 0;
  }
  if (rc < 0 || (seq && (table || !want_table)))
    return rc;
  /* Several statements in one simple query: one transaction, so this works
   * through a transaction pooler too. */
  rc = run_any(pc, "creating the schema",
               pc->sql[want_table ? DLOCK__PG_SQL_SCHEMA_CREATE_LEASE
                                  : DLOCK__PG_SQL_SCHEMA_CREATE_SEQ],
               -1, NULL, dl, &r);
  if (rc == 0) {
    PQclear(r);
    pc->gc = want_table;
  }
  return rc;
}

static int build_sql(pg_client *pc) {
  for (int i = 0; i < DLOCK__PG_SQL_COUNT; i++) {
    int rc = dlock__pg_sql(&pc->names, (enum dlock__pg_sql)i, pc->sql[i], SQL_MAX);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* The URL's parameters that are not dlock's go to libpq, which rejects the
 * ones it does not know. */
static int build_conninfo(pg_client *pc, dlock_url *url) {
  size_t n = dlock_url_param_count(url);
  const char **names = pc->lp_names = calloc(n + 1, sizeof *names);
  const char **vals = pc->lp_values = calloc(n + 1, sizeof *vals);
  int rc = 0;
  if (!names || !vals)
    return dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    const char *k, *v;
    int claimed;
    dlock_url_param_at(url, i, &k, &v, &claimed);
    if (!claimed) {
      names[m] = k;
      vals[m++] = v;
    }
  }
  pc->lp_n = m;
  pc->conninfo = dlock__pg_conninfo(url, names, vals, m, &rc);
  if (!pc->conninfo)
    return rc;
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse(pc->conninfo, &err);
  if (!opts) {
    char b[256];
    if (err) {
      rc = dlock_seterr(DLOCK_EINVAL, "invalid URL '%s': %s", pc->where,
                        libpq_text(pc, err, b, sizeof b));
      dlock__err_scrub(pc->url);
    } else {
      rc = dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
    }
    PQfreemem(err);
    return rc;
  }
  PQconninfoFree(opts);
  return 0;
}

static void client_free(pg_client *pc) {
  if (pc->mon_started) {
    pthread_mutex_lock(&pc->mu);
    pc->stop = 1;
    pthread_mutex_unlock(&pc->mu);
    wake_monitor(pc);
    pthread_join(pc->mon, NULL);
  }
  while (pc->conns) {
    pg_conn *cn = pc->conns;
    pc->conns = cn->next;
    conn_free(cn);
  }
  if (pc->listener)
    PQfinish(pc->listener);
  if (pc->evfd >= 0)
    close(pc->evfd);
  if (pc->mu_ready) {
    pthread_mutex_destroy(&pc->mu);
    pthread_mutex_destroy(&pc->lmu);
    pthread_cond_destroy(&pc->cv);
  }
  if (pc->conninfo) {
    /* secrets included: not left in freed memory */
    volatile char *p = pc->conninfo;
    while (*p)
      *p++ = '\0';
    free(pc->conninfo);
  }
  free(pc->lp_names);
  free(pc->lp_values);
}

static int pg_open(dlock_backend_client *bc, dlock_url *url) {
  pg_client *pc = bc->priv;
  pc->bc = bc;
  pc->evfd = -1;
  pc->where = dlock_url_redacted(url);
  pc->url = url;
  pc->connect_timeout_ms = bc->connect_timeout_ms;
  pc->timeout_ms = bc->timeout_ms > 0 ? bc->timeout_ms : 5000;
  int rc = 0;
  const char *mode = "advisory";
  dlock_url_param(url, "mode", &mode);
  if (strcmp(mode, "advisory") == 0)
    pc->mode = DLOCK__PG_ADVISORY;
  else if (strcmp(mode, "lease") == 0)
    pc->mode = DLOCK__PG_LEASE;
  else
    return dlock_seterr(DLOCK_EINVAL,
                        "invalid URL '%s': mode='%.40s': expected advisory or lease", pc->where,
                        mode);
  if ((rc = dlock_url_param_bool(url, "confirm_grants", 1, &pc->confirm)) < 0)
    return rc;
  if ((rc = dlock__pg_names_init(bc->prefix, &pc->names)) < 0 || (rc = build_sql(pc)) < 0 ||
      (rc = build_conninfo(pc, url)) < 0)
    goto fail;
  if (pthread_mutex_init(&pc->mu, NULL) != 0 || pthread_mutex_init(&pc->lmu, NULL) != 0 ||
      dlock__cond_init(&pc->cv) != 0) {
    rc = dlock_seterr(DLOCK_ENOMEM, "postgres: cannot create a mutex");
    goto fail;
  }
  pc->mu_ready = 1;
  pc->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (pc->evfd < 0) {
    rc = dlock_seterr(DLOCK_ENOMEM, "postgres: eventfd: %s", strerror(errno));
    goto fail;
  }
  /* Connect now, so a wrong address, password or pooler fails here; the
   * connection then serves the first locks. */
  pg_conn *cn;
  if ((rc = conn_get(pc, 0, &cn)) < 0)
    goto fail;
  pc->pooled = cn->pid != PQbackendPID(cn->pg);
  conn_put(pc, cn, 0);
  if (pc->mode == DLOCK__PG_LEASE) {
    bc->caps = (bc->caps & (DLOCK_CAP_LIST | DLOCK_CAP_BREAK)) | DLOCK_CAP_FENCING |
               DLOCK_CAP_SERVER_TTL | DLOCK_CAP_CROSS_HOST | DLOCK_CAP_CROSS_PROCESS |
               DLOCK_CAP_HOLDER_INFO;
    if (!pc->pooled)
      bc->caps |= DLOCK_CAP_NATIVE_WAIT;
  } else {
    bc->caps &= ~DLOCK_CAP_LIST; /* keys are kept as hashes: see adv_list */
  }
  if ((rc = ensure_schema(pc)) < 0)
    goto fail;
  if (pthread_create(&pc->mon, NULL, monitor_main, pc) != 0) {
    rc = dlock_seterr(DLOCK_ENOMEM, "postgres: cannot start the monitor thread");
    goto fail;
  }
  pc->mon_started = 1;
  return 0;
fail:
  client_free(pc);
  return rc;
}

static void pg_close(dlock_backend_client *bc) {
  client_free(bc->priv);
}

/* ---- advisory mode ---- */

/* Send all of BUF on the probe socket FD by DEADLINE_NS: 0 or -1. */
static int probe_send(int fd, const char *buf, size_t n, int64_t deadline_ns) {
  size_t o = 0;
  while (o < n) {
    ssize_t w = send(fd, buf + o, n - o, MSG_NOSIGNAL);
    if (w > 0) {
      o += (size_t)w;
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return -1;
    if (wait_fd(fd, POLLOUT, deadline_ns) <= 0)
      return -1;
  }
  return 0;
}

/* A grant is reported only once the postmaster is seen letting a new
 * connection in after it: 0, or DLOCK_ECONN.
 *
 * A server shutting down ends every session, and so frees every advisory
 * lock, while a waiter whose session it has not ended yet can still be
 * granted one and answer; the holder whose session ended first learns it
 * only when its socket tells it, a moment later, and until then says HELD.
 * In every shutdown mode the postmaster refuses new connections (57P03)
 * from before it ends the first session, so a connection it admits after
 * the grant proves that the lock was not freed by a shutdown.  This asks
 * only for the postmaster's first answer, on a connection to the address
 * CN's session reaches: no password is sent and no session is set up.
 * It costs the server a process start per grant (a try that took 0.1-0.2
 * ms takes 2-3 ms); ?confirm_grants=false gives that up, and with it this
 * promise, to callers whose resource checks fencing tokens. */
static int confirm_grant(pg_client *pc, pg_conn *cn, const char *key) {
  struct sockaddr_storage sa;
  socklen_t sl = sizeof sa;
  char pkt[1100];
  int n = dlock__pg_startup_packet(PQuser(cn->pg), PQdb(cn->pg), pkt, sizeof pkt);
  if (n < 0)
    return n;
  if (getpeername(cn->fd, (struct sockaddr *)&sa, &sl) < 0)
    return dlock_seterr(DLOCK_ECONN, "postgres: lock '%s': the session's address: %s", key,
                        strerror(errno));
  int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return dlock_seterr(DLOCK_ECONN, "postgres: lock '%s': socket: %s", key, strerror(errno));
  int64_t dl = deadline_after(pc->timeout_ms);
  int rc = DLOCK__PG_NEED_MORE, auth_ok = 0, err = 0;
  if (connect(fd, (struct sockaddr *)&sa, sl) < 0 && errno != EINPROGRESS)
    err = errno;
  if (!err) {
    socklen_t el = sizeof err;
    if (wait_fd(fd, POLLOUT, dl) <= 0)
      err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
      err = errno;
  }
  if (!err && probe_send(fd, pkt, (size_t)n, dl) < 0)
    err = errno ? errno : ETIMEDOUT;
  unsigned char in[8192];
  size_t got = 0;
  while (!err && rc == DLOCK__PG_NEED_MORE) {
    ssize_t r = recv(fd, in + got, sizeof in - got, 0);
    if (r > 0) {
      got += (size_t)r;
      rc = dlock__pg_first_reply(in, got, &auth_ok);
      if (rc == DLOCK__PG_NEED_MORE && got == sizeof in)
        rc = dlock_seterr(DLOCK_EBACKEND, "postgres: first message too long");
    } else if (r == 0) {
      err = ECONNRESET;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      err = errno;
    } else if (wait_fd(fd, POLLIN, dl) <= 0) {
      err = ETIMEDOUT;
    }
  }
  if (rc == 1 && auth_ok) {
    /* No password asked (trust): a session is starting; end it politely
     * rather than leave the server a reset connection to log. */
    static const char terminate[5] = {'X', 0, 0, 0, 4};
    if (probe_send(fd, terminate, sizeof terminate, dl) == 0 && shutdown(fd, SHUT_WR) == 0)
      while (wait_fd(fd, POLLIN, dl) > 0 && recv(fd, in, sizeof in, 0) > 0) {
      }
  }
  close(fd);
  if (rc == 1)
    return 0;
  if (rc == 0)
    return dlock_seterr(DLOCK_ECONN,
                        "postgres: lock '%s' was granted while %s refused new connections "
                        "(shutting down, or not yet up): not taken",
                        key, pc->where);
  if (err)
    return dlock_seterr(DLOCK_ECONN,
                        "postgres: lock '%s' was granted, but whether %s is shutting down "
                        "could not be told: %s",
                        key, pc->where, strerror(err));
  return dlock_seterr(DLOCK_ECONN,
                      "postgres: lock '%s' was granted, but whether %s is shutting down could "
                      "not be told: %s",
                      key, pc->where, dlock_client_errmsg(NULL));
}


/* After the lock statement on CN.  Any failure once the server granted the
 * lock sets *broken: ending the session is the one sure way to give the
 * lock back, since the core will not release a failed acquire. */
static int adv_result(pg_client *pc, pg_conn *cn, dlock_backend_lock *bl, PGresult *r,
                      int64_t key, int *broken) {
  int rc;
  if (PQntuples(r) != 1)
    rc = dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply to the lock statement");
  else if (PQgetisnull(r, 0, 0))
    rc = dlock_seterr(DLOCK_EBUSY, "'%s' is held by another owner", bl->key);
  else {
    int64_t t;
    rc = dlock__pg_parse_i64(PQgetvalue(r, 0, 0), &t);
    if (rc == 0 && pc->confirm && (rc = confirm_grant(pc, cn, bl->key)) < 0) {
      /* Give back this key alone: the session may carry other locks, and
       * a probe that failed for want of a descriptor or of time says
       * nothing against them (in a shutdown the server ends them itself).
       * Only if the unlock fails does the session go, and the lock with it. */
      char why[512];
      snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
      char kbuf[24];
      snprintf(kbuf, sizeof kbuf, "%" PRId64, key);
      const char *params[1] = {kbuf};
      PGresult *u = NULL;
      if (run(pc, cn->pg, "unlock", pc->sql[DLOCK__PG_SQL_ADV_UNLOCK], 1, params,
              deadline_after(pc->timeout_ms), &u, broken) == 0)
        PQclear(u);
      else
        *broken = 1;
      rc = dlock_seterr(DLOCK_ECONN, "%s", why);
    }
    if (rc == 0) {
      bl->token = (uint64_t)t;
      pg_lock *pl = bl->priv;
      pl->conn = cn;
      pl->key = key;
      pl->expires_ns = bl->sent_ns + bl->ttl_ms * 1000000;
      pl->expired = 0;
      /* A longer lease than this session was set up for: lengthen its
       * keepalives first. */
      rc = session_settings(pc, cn, bl->ttl_ms, broken);
      pthread_mutex_lock(&pc->mu);
      if (rc == 0)
        rc = held_add(cn, bl);
      pc->last_held_ns = dlock_backend_now_ns();
      int wake = pc->mon_sleeping;
      pc->mon_sleeping = 0;
      pthread_mutex_unlock(&pc->mu);
      if (wake)
        wake_monitor(pc);
      if (rc < 0) {
        pl->conn = NULL;
        *broken = 1;
      }
    }
  }
  PQclear(r);
  return rc;
}

static int adv_key_param(pg_client *pc, dlock_backend_lock *bl, int64_t *key, char *buf,
                         size_t len) {
  *key = dlock__pg_advisory_key(pc->names.prefix, bl->key, bl->keylen);
  snprintf(buf, len, "%" PRId64, *key);
  return 0;
}

static int adv_try(pg_client *pc, dlock_backend_lock *bl) {
  int64_t key;
  char kbuf[24];
  adv_key_param(pc, bl, &key, kbuf, sizeof kbuf);
  pg_conn *cn;
  int rc = conn_get(pc, 0, &cn);
  if (rc < 0)
    return rc;
  const char *params[1] = {kbuf};
  PGresult *r;
  int broken = 0;
  bl->sent_ns = dlock_backend_now_ns();
  rc = run(pc, cn->pg, "try-lock", pc->sql[DLOCK__PG_SQL_ADV_TRY], 1, params,
           deadline_after(pc->timeout_ms), &r, &broken);
  if (rc == 0)
    rc = adv_result(pc, cn, bl, r, key, &broken);
  else
    broken = 1; /* a failed statement may still have taken the session lock */
  conn_put(pc, cn, broken);
  return rc;
}

static int adv_wait(pg_client *pc, dlock_backend_lock *bl, int64_t deadline_ns) {
  int64_t key;
  char kbuf[24], tbuf[24];
  adv_key_param(pc, bl, &key, kbuf, sizeof kbuf);
  pg_conn *cn;
  int rc = conn_get(pc, 1, &cn);
  if (rc < 0)
    return rc;
  int64_t left = ms_left(deadline_ns);
  /* 0 = no lock_timeout; the deadline is never rounded down to it. */
  if (left > INT32_MAX)
    left = INT32_MAX; /* lock_timeout's limit; the caller waits again */
  snprintf(tbuf, sizeof tbuf, "%lld", (long long)(left < 0 ? 0 : left < 1 ? 1 : left));
  const char *params[2] = {kbuf, tbuf};
  PGresult *r;
  int broken = 0;
  /* The server ends the wait at the deadline; the client allows one
   * request timeout more for its answer before calling the link dead. */
  int64_t io_dl = deadline_ns < 0 ? -1 : deadline_ns + pc->timeout_ms * 1000000;
  bl->sent_ns = dlock_backend_now_ns();
  rc = run(pc, cn->pg, "waiting for the lock", pc->sql[DLOCK__PG_SQL_ADV_WAIT], 2, params,
           io_dl, &r, &broken);
  if (rc == 0) {
    /* The grant counts from when it came, not from when we asked. */
    bl->sent_ns = dlock_backend_now_ns();
    rc = adv_result(pc, cn, bl, r, key, &broken);
  } else if (rc == DLOCK_ETIMEDOUT && strcmp(last_state, "55P03") == 0) {
    rc = dlock_seterr(DLOCK_ETIMEDOUT, "timed out waiting for '%s'", bl->key);
  } else {
    broken = 1; /* a failed statement may still have taken the session lock */
  }
  conn_put(pc, cn, broken);
  return rc;
}

/* Pin the session that holds BL, or DLOCK_ELOST if it is gone. */
static int adv_conn(pg_client *pc, dlock_backend_lock *bl, pg_conn **out) {
  pg_lock *pl = bl->priv;
  pg_conn *cn = pl->conn;
  if (!cn)
    return dlock_seterr(DLOCK_ELOST, "postgres: lock '%s' has no session", bl->key);
  pthread_mutex_lock(&pc->mu);
  cn->users++;
  pthread_mutex_unlock(&pc->mu);
  pthread_mutex_lock(&cn->mu);
  *out = cn;
  if (!cn->pg) {
    conn_put(pc, cn, 1);
    return dlock_seterr(DLOCK_ELOST,
                        "postgres: the session holding '%s' ended, and the server released it",
                        bl->key);
  }
  return 0;
}

static int adv_release(pg_client *pc, dlock_backend_lock *bl) {
  pg_lock *pl = bl->priv;
  pg_conn *cn;
  /* Claimed under the mutex, so the monitor cannot give it back too: a
   * second unlock could free a later acquisition of the same key on the
   * same session. */
  pthread_mutex_lock(&pc->mu);
  int expired = pl->expired;
  pl->expired = 1;
  pthread_mutex_unlock(&pc->mu);
  int rc = expired ? dlock_seterr(DLOCK_ELOST, "postgres: the lease on '%s' ran out and the "
                                               "lock was given back",
                                  bl->key)
                   : adv_conn(pc, bl, &cn);
  if (rc == 0) {
    char kbuf[24];
    snprintf(kbuf, sizeof kbuf, "%" PRId64, pl->key);
    const char *params[1] = {kbuf};
    PGresult *r;
    int broken = 0;
    rc = run(pc, cn->pg, "unlock", pc->sql[DLOCK__PG_SQL_ADV_UNLOCK], 1, params,
             deadline_after(pc->timeout_ms), &r, &broken);
    if (rc == 0) {
      int ok = 0;
      rc = PQntuples(r) == 1 ? dlock__pg_parse_bool(PQgetvalue(r, 0, 0), &ok)
                             : dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected unlock reply");
      PQclear(r);
      if (rc == 0 && !ok)
        rc = dlock_seterr(DLOCK_ELOST, "postgres: the session no longer held '%s'", bl->key);
    } else if (broken) {
      /* The session is gone, and with it the lock; whether it went before
       * or after this request, it was not ours to the end. */
      rc = dlock_seterr(DLOCK_ELOST, "postgres: the session holding '%s' broke: %s", bl->key,
                        dlock_client_errmsg(NULL));
    } else {
      /* The unlock failed but the session is sound: ending it is what
       * surely gives the lock back. */
      broken = 1;
      rc = 0;
    }
    pthread_mutex_lock(&pc->mu);
    held_remove(cn, bl);
    pthread_mutex_unlock(&pc->mu);
    conn_put(pc, cn, broken);
  } else if (pl->conn) {
    pthread_mutex_lock(&pc->mu);
    held_remove(pl->conn, bl);
    int dispose = conn_disposable(pc, pl->conn);
    if (dispose)
      conn_unlink(pc, pl->conn);
    pthread_mutex_unlock(&pc->mu);
    if (dispose)
      conn_free(pl->conn);
  }
  pl->conn = NULL;
  return rc;
}

/* One statement per session proves every lock on it still held: the locks
 * last as long as the session, and the process id shows it is the same
 * one. */
static int adv_renew_many(pg_client *pc, dlock_backend_lock **bls, size_t n, int *rcs) {
  for (size_t i = 0; i < n; i++)
    rcs[i] = 1; /* not done yet */
  for (size_t i = 0; i < n; i++) {
    if (rcs[i] != 1)
      continue;
    pg_lock *pl = bls[i]->priv;
    pg_conn *cn;
    /* One ping answers for every lock of the session: bounded by the
     * latest of their deadlines, and the session kept at least the longest
     * of their leases. */
    int64_t io_dl = 0, ttl = 0;
    int unbounded = 0;
    for (size_t j = i; j < n; j++) {
      pg_lock *pj = bls[j]->priv;
      if (rcs[j] == 1 && pj->conn == pl->conn) {
        if (bls[j]->io_deadline_ns <= 0)
          unbounded = 1;
        else if (bls[j]->io_deadline_ns > io_dl)
          io_dl = bls[j]->io_deadline_ns;
        if (bls[j]->ttl_ms > ttl)
          ttl = bls[j]->ttl_ms;
      }
    }
    if (unbounded)
      io_dl = 0;
    int rc = adv_conn(pc, bls[i], &cn);
    int64_t sent = dlock_backend_now_ns();
    int64_t dl = earlier(io_dl > 0 ? io_dl : -1, deadline_after(pc->timeout_ms));
    if (rc == 0 && io_dl > 0 && sent >= io_dl) {
      /* Too late to ask; the session itself may be fine. */
      conn_put(pc, cn, 0);
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "postgres: renew of '%s': no time left", bls[i]->key);
    } else if (rc == 0) {
      PGresult *r;
      int broken = 0;
      rc = session_settings(pc, cn, ttl, &broken);
      if (rc == 0)
        rc = run(pc, cn->pg, "renew", pc->sql[DLOCK__PG_SQL_PING], 0, NULL, dl, &r, &broken);
      if (rc == 0) {
        int64_t pid = 0;
        rc = PQntuples(r) == 1 ? dlock__pg_parse_i64(PQgetvalue(r, 0, 0), &pid)
                               : dlock_seterr(DLOCK_EBACKEND, "postgres: no backend pid");
        PQclear(r);
        if (rc == 0 && pid != cn->pid) {
          rc = dlock_seterr(DLOCK_ELOST, "postgres: the session holding '%s' was replaced",
                            bls[i]->key);
          broken = 1;
        }
      } else if (broken) {
        rc = dlock_seterr(DLOCK_ELOST, "postgres: the session holding '%s' broke: %s",
                          bls[i]->key, dlock_client_errmsg(NULL));
      }
      conn_put(pc, cn, broken);
    }
    pthread_mutex_lock(&pc->mu);
    for (size_t j = i; j < n; j++) {
      pg_lock *pj = bls[j]->priv;
      if (rcs[j] == 1 && pj->conn == pl->conn) {
        rcs[j] = rc;
        if (rc == 0 && pj->expired)
          rcs[j] = DLOCK_ELOST;
        if (rc == 0 && !pj->expired) {
          bls[j]->sent_ns = sent;
          pj->expires_ns = sent + bls[j]->ttl_ms * 1000000;
        }
      }
    }
    pthread_mutex_unlock(&pc->mu);
  }
  return 0;
}

static int adv_inspect(pg_client *pc, const char *key, size_t keylen, dlock_info *info) {
  int64_t k = dlock__pg_advisory_key(pc->names.prefix, key, keylen);
  uint32_t cls, obj;
  dlock__pg_advisory_split(k, &cls, &obj);
  char a[16], b[16];
  snprintf(a, sizeof a, "%" PRIu32, cls);
  snprintf(b, sizeof b, "%" PRIu32, obj);
  const char *params[2] = {a, b};
  PGresult *r;
  int rc = run_any(pc, "inspect", pc->sql[DLOCK__PG_SQL_ADV_INSPECT], 2, params,
                   deadline_after(pc->timeout_ms), &r);
  if (rc == 0) {
    info->held = PQntuples(r) > 0;
    info->ttl_ms = -1; /* held for as long as the holder's session lasts */
    if (info->held)
      snprintf(info->label, sizeof info->label, "server process %s", PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  return rc;
}

/* ---- lease mode ---- */

static int lease_refence(pg_client *pc, dlock_backend_lock *bl);
static void lease_gc(pg_client *pc);

static int lease_try(pg_client *pc, dlock_backend_lock *bl) {
  char ttl[24];
  snprintf(ttl, sizeof ttl, "%lld", (long long)bl->ttl_ms);
  const char *params[4] = {bl->key, bl->owner, ttl, bl->label};
  PGresult *r;
  bl->sent_ns = dlock_backend_now_ns();
  int rc = run_any(pc, "acquire", pc->sql[DLOCK__PG_SQL_LEASE_TRY], 4, params,
                   deadline_after(pc->timeout_ms), &r);
  if (rc < 0)
    return rc;
  if (PQntuples(r) != 1) {
    rc = dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply to acquire");
  } else {
    rc = dlock__pg_decode_lease_try(PQgetisnull(r, 0, 0) ? NULL : PQgetvalue(r, 0, 0),
                                    PQgetisnull(r, 0, 1) ? NULL : PQgetvalue(r, 0, 1),
                                    &bl->token, &bl->holder_ttl_ms);
    int fresh = 1;
    if (rc == 0)
      rc = dlock_seterr(DLOCK_EBUSY, "'%s' is held by another owner", bl->key);
    else if (rc == 1)
      rc = PQnfields(r) == 3 && !PQgetisnull(r, 0, 2)
               ? dlock__pg_parse_bool(PQgetvalue(r, 0, 2), &fresh)
               : dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply to acquire");
    PQclear(r);
    if (rc == 0 && !fresh)
      rc = lease_refence(pc, bl);
    if (rc == 0)
      lease_gc(pc);
    return rc;
  }
  PQclear(r);
  return rc;
}

/* The lease is ours, but its statement ran so long that its token may
 * predate a deleted row of the same name: draw it again, now that the row
 * is held. */
static int lease_refence(pg_client *pc, dlock_backend_lock *bl) {
  const char *params[2] = {bl->key, bl->owner};
  PGresult *r;
  int rc = run_any(pc, "acquire", pc->sql[DLOCK__PG_SQL_LEASE_REFENCE], 2, params,
                   deadline_after(pc->timeout_ms), &r);
  if (rc < 0)
    return rc;
  int64_t t = 0;
  if (PQntuples(r) != 1)
    rc = dlock_seterr(DLOCK_ETIMEDOUT, "postgres: the lease on '%s' ran out while it was taken",
                      bl->key);
  else if ((rc = dlock__pg_parse_i64(PQgetvalue(r, 0, 0), &t)) == 0)
    bl->token = (uint64_t)t;
  PQclear(r);
  return rc;
}

/* Delete lease rows that ended a grace ago, a batch at a time, on the
 * caller's thread after an acquire or a release: at most one statement per
 * GC_PERIOD_MS per client, or one per call while a whole batch was due, so
 * that the rows left are the names used within the grace plus at most a
 * batch.  Its failure is no failure of the caller's operation. */
static void lease_gc(pg_client *pc) {
  int64_t now = dlock_backend_now_ns();
  pthread_mutex_lock(&pc->mu);
  int go = pc->gc && !pc->gc_busy && now >= pc->gc_next_ns;
  if (go)
    pc->gc_busy = 1;
  pthread_mutex_unlock(&pc->mu);
  if (!go)
    return;
  char grace[24], batch[24];
  snprintf(grace, sizeof grace, "%lld", (long long)DLOCK__PG_GRACE_MS(pc->bc->default_ttl_ms));
  snprintf(batch, sizeof batch, "%d", GC_BATCH);
  const char *params[2] = {grace, batch};
  PGresult *r;
  int64_t gone = 0, stamped = 0;
  char saved[512];
  snprintf(saved, sizeof saved, "%s", dlock_client_errmsg(NULL));
  /* It runs on the caller's thread after its own operation (or on the
   * renew thread after a give-back): a batch through the index takes
   * milliseconds, and one that takes longer waits for a later call rather
   * than holding up this one a whole timeout. */
  int64_t bound = pc->timeout_ms < GC_MAX_MS ? pc->timeout_ms : GC_MAX_MS;
  if (run_any(pc, "clean-up", pc->sql[DLOCK__PG_SQL_LEASE_GC], 2, params,
              deadline_after(bound), &r) == 0) {
    if (PQntuples(r) == 1 && PQnfields(r) == 2) {
      dlock__pg_parse_i64(PQgetvalue(r, 0, 0), &gone);
      dlock__pg_parse_i64(PQgetvalue(r, 0, 1), &stamped);
    }
    PQclear(r);
  }
  /* The caller's message stays the one of its own operation. */
  dlock_seterr(0, "%s", saved);
  pthread_mutex_lock(&pc->mu);
  pc->gc_busy = 0;
  pc->gc_next_ns = gone >= GC_BATCH || stamped >= GC_BATCH
                       ? now
                       : dlock_backend_now_ns() + GC_PERIOD_MS * 1000000LL;
  pthread_mutex_unlock(&pc->mu);
}

/* Make sure a LISTEN connection is up, so that a release after this point
 * wakes the waiters. */
static int listener_ensure(pg_client *pc) {
  pthread_mutex_lock(&pc->lmu);
  pthread_mutex_lock(&pc->mu);
  int have = pc->listener != NULL;
  pthread_mutex_unlock(&pc->mu);
  int rc = 0;
  if (!have) {
    PGconn *l;
    rc = connect_pg(pc, &l);
    if (rc == 0) {
      PGresult *r;
      int broken = 0;
      rc = run(pc, l, "LISTEN", pc->sql[DLOCK__PG_SQL_LISTEN], 0, NULL,
               deadline_after(pc->timeout_ms), &r, &broken);
      if (rc == 0) {
        PQclear(r);
        pthread_mutex_lock(&pc->mu);
        pc->listener = l;
        pthread_mutex_unlock(&pc->mu);
        wake_monitor(pc);
      } else {
        PQfinish(l);
      }
    }
  }
  pthread_mutex_unlock(&pc->lmu);
  return rc;
}

static int lease_acquire(pg_client *pc, dlock_backend_lock *bl, int64_t deadline_ns) {
  int rc = lease_try(pc, bl);
  if (rc != DLOCK_EBUSY)
    return rc;
  pg_waiter w = {.key = bl->key};
  pthread_mutex_lock(&pc->mu);
  w.next = pc->waiters;
  pc->waiters = &w;
  pthread_mutex_unlock(&pc->mu);
  int64_t pause_ms = POLL_MIN_MS;
  for (;;) {
    if (deadline_ns >= 0 && dlock_backend_now_ns() >= deadline_ns) {
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "timed out waiting for '%s'", bl->key);
      break;
    }
    int notified = 0;
    if (!pc->pooled) {
      rc = listener_ensure(pc);
      if (rc < 0)
        break;
      notified = 1;
    }
    bl->holder_ttl_ms = -1;
    rc = lease_try(pc, bl);
    if (rc != DLOCK_EBUSY)
      break;
    /* Expiry sends nothing: wake when the holder's lease ends, whatever
     * else happens.  Behind a pooler there is no NOTIFY: back off. */
    int64_t cap = bl->holder_ttl_ms >= 0 ? bl->holder_ttl_ms + 1 : (notified ? 1000 : pause_ms);
    if (!notified) {
      int64_t jitter = (int64_t)dlock__random_below((uint64_t)pause_ms / 2 + 1);
      cap = cap < pause_ms ? cap : pause_ms - jitter;
      pause_ms = pause_ms * 2 > POLL_MAX_MS ? POLL_MAX_MS : pause_ms * 2;
    }
    int64_t until = earlier(deadline_ns, deadline_after(cap));
    struct timespec ts;
    dlock__ns_to_timespec(until, &ts);
    pthread_mutex_lock(&pc->mu);
    while (!w.fired && dlock_backend_now_ns() < until)
      if (pthread_cond_timedwait(&pc->cv, &pc->mu, &ts) == ETIMEDOUT)
        break;
    w.fired = 0;
    pthread_mutex_unlock(&pc->mu);
  }
  pthread_mutex_lock(&pc->mu);
  for (pg_waiter **p = &pc->waiters; *p; p = &(*p)->next)
    if (*p == &w) {
      *p = w.next;
      break;
    }
  pthread_mutex_unlock(&pc->mu);
  return rc;
}

static int lease_renew_batch(pg_client *pc, dlock_backend_lock **bls, size_t n, int *rcs) {
  const char **names = malloc(n * sizeof *names), **owners = malloc(n * sizeof *owners);
  int64_t *ttls = malloc(n * sizeof *ttls);
  char *an = NULL, *ao = NULL, *at = NULL;
  int rc = 0;
  if (!names || !owners || !ttls) {
    rc = dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
    goto out;
  }
  int64_t dl = deadline_after(pc->timeout_ms);
  for (size_t i = 0; i < n; i++) {
    names[i] = bls[i]->key;
    owners[i] = bls[i]->owner;
    ttls[i] = bls[i]->ttl_ms;
    if (bls[i]->io_deadline_ns > 0)
      dl = earlier(dl, bls[i]->io_deadline_ns);
  }
  an = dlock__pg_text_array(names, n);
  ao = dlock__pg_text_array(owners, n);
  at = dlock__pg_int_array(ttls, n);
  if (!an || !ao || !at) {
    rc = dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
    goto out;
  }
  const char *params[3] = {an, ao, at};
  PGresult *r;
  int64_t sent = dlock_backend_now_ns();
  rc = run_any(pc, "renew", pc->sql[DLOCK__PG_SQL_LEASE_RENEW], 3, params, dl, &r);
  if (rc < 0)
    goto out;
  for (size_t i = 0; i < n; i++)
    rcs[i] = DLOCK_ELOST;
  for (int row = 0; row < PQntuples(r); row++) {
    char hex[33];
    if (dlock__pg_uuid_to_hex(PQgetvalue(r, row, 0), hex) < 0)
      continue;
    for (size_t i = 0; i < n; i++)
      if (strcmp(bls[i]->owner, hex) == 0) {
        rcs[i] = 0;
        bls[i]->sent_ns = sent;
      }
  }
  PQclear(r);
  for (size_t i = 0; i < n; i++)
    if (rcs[i] == DLOCK_ELOST)
      rcs[i] = dlock_seterr(DLOCK_ELOST, "postgres: the lease on '%s' expired or was taken",
                            bls[i]->key);
out:
  free(names);
  free(owners);
  free(ttls);
  free(an);
  free(ao);
  free(at);
  return rc;
}

static int lease_release(pg_client *pc, dlock_backend_lock *bl) {
  const char *params[2] = {bl->key, bl->owner};
  PGresult *r;
  int rc = run_any(pc, "release", pc->sql[DLOCK__PG_SQL_LEASE_RELEASE], 2, params,
                   deadline_after(pc->timeout_ms), &r);
  if (rc < 0)
    return rc;
  lease_gc(pc);
  if (PQntuples(r) == 0)
    rc = dlock_seterr(DLOCK_ELOST,
                      "postgres: the lease on '%s' had expired or passed to another owner",
                      bl->key);
  PQclear(r);
  return rc;
}

static int lease_inspect(pg_client *pc, const char *key, dlock_info *info) {
  const char *params[1] = {key};
  PGresult *r;
  int rc = run_any(pc, "inspect", pc->sql[DLOCK__PG_SQL_LEASE_INSPECT], 1, params,
                   deadline_after(pc->timeout_ms), &r);
  if (rc < 0)
    return rc;
  info->held = PQntuples(r) > 0;
  info->ttl_ms = -1;
  if (info->held) {
    const char *row[4] = {PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                          PQgetvalue(r, 0, 3)};
    rc = dlock__pg_decode_lease_inspect(row, info);
  }
  PQclear(r);
  return rc;
}

/* ---- listing and breaking ---- */

static int adv_list(pg_client *pc) {
  return dlock_seterr(DLOCK_ENOTSUP,
                      "postgres: %s keeps each advisory lock only as a 64-bit hash of its key "
                      "(pg_locks shows numbers), which cannot be turned back into keys, so its "
                      "locks cannot be listed; ?mode=lease keeps them by name",
                      pc->where);
}

/* Held rows a page at a time, handed over once each page is read, so that
 * EMIT may call into the client (a break of each lock listed). */
static int lease_list(pg_client *pc, const char *prefix, size_t prefixlen,
                      dlock_backend_emit_fn emit, void *ud) {
  long tl = dlock__pg_prefix_text_len(prefix, prefixlen);
  if (tl < 0)
    return 0; /* no UTF-8 key begins with these bytes */
  char *text = strndup(prefix, (size_t)tl), *after = strdup("");
  char limit[16];
  snprintf(limit, sizeof limit, "%d", LIST_BATCH);
  int rc = text && after ? 0 : dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
  while (rc == 0) {
    const char *params[3] = {after, text, limit};
    PGresult *r;
    rc = run_any(pc, "list", pc->sql[DLOCK__PG_SQL_LEASE_LIST], 3, params,
                 deadline_after(pc->timeout_ms), &r);
    if (rc < 0)
      break;
    int n = PQntuples(r);
    if (n > 0 && PQnfields(r) != 5)
      rc = dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply to list");
    for (int i = 0; i < n && rc == 0; i++) {
      const char *name = PQgetvalue(r, i, 0);
      size_t len = (size_t)PQgetlength(r, i, 0);
      if (len < prefixlen || memcmp(name, prefix, prefixlen) != 0)
        continue;
      const char *row[4] = {PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                            PQgetvalue(r, i, 4)};
      dlock_info info;
      memset(&info, 0, sizeof info);
      if (dlock__pg_decode_lease_inspect(row, &info) < 0)
        rc = dlock_seterr(DLOCK_EBACKEND, "postgres: list: unexpected row for '%.*s'",
                          (int)(len > 200 ? 200 : len), name);
      else
        rc = emit(ud, name, len, &info);
    }
    int more = rc == 0 && n == LIST_BATCH;
    if (more) {
      free(after);
      after = strdup(PQgetvalue(r, n - 1, 0));
      if (!after)
        rc = dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
    }
    PQclear(r);
    if (!more)
      break;
  }
  free(text);
  free(after);
  return rc;
}

/* One statement checks the holder and ends its lease (see
 * DLOCK__PG_SQL_LEASE_BREAK). */
static int lease_break(pg_client *pc, const char *key, const dlock_info *holder,
                       dlock_info *broken) {
  char tok[24];
  snprintf(tok, sizeof tok, "%" PRIu64, holder->token);
  /* An owner that is no uuid names no holder, yet must not make the
   * server refuse the statement: it is then busy or free like any other. */
  const char *owner = !holder->owner[0] || dlock__pg_owner_text_ok(holder->owner)
                          ? holder->owner
                          : "not-an-owner";
  const char *params[3] = {key, owner, tok};
  PGresult *r;
  int rc = run_any(pc, "break", pc->sql[DLOCK__PG_SQL_LEASE_BREAK], 3, params,
                   deadline_after(pc->timeout_ms), &r);
  if (rc < 0)
    return rc;
  int n = PQntuples(r), ok = 0;
  dlock_info info;
  memset(&info, 0, sizeof info);
  if (n == 1 && PQnfields(r) == 6) {
    const char *row[4] = {PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3),
                          PQgetvalue(r, 0, 4)};
    if (dlock__pg_parse_bool(PQgetvalue(r, 0, 0), &ok) < 0 ||
        dlock__pg_decode_lease_inspect(row, &info) < 0)
      rc = dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply to break");
  } else if (n != 0) {
    rc = dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply to break");
  }
  PQclear(r);
  if (rc < 0)
    return rc;
  if (n == 0) {
    broken->held = 0;
    return 0;
  }
  if (!ok)
    return dlock_seterr(DLOCK_EBUSY,
                        "postgres: '%s' is held by another holder (token %" PRIu64
                        ") than the one named: not broken",
                        key, info.token);
  *broken = info;
  lease_gc(pc);
  return 0;
}

/* A lock this client holds is given back on its own session, which keeps
 * its other locks: 0 with *BROKEN, DLOCK_EBUSY when HOLDER names another
 * holder, 1 when no lock of this client has KEY. */
static int adv_break_own(pg_client *pc, const char *key, size_t keylen, int64_t k,
                         const dlock_info *holder, dlock_info *broken) {
  dlock_backend_lock *bl = NULL;
  pg_conn *cn = NULL;
  pthread_mutex_lock(&pc->mu);
  for (pg_conn *o = pc->conns; o && !bl; o = o->next)
    for (size_t i = 0; i < o->nheld; i++) {
      dlock_backend_lock *h = o->held[i];
      pg_lock *pl = h->priv;
      if (pl->key == k && !pl->expired && !o->dead && h->keylen == keylen &&
          memcmp(h->key, key, keylen) == 0) {
        bl = h;
        cn = o;
        break;
      }
    }
  if (!bl) {
    pthread_mutex_unlock(&pc->mu);
    return 1;
  }
  if ((holder->owner[0] && !dlock__pg_owner_names(holder->owner, bl->owner)) ||
      (!holder->owner[0] && holder->token && holder->token != bl->token)) {
    uint64_t t = bl->token;
    pthread_mutex_unlock(&pc->mu);
    return dlock_seterr(DLOCK_EBUSY,
                        "postgres: '%s' is held by another holder (token %" PRIu64
                        ") than the one named: not broken",
                        key, t);
  }
  /* Claimed as the monitor claims an expired lock: the holder's renewal
   * and release find it gone, and nothing unlocks it twice. */
  pg_lock *pl = bl->priv;
  pl->expired = 1;
  int64_t key64 = pl->key;
  memset(broken, 0, sizeof *broken);
  broken->held = 1;
  broken->token = bl->token;
  broken->ttl_ms = -1;
  snprintf(broken->owner, sizeof broken->owner, "%s", bl->owner);
  snprintf(broken->label, sizeof broken->label, "%s", bl->label);
  cn->users++;
  pthread_mutex_unlock(&pc->mu);
  pthread_mutex_lock(&cn->mu);
  int gone = 0;
  if (cn->pg) {
    char kbuf[24];
    snprintf(kbuf, sizeof kbuf, "%" PRId64, key64);
    const char *params[1] = {kbuf};
    PGresult *r;
    int ok = 0;
    if (run(pc, cn->pg, "unlock", pc->sql[DLOCK__PG_SQL_ADV_UNLOCK], 1, params,
            deadline_after(pc->timeout_ms), &r, &gone) == 0) {
      if (PQntuples(r) != 1 || dlock__pg_parse_bool(PQgetvalue(r, 0, 0), &ok) < 0)
        ok = 0;
      PQclear(r);
    }
    /* Whatever kept the unlock from saying so, ending the session surely
     * gives the lock back (and reports its other locks lost). */
    if (!ok)
      gone = 1;
  }
  conn_put(pc, cn, gone);
  return 0;
}

/* Another session holds KEY: end it, unless it is one of this client's
 * (a lock being taken or given back as this runs).  0 with *BROKEN, 1 to
 * look again, or a negative code. */
static int adv_break_session(pg_client *pc, const char *key, int64_t k, int64_t want_pid,
                             int *last_pid, dlock_info *broken) {
  uint32_t cls, obj;
  dlock__pg_advisory_split(k, &cls, &obj);
  char a[16], b[16], wait[24], want[24];
  snprintf(a, sizeof a, "%" PRIu32, cls);
  snprintf(b, sizeof b, "%" PRIu32, obj);
  snprintf(wait, sizeof wait, "%lld", (long long)pc->timeout_ms);
  snprintf(want, sizeof want, "%" PRId64, want_pid);
  pthread_mutex_lock(&pc->mu);
  int64_t *pids = malloc((pc->nconns + 1) * sizeof *pids);
  size_t np = 0;
  for (pg_conn *o = pc->conns; pids && o; o = o->next)
    pids[np++] = o->pid;
  pthread_mutex_unlock(&pc->mu);
  char *spared = pids ? dlock__pg_int_array(pids, np) : NULL;
  free(pids);
  if (!spared)
    return dlock_seterr(DLOCK_ENOMEM, "postgres: out of memory");
  /* On a session that holds nothing, so the statement never ends its own
   * session, nor one of this client's that a lock is being taken on. */
  pg_conn *cn;
  int rc = conn_get(pc, 1, &cn);
  if (rc < 0) {
    free(spared);
    return rc;
  }
  int waits = PQserverVersion(cn->pg) >= 140000;
  const char *params[5] = {a, b, spared, waits ? wait : want, want};
  PGresult *r;
  int gone = 0;
  rc = run(pc, cn->pg, "break",
           pc->sql[waits ? DLOCK__PG_SQL_ADV_BREAK : DLOCK__PG_SQL_ADV_BREAK_NOWAIT],
           waits ? 5 : 4, params, deadline_after(2 * pc->timeout_ms), &r, &gone);
  conn_put(pc, cn, gone);
  free(spared);
  if (rc == DLOCK_EAUTH && strcmp(last_state, "42501") == 0)
    return dlock_seterr(DLOCK_EAUTH,
                        "postgres: '%s' is held by a session that the role of %s may not end: "
                        "that takes the holding role's privileges or pg_signal_backend (and "
                        "for a superuser's session, a superuser)",
                        key, pc->where);
  if (rc < 0)
    return rc;
  int n = PQntuples(r), own = 0, ended = 0, tried = 0;
  int64_t pid = 0;
  if (n > 0 && (PQnfields(r) != 3 || dlock__pg_parse_i64(PQgetvalue(r, 0, 0), &pid) < 0 ||
                dlock__pg_parse_bool(PQgetvalue(r, 0, 1), &own) < 0 ||
                (tried = !PQgetisnull(r, 0, 2),
                 tried && dlock__pg_parse_bool(PQgetvalue(r, 0, 2), &ended) < 0)))
    rc = dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply to break");
  PQclear(r);
  if (rc < 0)
    return rc;
  if (n == 0) {
    broken->held = 0;
    return 0;
  }
  if (want_pid && pid != want_pid && !own)
    return dlock_seterr(DLOCK_EBUSY,
                        "postgres: '%s' is held by server process %" PRId64
                        " now, not by %" PRId64 " as named: not broken",
                        key, pid, want_pid);
  if (own || !tried)
    return 1;
  if (!ended) {
    /* Gone before the signal reached it, or not gone in time: the next
     * look tells which. */
    if (*last_pid == pid)
      return dlock_seterr(DLOCK_ETIMEDOUT,
                          "postgres: the session holding '%s' (server process %" PRId64
                          ") was told to end but had not within %lld ms; its locks go when "
                          "it does",
                          key, pid, (long long)pc->timeout_ms);
    *last_pid = (int)pid;
    return 1;
  }
  memset(broken, 0, sizeof *broken);
  broken->held = 1;
  broken->ttl_ms = -1;
  snprintf(broken->label, sizeof broken->label, "server process %" PRId64, pid);
  return 0;
}

/* Advisory mode.  A lock of this client goes back on its own session.
 * Another's can only go with the session that holds it (the server frees
 * an advisory lock for nobody else), so breaking it ends that session
 * with pg_terminate_backend(), and every other lock the session holds
 * goes too: their holders see them LOST at once, as after any ended
 * session.  The server keeps no owner or token for a session's lock, so a
 * break that names its holder is refused unless the lock is this
 * client's own. */
static int adv_break(pg_client *pc, const char *key, size_t keylen, const dlock_info *holder,
                     dlock_info *broken) {
  int64_t k = dlock__pg_advisory_key(pc->names.prefix, key, keylen);
  int named = holder->owner[0] || holder->token;
  int last_pid = 0;
  /* What inspect showed of another client's holder: its session. */
  int64_t want_pid = 0;
  const char *sp = "server process ";
  if (strncmp(holder->label, sp, strlen(sp)) == 0 &&
      (dlock__pg_parse_i64(holder->label + strlen(sp), &want_pid) < 0 || want_pid <= 0))
    want_pid = 0;
  for (int attempt = 0; attempt < BREAK_ATTEMPTS; attempt++) {
    int rc = adv_break_own(pc, key, keylen, k, holder, broken);
    if (rc != 1)
      return rc;
    if (named) {
      dlock_info seen;
      memset(&seen, 0, sizeof seen);
      if ((rc = adv_inspect(pc, key, keylen, &seen)) < 0)
        return rc;
      if (!seen.held) {
        broken->held = 0;
        return 0;
      }
      return dlock_seterr(DLOCK_EBUSY,
                          "postgres: '%s' is held by %s, and advisory mode keeps no owner or "
                          "token for another client's lock to check the holder named against: "
                          "not broken (a break naming no holder ends that session)",
                          key, seen.label);
    }
    if ((rc = adv_break_session(pc, key, k, want_pid, &last_pid, broken)) != 1)
      return rc;
    /* Only the session the first look found: another came later. */
    if (!want_pid)
      want_pid = last_pid;
  }
  return dlock_seterr(DLOCK_EBUSY,
                      "postgres: '%s' kept changing hands (or was being taken or given back by "
                      "this client) while it was being broken: try again",
                      key);
}

/* ---- operations ---- */

static int pg_try_acquire(dlock_backend_client *bc, dlock_backend_lock *bl) {
  pg_client *pc = bc->priv;
  bl->holder_ttl_ms = -1;
  return pc->mode == DLOCK__PG_ADVISORY ? adv_try(pc, bl) : lease_try(pc, bl);
}

static int pg_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline_ns) {
  pg_client *pc = bc->priv;
  bl->holder_ttl_ms = -1;
  if (pc->mode == DLOCK__PG_LEASE)
    return lease_acquire(pc, bl, deadline_ns);
  /* Uncontended locks need no connection of their own: try first. */
  int rc = adv_try(pc, bl);
  if (rc != DLOCK_EBUSY)
    return rc;
  do {
    if (deadline_ns >= 0 && dlock_backend_now_ns() >= deadline_ns)
      return dlock_seterr(DLOCK_ETIMEDOUT, "timed out waiting for '%s'", bl->key);
    rc = adv_wait(pc, bl, deadline_ns);
  } while (rc == DLOCK_ETIMEDOUT);
  return rc;
}

static int pg_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                         int *rcs) {
  pg_client *pc = bc->priv;
  if (pc->mode == DLOCK__PG_ADVISORY)
    return adv_renew_many(pc, bls, n, rcs);
  for (size_t start = 0; start < n; start += RENEW_BATCH) {
    size_t m = n - start < RENEW_BATCH ? n - start : RENEW_BATCH;
    int rc = lease_renew_batch(pc, bls + start, m, rcs + start);
    if (rc < 0)
      return rc;
  }
  return 0;
}

static int pg_renew(dlock_backend_client *bc, dlock_backend_lock *bl) {
  int rcode = 0;
  dlock_backend_lock *one[1] = {bl};
  int rc = pg_renew_many(bc, one, 1, &rcode);
  return rc < 0 ? rc : rcode;
}

static int pg_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  pg_client *pc = bc->priv;
  return pc->mode == DLOCK__PG_ADVISORY ? adv_release(pc, bl) : lease_release(pc, bl);
}

static int pg_inspect(dlock_backend_client *bc, const char *key, size_t keylen,
                      dlock_info *info) {
  pg_client *pc = bc->priv;
  return pc->mode == DLOCK__PG_ADVISORY ? adv_inspect(pc, key, keylen, info)
                                        : lease_inspect(pc, key, info);
}

static int pg_list(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
                   dlock_backend_emit_fn emit, void *ud) {
  pg_client *pc = bc->priv;
  return pc->mode == DLOCK__PG_ADVISORY ? adv_list(pc)
                                        : lease_list(pc, prefix, prefixlen, emit, ud);
}

static int pg_force_release(dlock_backend_client *bc, const char *key, size_t keylen,
                            const dlock_info *holder, dlock_info *broken) {
  pg_client *pc = bc->priv;
  return pc->mode == DLOCK__PG_ADVISORY ? adv_break(pc, key, keylen, holder, broken)
                                        : lease_break(pc, key, holder, broken);
}

static const char *const pg_schemes[] = {"postgres", "postgresql", NULL};

const dlock_backend_ops dlock__pg_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "postgres",
    .schemes = pg_schemes,
    /* Advisory mode's; lease mode narrows them at open.  SERVER_TTL: a
     * session ends with its client, and the server is told to keep an
     * unreachable one at least a ttl, which bounds how long we may call a
     * lock held without hearing from the server. */
    .caps = DLOCK_CAP_FENCING | DLOCK_CAP_NATIVE_WAIT | DLOCK_CAP_FAIR | DLOCK_CAP_LOSS_DETECT |
            DLOCK_CAP_SERVER_TTL | DLOCK_CAP_CROSS_HOST | DLOCK_CAP_CROSS_PROCESS |
            DLOCK_CAP_LIST | DLOCK_CAP_BREAK,
    .client_size = sizeof(pg_client),
    .lock_size = sizeof(pg_lock),
    .open = pg_open,
    .close = pg_close,
    .try_acquire = pg_try_acquire,
    .acquire = pg_acquire,
    .renew = pg_renew,
    .release = pg_release,
    .renew_many = pg_renew_many,
    .inspect = pg_inspect,
    .control = NULL,
    .list = pg_list,
    .force_release = pg_force_release,
};
