/* PostgreSQL backend, lease mode: a lock is a row of the lease table, with
 * an owner, a fencing token and an expiry the server keeps.  Every
 * statement stands alone, so any pooled connection serves any lock
 * (PgBouncer transaction pooling included).  Waiters sleep until a NOTIFY
 * from a release, read by the monitor (pg-monitor.c) on a dedicated LISTEN
 * connection, or until the holder's lease runs out.  Behind a pooler
 * LISTEN cannot work, so waiters poll with backoff capped by that expiry.
 * Rows that ended a grace ago are deleted a batch at a time (lease_gc).
 *
 * An operator's list and break: lease rows are listed by name, and a break
 * ends one row's lease in the statement that checks its holder, as a
 * release would. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "backends/postgres/pg.h"

/* Locks renewed per statement: 10,000 locks are four statements a period.
 * Each row costs the server about the same however they are batched (a
 * new row version, its index entries); a statement holds the rows it
 * updates, this client's own, while it runs, and must end within the
 * earliest validity among them. */
#define RENEW_BATCH 2500
/* Polling behind a pooler: first and largest pause, ms. */
#define POLL_MIN_MS 5
#define POLL_MAX_MS 500
/* Lease rows deleted per clean-up statement, and how often a client runs
 * one when the last one found less than that. */
#define GC_BATCH 1000
#define GC_PERIOD_MS 1000
/* Longest a clean-up statement may hold up the operation it follows. */
#define GC_MAX_MS 250
/* Lease rows listed per statement. */
#define LIST_BATCH 500

static int lease_refence(pg_client *pc, dlock_backend_lock *bl);
static void lease_gc(pg_client *pc);

static int lease_try(pg_client *pc, dlock_backend_lock *bl) {
  char ttl[24];
  snprintf(ttl, sizeof ttl, "%lld", (long long)bl->ttl_ms);
  const char *params[4] = {bl->key, bl->owner, ttl, bl->label};
  PGresult *r;
  bl->sent_ns = dlock_backend_now_ns();
  int rc = dlock__pg_run_any(pc, "acquire", DLOCK__PG_SQL_LEASE_TRY, 4, params,
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
  int rc = dlock__pg_run_any(pc, "acquire", DLOCK__PG_SQL_LEASE_REFENCE, 2, params,
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
   * give-back thread after a give-back): a batch through the index takes
   * milliseconds, and one that takes longer waits for a later call rather
   * than holding up this one a whole timeout. */
  int64_t bound = pc->timeout_ms < GC_MAX_MS ? pc->timeout_ms : GC_MAX_MS;
  if (dlock__pg_run_any(pc, "clean-up", DLOCK__PG_SQL_LEASE_GC, 2, params,
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
    rc = dlock__pg_connect(pc, &l);
    if (rc == 0) {
      PGresult *r;
      int broken = 0;
      rc = dlock__pg_run(pc, l, "LISTEN", pc->sql[DLOCK__PG_SQL_LISTEN], 0, NULL,
                         deadline_after(pc->timeout_ms), &r, &broken);
      if (rc == 0) {
        PQclear(r);
        pthread_mutex_lock(&pc->mu);
        pc->listener = l;
        pthread_mutex_unlock(&pc->mu);
        dlock__pg_wake_monitor(pc);
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

/* A lock of a renewal batch by its owner token. */
typedef struct owner_at {
  const char *owner;
  size_t i;
} owner_at;

static int cmp_owner_at(const void *a, const void *b) {
  return strcmp(((const owner_at *)a)->owner, ((const owner_at *)b)->owner);
}

static int lease_renew_batch(pg_client *pc, dlock_backend_lock **bls, size_t n, int *rcs) {
  const char **names = malloc(n * sizeof *names), **owners = malloc(n * sizeof *owners);
  int64_t *ttls = malloc(n * sizeof *ttls);
  char *an = NULL, *ao = NULL, *at = NULL;
  /* Allocated before the statement: once it has extended the leases, only
   * its answer decides each lock's fate. */
  owner_at *by_owner = malloc(n * sizeof *by_owner);
  int rc = 0;
  if (!names || !owners || !ttls || !by_owner) {
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
  /* The rows name owners, in no given order: looked up in the batch's
   * owners sorted, since a scan per row costs millions of comparisons a
   * statement at 2,500 rows. */
  for (size_t i = 0; i < n; i++)
    by_owner[i] = (owner_at){bls[i]->owner, i};
  qsort(by_owner, n, sizeof *by_owner, cmp_owner_at);
  const char *params[3] = {an, ao, at};
  PGresult *r;
  atomic_fetch_add(&pc->n_renewals, 1);
  /* Each batch's own send time: on a slow server the last batches of a
   * renewal go out well after the first, and a lease counted from the
   * first would end before theirs does.  The core's window takes batches
   * sent within half a period of each other into one round again. */
  int64_t sent = dlock_backend_now_ns();
  rc = dlock__pg_run_any(pc, "renew", DLOCK__PG_SQL_LEASE_RENEW, 3, params, dl, &r);
  if (rc < 0)
    goto out;
  for (size_t i = 0; i < n; i++)
    rcs[i] = DLOCK_ELOST;
  for (int row = 0; row < PQntuples(r); row++) {
    owner_at want = {NULL, 0};
    char hex[33];
    if (dlock__pg_uuid_to_hex(PQgetvalue(r, row, 0), hex) < 0)
      continue;
    want.owner = hex;
    const owner_at *hit = bsearch(&want, by_owner, n, sizeof *by_owner, cmp_owner_at);
    if (hit) {
      rcs[hit->i] = 0;
      bls[hit->i]->sent_ns = sent;
    }
  }
  PQclear(r);
  for (size_t i = 0; i < n; i++)
    if (rcs[i] == DLOCK_ELOST)
      rcs[i] = dlock_seterr(DLOCK_ELOST, "postgres: the lease on '%s' expired or was taken",
                            bls[i]->key);
out:
  free(by_owner);
  free(names);
  free(owners);
  free(ttls);
  free(an);
  free(ao);
  free(at);
  return rc;
}

/* A statement that fails leaves its locks and the later statements' with
 * its code; the statements the server answered keep their answers, so a
 * lock one of them found lost is reported in this pass (the failed one may
 * fail again in every pass until the ttl runs out). */
static int lease_renew_many(pg_client *pc, dlock_backend_lock **bls, size_t n, int *rcs) {
  for (size_t start = 0; start < n; start += RENEW_BATCH) {
    size_t m = n - start < RENEW_BATCH ? n - start : RENEW_BATCH;
    int rc = lease_renew_batch(pc, bls + start, m, rcs + start);
    if (rc < 0) {
      if (start == 0)
        return rc;
      for (size_t i = start; i < n; i++)
        rcs[i] = rc;
      return 0;
    }
  }
  return 0;
}

static int lease_release(pg_client *pc, dlock_backend_lock *bl) {
  const char *params[2] = {bl->key, bl->owner};
  PGresult *r;
  int rc = dlock__pg_run_any(pc, "release", DLOCK__PG_SQL_LEASE_RELEASE, 2, params,
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

static int lease_inspect(pg_client *pc, const char *key, size_t keylen, dlock_info *info) {
  const char *params[1] = {key};
  PGresult *r;
  int rc = dlock__pg_run_any(pc, "inspect", DLOCK__PG_SQL_LEASE_INSPECT, 1, params,
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
    rc = dlock__pg_run_any(pc, "list", DLOCK__PG_SQL_LEASE_LIST, 3, params,
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
static int lease_break(pg_client *pc, const char *key, size_t keylen,
                       const dlock_info *holder, dlock_info *broken) {
  char tok[24];
  snprintf(tok, sizeof tok, "%" PRIu64, holder->token);
  /* An owner that is no uuid names no holder, yet must not make the
   * server refuse the statement: it is then busy or free like any other. */
  const char *owner = !holder->owner[0] || dlock__pg_owner_text_ok(holder->owner)
                          ? holder->owner
                          : "not-an-owner";
  const char *params[3] = {key, owner, tok};
  PGresult *r;
  int rc = dlock__pg_run_any(pc, "break", DLOCK__PG_SQL_LEASE_BREAK, 3, params,
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

static uint32_t lease_caps(const pg_client *pc, uint32_t caps) {
  caps = (caps & (DLOCK_CAP_LIST | DLOCK_CAP_BREAK)) | DLOCK_CAP_FENCING | DLOCK_CAP_SERVER_TTL |
         DLOCK_CAP_CROSS_HOST | DLOCK_CAP_CROSS_PROCESS | DLOCK_CAP_HOLDER_INFO;
  if (!pc->pooled)
    caps |= DLOCK_CAP_NATIVE_WAIT;
  return caps;
}

const pg_mode dlock__pg_lease = {
    .name = "lease",
    .session_locks = 0,
    .rows = 1,
    .caps = lease_caps,
    .try_acquire = lease_try,
    .acquire = lease_acquire,
    .renew_many = lease_renew_many,
    .release = lease_release,
    .inspect = lease_inspect,
    .list = lease_list,
    .force_release = lease_break,
};
