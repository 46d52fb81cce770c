/* dlock-conformance URL...: the one suite every backend must pass.
 *
 * The same code runs against every store; where a store lacks a capability
 * (no server-side TTL, single process only) the case uses the store's own
 * equivalent or is reported as skipped, never as passed. */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
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

#include "dlock/admin.h"
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
  /* Where a dropped holder's session leaves the key in a lock-delay
   * (Consul), the next acquisition waits it out. */
  dlock_options w = opts(30000, 10000 + conf_lock_delay_ms(g_url), 1);
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
  /* Manual renewals keep it past the original ttl. */
  dlock_options o = opts(1000, 0, 0);
  ASSERT_RC(dlock_try_acquire(a, k, &o, &la), 0);
  for (int i = 0; i < 3; i++) {
    let_time_pass(500);
    ASSERT_RC(dlock_renew(la, 0), 0);
  }
  ASSERT_RC(dlock_lock_state(la), DLOCK_HELD);
  ASSERT_RC(dlock_try_acquire(b, k, &t, &lb), DLOCK_EBUSY);
  /* A longer ttl lengthens it, except where a lock's lease is its
   * session's timeout (ZooKeeper): a renewal cannot move a lock to another
   * session, so there it gets at most what the server negotiated for the
   * session it is on, whatever the server's limits are. */
  ASSERT_RC(dlock_renew(la, 4000), 0);
  bool capped = strcmp(dlock_client_backend(a), "zookeeper") == 0;
  int64_t left = 4000;
  if (g_caps & DLOCK_CAP_SERVER_TTL) {
    left = dlock_lock_remaining_ms(la);
    assert_true(left > 0 && left <= 4000);
    if (!capped)
      assert_true(left > 2000);
  }
  if (left > 2000) {
    let_time_pass(1500);
    ASSERT_RC(dlock_lock_state(la), DLOCK_HELD);
    ASSERT_RC(dlock_try_acquire(b, k, &t, &lb), DLOCK_EBUSY);
  }
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
  dlock_options w = opts(30000, 10000 + conf_lock_delay_ms(g_url), 1);
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
  const char *base = conf_key("c11-long/");
  size_t bl = strlen(base);
  memcpy(longkey, base, bl);
  memset(longkey + bl, 'k', sizeof longkey - 1 - bl);
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
  const char *base = conf_key("c15-max");
  size_t bl = strlen(base);
  memcpy(k1, base, bl);
  memset(k1 + bl, '/', DLOCK_KEY_MAX - bl);
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

/* ---- 17. awkward keys ---- */

/* The keys of the sweep: every ASCII class, C1 controls, the invisible,
 * spacing and direction-changing code points HTTP stores are known to
 * refuse in paths, noncharacters and the edges of the code space,
 * canonically equivalent spellings, and keys of the maximum length. */
#define AK_MAX 160

struct ak_set {
  char *key[AK_MAX];
  char desc[AK_MAX][48];
  size_t n;
};

static void ak_add(struct ak_set *s, const char *desc, const char *key) {
  assert_true(s->n < AK_MAX);
  size_t len = strlen(key);
  if (len == 0 || len > DLOCK_KEY_MAX)
    fail_msg("case17 builds a bad key for %s (%zu bytes)", desc, len);
  /* Two equal keys would fail the collision check below for the wrong
   * reason. */
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->key[i], key) == 0)
      fail_msg("case17 builds %s twice (as %s)", desc, s->desc[i]);
  if (!conf_in_prefix(key))
    conf_note_key(key);
  s->key[s->n] = strdup(key);
  assert_non_null(s->key[s->n]);
  snprintf(s->desc[s->n], sizeof s->desc[s->n], "%s", desc);
  s->n++;
}

/* The run's key BASE (run id and "c17") with TAIL after a '/'. */
static void ak_add_tail(struct ak_set *s, const char *desc, const char *tail) {
  char k[DLOCK_KEY_MAX + 1];
  int n = snprintf(k, sizeof k, "%s/%s", conf_key("c17"), tail);
  assert_true(n > 0 && n <= DLOCK_KEY_MAX);
  ak_add(s, desc, k);
}

static size_t utf8_put(char *out, uint32_t cp) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | cp >> 12);
    out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | cp >> 18);
  out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
  out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* The run's base followed by code point CP between two letters (MID), and
 * CP at the very start of a key (LEADING: where a path-shaped store has no
 * harmless text before it). */
static void ak_add_cp(struct ak_set *s, uint32_t cp, bool mid, bool leading) {
  char u[5] = {0}, t[16], desc[48];
  u[utf8_put(u, cp)] = '\0';
  snprintf(t, sizeof t, "a%sb", u);
  snprintf(desc, sizeof desc, "U+%04X", (unsigned)cp);
  if (mid)
    ak_add_tail(s, desc, t);
  if (leading) {
    char k[DLOCK_KEY_MAX + 1];
    snprintf(k, sizeof k, "%s%s", u, conf_key("c17-lead"));
    snprintf(desc, sizeof desc, "leading U+%04X", (unsigned)cp);
    ak_add(s, desc, k);
  }
}

/* PREFIX, then copies of UNIT until the key is exactly DLOCK_KEY_MAX bytes
 * (UNIT's length must divide what is left; ASCII 'k's make up the rest). */
static void ak_add_longest(struct ak_set *s, const char *desc, const char *prefix,
                           const char *unit) {
  char k[DLOCK_KEY_MAX + 1];
  size_t pl = strlen(prefix), ul = strlen(unit), n = pl;
  memcpy(k, prefix, pl);
  while (n + ul <= DLOCK_KEY_MAX) {
    memcpy(k + n, unit, ul);
    n += ul;
  }
  while (n < DLOCK_KEY_MAX)
    k[n++] = 'k';
  k[n] = '\0';
  ak_add(s, desc, k);
}

static void ak_build(struct ak_set *s) {
  memset(s, 0, sizeof *s);
  char t[8], desc[48];
  /* Every control byte, one key each, and a few at the start of a key. */
  for (int c = 0x01; c <= 0x1f; c++) {
    snprintf(t, sizeof t, "a%cb", c);
    snprintf(desc, sizeof desc, "byte 0x%02x", c);
    ak_add_tail(s, desc, t);
  }
  ak_add_tail(s, "byte 0x7f", "a\x7f" "b");
  ak_add_cp(s, 0x01, false, true);
  ak_add_cp(s, 0x0a, false, true);
  ak_add_cp(s, 0x7f, false, true);
  /* All of printable ASCII in one key, and the characters that mean
   * something in URLs, paths, shells, JSON or key layouts one by one. */
  char all[0x7f - 0x20 + 1];
  for (int c = 0x20; c < 0x7f; c++)
    all[c - 0x20] = (char)c;
  all[sizeof all - 1] = '\0';
  ak_add_tail(s, "printable ASCII", all);
  static const char *const punct[] = {" ", "/", "%", "?", "#", "&", "+", "\\", "\"", "'",
                                      ".", "..", "%2F", "%25", "%2E", "a b", "a=b", ";",
                                      "*", "~", "\t", "{x}", "@"};
  for (size_t i = 0; i < sizeof punct / sizeof *punct; i++) {
    snprintf(desc, sizeof desc, "'%s'", punct[i]);
    ak_add_tail(s, desc, punct[i]);
  }
  ak_add_tail(s, "trailing '/'", "x/");
  ak_add_tail(s, "'//' inside", "x//y");
  ak_add_tail(s, "'/./' inside", "x/./y");
  ak_add_tail(s, "'/../' inside", "x/../y");
  char k[DLOCK_KEY_MAX + 1];
  snprintf(k, sizeof k, "/%s", conf_key("c17-lead"));
  ak_add(s, "leading '/'", k);
  snprintf(k, sizeof k, "/%s/", conf_key("c17-both"));
  ak_add(s, "leading and trailing '/'", k);
  /* Keys that are only "." or ".." cannot carry the run's id; they are
   * the keys a path-shaped store is most likely to get wrong, and anyone's
   * to use, so only a --destructive run takes them. */
  if (conf_destructive) {
    ak_add(s, "key '.'", ".");
    ak_add(s, "key '..'", "..");
  } else {
    printf("# keys '.' and '..' left out (they need --destructive)\n");
  }
  /* C1 controls. */
  for (uint32_t cp = 0x80; cp <= 0x9f; cp++)
    ak_add_cp(s, cp, true, cp == 0x85);
  /* Invisible, spacing, separators, direction marks, BOM. */
  static const uint32_t odd[] = {0x00a0, 0x00ad, 0x200b, 0x200e, 0x200f, 0x202e,
                                 0x2028, 0x2029, 0x3000, 0xfeff, 0xfffd};
  for (size_t i = 0; i < sizeof odd / sizeof *odd; i++)
    ak_add_cp(s, odd[i], true, odd[i] == 0x200b || odd[i] == 0xfeff || odd[i] == 0x2028);
  /* Around U+FFFF and the other edges: noncharacters, the last BMP and
   * first supplementary code points, private use, the last code point. */
  static const uint32_t edge[] = {0xd7ff, 0xe000, 0xfdd0, 0xfffc, 0xfffe, 0xffff,
                                  0x10000, 0x1f512, 0xe0001, 0x10fffd, 0x10ffff};
  for (size_t i = 0; i < sizeof edge / sizeof *edge; i++)
    ak_add_cp(s, edge[i], true, edge[i] == 0xffff);
  /* Canonically equivalent spellings are different keys: dlock compares
   * bytes, as every store does. */
  ak_add_tail(s, "e + U+0301", "e\xcc\x81");
  ak_add_tail(s, "U+00E9", "\xc3\xa9");
  ak_add_tail(s, "U+00C5", "\xc3\x85");
  ak_add_tail(s, "U+212B", "\xe2\x84\xab");
  ak_add_tail(s, "A + U+030A", "A\xcc\x8a");
  /* 512 bytes of 4-byte code points: the run's id spelled in U+1F4xx
   * (each ASCII byte c as U+1F400 + c), so that runs do not share it, then
   * U+1F512 to 128 code points. */
  {
    size_t n = 0, cps = 0;
    for (const char *p = conf_run_id; *p && cps < 128; p++, cps++)
      n += utf8_put(k + n, 0x1f400 + (unsigned char)*p);
    for (; cps < 128; cps++)
      n += utf8_put(k + n, 0x1f512);
    k[n] = '\0';
    assert_int_equal(n, DLOCK_KEY_MAX);
    ak_add(s, "128 x 4-byte code points", k);
  }
  /* The longest keys, made of what each store escapes or widens most. */
  char base[128];
  snprintf(base, sizeof base, "%s/", conf_key("c17-max"));
  static const char *const fill[] = {"/", "%", ".", "\x01", "\xe2\x80\x8b", "\xf0\x9f\x94\x92",
                                     "\xc2\x85", " "};
  for (size_t i = 0; i < sizeof fill / sizeof *fill; i++) {
    char b2[160];
    snprintf(b2, sizeof b2, "%s%zu/", base, i);
    snprintf(desc, sizeof desc, "512 bytes, fill %zu", i);
    ak_add_longest(s, desc, b2, fill[i]);
  }
}

static void ak_free(struct ak_set *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->key[i]);
  s->n = 0;
}

struct ak_waiter {
  dlock_client *c;
  const char *key;
  int rc, release_rc;
  int64_t got_ms;
  uint64_t token;
  struct event started, done;
};

static void *ak_waiter_main(void *arg) {
  struct ak_waiter *w = arg;
  dlock_options o = opts(30000, 60000, 1);
  dlock_lock *l = NULL;
  event_signal(&w->started);
  w->rc = dlock_acquire(w->c, w->key, &o, &l);
  w->got_ms = now_ms();
  w->release_rc = -1;
  if (w->rc == 0) {
    w->token = dlock_lock_token(l);
    w->release_rc = dlock_release(l);
  }
  event_signal(&w->done);
  return NULL;
}

#define AK_FAIL(s, i, ...)                                                     \
  do {                                                                         \
    char m_[256];                                                              \
    snprintf(m_, sizeof m_, __VA_ARGS__);                                      \
    fail_msg("key %zu (%s): %s: %s", (i), (s)->desc[(i)], m_,                 \
             dlock_client_errmsg(NULL));                                       \
  } while (0)

#define AK_RC(s, i, expr, want)                                                \
  do {                                                                         \
    int r_ = (expr);                                                           \
    if (r_ != (want))                                                          \
      AK_FAIL(s, i, "%s = %s, want %s", #expr, dlock_err_name(r_),             \
              dlock_err_name(want));                                           \
  } while (0)

/* One key through try_acquire, inspect, a waiter of another client that
 * the release wakes, and try_acquire again once it is free.  The longest
 * wake-up so far goes to *MAX_LAG. */
static void ak_one(struct ak_set *s, size_t i, dlock_client *a, dlock_client *b,
                   int64_t *max_lag) {
  const char *key = s->key[i];
  dlock_options o = opts(30000, 0, 1);
  o.owner_label = "case17";
  dlock_lock *la, *lb;
  AK_RC(s, i, dlock_try_acquire(a, key, &o, &la), 0);
  dlock_info info;
  int rc = dlock_inspect(b, key, &info);
  if (rc != DLOCK_ENOTSUP) {
    AK_RC(s, i, rc, 0);
    if (info.held != 1)
      AK_FAIL(s, i, "inspect says not held");
    if ((g_caps & DLOCK_CAP_HOLDER_INFO) &&
        (info.token != dlock_lock_token(la) || strcmp(info.owner, dlock_lock_owner(la)) != 0 ||
         strcmp(info.label, "case17") != 0))
      AK_FAIL(s, i, "inspect names token %llu owner '%s' label '%s', the holder has %llu '%s'",
              (unsigned long long)info.token, info.owner, info.label,
              (unsigned long long)dlock_lock_token(la), dlock_lock_owner(la));
  }
  struct ak_waiter w = {.c = b, .key = key};
  event_init(&w.started);
  event_init(&w.done);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, ak_waiter_main, &w), 0);
  assert_int_equal(event_wait(&w.started, 1, 10000), 1);
  /* While the lock is held the waiter must not get it. */
  if (event_wait(&w.done, 1, 50) != 0)
    AK_FAIL(s, i, "the waiter got a held lock: %s", dlock_err_name(w.rc));
  uint64_t held = dlock_lock_token(la);
  int64_t released = now_ms();
  AK_RC(s, i, dlock_release(la), 0);
  if (event_wait(&w.done, 1, 60000) != 1)
    AK_FAIL(s, i, "the waiter did not wake within 60 s of the release");
  pthread_join(th, NULL);
  if (w.rc != 0)
    AK_FAIL(s, i, "waiter: %s", dlock_err_name(w.rc));
  if (w.release_rc != 0)
    AK_FAIL(s, i, "waiter's release: %s", dlock_err_name(w.release_rc));
  if ((g_caps & DLOCK_CAP_FENCING) && w.token <= held)
    AK_FAIL(s, i, "waiter's token %llu is not above %llu", (unsigned long long)w.token,
            (unsigned long long)held);
  if (w.got_ms - released > *max_lag)
    *max_lag = w.got_ms - released;
  /* Free again. */
  AK_RC(s, i, dlock_try_acquire(b, key, &o, &lb), 0);
  AK_RC(s, i, dlock_release(lb), 0);
  if (rc != DLOCK_ENOTSUP) {
    AK_RC(s, i, dlock_inspect(a, key, &info), 0);
    if (info.held != 0)
      AK_FAIL(s, i, "inspect says held after the release");
  }
}

static void case17_awkward_keys(void **state) {
  (void)state;
  static struct ak_set s;
  ak_build(&s);
  dlock_client *a = open_client(), *b = open_client();
  int64_t max_lag = 0;
  for (size_t i = 0; i < s.n; i++)
    ak_one(&s, i, a, b, &max_lag);
  printf("# %zu keys; longest wake-up after a release: %lld ms\n", s.n, (long long)max_lag);
  assert_true(max_lag < ((g_caps & DLOCK_CAP_NATIVE_WAIT) ? 1000 : 5000));

  /* No two keys of the sweep are one lock.  Held all at once by A, each is
   * busy for B and names its own holder.  Then A gives them back one at a
   * time and B takes each as soon as it is given back: had two keys one
   * lock, B would find the second still held, or (where a session may
   * take a lock it already has) A's release of the second would find it
   * gone. */
  static dlock_lock *la[AK_MAX], *lb[AK_MAX];
  dlock_options o = opts(60000, 0, 1);
  for (size_t i = 0; i < s.n; i++)
    AK_RC(&s, i, dlock_try_acquire(a, s.key[i], &o, &la[i]), 0);
  for (size_t i = 0; i < s.n; i++) {
    dlock_lock *l;
    AK_RC(&s, i, dlock_try_acquire(b, s.key[i], &o, &l), DLOCK_EBUSY);
    dlock_info info;
    int rc = dlock_inspect(b, s.key[i], &info);
    if (rc == DLOCK_ENOTSUP)
      continue;
    AK_RC(&s, i, rc, 0);
    if (info.held != 1 || ((g_caps & DLOCK_CAP_HOLDER_INFO) &&
                           strcmp(info.owner, dlock_lock_owner(la[i])) != 0))
      AK_FAIL(&s, i, "held %d by '%s', A's lock is '%s'", info.held, info.owner,
              dlock_lock_owner(la[i]));
  }
  for (size_t i = 0; i < s.n; i++) {
    AK_RC(&s, i, dlock_release(la[i]), 0);
    AK_RC(&s, i, dlock_try_acquire(b, s.key[i], &o, &lb[i]), 0);
  }
  for (size_t i = 0; i < s.n; i++)
    AK_RC(&s, i, dlock_release(lb[i]), 0);
  dlock_close(a);
  dlock_close(b);
  ak_free(&s);
}


/* ---- 18. list ---- */

struct seen {
  int calls;
  int stop_at; /* return 7 at this call (0: never) */
  char keys[8][300];
  dlock_info infos[8];
  int n;
};

static int note_lock(void *arg, const char *key, const dlock_info *info) {
  struct seen *s = arg;
  s->calls++;
  if (s->n < 8) {
    snprintf(s->keys[s->n], sizeof s->keys[s->n], "%s", key);
    s->infos[s->n++] = *info;
  }
  return s->stop_at && s->calls == s->stop_at ? 7 : 0;
}

static int seen_index(const struct seen *s, const char *key) {
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->keys[i], key) == 0)
      return i;
  return -1;
}

static void case18_list(void **state) {
  (void)state;
  if (!(g_caps & DLOCK_CAP_LIST)) {
    dlock_client *a = open_client();
    ASSERT_RC(dlock_list(a, NULL, note_lock, &(struct seen){0}), DLOCK_ENOTSUP);
    assert_true(strlen(dlock_client_errmsg(NULL)) > 0);
    printf("# %s\n", dlock_client_errmsg(NULL));
    dlock_close(a);
    skip();
  }
  dlock_client *a = open_client(), *b = open_client();
  char pre[256], k[3][300], other[300];
  snprintf(pre, sizeof pre, "%s", conf_key("c18/"));
  /* One plain name, one that every store must escape, one nested. */
  snprintf(k[0], sizeof k[0], "%sjob-1", pre);
  snprintf(k[1], sizeof k[1], "%sa b%%2F.lock:{x}\xc3\xbc", pre);
  snprintf(k[2], sizeof k[2], "%sdeep/er/key", pre);
  /* Shares the prefix's text but not its last byte. */
  snprintf(other, sizeof other, "%s", conf_key("c18x"));
  dlock_options o = opts(20000, 0, 1);
  o.owner_label = "lister";
  dlock_lock *l[3], *lo;
  for (int i = 0; i < 3; i++)
    ASSERT_RC(dlock_try_acquire(a, k[i], &o, &l[i]), 0);
  ASSERT_RC(dlock_try_acquire(a, other, &o, &lo), 0);

  struct seen s = {0};
  ASSERT_RC(dlock_list(b, pre, note_lock, &s), 0);
  assert_int_equal(s.calls, 3);
  for (int i = 0; i < 3; i++) {
    int j = seen_index(&s, k[i]);
    if (j < 0)
      fail_msg("dlock_list did not report '%s'", k[i]);
    assert_int_equal(s.infos[j].held, 1);
    expect_holder(&s.infos[j], l[i], "lister");
    if ((g_caps & DLOCK_CAP_SERVER_TTL) && (g_caps & DLOCK_CAP_HOLDER_INFO))
      assert_true(s.infos[j].ttl_ms > 0 && s.infos[j].ttl_ms <= 20000);
  }
  /* The whole run's prefix holds all four. */
  struct seen all = {0};
  ASSERT_RC(dlock_list(b, conf_key(""), note_lock, &all), 0);
  assert_true(all.calls >= 4);
  assert_true(seen_index(&all, other) >= 0);
  /* A callback's non-zero return ends the walk and is passed back. */
  struct seen stop = {.stop_at = 1};
  ASSERT_RC(dlock_list(b, pre, note_lock, &stop), 7);
  assert_int_equal(stop.calls, 1);
  /* Released locks are gone from the list. */
  ASSERT_RC(dlock_release(l[1]), 0);
  struct seen after = {0};
  ASSERT_RC(dlock_list(b, pre, note_lock, &after), 0);
  assert_int_equal(after.calls, 2);
  assert_int_equal(seen_index(&after, k[1]), -1);
  struct seen none = {0};
  ASSERT_RC(dlock_list(b, conf_key("c18-nothing/"), note_lock, &none), 0);
  assert_int_equal(none.calls, 0);
  ASSERT_RC(dlock_list(b, NULL, NULL, NULL), DLOCK_EINVAL);
  ASSERT_RC(dlock_list(NULL, pre, note_lock, &none), DLOCK_EINVAL);
  ASSERT_RC(dlock_release(l[0]), 0);
  ASSERT_RC(dlock_release(l[2]), 0);
  ASSERT_RC(dlock_release(lo), 0);
  dlock_close(a);
  dlock_close(b);
}

/* ---- 19. break ---- */

static void case19_break(void **state) {
  (void)state;
  if (!(g_caps & DLOCK_CAP_BREAK)) {
    dlock_client *a = open_client();
    ASSERT_RC(dlock_break(a, conf_key("c19"), NULL, NULL), DLOCK_ENOTSUP);
    assert_true(strlen(dlock_client_errmsg(NULL)) > 0);
    dlock_close(a);
    skip();
  }
  dlock_client *a = open_client(), *b = open_client();
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("c19"));
  struct event lost;
  event_init(&lost);
  const int64_t ttl = 3000;
  dlock_options o = opts(ttl, 0, 1);
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  o.owner_label = "to be broken";
  dlock_lock *l;
  /* Nobody holds it: nothing to break, and that is no error. */
  dlock_info got, free_seen;
  memset(&got, 0xff, sizeof got);
  ASSERT_RC(dlock_break(b, k, NULL, &got), 0);
  assert_int_equal(got.held, 0);
  ASSERT_RC(dlock_inspect(b, k, &free_seen), 0);
  assert_int_equal(free_seen.held, 0);
  ASSERT_RC(dlock_try_acquire(a, k, &o, &l), 0);
  /* What was looked at was free: the holder that came since is spared. */
  memset(&got, 0xff, sizeof got);
  ASSERT_RC(dlock_break(b, k, &free_seen, &got), 0);
  assert_int_equal(got.held, 0);
  ASSERT_RC(dlock_renew(l, 0), 0);
  uint64_t tok = dlock_lock_token(l);
  dlock_info seen;
  ASSERT_RC(dlock_inspect(b, k, &seen), 0);
  /* A holder other than the one named is left alone. */
  dlock_info wrong = seen;
  if (wrong.owner[0])
    wrong.owner[0] = wrong.owner[0] == '0' ? '1' : '0';
  else
    wrong.token = tok + 1000;
  ASSERT_RC(dlock_break(b, k, &wrong, &got), DLOCK_EBUSY);
  ASSERT_RC(dlock_lock_state(l), DLOCK_HELD);
  /* A label alone names nobody where the store has owners and tokens. */
  if (g_caps & DLOCK_CAP_HOLDER_INFO) {
    dlock_info by_label;
    memset(&by_label, 0, sizeof by_label);
    by_label.held = 1;
    snprintf(by_label.label, sizeof by_label.label, "%s", "to be broken");
    ASSERT_RC(dlock_break(b, k, &by_label, &got), DLOCK_EBUSY);
    ASSERT_RC(dlock_lock_state(l), DLOCK_HELD);
  }
  ASSERT_RC(dlock_renew(l, 0), 0);
  /* The one looked at is broken, and says who it was. */
  int64_t t0 = now_ms();
  ASSERT_RC(dlock_break(b, k, &seen, &got), 0);
  assert_int_equal(got.held, 1);
  if (g_caps & DLOCK_CAP_HOLDER_INFO) {
    assert_int_equal(got.token, tok);
    assert_string_equal(got.label, "to be broken");
  }
  /* Another can take it at once, with a larger token. */
  dlock_lock *lb;
  dlock_options w = opts(30000, 10000, 1);
  ASSERT_RC(dlock_acquire(b, k, &w, &lb), 0);
  assert_true(dlock_lock_token(lb) > tok);
  /* The broken holder learns of it within a ttl (renewals every ttl/3). */
  assert_int_equal(event_wait(&lost, 1, ttl + 1000), 1);
  printf("# the broken holder saw the loss after %lld ms\n", (long long)(now_ms() - t0));
  ASSERT_RC(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(lost.token, tok);
  ASSERT_RC(dlock_release(l), DLOCK_ELOST);
  ASSERT_RC(dlock_lock_state(lb), DLOCK_HELD);
  /* A client that breaks its own lock sees it LOST at once. */
  ASSERT_RC(dlock_break(b, k, NULL, &got), 0);
  assert_int_equal(got.held, 1);
  ASSERT_RC(dlock_lock_state(lb), DLOCK_LOST);
  ASSERT_RC(dlock_release(lb), DLOCK_ELOST);
  ASSERT_RC(dlock_break(b, "", NULL, NULL), DLOCK_EINVAL);
  ASSERT_RC(dlock_break(NULL, k, NULL, NULL), DLOCK_EINVAL);
  dlock_close(a);
  dlock_close(b);
}

static const struct conf_case shared_cases[] = {
    {"case01_try_busy", "try_acquire takes a free key; a second client gets DLOCK_EBUSY",
     case01_try_busy, NULL, 0},
    {"case02_mutual_exclusion", "clients x threads never hold one key at once; the count is exact",
     case02_mutual_exclusion, NULL, 0},
    {"case03_wake_on_release", "a blocked acquire wakes when the holder releases",
     case03_wake_on_release, NULL, 0},
    {"case04_deadline", "an acquire with a deadline gives DLOCK_ETIMEDOUT near it", case04_deadline,
     NULL, 0},
    {"case05_vanished_holder", "a SIGKILLed holder's lock frees after its ttl",
     case05_vanished_holder, NULL, 0},
    {"case06_stale_handle", "a stale handle gets DLOCK_ELOST and leaves the new holder alone",
     case06_stale_handle, NULL, 0},
    {"case07_renew", "renew extends the lease; auto-renew keeps it; release stops renewal",
     case07_renew, NULL, 0},
    {"case08_fencing", "fencing tokens strictly increase across holders", case08_fencing, NULL, 0},
    {"case09_reentrancy", "nested acquires share one token and need as many releases",
     case09_reentrancy, NULL, 0},
    {"case10_loss", "a lock deleted behind the holder's back turns LOST within a ttl", case10_loss,
     NULL, 0},
    {"case11_bad_input", "bad URLs, keys and ttls give DLOCK_EINVAL with a message",
     case11_bad_input, NULL, 0},
    {"case12_unreachable", "an unreachable store gives DLOCK_ECONN within the timeout",
     case12_unreachable, NULL, 0},
    {"case13_many_keys", "one client holds 1,000 auto-renewed locks past their ttl",
     case13_many_keys, NULL, 0},
    {"case14_inspect", "inspect names the current holder and token", case14_inspect, NULL, 0},
    {"case15_key_mapping", "keys that differ only by escaping are different locks",
     case15_key_mapping, NULL, 0},
    {"case16_token_after_store_reset", "tokens keep growing after the store forgets a key",
     case16_token_after_store_reset, NULL, 0},
    {"case17_awkward_keys", "keys of every byte class, odd code points and 512 bytes work",
     case17_awkward_keys, NULL, 0},
    {"case18_list", "list names every held lock under a prefix, with its holder", case18_list,
     NULL, 0},
    {"case19_break", "break releases the holder named, which then sees LOST", case19_break, NULL,
     0},
};

/* The store's own cases, after the shared ones. */
static const struct conf_case *store_cases(const char *url, size_t *n) {
  *n = 0;
  (void)url;
#ifdef DLOCK_HAVE_REDIS
  if (strncmp(url, "redis", 5) == 0)
    return conf_redis_cases(url, n);
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
  if (strncmp(url, "zk:", 3) == 0)
    return conf_zk_cases(url, n);
#endif
#ifdef DLOCK_HAVE_POSTGRES
  if (strncmp(url, "postgres", 8) == 0)
    return conf_pg_cases(url, n);
#endif
#ifdef DLOCK_HAVE_ETCD
  if (strncmp(url, "etcd", 4) == 0)
    return conf_etcd_cases(url, n);
#endif
#ifdef DLOCK_HAVE_CONSUL
  if (strncmp(url, "consul", 6) == 0)
    return conf_consul_cases(url, n);
#endif
  return NULL;
}

/* ---- the runner ---- */

#ifndef DLOCK_VERSION
#define DLOCK_VERSION "unknown"
#endif

int conf_destructive;

static const char *const *g_patterns;
static int g_npatterns;

static bool selected(const char *name) {
  if (g_npatterns == 0)
    return true;
  for (int i = 0; i < g_npatterns; i++)
    if (fnmatch(g_patterns[i], name, 0) == 0)
      return true;
  return false;
}

struct tally {
  int passed, failed, skipped;
};

/* A URL that dlock_open refused as invalid (exit status 2). */
static bool g_bad_url;

/* cmocka prints its own frame around every group; the runner prints one
 * line per case instead, so a case's output is caught in a file and all
 * but that frame is passed on.  -1 when nothing is being caught. */
static int g_saved_stdout = -1;

static bool cmocka_frame(const char *line) {
  static const char *const frame[] = {"1..1",         "ok 1 ",        "not ok 1",
                                      "# ok - ",      "# not ok - ",  "[==========]",
                                      "[ RUN      ]", "[       OK ]", "[  FAILED  ]",
                                      "[  SKIPPED ]", "[  PASSED  ]", "test: ",
                                      "success: ",    "skip: "};
  for (size_t i = 0; i < sizeof frame / sizeof *frame; i++)
    if (strncmp(line, frame[i], strlen(frame[i])) == 0)
      return true;
  return false;
}

static void stop_catching(FILE *caught) {
  fflush(stdout);
  dup2(g_saved_stdout, STDOUT_FILENO);
  close(g_saved_stdout);
  g_saved_stdout = -1;
  if (!caught)
    return;
  rewind(caught);
  char line[4096];
  while (fgets(line, sizeof line, caught))
    if (!cmocka_frame(line))
      fputs(line, stdout);
  fclose(caught);
}

static bool g_case_returned;
static void (*g_case_fn)(void **);

/* Tells a case that returned from one that cmocka left by a skip (both
 * count as no failure). */
static void trampoline(void **state) {
  g_case_fn(state);
  g_case_returned = true;
}

static void run_case(const struct conf_case *cc, struct tally *t) {
  int64_t t0 = now_ms();
  if ((cc->flags & CONF_DESTRUCTIVE) && !conf_destructive) {
    printf("SKIP %-40s %7.2f s  skipped (needs --destructive)\n", cc->name, 0.0);
    t->skipped++;
    return;
  }
  const struct CMUnitTest test = {cc->name, trampoline, NULL, cc->teardown, NULL};
  g_case_fn = cc->test;
  g_case_returned = false;
  fflush(stdout);
  FILE *caught = tmpfile();
  if (caught) {
    /* Close-on-exec: a server a case restarts must not keep the real
     * stdout (a pipe its reader then waits on forever). */
    g_saved_stdout = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0);
    if (g_saved_stdout < 0 || dup2(fileno(caught), STDOUT_FILENO) < 0) {
      if (g_saved_stdout >= 0)
        close(g_saved_stdout);
      g_saved_stdout = -1;
      fclose(caught);
      caught = NULL;
    }
  }
  int f = _cmocka_run_group_tests(cc->name, &test, 1, NULL, NULL);
  if (caught)
    stop_catching(caught);
  double secs = (double)(now_ms() - t0) / 1000.0;
  if (f) {
    printf("FAIL %-40s %7.2f s\n", cc->name, secs);
    t->failed++;
  } else if (g_case_returned) {
    printf("PASS %-40s %7.2f s\n", cc->name, secs);
    t->passed++;
  } else {
    printf("SKIP %-40s %7.2f s  skipped\n", cc->name, secs);
    t->skipped++;
  }
  fflush(stdout);
}

/* ---- stopping on a signal ---- */

/* SIGINT and SIGTERM go through a pipe to a thread that removes what the
 * run made in the store under test and ends the process: the cleanup
 * needs the store's clients, which a signal handler may not call. */
static int g_sigpipe[2] = {-1, -1};
static const char *volatile g_cleanup_url;

static void on_signal(int sig) {
  unsigned char b = (unsigned char)sig;
  ssize_t w = write(g_sigpipe[1], &b, 1);
  (void)w;
}

static void *signal_main(void *arg) {
  (void)arg;
  unsigned char sig;
  while (read(g_sigpipe[0], &sig, 1) != 1)
    ;
  if (sig == 0)
    return NULL; /* the run is over */
  /* The case under way may hold stdout in its file. */
  if (g_saved_stdout >= 0)
    dup2(g_saved_stdout, STDOUT_FILENO);
  fprintf(stderr, "conformance: stopped by signal %d; removing what this run made\n", sig);
  const char *url = g_cleanup_url;
  if (url)
    conf_cleanup(url);
  fflush(NULL);
  _exit(128 + sig);
}

/* A forked holder (case 5) dies of the signal as any process would. */
static void child_after_fork(void) {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
}

static pthread_t g_signal_thread;
static bool g_signal_thread_up;

static void install_signal_cleanup(void) {
  if (pipe(g_sigpipe) != 0)
    return;
  if (pthread_create(&g_signal_thread, NULL, signal_main, NULL) != 0)
    return;
  g_signal_thread_up = true;
  pthread_atfork(NULL, NULL, child_after_fork);
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* ---- command line ---- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: dlock-conformance [--destructive] [--list] [--case NAME]... [--help]\n"
          "                         [-V|--version] URL...\n"
          "\n"
          "Runs the dlock conformance suite against each lock store URL: the cases\n"
          "every backend must pass, then the store's own.  By default the suite\n"
          "touches only keys under a fresh prefix, conf-<pid>-<random>/, and removes\n"
          "everything it made before it exits, on failure and on SIGINT/SIGTERM too.\n"
          "Every case prints one line: PASS, FAIL or SKIP, its name and its time;\n"
          "then a summary line per store and one for the whole run.\n"
          "\n"
          "  --destructive  also run the cases that disturb the store beyond keys of\n"
          "                 their own: flushing the script cache, creating ACL users,\n"
          "                 changing passwords, compacting, terminating sessions,\n"
          "                 killing or stopping servers.  Without it they are reported\n"
          "                 as \"skipped (needs --destructive)\", never as passed.\n"
          "  --list         print each case's name and what it checks, and exit; with\n"
          "                 URLs, only the cases that run on them.\n"
          "  --case NAME    run only the cases NAME matches (a glob: '*', '?', [...]);\n"
          "                 repeatable.  A NAME that matches no case of the URLs'\n"
          "                 stores is a usage error.\n"
          "  -h, --help     print this and exit.\n"
          "  -V, --version  print the version and exit.\n"
          "\n"
          "Environment:\n"
          "  DLOCK_CONFORMANCE_CASES  a glob, as one more --case.\n"
          "  DLOCK_TEST_PGBOUNCER_URL  postgres:// URL through PgBouncer (transaction\n"
          "                 pooling): p1 checks that advisory mode is refused there.\n"
          "  DLOCK_TEST_PG_SHUTDOWN_URL, DLOCK_TEST_PG_SMART_STOP,\n"
          "  DLOCK_TEST_PG_RESTART  a PostgreSQL server of the case's own and the\n"
          "                 commands that stop it (smart shutdown) and restart it,\n"
          "                 for conf_pg_no_grant_while_shutting_down (destructive).\n"
          "  DLOCK_TEST_ZK_ENSEMBLE_URL, DLOCK_TEST_ZK_KILL_LEADER  a ZooKeeper ensemble\n"
          "                 and a command that kills its leader, for z4 (destructive).\n"
          "  DLOCK_TEST_ETCD_CLUSTER_URL, DLOCK_TEST_ETCD_STOP_MEMBER,\n"
          "  DLOCK_TEST_ETCD_START_MEMBER  an etcd cluster and the commands that stop\n"
          "                 and start a member (given its client port), for e5\n"
          "                 (destructive).\n"
          "  DLOCK_TEST_ETCDCTL  the etcdctl binary, for e1.\n"
          "  DLOCK_TEST_ETCD_ROOT_PASSWORD  etcd root's password, for e7 (destructive;\n"
          "                 default dlock-root-pw).\n"
          "  DLOCK_TEST_CONSUL  the consul binary, for a_consul_lock_interop.\n"
          "  CONSUL_HTTP_TOKEN  the Consul ACL token when the URL has no ?token=.\n"
          "  DLOCK_CONFORMANCE_STRICT  when set, a case missing one of the variables\n"
          "                 above fails instead of being skipped (scripts/test sets it\n"
          "                 in CI).\n"
          "  CMOCKA_TEST_ABORT  read by cmocka: 1 aborts on the first failure.\n"
          "  CMOCKA_MESSAGE_OUTPUT  read by cmocka; leave it unset (the runner reads\n"
          "                 cmocka's TAP output to print one line per case).\n"
          "\n"
          "Exit status: 0 if every case that ran passed (and at least one ran), 1 if\n"
          "a case failed, none ran, or what the run made could not all be removed,\n"
          "2 on a usage error (an invalid URL included), 128+N when stopped by signal\n"
          "N (after the cleanup).\n");
}

static void list_cases(const struct conf_case *cs, size_t n, const char *store) {
  for (size_t i = 0; i < n; i++)
    printf("%-40s %s%s%s%s\n", cs[i].name, store ? store : "", store ? ": " : "", cs[i].desc,
           (cs[i].flags & CONF_DESTRUCTIVE) ? " [destructive]" : "");
}

static const struct {
  const char *url, *store;
} stores[] = {{"redis://", "redis"}, {"zk://", "zookeeper"}, {"postgres://", "postgres"},
              {"etcd://", "etcd"},   {"consul://", "consul"}};

/* --list: the shared cases, then those of every store (no URL) or of the
 * stores of URLS. */
static void list_for(char **urls, int n_urls) {
  list_cases(shared_cases, sizeof shared_cases / sizeof *shared_cases, NULL);
  for (size_t i = 0; i < sizeof stores / sizeof *stores; i++) {
    bool used = n_urls == 0;
    for (int j = 0; j < n_urls && !used; j++) {
      size_t a, b;
      used = store_cases(urls[j], &a) == store_cases(stores[i].url, &b) && a > 0;
    }
    size_t n;
    const struct conf_case *cs = store_cases(stores[i].url, &n);
    if (used)
      list_cases(cs, n, stores[i].store);
  }
}

static int run_store(const char *url, struct tally *all) {
  char name[512];
  dlock_url_redact(url, name, sizeof name);
  g_url = url;
  struct tally t = {0};
  int64_t t0 = now_ms();
  dlock_client *c;
  printf("# conformance %s (run %s)\n", name, conf_run_id);
  int orc = dlock_open(url, &c);
  if (orc != 0) {
    fprintf(stderr, "conformance: cannot open %s: %s\n", name, dlock_client_errmsg(NULL));
    printf("store %s: cannot open it\n", name);
    all->failed++;
    if (orc == DLOCK_EINVAL)
      g_bad_url = true; /* the URL, not the store: a usage error */
    return 1;
  }
  g_caps = dlock_client_caps(c);
  dlock_close(c);
  conf_cleanup_begin(url);
  g_cleanup_url = url;
  for (size_t i = 0; i < sizeof shared_cases / sizeof *shared_cases; i++)
    if (selected(shared_cases[i].name))
      run_case(&shared_cases[i], &t);
  size_t n;
  const struct conf_case *cs = store_cases(url, &n);
  for (size_t i = 0; i < n; i++)
    if (selected(cs[i].name))
      run_case(&cs[i], &t);
  int cleaned = conf_cleanup(url);
  g_cleanup_url = NULL;
  if (cleaned != 0) {
    printf("FAIL %-40s %7.2f s\n", "cleanup", 0.0);
    t.failed++;
  }
  printf("store %s: %d passed, %d failed, %d skipped (%.1f s)\n", name, t.passed, t.failed,
         t.skipped, (double)(now_ms() - t0) / 1000.0);
  all->passed += t.passed;
  all->failed += t.failed;
  all->skipped += t.skipped;
  return t.failed;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"destructive", no_argument, NULL, 'D'}, {"list", no_argument, NULL, 'l'},
      {"case", required_argument, NULL, 'c'},  {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},     {NULL, 0, NULL, 0},
  };
  const char **patterns = calloc((size_t)argc + 1, sizeof *patterns);
  if (!patterns)
    return 1;
  int np = 0, list = 0, opt;
  while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
    switch (opt) {
    case 'D': conf_destructive = 1; break;
    case 'l': list = 1; break;
    case 'c': patterns[np++] = optarg; break;
    case 'h': usage(stdout); free(patterns); return 0;
    case 'V': printf("dlock-conformance %s\n", DLOCK_VERSION); free(patterns); return 0;
    default: usage(stderr); free(patterns); return 2;
    }
  }
  const char *only = getenv("DLOCK_CONFORMANCE_CASES");
  if (only && *only)
    patterns[np++] = only;
  g_patterns = patterns;
  g_npatterns = np;
  if (list) {
    list_for(argv + optind, argc - optind);
    free(patterns);
    return 0;
  }
  if (optind == argc) {
    usage(stderr);
    free(patterns);
    return 2;
  }
  /* A --case that names no case of these stores is a typo, not a pass. */
  for (int p = 0; p < np; p++) {
    bool found = false;
    for (size_t i = 0; i < sizeof shared_cases / sizeof *shared_cases && !found; i++)
      found = fnmatch(patterns[p], shared_cases[i].name, 0) == 0;
    for (int u = optind; u < argc && !found; u++) {
      size_t n;
      const struct conf_case *cs = store_cases(argv[u], &n);
      for (size_t i = 0; i < n && !found; i++)
        found = fnmatch(patterns[p], cs[i].name, 0) == 0;
    }
    if (!found) {
      fprintf(stderr, "dlock-conformance: no case of these stores matches '%s' (see --list)\n",
              patterns[p]);
      free(patterns);
      return 2;
    }
  }
  char rnd[9];
  dlock__random_hex(rnd, 4);
  snprintf(g_run, sizeof g_run, "%ld-%s", (long)getpid(), rnd);
  conf_run_id = g_run;
  signal(SIGPIPE, SIG_IGN);
  install_signal_cleanup();
  cmocka_set_message_output(CM_OUTPUT_TAP);
  /* The file backend keeps one descriptor per held lock; case 13 holds a
   * thousand in each of two clients. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  struct tally all = {0};
  for (int i = optind; i < argc; i++)
    run_store(argv[i], &all);
  printf("overall: %d passed, %d failed, %d skipped on %d store(s)\n", all.passed, all.failed,
         all.skipped, argc - optind);
  free(patterns);
  /* Signals from here on end the process as they would anyone's. */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (g_signal_thread_up) {
    unsigned char done = 0;
    if (write(g_sigpipe[1], &done, 1) == 1)
      pthread_join(g_signal_thread, NULL);
  }
  if (g_bad_url)
    return 2;
  if (all.failed)
    return 1;
  /* Every case selected was skipped: nothing was shown to hold. */
  if (all.passed == 0) {
    fprintf(stderr, "conformance: no case ran (%d skipped)\n", all.skipped);
    return 1;
  }
  return 0;
}
