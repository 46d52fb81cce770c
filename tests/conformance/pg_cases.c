/* PostgreSQL-only conformance cases: what the shared suite cannot see. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "backends/postgres/pg-codec.h"
#include "dlock/admin.h"
#include "dlock/postgres.h"
#include "faults.h"
#include "event.h"
#include "internal.h"
#include "relay.h"

static const char *p_url;

static int is_lease(void) { return strstr(p_url, "mode=lease") != NULL; }

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dlock_client *open_url(const char *url) {
  dlock_client *c = NULL;
  int rc = dlock_open(url, &c);
  if (rc != 0)
    fprintf(stderr, "open: %s\n", dlock_client_errmsg(NULL));
  assert_int_equal(rc, 0);
  return c;
}

/* Runs SQL on PG; asserts it succeeded. */
static void exec_ok(PGconn *pg, const char *sql) {
  PGresult *r = PQexec(pg, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok)
    fprintf(stderr, "%s: %s", sql, PQerrorMessage(pg));
  PQclear(r);
  assert_true(ok);
}

/* Drops the lease table and fence sequence of PREFIX on URL's server. */
static void drop_schema(const char *url, const char *prefix) {
  char extra[96];
  snprintf(extra, sizeof extra, "prefix=%s", prefix);
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(conf_url_with(url, extra), &lease, &names);
  assert_non_null(pg);
  char sql[512];
  snprintf(sql, sizeof sql,
           "SET client_min_messages TO warning; DROP TABLE IF EXISTS %s; "
           "DROP SEQUENCE IF EXISTS %s",
           names.table, names.sequence);
  exec_ok(pg, sql);
  PQfinish(pg);
}

/* Takes KEY on C, has it taken away from outside (conf_break_lock: an
 * ended session, a deleted row) and waits up to WITHIN_MS for C to report
 * it lost.  Returns how long that took. */
static int64_t lose_from_outside(dlock_client *c, const char *key, int64_t within_ms) {
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, key, &o, &l), 0);
  int64_t t0 = now_ms();
  assert_int_equal(conf_break_lock(p_url, key), 0);
  assert_int_equal(event_wait(&lost, 1, within_ms), 1);
  int64_t took = now_ms() - t0;
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  return took;
}

/* Advisory locks live in server sessions, which a transaction pooler hands
 * from client to client: refused with a message that says what to do. */
static void p1_pooler_refuses_advisory(void **state) {
  (void)state;
  const char *pb = getenv("DLOCK_TEST_PGBOUNCER_URL");
  if (!pb || !*pb)
    skip();
  char url[2048];
  snprintf(url, sizeof url, "%s", pb);
  dlock_client *c = (dlock_client *)0x1;
  int rc = dlock_open(url, &c);
  printf("# advisory through the pooler: %s: %s\n", dlock_err_name(rc),
         dlock_client_errmsg(NULL));
  assert_int_equal(rc, DLOCK_EINVAL);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "pooler"));
  assert_non_null(strstr(dlock_client_errmsg(NULL), "mode=lease"));
  assert_ptr_equal(c, (dlock_client *)0x1);
  /* Lease mode through the same pooler opens. Its tables take the run's
   * own prefix, so that a default run leaves the store's schema as it was
   * (cleanup drops them too, after a failure half-way). */
  char extra[96];
  snprintf(extra, sizeof extra, "mode=lease&prefix=%s", conf_pg_run_prefix());
  dlock_client *l = open_url(conf_url_with(url, extra));
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *h;
  assert_int_equal(dlock_try_acquire(l, conf_key("p1"), &o, &h), 0);
  assert_int_equal(dlock_release(h), 0);
  dlock_close(l);
  drop_schema(url, conf_pg_run_prefix());
}

/* The server ends the holder's session: LOST within seconds, long before
 * the first renewal of a one-minute lease would have noticed. */
static void p2_terminated_session_lost_at_once(void **state) {
  (void)state;
  if (is_lease())
    skip(); /* a lease row has no session: loss shows at the next renewal */
  dlock_client *c = open_url(conf_url_with(p_url, "ttl=60s"));
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("p2"));
  printf("# LOST %lld ms after pg_terminate_backend (ttl 60 s)\n",
         (long long)lose_from_outside(c, k, 10000));
  /* The client goes on with new sessions. */
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* The server sessions of the connections named APP that PG's server shows. */
static long sessions_of(PGconn *pg, const char *app) {
  const char *params[1] = {app};
  PGresult *r = PQexecParams(
      pg, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", 1, NULL, params,
      NULL, NULL, 0);
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  long n = atol(PQgetvalue(r, 0, 0));
  PQclear(r);
  return n;
}

#define MANY 1000

/* Holding a thousand locks takes a handful of sessions, not a thousand. */
static void p3_many_locks_few_sessions(void **state) {
  (void)state;
  char app[64], extra[96];
  snprintf(app, sizeof app, "dlock-conf-%s", conf_run_id);
  snprintf(extra, sizeof extra, "application_name=%s", app);
  dlock_client *c = open_url(conf_url_with(p_url, extra));
  dlock_lock **ls = calloc(MANY, sizeof *ls);
  assert_non_null(ls);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 60000;
  char k[64];
  for (int i = 0; i < MANY; i++) {
    snprintf(k, sizeof k, "%s-%d", conf_key("p3"), i);
    assert_int_equal(dlock_try_acquire(c, k, &o, &ls[i]), 0);
  }
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(p_url, &lease, &names);
  assert_non_null(pg);
  long sessions = sessions_of(pg, app);
  PQfinish(pg);
  printf("# %d locks held over %ld server sessions\n", MANY, sessions);
  assert_true(sessions <= 10);
  for (int i = 0; i < MANY; i++)
    assert_int_equal(dlock_release(ls[i]), 0);
  free(ls);
  dlock_close(c);
}

static struct dlock_pg_stats pg_stats(dlock_client *c) {
  struct dlock_pg_stats st;
  assert_int_equal(dlock_control(c, NULL, DLOCK_PG_CTL_STATS, &st), 0);
  return st;
}

#define RENEWED 10000

/* Thousands of locks taken one after another, each renewed at ttl/3: the
 * store hears about one renewal round a period (a ping per session, a
 * statement per 2,500 rows), not a round whenever another lock comes due,
 * from the first lock on.  And a lock lost from outside is still seen
 * within its ttl. */
static void p13_renewals_per_period(void **state) {
  (void)state;
  /* A lease row costs the server a write per renewal: a longer ttl, so
   * that a loaded server still renews 10,000 of them in time. */
  const int64_t ttl_ms = is_lease() ? 6000 : 3000, period_ms = ttl_ms / 3;
  char extra[64];
  snprintf(extra, sizeof extra, "ttl=%lldms&confirm_grants=false", (long long)ttl_ms);
  dlock_client *c = open_url(conf_url_with(p_url, extra));
  dlock_lock **ls = calloc(RENEWED, sizeof *ls);
  assert_non_null(ls);
  dlock_options o = DLOCK_OPTIONS_INIT;
  char k[64];
  uint64_t before = pg_stats(c).renewals;
  int64_t t0 = now_ms();
  for (int i = 0; i < RENEWED; i++) {
    snprintf(k, sizeof k, "%s-%d", conf_key("p13"), i);
    assert_int_equal(dlock_try_acquire(c, k, &o, &ls[i]), 0);
  }
  int64_t took = now_ms() - t0;
  /* Two periods more: the renewals of the last locks taken, and rounds
   * that had all of them. */
  struct timespec ts = {2 * period_ms / 1000, 0};
  nanosleep(&ts, NULL);
  uint64_t renewals = pg_stats(c).renewals - before;
  int64_t periods = (now_ms() - t0) / period_ms + 1;
  printf("# %d locks taken in %lld ms; %llu renewal statements in %lld periods\n", RENEWED,
         (long long)took, (unsigned long long)renewals, (long long)periods);
  /* A few a period (rounds half a period apart while locks are being
   * taken, a ping per session or a statement per 2,500 rows); a round for
   * every few locks coming due made dozens. */
  assert_true(renewals <= (uint64_t)(10 * periods));
  for (int i = 0; i < RENEWED; i++)
    assert_int_equal(dlock_lock_state(ls[i]), DLOCK_HELD);
  /* One lock lost from outside: a deleted row (lease), an ended session
   * (advisory, which takes the session's other locks too). */
  char lk[256];
  snprintf(lk, sizeof lk, "%s", conf_key("p13-lost"));
  printf("# a lock lost from outside was reported after %lld ms (ttl %lld ms)\n",
         (long long)lose_from_outside(c, lk, ttl_ms + period_ms), (long long)ttl_ms);
  for (int i = 0; i < RENEWED; i++)
    dlock_release(ls[i]);
  free(ls);
  dlock_close(c);
}

/* End every server session of the connections named APP, and wait until
 * the server shows none. */
static void end_sessions_of(PGconn *pg, const char *app) {
  const char *params[1] = {app};
  PGresult *r = PQexecParams(pg,
                             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE application_name = $1 AND pid <> pg_backend_pid()",
                             1, NULL, params, NULL, NULL, 0);
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  assert_true(atol(PQgetvalue(r, 0, 0)) >= 1);
  PQclear(r);
  int64_t until = now_ms() + 10000;
  while (sessions_of(pg, app) > 0)
    assert_true(now_ms() < until);
}

static void acquire_release(dlock_client *c, const char *key, int times) {
  dlock_options o = DLOCK_OPTIONS_INIT;
  for (int i = 0; i < times; i++) {
    dlock_lock *l;
    int rc = dlock_try_acquire(c, key, &o, &l);
    if (rc != 0)
      fprintf(stderr, "acquire: %s\n", dlock_client_errmsg(c));
    assert_int_equal(rc, 0);
    assert_int_equal(dlock_release(l), 0);
  }
}

/* Statements are prepared once per server session and then sent by name;
 * a new session (the old one ended) prepares them again.  Through a
 * transaction pooler, which hands each transaction to any server session,
 * they go unnamed; told that the pooler keeps them (?prepare=true), which
 * this PgBouncer does not, the client finds a statement missing once the
 * sessions it prepared them on are gone, sends that call again unnamed and
 * sends unnamed statements from then on. */
static void p14_prepared_once_per_session(void **state) {
  (void)state;
  char app[64], extra[160], key[256];
  snprintf(app, sizeof app, "dlock-conf-p14-%s", conf_run_id);
  snprintf(extra, sizeof extra, "application_name=%s&confirm_grants=false", app);
  snprintf(key, sizeof key, "%s", conf_key("p14"));
  dlock_client *c = open_url(conf_url_with(p_url, extra));
  acquire_release(c, key, 1);
  struct dlock_pg_stats a = pg_stats(c);
  acquire_release(c, key, 20);
  struct dlock_pg_stats b = pg_stats(c);
  printf("# named %d; after one pair %llu prepares, after 20 more %llu (statements %llu)\n",
         b.named, (unsigned long long)a.prepares, (unsigned long long)b.prepares,
         (unsigned long long)b.statements);
  assert_true(b.statements >= a.statements + 40);
  assert_int_equal(b.unprepared, 0);
  const char *pb = getenv("DLOCK_TEST_PGBOUNCER_URL");
  if (b.named) {
    /* The clean-up may come due once in between: one statement more. */
    assert_true(a.prepares >= 2);
    assert_true(b.prepares <= a.prepares + 1);
  } else {
    assert_int_equal(b.prepares, 0);
  }
  if (!is_lease()) {
    /* The session holding a lock ends: the next one prepares again. */
    lose_from_outside(c, key, 10000);
    acquire_release(c, key, 2);
    struct dlock_pg_stats d = pg_stats(c);
    printf("# after the session ended: %llu prepares\n", (unsigned long long)d.prepares);
    assert_int_equal(d.named, 1);
    assert_int_equal(d.unprepared, 0);
    assert_true(d.prepares >= b.prepares + 2);
  }
  dlock_close(c);
  if (is_lease() || !pb || !*pb)
    return;
  /* Advisory URL: the pooler part, once per run, against the pooler of
   * DLOCK_TEST_PGBOUNCER_URL. */
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(p_url, &lease, &names);
  assert_non_null(pg);
  snprintf(extra, sizeof extra, "mode=lease&prefix=%s&application_name=%s",
           conf_pg_run_prefix(), app);
  c = open_url(conf_url_with(pb, extra));
  acquire_release(c, key, 3);
  struct dlock_pg_stats p = pg_stats(c);
  assert_int_equal(p.named, 0);
  assert_int_equal(p.prepares, 0);
  dlock_close(c);
  snprintf(extra, sizeof extra, "mode=lease&prefix=%s&application_name=%s&prepare=true",
           conf_pg_run_prefix(), app);
  c = open_url(conf_url_with(pb, extra));
  acquire_release(c, key, 3);
  p = pg_stats(c);
  assert_int_equal(p.named, 1);
  assert_true(p.prepares >= 2);
  /* The pooler's server sessions end; it opens others for the next
   * transactions, which have none of the client's statements. */
  end_sessions_of(pg, app);
  acquire_release(c, key, 3);
  struct dlock_pg_stats q = pg_stats(c);
  printf("# through the pooler with prepare=true: %llu prepares, %llu missing, named %d\n",
         (unsigned long long)q.prepares, (unsigned long long)q.unprepared, q.named);
  assert_true(q.unprepared >= 1);
  assert_int_equal(q.named, 0);
  acquire_release(c, key, 3);
  assert_int_equal(pg_stats(c).prepares, q.prepares);
  dlock_close(c);
  PQfinish(pg);
  drop_schema(pb, conf_pg_run_prefix());
}

struct waiter {
  dlock_client *c;
  const char *key;
  int rc;
  dlock_lock *l;
};

static void *wait_main(void *arg) {
  struct waiter *w = arg;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 30000;
  w->rc = dlock_acquire(w->c, w->key, &o, &w->l);
  return NULL;
}

/* Until the server shows a session waiting for KEY's advisory lock. */
static int server_shows_waiter(const char *key) {
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(p_url, &lease, &names);
  if (!pg)
    return 0;
  uint32_t cls, obj;
  dlock__pg_advisory_split(dlock__pg_advisory_key(names.prefix, key, strlen(key)), &cls, &obj);
  char a[16], b[16];
  snprintf(a, sizeof a, "%u", cls);
  snprintf(b, sizeof b, "%u", obj);
  const char *params[2] = {a, b};
  int seen = 0;
  for (int64_t end = now_ms() + 10000; !seen && now_ms() < end;) {
    PGresult *r = PQexecParams(pg,
                               "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                               "AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
                               2, NULL, params, NULL, NULL, 0);
    seen = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
  }
  PQfinish(pg);
  return seen;
}

/* A thread blocked in a wait leaves the client's other threads free to
 * acquire and release. */
static void p4_waiter_blocks_no_one(void **state) {
  (void)state;
  dlock_client *holder = open_url(p_url), *c = open_url(p_url);
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("p4"));
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *h;
  assert_int_equal(dlock_try_acquire(holder, k, &o, &h), 0);
  struct waiter w = {.c = c, .key = k};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, wait_main, &w), 0);
  if (!is_lease())
    assert_true(server_shows_waiter(k));
  int64_t t0 = now_ms();
  for (int i = 0; i < 50; i++) {
    char k2[300];
    dlock_lock *l;
    snprintf(k2, sizeof k2, "%s-other-%d", k, i);
    assert_int_equal(dlock_try_acquire(c, k2, &o, &l), 0);
    assert_int_equal(dlock_release(l), 0);
  }
  int64_t el = now_ms() - t0;
  printf("# 50 acquire+release pairs beside a blocked waiter: %lld ms\n", (long long)el);
  assert_true(el < 10000);
  /* The waiter is still waiting: it gets the lock only now. */
  assert_int_equal(dlock_lock_state(h), DLOCK_HELD);
  assert_int_equal(dlock_release(h), 0);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, 0);
  assert_int_equal(dlock_release(w.l), 0);
  dlock_close(c);
  dlock_close(holder);
}

#define RACERS 8

struct racer {
  const char *url;
  pthread_barrier_t *go;
  int rc;
};

static void *race_main(void *arg) {
  struct racer *r = arg;
  dlock_client *c = NULL;
  pthread_barrier_wait(r->go);
  r->rc = dlock_open(r->url, &c);
  if (r->rc == 0) {
    dlock_options o = DLOCK_OPTIONS_INIT;
    dlock_lock *l;
    o.wait_ms = 20000;
    r->rc = dlock_acquire(c, "p5", &o, &l);
    if (r->rc == 0)
      r->rc = dlock_release(l);
    dlock_close(c);
  }
  if (r->rc != 0)
    fprintf(stderr, "racer: %s\n", dlock_client_errmsg(NULL));
  return NULL;
}

/* Many clients meeting a new prefix at once all create its schema, or find
 * it, without an error. */
static void p5_schema_created_once_under_a_race(void **state) {
  (void)state;
  char extra[96];
  snprintf(extra, sizeof extra, "prefix=%s", conf_pg_run_prefix());
  char url[4096];
  snprintf(url, sizeof url, "%s", conf_url_with(p_url, extra));
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, RACERS);
  struct racer rs[RACERS];
  pthread_t ts[RACERS];
  for (int i = 0; i < RACERS; i++) {
    rs[i] = (struct racer){.url = url, .go = &go};
    assert_int_equal(pthread_create(&ts[i], NULL, race_main, &rs[i]), 0);
  }
  int failed = 0;
  for (int i = 0; i < RACERS; i++) {
    pthread_join(ts[i], NULL);
    failed += rs[i].rc != 0;
  }
  pthread_barrier_destroy(&go);
  drop_schema(p_url, conf_pg_run_prefix());
  assert_int_equal(failed, 0);
}

/* p_url's hosts and database with USERINFO (as written, may be NULL) and
 * EXTRA parameters. */
static const char *pg_url_as(const char *userinfo, const char *extra) {
  static char buf[2048];
  dlock_url *u = NULL;
  assert_int_equal(dlock__url_parse(p_url, &u), 0);
  int o = snprintf(buf, sizeof buf, "postgres://%s%s", userinfo ? userinfo : "",
                   userinfo ? "@" : "");
  for (size_t i = 0; i < dlock_url_host_count(u); i++) {
    o += snprintf(buf + o, sizeof buf - (size_t)o, "%s%s", i ? "," : "", dlock_url_host(u, i));
    if (dlock_url_port(u, i))
      o += snprintf(buf + o, sizeof buf - (size_t)o, ":%d", dlock_url_port(u, i));
  }
  snprintf(buf + o, sizeof buf - (size_t)o, "%s?connect_timeout=2s%s%s", dlock_url_path(u),
           extra ? "&" : "", extra ? extra : "");
  dlock__url_free(u);
  return buf;
}

/* What libpq or the server says about a URL never reaches the caller with
 * a password in it.  libpq used to get the caller's string: it ended the
 * userinfo at the first '@' and tried to resolve the password's tail as a
 * host, and it quoted a password it could not decode. */
static void p6_messages_hide_the_password(void **state) {
  (void)state;
  dlock_url *u = NULL;
  assert_int_equal(dlock__url_parse(p_url, &u), 0);
  char user[256];
  snprintf(user, sizeof user, "%s", dlock_url_user(u) ? dlock_url_user(u) : "dlock");
  dlock__url_free(u);
  char ui[512];
  struct {
    const char *password, *extra;
    int want; /* 0: refused at login (or accepted by a trust setup) */
  } cases[] = {
      {"Zq9@S3CRETPW", NULL, 0},       /* an '@' left unencoded */
      {"Zq9S3CRETPW", NULL, 0},        /* a plainly wrong password */
      {"Zq9%40S3CRETPW", NULL, 0},     /* encoded */
      {"p%zzS3CRETPW", NULL, DLOCK_EINVAL},
      {"Zq9S3CRETPW", "port=Zq9S3CRETPW", DLOCK_ECONN},
      {"Zq9S3CRETPW", "sslmode=Zq9S3CRETPW", DLOCK_ECONN},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(ui, sizeof ui, "%s:%s", user, cases[i].password);
    const char *url = pg_url_as(ui, cases[i].extra);
    dlock_client *c = NULL;
    int rc = dlock_open(url, &c);
    const char *m = rc == 0 ? dlock_client_url(c) : dlock_client_errmsg(NULL);
    printf("# %s: %s\n", dlock_err_name(rc), m);
    if (strstr(m, "S3CRETPW") || strstr(m, "Zq9"))
      fail_msg("open(%s) shows the password: %s", url, m);
    if (cases[i].want)
      assert_int_equal(rc, cases[i].want);
    else if (rc != 0 && rc != DLOCK_EAUTH)
      fail_msg("open(%s) = %s, want DLOCK_EAUTH: %s", url, dlock_err_name(rc), m);
    if (rc == 0)
      dlock_close(c);
  }
}

/* ---- list and break ---- */

struct listed {
  int calls;
  char keys[8][300];
  dlock_info infos[8];
  unsigned char *seen; /* p7's numbered keys, each counted once */
  int numbered, dup;
  const char *numbered_prefix;
};

static int note_listed(void *arg, const char *key, const dlock_info *info) {
  struct listed *ls = arg;
  if (ls->calls < 8) {
    snprintf(ls->keys[ls->calls], sizeof ls->keys[0], "%s", key);
    ls->infos[ls->calls] = *info;
  }
  ls->calls++;
  size_t pl = ls->numbered_prefix ? strlen(ls->numbered_prefix) : 0;
  if (pl && strncmp(key, ls->numbered_prefix, pl) == 0) {
    int i = atoi(key + pl);
    if (i >= 0 && i < ls->numbered) {
      ls->dup += ls->seen[i];
      ls->seen[i] = 1;
    }
  }
  return 0;
}

static int list_count(dlock_client *c, const char *prefix, struct listed *ls) {
  memset(ls->keys, 0, sizeof ls->keys);
  ls->calls = 0;
  int rc = dlock_list(c, prefix, note_listed, ls);
  if (rc != 0)
    fail_msg("dlock_list('%s') = %s: %s", prefix, dlock_err_name(rc), dlock_client_errmsg(NULL));
  return ls->calls;
}

#define P7_MANY 1100

/* Advisory mode keeps hashes, and says so.  A lease table is listed by the
 * bytes of the names: '%' and '_' are no patterns, a prefix that ends
 * part-way through a character still finds the keys that begin with it,
 * and more locks than one statement returns come back once each. */
static void p7_list_by_name(void **state) {
  (void)state;
  dlock_client *a = open_url(p_url);
  if (!is_lease()) {
    assert_false(dlock_client_caps(a) & DLOCK_CAP_LIST);
    assert_true(dlock_client_caps(a) & DLOCK_CAP_BREAK);
    struct listed ls = {0};
    assert_int_equal(dlock_list(a, conf_key(""), note_listed, &ls), DLOCK_ENOTSUP);
    const char *m = dlock_client_errmsg(NULL);
    printf("# %s\n", m);
    assert_non_null(strstr(m, "hash"));
    assert_non_null(strstr(m, "mode=lease"));
    dlock_url *u = NULL;
    assert_int_equal(dlock__url_parse(p_url, &u), 0);
    const char *pw = dlock_url_password(u);
    if (pw && *pw && strstr(m, pw))
      fail_msg("the message shows the URL's password: %s", m);
    dlock__url_free(u);
    assert_int_equal(ls.calls, 0);
    dlock_close(a);
    return;
  }
  assert_true(dlock_client_caps(a) & DLOCK_CAP_LIST);
  assert_true(dlock_client_caps(a) & DLOCK_CAP_BREAK);
  char pre[256], k[4][300], q[320];
  snprintf(pre, sizeof pre, "%s", conf_key("p7/"));
  const char *tails[4] = {"100%_done", "100x_done", "\xc3\xbc-u", "\xc3\xa4-a"};
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 60000;
  o.owner_label = "p7 lister";
  dlock_lock *l[4];
  for (int i = 0; i < 4; i++) {
    snprintf(k[i], sizeof k[i], "%s%s", pre, tails[i]);
    assert_int_equal(dlock_try_acquire(a, k[i], &o, &l[i]), 0);
  }
  struct listed ls = {0};
  snprintf(q, sizeof q, "%s100%%", pre);
  assert_int_equal(list_count(a, q, &ls), 1);
  assert_string_equal(ls.keys[0], k[0]);
  assert_int_equal(ls.infos[0].token, dlock_lock_token(l[0]));
  assert_string_equal(ls.infos[0].owner, dlock_lock_owner(l[0]));
  assert_string_equal(ls.infos[0].label, "p7 lister");
  assert_true(ls.infos[0].ttl_ms > 50000 && ls.infos[0].ttl_ms <= 60000);
  snprintf(q, sizeof q, "%s100_", pre);
  assert_int_equal(list_count(a, q, &ls), 0);
  snprintf(q, sizeof q, "%s\xc3", pre);
  assert_int_equal(list_count(a, q, &ls), 2);
  snprintf(q, sizeof q, "%s\xc3\xbc", pre);
  assert_int_equal(list_count(a, q, &ls), 1);
  assert_string_equal(ls.keys[0], k[2]);
  /* Bytes no key can begin with: nothing, and no error from the server. */
  snprintf(q, sizeof q, "%s\xff", pre);
  assert_int_equal(list_count(a, q, &ls), 0);
  snprintf(q, sizeof q, "%s\xc3(", pre);
  assert_int_equal(list_count(a, q, &ls), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(dlock_release(l[i]), 0);

  char mp[256];
  snprintf(mp, sizeof mp, "%s", conf_key("p7-many/"));
  dlock_lock **many = calloc(P7_MANY, sizeof *many);
  unsigned char *seen = calloc(P7_MANY, 1);
  assert_non_null(many);
  assert_non_null(seen);
  for (int i = 0; i < P7_MANY; i++) {
    char key[300];
    snprintf(key, sizeof key, "%s%d", mp, i);
    assert_int_equal(dlock_try_acquire(a, key, &o, &many[i]), 0);
  }
  struct listed all = {.seen = seen, .numbered = P7_MANY, .numbered_prefix = mp};
  int64_t t0 = now_ms();
  assert_int_equal(list_count(a, mp, &all), P7_MANY);
  printf("# %d locks listed in %lld ms\n", P7_MANY, (long long)(now_ms() - t0));
  assert_int_equal(all.dup, 0);
  for (int i = 0; i < P7_MANY; i++)
    assert_int_equal(seen[i], 1);
  for (int i = 0; i < P7_MANY; i++)
    assert_int_equal(dlock_release(many[i]), 0);
  free(many);
  free(seen);
  dlock_close(a);
}

/* Until the server shows the client of application_name APP listening:
 * a lease waiter has registered and will hear the next NOTIFY. */
static int server_shows_listener(const char *app) {
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(p_url, &lease, &names);
  if (!pg)
    return 0;
  char listen[96];
  snprintf(listen, sizeof listen, "LISTEN %s", names.channel);
  const char *params[2] = {app, listen};
  int seen = 0;
  for (int64_t end = now_ms() + 10000; !seen && now_ms() < end;) {
    PGresult *r = PQexecParams(pg,
                               "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 "
                               "AND query = $2",
                               2, NULL, params, NULL, NULL, 0);
    seen = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
    PQclear(r);
  }
  PQfinish(pg);
  return seen;
}

struct timed_waiter {
  dlock_client *c;
  const char *key;
  int rc;
  int64_t got_ms;
  dlock_lock *l;
  struct event done;
};

static void *timed_wait_main(void *arg) {
  struct timed_waiter *w = arg;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 30000;
  w->rc = dlock_acquire(w->c, w->key, &o, &w->l);
  w->got_ms = now_ms();
  event_signal(&w->done);
  return NULL;
}

/* A break wakes a blocked waiter as a release does (the server's lock
 * queue; the release's NOTIFY), not when the holder's minute-long lease
 * would have run out. */
static void p8_break_wakes_waiter(void **state) {
  (void)state;
  char app[64], extra[96], k[256];
  snprintf(app, sizeof app, "dlock-conf-%s-p8", conf_run_id);
  snprintf(extra, sizeof extra, "application_name=%s", app);
  snprintf(k, sizeof k, "%s", conf_key("p8"));
  dlock_client *a = open_url(p_url), *b = open_url(conf_url_with(p_url, extra)),
               *op = open_url(p_url);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 60000;
  dlock_lock *h;
  assert_int_equal(dlock_try_acquire(a, k, &o, &h), 0);
  struct timed_waiter w = {.c = b, .key = k};
  event_init(&w.done);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, timed_wait_main, &w), 0);
  if (!is_lease())
    assert_true(server_shows_waiter(k));
  else if (dlock_client_caps(b) & DLOCK_CAP_NATIVE_WAIT)
    assert_true(server_shows_listener(app));
  /* Behind a pooler the waiter polls, and may not be asleep yet: then
   * this shows only that it gets the lock once broken. */
  assert_int_equal(event_wait(&w.done, 1, 200), 0);
  int64_t t0 = now_ms();
  dlock_info got;
  assert_int_equal(dlock_break(op, k, NULL, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(event_wait(&w.done, 1, 10000), 1);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, 0);
  printf("# the waiter got the lock %lld ms after the break (holder's ttl 60 s)\n",
         (long long)(w.got_ms - t0));
  assert_true(w.got_ms - t0 < 10000); /* not the holder's 60 s */
  assert_true(dlock_lock_token(w.l) > dlock_lock_token(h));
  assert_int_equal(dlock_release(w.l), 0);
  assert_int_equal(dlock_release(h), DLOCK_ELOST);
  dlock_close(op);
  dlock_close(b);
  dlock_close(a);
}

/* A break with what inspect showed never hits a holder that took the lock
 * since: in advisory mode the server keeps no owner or token, so what was
 * seen is the holding session, and a new holder on another session is
 * left alone (lease mode: the owner in the row). */
static void p10_break_spares_a_later_holder(void **state) {
  (void)state;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("p10"));
  dlock_client *a = open_url(p_url), *b = open_url(p_url), *op = open_url(p_url);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 60000;
  dlock_lock *la, *lb;
  assert_int_equal(dlock_try_acquire(a, k, &o, &la), 0);
  dlock_info seen, now, got;
  assert_int_equal(dlock_inspect(op, k, &seen), 0);
  assert_int_equal(seen.held, 1);
  assert_int_equal(dlock_release(la), 0);
  assert_int_equal(dlock_try_acquire(b, k, &o, &lb), 0);
  assert_int_equal(dlock_inspect(op, k, &now), 0);
  if (!is_lease() && strcmp(now.label, seen.label) == 0)
    skip(); /* both on one server process: nothing tells them apart */
  int rc = dlock_break(op, k, &seen, &got);
  if (rc != DLOCK_EBUSY)
    fail_msg("break of a holder that has gone: %s: %s", dlock_err_name(rc),
             dlock_client_errmsg(op));
  assert_int_equal(dlock_renew(lb, 0), 0);
  assert_int_equal(dlock_lock_state(lb), DLOCK_HELD);
  assert_int_equal(dlock_break(op, k, &now, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(dlock_release(lb), DLOCK_ELOST);
  dlock_close(op);
  dlock_close(b);
  dlock_close(a);
}

/* The server process that holds KEY's advisory lock, or 0. */
static long holder_pid(const char *key) {
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(p_url, &lease, &names);
  if (!pg)
    return 0;
  uint32_t cls, obj;
  dlock__pg_advisory_split(dlock__pg_advisory_key(names.prefix, key, strlen(key)), &cls, &obj);
  char a[16], b[16];
  snprintf(a, sizeof a, "%u", cls);
  snprintf(b, sizeof b, "%u", obj);
  const char *params[2] = {a, b};
  PGresult *r = PQexecParams(pg,
                             "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                             "AND classid = $1::bigint::oid AND objid = $2::bigint::oid "
                             "AND objsubid = 1",
                             2, NULL, params, NULL, NULL, 0);
  long pid = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                 ? atol(PQgetvalue(r, 0, 0))
                 : 0;
  PQclear(r);
  PQfinish(pg);
  return pid;
}

struct p9_lock {
  char key[256];
  dlock_lock *l;
  struct event lost;
};

static void p9_take(dlock_client *c, struct p9_lock *p, const char *name, int64_t wait_ms) {
  snprintf(p->key, sizeof p->key, "%s", conf_key(name));
  event_init(&p->lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 60000;
  o.wait_ms = wait_ms;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &p->lost;
  o.owner_label = "p9 holder";
  int rc = dlock_acquire(c, p->key, &o, &p->l);
  if (rc != 0)
    fail_msg("acquire '%s': %s: %s", p->key, dlock_err_name(rc), dlock_client_errmsg(NULL));
}

struct p9_wait {
  dlock_client *c;
  struct p9_lock *p;
  const char *name;
};

static void *p9_wait_main(void *arg) {
  struct p9_wait *w = arg;
  p9_take(w->c, w->p, w->name, 30000);
  return NULL;
}

/* What a break does to the holder's other locks.  Advisory mode: another
 * client's lock goes with the whole session that holds it, so that
 * session's other locks are LOST at once too, and the holder's locks on
 * its other sessions stay; a client's own lock goes back alone, on its
 * session.  Lease mode: only the row broken. */
static void p9_break_and_the_holders_other_locks(void **state) {
  (void)state;
  dlock_client *a = open_url(p_url), *b = open_url(p_url), *c = open_url(p_url);
  static struct p9_lock k1, k2, k3, k4;
  p9_take(a, &k1, "p9-1", 0);
  p9_take(a, &k2, "p9-2", 0);
  if (is_lease()) {
    dlock_info got;
    assert_int_equal(dlock_break(b, k1.key, NULL, &got), 0);
    assert_int_equal(got.held, 1);
    assert_int_equal(got.token, dlock_lock_token(k1.l));
    assert_int_equal(dlock_renew(k2.l, 0), 0);
    assert_int_equal(dlock_renew(k1.l, 0), DLOCK_ELOST);
    assert_int_equal(event_wait(&k2.lost, 1, 0), 0);
    assert_int_equal(dlock_lock_state(k2.l), DLOCK_HELD);
    dlock_lock *l;
    dlock_options o = DLOCK_OPTIONS_INIT;
    assert_int_equal(dlock_try_acquire(b, k1.key, &o, &l), 0);
    assert_int_equal(dlock_release(l), 0);
    assert_int_equal(dlock_release(k1.l), DLOCK_ELOST);
    assert_int_equal(dlock_release(k2.l), 0);
    dlock_close(a);
    dlock_close(b);
    dlock_close(c);
    return;
  }
  /* One session carries k1 and k2; k3, obtained by a wait, one of its own. */
  long s1 = holder_pid(k1.key);
  assert_true(s1 > 0);
  assert_int_equal(holder_pid(k2.key), s1);
  struct p9_lock blocker;
  p9_take(c, &blocker, "p9-3", 0);
  struct p9_wait w = {.c = a, .p = &k3, .name = "p9-3"};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, p9_wait_main, &w), 0);
  assert_true(server_shows_waiter(blocker.key));
  assert_int_equal(dlock_release(blocker.l), 0);
  pthread_join(t, NULL);
  long s2 = holder_pid(k3.key);
  assert_true(s2 > 0 && s2 != s1);

  /* A break that names a holder cannot be checked against another
   * client's session: refused, and nothing happens to it. */
  dlock_info named = {0}, got;
  named.token = dlock_lock_token(k1.l);
  assert_int_equal(dlock_break(b, k1.key, &named, &got), DLOCK_EBUSY);
  printf("# %s\n", dlock_client_errmsg(NULL));
  assert_non_null(strstr(dlock_client_errmsg(NULL), "advisory"));
  assert_int_equal(holder_pid(k1.key), s1);
  assert_int_equal(dlock_renew(k1.l, 0), 0);

  int64_t t0 = now_ms();
  assert_int_equal(dlock_break(b, k1.key, NULL, &got), 0);
  int64_t took = now_ms() - t0;
  int early = event_wait(&k1.lost, 1, 0) + event_wait(&k2.lost, 1, 0);
  assert_int_equal(got.held, 1);
  char label[64];
  snprintf(label, sizeof label, "server process %ld", s1);
  assert_string_equal(got.label, label);
  assert_int_equal(event_wait(&k1.lost, 1, 5000), 1);
  assert_int_equal(event_wait(&k2.lost, 1, 5000), 1);
  printf("# the break took %lld ms (the server waits for the session to end); %d of the "
         "session's 2 locks were LOST by then, both after %lld ms\n",
         (long long)took, early, (long long)(now_ms() - t0));
  assert_int_equal(dlock_lock_state(k1.l), DLOCK_LOST);
  assert_int_equal(dlock_lock_state(k2.l), DLOCK_LOST);
  dlock_lock *l;
  dlock_options o = DLOCK_OPTIONS_INIT;
  assert_int_equal(dlock_try_acquire(b, k2.key, &o, &l), 0);
  assert_int_equal(dlock_release(l), 0);
  /* The holder's other session is untouched. */
  assert_int_equal(dlock_lock_state(k3.l), DLOCK_HELD);
  assert_int_equal(dlock_renew(k3.l, 0), 0);
  assert_int_equal(holder_pid(k3.key), s2);
  assert_int_equal(event_wait(&k3.lost, 1, 0), 0);

  /* A's own break of k3 gives it back on its session, which keeps k4. */
  p9_take(a, &k4, "p9-4", 0);
  assert_int_equal(holder_pid(k4.key), s2);
  dlock_info mine = {0};
  mine.token = dlock_lock_token(k3.l);
  assert_int_equal(dlock_break(a, k3.key, &mine, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(got.token, dlock_lock_token(k3.l));
  assert_string_equal(got.owner, dlock_lock_owner(k3.l));
  assert_string_equal(got.label, "p9 holder");
  assert_int_equal(dlock_lock_state(k3.l), DLOCK_LOST);
  assert_int_equal(dlock_try_acquire(b, k3.key, &o, &l), 0);
  assert_int_equal(dlock_release(l), 0);
  assert_int_equal(dlock_renew(k4.l, 0), 0);
  assert_int_equal(holder_pid(k4.key), s2);
  assert_int_equal(event_wait(&k4.lost, 1, 0), 0);

  assert_int_equal(dlock_release(k1.l), DLOCK_ELOST);
  assert_int_equal(dlock_release(k2.l), DLOCK_ELOST);
  assert_int_equal(dlock_release(k3.l), DLOCK_ELOST);
  assert_int_equal(dlock_release(k4.l), 0);
  dlock_close(a);
  dlock_close(b);
  dlock_close(c);
}

/* ---- p11: an unrenewed lock goes back while its session lives ---- */

/* A lock nobody renews is free for others soon after its ttl, while
 * another lock of the client keeps renewing.  Advisory mode: both live in
 * one session, which those renewals keep, and which would keep the first
 * lock for good unless the client gives it back; the session goes on
 * holding the other.  Lease mode: the row expires at the server. */
static void p11_unrenewed_given_back(void **state) {
  (void)state;
  dlock_client *a = open_url(p_url), *b = open_url(p_url);
  /* K goes unrenewed, K2 is renewed throughout. */
  struct event lost;
  event_init(&lost);
  const int64_t ttl = 1000;
  dlock_options once = DLOCK_OPTIONS_INIT, kept = DLOCK_OPTIONS_INIT;
  once.ttl_ms = kept.ttl_ms = ttl;
  once.auto_renew = 0;
  once.on_lost = event_on_lost;
  once.on_lost_arg = &lost;
  char k[256], k2[256];
  snprintf(k, sizeof k, "%s", conf_key("p11"));
  snprintf(k2, sizeof k2, "%s", conf_key("p11-renewed"));
  dlock_lock *l, *l2, *lb;
  int64_t t0 = now_ms();
  assert_int_equal(dlock_try_acquire(a, k, &once, &l), 0);
  assert_int_equal(dlock_try_acquire(a, k2, &kept, &l2), 0);
  uint64_t tok = dlock_lock_token(l);
  long pid = 0;
  if (!is_lease()) {
    pid = holder_pid(k);
    assert_true(pid > 0);
    assert_int_equal(holder_pid(k2), pid);
  }
  dlock_options w = DLOCK_OPTIONS_INIT;
  w.wait_ms = 0;
  assert_int_equal(dlock_try_acquire(b, k, &w, &lb), DLOCK_EBUSY);
  w.wait_ms = 10000;
  int rc = dlock_acquire(b, k, &w, &lb);
  int64_t el = now_ms() - t0;
  if (rc != 0)
    fail_msg("the unrenewed %lld ms lock was still held %lld ms after it was taken: %s: %s",
             (long long)ttl, (long long)el, dlock_err_name(rc), dlock_client_errmsg(NULL));
  printf("# the unrenewed %lld ms lock was free %lld ms after it was taken\n", (long long)ttl,
         (long long)el);
  assert_true(el < ttl + 3000);
  assert_true(dlock_lock_token(lb) > tok);
  /* Its holder was told (once), and the other lock is held as before. */
  assert_int_equal(event_wait(&lost, 1, 2000), 1);
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(dlock_lock_state(l2), DLOCK_HELD);
  assert_int_equal(dlock_renew(l2, 0), 0);
  if (!is_lease())
    assert_int_equal(holder_pid(k2), pid);
  assert_int_equal(dlock_release(lb), 0);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  assert_int_equal(dlock_release(l2), 0);
  assert_int_equal(event_wait(&lost, 2, 0), 1);
  dlock_close(a);
  dlock_close(b);
}

/* ---- p12: an unanswered release leaves nothing held ---- */

/* The server never answers a release (a relay between them swallows
 * everything).  Advisory mode: the session goes with the connection that
 * could not be used again, and the lock with it, so the caller hears
 * DLOCK_ELOST; lease mode: DLOCK_ECONN, and the row expires within its
 * ttl.  Either way another client has the key soon after. */
static void p12_unanswered_release_leaves_nothing(void **state) {
  (void)state;
  const int64_t ttl = 2000;
  dlock_url *u;
  assert_int_equal(dlock__url_parse(p_url, &u), 0);
  conf_relay *r = conf_relay_start(dlock_url_host(u, 0),
                                   dlock_url_port(u, 0) ? dlock_url_port(u, 0) : 5432);
  dlock__url_free(u);
  assert_non_null(r);
  char extra[96];
  snprintf(extra, sizeof extra, "host=127.0.0.1&port=%d&timeout=1s", conf_relay_port(r));
  dlock_client *a = open_url(conf_url_with(p_url, extra)), *b = open_url(p_url);
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("p12"));
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = ttl;
  dlock_lock *l, *lb;
  assert_int_equal(dlock_try_acquire(a, k, &o, &l), 0);
  assert_int_equal(conf_relay_set(r, CONF_RELAY_DROP, 0, 0), 0);
  int64_t t0 = now_ms();
  int rc = dlock_release(l);
  printf("# the unanswered release: %s: %s\n", dlock_err_name(rc), dlock_client_errmsg(NULL));
  assert_int_equal(rc, is_lease() ? DLOCK_ECONN : DLOCK_ELOST);
  dlock_options w = DLOCK_OPTIONS_INIT;
  w.wait_ms = 10000;
  rc = dlock_acquire(b, k, &w, &lb);
  int64_t el = now_ms() - t0;
  if (rc != 0)
    fail_msg("'%s' was still held %lld ms after a release its server never answered: %s: %s",
             k, (long long)el, dlock_err_name(rc), dlock_client_errmsg(NULL));
  printf("# free for another client %lld ms after the release began\n", (long long)el);
  assert_true(el < ttl + 3000);
  assert_int_equal(dlock_release(lb), 0);
  assert_int_equal(conf_relay_set(r, CONF_RELAY_PASS, 0, 0), 0);
  dlock_close(a);
  dlock_close(b);
  conf_relay_stop(r);
}

/* Cases of faults_pg.c. */
extern const char *conf_pg_url;
void conf_pg_no_grant_while_shutting_down(void **state);
void conf_pg_released_names_leave_nothing(void **state);
/* ---- p15: a renewal of more locks than one statement takes ---- */

/* 2,500 rows a statement: these make two, renewed in one pass (taken
 * within the pass's window, 2/9 of the ttl). */
#define P15_LOCKS 2600

/* The server refuses one renewal statement (a trigger on the row of the
 * first lock taken, which the pass sends last); the statement before it,
 * which found the newest lock's row deleted, still decides that lock: it
 * is reported lost in that pass, not once its ttl has run out. */
static void p15_refused_batch_keeps_the_others(void **state) {
  (void)state;
  if (!is_lease())
    skip();
  const int64_t ttl_ms = 30000;
  const char *prefix = conf_pg_run_prefix();
  char extra[160];
  snprintf(extra, sizeof extra, "prefix=%s&ttl=%llds", prefix, (long long)(ttl_ms / 1000));
  char url[4096];
  snprintf(url, sizeof url, "%s", conf_url_with(p_url, extra));
  dlock_client *c = open_url(url);
  dlock_lock **ls = calloc(P15_LOCKS + 2, sizeof *ls);
  assert_non_null(ls);
  char first[256], last[256], k[256];
  snprintf(first, sizeof first, "%s", conf_key("p15/first"));
  snprintf(last, sizeof last, "%s", conf_key("p15/last"));
  int64_t t0 = now_ms();
  assert_int_equal(dlock_try_acquire(c, first, NULL, &ls[0]), 0);
  for (int i = 1; i <= P15_LOCKS; i++) {
    snprintf(k, sizeof k, "%s-%d", conf_key("p15"), i);
    assert_int_equal(dlock_try_acquire(c, k, NULL, &ls[i]), 0);
  }
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  assert_int_equal(dlock_try_acquire(c, last, &o, &ls[P15_LOCKS + 1]), 0);
  int64_t took = now_ms() - t0;
  printf("# %d locks taken in %lld ms\n", P15_LOCKS + 2, (long long)took);
  /* Else the pass would not hold them all: nothing to see. */
  assert_true(took < ttl_ms * 2 / 9 - 1000);

  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(url, &lease, &names);
  assert_non_null(pg);
  char sql[1024], *quoted = PQescapeLiteral(pg, first, strlen(first));
  assert_non_null(quoted);
  snprintf(sql, sizeof sql,
           "CREATE FUNCTION %s_refuse() RETURNS trigger LANGUAGE plpgsql AS "
           "$$BEGIN RAISE EXCEPTION 'refused by the test'; END$$; "
           "CREATE TRIGGER %s_refuse BEFORE UPDATE ON %s FOR EACH ROW "
           "WHEN (OLD.name = %s) EXECUTE FUNCTION %s_refuse()",
           prefix, prefix, names.table, quoted, prefix);
  PQfreemem(quoted);
  exec_ok(pg, sql);
  assert_int_equal(conf_break_lock(url, last), 0);
  int64_t t1 = now_ms();
  /* The first pass is due a third of the ttl after the first lock. */
  int got = event_wait(&lost, 1, ttl_ms / 3 + 5000);
  int64_t seen = now_ms() - t1;
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  printf("# %s after %lld ms; %llu renewals failed\n",
         got ? "the deleted lock was reported lost" : "no loss reported", (long long)seen,
         (unsigned long long)m.renew_failed);
  snprintf(sql, sizeof sql, "DROP TRIGGER %s_refuse ON %s; DROP FUNCTION %s_refuse()", prefix,
           names.table, prefix);
  exec_ok(pg, sql);
  PQfinish(pg);
  assert_int_equal(got, 1);
  assert_true(m.renew_failed >= 1); /* the refused statement's locks */
  assert_int_equal(dlock_lock_state(ls[P15_LOCKS + 1]), DLOCK_LOST);
  assert_int_equal(dlock_lock_state(ls[1]), DLOCK_HELD);
  for (int i = 0; i < P15_LOCKS + 2; i++)
    dlock_release(ls[i]);
  free(ls);
  dlock_close(c);
  drop_schema(p_url, prefix);
}

void conf_pg_slow_first_grant_draws_late(void **state);
void conf_pg_failed_probe_keeps_other_locks(void **state);

const struct conf_case *conf_pg_cases(const char *url, size_t *n) {
  p_url = url;
  conf_pg_url = url;
  static const struct conf_case cases[] = {
      {"p1_pooler_refuses_advisory",
       "advisory mode through a transaction pooler is refused",
       p1_pooler_refuses_advisory, NULL, 0},
      {"p2_terminated_session_lost_at_once",
       "a terminated backend session turns its locks LOST at once (terminates it)",
       p2_terminated_session_lost_at_once, NULL, CONF_DESTRUCTIVE},
      {"p3_many_locks_few_sessions",
       "many held locks need few server sessions",
       p3_many_locks_few_sessions, NULL, 0},
      {"p4_waiter_blocks_no_one",
       "a waiting acquire holds up no other key",
       p4_waiter_blocks_no_one, NULL, 0},
      {"p5_schema_created_once_under_a_race",
       "clients meeting a new prefix at once all create or find its schema",
       p5_schema_created_once_under_a_race, NULL, 0},
      {"p6_messages_hide_the_password",
       "messages about a URL never show its password",
       p6_messages_hide_the_password, NULL, 0},
      /* It stops a server (smart shutdown) and restarts it. */
      {"conf_pg_no_grant_while_shutting_down",
       "no grant while the server shuts down (stops and restarts a server)",
       conf_pg_no_grant_while_shutting_down, NULL, CONF_DESTRUCTIVE},
      {"conf_pg_released_names_leave_nothing",
       "a released name leaves no row or lock behind once its grace is over",
       conf_pg_released_names_leave_nothing, NULL, 0},
      {"conf_pg_slow_first_grant_draws_late",
       "a slow first grant draws its token again once it holds the row",
       conf_pg_slow_first_grant_draws_late, NULL, 0},
      {"p7_list_by_name",
       "lease rows are listed by the bytes of their names; advisory mode says why it cannot",
       p7_list_by_name, NULL, 0},
      {"p8_break_wakes_waiter",
       "a break wakes a blocked waiter as a release does",
       p8_break_wakes_waiter, NULL, 0},
      {"p9_break_and_the_holders_other_locks",
       "advisory: a break ends the holder's session and its other locks, a client's own goes "
       "alone; lease: only the row",
       p9_break_and_the_holders_other_locks, NULL, 0},
      {"p10_break_spares_a_later_holder",
       "a break with what inspect showed spares a holder that took the lock since",
       p10_break_spares_a_later_holder, NULL, 0},
      {"conf_pg_failed_probe_keeps_other_locks",
       "a grant whose server probe fails on the client's side is given back alone",
       conf_pg_failed_probe_keeps_other_locks, NULL, 0},
      {"p11_unrenewed_given_back",
       "a lock nobody renews is free soon after its ttl while another lock keeps the session",
       p11_unrenewed_given_back, NULL, 0},
      {"p13_renewals_per_period",
       "thousands of locks taken one after another cost about one renewal round a period; "
       "a lock lost from outside is still seen within its ttl",
       p13_renewals_per_period, NULL, CONF_DESTRUCTIVE},
      {"p14_prepared_once_per_session",
       "statements are prepared once per session; through a pooler they go unnamed, or fall "
       "back to unnamed once the pooler's sessions lose them",
       p14_prepared_once_per_session, NULL, CONF_DESTRUCTIVE},
      /* It puts a trigger on a table of its own prefix. */
      {"p15_refused_batch_keeps_the_others",
       "a renewal statement the server refuses leaves the answers of the others: a lock "
       "they found lost is reported in that pass",
       p15_refused_batch_keeps_the_others, NULL, CONF_DESTRUCTIVE},
      {"p12_unanswered_release_leaves_nothing",
       "a release the server never answers leaves the key free for others",
       p12_unanswered_release_leaves_nothing, NULL, 0},
  };
  *n = sizeof cases / sizeof *cases;
  return cases;
}
