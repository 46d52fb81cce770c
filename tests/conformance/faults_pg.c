/* PostgreSQL fault injection for the conformance suite, from a session of
 * our own: end the session that holds an advisory lock, the way an
 * operator's pg_terminate_backend() or a server restart would, or delete a
 * lease row behind its holder's back. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "backends/postgres/pg-codec.h"
#include "faults.h"

/* dlock's own URL parameters, which libpq must not see. */
static const char *const dlock_params[] = {
    "mode", "ttl", "connect_timeout", "timeout", "retry_initial", "retry_max", "margin",
    "retry_multiplier", "retry_jitter", "require", "prefix", NULL};

PGconn *conf_pg_connect(const char *url, int *lease, dlock__pg_names *names) {
  dlock_url *u;
  if (dlock__url_parse(url, &u) < 0) {
    fprintf(stderr, "faults_pg: %s\n", dlock_client_errmsg(NULL));
    return NULL;
  }
  const char *mode = "advisory", *prefix = NULL;
  dlock_url_param(u, "mode", &mode);
  dlock_url_param(u, "prefix", &prefix);
  *lease = strcmp(mode, "lease") == 0;
  for (const char *const *p = dlock_params; *p; p++)
    dlock_url_param(u, *p, NULL);
  size_t n = dlock_url_param_count(u), m = 0;
  const char **k = calloc(n + 1, sizeof *k), **v = calloc(n + 1, sizeof *v);
  for (size_t i = 0; k && v && i < n; i++) {
    int claimed;
    dlock_url_param_at(u, i, &k[m], &v[m], &claimed);
    if (!claimed)
      m++;
  }
  int rc = 0;
  char *ci = k && v ? dlock__pg_conninfo(u, k, v, m, &rc) : NULL;
  PGconn *pg = NULL;
  if (ci && dlock__pg_names_init(prefix, names) == 0) {
    pg = PQconnectdb(ci);
    if (PQstatus(pg) != CONNECTION_OK) {
      fprintf(stderr, "faults_pg: connect: %s", PQerrorMessage(pg));
      PQfinish(pg);
      pg = NULL;
    }
  }
  free(ci);
  free(k);
  free(v);
  dlock__url_free(u);
  return pg;
}

/* One statement; the number of rows it returned or touched, or -1. */
static long exec_count(PGconn *pg, const char *sql, int n, const char *const *params) {
  PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
  long rows = -1;
  if (PQresultStatus(r) == PGRES_TUPLES_OK)
    rows = PQntuples(r);
  else if (PQresultStatus(r) == PGRES_COMMAND_OK)
    rows = atol(PQcmdTuples(r));
  else
    fprintf(stderr, "faults_pg: %s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return rows;
}

long conf_pg_terminate_holder(PGconn *pg, const dlock__pg_names *names, const char *key) {
  uint32_t cls, obj;
  dlock__pg_advisory_split(dlock__pg_advisory_key(names->prefix, key, strlen(key)), &cls, &obj);
  char a[16], b[16];
  snprintf(a, sizeof a, "%" PRIu32, cls);
  snprintf(b, sizeof b, "%" PRIu32, obj);
  const char *params[2] = {a, b};
  return exec_count(pg,
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND classid = $1::bigint::oid AND objid = $2::bigint::oid "
                    "AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE "
                    "datname = current_database())",
                    2, params);
}

static long delete_row(PGconn *pg, const dlock__pg_names *names, const char *key) {
  char sql[256];
  snprintf(sql, sizeof sql, "DELETE FROM %s WHERE name = $1", names->table);
  const char *params[1] = {key};
  return exec_count(pg, sql, 1, params);
}

int conf_pg_break_lock(const char *url, const char *key) {
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(url, &lease, &names);
  if (!pg)
    return -1;
  long n = lease ? delete_row(pg, &names, key) : conf_pg_terminate_holder(pg, &names, key);
  PQfinish(pg);
  if (n < 1)
    fprintf(stderr, "faults_pg: no holder of '%s' to break\n", key);
  return n >= 1 ? 0 : -1;
}

/* A lease row is all the store keeps of a key; an advisory lock keeps
 * nothing once released.  The token sequence is the store's, not the key's,
 * and survives both, as it survives a restart. */
int conf_pg_forget_key(const char *url, const char *key) {
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(url, &lease, &names);
  if (!pg)
    return -1;
  long n = lease ? delete_row(pg, &names, key) : conf_pg_terminate_holder(pg, &names, key);
  PQfinish(pg);
  return n >= 0 ? 0 : -1;
}
