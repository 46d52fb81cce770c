/* Cases only Redis has: the script cache being emptied under us, waiting
 * without polling, ACL logins, the fence counter's life, and renewals of
 * many locks in one script call. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "backends/redis/redis-codec.h"
#include "dlock/dlock.h"
#include "faults.h"
#include "internal.h"

static const char *r_url;

static redisReply *cmd(redisContext *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  return r;
}


static void r1_script_cache_flushed(void **state) {
  (void)state;
  redisContext *rc = conf_redis_connect(r_url, NULL);
  assert_non_null(rc);
  dlock_client *c;
  assert_int_equal(dlock_open(r_url, &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.auto_renew = 0;
  dlock_lock *l;
  freeReplyObject(cmd(rc, "SCRIPT FLUSH"));
  assert_int_equal(dlock_try_acquire(c, conf_key("r1"), &o, &l), 0);
  uint64_t t = dlock_lock_token(l);
  freeReplyObject(cmd(rc, "SCRIPT FLUSH"));
  assert_int_equal(dlock_renew(l, 0), 0);
  freeReplyObject(cmd(rc, "SCRIPT FLUSH"));
  dlock_info info;
  assert_int_equal(dlock_inspect(c, conf_key("r1"), &info), 0);
  assert_int_equal(info.token, t);
  freeReplyObject(cmd(rc, "SCRIPT FLUSH"));
  assert_int_equal(dlock_release(l), 0);
  assert_int_equal(dlock_inspect(c, conf_key("r1"), &info), 0);
  assert_int_equal(info.held, 0);
  dlock_close(c);
  redisFree(rc);
}

/* A waiter on its own thread: acquires NAME waiting up to WAIT_MS, keeps
 * the token it got, releases. */
struct bwait {
  dlock_client *c;
  const char *name;
  int64_t wait_ms;
  int rc;
  uint64_t token;
};

static void *bwait_main(void *arg) {
  struct bwait *w = arg;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = w->wait_ms;
  dlock_lock *l;
  w->rc = dlock_acquire(w->c, conf_key(w->name), &o, &l);
  if (w->rc == 0) {
    w->token = dlock_lock_token(l);
    dlock_release(l);
  }
  return NULL;
}

/* The scripts the server runs on one key, seen from a MONITOR
 * connection: only this run's key counts, whatever else the server is
 * doing.  The count ends at a command naming END, sent once the waiter is
 * done. */
struct script_count {
  redisContext *mon;
  char key[300], end[300];
  long long n; /* -1: the monitor connection failed */
  pthread_t th;
};

static void *script_count_main(void *arg) {
  struct script_count *sc = arg;
  for (;;) {
    redisReply *r = NULL;
    if (redisGetReply(sc->mon, (void **)&r) != REDIS_OK || !r) {
      sc->n = -1;
      return NULL;
    }
    const char *line = r->type == REDIS_REPLY_STATUS ? r->str : "";
    bool end = strstr(line, sc->end) != NULL;
    if (!end && strstr(line, sc->key) &&
        (strstr(line, "\"EVALSHA\"") || strstr(line, "\"evalsha\"") ||
         strstr(line, "\"EVAL\"") || strstr(line, "\"eval\"")))
      sc->n++;
    freeReplyObject(r);
    if (end)
      return NULL;
  }
}

/* Counts the script calls whose line holds MATCH: 1 when the count runs,
 * 0 when the server refuses MONITOR. */
static int script_count_watch(struct script_count *sc, const char *match, const char *end) {
  memset(sc, 0, sizeof *sc);
  snprintf(sc->key, sizeof sc->key, "%s", match);
  snprintf(sc->end, sizeof sc->end, "%s", end);
  sc->mon = conf_redis_connect(r_url, NULL);
  assert_non_null(sc->mon);
  /* A quiet server sends the monitor nothing for as long as the case
   * waits (2 s in r2): its reads must outlast that, or the count ends as
   * a failure of its own.  The END command bounds them. */
  struct timeval quiet = {60, 0};
  redisSetTimeout(sc->mon, quiet);
  redisReply *r = cmd(sc->mon, "MONITOR");
  int ok = r && r->type == REDIS_REPLY_STATUS;
  freeReplyObject(r);
  if (!ok) {
    redisFree(sc->mon);
    return 0;
  }
  assert_int_equal(pthread_create(&sc->th, NULL, script_count_main, sc), 0);
  return 1;
}

/* The script calls on KEY alone. */
static int script_count_start(struct script_count *sc, const char *key, const char *end) {
  char match[300];
  snprintf(match, sizeof match, "{%s}", key);
  return script_count_watch(sc, match, end);
}

static long long script_count_stop(struct script_count *sc, redisContext *rc) {
  freeReplyObject(cmd(rc, "EXISTS %s", sc->end));
  pthread_join(sc->th, NULL);
  redisFree(sc->mon);
  return sc->n;
}

static void r2_wait_does_not_poll(void **state) {
  (void)state;
  redisContext *rc = conf_redis_connect(r_url, NULL);
  assert_non_null(rc);
  dlock_client *a, *b;
  assert_int_equal(dlock_open(r_url, &a), 0);
  assert_int_equal(dlock_open(r_url, &b), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 30000;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(a, conf_key("r2"), &o, &l), 0);
  /* Counted on the key where the server lets us watch it; else from the
   * server's totals, which others' scripts may inflate. */
  char key[256], end[256];
  snprintf(key, sizeof key, "%s", conf_key("r2"));
  snprintf(end, sizeof end, "%s", conf_key("r2-end"));
  struct script_count sc;
  int watched = script_count_start(&sc, key, end);
  if (!watched) {
    /* The server's totals count every other client's scripts too: on a
     * server in use they would fail this case, or pass it by chance. */
    assert_int_equal(dlock_release(l), 0);
    dlock_close(a);
    dlock_close(b);
    redisFree(rc);
    printf("# SKIPPED r2: the server refuses MONITOR, so this key's scripts cannot be "
           "counted alone\n");
    skip();
  }
  struct bwait w = {.c = b, .name = "r2", .wait_ms = 2000};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, bwait_main, &w), 0);
  pthread_join(th, NULL);
  long long tries = script_count_stop(&sc, rc);
  assert_int_equal(w.rc, DLOCK_ETIMEDOUT);
  /* A 2 s wait on a lock with 30 s left: one try before subscribing and
   * one after, not a retry every few milliseconds. */
  printf("# acquire attempts during a 2 s wait: %lld (MONITOR, this key)\n", tries);
  assert_true(tries >= 1);
  assert_true(tries <= 4);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(a);
  dlock_close(b);
  redisFree(rc);
}

/* An ACL user of this run, TAG + run id, with password PW and every right:
 * false where the server does not let us create one.  *HOSTPART is what
 * follows the userinfo in the suite's URL. */
static bool make_user(redisContext *rc, const char *tag, const char *pw, char user[64],
                      const char **hostpart) {
  snprintf(user, 64, "%s%s", tag, conf_run_id);
  for (char *p = user; *p; p++)
    if (*p == '-')
      *p = '_';
  redisReply *r = cmd(rc, "ACL SETUSER %s on >%s ~* &* +@all", user, pw);
  bool ok = r && r->type != REDIS_REPLY_ERROR;
  freeReplyObject(r);
  const char *h = strstr(r_url, "://") + 3;
  const char *at = strchr(h, '@');
  *hostpart = at ? at + 1 : h;
  return ok;
}

/* Waiting connections of USER right now, from CLIENT LIST. */
static int subscribers(redisContext *rc, const char *user) {
  redisReply *r = cmd(rc, "CLIENT LIST TYPE pubsub");
  assert_non_null(r);
  char who[96];
  snprintf(who, sizeof who, " user=%s ", user);
  int n = 0;
  if (r->type == REDIS_REPLY_STRING)
    for (char *line = strtok(r->str, "\n"); line; line = strtok(NULL, "\n"))
      if (strstr(line, who) && strstr(line, "cmd=subscribe"))
        n++;
  freeReplyObject(r);
  return n;
}

static void nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* The server drops the connection a waiter sits on: a blocking acquire
 * with time left tries again instead of failing with DLOCK_ECONN.  The
 * waiter logs in as a user of its own, so that only its connections are
 * cut, whatever else uses the server. */
static void r4_wait_rides_out_a_reset(void **state) {
  (void)state;
  if (strncmp(r_url, "redis://", 8) != 0)
    skip(); /* the login is spelled into a TCP URL */
  redisContext *rc = conf_redis_connect(r_url, NULL);
  assert_non_null(rc);
  char user[64];
  const char *hostpart;
  if (!make_user(rc, "dlockr4", "pw-r4", user, &hostpart)) {
    redisFree(rc);
    skip(); /* a server where we may not create users */
  }
  redisReply *r;
  char burl[512];
  snprintf(burl, sizeof burl, "redis://%s:pw-r4@%s", user, hostpart);
  dlock_client *a, *b;
  assert_int_equal(dlock_open(r_url, &a), 0);
  assert_int_equal(dlock_open(burl, &b), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 30000;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(a, conf_key("r4"), &o, &l), 0);
  struct bwait w = {.c = b, .name = "r4", .wait_ms = 30000, .rc = 1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, bwait_main, &w), 0);
  /* Polled with a generous bound: the waiter subscribes, then it is cut. */
  int i;
  for (i = 0; i < 1000 && subscribers(rc, user) == 0; i++)
    nap_ms(10);
  assert_true(i < 1000);
  r = cmd(rc, "CLIENT KILL USER %s", user);
  assert_non_null(r);
  assert_int_equal(r->type, REDIS_REPLY_INTEGER);
  assert_true(r->integer >= 1);
  freeReplyObject(r);
  dlock_metrics m;
  for (i = 0; i < 1000; i++) {
    dlock_metrics_get(b, &m);
    if (m.acquire_retries >= 1 || m.acquire_error >= 1)
      break;
    nap_ms(10);
  }
  assert_int_equal(m.acquire_error, 0);
  assert_true(m.acquire_retries >= 1);
  uint64_t held = dlock_lock_token(l);
  assert_int_equal(dlock_release(l), 0);
  pthread_join(th, NULL);
  assert_int_equal(w.rc, 0);
  assert_true(w.token > held);
  dlock_close(a);
  dlock_close(b);
  freeReplyObject(cmd(rc, "ACL DELUSER %s", user));
  redisFree(rc);
}

static void r3_acl_login(void **state) {
  (void)state;
  redisContext *rc = conf_redis_connect(r_url, NULL);
  assert_non_null(rc);
  char user[64];
  const char *hostpart;
  if (!make_user(rc, "dlockconf", "pw-s3cr3t", user, &hostpart)) {
    redisFree(rc);
    skip(); /* a server where we may not create users */
  }
  char good[512], bad[512];
  snprintf(good, sizeof good, "redis://%s:pw-s3cr3t@%s", user, hostpart);
  snprintf(bad, sizeof bad, "redis://%s:wrong-s3cr3t@%s", user, hostpart);
  dlock_client *c;
  if (strncmp(r_url, "redis://", 8) == 0) {
    assert_int_equal(dlock_open(good, &c), 0);
    dlock_options o = DLOCK_OPTIONS_INIT;
    dlock_lock *l;
    assert_int_equal(dlock_try_acquire(c, conf_key("r3"), &o, &l), 0);
    assert_int_equal(dlock_release(l), 0);
    assert_null(strstr(dlock_client_url(c), "s3cr3t"));
    dlock_close(c);
    assert_int_equal(dlock_open(bad, &c), DLOCK_EAUTH);
    assert_null(strstr(dlock_client_errmsg(NULL), "s3cr3t"));
  }
  freeReplyObject(cmd(rc, "ACL DELUSER %s", user));
  redisFree(rc);
}

/* The fence counter is state per name: it expires fence_ttl after the
 * name's last acquisition (at least twice the lock's ttl), and the next
 * holder's counter, restarted from the server's clock, is still above it. */
static void r5_fence_counter_expires(void **state) {
  (void)state;
  char *prefix = NULL;
  redisContext *rc = conf_redis_connect(r_url, &prefix);
  assert_non_null(rc);
  char fence[512];
  const char *key = conf_key("r5");
  snprintf(fence, sizeof fence, "%sfence:{%s}", prefix ? prefix : DLOCK__REDIS_DEFAULT_PREFIX,
           key);
  dlock_client *c, *keep;
  assert_int_equal(dlock_open(conf_url_with(r_url, "fence_ttl=1s"), &c), 0);
  assert_int_equal(dlock_open(conf_url_with(r_url, "fence_ttl=0"), &keep), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 400;
  o.auto_renew = 0;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, key, &o, &l), 0);
  uint64_t t1 = dlock_lock_token(l);
  assert_int_equal(dlock_release(l), 0);
  redisReply *r = cmd(rc, "PTTL %s", fence);
  assert_true(r && r->type == REDIS_REPLY_INTEGER && r->integer > 0 && r->integer <= 1000);
  freeReplyObject(r);
  /* Until the server has let it expire (it is gone within the second). */
  int64_t until = dlock__now_ns() + 10 * 1000000000LL;
  for (;;) {
    r = cmd(rc, "EXISTS %s", fence);
    assert_true(r && r->type == REDIS_REPLY_INTEGER);
    long long there = r->integer;
    freeReplyObject(r);
    if (!there)
      break;
    if (dlock__now_ns() > until)
      fail_msg("%s still there 10 s after a fence_ttl of 1 s", fence);
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(dlock_try_acquire(c, key, &o, &l), 0);
  uint64_t t2 = dlock_lock_token(l);
  printf("# token before the counter expired %llu, after %llu\n", (unsigned long long)t1,
         (unsigned long long)t2);
  assert_true(t2 > t1);
  assert_int_equal(dlock_release(l), 0);
  /* fence_ttl=0 keeps the counter forever, as before it could expire. */
  assert_int_equal(dlock_try_acquire(keep, key, &o, &l), 0);
  assert_true(dlock_lock_token(l) > t2);
  assert_int_equal(dlock_release(l), 0);
  r = cmd(rc, "PTTL %s", fence);
  assert_true(r && r->type == REDIS_REPLY_INTEGER && r->integer == -1);
  freeReplyObject(r);
  dlock_close(c);
  dlock_close(keep);
  free(prefix);
  redisFree(rc);
}

/* PTTL of KEY in ms (-2 none, -1 no expiry). */
static long long pttl_of(redisContext *rc, const char *key) {
  redisReply *r = cmd(rc, "PTTL %s", key);
  assert_true(r && r->type == REDIS_REPLY_INTEGER);
  long long v = r->integer;
  freeReplyObject(r);
  return v;
}

static void set_pexpire(redisContext *rc, const char *key, long long ms) {
  redisReply *r = cmd(rc, "PEXPIRE %s %lld", key, ms);
  assert_true(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
  freeReplyObject(r);
}

static uint64_t take_and_drop(dlock_client *c, const char *key, const dlock_options *o) {
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, key, o, &l), 0);
  uint64_t t = dlock_lock_token(l);
  assert_int_equal(dlock_release(l), 0);
  return t;
}

/* The acquire script reads the counter's expiry rather than rewriting it
 * each time: moved back to fence_ttl once it has fallen a tenth below
 * (here 200 ms of 2 s), left alone above that, given to a counter without
 * one, taken away under fence_ttl=0.  Tokens grow across a counter
 * deleted while the name is free and while it is held. */
static void r6_fence_counter_life(void **state) {
  (void)state;
  char *prefix = NULL;
  redisContext *rc = conf_redis_connect(r_url, &prefix);
  assert_non_null(rc);
  char key[256], fence[512];
  snprintf(key, sizeof key, "%s", conf_key("r6"));
  snprintf(fence, sizeof fence, "%sfence:{%s}", prefix ? prefix : DLOCK__REDIS_DEFAULT_PREFIX,
           key);
  dlock_client *c, *keep;
  assert_int_equal(dlock_open(conf_url_with(r_url, "fence_ttl=2s"), &c), 0);
  assert_int_equal(dlock_open(conf_url_with(r_url, "fence_ttl=0"), &keep), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 400;
  o.auto_renew = 0;
  uint64_t t = take_and_drop(c, key, &o);
  long long p = pttl_of(rc, fence);
  assert_true(p > 1800 && p <= 2000);
  /* Fallen more than a tenth: back to fence_ttl. */
  set_pexpire(rc, fence, 1500);
  uint64_t t2 = take_and_drop(c, key, &o);
  assert_true(t2 > t);
  p = pttl_of(rc, fence);
  assert_true(p > 1800 && p <= 2000);
  /* Within a tenth: left as it is, no write. */
  set_pexpire(rc, fence, 1950);
  t = take_and_drop(c, key, &o);
  assert_true(t > t2);
  p = pttl_of(rc, fence);
  assert_true(p > 1500 && p <= 1950);
  /* Without expiry (another client's fence_ttl=0): given one. */
  freeReplyObject(cmd(rc, "PERSIST %s", fence));
  t2 = take_and_drop(c, key, &o);
  assert_true(t2 > t);
  p = pttl_of(rc, fence);
  assert_true(p > 1800 && p <= 2000);
  /* fence_ttl=0 takes the expiry away. */
  t = take_and_drop(keep, key, &o);
  assert_true(t > t2);
  assert_int_equal(pttl_of(rc, fence), -1);
  /* The counter deleted while the name is free... */
  freeReplyObject(cmd(rc, "DEL %s", fence));
  t2 = take_and_drop(c, key, &o);
  printf("# token before the counter was deleted %llu, after %llu\n", (unsigned long long)t,
         (unsigned long long)t2);
  assert_true(t2 > t);
  /* ...and while it is held. */
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, key, &o, &l), 0);
  t = dlock_lock_token(l);
  assert_true(t > t2);
  freeReplyObject(cmd(rc, "DEL %s", fence));
  assert_int_equal(dlock_release(l), 0);
  t2 = take_and_drop(c, key, &o);
  assert_true(t2 > t);
  dlock_close(c);
  dlock_close(keep);
  free(prefix);
  redisFree(rc);
}

static void nap_10ms(void) {
  struct timespec ts = {0, 10 * 1000000};
  nanosleep(&ts, NULL);
}

/* N auto-renewed locks NAME/0 .. NAME/N-1 of TTL_MS, all taken. */
static dlock_lock **take_many(dlock_client *c, const char *name, int n, int64_t ttl_ms) {
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = ttl_ms;
  dlock_lock **ls = calloc((size_t)n, sizeof *ls);
  assert_non_null(ls);
  char key[256];
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "%s/%d", conf_key(name), i);
    assert_int_equal(dlock_try_acquire(c, key, &o, &ls[i]), 0);
  }
  return ls;
}

/* Lets MS go by, in naps: time for the renew thread to do its work. */
static void let_pass_ms(int64_t ms) {
  int64_t t0 = dlock__now_ns();
  while (dlock__now_ns() - t0 < ms * 1000000)
    nap_10ms();
}

/* Renewals of many locks go in few script calls; a lock in such a batch
 * whose key was deleted, overwritten or turned into another type turns
 * LOST within about a ttl, while the others in the same calls stay held
 * past several ttls. */
static void r7_batch_renewal_finds_losses(void **state) {
  (void)state;
  char *prefix = NULL;
  redisContext *rc = conf_redis_connect(r_url, &prefix);
  assert_non_null(rc);
  const char *pfx = prefix ? prefix : DLOCK__REDIS_DEFAULT_PREFIX;
  dlock_client *c;
  assert_int_equal(dlock_open(r_url, &c), 0);
  enum { N = 2500, GONE = 7, TAKEN = 1500, HASH = 2499 };
  dlock_lock **ls = take_many(c, "r7", N, 900);
  /* Let them all be renewed a few times first. */
  let_pass_ms(2 * 900);
  for (int i = 0; i < N; i++)
    assert_int_equal(dlock_lock_state(ls[i]), DLOCK_HELD);
  char lk[600];
  snprintf(lk, sizeof lk, "%slock:{%s/%d}", pfx, conf_key("r7"), GONE);
  freeReplyObject(cmd(rc, "DEL %s", lk));
  snprintf(lk, sizeof lk, "%slock:{%s/%d}", pfx, conf_key("r7"), TAKEN);
  freeReplyObject(cmd(rc, "SET %s someone-else:1:x PX 60000", lk));
  snprintf(lk, sizeof lk, "%slock:{%s/%d}", pfx, conf_key("r7"), HASH);
  freeReplyObject(cmd(rc, "DEL %s", lk));
  freeReplyObject(cmd(rc, "HSET %s f v", lk));
  int64_t changed = dlock__now_ns();
  const int lost_ones[] = {GONE, TAKEN, HASH};
  for (size_t j = 0; j < 3; j++) {
    while (dlock_lock_state(ls[lost_ones[j]]) == DLOCK_HELD) {
      if (dlock__now_ns() - changed > 5 * 900 * 1000000LL)
        fail_msg("lock %d still HELD 5 ttls after its key changed", lost_ones[j]);
      nap_10ms();
    }
  }
  int64_t el = (dlock__now_ns() - changed) / 1000000;
  printf("# the three losses seen %lld ms after the keys changed (ttl 900 ms)\n",
         (long long)el);
  assert_true(el < 2 * 900);
  /* The rest are renewed by the same calls and stay held. */
  let_pass_ms(2 * 900);
  for (int i = 0; i < N; i++) {
    bool lost = i == GONE || i == TAKEN || i == HASH;
    if ((dlock_lock_state(ls[i]) == DLOCK_HELD) == lost)
      fail_msg("lock %d: %s", i, lost ? "HELD after its key changed" : "not HELD");
  }
  for (int i = 0; i < N; i++) {
    int r = dlock_release(ls[i]);
    bool lost = i == GONE || i == TAKEN || i == HASH;
    assert_int_equal(r, lost ? DLOCK_ELOST : 0);
  }
  /* The key taken "from outside" is still someone else's. */
  snprintf(lk, sizeof lk, "%slock:{%s/%d}", pfx, conf_key("r7"), TAKEN);
  redisReply *r = cmd(rc, "GET %s", lk);
  assert_true(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "someone-else:1:x") == 0);
  freeReplyObject(r);
  free(ls);
  dlock_close(c);
  free(prefix);
  redisFree(rc);
}

/* 3,000 auto-renewed locks with a 3 s ttl: a renewal period is a second,
 * and each period's renewals go as three calls of a thousand locks, not
 * 3,000.  Counted over three periods once the renewals have had three to
 * fall into step; a window of three periods may catch the edges of four. */
static void r8_renewal_calls_per_period(void **state) {
  (void)state;
  redisContext *rc = conf_redis_connect(r_url, NULL);
  assert_non_null(rc);
  dlock_client *c;
  assert_int_equal(dlock_open(r_url, &c), 0);
  enum { N = 3000, PERIOD_MS = 1000, COUNTED = 3 };
  dlock_lock **ls = take_many(c, "r8", N, 3 * PERIOD_MS);
  /* Three periods to fall into step before the count starts: the server
   * queues what MONITOR shows from the moment it is asked. */
  let_pass_ms(3 * PERIOD_MS);
  /* The calls on this run's r8 keys, each naming a thousand of them. */
  char match[300], end[300];
  snprintf(match, sizeof match, "{%s/", conf_key("r8"));
  snprintf(end, sizeof end, "%s", conf_key("r8-end"));
  struct script_count sc;
  if (!script_count_watch(&sc, match, end)) {
    for (int i = 0; i < N; i++)
      dlock_release(ls[i]);
    free(ls);
    dlock_close(c);
    redisFree(rc);
    printf("# SKIPPED r8: the server refuses MONITOR, so this run's calls cannot be "
           "counted alone\n");
    skip();
  }
  let_pass_ms(COUNTED * PERIOD_MS);
  long long calls = script_count_stop(&sc, rc);
  printf("# renew calls in %d periods for %d locks: %lld\n", COUNTED, N, calls);
  assert_true(calls >= COUNTED - 1);
  assert_true(calls <= 3 * (COUNTED + 1));
  for (int i = 0; i < N; i++) {
    assert_int_equal(dlock_lock_state(ls[i]), DLOCK_HELD);
    assert_int_equal(dlock_release(ls[i]), 0);
  }
  free(ls);
  dlock_close(c);
  redisFree(rc);
}

const struct conf_case *conf_redis_cases(const char *url, size_t *n) {
  r_url = url;
  static const struct conf_case cases[] = {
      {"r1_script_cache_flushed",
       "acquire, renew, inspect and release survive SCRIPT FLUSH",
       r1_script_cache_flushed, NULL, CONF_DESTRUCTIVE},
      {"r2_wait_does_not_poll",
       "a blocked acquire waits on pub/sub, not by polling (watches MONITOR for 2 s)",
       r2_wait_does_not_poll, NULL, 0},
      {"r3_acl_login",
       "an ACL user named in the URL logs in and locks (creates a user)",
       r3_acl_login, NULL, CONF_DESTRUCTIVE},
      {"r4_wait_rides_out_a_reset",
       "a waiter survives its connection being reset (creates a user)",
       r4_wait_rides_out_a_reset, NULL, CONF_DESTRUCTIVE},
      {"r5_fence_counter_expires",
       "the fence counter expires after fence_ttl, and tokens still grow",
       r5_fence_counter_expires, NULL, 0},
      {"r6_fence_counter_life",
       "the counter's expiry is refreshed when a tenth below fence_ttl; tokens grow across "
       "a deleted counter",
       r6_fence_counter_life, NULL, 0},
      {"r7_batch_renewal_finds_losses",
       "in a batch renewal of 2,500 locks, the ones deleted, overwritten or retyped turn LOST",
       r7_batch_renewal_finds_losses, NULL, 0},
      {"r8_renewal_calls_per_period",
       "3,000 auto-renewed locks are renewed in about 3 script calls a period (watches "
       "MONITOR)",
       r8_renewal_calls_per_period, NULL, 0},
  };
  *n = sizeof cases / sizeof *cases;
  return cases;
}
