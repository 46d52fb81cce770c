/* dlock-conformance URL...: the one suite every backend must pass.
 *
 * The same code runs against every store; where a store lacks a capability
 * (no server-side TTL, single process only) the case uses the store's own
 * equivalent or is reported as skipped, never as passed. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dlock/dlock.h"
#include "event.h"
#include "faults.h"
#include "internal.h"

static const char *g_url;
static char g_run[64];
static unsigned g_caps;

/* ---- helpers ---- */

static int64_t now_ms(void) { return dlock__now_ns() / 1000000; }


static dlock_client *open_client(void) {
  dlock_client *c = NULL;
  int rc = dlock_open(g_url, &c);
  if (rc != 0)
    fail_msg("dlock_open(%s): %s: %s", g_url, dlock_err_name(rc), dlock_client_errmsg(NULL));
  return c;
}

static dlock_options opts(int64_t ttl_ms, int64_t wait_ms, int auto_renew) {
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = ttl_ms;
  o.wait_ms = wait_ms;
  o.auto_renew = auto_renew;
  return o;
}

#define ASSERT_RC(expr, want)                                                  \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    if (rc_ != (want))                                                         \
      fail_msg("%s = %s (%d), want %s: %s", #expr, dlock_err_name(rc_), rc_,   \
               dlock_err_name(want), dlock_client_errmsg(NULL));               \
  } while (0)

/* Lets wall time pass when the passage of time is itself what a case
 * tests (expiry, renewal); never used to wait for another thread. */
static void let_time_pass(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* ---- 1. try_acquire / EBUSY / release ---- */

static void case01_try_busy(void **state) {
  (void)state;
  dlock_client *a = open_client(), *b = open_client();
  dlock_options o = opts(30000, 0, 1);
  dlock_lock *la, *lb;
  ASSERT_RC(dlock_try_acquire(a, conf_key("c1"), &o, &la), 0);
  ASSERT_RC(dlock_try_acquire(b, conf_key("c1"), &o, &lb), DLOCK_EBUSY);
  assert_true(strlen(dlock_client_errmsg(NULL)) > 0);
  ASSERT_RC(dlock_lock_state(la), DLOCK_HELD);
  ASSERT_RC(dlock_release(la), 0);
  ASSERT_RC(dlock_try_acquire(b, conf_key("c1"), &o, &lb), 0);
  ASSERT_RC(dlock_release(lb), 0);
  dlock_close(a);
  dlock_close(b);
}

/* ---- 2. mutual exclusion ---- */

#define MX_CLIENTS 3
#define MX_THREADS 3
#define MX_ITERS 25

static struct {
  dlock_client *clients[MX_CLIENTS];
  atomic_int inside;
  atomic_int overlaps;
  atomic_int errors;
  long counter; /* deliberately not atomic */
  pthread_mutex_t tok_mu;
  uint64_t last_token;
  atomic_int token_regressions;
} mx;

static void *mx_worker(void *arg) {
  dlock_client *c = mx.clients[(intptr_t)arg % MX_CLIENTS];
  dlock_options o = opts(30000, 60000, 1);
  for (int i = 0; i < MX_ITERS; i++) {
    dlock_lock *l;
    int rc = dlock_acquire(c, conf_key("c2"), &o, &l);
    if (rc != 0) {
      fprintf(stderr, "mutex acquire: %s: %s\n", dlock_err_name(rc), dlock_client_errmsg(NULL));
      atomic_fetch_add(&mx.errors, 1);
      continue;
    }
    if (atomic_exchange(&mx.inside, 1) != 0)
      atomic_fetch_add(&mx.overlaps, 1);
    pthread_mutex_lock(&mx.tok_mu);
    if (dlock_lock_token(l) <= mx.last_token)
      atomic_fetch_add(&mx.token_regressions, 1);
    mx.last_token = dlock_lock_token(l);
    pthread_mutex_unlock(&mx.tok_mu);
    long v = mx.counter;
    sched_yield();
    mx.counter = v + 1;
    atomic_store(&mx.inside, 0);
    if (dlock_release(l) != 0)
      atomic_fetch_add(&mx.errors, 1);
  }
  return NULL;
}

static void case02_mutual_exclusion(void **state) {
  (void)state;
  memset(&mx, 0, sizeof mx);
  pthread_mutex_init(&mx.tok_mu, NULL);
  for (int i = 0; i < MX_CLIENTS; i++)
    mx.clients[i] = open_client();
  pthread_t th[MX_CLIENTS * MX_THREADS];
  for (intptr_t i = 0; i < MX_CLIENTS * MX_THREADS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, mx_worker, (void *)i), 0);
  for (int i = 0; i < MX_CLIENTS * MX_THREADS; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < MX_CLIENTS; i++)
    dlock_close(mx.clients[i]);
  assert_int_equal(atomic_load(&mx.errors), 0);
  assert_int_equal(atomic_load(&mx.overlaps), 0);
  assert_int_equal(atomic_load(&mx.token_regressions), 0);
  assert_int_equal(mx.counter, MX_CLIENTS * MX_THREADS * MX_ITERS);
}

/* ---- 3. blocking acquire wakes on release ---- */

struct waiter {
  dlock_client *c;
  const char *key;
  int64_t wait_ms;
  int rc;
  int64_t got_ms;
  uint64_t token;
  struct event started, done;
};

static void *waiter_main(void *arg) {
  struct waiter *w = arg;
  dlock_options o = opts(30000, w->wait_ms, 1);
  dlock_lock *l = NULL;
  event_signal(&w->started);
  w->rc = dlock_acquire(w->c, w->key, &o, &l);
  w->got_ms = now_ms();
  if (w->rc == 0) {
    w->token = dlock_lock_token(l);
    dlock_release(l);
  }
  event_signal(&w->done);
  return NULL;
}

static void case03_wake_on_release(void **state) {
  (void)state;
  dlock_client *a = open_client(), *b = open_client();
  dlock_options o = opts(30000, 0, 1);
  dlock_lock *la;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c3"));
  ASSERT_RC(dlock_try_acquire(a, k, &o, &la), 0);
  struct waiter w = {.c = b, .key = k, .wait_ms = 60000};
  event_init(&w.started);
  event_init(&w.done);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
  assert_int_equal(event_wait(&w.started, 1, 10000), 1);
  /* While the lock is held the waiter must not get it. */
  assert_int_equal(event_wait(&w.done, 1, 300), 0);
  int64_t released = now_ms();
  uint64_t held_token = dlock_lock_token(la);
  ASSERT_RC(dlock_release(la), 0);
  assert_int_equal(event_wait(&w.done, 1, 60000), 1);
  pthread_join(th, NULL);
  ASSERT_RC(w.rc, 0);
  assert_true(w.token > held_token);
  /* Woken by the release, not by the 30 s lease running out; and where the
   * store notifies, by the notification rather than a poll (the file
   * backend's safety re-check and the core's backoff are both 1 s). */
  int64_t lag = w.got_ms - released;
  printf("# wake-up after release: %lld ms\n", (long long)lag);
  assert_true(lag < ((g_caps & DLOCK_CAP_NATIVE_WAIT) ? 400 : 5000));
  dlock_close(a);
  dlock_close(b);
}

/* ---- 4. acquire with a deadline ---- */

static void case04_deadline(void **state) {
  (void)state;
  dlock_client *a = open_client(), *b = open_client();
  dlock_options o = opts(30000, 0, 1);
  dlock_lock *la, *lb;
  ASSERT_RC(dlock_try_acquire(a, conf_key("c4"), &o, &la), 0);
  dlock_options w = opts(30000, 700, 1);
  int64_t t0 = now_ms();
  ASSERT_RC(dlock_acquire(b, conf_key("c4"), &w, &lb), DLOCK_ETIMEDOUT);
  int64_t el = now_ms() - t0;
  printf("# deadline 700 ms, returned after %lld ms\n", (long long)el);
  assert_true(el >= 690);
  assert_true(el < 700 + 4000);
  /* Another thread of the same client queues in the core, with the same
   * deadline rule. */
  t0 = now_ms();
  struct waiter wt = {.c = a, .key = conf_key("c4"), .wait_ms = 400};
  event_init(&wt.started);
  event_init(&wt.done);
  pthread_t th;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c4"));
  wt.key = k;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &wt), 0);
  pthread_join(th, NULL);
  ASSERT_RC(wt.rc, DLOCK_ETIMEDOUT);
  assert_true(now_ms() - t0 >= 390);
  ASSERT_RC(dlock_release(la), 0);
  dlock_close(a);
  dlock_close(b);
}

/* ---- 5. a holder that vanishes ---- */

static void case05_vanished_holder(void **state) {
  (void)state;
  const int64_t ttl = 2000;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c5"));
  dlock_client *b = NULL;
  dlock_lock *lb;
  if (g_caps & DLOCK_CAP_CROSS_PROCESS) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      dlock_client *c;
      dlock_lock *l;
      dlock_options o = opts(ttl, 0, 1);
      char ok = 0;
      if (dlock_open(g_url, &c) == 0 && dlock_try_acquire(c, k, &o, &l) == 0)
        ok = 1;
      if (write(p[1], &ok, 1) != 1)
        _exit(2);
      for (;;)
        pause();
    }
    close(p[1]);
    struct pollfd pfd = {.fd = p[0], .events = POLLIN};
    char ok = 0;
    assert_int_equal(poll(&pfd, 1, 20000), 1);
    assert_int_equal(read(p[0], &ok, 1), 1);
    close(p[0]);
    assert_int_equal(ok, 1);
    b = open_client();
    dlock_options t = opts(ttl, 0, 1);
    ASSERT_RC(dlock_try_acquire(b, k, &t, &lb), DLOCK_EBUSY);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
  } else {
    /* In-process store: a client that stops renewing and never releases. */
    b = open_client();
    dlock_client *a = open_client();
    dlock_lock *la;
    dlock_options o = opts(ttl, 0, 0);
    ASSERT_RC(dlock_try_acquire(a, k, &o, &la), 0);
    dlock_options t = opts(ttl, 0, 1);
    ASSERT_RC(dlock_try_acquire(b, k, &t, &lb), DLOCK_EBUSY);
    dlock_options w = opts(30000, 30000, 1);
    ASSERT_RC(dlock_acquire(b, k, &w, &lb), 0);
    ASSERT_RC(dlock_release(la), DLOCK_ELOST);
    ASSERT_RC(dlock_release(lb), 0);
    dlock_close(a);
    dlock_close(b);
    return;
  }
  /* How long the store may keep a dead holder's lock (Consul: its sessions'
   * 10 s minimum, doubled, plus the lock-delay); the wait covers it. */
  const int64_t bound = conf_orphan_bound_ms(g_url, ttl);
  int64_t t0 = now_ms();
  dlock_options w = opts(30000, bound > 30000 ? bound : 30000, 1);
  ASSERT_RC(dlock_acquire(b, k, &w, &lb), 0);
  int64_t el = now_ms() - t0;
  printf("# lock of the killed holder free after %lld ms (ttl %lld ms, bound %lld ms)\n",
         (long long)el, (long long)ttl, (long long)bound);
  assert_true(el < bound);
  ASSERT_RC(dlock_release(lb), 0);
  dlock_close(b);
}

/* ---- 6. stale handle ---- */

/* What inspect says of holder L: a store that names holders names this one;
 * one that cannot (a lock that is only a server-side session's) says
 * "unknown" rather than something wrong. */
static void expect_holder(const dlock_info *info, dlock_lock *l, const char *label) {
  if (g_caps & DLOCK_CAP_HOLDER_INFO) {
    assert_int_equal(info->token, dlock_lock_token(l));
    assert_string_equal(info->owner, dlock_lock_owner(l));
    if (label)
      assert_string_equal(info->label, label);
  } else {
    assert_int_equal(info->token, 0);
    assert_string_equal(info->owner, "");
  }
}

static void case06_stale_handle(void **state) {
  (void)state;
  dlock_client *a = open_client(), *b = open_client(), *c = open_client();
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c6"));
  struct event lost;
  event_init(&lost);
  dlock_options o = opts(1000, 0, 0);
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *la, *lb, *lc;
  ASSERT_RC(dlock_try_acquire(a, k, &o, &la), 0);
  if (g_caps & DLOCK_CAP_SERVER_TTL) {
    /* Not renewed: the local deadline passes first and says so. */
    assert_int_equal(event_wait(&lost, 1, 10000), 1);
    ASSERT_RC(dlock_lock_state(la), DLOCK_LOST);
  } else {
    assert_int_equal(conf_break_lock(g_url, k), 0);
  }
  dlock_options w = opts(30000, 10000, 1);
  ASSERT_RC(dlock_acquire(b, k, &w, &lb), 0);
  /* Even after the store dropped the old holder, tokens keep growing. */
  assert_true(dlock_lock_token(lb) > dlock_lock_token(la));
  ASSERT_RC(dlock_renew(la, 0), DLOCK_ELOST);
  ASSERT_RC(dlock_release(la), DLOCK_ELOST);
  /* The new holder is undisturbed. */
  ASSERT_RC(dlock_lock_state(lb), DLOCK_HELD);
  ASSERT_RC(dlock_renew(lb, 0), 0);
  dlock_options t = opts(30000, 0, 1);
  ASSERT_RC(dlock_try_acquire(c, k, &t, &lc), DLOCK_EBUSY);
  dlock_info info;
  ASSERT_RC(dlock_inspect(c, k, &info), 0);
  assert_int_equal(info.held, 1);
  expect_holder(&info, lb, NULL);
  ASSERT_RC(dlock_release(lb), 0);

  /* The store drops the holder while its handle is still valid locally:
   * the renewal reaches the store and must be refused there, because the
   * store now names someone else. */
  dlock_options keep = opts(30000, 0, 0);
  ASSERT_RC(dlock_try_acquire(a, k, &keep, &la), 0);
  assert_int_equal(conf_break_lock(g_url, k), 0);
  ASSERT_RC(dlock_acquire(b, k, &w, &lb), 0);
  /* A store that reports loss may already have told it; others have not. */
  if (!(g_caps & DLOCK_CAP_LOSS_DETECT))
    ASSERT_RC(dlock_lock_state(la), DLOCK_HELD);
  ASSERT_RC(dlock_renew(la, 0), DLOCK_ELOST);
  ASSERT_RC(dlock_lock_state(la), DLOCK_LOST);
  ASSERT_RC(dlock_release(la), DLOCK_ELOST);
  ASSERT_RC(dlock_lock_state(lb), DLOCK_HELD);
  ASSERT_RC(dlock_try_acquire(c, k, &t, &lc), DLOCK_EBUSY);
  ASSERT_RC(dlock_inspect(c, k, &info), 0);
  assert_int_equal(info.held, 1);
  expect_holder(&info, lb, NULL);
  ASSERT_RC(dlock_release(lb), 0);
  dlock_close(a);
  dlock_close(b);
  dlock_close(c);
}

/* ---- 7. renew ---- */

static void case07_renew(void **state) {
  (void)state;
  dlock_client *a = open_client(), *b = open_client();
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c7"));
  dlock_lock *la, *lb;
  dlock_options t = opts(30000, 0, 1);
  /* Manual renew past the original ttl. */
  dlock_options o = opts(1000, 0, 0);
  ASSERT_RC(dlock_try_acquire(a, k, &o, &la), 0);
  ASSERT_RC(dlock_renew(la, 4000), 0);
  if (g_caps & DLOCK_CAP_SERVER_TTL)
    assert_true(dlock_lock_remaining_ms(la) > 2000);
  let_time_pass(1500);
  ASSERT_RC(dlock_lock_state(la), DLOCK_HELD);
  ASSERT_RC(dlock_try_acquire(b, k, &t, &lb), DLOCK_EBUSY);
  ASSERT_RC(dlock_release(la), 0);

  /* Auto-renew keeps it for several ttls. */
  dlock_metrics m0, m1, m2;
  dlock_metrics_get(a, &m0);
  dlock_options ar = opts(1000, 0, 1);
  ASSERT_RC(dlock_try_acquire(a, k, &ar, &la), 0);
  let_time_pass(3500);
  ASSERT_RC(dlock_lock_state(la), DLOCK_HELD);
  ASSERT_RC(dlock_try_acquire(b, k, &t, &lb), DLOCK_EBUSY);
  dlock_metrics_get(a, &m1);
  assert_true(m1.renew_ok - m0.renew_ok >= 3);
  assert_int_equal(m1.renew_failed, m0.renew_failed);
  ASSERT_RC(dlock_release(la), 0);
  /* Release stops renewal. */
  let_time_pass(800);
  dlock_metrics_get(a, &m2);
  assert_int_equal(m2.renew_ok, m1.renew_ok);
  ASSERT_RC(dlock_try_acquire(b, k, &t, &lb), 0);
  ASSERT_RC(dlock_release(lb), 0);
  dlock_close(a);
  dlock_close(b);
}

/* ---- 8. fencing tokens ---- */

static void case08_fencing(void **state) {
  (void)state;
  dlock_client *cl[3] = {open_client(), open_client(), open_client()};
  dlock_options o = opts(30000, 10000, 1);
  uint64_t last = 0;
  for (int i = 0; i < 12; i++) {
    dlock_lock *l;
    ASSERT_RC(dlock_acquire(cl[i % 3], conf_key("c8"), &o, &l), 0);
    uint64_t t = dlock_lock_token(l);
    if (t <= last)
      fail_msg("token %llu after %llu", (unsigned long long)t, (unsigned long long)last);
    last = t;
    ASSERT_RC(dlock_release(l), 0);
  }
  /* Tokens are per key; a fresh key starts its own sequence, above zero. */
  dlock_lock *l;
  ASSERT_RC(dlock_acquire(cl[0], conf_key("c8-other"), &o, &l), 0);
  assert_true(dlock_lock_token(l) > 0);
  ASSERT_RC(dlock_release(l), 0);
  for (int i = 0; i < 3; i++)
    dlock_close(cl[i]);
}

/* ---- 9. reentrancy ---- */

static void case09_reentrancy(void **state) {
  (void)state;
  dlock_client *a = open_client(), *b = open_client();
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c9"));
  dlock_options o = opts(30000, 0, 1);
  dlock_lock *l1, *l2, *lb;
  ASSERT_RC(dlock_try_acquire(a, k, &o, &l1), 0);
  ASSERT_RC(dlock_acquire(a, k, &o, &l2), 0);
  assert_ptr_equal(l1, l2);
  assert_int_equal(dlock_lock_holds(l1), 2);
  assert_int_equal(dlock_lock_token(l2), dlock_lock_token(l1));
  /* Another thread of the same client must wait, not share. */
  struct waiter w = {.c = a, .key = k, .wait_ms = 300};
  event_init(&w.started);
  event_init(&w.done);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
  pthread_join(th, NULL);
  ASSERT_RC(w.rc, DLOCK_ETIMEDOUT);
  ASSERT_RC(dlock_release(l2), 0);
  ASSERT_RC(dlock_lock_state(l1), DLOCK_HELD);
  ASSERT_RC(dlock_try_acquire(b, k, &o, &lb), DLOCK_EBUSY);
  ASSERT_RC(dlock_release(l1), 0);
  ASSERT_RC(dlock_try_acquire(b, k, &o, &lb), 0);
  ASSERT_RC(dlock_release(lb), 0);
  dlock_close(a);
  dlock_close(b);
}

/* ---- 10. loss ---- */

static void case10_loss(void **state) {
  (void)state;
  dlock_client *a = open_client();
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c10"));
  struct event lost;
  event_init(&lost);
  const int64_t ttl = 2000;
  dlock_options o = opts(ttl, 0, 1);
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *l;
  ASSERT_RC(dlock_try_acquire(a, k, &o, &l), 0);
  uint64_t tok = dlock_lock_token(l);
  int64_t t0 = now_ms();
  assert_int_equal(conf_break_lock(g_url, k), 0);
  /* Within a ttl (renewals run every ttl/3), with slack for slow builds. */
  assert_int_equal(event_wait(&lost, 1, ttl + 500), 1);
  printf("# loss reported %lld ms after the lock was deleted\n", (long long)(now_ms() - t0));
  ASSERT_RC(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(lost.token, tok);
  /* Once, not once per renew attempt. */
  assert_int_equal(event_wait(&lost, 2, ttl), 1);
  dlock_metrics m;
  dlock_metrics_get(a, &m);
  assert_true(m.lost >= 1);
  ASSERT_RC(dlock_release(l), DLOCK_ELOST);
  /* The next holder's token is still larger than the lost one's. */
  dlock_client *b = open_client();
  dlock_options w = opts(30000, 10000, 1);
  ASSERT_RC(dlock_acquire(b, k, &w, &l), 0);
  assert_true(dlock_lock_token(l) > tok);
  ASSERT_RC(dlock_release(l), 0);
  dlock_close(b);
  dlock_close(a);
}

/* ---- 11. bad input ---- */

static void expect_open_einval(const char *url, const char *must_mention) {
  dlock_client *c = (dlock_client *)0x1;
  int rc = dlock_open(url, &c);
  if (rc != DLOCK_EINVAL)
    fail_msg("dlock_open(%s) = %s, want DLOCK_EINVAL", url, dlock_err_name(rc));
  assert_ptr_equal(c, (dlock_client *)0x1); /* output untouched */
  const char *m = dlock_client_errmsg(NULL);
  assert_true(strlen(m) > 0);
  if (must_mention && !strstr(m, must_mention))
    fail_msg("message '%s' does not mention '%s'", m, must_mention);
  assert_null(strstr(m, "s3cr3t"));
}

static void case11_bad_input(void **state) {
  (void)state;
  char scheme[32];
  snprintf(scheme, sizeof scheme, "%.*s", (int)strcspn(g_url, ":"), g_url);
  char buf[600];
  expect_open_einval("", NULL);
  expect_open_einval("no scheme here", NULL);
  expect_open_einval("nosuchstore://127.0.0.1:1/x", "nosuchstore");
  expect_open_einval(conf_url_with(g_url, "bogus_param=1"), "bogus_param");
  expect_open_einval(conf_url_with(g_url, "ttl=-5s"), "ttl");
  expect_open_einval(conf_url_with(g_url, "ttl=abc"), "ttl");
  expect_open_einval(conf_url_with(g_url, "timeout=0"), "timeout");
  snprintf(buf, sizeof buf, "%s://user:s3cr3t@127.0.0.1:99999999/", scheme);
  expect_open_einval(buf, NULL);
  snprintf(buf, sizeof buf, "%s://user:s3cr3t@127.0.0.1:1/?nope=1&password=s3cr3t", scheme);
  {
    dlock_client *c = NULL;
    int rc = dlock_open(buf, &c);
    assert_true(rc < 0);
    assert_null(strstr(dlock_client_errmsg(NULL), "s3cr3t"));
  }
  char redacted[256];
  dlock_url_redact("redis://u:s3cr3t@h:1/0?token=s3cr3t&ttl=1s", redacted, sizeof redacted);
  assert_null(strstr(redacted, "s3cr3t"));
  assert_non_null(strstr(redacted, "ttl=1s"));

  dlock_client *c = open_client();
  dlock_options o = opts(30000, 0, 1);
  dlock_lock *l = (dlock_lock *)0x1;
  char longkey[DLOCK_KEY_MAX + 2];
  memset(longkey, 'k', sizeof longkey - 1);
  longkey[sizeof longkey - 1] = '\0';
  ASSERT_RC(dlock_try_acquire(c, "", &o, &l), DLOCK_EINVAL);
  ASSERT_RC(dlock_try_acquire(c, NULL, &o, &l), DLOCK_EINVAL);
  ASSERT_RC(dlock_try_acquire(c, longkey, &o, &l), DLOCK_EINVAL);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "512"));
  ASSERT_RC(dlock_try_acquire(c, "bad\xff\xfeutf8", &o, &l), DLOCK_EINVAL);
  ASSERT_RC(dlock_try_acquire(c, conf_key("c11"), NULL, NULL), DLOCK_EINVAL);
  ASSERT_RC(dlock_try_acquire(NULL, conf_key("c11"), &o, &l), DLOCK_EINVAL);
  assert_ptr_equal(l, (dlock_lock *)0x1);
  dlock_options bad = opts(-1, 0, 1);
  ASSERT_RC(dlock_try_acquire(c, conf_key("c11"), &bad, &l), DLOCK_EINVAL);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "ttl"));
  bad = opts(1000, -2, 1);
  ASSERT_RC(dlock_acquire(c, conf_key("c11"), &bad, &l), DLOCK_EINVAL);
  bad = opts(INT64_MAX, 0, 1);
  ASSERT_RC(dlock_try_acquire(c, conf_key("c11"), &bad, &l), DLOCK_EINVAL);
  bad = opts(1000, INT64_MAX, 1);
  ASSERT_RC(dlock_acquire(c, conf_key("c11"), &bad, &l), DLOCK_EINVAL);
  expect_open_einval(conf_url_with(g_url, "ttl=31d"), "ttl");
  expect_open_einval(conf_url_with(g_url, "ttl=1000000h"), "ttl");
  ASSERT_RC(dlock_release(NULL), DLOCK_EINVAL);
  ASSERT_RC(dlock_renew(NULL, 0), DLOCK_EINVAL);
  dlock_info info;
  ASSERT_RC(dlock_inspect(c, "", &info), DLOCK_EINVAL);
  ASSERT_RC(dlock_inspect(c, conf_key("c11"), NULL), DLOCK_EINVAL);
  assert_true(dlock_lock_state(NULL) < 0);
  /* A key of exactly the maximum length is fine. */
  longkey[DLOCK_KEY_MAX] = '\0';
  ASSERT_RC(dlock_try_acquire(c, longkey, &o, &l), 0);
  ASSERT_RC(dlock_renew(l, -1), DLOCK_EINVAL);
  ASSERT_RC(dlock_renew(l, INT64_MAX), DLOCK_EINVAL);
  ASSERT_RC(dlock_release(l), 0);
  dlock_close(c);
  dlock_close(NULL);
}

/* ---- 12. unreachable store ---- */

static void case12_unreachable(void **state) {
  (void)state;
  if (!(g_caps & DLOCK_CAP_CROSS_HOST)) {
    if (strncmp(g_url, "file:", 5) == 0) {
      dlock_client *c;
      int rc = dlock_open("file:///proc/dlock-cannot-exist/locks", &c);
      assert_true(rc == DLOCK_ECONN || rc == DLOCK_EAUTH);
      return;
    }
    skip();
  }
  char scheme[32], buf[512];
  /* A TCP endpoint needs the TCP form of the scheme (redis+unix -> redis). */
  snprintf(scheme, sizeof scheme, "%.*s", (int)strcspn(g_url, ":+"), g_url);
  /* A port where nothing listens: refused at once. */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
  int port = ntohs(sa.sin_port);
  close(s);
  snprintf(buf, sizeof buf, "%s://127.0.0.1:%d?connect_timeout=1s&timeout=1s", scheme, port);
  dlock_client *c;
  int64_t t0 = now_ms();
  ASSERT_RC(dlock_open(buf, &c), DLOCK_ECONN);
  assert_true(now_ms() - t0 < 3000);

  /* A server that accepts the connection and never answers: the request
   * timeout must fire, no hang. */
  s = socket(AF_INET, SOCK_STREAM, 0);
  sa.sin_port = 0;
  assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(s, 8), 0);
  sl = sizeof sa;
  getsockname(s, (struct sockaddr *)&sa, &sl);
  snprintf(buf, sizeof buf, "%s://127.0.0.1:%d?connect_timeout=1s&timeout=1s", scheme,
           ntohs(sa.sin_port));
  t0 = now_ms();
  int rc = dlock_open(buf, &c);
  int64_t el = now_ms() - t0;
  close(s);
  printf("# silent server: %s after %lld ms\n", dlock_err_name(rc), (long long)el);
  assert_true(rc == DLOCK_ECONN || rc == DLOCK_ETIMEDOUT);
  assert_true(el < 5000);
}

/* ---- 13. many keys ---- */

#define MANY 1000

static void case13_many_keys(void **state) {
  (void)state;
  dlock_client *a = open_client(), *b = open_client();
  dlock_lock **ls = calloc(MANY, sizeof *ls);
  assert_non_null(ls);
  dlock_options o = opts(3000, 0, 1);
  char k[64];
  for (int i = 0; i < MANY; i++) {
    snprintf(k, sizeof k, "c13/%d", i);
    ASSERT_RC(dlock_try_acquire(a, conf_key(k), &o, &ls[i]), 0);
  }
  dlock_metrics m0, m1;
  dlock_metrics_get(a, &m0);
  assert_int_equal(m0.held_now, MANY);
  let_time_pass(4500); /* longer than the ttl: only renewal keeps them */
  dlock_metrics_get(a, &m1);
  for (int i = 0; i < MANY; i++)
    if (dlock_lock_state(ls[i]) != DLOCK_HELD)
      fail_msg("lock %d not held after its ttl", i);
  assert_true(m1.renew_ok - m0.renew_ok >= MANY);
  assert_int_equal(m1.lost, m0.lost);
  dlock_options t = opts(3000, 0, 1);
  for (int i = 0; i < MANY; i += 97) {
    dlock_lock *lb;
    snprintf(k, sizeof k, "c13/%d", i);
    ASSERT_RC(dlock_try_acquire(b, conf_key(k), &t, &lb), DLOCK_EBUSY);
  }
  for (int i = 0; i < MANY; i++)
    ASSERT_RC(dlock_release(ls[i]), 0);
  free(ls);
  dlock_close(a);
  dlock_close(b);
}

/* ---- 14. inspect ---- */

static void case14_inspect(void **state) {
  (void)state;
  dlock_client *a = open_client(), *b = open_client();
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c14"));
  dlock_info info;
  int rc = dlock_inspect(b, k, &info);
  if (rc == DLOCK_ENOTSUP)
    skip();
  ASSERT_RC(rc, 0);
  assert_int_equal(info.held, 0);
  dlock_options o = opts(20000, 0, 1);
  o.owner_label = "conformance holder";
  dlock_lock *l;
  ASSERT_RC(dlock_try_acquire(a, k, &o, &l), 0);
  ASSERT_RC(dlock_inspect(b, k, &info), 0);
  assert_int_equal(info.held, 1);
  expect_holder(&info, l, "conformance holder");
  if ((g_caps & DLOCK_CAP_SERVER_TTL) && (g_caps & DLOCK_CAP_HOLDER_INFO))
    assert_true(info.ttl_ms > 0 && info.ttl_ms <= 20000);
  ASSERT_RC(dlock_release(l), 0);
  ASSERT_RC(dlock_inspect(b, k, &info), 0);
  assert_int_equal(info.held, 0);
  dlock_close(a);
  dlock_close(b);
}

/* ---- 15. distinct keys never share a lock ---- */

static void case15_key_mapping(void **state) {
  (void)state;
  static const char *names[] = {
      "a/b", "a%2Fb", "a%2fb", "a.b", "a_b", "a-b", "a b", "A/B", "a//b", "a/b/", "/a/b",
      ".", "..", "a.lock", "a.d/x", "\xc3\xbc", "u\xcc\x88", "{x}", "x}", "lock:{a}", ":",
  };
  dlock_client *a = open_client();
  size_t n = sizeof names / sizeof *names;
  dlock_lock *ls[sizeof names / sizeof *names + 2];
  dlock_options o = opts(30000, 0, 1);
  for (size_t i = 0; i < n; i++)
    ASSERT_RC(dlock_try_acquire(a, conf_key(names[i]), &o, &ls[i]), 0);
  /* Two maximum-length keys that differ only in the last byte. */
  char k1[DLOCK_KEY_MAX + 1], k2[DLOCK_KEY_MAX + 1];
  memset(k1, '/', DLOCK_KEY_MAX);
  k1[DLOCK_KEY_MAX] = '\0';
  memcpy(k2, k1, sizeof k1);
  k2[DLOCK_KEY_MAX - 1] = '.';
  ASSERT_RC(dlock_try_acquire(a, k1, &o, &ls[n]), 0);
  ASSERT_RC(dlock_try_acquire(a, k2, &o, &ls[n + 1]), 0);
  for (size_t i = 0; i < n + 2; i++)
    ASSERT_RC(dlock_release(ls[i]), 0);
  dlock_close(a);
}

/* ---- 16. tokens keep growing when the store loses the key ---- */

static void case16_token_after_store_reset(void **state) {
  (void)state;
  dlock_client *a = open_client();
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c16"));
  dlock_options o = opts(30000, 0, 1);
  dlock_lock *l;
  ASSERT_RC(dlock_try_acquire(a, k, &o, &l), 0);
  uint64_t before = dlock_lock_token(l);
  ASSERT_RC(dlock_release(l), 0);
  int f = conf_forget_key(g_url, k);
  if (f == 1) {
    dlock_close(a);
    skip(); /* nothing outside the process can make this store forget */
  }
  assert_int_equal(f, 0);
  ASSERT_RC(dlock_try_acquire(a, k, &o, &l), 0);
  printf("# token before the reset %llu, after %llu\n", (unsigned long long)before,
         (unsigned long long)dlock_lock_token(l));
  assert_true(dlock_lock_token(l) > before);
  ASSERT_RC(dlock_release(l), 0);
  dlock_close(a);
}

static int group_setup(void **state) {
  (void)state;
  dlock_client *c;
  if (dlock_open(g_url, &c) != 0) {
    fprintf(stderr, "conformance: cannot open %s: %s\n", g_url, dlock_client_errmsg(NULL));
    return -1;
  }
  g_caps = dlock_client_caps(c);
  dlock_close(c);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fprintf(stderr, "usage: dlock-conformance URL...\n"
                    "Runs the dlock conformance suite against each lock store URL;\n"
                    "exit status 0 only if every case passes on every store.\n"
                    "DLOCK_CONFORMANCE_CASES=PATTERN runs only the cases whose name\n"
                    "matches PATTERN (cmocka's glob: '*' and '?').\n");
    return argc < 2 ? 2 : 0;
  }
  char rnd[9];
  dlock__random_hex(rnd, 4);
  snprintf(g_run, sizeof g_run, "%ld-%s", (long)getpid(), rnd);
  conf_run_id = g_run;
  signal(SIGPIPE, SIG_IGN);
  const char *only = getenv("DLOCK_CONFORMANCE_CASES");
  if (only && *only)
    cmocka_set_test_filter(only);
  /* The file backend keeps one descriptor per held lock; case 13 holds a
   * thousand in each of two clients. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(case01_try_busy),        cmocka_unit_test(case02_mutual_exclusion),
      cmocka_unit_test(case03_wake_on_release), cmocka_unit_test(case04_deadline),
      cmocka_unit_test(case05_vanished_holder), cmocka_unit_test(case06_stale_handle),
      cmocka_unit_test(case07_renew),           cmocka_unit_test(case08_fencing),
      cmocka_unit_test(case09_reentrancy),      cmocka_unit_test(case10_loss),
      cmocka_unit_test(case11_bad_input),       cmocka_unit_test(case12_unreachable),
      cmocka_unit_test(case13_many_keys),       cmocka_unit_test(case14_inspect),
      cmocka_unit_test(case15_key_mapping),     cmocka_unit_test(case16_token_after_store_reset),
  };
  int failed = 0;
  for (int i = 1; i < argc; i++) {
    g_url = argv[i];
    char name[512];
    dlock_url_redact(argv[i], name, sizeof name);
    char title[600];
    snprintf(title, sizeof title, "conformance %s", name);
    int f = _cmocka_run_group_tests(title, tests, sizeof tests / sizeof *tests, group_setup,
                                    NULL);
    failed += f;
#ifdef DLOCK_HAVE_REDIS
    if (strncmp(argv[i], "redis", 5) == 0)
      failed += conf_redis_cases(argv[i]);
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
    if (strncmp(argv[i], "zk:", 3) == 0)
      failed += conf_zk_cases(argv[i]);
#endif
#ifdef DLOCK_HAVE_POSTGRES
    if (strncmp(argv[i], "postgres", 8) == 0)
      failed += conf_pg_cases(argv[i]);
#endif
#ifdef DLOCK_HAVE_ETCD
    if (strncmp(argv[i], "etcd", 4) == 0)
      failed += conf_etcd_cases(argv[i]);
#endif
#ifdef DLOCK_HAVE_CONSUL
    if (strncmp(argv[i], "consul", 6) == 0)
      failed += conf_consul_cases(argv[i]);
#endif
  }
  return failed ? 1 : 0;
}
