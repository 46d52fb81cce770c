/* Faults the conformance suite injects from outside the client under test. */
#ifndef DLOCK_CONF_FAULTS_H
#define DLOCK_CONF_FAULTS_H

/* Make the store forget the current holder of KEY, the way an operator or a
 * failure would: a separate connection deletes it.  0 or -1. */
int conf_break_lock(const char *url, const char *key);

/* Shared by every case file: the run's id (unique per invocation), a key
 * name inside it, and BASE with one more query parameter. */
extern const char *conf_run_id;
const char *conf_key(const char *name);
char *conf_url_with(const char *base, const char *extra);

/* Make the store lose everything it knows about KEY, fencing counter
 * included (a restart without persistence, a deleted lock file).  0, -1, or
 * 1 when the store cannot lose it (in-process counters). */
int conf_forget_key(const char *url, const char *key);

#ifdef DLOCK_HAVE_REDIS
int conf_redis_break_lock(const char *url, const char *key);
int conf_redis_forget_key(const char *url, const char *key);
/* A separate connection to the Redis named by URL, logged in and on its
 * database; *prefix gets a copy of ?prefix= (or NULL). */
struct redisContext *conf_redis_connect(const char *url, char **prefix);
/* Redis-specific cases, run after the shared ones for redis URLs. */
int conf_redis_cases(const char *url);
#endif

#ifdef DLOCK_HAVE_ZOOKEEPER
/* From a separate ZooKeeper session: delete the node(s) by which KEY is
 * held (break) or everything dlock keeps for KEY (forget). */
int conf_zk_break_lock(const char *url, const char *key);
int conf_zk_forget_key(const char *url, const char *key);
/* ZooKeeper-specific cases, run after the shared ones for zk URLs. */
int conf_zk_cases(const char *url);
#endif

#ifdef DLOCK_HAVE_POSTGRES
#include <libpq-fe.h>

#include "backends/postgres/pg-codec.h"
/* Advisory mode: end the session holding KEY (pg_terminate_backend).
 * Lease mode: delete KEY's row. */
int conf_pg_break_lock(const char *url, const char *key);
int conf_pg_forget_key(const char *url, const char *key);
/* A plain libpq session to the server of URL (dlock's parameters left
 * out); *lease and *names say how dlock keeps its locks there. */
PGconn *conf_pg_connect(const char *url, int *lease, dlock__pg_names *names);
/* Terminate every session holding KEY's advisory lock: how many, or -1. */
long conf_pg_terminate_holder(PGconn *pg, const dlock__pg_names *names, const char *key);
/* PostgreSQL-specific cases, run after the shared ones for postgres URLs. */
int conf_pg_cases(const char *url);
#endif

#endif
