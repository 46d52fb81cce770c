/* PostgreSQL backend: statements and connections, for both modes.  A
 * statement runs on a non-blocking libpq connection within a deadline, and
 * a failure becomes a dlock code with libpq's or the server's message,
 * secrets hidden.  The pool gives each short statement a connection
 * (shared past ACTIVE_MAX) and a blocking wait one of its own; a session
 * that holds locks (advisory mode's live in it) is kept while it does, and
 * one that breaks is closed with each of its locks reported lost. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "backends/postgres/pg.h"

/* Connections used for short statements at once; past this, callers share. */
#define ACTIVE_MAX 8
/* Connections kept open while holding nothing. */
#define IDLE_MAX 4

/* ---- time ---- */

int dlock__pg_wait_fd(int fd, short events, int64_t deadline_ns) {
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

/* ---- errors ---- */

const char *dlock__pg_libpq_text(const pg_client *pc, const char *m, char *buf, size_t len) {
  return dlock__pg_safe_message(pc->url, pc->lp_names, pc->lp_values, pc->lp_n, m, buf, len);
}

static int conn_error(pg_client *pc, PGconn *pg, const char *what) {
  char b[256];
  int rc = dlock_seterr(DLOCK_ECONN, "postgres: %s on %s: %s", what, pc->where,
                        dlock__pg_libpq_text(pc, pg ? PQerrorMessage(pg) : NULL, b, sizeof b));
  dlock__err_scrub(pc->url);
  return rc;
}

static _Thread_local char last_state[6];

const char *dlock__pg_last_state(void) {
  return last_state;
}

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

/* The result of the command just handed to libpq (SENT: whether it took
 * it), as dlock__pg_run describes. */
static int collect(pg_client *pc, PGconn *pg, const char *what, int sent, int64_t deadline_ns,
                   PGresult **out, int *broken) {
  *out = NULL;
  last_state[0] = '\0';
  if (!sent) {
    *broken = 1;
    return conn_error(pc, pg, what);
  }
  int f;
  while ((f = PQflush(pg)) == 1) {
    int w = dlock__pg_wait_fd(PQsocket(pg), POLLOUT, deadline_ns);
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
      int w = dlock__pg_wait_fd(PQsocket(pg), POLLIN, deadline_ns);
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

int dlock__pg_run(pg_client *pc, PGconn *pg, const char *what, const char *sql, int nparams,
                  const char *const *params, int64_t deadline_ns, PGresult **out, int *broken) {
  atomic_fetch_add(&pc->n_statements, 1);
  int sent = nparams < 0 ? PQsendQuery(pg, sql)
                         : PQsendQueryParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
  return collect(pc, pg, what, sent, deadline_ns, out, broken);
}

/* Named statements, prepared once per session: the server then parses and
 * plans a statement once per connection, not once per call (an unnamed
 * statement is parsed every time), which is most of what a short
 * statement costs it.  A new connection, as after a reconnect, a restart
 * or a failover, starts with none prepared.
 *
 * Names are worth nothing where a pooler may run each transaction on
 * another server session, as PgBouncer's transaction pooling does (before
 * 1.21, or without max_prepared_statements, it passes them through
 * untracked): a statement prepared on one session is missing on the next.
 * A client that found a pooler at open therefore sends unnamed statements
 * only, unless ?prepare=true says the pooler keeps prepared statements per
 * client.  Should a session still lack a statement it prepared (SQLSTATE
 * 26000: a pooler dlock did not see, or told wrongly that it keeps them,
 * or a DISCARD ALL), nothing ran (the error comes at Bind), so the call is
 * sent again unnamed, and the client sends unnamed statements from then
 * on: a missing statement means the sessions behind its connections come
 * and go, and preparing again would only find it missing again elsewhere.
 * A name is the hash of its text (dlock__pg_statement_name), so one that a
 * shared session already has (SQLSTATE 42P05 on prepare) is this same
 * statement, prepared there by another client, and is used as it is. */
_Static_assert(DLOCK__PG_SQL_COUNT <= 32, "pg_conn.prepared has a bit per statement");

int dlock__pg_exec(pg_client *pc, pg_conn *cn, const char *what, enum dlock__pg_sql which,
                   int nparams, const char *const *params, int64_t deadline_ns, PGresult **out,
                   int *broken) {
  PGconn *pg = cn->pg;
  const char *sql = pc->sql[which];
  /* The schema check runs once per client and the session settings once
   * per session (or per longer ttl): preparing them would cost a round
   * trip more and save none. */
  if (nparams < 0 || !atomic_load(&pc->named) || which == DLOCK__PG_SQL_SCHEMA_CHECK ||
      which == DLOCK__PG_SQL_SESSION)
    return dlock__pg_run(pc, pg, what, sql, nparams, params, deadline_ns, out, broken);
  const char *name = pc->stmt[which];
  uint32_t bit = (uint32_t)1 << which;
  int rc;
  if (!(cn->prepared & bit)) {
    atomic_fetch_add(&pc->n_prepares, 1);
    rc = collect(pc, pg, what, PQsendPrepare(pg, name, sql, nparams, NULL), deadline_ns, out,
                 broken);
    if (rc == 0)
      PQclear(*out);
    else if (!*broken && strcmp(last_state, "42P05") == 0)
      rc = 0;
    if (rc < 0)
      return rc;
    cn->prepared |= bit;
  }
  atomic_fetch_add(&pc->n_statements, 1);
  rc = collect(pc, pg, what, PQsendQueryPrepared(pg, name, nparams, params, NULL, NULL, 0),
               deadline_ns, out, broken);
  if (rc < 0 && !*broken && strcmp(last_state, "26000") == 0) {
    atomic_fetch_add(&pc->n_unprepared, 1);
    atomic_store(&pc->named, 0);
    cn->prepared = 0;
    rc = dlock__pg_run(pc, pg, what, sql, nparams, params, deadline_ns, out, broken);
  }
  return rc;
}

/* ---- connections ---- */

int dlock__pg_connect(pg_client *pc, PGconn **out) {
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
    int w = dlock__pg_wait_fd(PQsocket(pg), ps == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                              deadline);
    if (w == 0) {
      PQfinish(pg);
      return dlock_seterr(DLOCK_ECONN, "postgres: cannot connect to %s within %lld ms",
                          pc->where, (long long)pc->connect_timeout_ms);
    }
    ps = PQconnectPoll(pg);
  }
  if (ps == PGRES_POLLING_FAILED) {
    char b[256];
    const char *m = dlock__pg_libpq_text(pc, PQerrorMessage(pg), b, sizeof b);
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
  int rc = dlock__pg_run(pc, pg, "checking the session", pc->sql[DLOCK__PG_SQL_PING], 0, NULL,
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

int dlock__pg_session_keep(pg_client *pc, pg_conn *cn, int64_t ttl_ms, int *broken) {
  if (cn->keep_ms >= ttl_ms)
    return 0;
  int64_t s = (ttl_ms + 999) / 1000;
  s = s < 10 ? 10 : s;
  char sec[24];
  snprintf(sec, sizeof sec, "%lld", (long long)s);
  const char *params[1] = {sec};
  PGresult *r;
  int rc = dlock__pg_exec(pc, cn, "setting up the session", DLOCK__PG_SQL_SESSION, 1, params,
                          deadline_after(pc->timeout_ms), &r, broken);
  if (rc == 0) {
    PQclear(r);
    cn->keep_ms = s * 1000;
  }
  return rc;
}

void dlock__pg_conn_free(pg_conn *cn) {
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
  int rc = dlock__pg_connect(pc, &cn->pg);
  if (rc == 0) {
    PQsetNoticeReceiver(cn->pg, session_notice, cn);
    cn->fd = PQsocket(cn->pg);
    rc = check_session(pc, cn->pg, &cn->pid);
    if (rc == 1 && pc->mode->session_locks)
      rc = dlock_seterr(DLOCK_EINVAL,
                        "postgres: %s reaches the server through a connection pooler (the "
                        "session's process id is not the one announced at login); %s "
                        "locks live in a server session, which a pooler shares, so they "
                        "would not exclude anyone: use ?mode=lease",
                        pc->where, pc->mode->name);
    else if (rc == 1)
      rc = 0;
    int broken = 0;
    if (rc == 0 && pc->mode->session_locks)
      rc = dlock__pg_session_keep(pc, cn, pc->bc->default_ttl_ms, &broken);
  }
  if (rc < 0) {
    dlock__pg_conn_free(cn);
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

/* Under pc->mu, which it lets go: CN is closed if it can be. */
static void conn_settle(pg_client *pc, pg_conn *cn) {
  int dispose = conn_disposable(pc, cn);
  if (dispose)
    conn_unlink(pc, cn);
  pthread_mutex_unlock(&pc->mu);
  if (dispose)
    dlock__pg_conn_free(cn);
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

int dlock__pg_conn_get(pg_client *pc, int wait, pg_conn **out) {
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

void dlock__pg_conn_put(pg_client *pc, pg_conn *cn, int broken) {
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
  conn_settle(pc, cn);
}

int dlock__pg_run_any(pg_client *pc, const char *what, enum dlock__pg_sql which, int nparams,
                      const char *const *params, int64_t deadline_ns, PGresult **out) {
  pg_conn *cn;
  int rc = dlock__pg_conn_get(pc, 0, &cn);
  if (rc < 0)
    return rc;
  int broken = 0;
  rc = dlock__pg_exec(pc, cn, what, which, nparams, params, deadline_ns, out, &broken);
  dlock__pg_conn_put(pc, cn, broken);
  return rc;
}

int dlock__pg_held_add(pg_conn *cn, dlock_backend_lock *bl) {
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

void dlock__pg_held_remove(pg_conn *cn, dlock_backend_lock *bl) {
  for (size_t i = 0; i < cn->nheld; i++)
    if (cn->held[i] == bl) {
      cn->held[i] = cn->held[--cn->nheld];
      return;
    }
}

void dlock__pg_held_drop(pg_client *pc, pg_conn *cn, dlock_backend_lock *bl) {
  pthread_mutex_lock(&pc->mu);
  dlock__pg_held_remove(cn, bl);
  conn_settle(pc, cn);
}
