/* PostgreSQL fault injection for the conformance suite, from a session of
 * our own: end the session that holds an advisory lock, the way an
 * operator's pg_terminate_backend() or a server restart would, or delete a
 * lease row behind its holder's back. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "backends/postgres/pg-codec.h"
#include "event.h"
#include "faults.h"
#include "internal.h"

/* dlock's own URL parameters, which libpq must not see. */
static const char *const dlock_params[] = {
    "mode", "ttl", "connect_timeout", "timeout", "retry_initial", "retry_max", "margin",
    "retry_multiplier", "retry_jitter", "require", "prefix", "confirm_grants", "prepare", NULL};

/* libpq's connection string for URL (malloc'd), or NULL. */
static char *pg_conninfo(const char *url, int *lease, dlock__pg_names *names) {
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
  if (ci && dlock__pg_names_init(prefix, names) < 0) {
    free(ci);
    ci = NULL;
  }
  free(k);
  free(v);
  dlock__url_free(u);
  return ci;
}

PGconn *conf_pg_connect(const char *url, int *lease, dlock__pg_names *names) {
  char *ci = pg_conninfo(url, lease, names);
  PGconn *pg = NULL;
  if (ci) {
    pg = PQconnectdb(ci);
    if (PQstatus(pg) != CONNECTION_OK) {
      fprintf(stderr, "faults_pg: connect: %s", PQerrorMessage(pg));
      PQfinish(pg);
      pg = NULL;
    }
  }
  free(ci);
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

/* ---- cases ---- */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct sd_waiter {
  dlock_client *c;
  const char *key;
  int rc;
  uint64_t token;
  dlock_lock *l;
  char why[512];
};

static void *sd_wait_main(void *arg) {
  struct sd_waiter *w = arg;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 5000;
  w->rc = dlock_acquire(w->c, w->key, &o, &w->l);
  if (w->rc == 0)
    w->token = dlock_lock_token(w->l);
  snprintf(w->why, sizeof w->why, "%s", w->rc ? dlock_client_errmsg(NULL) : "");
  return NULL;
}

/* Until ADM's server shows a session queued for KEY's advisory lock. */
static int queued_for(PGconn *adm, const dlock__pg_names *names, const char *key) {
  uint32_t cls, obj;
  dlock__pg_advisory_split(dlock__pg_advisory_key(names->prefix, key, strlen(key)), &cls, &obj);
  char a[16], b[16];
  snprintf(a, sizeof a, "%" PRIu32, cls);
  snprintf(b, sizeof b, "%" PRIu32, obj);
  const char *params[2] = {a, b};
  for (int64_t end = mono_ms() + 10000; mono_ms() < end;) {
    PGresult *r = PQexecParams(adm,
                               "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                               "AND classid = $1::bigint::oid AND objid = $2::bigint::oid "
                               "AND objsubid = 1",
                               2, NULL, params, NULL, NULL, 0);
    int seen = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
    if (seen)
      return 1;
    /* pg_locks is read in a round trip of its own: no busy loop. */
  }
  return 0;
}

/* Until a new session to URL's server is refused for the server's state
 * (SQLSTATE 57P03): the shutdown has begun. */
static int refusing(const char *url) {
  int lease;
  dlock__pg_names names;
  char *ci = pg_conninfo(url, &lease, &names);
  int seen = 0;
  for (int64_t end = mono_ms() + 20000; ci && !seen && mono_ms() < end;) {
    PGconn *pg = PQconnectdb(ci);
    /* libpq keeps no SQLSTATE for a failed login; the server's text is
     * the one of 57P03 in the startup state it was asked in. */
    seen = PQstatus(pg) == CONNECTION_BAD &&
           strstr(PQerrorMessage(pg), "the database system is shutting down") != NULL;
    PQfinish(pg);
  }
  free(ci);
  return seen;
}

void conf_pg_no_grant_while_shutting_down(void **state);

/* A server shutting down ends every session, freeing its advisory locks,
 * and a waiter whose session it has not ended yet can still be granted
 * one.  The holder learns of its loss only when its socket says so, so a
 * waiter that reported such a grant would say HELD beside a holder that
 * still does (seen in a fault run: 8 ms).  Here the shutdown is a smart
 * one, which refuses new sessions and leaves the old ones be, and the
 * holder's session is ended by hand: the waiter is granted the lock for
 * certain, and must not take it. */
void conf_pg_no_grant_while_shutting_down(void **state) {
  (void)state;
  const char *url = getenv("DLOCK_TEST_PG_SHUTDOWN_URL");
  const char *stop = getenv("DLOCK_TEST_PG_SMART_STOP");
  const char *restart = getenv("DLOCK_TEST_PG_RESTART");
  if (!url || !*url || !stop || !*stop || !restart || !*restart) {
    if (getenv("DLOCK_CONFORMANCE_STRICT"))
      fail_msg("DLOCK_TEST_PG_SHUTDOWN_URL, DLOCK_TEST_PG_SMART_STOP and DLOCK_TEST_PG_RESTART "
               "must be set in CI (a PostgreSQL of the case's own, and how to stop and "
               "restart it)");
    printf("# SKIPPED: DLOCK_TEST_PG_SHUTDOWN_URL, DLOCK_TEST_PG_SMART_STOP or "
           "DLOCK_TEST_PG_RESTART is not set\n");
    skip();
  }
  if (strstr(url, "mode=lease"))
    fail_msg("DLOCK_TEST_PG_SHUTDOWN_URL must be an advisory-mode URL");
  char k[256], hurl[4096];
  snprintf(k, sizeof k, "%s", conf_key("shutdown"));
  snprintf(hurl, sizeof hurl, "%s", conf_url_with(url, "ttl=60s"));
  int lease;
  dlock__pg_names names;
  PGconn *adm = conf_pg_connect(url, &lease, &names);
  assert_non_null(adm);
  dlock_client *h = NULL, *w = NULL;
  assert_int_equal(dlock_open(hurl, &h), 0);
  assert_int_equal(dlock_open(url, &w), 0);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *hl;
  assert_int_equal(dlock_try_acquire(h, k, &o, &hl), 0);
  struct sd_waiter sw = {.c = w, .key = k};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, sd_wait_main, &sw), 0);
  int queued = queued_for(adm, &names, k);
  int stopped = queued && system(stop) == 0;
  int refused = stopped && refusing(url);
  long ended = refused ? conf_pg_terminate_holder(adm, &names, k) : -1;
  pthread_join(th, NULL);
  int h_lost = ended == 1 && event_wait(&lost, 1, 10000) == 1;
  int64_t t0 = mono_ms();
  if (sw.rc == 0)
    printf("# the waiter reported the lock (token %" PRIu64 ") while the server was shutting "
           "down; the holder was %s then\n",
           sw.token, dlock_lock_state(hl) == DLOCK_HELD ? "still HELD" : "LOST");
  else
    printf("# the waiter did not take it: %s: %s\n", dlock_err_name(sw.rc), sw.why);
  /* Every session ends, the smart shutdown completes, the server comes
   * back. */
  if (sw.rc == 0)
    dlock_release(sw.l);
  dlock_release(hl);
  dlock_close(w);
  dlock_close(h);
  PQfinish(adm);
  int back = stopped && system(restart) == 0;
  printf("# server back %lld ms after the sessions ended\n", (long long)(mono_ms() - t0));
  assert_true(queued);
  assert_true(stopped);
  assert_true(refused);
  assert_int_equal(ended, 1);
  assert_true(h_lost);
  if (sw.rc == 0)
    fail_msg("a lock granted while the server was shutting down was reported held");
  assert_true(sw.rc == DLOCK_ECONN || sw.rc == DLOCK_ETIMEDOUT);
  assert_true(back);
  /* And once the server is up, the key is there to take. */
  dlock_client *c = NULL;
  assert_int_equal(dlock_open(url, &c), 0);
  dlock_lock *l;
  dlock_options o2 = DLOCK_OPTIONS_INIT;
  o2.wait_ms = 10000;
  assert_int_equal(dlock_acquire(c, k, &o2, &l), 0);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* The URL under test, for the cases below (set by conf_pg_cases). */
const char *conf_pg_url;

static long count_rows(PGconn *adm, const char *sql, const char *arg) {
  const char *params[1] = {arg};
  return exec_count(adm, sql, 1, params);
}

void conf_pg_released_names_leave_nothing(void **state);

/* A cache that locks one name per entry meets millions of names: what the
 * server keeps of a released name must go.  Advisory mode keeps nothing
 * once the session lets go; lease mode keeps the row for a grace after
 * its last use (so that the next holder within it takes the row over),
 * then deletes it, and a name taken again after that still gets a larger
 * token.  The grace is made to pass by ageing the rows' last use. */
void conf_pg_released_names_leave_nothing(void **state) {
  (void)state;
  const char *url = conf_pg_url;
  assert_non_null(url);
  int lease;
  dlock__pg_names names;
  PGconn *adm = conf_pg_connect(url, &lease, &names);
  assert_non_null(adm);
  char prefix[256], like[300], k[300];
  snprintf(prefix, sizeof prefix, "%s", conf_key("names/"));
  snprintf(like, sizeof like, "%s%%", prefix);
  dlock_client *c = NULL;
  assert_int_equal(dlock_open(url, &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  enum { N = 50 };
  uint64_t top = 0;
  for (int i = 0; i < N; i++) {
    dlock_lock *l;
    snprintf(k, sizeof k, "%s%d", prefix, i);
    assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);
    if (dlock_lock_token(l) > top)
      top = dlock_lock_token(l);
    assert_int_equal(dlock_release(l), 0);
  }
  if (!lease) {
    /* Nothing per key: no lock left in the server's table.  (The keys are
     * hashed, so this counts every advisory lock of the database, which
     * other clients may hold: ours are looked up one by one.) */
    long left = 0;
    for (int i = 0; i < N; i++) {
      snprintf(k, sizeof k, "%s%d", prefix, i);
      uint32_t cls, obj;
      dlock__pg_advisory_split(dlock__pg_advisory_key(names.prefix, k, strlen(k)), &cls, &obj);
      char a[16], b[16];
      snprintf(a, sizeof a, "%" PRIu32, cls);
      snprintf(b, sizeof b, "%" PRIu32, obj);
      const char *params[2] = {a, b};
      left += exec_count(adm,
                         "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND "
                         "classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
                         2, params);
    }
    printf("# advisory: %d names released, %ld locks left at the server\n", N, left);
    assert_int_equal(left, 0);
    dlock_close(c);
    PQfinish(adm);
    return;
  }
  char sql[512];
  snprintf(sql, sizeof sql, "SELECT 1 FROM %s WHERE name LIKE $1", names.table);
  long before = count_rows(adm, sql, like);
  /* Rows ended a grace ago, and one ended by an earlier version
   * (-infinity), which has no time of last use. */
  char age[512], legacy[512];
  snprintf(age, sizeof age,
           "UPDATE %s SET expires_at = clock_timestamp() - interval '1 day' WHERE name LIKE $1",
           names.table);
  snprintf(legacy, sizeof legacy, "UPDATE %s SET expires_at = '-infinity' WHERE name = $1",
           names.table);
  assert_int_equal(count_rows(adm, age, like), N);
  snprintf(k, sizeof k, "%s0", prefix);
  assert_int_equal(count_rows(adm, legacy, k), 1);
  /* A client's first acquire or release does the clean-up. */
  dlock_client *c2 = NULL;
  assert_int_equal(dlock_open(url, &c2), 0);
  dlock_lock *l;
  snprintf(k, sizeof k, "%s%d", prefix, N);
  assert_int_equal(dlock_try_acquire(c2, k, &o, &l), 0);
  long after = count_rows(adm, sql, like);
  char stamped[512];
  snprintf(stamped, sizeof stamped,
           "SELECT 1 FROM %s WHERE name = $1 AND expires_at > '-infinity' AND expires_at <= "
           "clock_timestamp()",
           names.table);
  snprintf(k, sizeof k, "%s0", prefix);
  long legacy_kept = count_rows(adm, stamped, k);
  printf("# lease: %d names released: %ld rows; aged past the grace, after a clean-up: %ld "
         "(one held, one ended at -infinity kept and stamped: %ld)\n",
         N, before, after, legacy_kept);
  assert_int_equal(before, N);
  assert_int_equal(after, 2);
  assert_int_equal(legacy_kept, 1);
  assert_int_equal(dlock_release(l), 0);
  /* A deleted name taken again: a larger token than any before. */
  snprintf(k, sizeof k, "%s7", prefix);
  assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);
  printf("# name taken again after its row went: token %" PRIu64 " (largest before %" PRIu64
         ")\n",
         dlock_lock_token(l), top);
  assert_true(dlock_lock_token(l) > top);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c2);
  dlock_close(c);
  PQfinish(adm);
}

struct slow_taker {
  dlock_client *c;
  const char *key;
  int rc;
  uint64_t token;
};

static void *slow_take_main(void *arg) {
  struct slow_taker *t = arg;
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *l;
  t->rc = dlock_try_acquire(t->c, t->key, &o, &l);
  if (t->rc == 0) {
    t->token = dlock_lock_token(l);
    dlock_release(l);
  }
  return NULL;
}

void conf_pg_slow_first_grant_draws_late(void **state);

/* A name's first holder (no row) draws its token before its row is in:
 * had a row of that name been deleted in between, it could hold a later
 * token.  Rows go only a grace after their last use, so a grant whose
 * statement ran long draws its token again once it holds the row.  Here
 * the statement waits 11 s on an uncommitted row of the same name, while
 * another key is taken: the slow grant's token must be above that one. */
void conf_pg_slow_first_grant_draws_late(void **state) {
  (void)state;
  const char *url = conf_pg_url;
  assert_non_null(url);
  int lease;
  dlock__pg_names names;
  PGconn *adm = conf_pg_connect(url, &lease, &names);
  assert_non_null(adm);
  if (!lease) {
    PQfinish(adm);
    skip(); /* advisory tokens are drawn once the lock is held */
  }
  char k[256], k2[256];
  snprintf(k, sizeof k, "%s", conf_key("slow-first"));
  snprintf(k2, sizeof k2, "%s", conf_key("slow-other"));
  char ins[512];
  snprintf(ins, sizeof ins,
           "INSERT INTO %s (name, owner, fence, expires_at) VALUES ($1, "
           "md5(random()::text)::uuid, 0, '-infinity')",
           names.table);
  PQclear(PQexec(adm, "BEGIN"));
  const char *params[1] = {k};
  assert_int_equal(exec_count(adm, ins, 1, params), 1);
  dlock_client *a = NULL, *b = NULL;
  assert_int_equal(dlock_open(conf_url_with(url, "timeout=60s"), &a), 0);
  assert_int_equal(dlock_open(url, &b), 0);
  struct slow_taker t = {.c = a, .key = k};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, slow_take_main, &t), 0);
  /* Until its statement waits on our row (seen from a session of its own:
   * ADM is inside the transaction). */
  PGconn *watch = conf_pg_connect(url, &lease, &names);
  assert_non_null(watch);
  int waiting = 0;
  for (int64_t end = mono_ms() + 10000; !waiting && mono_ms() < end;)
    waiting = exec_count(watch,
                         "SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted",
                         0, NULL) > 0;
  /* The slow statement's own length is what is tested, so time must pass. */
  struct timespec ts = {DLOCK__PG_FRESH_MS / 1000 + 1, 0};
  nanosleep(&ts, NULL);
  dlock_lock *l;
  dlock_options o = DLOCK_OPTIONS_INIT;
  assert_int_equal(dlock_try_acquire(b, k2, &o, &l), 0);
  uint64_t mid = dlock_lock_token(l);
  assert_int_equal(dlock_release(l), 0);
  PQclear(PQexec(adm, "ROLLBACK"));
  pthread_join(th, NULL);
  printf("# slow first grant: token %" PRIu64 ", taken %s a grant with token %" PRIu64 "\n",
         t.token, t.token > mid ? "above" : "BELOW", mid);
  PQfinish(watch);
  PQfinish(adm);
  dlock_close(a);
  dlock_close(b);
  assert_true(waiting);
  assert_int_equal(t.rc, 0);
  assert_true(t.token > mid);
}

void conf_pg_failed_probe_keeps_other_locks(void **state);

/* A grant whose probe of the postmaster fails for the client's own want
 * (no descriptor left) is given back alone: the session, and every other
 * lock on it, stays. */
void conf_pg_failed_probe_keeps_other_locks(void **state) {
  (void)state;
  const char *url = conf_pg_url;
  assert_non_null(url);
  if (strstr(url, "mode=lease") || strstr(url, "confirm_grants=false")) {
    printf("# not advisory mode with confirmed grants: nothing to probe\n");
    skip();
  }
  dlock_client *c = NULL, *other = NULL;
  assert_int_equal(dlock_open(url, &c), 0);
  assert_int_equal(dlock_open(url, &other), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.auto_renew = 0;
  o.ttl_ms = 60000;
  char ka[256], kb[256];
  snprintf(ka, sizeof ka, "%s", conf_key("probe-a"));
  snprintf(kb, sizeof kb, "%s", conf_key("probe-b"));
  dlock_lock *a, *b;
  assert_int_equal(dlock_try_acquire(c, ka, &o, &a), 0);
  /* No descriptor left for the probe's socket: the soft limit at the
   * next free one, and every free one below it taken. */
  struct rlimit was;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &was), 0);
  int top = dup(0);
  assert_true(top >= 0);
  struct rlimit low = was;
  low.rlim_cur = (rlim_t)top + 1;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  int fill[4096], nfill = 0;
  fill[nfill++] = top;
  for (int fd; nfill < 4096 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
    fill[nfill++] = fd;
  int rc = dlock_try_acquire(c, kb, &o, &b);
  char why[512];
  snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
  for (int i = 0; i < nfill; i++)
    close(fill[i]);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &was), 0);
  printf("# try with no descriptor left: %s: %s\n", dlock_err_name(rc), why);
  assert_int_equal(rc, DLOCK_ECONN);
  /* A is still held, here and at the server; B was given back. */
  assert_int_equal(dlock_lock_state(a), DLOCK_HELD);
  dlock_lock *x;
  assert_int_equal(dlock_try_acquire(other, ka, &o, &x), DLOCK_EBUSY);
  assert_int_equal(dlock_try_acquire(other, kb, &o, &x), 0);
  assert_int_equal(dlock_release(x), 0);
  assert_int_equal(dlock_release(a), 0);
  dlock_close(c);
  dlock_close(other);
}
