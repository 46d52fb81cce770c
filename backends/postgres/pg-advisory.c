/* PostgreSQL backend, advisory mode: a lock lives exactly as long as the
 * server session that took it, so a held lock pins its connection.  Many
 * locks share a few connections; a blocking wait (the server's own lock
 * queue) gets a connection to itself, which then keeps the lock it
 * obtained.  The monitor (pg-monitor.c) watches every connection that
 * holds locks for the server closing it, so a terminated session is
 * reported LOST at once, not at the next renewal.
 *
 * A session keeps its lock past the lock's ttl for as long as the
 * session lives, which its open connection (and the renewals of its other
 * locks) keep it doing, so the client is opened with give_back_expired:
 * the core gives back, with adv_release on its give-back thread, a lock whose
 * validity ran out unrenewed.  adv_release never
 * fails for want of an answer: an unlock left unanswered ends its session
 * (the connection cannot be used again), which frees the lock at the
 * server, and it says DLOCK_ELOST, so the core has nothing to retry.
 *
 * An advisory lock is only a hash in pg_locks, so those cannot be listed,
 * and another client's can be broken only by ending the whole session
 * that holds it (see adv_break). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backends/postgres/pg.h"

/* Looks at an advisory lock's holder before a break gives up on a key
 * that changes hands under it. */
#define BREAK_ATTEMPTS 3

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
    if (dlock__pg_wait_fd(fd, POLLOUT, deadline_ns) <= 0)
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
    if (dlock__pg_wait_fd(fd, POLLOUT, dl) <= 0)
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
    } else if (dlock__pg_wait_fd(fd, POLLIN, dl) <= 0) {
      err = ETIMEDOUT;
    }
  }
  if (rc == 1 && auth_ok) {
    /* No password asked (trust): a session is starting; end it politely
     * rather than leave the server a reset connection to log. */
    static const char terminate[5] = {'X', 0, 0, 0, 4};
    if (probe_send(fd, terminate, sizeof terminate, dl) == 0 && shutdown(fd, SHUT_WR) == 0)
      while (dlock__pg_wait_fd(fd, POLLIN, dl) > 0 && recv(fd, in, sizeof in, 0) > 0) {
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
 * lock back, since a failed attempt leaves adv_release no session to
 * unlock it on. */
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
      if (dlock__pg_exec(pc, cn, "unlock", DLOCK__PG_SQL_ADV_UNLOCK, 1, params,
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
      /* A longer lease than this session was set up for: lengthen its
       * keepalives first. */
      rc = dlock__pg_session_keep(pc, cn, bl->ttl_ms, broken);
      pthread_mutex_lock(&pc->mu);
      if (rc == 0)
        rc = dlock__pg_held_add(cn, bl);
      pc->last_held_ns = dlock_backend_now_ns();
      int wake = pc->mon_sleeping;
      pc->mon_sleeping = 0;
      pthread_mutex_unlock(&pc->mu);
      if (wake)
        dlock__pg_wake_monitor(pc);
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
  int rc = dlock__pg_conn_get(pc, 0, &cn);
  if (rc < 0)
    return rc;
  const char *params[1] = {kbuf};
  PGresult *r;
  int broken = 0;
  bl->sent_ns = dlock_backend_now_ns();
  rc = dlock__pg_exec(pc, cn, "try-lock", DLOCK__PG_SQL_ADV_TRY, 1, params,
                      deadline_after(pc->timeout_ms), &r, &broken);
  if (rc == 0)
    rc = adv_result(pc, cn, bl, r, key, &broken);
  else
    broken = 1; /* a failed statement may still have taken the session lock */
  dlock__pg_conn_put(pc, cn, broken);
  return rc;
}

static int adv_wait(pg_client *pc, dlock_backend_lock *bl, int64_t deadline_ns) {
  int64_t key;
  char kbuf[24], tbuf[24];
  adv_key_param(pc, bl, &key, kbuf, sizeof kbuf);
  pg_conn *cn;
  int rc = dlock__pg_conn_get(pc, 1, &cn);
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
  rc = dlock__pg_exec(pc, cn, "waiting for the lock", DLOCK__PG_SQL_ADV_WAIT, 2,
                      params, io_dl, &r, &broken);
  if (rc == 0) {
    /* The grant counts from when it came, not from when we asked. */
    bl->sent_ns = dlock_backend_now_ns();
    rc = adv_result(pc, cn, bl, r, key, &broken);
  } else if (rc == DLOCK_ETIMEDOUT && strcmp(dlock__pg_last_state(), "55P03") == 0) {
    rc = dlock_seterr(DLOCK_ETIMEDOUT, "timed out waiting for '%s'", bl->key);
  } else {
    broken = 1; /* a failed statement may still have taken the session lock */
  }
  dlock__pg_conn_put(pc, cn, broken);
  return rc;
}

static int adv_acquire(pg_client *pc, dlock_backend_lock *bl, int64_t deadline_ns) {
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
    dlock__pg_conn_put(pc, cn, 1);
    return dlock_seterr(DLOCK_ELOST,
                        "postgres: the session holding '%s' ended, and the server released it",
                        bl->key);
  }
  return 0;
}

static int adv_release(pg_client *pc, dlock_backend_lock *bl) {
  pg_lock *pl = bl->priv;
  pg_conn *cn;
  /* Claimed under the mutex, so that a break cannot give it back too: a
   * second unlock could free a later acquisition of the same key on the
   * same session. */
  pthread_mutex_lock(&pc->mu);
  int given_back = pl->given_back;
  pl->given_back = 1;
  pthread_mutex_unlock(&pc->mu);
  int rc = given_back ? dlock_seterr(DLOCK_ELOST, "postgres: '%s' was given back already", bl->key)
                      : adv_conn(pc, bl, &cn);
  if (rc == 0) {
    char kbuf[24];
    snprintf(kbuf, sizeof kbuf, "%" PRId64, pl->key);
    const char *params[1] = {kbuf};
    PGresult *r;
    int broken = 0;
    rc = dlock__pg_exec(pc, cn, "unlock", DLOCK__PG_SQL_ADV_UNLOCK, 1, params,
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
    dlock__pg_held_remove(cn, bl);
    pthread_mutex_unlock(&pc->mu);
    dlock__pg_conn_put(pc, cn, broken);
  } else if (pl->conn) {
    dlock__pg_held_drop(pc, pl->conn, bl);
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
      dlock__pg_conn_put(pc, cn, 0);
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "postgres: renew of '%s': no time left", bls[i]->key);
    } else if (rc == 0) {
      PGresult *r;
      int broken = 0;
      rc = dlock__pg_session_keep(pc, cn, ttl, &broken);
      if (rc == 0) {
        atomic_fetch_add(&pc->n_renewals, 1);
        rc = dlock__pg_exec(pc, cn, "renew", DLOCK__PG_SQL_PING, 0, NULL, dl, &r, &broken);
      }
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
      dlock__pg_conn_put(pc, cn, broken);
    }
    pthread_mutex_lock(&pc->mu);
    for (size_t j = i; j < n; j++) {
      pg_lock *pj = bls[j]->priv;
      if (rcs[j] == 1 && pj->conn == pl->conn) {
        rcs[j] = rc;
        if (rc == 0 && pj->given_back)
          rcs[j] = DLOCK_ELOST;
        if (rc == 0 && !pj->given_back)
          bls[j]->sent_ns = sent;
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
  int rc = dlock__pg_run_any(pc, "inspect", DLOCK__PG_SQL_ADV_INSPECT, 2, params,
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

static int adv_list(pg_client *pc, const char *prefix, size_t prefixlen,
                    dlock_backend_emit_fn emit, void *ud) {
  return dlock_seterr(DLOCK_ENOTSUP,
                      "postgres: %s keeps each advisory lock only as a 64-bit hash of its key "
                      "(pg_locks shows numbers), which cannot be turned back into keys, so its "
                      "locks cannot be listed; ?mode=lease keeps them by name",
                      pc->where);
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
      if (pl->key == k && !pl->given_back && !o->dead && h->keylen == keylen &&
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
  /* Claimed as a release claims it: the holder's renewal and release find
   * it gone, and nothing unlocks it twice. */
  pg_lock *pl = bl->priv;
  pl->given_back = 1;
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
    if (dlock__pg_exec(pc, cn, "unlock", DLOCK__PG_SQL_ADV_UNLOCK, 1, params,
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
  dlock__pg_conn_put(pc, cn, gone);
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
  int rc = dlock__pg_conn_get(pc, 1, &cn);
  if (rc < 0) {
    free(spared);
    return rc;
  }
  int waits = PQserverVersion(cn->pg) >= 140000;
  const char *params[5] = {a, b, spared, waits ? wait : want, want};
  PGresult *r;
  int gone = 0;
  rc = dlock__pg_exec(pc, cn, "break",
                      waits ? DLOCK__PG_SQL_ADV_BREAK : DLOCK__PG_SQL_ADV_BREAK_NOWAIT,
                      waits ? 5 : 4, params, deadline_after(2 * pc->timeout_ms), &r, &gone);
  dlock__pg_conn_put(pc, cn, gone);
  free(spared);
  if (rc == DLOCK_EAUTH && strcmp(dlock__pg_last_state(), "42501") == 0)
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

static uint32_t adv_caps(const pg_client *pc, uint32_t caps) {
  return caps & ~DLOCK_CAP_LIST; /* keys are kept as hashes: see adv_list */
}

const pg_mode dlock__pg_advisory = {
    .name = "advisory",
    .session_locks = 1,
    .rows = 0,
    .caps = adv_caps,
    .try_acquire = adv_try,
    .acquire = adv_acquire,
    .renew_many = adv_renew_many,
    .release = adv_release,
    .inspect = adv_inspect,
    .list = adv_list,
    .force_release = adv_break,
};
