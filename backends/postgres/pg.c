/* PostgreSQL backend: opening and closing a client, its URL parameters,
 * and the vtable, whose operations go to the mode that ?mode= chose at
 * open: advisory (pg-advisory.c, the default), where a lock is a session's
 * advisory lock, or lease (pg-lease.c), where it is a row with an expiry.
 * Both run their statements through the connections of pg-conn.c and share
 * the monitor thread of pg-monitor.c, which runs where it has sockets to
 * watch: sessions holding advisory locks, or lease mode's LISTEN, which
 * a pooler rules out.  Names, SQL text and value decoding live in
 * pg-codec.c; these files only move them.
 *
 * An operator's list and break: lease rows are listed by name and broken
 * one at a time; advisory locks cannot be listed, and another client's is
 * broken by ending the session that holds it. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backends/postgres/pg.h"
#include "dlock/postgres.h"

static const pg_mode *const pg_modes[] = {&dlock__pg_advisory, &dlock__pg_lease};

/* ---- setup ---- */

static int ensure_schema(pg_client *pc) {
  PGresult *r;
  int64_t dl = deadline_after(pc->timeout_ms);
  int rc = dlock__pg_run_any(pc, "checking the schema", DLOCK__PG_SQL_SCHEMA_CHECK, 0,
                             NULL, dl, &r);
  if (rc < 0)
    return rc;
  int seq = 0, table = 0, index = 0;
  if (PQntuples(r) != 1 || PQnfields(r) != 3 ||
      dlock__pg_parse_bool(PQgetvalue(r, 0, 0), &seq) < 0 ||
      dlock__pg_parse_bool(PQgetvalue(r, 0, 1), &table) < 0 ||
      dlock__pg_parse_bool(PQgetvalue(r, 0, 2), &index) < 0)
    rc = dlock_seterr(DLOCK_EBACKEND, "postgres: unexpected reply checking the schema");
  PQclear(r);
  int want_table = pc->mode->rows;
  pc->gc = want_table && index;
  if (rc == 0 && seq && table && want_table && !index) {
    /* A table made by an earlier version: without the index the clean-up
     * would scan it whole, so it runs only if the index can be made.  A
     * user who may not create it still gets locks, and rows that stay. */
    rc = dlock__pg_run_any(pc, "creating the lease index",
                           DLOCK__PG_SQL_SCHEMA_CREATE_INDEX, -1, NULL, dl, &r);
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
  rc = dlock__pg_run_any(pc, "creating the schema",
                         want_table ? DLOCK__PG_SQL_SCHEMA_CREATE_LEASE
                                    : DLOCK__PG_SQL_SCHEMA_CREATE_SEQ,
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
    dlock__pg_statement_name(pc->sql[i], pc->stmt[i]);
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
                        dlock__pg_libpq_text(pc, err, b, sizeof b));
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
  dlock__pg_monitor_stop(pc);
  while (pc->conns) {
    pg_conn *cn = pc->conns;
    pc->conns = cn->next;
    dlock__pg_conn_free(cn);
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
  const char *mode = dlock__pg_advisory.name;
  dlock_url_param(url, "mode", &mode);
  for (size_t i = 0; i < sizeof pg_modes / sizeof pg_modes[0] && !pc->mode; i++)
    if (strcmp(mode, pg_modes[i]->name) == 0)
      pc->mode = pg_modes[i];
  if (!pc->mode)
    return dlock_seterr(DLOCK_EINVAL,
                        "invalid URL '%s': mode='%.40s': expected advisory or lease", pc->where,
                        mode);
  if ((rc = dlock_url_param_bool(url, "confirm_grants", 1, &pc->confirm)) < 0)
    return rc;
  /* Named statements (see dlock__pg_exec): by default unless a pooler is
   * found in the way. */
  int prepare = -1;
  const char *pv = NULL;
  if (dlock_url_param(url, "prepare", &pv) == 1 &&
      (rc = dlock_url_param_bool(url, "prepare", 0, &prepare)) < 0)
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
  if ((rc = dlock__pg_conn_get(pc, 0, &cn)) < 0)
    goto fail;
  pc->pooled = cn->pid != PQbackendPID(cn->pg);
  atomic_store(&pc->named, prepare < 0 ? !pc->pooled : prepare);
  dlock__pg_conn_put(pc, cn, 0);
  bc->caps = pc->mode->caps(pc, bc->caps);
  /* A session keeps its locks past their ttl while its other locks keep it
   * alive; lease rows expire at the server on their own. */
  bc->give_back_expired = pc->mode->session_locks;
  if ((rc = ensure_schema(pc)) < 0 ||
      ((pc->mode->session_locks || !pc->pooled) && (rc = dlock__pg_monitor_start(pc)) < 0))
    goto fail;
  return 0;
fail:
  client_free(pc);
  return rc;
}

static void pg_close(dlock_backend_client *bc) {
  client_free(bc->priv);
}

/* ---- operations: the mode's ---- */

static int pg_try_acquire(dlock_backend_client *bc, dlock_backend_lock *bl) {
  pg_client *pc = bc->priv;
  bl->holder_ttl_ms = -1;
  return pc->mode->try_acquire(pc, bl);
}

static int pg_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline_ns) {
  pg_client *pc = bc->priv;
  bl->holder_ttl_ms = -1;
  return pc->mode->acquire(pc, bl, deadline_ns);
}

static int pg_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                         int *rcs) {
  pg_client *pc = bc->priv;
  return pc->mode->renew_many(pc, bls, n, rcs);
}

static int pg_renew(dlock_backend_client *bc, dlock_backend_lock *bl) {
  int rcode = 0;
  dlock_backend_lock *one[1] = {bl};
  int rc = pg_renew_many(bc, one, 1, &rcode);
  return rc < 0 ? rc : rcode;
}

static int pg_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  pg_client *pc = bc->priv;
  return pc->mode->release(pc, bl);
}

static int pg_inspect(dlock_backend_client *bc, const char *key, size_t keylen,
                      dlock_info *info) {
  pg_client *pc = bc->priv;
  return pc->mode->inspect(pc, key, keylen, info);
}

static int pg_list(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
                   dlock_backend_emit_fn emit, void *ud) {
  pg_client *pc = bc->priv;
  return pc->mode->list(pc, prefix, prefixlen, emit, ud);
}

static int pg_force_release(dlock_backend_client *bc, const char *key, size_t keylen,
                            const dlock_info *holder, dlock_info *broken) {
  pg_client *pc = bc->priv;
  return pc->mode->force_release(pc, key, keylen, holder, broken);
}

static int pg_control(dlock_backend_client *bc, dlock_backend_lock *bl, int op, void *arg) {
  pg_client *pc = bc->priv;
  (void)bl;
  if (!arg)
    return dlock_seterr(DLOCK_EINVAL, "postgres: control operation %d needs an argument", op);
  if (op == DLOCK_PG_CTL_STATS) {
    struct dlock_pg_stats *st = arg;
    memset(st, 0, sizeof *st);
    st->statements = atomic_load(&pc->n_statements);
    st->prepares = atomic_load(&pc->n_prepares);
    st->renewals = atomic_load(&pc->n_renewals);
    st->unprepared = atomic_load(&pc->n_unprepared);
    st->named = atomic_load(&pc->named);
    return 0;
  }
  return dlock_seterr(DLOCK_ENOTSUP, "postgres: unknown control operation %d", op);
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
    .control = pg_control,
    .list = pg_list,
    .force_release = pg_force_release,
};
