/* Cases only ZooKeeper has: no herd effect on release, first come first
 * served, a session expired from outside, and a leader failover. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#define THREADED 1
#include <zookeeper/zookeeper.h>

#include "backends/zookeeper/zk-codec.h"
#include "dlock/dlock.h"
#include "event.h"
#include "faults.h"
#include "internal.h"

zhandle_t *conf_zk_open(const char *url, const char *key, const clientid_t *cid, char **dir,
                        watcher_fn extra, void *extra_ctx);
void conf_zk_close(zhandle_t *zh);

static const char *z_url;


static dlock_client *open_url(const char *url) {
  dlock_client *c = NULL;
  int rc = dlock_open(url, &c);
  if (rc != 0)
    fail_msg("dlock_open: %s: %s", dlock_err_name(rc), dlock_client_errmsg(NULL));
  return c;
}

/* ---- waiting for a queue to reach a length, on a child watch ---- */

struct qwatch {
  struct event changed;
};

static void qwatch_fn(zhandle_t *zh, int type, int state, const char *path, void *ctx) {
  (void)zh;
  (void)type;
  (void)state;
  (void)path;
  event_signal(&((struct qwatch *)ctx)->changed);
}

struct queue_probe {
  zhandle_t *zh;
  char *dir;
  struct qwatch w;
};

static void probe_open(struct queue_probe *p, const char *key) {
  event_init(&p->w.changed);
  p->zh = conf_zk_open(z_url, key, NULL, &p->dir, qwatch_fn, &p->w);
  assert_non_null(p->zh);
}

static void probe_close(struct queue_probe *p) {
  conf_zk_close(p->zh);
  free(p->dir);
}

/* Waits until KEY's queue holds at least N entries; false after TIMEOUT_MS. */
static bool probe_wait(struct queue_probe *p, int n, int64_t timeout_ms) {
  int64_t end = dlock__now_ns() / 1000000 + timeout_ms;
  for (;;) {
    int seen = event_wait(&p->w.changed, 0, 0);
    struct String_vector sv = {0, NULL};
    int rc = zoo_get_children(p->zh, p->dir, 1, &sv);
    int count = rc == ZOK ? sv.count : 0;
    if (rc == ZOK)
      deallocate_String_vector(&sv);
    if (count >= n)
      return true;
    if (rc == ZNONODE) /* no watch left on a missing dir: look again soon */
      zoo_exists(p->zh, p->dir, 1, NULL);
    int64_t left = end - dlock__now_ns() / 1000000;
    if (left <= 0)
      return false;
    event_wait(&p->w.changed, seen + 1, left);
  }
}

static uint64_t watch_events(dlock_client *c) {
  uint64_t n = 0;
  assert_int_equal(dlock_control(c, NULL, DLOCK_ZK_CTL_WATCH_EVENTS, &n), 0);
  return n;
}

/* ---- z1: one release wakes one waiter ---- */

#define HERD 50

struct herd_waiter {
  dlock_client *c;
  const char *key;
  int rc;
  int order;
  struct event got;
  struct event *gate;
  struct event *any; /* signalled with got */
};

static atomic_int herd_order;

static void *herd_main(void *arg) {
  struct herd_waiter *w = arg;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 120000;
  dlock_lock *l;
  w->rc = dlock_acquire(w->c, w->key, &o, &l);
  if (w->rc == 0) {
    w->order = atomic_fetch_add(&herd_order, 1);
    event_signal(&w->got);
    event_signal(w->any);
    event_wait(w->gate, 1, 120000);
    dlock_release(l);
  } else {
    event_signal(&w->got);
    event_signal(w->any);
  }
  return NULL;
}

static void z1_no_herd(void **state) {
  (void)state;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("z1"));
  dlock_client *h = open_url(z_url);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *hl;
  assert_int_equal(dlock_try_acquire(h, k, &o, &hl), 0);
  struct queue_probe p;
  probe_open(&p, k);
  struct event gate, any;
  event_init(&gate);
  event_init(&any);
  atomic_store(&herd_order, 0);
  static struct herd_waiter w[HERD];
  pthread_t th[HERD];
  for (int i = 0; i < HERD; i++) {
    w[i] = (struct herd_waiter){.c = open_url(z_url), .key = k, .gate = &gate, .any = &any,
                               .order = -1};
    event_init(&w[i].got);
    assert_int_equal(pthread_create(&th[i], NULL, herd_main, &w[i]), 0);
  }
  assert_true(probe_wait(&p, HERD + 1, 30000));
  uint64_t before = 0;
  for (int i = 0; i < HERD; i++)
    before += watch_events(w[i].c);
  assert_int_equal(dlock_release(hl), 0);
  /* Somebody gets it ... */
  int winner = -1;
  assert_int_equal(event_wait(&any, 1, 30000), 1);
  for (int i = 0; i < HERD && winner < 0; i++)
    if (event_wait(&w[i].got, 0, 0) == 1)
      winner = i;
  assert_true(winner >= 0);
  assert_int_equal(w[winner].rc, 0);
  /* ... only one, and only one watch fired for it.  The queue shrinks by
   * exactly the holder's entry. */
  assert_int_equal(atomic_load(&herd_order), 1);
  uint64_t after = 0;
  for (int i = 0; i < HERD; i++)
    after += watch_events(w[i].c);
  printf("# watch notifications for one release among %d waiters: %llu\n", HERD,
         (unsigned long long)(after - before));
  assert_true(after - before <= 1);
  struct dlock_zk_queue q = {.key = k};
  assert_int_equal(dlock_control(h, NULL, DLOCK_ZK_CTL_QUEUE_LEN, &q), 0);
  assert_int_equal(q.count, HERD);
  assert_int_equal(atomic_load(&herd_order), 1);
  event_signal(&gate);
  for (int i = 0; i < HERD; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].rc, 0);
    dlock_close(w[i].c);
  }
  probe_close(&p);
  dlock_close(h);
}

/* ---- z2: first come, first served ---- */

#define FAIR 6

static void z2_fifo(void **state) {
  (void)state;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("z2"));
  dlock_client *h = open_url(z_url);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *hl;
  assert_int_equal(dlock_try_acquire(h, k, &o, &hl), 0);
  struct queue_probe p;
  probe_open(&p, k);
  struct event gate, any;
  event_init(&gate);
  event_init(&any);
  event_signal(&gate); /* each releases as soon as it has the lock */
  atomic_store(&herd_order, 0);
  struct herd_waiter w[FAIR];
  pthread_t th[FAIR];
  for (int i = 0; i < FAIR; i++) {
    w[i] = (struct herd_waiter){
        .c = open_url(z_url), .key = k, .gate = &gate, .any = &any, .order = -1};
    event_init(&w[i].got);
    assert_int_equal(pthread_create(&th[i], NULL, herd_main, &w[i]), 0);
    /* Waiter i+1 arrives only once waiter i is queued at the store. */
    assert_true(probe_wait(&p, i + 2, 30000));
  }
  assert_int_equal(dlock_release(hl), 0);
  for (int i = 0; i < FAIR; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].rc, 0);
    if (w[i].order != i)
      fail_msg("waiter %d was served as number %d", i, w[i].order);
    dlock_close(w[i].c);
  }
  probe_close(&p);
  dlock_close(h);
}

/* ---- z3: session expired from outside ---- */

static void z3_session_expiry(void **state) {
  (void)state;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("z3"));
  const char *url = conf_url_with(z_url, "ttl=2s");
  char u[4096];
  snprintf(u, sizeof u, "%s", url);
  dlock_client *c = open_url(u);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);
  uint64_t tok = dlock_lock_token(l);
  clientid_t cid;
  int64_t timeout_ms = 0;
  assert_int_equal(dlock_control(c, NULL, DLOCK_ZK_CTL_CLIENT_ID, &cid), 0);
  assert_int_equal(dlock_control(c, NULL, DLOCK_ZK_CTL_SESSION_TIMEOUT, &timeout_ms), 0);
  assert_true(timeout_ms > 0);
  /* Closing a second handle on the same session ends it at the server.
   * Attaching it makes the server drop the client's connection, and the
   * client may win the session back within milliseconds, before our close
   * request arrives; then the close ends nothing, so try again. */
  int64_t t0 = 0;
  for (int i = 0; i < 20 && event_wait(&lost, 1, 0) == 0; i++) {
    t0 = dlock__now_ns() / 1000000;
    zhandle_t *zh = conf_zk_open(u, NULL, &cid, NULL, NULL, NULL);
    assert_non_null(zh);
    conf_zk_close(zh);
    if (event_wait(&lost, 1, timeout_ms + 1000) == 1)
      break;
  }
  assert_int_equal(event_wait(&lost, 1, 0), 1);
  printf("# loss reported %lld ms after the session was closed (timeout %lld ms)\n",
         (long long)(dlock__now_ns() / 1000000 - t0), (long long)timeout_ms);
  assert_int_equal(lost.token, tok);
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  /* The client carries on with a new session. */
  o.on_lost = NULL;
  o.wait_ms = 10000;
  assert_int_equal(dlock_acquire(c, k, &o, &l), 0);
  assert_true(dlock_lock_token(l) > tok);
  clientid_t cid2;
  assert_int_equal(dlock_control(c, NULL, DLOCK_ZK_CTL_CLIENT_ID, &cid2), 0);
  assert_true(cid2.client_id != cid.client_id);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* ---- z4: leader failover on an ensemble ---- */

static int retry_until(int64_t end_ms, int (*fn)(void *), void *arg) {
  int rc;
  while ((rc = fn(arg)) != 0 && dlock__now_ns() / 1000000 < end_ms) {
    struct timespec ts = {0, 100000000}; /* back off between attempts */
    nanosleep(&ts, NULL);
  }
  return rc;
}

struct inspect_arg {
  dlock_client *c;
  const char *key;
  dlock_info info;
};

static int do_inspect(void *a) {
  struct inspect_arg *ia = a;
  return dlock_inspect(ia->c, ia->key, &ia->info);
}

struct acq_arg {
  dlock_client *c;
  const char *key;
  dlock_lock *l;
};

static int do_acquire(void *a) {
  struct acq_arg *aa = a;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 5000;
  return dlock_acquire(aa->c, aa->key, &o, &aa->l);
}

static void z4_leader_failover(void **state) {
  (void)state;
  const char *ens = getenv("DLOCK_TEST_ZK_ENSEMBLE_URL");
  const char *kill_cmd = getenv("DLOCK_TEST_ZK_KILL_LEADER");
  if (!ens || !*ens || !kill_cmd || !*kill_cmd)
    skip();
  char url[4096];
  snprintf(url, sizeof url, "%s", strstr(ens, "ttl=") ? ens : conf_url_with(ens, "ttl=20s"));
  char k1[256], k2[256];
  snprintf(k1, sizeof k1, "%s", conf_key("z4"));
  snprintf(k2, sizeof k2, "%s", conf_key("z4-after"));
  dlock_client *a = open_url(url);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(a, k1, &o, &l), 0);
  uint64_t tok = dlock_lock_token(l);
  fflush(NULL);
  int st = system(kill_cmd);
  if (st != 0)
    fail_msg("'%s' exited with %d", kill_cmd, st);
  int64_t end = dlock__now_ns() / 1000000 + 60000;
  dlock_client *b = open_url(url);
  struct inspect_arg ia = {.c = b, .key = k1};
  assert_int_equal(retry_until(end, do_inspect, &ia), 0);
  assert_int_equal(ia.info.held, 1);
  assert_string_equal(ia.info.owner, dlock_lock_owner(l));
  assert_int_equal(ia.info.token, tok);
  assert_int_equal(dlock_lock_state(l), DLOCK_HELD);
  assert_int_equal(dlock_lock_token(l), tok);
  struct acq_arg aa = {.c = b, .key = k2};
  assert_int_equal(retry_until(end, do_acquire, &aa), 0);
  assert_true(dlock_lock_token(aa.l) > tok);
  assert_int_equal(dlock_release(aa.l), 0);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(b);
  dlock_close(a);
}

/* Someone writes to our lock node (which uses up the watch on it) and then
 * deletes it: the deletion must still be noticed, without any renewal
 * traffic to stumble on it. */
static void z5_change_then_delete(void **state) {
  (void)state;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("z5"));
  dlock_client *c = open_url(z_url);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.auto_renew = 0;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);
  char *dir = NULL;
  zhandle_t *zh = conf_zk_open(z_url, k, NULL, &dir, NULL, NULL);
  assert_non_null(zh);
  struct String_vector sv = {0, NULL};
  assert_int_equal(zoo_get_children(zh, dir, 0, &sv), ZOK);
  assert_int_equal(sv.count, 1);
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, sv.data[0]);
  deallocate_String_vector(&sv);
  assert_int_equal(zoo_set(zh, path, "x", 1, -1), ZOK);
  assert_int_equal(zoo_delete(zh, path, -1), ZOK);
  assert_int_equal(event_wait(&lost, 1, 5000), 1);
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  conf_zk_close(zh);
  free(dir);
  dlock_close(c);
}

int conf_zk_cases(const char *url) {
  z_url = url;
  zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(z1_no_herd),
      cmocka_unit_test(z2_fifo),
      cmocka_unit_test(z3_session_expiry),
      cmocka_unit_test(z4_leader_failover),
      cmocka_unit_test(z5_change_then_delete),
  };
  char name[512], title[600];
  dlock_url_redact(url, name, sizeof name);
  snprintf(title, sizeof title, "zookeeper cases %s", name);
  return _cmocka_run_group_tests(title, tests, sizeof tests / sizeof *tests, NULL, NULL);
}
