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
#include "faults.h"
#include "event.h"

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
  /* Lease mode through the same pooler opens. */
  dlock_client *l = open_url(conf_url_with(url, "mode=lease"));
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *h;
  assert_int_equal(dlock_try_acquire(l, conf_key("p1"), &o, &h), 0);
  assert_int_equal(dlock_release(h), 0);
  dlock_close(l);
}

/* The server ends the holder's session: LOST within seconds, long before
 * the first renewal of a one-minute lease would have noticed. */
static void p2_terminated_session_lost_at_once(void **state) {
  (void)state;
  if (is_lease())
    skip(); /* a lease row has no session: loss shows at the next renewal */
  dlock_client *c = open_url(conf_url_with(p_url, "ttl=60s"));
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *l;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("p2"));
  assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);
  int64_t t0 = now_ms();
  assert_int_equal(conf_break_lock(p_url, k), 0);
  assert_int_equal(event_wait(&lost, 1, 10000), 1);
  printf("# LOST %lld ms after pg_terminate_backend (ttl 60 s)\n", (long long)(now_ms() - t0));
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  /* The client goes on with new sessions. */
  assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
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
  const char *params[1] = {app};
  PGresult *r = PQexecParams(
      pg, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", 1, NULL, params,
      NULL, NULL, 0);
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  long sessions = atol(PQgetvalue(r, 0, 0));
  PQclear(r);
  PQfinish(pg);
  printf("# %d locks held over %ld server sessions\n", MANY, sessions);
  assert_true(sessions <= 10);
  for (int i = 0; i < MANY; i++)
    assert_int_equal(dlock_release(ls[i]), 0);
  free(ls);
  dlock_close(c);
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
  char prefix[64], extra[96];
  snprintf(prefix, sizeof prefix, "conf_%s", conf_run_id);
  for (char *p = prefix; *p; p++)
    if (*p == '-')
      *p = '_';
  snprintf(extra, sizeof extra, "prefix=%s", prefix);
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
  int lease;
  dlock__pg_names names;
  PGconn *pg = conf_pg_connect(url, &lease, &names);
  assert_non_null(pg);
  char sql[512];
  snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s; DROP SEQUENCE IF EXISTS %s", names.table,
           names.sequence);
  PQclear(PQexec(pg, sql));
  PQfinish(pg);
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

/* Cases of faults_pg.c. */
extern const char *conf_pg_url;
void conf_pg_no_grant_while_shutting_down(void **state);
void conf_pg_released_names_leave_nothing(void **state);
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
      {"conf_pg_failed_probe_keeps_other_locks",
       "a grant whose server probe fails on the client's side is given back alone",
       conf_pg_failed_probe_keeps_other_locks, NULL, 0},
  };
  *n = sizeof cases / sizeof *cases;
  return cases;
}
