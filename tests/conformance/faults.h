/* Faults the conformance suite injects from outside the client under test. */
#ifndef DLOCK_CONF_FAULTS_H
#define DLOCK_CONF_FAULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One case of the suite: its name (what --case matches), a line saying
 * what it checks, its cmocka body and teardown (NULL for none), and
 * CONF_DESTRUCTIVE when it disturbs the store beyond keys of its own
 * (flushes scripts, changes ACLs, compacts, terminates sessions it did not
 * make, kills or restarts servers): those run only with --destructive. */
#define CONF_DESTRUCTIVE 1u
struct conf_case {
  const char *name;
  const char *desc;
  void (*test)(void **state);
  int (*teardown)(void **state);
  unsigned flags;
};

/* Set by --destructive. */
extern int conf_destructive;

/* Everything this run made in URL's store goes: the keys under conf_key()'s
 * prefix in the backend's own layout, the keys given to conf_note_key(),
 * and what the store's cases made beside them (users, nodes, tables,
 * sessions).  conf_cleanup_begin() looks at the store first, for what was
 * already there (a file:// directory, the ZooKeeper root).  0, or -1 with
 * what is left on stderr. */
void conf_cleanup_begin(const char *url);
int conf_cleanup(const char *url);
/* A key a case uses that does not start with conf_key()'s prefix. */
void conf_note_key(const char *key);

/* Make the store forget the current holder of KEY, the way an operator or a
 * failure would: a separate connection deletes it.  0 or -1. */
int conf_break_lock(const char *url, const char *key);

/* Shared by every case file: the run's id (unique per invocation), a key
 * name inside it, and BASE with one more query parameter. */
extern const char *conf_run_id;
const char *conf_key(const char *name);
/* Whether KEY starts with conf_key()'s prefix, "conf-<run id>/". */
bool conf_in_prefix(const char *key);
char *conf_url_with(const char *base, const char *extra);
/* The run's own PostgreSQL lease prefix, conf_<run id> with '_' for '-': a
 * case that needs a schema of its own takes it, and cleanup drops it. */
const char *conf_pg_run_prefix(void);

/* Make the store lose everything it knows about KEY, fencing counter
 * included (a restart without persistence, a deleted lock file).  0, -1, or
 * 1 when the store cannot lose it (in-process counters). */
int conf_forget_key(const char *url, const char *key);

/* How long after a holder's process dies (SIGKILL: no release, no more
 * renewals) the store of URL may keep its lock of ttl TTL_MS: ttl + 10 s
 * for every store that expires locks on their ttl (ZooKeeper: on the
 * session timeout the server negotiated, which the client reports); for
 * Consul, whose
 * sessions last at least 10 s, are invalidated only after twice their TTL
 * and then leave the key in a lock-delay (conf_lock_delay_ms),
 * 2 x max(ttl, 10 s) + lock_delay + 10 s. */
int64_t conf_orphan_bound_ms(const char *url, int64_t ttl_ms);
/* How long the store of URL keeps a key unavailable after its holder's
 * session is destroyed or invalidated: the lock-delay the client gives its
 * Consul sessions, 0 for every other store. */
int64_t conf_lock_delay_ms(const char *url);

#ifdef DLOCK_HAVE_REDIS
int conf_redis_break_lock(const char *url, const char *key);
int conf_redis_forget_key(const char *url, const char *key);
/* A separate connection to the Redis named by URL, logged in and on its
 * database; *prefix gets a copy of ?prefix= (or NULL). */
struct redisContext *conf_redis_connect(const char *url, char **prefix);
/* Redis-specific cases, run after the shared ones for redis URLs: the
 * table (N entries) for URL. */
const struct conf_case *conf_redis_cases(const char *url, size_t *n);
#endif

#ifdef DLOCK_HAVE_ZOOKEEPER
/* From a separate ZooKeeper session: delete the node(s) by which KEY is
 * held (break) or everything dlock keeps for KEY (forget). */
int conf_zk_break_lock(const char *url, const char *key);
int conf_zk_forget_key(const char *url, const char *key);
/* ZooKeeper-specific cases, run after the shared ones for zk URLs. */
const struct conf_case *conf_zk_cases(const char *url, size_t *n);
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
const struct conf_case *conf_pg_cases(const char *url, size_t *n);
#endif

#ifdef DLOCK_HAVE_ETCD
#include "backends/etcd/etcd-codec.h"
/* Revoke the lease of KEY's holder (break), the way `etcdctl lease revoke`
 * would, or delete every key under KEY's lock name (forget). */
int conf_etcd_break_lock(const char *url, const char *key);
int conf_etcd_forget_key(const char *url, const char *key);
/* KEY's lock name under URL's ?prefix= (malloc'd). */
char *conf_etcd_lock_name(const char *url, const char *key);
/* POST BODY to PATH on the first endpoint of URL that answers, over TLS
 * with URL's cacert/cert/key, logged in as URL's user if it has one.  The
 * HTTP status (*answer gets the malloc'd body), or -1 when no endpoint
 * answered. */
int conf_etcd_post(const char *url, const char *path, const char *body, char **answer);
/* The same with auth token TOKEN (NULL: none) instead of a login. */
int conf_etcd_post_token(const char *url, const char *token, const char *path,
                         const char *body, char **answer);
/* Log in as URL's user: 0 and a malloc'd *token, or -1. */
int conf_etcd_login(const char *url, char **token);
/* URL with its userinfo replaced by USER:PASSWORD (malloc'd). */
char *conf_etcd_url_as(const char *url, const char *user, const char *password);
/* A txn (REQ is consumed, NULL counts as out of memory), decoded into *t:
 * 0, or -1 with the reason on stderr. */
int conf_etcd_txn(const char *url, char *req, dlock__etcd_txn *t);
/* Every key under KEY's lock name, oldest create_revision first, in
 * t->res[0] (with values and leases). */
int conf_etcd_queue(const char *url, const char *key, dlock__etcd_txn *t);
/* etcd-specific cases, run after the shared ones for etcd URLs. */
const struct conf_case *conf_etcd_cases(const char *url, size_t *n);
#endif

#ifdef DLOCK_HAVE_CONSUL
#include "backends/consul/consul-codec.h"
/* Destroy the session holding KEY's lock key (break), the way an operator
 * would with PUT /v1/session/destroy/<id>, or delete the lock key
 * (forget). */
int conf_consul_break_lock(const char *url, const char *key);
int conf_consul_forget_key(const char *url, const char *key);
/* One /v1/txn of VERB on KEY; the HTTP status (-1: not sent), the answer's
 * body in *ANSWER (malloc'd, or NULL). */
int conf_consul_txn_one(const char *url, const char *verb, const char *key, char **answer);
/* KEY's lock key under URL's ?prefix= (malloc'd). */
char *conf_consul_lock_key(const char *url, const char *key);
/* "http://127.0.0.1:8500": the agent of URL's endpoint EP (malloc'd;
 * NULL past the last). */
char *conf_consul_agent_addr(const char *url, size_t ep);
/* METHOD PATH (with its query) with BODY (NULL for none) on the first
 * agent of URL that answers, over TLS with URL's cacert/cert/key, with
 * URL's ?token= (else CONSUL_HTTP_TOKEN).  The HTTP status (*answer gets
 * the malloc'd body), or -1 when no agent answered. */
int conf_consul_request(const char *url, const char *method, const char *path, const char *body,
                        char **answer);
/* KEY's lock key read consistently: 1 with *kv filled, 0 when there is no
 * such key, -1 on an error (on stderr).  Free *kv with
 * dlock__consul_kv_free in every case. */
int conf_consul_get(const char *url, const char *key, dlock__consul_kv *kv);
/* Destroy session ID: 0 or -1. */
int conf_consul_destroy_session(const char *url, const char *id);
/* Whether the agent knows session ID: 1, 0, or -1 on an error. */
int conf_consul_session_alive(const char *url, const char *id);
/* URL's ?lock_delay= in ms (15000 when absent). */
int64_t conf_consul_lock_delay_ms(const char *url);
/* Consul-specific cases, run after the shared ones for consul URLs. */
const struct conf_case *conf_consul_cases(const char *url, size_t *n);
#endif

#endif
