/* Cases only ZooKeeper has: no herd effect on release, first come first
 * served, a session expired from outside, a leader failover, what list
 * and break make of the lock queue, and what a session that lives on
 * would keep (an unrenewed lock, an unanswered release) given back. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#define THREADED 1
#include <zookeeper/zookeeper.h>

#include "backends/zookeeper/zk-codec.h"
#include "dlock/admin.h"
#include "dlock/dlock.h"
#include "event.h"
#include "faults.h"
#include "internal.h"
#include "relay.h"

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

/* Waits until KEY's queue holds at least N entries (with AT_MOST, at most
 * N); false after TIMEOUT_MS. */
static bool probe_until(struct queue_probe *p, int n, bool at_most, int64_t timeout_ms) {
  int64_t end = dlock__now_ns() / 1000000 + timeout_ms;
  for (;;) {
    int seen = event_wait(&p->w.changed, 0, 0);
    struct String_vector sv = {0, NULL};
    int rc = zoo_get_children(p->zh, p->dir, 1, &sv);
    int count = rc == ZOK ? sv.count : 0;
    if (rc == ZOK)
      deallocate_String_vector(&sv);
    if (at_most ? count <= n : count >= n)
      return true;
    if (rc == ZNONODE) /* no watch left on a missing dir: look again soon */
      zoo_exists(p->zh, p->dir, 1, NULL);
    int64_t left = end - dlock__now_ns() / 1000000;
    if (left <= 0)
      return false;
    event_wait(&p->w.changed, seen + 1, left);
  }
}

static bool probe_wait(struct queue_probe *p, int n, int64_t timeout_ms) {
  return probe_until(p, n, false, timeout_ms);
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


/* ---- z6, z7: never HELD once the server may have expired the session ---- */

static int64_t mono_ms(void) { return dlock__now_ns() / 1000000; }

/* Lets wall time pass to make a pause or a fault last; never used to wait
 * for another thread or process. */
static void let_time_pass(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static bool read_byte(int fd, char *b, int timeout_ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  return poll(&pfd, 1, timeout_ms) == 1 && read(fd, b, 1) == 1;
}

/* Holder A (ttl 2 s) is stopped for twice its ttl; B gets the lock
 * meanwhile, which proves the server expired A's session.  The first thing
 * A's thread does when it runs again is ask for the state: LOST, before any
 * event about the expiry could have arrived. */
static void z6_paused_holder(void **state) {
  (void)state;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("z6"));
  char url[4096];
  snprintf(url, sizeof url, "%s", conf_url_with(z_url, "ttl=2s"));
  int up[2], down[2];
  assert_int_equal(pipe(up), 0);
  assert_int_equal(pipe(down), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(up[0]);
    close(down[1]);
    dlock_client *c;
    dlock_lock *l;
    dlock_options o = DLOCK_OPTIONS_INIT;
    char ok = dlock_open(url, &c) == 0 && dlock_try_acquire(c, k, &o, &l) == 0 ? 'k' : 'e';
    if (write(up[1], &ok, 1) != 1 || ok != 'k')
      _exit(2);
    char go;
    if (read(down[0], &go, 1) != 1)
      _exit(3);
    char st = (char)dlock_lock_state(l);
    if (write(up[1], &st, 1) != 1)
      _exit(4);
    dlock_release(l);
    dlock_close(c);
    _exit(0);
  }
  close(up[1]);
  close(down[0]);
  char b = 0;
  assert_true(read_byte(up[0], &b, 20000));
  assert_int_equal(b, 'k');
  int64_t t_stop = mono_ms();
  assert_int_equal(kill(pid, SIGSTOP), 0);
  dlock_client *cb = open_url(url);
  dlock_options w = DLOCK_OPTIONS_INIT;
  w.wait_ms = 30000;
  dlock_lock *lb;
  int rc = dlock_acquire(cb, k, &w, &lb);
  int64_t t_b = mono_ms();
  if (rc == 0) {
    /* The pause lasts twice the ttl in all. */
    if (t_b < t_stop + 4000)
      let_time_pass(t_stop + 4000 - t_b);
  }
  /* The byte is in the pipe before A runs again: its read returns at once. */
  char go = 'g';
  assert_int_equal(write(down[1], &go, 1), 1);
  kill(pid, SIGCONT);
  char st = 0;
  bool got = read_byte(up[0], &st, 20000);
  int wst = 0;
  waitpid(pid, &wst, 0);
  close(up[0]);
  close(down[1]);
  if (rc != 0)
    fail_msg("B could not take the lock of the stopped holder: %s: %s", dlock_err_name(rc),
             dlock_client_errmsg(NULL));
  printf("# B got the lock %lld ms into A's pause\n", (long long)(t_b - t_stop));
  assert_true(got);
  if (st != DLOCK_LOST)
    fail_msg("A's first state after its pause is %d, want LOST (%d); B holds the lock", st,
             DLOCK_LOST);
  assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
  assert_int_equal(dlock_lock_state(lb), DLOCK_HELD);
  assert_int_equal(dlock_release(lb), 0);
  dlock_close(cb);
}

/* URL with its hosts replaced by 127.0.0.1:PORT; *host and *hport get its
 * first host (malloc'd) and port. */
static char *url_via(const char *url, int port, char **host, int *hport) {
  dlock_url *u;
  if (dlock__url_parse(url, &u) != 0)
    return NULL;
  *host = strdup(dlock_url_host(u, 0));
  *hport = dlock_url_port(u, 0) ? dlock_url_port(u, 0) : DLOCK__ZK_DEFAULT_PORT;
  dlock__url_free(u);
  const char *p = strstr(url, "://");
  if (!p || !*host)
    return NULL;
  p += 3;
  size_t hl = strcspn(p, "/?");
  const char *at = memchr(p, '@', hl);
  const char *hosts = at ? at + 1 : p;
  size_t n = strlen(url) + 32;
  char *out = malloc(n);
  if (out)
    snprintf(out, n, "%.*s127.0.0.1:%d%s", (int)(hosts - url), url, port, p + hl);
  return out;
}

struct b_waiter {
  dlock_client *c;
  const char *key;
  int64_t wait_ms; /* 0: 30 s */
  int rc;
  int64_t got_ms; /* when its acquire returned */
  dlock_lock *l;
  struct event done;
};

static void *b_main(void *arg) {
  struct b_waiter *w = arg;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = w->wait_ms ? w->wait_ms : 30000;
  w->rc = dlock_acquire(w->c, w->key, &o, &w->l);
  w->got_ms = mono_ms();
  event_signal(&w->done);
  return NULL;
}

/* No pause: A's replies come half a second late, then its requests are
 * lost while the late replies still arrive.  The C client hears those
 * replies as recent contact and reports the disconnect late; A must still turn LOST by the send time of
 * its last answered request plus the session timeout, and never be HELD
 * while B is. */
static void z7_slow_then_silent_network(void **state) {
  (void)state;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("z7"));
  char base[4096];
  snprintf(base, sizeof base, "%s", conf_url_with(z_url, "ttl=2s&timeout=1s"));
  char *host = NULL;
  int hport = 0;
  char *probe = url_via(base, 1, &host, &hport);
  assert_non_null(probe);
  free(probe);
  conf_relay *r = conf_relay_start(host, hport);
  assert_non_null(r);
  free(host);
  char *aurl = url_via(base, conf_relay_port(r), &host, &hport);
  assert_non_null(aurl);
  dlock_client *a = open_url(aurl), *b = open_url(base);
  int64_t timeout_ms = 0;
  assert_int_equal(dlock_control(a, NULL, DLOCK_ZK_CTL_SESSION_TIMEOUT, &timeout_ms), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *la;
  assert_int_equal(dlock_try_acquire(a, k, &o, &la), 0);

  assert_int_equal(conf_relay_set(r, CONF_RELAY_PASS, 0, 500), 0);
  /* A few renewal periods with late replies. */
  int64_t until = mono_ms() + 2000, last_held = 0, deadline_est = 0;
  while (mono_ms() < until) {
    assert_int_equal(dlock_lock_state(la), DLOCK_HELD);
    let_time_pass(5);
  }
  assert_int_equal(conf_relay_set(r, CONF_RELAY_PASS, -1, 500), 0);
  struct b_waiter w = {.c = b, .key = k};
  event_init(&w.done);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, b_main, &w), 0);
  /* Watch A until B has the lock and A is LOST. */
  int64_t first_lost = 0;
  int64_t end = mono_ms() + 40000;
  while (mono_ms() < end) {
    int64_t before = mono_ms();
    int64_t left = dlock_lock_remaining_ms(la);
    int st = dlock_lock_state(la);
    int64_t after = mono_ms();
    if (st == DLOCK_HELD) {
      last_held = after;
      /* The deadline the core keeps: last answered send + timeout - margin. */
      if (before + left + 1 > deadline_est)
        deadline_est = before + left + 1;
    } else if (!first_lost) {
      first_lost = before;
    }
    if (first_lost && event_wait(&w.done, 1, 0) == 1)
      break;
    let_time_pass(1);
  }
  pthread_join(th, NULL);
  printf("# A LOST at %lld ms, B HELD at %lld ms, A's deadline was %lld ms (after the drop; "
         "session timeout %lld ms)\n",
         (long long)(first_lost - until), (long long)(w.got_ms - until),
         (long long)(deadline_est - until), (long long)timeout_ms);
  if (w.rc != 0)
    fail_msg("B: %s: %s", dlock_err_name(w.rc), dlock_client_errmsg(NULL));
  assert_true(first_lost > 0);
  if (last_held >= w.got_ms)
    fail_msg("A was HELD %lld ms after B got the lock", (long long)(last_held - w.got_ms));
  /* Liveness, not safety (that is the check above): A notices by its own
   * deadline.  The margin is ttl/100 + 2 ms; the slack on top is for
   * polling on a loaded machine, where a thread can sit a long while
   * between reading the remaining time and the state. */
  assert_true(first_lost <= deadline_est + timeout_ms / 100 + 2000);
  assert_int_equal(dlock_release(w.l), 0);
  /* Let A see its session's end, so that closing it does not wait. */
  assert_int_equal(conf_relay_set(r, CONF_RELAY_PASS, 0, 0), 0);
  assert_int_equal(dlock_release(la), DLOCK_ELOST);
  dlock_close(a);
  dlock_close(b);
  conf_relay_stop(r);
  free(aurl);
  free(host);
}

/* ---- z9, z10: what confirms a session is a sync, not a read ---- */

/* A follower cut off from the leader still answers reads while the leader
 * may expire the session, so only requests the leader must see (writes,
 * syncs) confirm it.  Cutting one follower off from its leader needs more
 * than this suite has (network namespaces); these cases check the
 * mechanism instead: renewals are syncs, one per session per period
 * however many locks share it, and they alone keep the locks HELD. */

static uint64_t syncs(dlock_client *c) {
  uint64_t n = 0;
  assert_int_equal(dlock_control(c, NULL, DLOCK_ZK_CTL_SYNCS, &n), 0);
  return n;
}

#define Z9_LOCKS 8

static void z9_renewal_is_one_sync_per_session(void **state) {
  (void)state;
  const int64_t ttl = 3000;
  dlock_client *c = open_url(conf_url_with(z_url, "ttl=3s"));
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *l[Z9_LOCKS];
  char k[Z9_LOCKS][256];
  for (int i = 0; i < Z9_LOCKS; i++) {
    char name[16];
    snprintf(name, sizeof name, "z9-%d", i);
    snprintf(k[i], sizeof k[i], "%s", conf_key(name));
    assert_int_equal(dlock_try_acquire(c, k[i], &o, &l[i]), 0);
  }
  /* Uncontended acquisitions count from their create, a write: no sync. */
  uint64_t s0 = syncs(c);
  assert_int_equal(s0, 0);
  /* Hold for well over the lease: only the renewals' answers can keep
   * the locks HELD that long. */
  int64_t start = mono_ms(), hold = ttl * 5 / 2;
  while (mono_ms() - start < hold) {
    for (int i = 0; i < Z9_LOCKS; i++)
      if (dlock_lock_state(l[i]) != DLOCK_HELD)
        fail_msg("lock %d not HELD %lld ms into the hold", i, (long long)(mono_ms() - start));
    let_time_pass(20);
  }
  int64_t took = mono_ms() - start;
  uint64_t n = syncs(c) - s0;
  /* The core renews at a third of the lease; one sync per period for the
   * one session, give or take the ends.  Per lock it would be eight times
   * as many. */
  int64_t periods = took / (ttl / 3);
  printf("# %llu syncs in %lld ms (%lld renewal periods) for %d locks on one session\n",
         (unsigned long long)n, (long long)took, (long long)periods, Z9_LOCKS);
  if (n < 2)
    fail_msg("%llu syncs in %lld ms: renewal does not sync", (unsigned long long)n,
             (long long)took);
  if ((int64_t)n > periods + 3)
    fail_msg("%llu syncs in %lld renewal periods: not one per session per period",
             (unsigned long long)n, (long long)periods);
  for (int i = 0; i < Z9_LOCKS; i++)
    assert_int_equal(dlock_release(l[i]), 0);
  dlock_close(c);
}

/* An acquisition granted after a wait: its create, a write, is as old as
 * the wait, and the listing that puts it first is a read.  It confirms its
 * session with a sync and counts its lease from there. */
static void z10_wait_then_sync(void **state) {
  (void)state;
  const int64_t ttl = 3000, wait = 1500;
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("z10"));
  dlock_client *a = open_url(conf_url_with(z_url, "ttl=3s")),
               *b = open_url(conf_url_with(z_url, "ttl=3s"));
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *la;
  assert_int_equal(dlock_try_acquire(a, k, &o, &la), 0);
  struct queue_probe p;
  probe_open(&p, k);
  struct b_waiter w = {.c = b, .key = k};
  event_init(&w.done);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, b_main, &w), 0);
  assert_true(probe_wait(&p, 2, 30000));
  uint64_t s0 = syncs(b);
  let_time_pass(wait); /* B's create ages past a sixth of the lease */
  assert_int_equal(dlock_release(la), 0);
  pthread_join(th, NULL);
  if (w.rc != 0)
    fail_msg("B: %s: %s", dlock_err_name(w.rc), dlock_client_errmsg(NULL));
  int64_t left = dlock_lock_remaining_ms(w.l);
  uint64_t n = syncs(b) - s0;
  printf("# B: %llu syncs on the grant, %lld ms of its %lld ms lease left\n",
         (unsigned long long)n, (long long)left, (long long)ttl);
  /* One for the grant; a second only if the test thread was held up past
   * B's first renewal. */
  assert_true(n >= 1 && n <= 2);
  /* Counted from the create, at most ttl - wait would be left. */
  if (left <= ttl - wait + 500)
    fail_msg("B's lease has %lld ms left: counted from the create, not the sync",
             (long long)left);
  assert_int_equal(dlock_release(w.l), 0);
  probe_close(&p);
  dlock_close(a);
  dlock_close(b);
}

/* What dlock_list hands over, the last lock of a walk. */
struct listed {
  int calls;
  char key[512 + 1];
  dlock_info info;
};

static int note_listed(void *arg, const char *key, const dlock_info *info) {
  struct listed *l = arg;
  l->calls++;
  snprintf(l->key, sizeof l->key, "%s", key);
  l->info = *info;
  return 0;
}

/* ---- z8: no secret from the URL in any message ---- */

#define Z8_PW_A "s3cr3t-A-pw"
#define Z8_PW_B "hunt3r-B-pw"

static void expect_no_secret(const char *what, const char *msg) {
  printf("# %s: %s\n", what, msg);
  if (strstr(msg, Z8_PW_A) || strstr(msg, Z8_PW_B))
    fail_msg("%s: the message carries a password: %s", what, msg);
}

/* Z_URL with USER:PW as its userinfo and PARAMS added; NULL when Z_URL has
 * userinfo of its own. */
static char *url_as(const char *user, const char *pw, const char *params) {
  const char *p = strstr(z_url, "://");
  if (!p || memchr(p + 3, '@', strcspn(p + 3, "/?")))
    return NULL;
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%.*s%s:%s@%s", (int)(p + 3 - z_url), z_url, user, pw, p + 3);
  return strdup(conf_url_with(tmp, params));
}

static void z8_no_secret_in_messages(void **state) {
  (void)state;
  char params[256], k[256];
  snprintf(params, sizeof params, "prefix=/dlock-z8-%s", conf_run_id);
  snprintf(k, sizeof k, "%s", conf_key("z8"));
  char *aurl = url_as("alice", Z8_PW_A, params), *burl = url_as("bob", Z8_PW_B, params);
  if (!aurl || !burl) {
    free(aurl);
    free(burl);
    skip(); /* the URL under test brings its own credentials */
  }
  /* Alice's nodes are hers alone (digest ACL); Bob is refused by the
   * server, which is the error path that carries the most text. */
  dlock_client *a = open_url(aurl), *b = open_url(burl);
  expect_no_secret("client url", dlock_client_url(b));
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *la, *lb;
  assert_int_equal(dlock_try_acquire(a, k, &o, &la), 0);
  int rc = dlock_try_acquire(b, k, &o, &lb);
  if (rc == 0) {
    dlock_release(lb);
    dlock_release(la);
    dlock_close(a);
    dlock_close(b);
    skip(); /* the server does not check ACLs (skipACL) */
  }
  assert_int_equal(rc, DLOCK_EAUTH);
  expect_no_secret("acquire refused", dlock_client_errmsg(NULL));
  o.wait_ms = 2000;
  assert_int_equal(dlock_acquire(b, k, &o, &lb), DLOCK_EAUTH);
  expect_no_secret("blocking acquire refused", dlock_client_errmsg(NULL));
  dlock_info info;
  assert_true(dlock_inspect(b, k, &info) < 0);
  expect_no_secret("inspect refused", dlock_client_errmsg(NULL));
  struct dlock_zk_queue q = {.key = k};
  assert_true(dlock_control(b, NULL, DLOCK_ZK_CTL_QUEUE_LEN, &q) < 0);
  expect_no_secret("queue length refused", dlock_client_errmsg(NULL));
  assert_int_equal(dlock_list(b, "", note_listed, &(struct listed){0}), DLOCK_EAUTH);
  expect_no_secret("list refused", dlock_client_errmsg(NULL));
  assert_int_equal(dlock_break(b, k, NULL, NULL), DLOCK_EAUTH);
  expect_no_secret("break refused", dlock_client_errmsg(NULL));
  assert_int_equal(dlock_lock_state(la), DLOCK_HELD);
  assert_int_equal(dlock_release(la), 0);
  dlock_close(b);

  /* Unreachable, malformed, and an unknown parameter. */
  static const char *bad[] = {
      "zk://bob:" Z8_PW_B "@127.0.0.1:1?connect_timeout=300ms",
      "zk://bob:" Z8_PW_B "@127.0.0.1:1/a//b",
      "zk://bob:" Z8_PW_B "@127.0.0.1:1/\x01",
      "zk://bob:" Z8_PW_B "@127.0.0.1:1?prefix=nope",
      "zk://bob:" Z8_PW_B "@127.0.0.1:1?bogus=1",
      "zk://bob:" Z8_PW_B "@?ttl=2s",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    dlock_client *c = NULL;
    assert_true(dlock_open(bad[i], &c) < 0);
    expect_no_secret("open refused", dlock_client_errmsg(NULL));
  }

  /* Leave nothing behind: the dir (a container the server removes only
   * later) and the root, as Alice. */
  char *dir = NULL;
  zhandle_t *zh = conf_zk_open(aurl, k, NULL, &dir, NULL, NULL);
  assert_non_null(zh);
  int d = zoo_delete(zh, dir, -1);
  assert_true(d == ZOK || d == ZNONODE);
  char root[300];
  snprintf(root, sizeof root, "/dlock-z8-%s", conf_run_id);
  d = zoo_delete(zh, root, -1);
  assert_true(d == ZOK || d == ZNONODE);
  conf_zk_close(zh);
  free(dir);
  dlock_close(a);
  free(aurl);
  free(burl);
}

/* ---- z11, z12: list and break on the lock queue ---- */

/* Broken, the holder at the head of a queue of two waiters goes as it
 * would by a release: the first waiter, and only it, gets the lock, and
 * the second stays queued behind it.  The holder renews nothing and has
 * a minute's lease, so only the watch on its node can tell it of the
 * loss; its node is gone and stays gone (its bookkeeping does not queue
 * again).  Waiters are not locks to list. */
static void z11_break_wakes_next_in_line(void **state) {
  (void)state;
  char k[300], pre[256];
  snprintf(pre, sizeof pre, "%s", conf_key("z11/"));
  snprintf(k, sizeof k, "%sk", pre);
  dlock_client *h = open_url(z_url), *admin = open_url(z_url);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 60000;
  o.auto_renew = 0;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  o.owner_label = "z11 holder";
  dlock_lock *hl;
  assert_int_equal(dlock_try_acquire(h, k, &o, &hl), 0);
  uint64_t tok = dlock_lock_token(hl);
  char owner[64];
  snprintf(owner, sizeof owner, "%s", dlock_lock_owner(hl));
  struct queue_probe p;
  probe_open(&p, k);
  struct event gate, any;
  event_init(&gate);
  event_init(&any);
  atomic_store(&herd_order, 0);
  struct herd_waiter w[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    w[i] = (struct herd_waiter){
        .c = open_url(z_url), .key = k, .gate = &gate, .any = &any, .order = -1};
    event_init(&w[i].got);
    assert_int_equal(pthread_create(&th[i], NULL, herd_main, &w[i]), 0);
    assert_true(probe_wait(&p, i + 2, 30000));
  }

  struct listed l = {0};
  assert_int_equal(dlock_list(admin, pre, note_listed, &l), 0);
  assert_int_equal(l.calls, 1);
  assert_string_equal(l.key, k);
  assert_string_equal(l.info.owner, owner);
  assert_int_equal(l.info.token, tok);
  assert_string_equal(l.info.label, "z11 holder");

  /* Named by token alone: a token of nobody's is refused. */
  dlock_info by_token = {0}, got;
  by_token.token = tok + 1;
  assert_int_equal(dlock_break(admin, k, &by_token, &got), DLOCK_EBUSY);
  assert_int_equal(dlock_lock_state(hl), DLOCK_HELD);
  by_token.token = tok;
  int64_t t0 = mono_ms();
  assert_int_equal(dlock_break(admin, k, &by_token, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(got.token, tok);
  assert_string_equal(got.owner, owner);
  assert_string_equal(got.label, "z11 holder");

  assert_int_equal(event_wait(&any, 1, 30000), 1);
  assert_int_equal(event_wait(&w[0].got, 0, 0), 1);
  assert_int_equal(w[0].rc, 0);
  assert_int_equal(w[0].order, 0);
  int64_t woke = mono_ms() - t0;
  assert_int_equal(event_wait(&lost, 1, 5000), 1);
  printf("# first waiter had the lock %lld ms after the break, the holder saw the loss "
         "after %lld ms\n",
         (long long)woke, (long long)(mono_ms() - t0));
  assert_int_equal(lost.token, tok);
  assert_int_equal(dlock_lock_state(hl), DLOCK_LOST);
  assert_int_equal(dlock_release(hl), DLOCK_ELOST);
  /* Left in the queue: the first waiter, holding, and the second. */
  struct dlock_zk_queue q = {.key = k};
  assert_int_equal(dlock_control(admin, NULL, DLOCK_ZK_CTL_QUEUE_LEN, &q), 0);
  assert_int_equal(q.count, 2);
  assert_int_equal(atomic_load(&herd_order), 1);
  memset(&l, 0, sizeof l);
  assert_int_equal(dlock_list(admin, pre, note_listed, &l), 0);
  assert_int_equal(l.calls, 1);
  assert_int_not_equal(l.info.token, tok);
  assert_string_not_equal(l.info.owner, owner);

  event_signal(&gate);
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].rc, 0);
    assert_int_equal(w[i].order, i);
    dlock_close(w[i].c);
  }
  memset(&l, 0, sizeof l);
  assert_int_equal(dlock_list(admin, pre, note_listed, &l), 0);
  assert_int_equal(l.calls, 0);
  /* Nobody holds it now. */
  assert_int_equal(dlock_break(admin, k, NULL, &got), 0);
  assert_int_equal(got.held, 0);
  probe_close(&p);
  dlock_close(h);
  dlock_close(admin);
}

struct lister {
  int calls;
  dlock_client *c;
  int mismatches;
  char keys[4][512 + 1];
};

/* Each lock listed is the one inspect finds under that key. */
static int check_listed(void *arg, const char *key, const dlock_info *info) {
  struct lister *l = arg;
  if (l->calls < 4)
    snprintf(l->keys[l->calls], sizeof l->keys[0], "%s", key);
  l->calls++;
  dlock_info seen;
  if (dlock_inspect(l->c, key, &seen) != 0 || !seen.held || seen.token != info->token ||
      strcmp(seen.owner, info->owner) != 0) {
    printf("# listed '%s' (token %llu), inspect says held %d token %llu\n", key,
           (unsigned long long)info->token, seen.held, (unsigned long long)seen.token);
    l->mismatches++;
  }
  return 0;
}

/* Lock dirs under the root whose names esc() would not write (lower-case
 * hex, an escaped byte it keeps, a byte it escapes written as is), each
 * with an entry that looks like a holder's, lie next to a real lock: list
 * names the real one alone, by its key, and inspect agrees with it. */
static void z12_list_only_our_names(void **state) {
  (void)state;
  char pre[256], k[300];
  snprintf(pre, sizeof pre, "%s", conf_key("z12/"));
  snprintf(k, sizeof k, "%sa%%2Fb", pre); /* its '%' is escaped as %25 */
  dlock_client *c = open_url(z_url);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 0;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);

  char *dir = NULL;
  zhandle_t *zh = conf_zk_open(z_url, pre, NULL, &dir, NULL, NULL);
  assert_non_null(zh);
  static const char *const odd[] = {"a%2fb", "%61", "a+b"};
  char *paths[3];
  for (int i = 0; i < 3; i++) {
    if (asprintf(&paths[i], "%s%s", dir, odd[i]) < 0)
      fail_msg("out of memory");
    int rc = zoo_create(zh, paths[i], NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    if (rc != ZOK)
      fail_msg("create %s: %s", paths[i], zerror(rc));
    char *entry;
    if (asprintf(&entry, "%s/_c_%032x-lock-", paths[i], (unsigned)i + 1) < 0)
      fail_msg("out of memory");
    rc = zoo_create(zh, entry, "x", 1, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL_SEQUENTIAL, NULL, 0);
    if (rc != ZOK)
      fail_msg("create %s: %s", entry, zerror(rc));
    free(entry);
  }

  struct lister seen = {.c = c};
  int rc = dlock_list(c, pre, check_listed, &seen);
  /* The hand-made dirs go before any check can fail. */
  for (int i = 0; i < 3; i++) {
    struct String_vector sv = {0, NULL};
    assert_int_equal(zoo_get_children(zh, paths[i], 0, &sv), ZOK);
    for (int32_t j = 0; j < sv.count; j++) {
      char *entry;
      if (asprintf(&entry, "%s/%s", paths[i], sv.data[j]) < 0)
        fail_msg("out of memory");
      assert_int_equal(zoo_delete(zh, entry, -1), ZOK);
      free(entry);
    }
    deallocate_String_vector(&sv);
    assert_int_equal(zoo_delete(zh, paths[i], -1), ZOK);
    free(paths[i]);
  }
  conf_zk_close(zh);
  free(dir);
  assert_int_equal(rc, 0);
  for (int i = 0; i < seen.calls && i < 4; i++)
    printf("# listed '%s'\n", seen.keys[i]);
  assert_int_equal(seen.calls, 1);
  assert_string_equal(seen.keys[0], k);
  assert_int_equal(seen.mismatches, 0);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

struct list_arg {
  dlock_client *c;
  const char *prefix;
  struct listed l;
};

static int do_list(void *a) {
  struct list_arg *la = a;
  memset(&la->l, 0, sizeof la->l);
  return dlock_list(la->c, la->prefix, note_listed, &la->l);
}

/* The store goes silent under a lister and a breaker: each gives up with
 * DLOCK_ECONN one request timeout (1 s here; the C client's own would be
 * two thirds of the 6 s session) after it asked, and neither touches the
 * lock it could not reach.  Once the link is back, both work again. */
static void z13_list_and_break_when_silent(void **state) {
  (void)state;
  const int64_t timeout = 1000;
  char pre[256], k[300];
  snprintf(pre, sizeof pre, "%s", conf_key("z13/"));
  snprintf(k, sizeof k, "%sk", pre);
  char base[4096];
  snprintf(base, sizeof base, "%s", conf_url_with(z_url, "ttl=6s&timeout=1s"));
  char *host = NULL;
  int hport = 0;
  char *probe = url_via(base, 1, &host, &hport);
  assert_non_null(probe);
  free(probe);
  conf_relay *r = conf_relay_start(host, hport);
  assert_non_null(r);
  free(host);
  char *aurl = url_via(base, conf_relay_port(r), &host, &hport);
  assert_non_null(aurl);
  dlock_client *a = open_url(aurl), *h = open_url(base);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(h, k, &o, &l), 0);
  struct list_arg la = {.c = a, .prefix = pre};
  assert_int_equal(do_list(&la), 0);
  assert_int_equal(la.l.calls, 1);

  assert_int_equal(conf_relay_set(r, CONF_RELAY_DROP, 0, 0), 0);
  int64_t t0 = mono_ms();
  assert_int_equal(do_list(&la), DLOCK_ECONN);
  int64_t took_list = mono_ms() - t0;
  printf("# list: %s after %lld ms\n", dlock_client_errmsg(NULL), (long long)took_list);
  assert_true(strlen(dlock_client_errmsg(NULL)) > 0);
  t0 = mono_ms();
  assert_int_equal(dlock_break(a, k, NULL, NULL), DLOCK_ECONN);
  int64_t took_break = mono_ms() - t0;
  printf("# break: %s after %lld ms\n", dlock_client_errmsg(NULL), (long long)took_break);
  /* One timeout, with room for a loaded machine; the C client's own
   * timeout would be 4 s. */
  assert_true(took_list < timeout + 2500);
  assert_true(took_break < timeout + 2500);
  assert_int_equal(dlock_lock_state(l), DLOCK_HELD);

  /* A new connection within the same session, then all is as before. */
  assert_int_equal(conf_relay_set(r, CONF_RELAY_CUT, 0, 0), 0);
  assert_int_equal(conf_relay_set(r, CONF_RELAY_PASS, 0, 0), 0);
  assert_int_equal(retry_until(mono_ms() + 20000, do_list, &la), 0);
  assert_int_equal(la.l.calls, 1);
  assert_string_equal(la.l.key, k);
  assert_string_equal(la.l.info.owner, dlock_lock_owner(l));
  dlock_info got;
  assert_int_equal(dlock_break(a, k, NULL, &got), 0);
  assert_int_equal(got.held, 1);
  assert_int_equal(got.token, dlock_lock_token(l));
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  dlock_close(a);
  dlock_close(h);
  conf_relay_stop(r);
  free(aurl);
  free(host);
}

/* ---- z14 to z16: what the session would keep is given back ---- */

static clientid_t client_id(dlock_client *c) {
  clientid_t cid;
  assert_int_equal(dlock_control(c, NULL, DLOCK_ZK_CTL_CLIENT_ID, &cid), 0);
  return cid;
}

/* A lock nobody renews rides on a session that lives on, kept alive by an
 * auto-renewed lock (and the C client's pings): its node must go soon
 * after its validity ends, not with the session. */
static void z14_unrenewed_given_back(void **state) {
  (void)state;
  const int64_t ttl = 2000;
  dlock_client *a = open_url(conf_url_with(z_url, "ttl=2s")), *b = open_url(z_url);
  dlock_lock *l, *l2, *lb;
  dlock_options renewed = DLOCK_OPTIONS_INIT;
  assert_int_equal(dlock_try_acquire(a, conf_key("z14-renewed"), &renewed, &l2), 0);
  clientid_t cid = client_id(a);
  struct event lost;
  event_init(&lost);
  dlock_options once = {.wait_ms = -1, .on_lost = event_on_lost, .on_lost_arg = &lost};
  char k[256];
  snprintf(k, sizeof k, "%s", conf_key("z14"));
  int64_t t0 = mono_ms();
  assert_int_equal(dlock_try_acquire(a, k, &once, &l), 0);
  uint64_t tok = dlock_lock_token(l);
  dlock_options w = DLOCK_OPTIONS_INIT;
  w.wait_ms = 4 * ttl;
  int rc = dlock_acquire(b, k, &w, &lb);
  int64_t el = mono_ms() - t0;
  if (rc != 0)
    fail_msg("B: %s: %s (the session kept the unrenewed lock)", dlock_err_name(rc),
             dlock_client_errmsg(NULL));
  printf("# the unrenewed %lld ms lock was free %lld ms after it was taken\n", (long long)ttl,
         (long long)el);
  assert_true(el < ttl + 1500);
  assert_true(dlock_lock_token(lb) > tok);
  /* A had said so, and its session lives on, holding the other lock. */
  assert_int_equal(event_wait(&lost, 1, 2000), 1);
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(dlock_lock_state(l2), DLOCK_HELD);
  assert_true(client_id(a).client_id == cid.client_id);
  assert_int_equal(dlock_release(lb), 0);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  assert_int_equal(dlock_release(l2), 0);
  dlock_close(a);
  dlock_close(b);
}

/* What z15 and z16 share: a key, a URL whose requests time out after
 * 500 ms on sessions of 6 s, and a relay to its server with that URL
 * through it, for a network that swallows requests for less than a
 * session timeout. */
struct relayed {
  char key[256];
  char base[4096];
  conf_relay *r;
  char *via;
};

static void relayed_open(struct relayed *x, const char *name) {
  snprintf(x->key, sizeof x->key, "%s", conf_key(name));
  snprintf(x->base, sizeof x->base, "%s", conf_url_with(z_url, "ttl=6s&timeout=500ms"));
  char *host = NULL;
  int port = 0;
  free(url_via(x->base, 1, &host, &port)); /* for the server's host and port */
  x->r = host ? conf_relay_start(host, port) : NULL;
  free(host);
  host = NULL;
  x->via = x->r ? url_via(x->base, conf_relay_port(x->r), &host, &port) : NULL;
  free(host);
  assert_non_null(x->via);
}

static void relayed_close(struct relayed *x) {
  conf_relay_stop(x->r);
  free(x->via);
}

/* A release whose request the network swallows leaves the node to the
 * session, which lives on: it must be given back once the server can be
 * reached again, without the session ending. */
static void z15_unanswered_release_given_back(void **state) {
  (void)state;
  struct relayed x;
  relayed_open(&x, "z15");
  const char *k = x.key;
  dlock_client *a = open_url(x.via), *b = open_url(x.base);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *la, *lb;
  assert_int_equal(dlock_try_acquire(a, k, &o, &la), 0);
  clientid_t cid = client_id(a);
  /* Requests lost from here on. */
  assert_int_equal(conf_relay_set(x.r, CONF_RELAY_PASS, -1, 0), 0);
  int rc = dlock_release(la);
  if (rc != DLOCK_ECONN && rc != DLOCK_ETIMEDOUT)
    fail_msg("release through a silent network: %s, want no answer", dlock_err_name(rc));
  assert_int_equal(dlock_try_acquire(b, k, &o, &lb), DLOCK_EBUSY);
  let_time_pass(1000); /* the network stays silent a while */
  assert_int_equal(conf_relay_set(x.r, CONF_RELAY_PASS, 0, 0), 0);
  int64_t t0 = mono_ms();
  o.wait_ms = 10000;
  rc = dlock_acquire(b, k, &o, &lb);
  int64_t el = mono_ms() - t0;
  if (rc != 0)
    fail_msg("B: %s: %s (the session kept the released lock)", dlock_err_name(rc),
             dlock_client_errmsg(NULL));
  printf("# the unanswered release was carried out %lld ms after the network came back\n",
         (long long)el);
  /* Given back by A, whose session never ended. */
  assert_true(client_id(a).client_id == cid.client_id);
  assert_int_equal(dlock_release(lb), 0);
  dlock_close(a);
  dlock_close(b);
  relayed_close(&x);
}

/* A waiter that gives up its place while the network swallows its
 * requests must not leave its node to its session, which lives on: once
 * the holder released, that node would hold the lock for nobody. */
static void z16_unanswered_leave_given_back(void **state) {
  (void)state;
  struct relayed x;
  relayed_open(&x, "z16");
  const char *k = x.key;
  dlock_client *a = open_url(x.base), *c = open_url(x.via), *b = open_url(x.base);
  clientid_t cid = client_id(c);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *la, *lb;
  assert_int_equal(dlock_try_acquire(a, k, &o, &la), 0);
  struct queue_probe p;
  probe_open(&p, k);
  struct b_waiter w = {.c = c, .key = k, .wait_ms = 1500};
  event_init(&w.done);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, b_main, &w), 0);
  assert_true(probe_wait(&p, 2, 30000));
  /* C's requests are lost from here on: its wait runs out, and the
   * delete of its node goes unanswered. */
  assert_int_equal(conf_relay_set(x.r, CONF_RELAY_PASS, -1, 0), 0);
  pthread_join(th, NULL);
  if (w.rc != DLOCK_ETIMEDOUT && w.rc != DLOCK_ECONN)
    fail_msg("C: %s, want no lock", dlock_err_name(w.rc));
  printf("# C gave up: %s\n", dlock_err_name(w.rc));
  assert_int_equal(conf_relay_set(x.r, CONF_RELAY_PASS, 0, 0), 0);
  int64_t t0 = mono_ms();
  if (!probe_until(&p, 1, true, 10000))
    fail_msg("C's node is still queued 10 s after the network came back");
  printf("# C's node went %lld ms after the network came back\n", (long long)(mono_ms() - t0));
  assert_true(client_id(c).client_id == cid.client_id);
  assert_int_equal(dlock_release(la), 0);
  assert_int_equal(dlock_try_acquire(b, k, &o, &lb), 0);
  assert_int_equal(dlock_release(lb), 0);
  probe_close(&p);
  dlock_close(a);
  dlock_close(b);
  dlock_close(c);
  relayed_close(&x);
}

/* Delete PATH and everything under it (only what this test made). */
static void delete_tree(zhandle_t *zh, const char *path) {
  struct String_vector sv = {0};
  if (zoo_get_children(zh, path, 0, &sv) == ZOK) {
    for (int32_t i = 0; i < sv.count; i++) {
      char sub[1024];
      snprintf(sub, sizeof sub, "%s/%s", path, sv.data[i]);
      delete_tree(zh, sub);
    }
    deallocate_String_vector(&sv);
  }
  int rc = zoo_delete(zh, path, -1);
  if (rc != ZOK && rc != ZNONODE)
    fail_msg("cannot delete %s: %s", path, zerror(rc));
}

/* A client makes its lock root once; a root deleted from outside after
 * that must be made again, not fail every acquisition of a new key. */
static void z17_root_deleted_from_outside(void **state) {
  (void)state;
  char extra[64];
  snprintf(extra, sizeof extra, "prefix=/dlock-z17-%d", (int)getpid());
  char u[4096];
  snprintf(u, sizeof u, "%s", conf_url_with(z_url, extra));
  dlock_client *c = open_url(u);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, "a", &o, &l), 0);
  uint64_t t1 = dlock_lock_token(l);
  assert_int_equal(dlock_release(l), 0);
  char *dir = NULL;
  zhandle_t *zh = conf_zk_open(u, "a", NULL, &dir, NULL, NULL);
  assert_non_null(zh);
  char *slash = strrchr(dir, '/');
  assert_non_null(slash);
  *slash = '\0'; /* the root */
  for (int round = 0; round < 2; round++) {
    delete_tree(zh, dir);
    assert_int_equal(zoo_exists(zh, dir, 0, NULL), ZNONODE);
    char k[16];
    snprintf(k, sizeof k, "b%d", round);
    assert_int_equal(dlock_try_acquire(c, k, &o, &l), 0);
    assert_true(dlock_lock_token(l) > t1);
    t1 = dlock_lock_token(l);
    assert_int_equal(zoo_exists(zh, dir, 0, NULL), ZOK);
    assert_int_equal(dlock_release(l), 0);
  }
  delete_tree(zh, dir);
  free(dir);
  conf_zk_close(zh);
  dlock_close(c);
}

const struct conf_case *conf_zk_cases(const char *url, size_t *n) {
  z_url = url;
  zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
  static const struct conf_case cases[] = {
      {"z1_no_herd", "a release wakes only the next waiter", z1_no_herd, NULL, 0},
      {"z2_fifo", "waiters get the lock in the order they queued", z2_fifo, NULL, 0},
      {"z3_session_expiry", "a lock whose session expires turns LOST", z3_session_expiry, NULL, 0},
      {"z4_leader_failover",
       "locks survive the ensemble leader being killed (kills it)",
       z4_leader_failover, NULL, CONF_DESTRUCTIVE},
      {"z5_change_then_delete",
       "a waiter wakes when its predecessor changes, then goes",
       z5_change_then_delete, NULL, 0},
      {"z6_paused_holder",
       "a paused holder loses its lock and knows it when it resumes",
       z6_paused_holder, NULL, 0},
      {"z7_slow_then_silent_network",
       "a slow, then silent, link to the server",
       z7_slow_then_silent_network, NULL, 0},
      {"z17_root_deleted_from_outside",
       "a lock root deleted from outside is made again",
       z17_root_deleted_from_outside, NULL, 0},
      {"z8_no_secret_in_messages",
       "digest credentials never appear in messages",
       z8_no_secret_in_messages, NULL, 0},
      {"z9_renewal_is_one_sync_per_session",
       "renewing many locks costs one sync per session",
       z9_renewal_is_one_sync_per_session, NULL, 0},
      {"z10_wait_then_sync",
       "an acquisition that waited confirms its session",
       z10_wait_then_sync, NULL, 0},
      {"z11_break_wakes_next_in_line",
       "a broken holder's next waiter gets the lock, the holder sees LOST at once",
       z11_break_wakes_next_in_line, NULL, 0},
      {"z12_list_only_our_names",
       "list passes over names under the root that no key maps to",
       z12_list_only_our_names, NULL, 0},
      {"z13_list_and_break_when_silent",
       "list and break give DLOCK_ECONN within the request timeout of a silent store",
       z13_list_and_break_when_silent, NULL, 0},
      {"z14_unrenewed_given_back",
       "a lock nobody renews is given back after its ttl while its session lives",
       z14_unrenewed_given_back, NULL, 0},
      {"z15_unanswered_release_given_back",
       "a release the server never got is carried out once it can be reached",
       z15_unanswered_release_given_back, NULL, 0},
      {"z16_unanswered_leave_given_back",
       "a waiter that gives up while unanswered leaves no node behind",
       z16_unanswered_leave_given_back, NULL, 0},
  };
  *n = sizeof cases / sizeof *cases;
  return cases;
}
