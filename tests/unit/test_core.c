/* The core against in-process backends: error table, registry and dispatch,
 * the fallback retry loop, validity deadlines, loss, reentrancy, metrics. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
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

#include "dlock/admin.h"
#include "dlock/mem.h"
#include "event.h"
#include "internal.h"

/* ---- a scriptable backend ("test://") ---- */

static struct {
  atomic_int tries, renews, releases;
  int busy_for;       /* try_acquire says EBUSY this many times first */
  int renew_rc;       /* what renew returns */
  int64_t sent_skew_ns; /* sent_ns reported this far in the past */
  uint64_t next_token;
  int64_t stall_ms;      /* renew/renew_many first block this long */
  int lose_in_acquire;   /* try_acquire reports its own lock lost before returning */
  atomic_int renew_many_calls;
  int fail_for;          /* try_acquire fails with fail_rc this many times first */
  int fail_rc;
  int64_t try_stall_ms;  /* a failing try_acquire first blocks this long */
  int64_t release_stall_ms;
  int fail_unsent;       /* failures happen before any request leaves (refused) */
  char owners[8][33];    /* owner of each of the first 8 tries */
  atomic_int waits;      /* calls of the native acquire */
  int cut_message;       /* the failure's text goes through a small buffer */
  int release_down;      /* release answers DLOCK_ECONN */
  int log_in_try;        /* try_acquire logs a message quoting the URL's password */
  atomic_int released_a; /* answered releases of the key "a" */
  struct event released; /* every release, answered or not */
  struct event releasing; /* every release, as it begins */
  char released_owner[16][33]; /* owner of each of the first 16 releases */
  int cut_wait;          /* test-late's wait ends at its deadline with its request unanswered */
} tb;

/* The password of the last URL opened: the backend quotes it in its
 * failures, as a store library quoting its connection string would. */
static char tb_secret[64];

static int tb_open(dlock_backend_client *bc, dlock_url *u) {
  (void)bc;
  const char *v;
  dlock_url_param(u, "known", &v);
  const char *pw = dlock_url_password(u);
  snprintf(tb_secret, sizeof tb_secret, "%s", pw ? pw : "");
  return 0;
}
static void tb_close(dlock_backend_client *bc) { (void)bc; }
static void nap(int64_t ms) {
  if (ms > 0) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL); /* the store under test does not answer */
  }
}
static int tb_try(dlock_backend_client *bc, dlock_backend_lock *bl) {
  (void)bc;
  int n = atomic_fetch_add(&tb.tries, 1);
  if (n < 8)
    snprintf(tb.owners[n], sizeof tb.owners[n], "%s", bl->owner);
  if (n < tb.fail_for) {
    if (!tb.fail_unsent)
      bl->sent_ns = dlock_backend_now_ns();
    nap(tb.try_stall_ms);
    dlock_seterr(tb.fail_rc, "test: attempt %d got no answer from [%s]", n + 1, tb_secret);
    if (tb.cut_message) {
      /* As a backend that keeps a short excerpt of a library's text: the
       * cut falls inside the secret, where no search for it finds it. */
      char small[64];
      const char *m = dlock_client_errmsg(NULL);
      const char *b = strchr(m, '[');
      int keep = b ? (int)(b - m) + 5 : (int)strlen(m);
      snprintf(small, sizeof small, "%.*s", keep, m);
      return dlock_seterr(tb.fail_rc, "%s", small);
    }
    return tb.fail_rc;
  }
  if (n - tb.fail_for < tb.busy_for) {
    bl->holder_ttl_ms = 5;
    return DLOCK_EBUSY;
  }
  if (tb.log_in_try)
    dlock_backend_log(bc, DLOCK_LOG_INFO, "test: reconnected to [%s]", tb_secret);
  bl->sent_ns = dlock_backend_now_ns() - tb.sent_skew_ns;
  bl->token = ++tb.next_token;
  if (tb.lose_in_acquire)
    dlock_backend_lock_lost(bc, bl);
  return 0;
}
static void stall(void) { nap(tb.stall_ms); }
static int tb_renew(dlock_backend_client *bc, dlock_backend_lock *bl) {
  (void)bc;
  (void)bl;
  atomic_fetch_add(&tb.renews, 1);
  stall();
  return tb.renew_rc;
}
static int tb_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                         int *rcs) {
  (void)bc;
  (void)bls;
  atomic_fetch_add(&tb.renew_many_calls, 1);
  stall();
  for (size_t i = 0; i < n; i++)
    rcs[i] = tb.renew_rc;
  return tb.renew_rc;
}
static int tb_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  (void)bc;
  event_signal(&tb.releasing);
  nap(tb.release_stall_ms);
  int n = atomic_fetch_add(&tb.releases, 1);
  if (n < 16)
    snprintf(tb.released_owner[n], sizeof tb.released_owner[n], "%s", bl->owner);
  int rc = 0;
  if (tb.release_down)
    rc = dlock_seterr(DLOCK_ECONN, "test: release got no answer");
  else if (bl->keylen == 1 && bl->key[0] == 'a')
    atomic_fetch_add(&tb.released_a, 1);
  event_signal(&tb.released);
  return rc;
}

static const char *const tb_schemes[] = {"test", "test+alt", NULL};
/* control op 1: the store reports that the session carrying every lock is
 * gone; op 2: that the lock passed in is gone. */
static int tb_control(dlock_backend_client *bc, dlock_backend_lock *bl, int op, void *arg) {
  (void)arg;
  if (op == 1)
    dlock_backend_all_lost(bc);
  else if (op == 2)
    dlock_backend_lock_lost(bc, bl);
  else
    return DLOCK_ENOTSUP;
  return 0;
}

static const char *const tbm_schemes[] = {"test-many", NULL};
static const dlock_backend_ops tbm_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "test-many",
    .schemes = tbm_schemes,
    .caps = DLOCK_CAP_SERVER_TTL,
    .open = tb_open,
    .close = tb_close,
    .try_acquire = tb_try,
    .renew = tb_renew,
    .release = tb_release,
    .renew_many = tb_renew_many,
    .control = tb_control,
};

/* A backend that waits natively and, like the HTTP stores, cuts every
 * request at the caller's deadline. */
static int tb_wait(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline) {
  atomic_fetch_add(&tb.waits, 1);
  if (deadline >= 0 && dlock_backend_now_ns() >= deadline)
    return dlock_seterr(DLOCK_ETIMEDOUT, "test: timed out waiting");
  return tb_try(bc, bl);
}

static const char *const tbw_schemes[] = {"test-wait", NULL};
static const dlock_backend_ops tbw_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "test-wait",
    .schemes = tbw_schemes,
    .caps = DLOCK_CAP_SERVER_TTL | DLOCK_CAP_NATIVE_WAIT,
    .open = tb_open,
    .close = tb_close,
    .try_acquire = tb_try,
    .acquire = tb_wait,
    .renew = tb_renew,
    .release = tb_release,
};

static const dlock_backend_ops tb_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "test",
    .schemes = tb_schemes,
    .caps = DLOCK_CAP_SERVER_TTL,
    .open = tb_open,
    .close = tb_close,
    .try_acquire = tb_try,
    .renew = tb_renew,
    .release = tb_release,
};

/* A store whose session keeps a lock past its ttl, so the core gives such
 * locks back. */
static int tbs_open(dlock_backend_client *bc, dlock_url *u) {
  bc->give_back_expired = true;
  return tb_open(bc, u);
}
static const char *const tbs_schemes[] = {"test-session", NULL};
static dlock_backend_ops tbs_ops; /* test's, with these */

/* A store that may carry out a request long after its client gave up on
 * it (?late=), and whose sessions keep locks past their ttl. */
static int tbl_open(dlock_backend_client *bc, dlock_url *u) {
  bc->give_back_expired = true;
  int rc = dlock_url_param_duration(u, "late", 0, &bc->late_ms);
  return rc < 0 ? rc : tb_open(bc, u);
}
/* Its wait, with tb.cut_wait: the deadline ends it while its request is
 * still unanswered. */
static int tbl_wait(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline) {
  if (!tb.cut_wait)
    return tb_wait(bc, bl, deadline);
  atomic_fetch_add(&tb.waits, 1);
  bl->sent_ns = dlock_backend_now_ns();
  nap((deadline - bl->sent_ns) / 1000000 + 1);
  return dlock_seterr(DLOCK_ETIMEDOUT, "test: the wait ended with its request unanswered");
}
static const char *const tbl_schemes[] = {"test-late", NULL};
static dlock_backend_ops tbl_ops; /* test-wait's, with these */

static void tb_reset(void) {
  atomic_store(&tb.tries, 0);
  atomic_store(&tb.renews, 0);
  atomic_store(&tb.releases, 0);
  tb.busy_for = 0;
  tb.renew_rc = 0;
  tb.sent_skew_ns = 0;
  tb.stall_ms = 0;
  tb.lose_in_acquire = 0;
  atomic_store(&tb.renew_many_calls, 0);
  tb.fail_for = 0;
  tb.fail_rc = 0;
  tb.try_stall_ms = 0;
  tb.release_stall_ms = 0;
  tb.fail_unsent = 0;
  memset(tb.owners, 0, sizeof tb.owners);
  atomic_store(&tb.waits, 0);
  tb.cut_message = 0;
  tb.release_down = 0;
  tb.log_in_try = 0;
  atomic_store(&tb.released_a, 0);
  event_init(&tb.released);
  event_init(&tb.releasing);
  memset(tb.released_owner, 0, sizeof tb.released_owner);
  tb.cut_wait = 0;
}

static int setup(void **state) {
  (void)state;
  static int done;
  if (!done) {
    done = 1;
    tbs_ops = tb_ops;
    tbs_ops.name = "test-session";
    tbs_ops.schemes = tbs_schemes;
    tbs_ops.open = tbs_open;
    tbl_ops = tbw_ops;
    tbl_ops.name = "test-late";
    tbl_ops.schemes = tbl_schemes;
    tbl_ops.open = tbl_open;
    tbl_ops.acquire = tbl_wait;
    return dlock_backend_register(&tb_ops) == 0 && dlock_backend_register(&tbm_ops) == 0 &&
                   dlock_backend_register(&tbw_ops) == 0 &&
                   dlock_backend_register(&tbs_ops) == 0 &&
                   dlock_backend_register(&tbl_ops) == 0
               ? 0
               : -1;
  }
  return 0;
}

/* ---- tests ---- */

static void test_error_table(void **state) {
  (void)state;
  assert_string_equal(dlock_err_name(DLOCK_EINVAL), "DLOCK_EINVAL");
  assert_string_equal(dlock_err_name(DLOCK_ENOMEM), "DLOCK_ENOMEM");
  assert_string_equal(dlock_strerror(DLOCK_EBUSY), "lock is held by another owner");
  assert_string_equal(dlock_strerror(0), "success");
  assert_string_equal(dlock_strerror(-999), "unknown error");
  assert_string_equal(dlock_err_name(12345), "DLOCK_UNKNOWN");
  assert_true(dlock_err_is_transient(DLOCK_ECONN));
  assert_true(dlock_err_is_transient(DLOCK_ETIMEDOUT));
  assert_false(dlock_err_is_transient(DLOCK_ELOST));
  assert_false(dlock_err_is_transient(DLOCK_EINVAL));
  /* every code is distinct and negative */
  int codes[] = {
#define X(name, val, tr, text) DLOCK_##name,
      DLOCK_ERRNO_MAP(X)
#undef X
  };
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    assert_true(codes[i] < 0);
    for (size_t j = i + 1; j < sizeof codes / sizeof *codes; j++)
      assert_int_not_equal(codes[i], codes[j]);
  }
}

static int noop_list(void *arg, const char *key, const dlock_info *info) {
  (void)arg, (void)key, (void)info;
  return 0;
}

/* A backend built against version 1 has a struct that ends before list
 * and force_release: the core must not read past its end (under ASan a
 * read there is a heap overflow), and its clients have neither cap, even
 * when its caps claim them. */
static dlock_backend_ops *v1_ops;
static void test_version1_backend(void **state) {
  (void)state;
  static const char *const v1_schemes[] = {"test-v1", NULL};
  size_t v1_size = offsetof(dlock_backend_ops, list);
  if (!v1_ops) {
    dlock_backend_ops full = tb_ops;
    full.version = 1;
    full.name = "test-v1";
    full.schemes = v1_schemes;
    full.caps |= DLOCK_CAP_LIST | DLOCK_CAP_BREAK;
    v1_ops = malloc(v1_size);
    assert_non_null(v1_ops);
    memcpy(v1_ops, &full, v1_size);
    assert_int_equal(dlock_backend_register(v1_ops), 0);
  }
  dlock_client *c;
  assert_int_equal(dlock_open("test-v1://h?known=1", &c), 0);
  assert_int_equal(dlock_client_caps(c) & (DLOCK_CAP_LIST | DLOCK_CAP_BREAK), 0);
  assert_int_equal(dlock_list(c, "", NULL, NULL), DLOCK_EINVAL);
  assert_int_equal(dlock_list(c, "", noop_list, NULL), DLOCK_ENOTSUP);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "cannot list"));
  assert_int_equal(dlock_break(c, "k", NULL, NULL), DLOCK_ENOTSUP);
  dlock_lock *l;
  dlock_options o = DLOCK_OPTIONS_INIT;
  assert_int_equal(dlock_try_acquire(c, "k", &o, &l), 0);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* A backend with renew_many and no renew: one renewal is a batch of one. */
static int tbo_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                          int *rcs) {
  (void)bc;
  (void)bls;
  atomic_fetch_add(&tb.renew_many_calls, 1);
  for (size_t i = 0; i < n; i++)
    rcs[i] = tb.renew_rc ? dlock_seterr(tb.renew_rc, "test: refused") : 0;
  return 0;
}

static void test_renew_many_only(void **state) {
  (void)state;
  static const char *const schemes[] = {"test-many-only", NULL};
  static dlock_backend_ops ops;
  ops = tb_ops;
  ops.name = "test-many-only";
  ops.schemes = schemes;
  ops.renew = NULL;
  assert_int_equal(dlock_backend_register(&ops), DLOCK_EINVAL); /* neither */
  assert_non_null(strstr(dlock_client_errmsg(NULL), "renew_many"));
  ops.renew_many = tbo_renew_many;
  assert_int_equal(dlock_backend_register(&ops), 0);
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-many-only://h?known=1", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.auto_renew = 0;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, "k", &o, &l), 0);
  assert_int_equal(dlock_renew(l, 0), 0);
  assert_int_equal(atomic_load(&tb.renew_many_calls), 1);
  tb.renew_rc = DLOCK_ELOST;
  assert_int_equal(dlock_renew(l, 0), DLOCK_ELOST);
  assert_int_equal(atomic_load(&tb.renew_many_calls), 2);
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  tb.renew_rc = 0;
  dlock_release(l);
  dlock_close(c);
}

static void test_registry(void **state) {
  (void)state;
  assert_int_equal(dlock_backend_register(&tb_ops), DLOCK_EINVAL); /* taken */
  assert_non_null(strstr(dlock_client_errmsg(NULL), "already registered"));
  dlock_backend_ops bad = tb_ops;
  static const char *const other[] = {"other", NULL};
  bad.schemes = other;
  bad.version = 99;
  assert_int_equal(dlock_backend_register(&bad), DLOCK_EINVAL);
  bad.version = DLOCK_BACKEND_VERSION;
  bad.release = NULL;
  assert_int_equal(dlock_backend_register(&bad), DLOCK_EINVAL);
  assert_int_equal(dlock_backend_register(NULL), DLOCK_EINVAL);
  dlock_client *c;
  assert_int_equal(dlock_open("test+alt://h?known=1", &c), 0);
  assert_string_equal(dlock_client_backend(c), "test");
  /* optional operations this backend lacks */
  dlock_info info;
  assert_int_equal(dlock_inspect(c, "k", &info), DLOCK_ENOTSUP);
  assert_int_equal(dlock_control(c, NULL, 1, NULL), DLOCK_ENOTSUP);
  dlock_close(c);
  assert_int_equal(dlock_open("test://h?unknown=1", &c), DLOCK_EINVAL);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "unknown"));
  /* capabilities are checked when the client is configured */
  assert_int_equal(dlock_open("test://h?require=server_ttl", &c), 0);
  dlock_close(c);
  assert_int_equal(dlock_open("test://h?require=server_ttl,fencing", &c), DLOCK_ENOTSUP);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "fencing"));
  assert_int_equal(dlock_open("test://h?require=telepathy", &c), DLOCK_EINVAL);
  assert_int_equal(dlock_open("mem://?require=fencing,native_wait,server_ttl", &c), 0);
  dlock_close(c);
  assert_int_equal(dlock_open("mem://?require=cross_process", &c), DLOCK_ENOTSUP);
  /* An unknown scheme's error names every scheme that would have worked:
   * the built-ins this build has and the ones registered at run time. */
  assert_int_equal(dlock_open("nosuch://h/x", &c), DLOCK_EINVAL);
  const char *msg = dlock_client_errmsg(NULL);
  const char *want[] = {"mem", "file", "test", "test+alt",
#ifdef DLOCK_HAVE_REDIS
                        "redis",
#endif
#ifdef DLOCK_HAVE_ZOOKEEPER
                        "zk",
#endif
#ifdef DLOCK_HAVE_POSTGRES
                        "postgres", "postgresql",
#endif
#ifdef DLOCK_HAVE_ETCD
                        "etcd", "etcd+https", "etcd+grpc", "etcd+grpcs",
#endif
#ifdef DLOCK_HAVE_CONSUL
                        "consul", "consul+https",
#endif
  };
  const char *list = strstr(msg, "knows: ");
  assert_non_null(list);
  /* ", a, b," so that each name is matched whole ("test" is not
   * satisfied by "test+alt"). */
  char all[600];
  snprintf(all, sizeof all, ", %.*s,", (int)strcspn(list + 7, ")"), list + 7);
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    char word[64];
    snprintf(word, sizeof word, ", %s,", want[i]);
    if (!strstr(all, word))
      fail_msg("'%s' missing from: %s", want[i], msg);
  }
}

static void test_poll_fallback(void **state) {
  (void)state;
  tb_reset();
  tb.busy_for = 4;
  dlock_client *c;
  assert_int_equal(dlock_open("test://h?retry_initial=1ms&retry_max=4ms", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 10000;
  dlock_lock *l;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  assert_int_equal(atomic_load(&tb.tries), 5);
  assert_int_equal(dlock_release(l), 0);
  /* busy forever: gives up at the deadline */
  tb_reset();
  tb.busy_for = 1 << 30;
  o.wait_ms = 200;
  int64_t t0 = dlock__now_ns();
  assert_int_equal(dlock_acquire(c, "k", &o, &l), DLOCK_ETIMEDOUT);
  int64_t el = (dlock__now_ns() - t0) / 1000000;
  assert_true(el >= 195 && el < 2000);
  assert_true(atomic_load(&tb.tries) >= 3);
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.acquire_ok, 1);
  assert_int_equal(m.acquire_timeout, 1);
  dlock_close(c);
}

static void test_granted_too_late(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test://h", &c), 0);
  /* The reply says the request left 2 s ago: a 1 s lease may be gone. */
  tb.sent_skew_ns = 2000000000;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 1000;
  dlock_lock *l = NULL;
  assert_int_equal(dlock_try_acquire(c, "k", &o, &l), DLOCK_ETIMEDOUT);
  assert_null(l);
  assert_int_equal(atomic_load(&tb.releases), 1);
  dlock_close(c);
}

static void test_deadline_without_reply(void **state) {
  (void)state;
  tb_reset();
  tb.renew_rc = DLOCK_ECONN; /* the store stops answering */
  dlock_client *c;
  assert_int_equal(dlock_open("test://h", &c), 0);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 300;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, "k", &o, &l), 0);
  assert_int_equal(dlock_lock_state(l), DLOCK_HELD);
  assert_true(dlock_lock_remaining_ms(l) <= 300);
  assert_int_equal(event_wait(&lost, 1, 5000), 1);
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  assert_true(atomic_load(&tb.renews) >= 1);
  assert_int_equal(event_wait(&lost, 2, 300), 1); /* once */
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_true(m.renew_failed >= 1);
  assert_int_equal(m.lost, 1);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  dlock_close(c);
}

static void test_keys(void **state) {
  (void)state;
  assert_int_equal(dlock__key_check("ok", NULL), 0);
  assert_int_equal(dlock__key_check("\xf0\x9f\x94\x92", NULL), 0);   /* U+1F512 */
  assert_int_equal(dlock__key_check("\xc0\xaf", NULL), DLOCK_EINVAL); /* overlong */
  assert_int_equal(dlock__key_check("\xed\xa0\x80", NULL), DLOCK_EINVAL); /* surrogate */
  assert_int_equal(dlock__key_check("\xf4\x90\x80\x80", NULL), DLOCK_EINVAL); /* > U+10FFFF */
  assert_int_equal(dlock__key_check("\xe2\x82", NULL), DLOCK_EINVAL);     /* truncated */
  assert_int_equal(dlock__key_check("", NULL), DLOCK_EINVAL);
}

static void test_mem_reentrancy_and_metrics(void **state) {
  (void)state;
  dlock_client *c;
  assert_int_equal(dlock_open("mem://unit?ttl=5s", &c), 0);
  assert_int_equal(dlock_client_ttl_ms(c), 5000);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *a, *b, *x;
  assert_int_equal(dlock_acquire(c, "r", &o, &a), 0);
  assert_int_equal(dlock_acquire(c, "r", &o, &b), 0);
  assert_ptr_equal(a, b);
  assert_int_equal(dlock_lock_holds(a), 2);
  assert_true(dlock_lock_remaining_ms(a) > 4000);
  assert_int_equal(dlock_release(a), 0);
  assert_int_equal(dlock_lock_holds(a), 1);
  assert_int_equal(dlock_try_acquire(c, "other", &o, &x), 0);
  assert_int_equal(dlock_release(x), 0);
  assert_int_equal(dlock_release(a), 0);
  dlock_metrics m;
  assert_int_equal(dlock_metrics_get(c, &m), 0);
  assert_int_equal(m.acquire_ok, 3);
  assert_int_equal(m.release, 2);
  assert_int_equal(m.held_now, 0);
  assert_int_equal(m.hold_time.count, 2);
  assert_int_equal(m.acquire_wait.count, 2);
  assert_true(dlock_histogram_quantile_us(&m.acquire_wait, 0.5) > 0);
  char text[16384];
  int n = dlock_metrics_prometheus(c, text, sizeof text);
  assert_true(n > 0 && (size_t)n < sizeof text);
  assert_non_null(strstr(text, "dlock_acquire_total{result=\"ok\"} 3\n"));
  assert_non_null(strstr(text, "dlock_hold_seconds_count 2\n"));
  assert_int_equal(dlock_metrics_prometheus(c, NULL, 0), n);
  assert_int_equal(dlock_metrics_get(NULL, &m), DLOCK_EINVAL);
  dlock_close(c);
}

static void test_mem_evict_reports_loss(void **state) {
  (void)state;
  dlock_client *c;
  assert_int_equal(dlock_open("mem://unit-evict", &c), 0);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  o.auto_renew = 0;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, "e", &o, &l), 0);
  assert_int_equal(dlock_control(c, NULL, DLOCK_MEM_CTL_EVICT, (void *)"e"), 0);
  assert_int_equal(dlock_control(c, NULL, DLOCK_MEM_CTL_EVICT, (void *)"e"), DLOCK_EINVAL);
  assert_int_equal(dlock_control(c, NULL, 42, NULL), DLOCK_ENOTSUP);
  assert_int_equal(dlock_renew(l, 0), DLOCK_ELOST);
  assert_int_equal(event_wait(&lost, 1, 5000), 1);
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  /* the same thread asking again gets told to release the lost handle */
  dlock_lock *l2;
  assert_int_equal(dlock_try_acquire(c, "e", &o, &l2), DLOCK_ELOST);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  assert_int_equal(dlock_try_acquire(c, "e", &o, &l2), 0);
  assert_int_equal(dlock_release(l2), 0);
  dlock_close(c);
}

static void test_close_releases(void **state) {
  (void)state;
  dlock_client *a, *b;
  assert_int_equal(dlock_open("mem://unit-close", &a), 0);
  assert_int_equal(dlock_open("mem://unit-close", &b), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(a, "c", &o, &l), 0);
  assert_int_equal(dlock_try_acquire(b, "c", &o, &l), DLOCK_EBUSY);
  dlock_close(a); /* gives the lock back at once */
  assert_int_equal(dlock_try_acquire(b, "c", &o, &l), 0);
  dlock_close(b);
  /* namespaces are separate stores */
  assert_int_equal(dlock_open("mem://unit-close-a", &a), 0);
  assert_int_equal(dlock_open("mem://unit-close-b", &b), 0);
  dlock_lock *l2;
  assert_int_equal(dlock_try_acquire(a, "c", &o, &l), 0);
  assert_int_equal(dlock_try_acquire(b, "c", &o, &l2), 0);
  dlock_close(a);
  dlock_close(b);
}

/* The owner-token buffer must not be shared with a forked child. */
static void test_owner_tokens_after_fork(void **state) {
  (void)state;
  char warm[33], parent[33], child[33] = {0};
  assert_int_equal(dlock__random_hex(warm, 16), 0); /* the buffer now holds more */
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    char t[33];
    int ok = dlock__random_hex(t, 16) == 0 && write(p[1], t, 32) == 32;
    _exit(ok ? 0 : 1);
  }
  assert_int_equal(dlock__random_hex(parent, 16), 0);
  assert_int_equal(read(p[0], child, 32), 32);
  int st;
  waitpid(pid, &st, 0);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_string_not_equal(parent, child);
  assert_string_not_equal(warm, child);
  assert_int_equal(strlen(parent), 32);
  close(p[0]);
  close(p[1]);
}

/* A renewal that changed the ttl at the store but whose reply was lost must
 * not leave the old, longer deadline in force. */
static void test_failed_shorter_renew(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test://h", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 30000;
  o.auto_renew = 0;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, "k", &o, &l), 0);
  assert_true(dlock_lock_remaining_ms(l) > 20000);
  tb.renew_rc = DLOCK_ECONN;
  assert_int_equal(dlock_renew(l, 1000), DLOCK_ECONN);
  assert_true(dlock_lock_remaining_ms(l) <= 1000);
  tb.renew_rc = 0;
  dlock_release(l);
  dlock_close(c);
}

static void test_ttl_shorter_than_margin(void **state) {
  (void)state;
  dlock_client *c;
  assert_int_equal(dlock_open("test://h", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 3;
  dlock_lock *l;
  assert_int_equal(dlock_try_acquire(c, "k", &o, &l), DLOCK_EINVAL);
  assert_non_null(strstr(dlock_client_errmsg(NULL), "margin"));
  dlock_close(c);
  assert_int_equal(dlock_open("test://h?ttl=5ms", &c), DLOCK_EINVAL);
  assert_int_equal(dlock_open("test://h?ttl=1s&margin=400ms", &c), DLOCK_EINVAL);
  assert_int_equal(dlock_open("mem://?ttl=5ms", &c), DLOCK_EINVAL);
}

struct handoff {
  dlock_client *c;
  dlock_lock *l;
  int rc;
};

static void *acquire_in_thread(void *arg) {
  struct handoff *h = arg;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 0;
  h->rc = dlock_acquire(h->c, "reuse", &o, &h->l);
  return NULL;
}

/* Thread ids are reused after a thread exits; a new thread must not be
 * taken for the one that acquired (and handed its lock on). */
static void test_reentrancy_survives_thread_id_reuse(void **state) {
  (void)state;
  dlock_client *c;
  assert_int_equal(dlock_open("mem://unit-reuse", &c), 0);
  struct handoff a = {.c = c}, b = {.c = c};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, acquire_in_thread, &a), 0);
  pthread_join(t, NULL);
  assert_int_equal(a.rc, 0);
  for (int i = 0; i < 20; i++) { /* glibc hands the same id out again at once */
    assert_int_equal(pthread_create(&t, NULL, acquire_in_thread, &b), 0);
    pthread_join(t, NULL);
    assert_int_equal(b.rc, DLOCK_EBUSY);
  }
  assert_int_equal(dlock_lock_holds(a.l), 1);
  assert_int_equal(dlock_release(a.l), 0);
  dlock_close(c);
}

/* A store that stops answering: losses are reported within about a ttl,
 * not after one request timeout per lock. */
static void test_stalled_store_reports_loss_promptly(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-many://h", &c), 0);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 300;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  enum { N = 20 };
  dlock_lock *ls[N];
  char k[16];
  for (int i = 0; i < N; i++) {
    snprintf(k, sizeof k, "s%d", i);
    assert_int_equal(dlock_try_acquire(c, k, &o, &ls[i]), 0);
  }
  tb.renew_rc = DLOCK_ECONN;
  tb.stall_ms = 1000;
  int64_t t0 = dlock__now_ns();
  assert_int_equal(event_wait(&lost, N, 10000), N);
  int64_t el = (dlock__now_ns() - t0) / 1000000;
  assert_true(el < 3000);
  /* one batched call per round, never one call per lock */
  assert_int_equal(atomic_load(&tb.renews), 0);
  tb.stall_ms = 0;
  for (int i = 0; i < N; i++)
    assert_int_equal(dlock_release(ls[i]), DLOCK_ELOST);
  dlock_close(c);
}

/* Locks taken one after another over two periods, as a client taking
 * thousands does: their renewals go out in about one round a period, not a
 * round whenever another lock's renewal comes within reach. */
static void test_renewals_of_locks_taken_apart_go_together(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-many://h", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 900; /* renewed every 300 ms */
  tb.stall_ms = 5; /* each round takes a while, as a store's round trip does */
  enum { N = 200 };
  dlock_lock *ls[N];
  char k[16];
  for (int i = 0; i < N; i++) {
    snprintf(k, sizeof k, "r%d", i);
    assert_int_equal(dlock_try_acquire(c, k, &o, &ls[i]), 0);
    nap(3); /* the pace of the acquisitions, not a wait for anything */
  }
  int before = atomic_load(&tb.renew_many_calls) + atomic_load(&tb.renews);
  int64_t t0 = dlock__now_ns();
  nap(1800);
  int rounds = atomic_load(&tb.renew_many_calls) + atomic_load(&tb.renews) - before;
  int64_t periods = (dlock__now_ns() - t0) / 300000000 + 1;
  /* About one a period once they merge.  Rounds used to go out for the
   * locks that came within reach while the last one ran (one every 5 ms
   * here), and rounds a quarter period apart never merged. */
  assert_true(rounds <= 2 * periods + 2);
  tb.stall_ms = 0;
  for (int i = 0; i < N; i++)
    assert_int_equal(dlock_lock_state(ls[i]), DLOCK_HELD);
  for (int i = 0; i < N; i++)
    assert_int_equal(dlock_release(ls[i]), 0);
  dlock_close(c);
}

static void test_backend_reported_loss(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-many://h", &c), 0);
  struct event lost;
  event_init(&lost);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 60000;
  o.on_lost = event_on_lost;
  o.on_lost_arg = &lost;
  dlock_lock *a, *b, *x;
  assert_int_equal(dlock_try_acquire(c, "a", &o, &a), 0);
  assert_int_equal(dlock_try_acquire(c, "b", &o, &b), 0);
  assert_int_equal(dlock_try_acquire(c, "x", &o, &x), 0);
  assert_int_equal(dlock_control(c, x, 2, NULL), 0); /* just x */
  assert_int_equal(event_wait(&lost, 1, 5000), 1);
  assert_int_equal(dlock_lock_state(x), DLOCK_LOST);
  assert_int_equal(dlock_lock_state(a), DLOCK_HELD);
  assert_int_equal(dlock_control(c, NULL, 1, NULL), 0); /* the session */
  assert_int_equal(event_wait(&lost, 3, 5000), 3);
  assert_int_equal(dlock_lock_state(a), DLOCK_LOST);
  assert_int_equal(dlock_lock_state(b), DLOCK_LOST);
  assert_int_equal(dlock_control(c, NULL, 1, NULL), 0); /* again: no new reports */
  assert_int_equal(event_wait(&lost, 4, 300), 3);
  dlock_release(a);
  dlock_release(b);
  dlock_release(x);
  dlock_close(c);
}

/* A loss the store reports while the acquire is still in flight must not
 * be dropped: the acquire fails instead of returning a dead handle. */
static void test_loss_during_acquire(void **state) {
  (void)state;
  tb_reset();
  tb.lose_in_acquire = 1;
  dlock_client *c;
  assert_int_equal(dlock_open("test-many://h", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  dlock_lock *l = NULL;
  assert_int_equal(dlock_try_acquire(c, "early", &o, &l), DLOCK_ELOST);
  assert_null(l);
  assert_int_equal(atomic_load(&tb.releases), 1);
  tb.lose_in_acquire = 0;
  assert_int_equal(dlock_try_acquire(c, "early", &o, &l), 0);
  assert_int_equal(dlock_lock_state(l), DLOCK_HELD);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* A blocking acquire rides out transient failures until its deadline,
 * giving back each unanswered attempt before the next one. */
static void test_transient_errors_retried(void **state) {
  (void)state;
  tb_reset();
  tb.fail_for = 3;
  tb.fail_rc = DLOCK_ECONN;
  dlock_client *c;
  assert_int_equal(dlock_open("test://h?retry_initial=1ms&retry_max=4ms", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 30000;
  dlock_lock *l = NULL;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  assert_int_equal(atomic_load(&tb.tries), 4);
  assert_int_equal(atomic_load(&tb.releases), 3);
  /* Each attempt is an acquisition of its own: a store that queues by
   * owner can never mistake the next one for a leftover of the last. */
  for (int i = 0; i < 4; i++)
    for (int j = i + 1; j < 4; j++)
      assert_string_not_equal(tb.owners[i], tb.owners[j]);
  assert_string_equal(tb.owners[3], dlock_lock_owner(l));
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.acquire_retries, 3);
  assert_int_equal(m.acquire_ok, 1);
  assert_int_equal(dlock_release(l), 0);

  /* Refused before any request left: retried, with nothing to give back. */
  tb_reset();
  tb.fail_for = 2;
  tb.fail_rc = DLOCK_ECONN;
  tb.fail_unsent = 1;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  assert_int_equal(atomic_load(&tb.tries), 3);
  assert_int_equal(atomic_load(&tb.releases), 0);
  assert_int_equal(dlock_release(l), 0);

  /* A request timeout before the deadline is transient too. */
  tb_reset();
  tb.fail_for = 2;
  tb.fail_rc = DLOCK_ETIMEDOUT;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  assert_int_equal(atomic_load(&tb.tries), 3);
  assert_int_equal(dlock_release(l), 0);

  /* Definitive errors are not retried. */
  tb_reset();
  tb.fail_for = 1;
  tb.fail_rc = DLOCK_EAUTH;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), DLOCK_EAUTH);
  assert_int_equal(atomic_load(&tb.tries), 1);

  /* A store that stays away: the last attempt's error, at the deadline. */
  tb_reset();
  tb.fail_for = 1 << 30;
  tb.fail_rc = DLOCK_ECONN;
  o.wait_ms = 300;
  int64_t t0 = dlock__now_ns();
  assert_int_equal(dlock_acquire(c, "k", &o, &l), DLOCK_ECONN);
  int64_t el = (dlock__now_ns() - t0) / 1000000;
  assert_true(el >= 295 && el < 3000);
  assert_true(atomic_load(&tb.tries) >= 3);
  assert_non_null(strstr(dlock_client_errmsg(c), "got no answer"));
  dlock_close(c);

  /* A store that cuts its wait at the deadline still says it is away: the
   * attempt at the deadline is a single request. */
  tb_reset();
  tb.fail_for = 1 << 30;
  tb.fail_rc = DLOCK_ECONN;
  assert_int_equal(dlock_open("test-wait://h?retry_initial=5ms&retry_max=50ms", &c), 0);
  assert_int_equal(dlock_acquire(c, "k", &o, &l), DLOCK_ECONN);
  assert_non_null(strstr(dlock_client_errmsg(c), "got no answer"));
  assert_true(atomic_load(&tb.waits) >= 2);
  dlock_metrics_get(c, &m);
  assert_int_equal(m.acquire_error, 1);
  assert_int_equal(m.acquire_timeout, 0);
  dlock_close(c);
}

/* A try makes one attempt, and an unanswered one costs the caller one
 * request, not a second one for the give-back, which goes on behind. */
static void test_try_fails_once_and_gives_back_behind(void **state) {
  (void)state;
  tb_reset();
  tb.fail_for = 1;
  tb.fail_rc = DLOCK_ECONN;
  tb.try_stall_ms = 800;
  tb.release_stall_ms = 800;
  dlock_client *c;
  assert_int_equal(dlock_open("test://h", &c), 0);
  dlock_lock *l = NULL;
  int64_t t0 = dlock__now_ns();
  assert_int_equal(dlock_try_acquire(c, "k", NULL, &l), DLOCK_ECONN);
  int64_t el = (dlock__now_ns() - t0) / 1000000;
  assert_true(el >= 790 && el < 1500);
  assert_null(l);
  assert_int_equal(atomic_load(&tb.tries), 1);
  /* While it is given back, this client does not ask the store again. */
  assert_int_equal(dlock_try_acquire(c, "k", NULL, &l), DLOCK_EBUSY);
  assert_non_null(strstr(dlock_client_errmsg(c), "given back"));
  assert_int_equal(atomic_load(&tb.tries), 1);
  /* A try refused before its request left has nothing to give back. */
  tb_reset();
  tb.fail_for = 1;
  tb.fail_rc = DLOCK_ECONN;
  tb.fail_unsent = 1;
  assert_int_equal(dlock_try_acquire(c, "other", NULL, &l), DLOCK_ECONN);
  assert_int_equal(dlock_try_acquire(c, "other", NULL, &l), 0);
  assert_int_equal(atomic_load(&tb.releases), 0); /* none for "other" */
  assert_int_equal(dlock_release(l), 0);
  /* A blocking acquire waits for the give-back, then gets it. */
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 10000;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  assert_int_equal(atomic_load(&tb.releases), 2); /* "other", then the give-back */
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback, 1);
  assert_int_equal(m.giveback_pending, 0);
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* An attempt whose give-back could not be made at once is given back
 * behind, under its own owner, without hiding the acquisition that
 * followed it from its thread. */
static void test_giveback_behind_keeps_reentrancy(void **state) {
  (void)state;
  tb_reset();
  tb.fail_for = 1;
  tb.fail_rc = DLOCK_ECONN;
  tb.release_down = 1; /* every give-back finds the store away */
  dlock_client *c;
  assert_int_equal(dlock_open("test://h?retry_initial=1ms", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 10000;
  dlock_lock *l = NULL, *again = NULL;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback, 1); /* once, though it moved behind */
  assert_int_equal(m.giveback_pending, 1);
  assert_string_not_equal(tb.owners[0], tb.owners[1]);
  assert_int_equal(dlock_try_acquire(c, "k", NULL, &again), 0);
  assert_ptr_equal(again, l);
  assert_int_equal(dlock_lock_holds(l), 2);
  assert_int_equal(dlock_release(again), 0);
  tb.release_down = 0;
  assert_int_equal(dlock_release(l), 0);
  dlock_close(c);
}

/* Whatever a backend says, no secret of the URL reaches the caller. */
static void test_store_messages_scrubbed(void **state) {
  (void)state;
  tb_reset();
  tb.fail_for = 1;
  tb.fail_rc = DLOCK_EAUTH;
  dlock_client *c;
  assert_int_equal(dlock_open("test://u:hunter2-pw@h", &c), 0);
  dlock_lock *l = NULL;
  assert_int_equal(dlock_try_acquire(c, "k", NULL, &l), DLOCK_EAUTH);
  assert_non_null(strstr(dlock_client_errmsg(c), "got no answer from [***]"));
  assert_null(strstr(dlock_client_errmsg(c), "hunter2"));
  /* Scrubbed as it is made, before any copy can cut the secret short. */
  tb_reset();
  tb.fail_for = 1;
  tb.fail_rc = DLOCK_EAUTH;
  tb.cut_message = 1;
  assert_int_equal(dlock_try_acquire(c, "k", NULL, &l), DLOCK_EAUTH);
  assert_non_null(strstr(dlock_client_errmsg(c), "got no answer from [***"));
  assert_null(strstr(dlock_client_errmsg(c), "hunt"));
  dlock_close(c);
}

/* A give-back the store left unanswered is not asked again by close, and
 * says nothing about the store now: a lock held since is still released. */
static void test_close_after_unanswered_giveback(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test://h?retry_initial=1ms&retry_max=4ms", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.auto_renew = 0;
  dlock_lock *a, *b;
  assert_int_equal(dlock_try_acquire(c, "a", &o, &a), 0);
  tb.fail_for = atomic_load(&tb.tries) + 1;
  tb.fail_rc = DLOCK_ECONN;
  tb.release_down = 1;
  assert_int_equal(dlock_try_acquire(c, "b", &o, &b), DLOCK_ECONN);
  /* The renew thread tried to give b back and got no answer. */
  int64_t until = dlock__now_ns() + 10 * 1000000000LL;
  while (atomic_load(&tb.releases) < 1) {
    assert_true(dlock__now_ns() < until);
    nap(1);
  }
  tb.release_down = 0;
  dlock_close(c);
  assert_int_equal(atomic_load(&tb.released_a), 1);
  (void)a;
}

/* ---- stores whose sessions keep locks past their ttl ---- */

/* A lock that nobody renews, reported sent 700 ms ago: its validity ends
 * about 290 ms after it is granted. */
static dlock_lock *acquire_expiring(dlock_client *c, const char *key, struct event *lost) {
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.auto_renew = 0;
  o.ttl_ms = 1000;
  o.on_lost = event_on_lost;
  o.on_lost_arg = lost;
  tb.sent_skew_ns = 700 * 1000000LL;
  dlock_lock *l = NULL;
  assert_int_equal(dlock_try_acquire(c, key, &o, &l), 0);
  tb.sent_skew_ns = 0;
  return l;
}

/* The core gives back a lock whose validity ran out, once, after telling
 * its holder; the holder's release then asks nothing more of the store. */
static void test_expired_lock_given_back(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-session://h", &c), 0);
  struct event lost;
  event_init(&lost);
  dlock_lock *l = acquire_expiring(c, "a", &lost);
  assert_int_equal(event_wait(&lost, 1, 10000), 1);
  assert_int_equal(event_wait(&tb.released, 1, 10000), 1);
  assert_int_equal(atomic_load(&tb.released_a), 1);
  assert_int_equal(dlock_lock_state(l), DLOCK_LOST);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  assert_int_equal(atomic_load(&tb.releases), 1);
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback, 1);
  assert_int_equal(m.giveback_pending, 0);
  /* Nor does close, for one left unreleased. */
  l = acquire_expiring(c, "a", &lost);
  assert_int_equal(event_wait(&tb.released, 2, 10000), 2);
  dlock_close(c);
  assert_int_equal(atomic_load(&tb.releases), 2);
}

/* A backlog of expired locks is given back a few at a time, all of them,
 * while a renewed lock stays held. */
static void test_expired_backlog_given_back(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-session://h", &c), 0);
  dlock_lock *kept = NULL;
  assert_int_equal(dlock_try_acquire(c, "kept", NULL, &kept), 0);
  struct event lost;
  event_init(&lost);
  enum { N = 40 };
  dlock_lock *ls[N];
  char key[16];
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "k%d", i);
    ls[i] = acquire_expiring(c, key, &lost);
  }
  assert_int_equal(event_wait(&tb.released, N, 20000), N);
  for (int i = 0; i < N; i++)
    assert_int_equal(dlock_release(ls[i]), DLOCK_ELOST);
  assert_int_equal(atomic_load(&tb.releases), N);
  assert_int_equal(dlock_lock_state(kept), DLOCK_HELD);
  assert_int_equal(dlock_release(kept), 0);
  dlock_close(c);
}

/* Elsewhere the store expires it on its own: nothing is sent until the
 * holder releases it. */
static void test_expired_lock_kept_for_release(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test://h", &c), 0);
  struct event lost;
  event_init(&lost);
  dlock_lock *l = acquire_expiring(c, "a", &lost);
  assert_int_equal(event_wait(&lost, 1, 10000), 1);
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback, 0);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  assert_int_equal(atomic_load(&tb.releases), 1);
  dlock_close(c);
}

/* A give-back the store does not answer is tried again until it does; the
 * holder's release meanwhile is one more try, and hands the rest on. */
static void test_expired_giveback_retried(void **state) {
  (void)state;
  tb_reset();
  tb.release_down = 1;
  dlock_client *c;
  assert_int_equal(dlock_open("test-session://h?retry_initial=1ms&retry_max=4ms", &c), 0);
  struct event lost;
  event_init(&lost);
  dlock_lock *l = acquire_expiring(c, "a", &lost);
  /* Retries come every few ms: more may have been made by the time this
   * thread looks. */
  assert_true(event_wait(&tb.released, 3, 10000) >= 3);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  /* The key stays this client's own until the store has it back. */
  dlock_lock *again = NULL;
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &again), DLOCK_EBUSY);
  assert_non_null(strstr(dlock_client_errmsg(c), "being given back"));
  tb.release_down = 0;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 10000;
  assert_int_equal(dlock_acquire(c, "a", &o, &again), 0);
  assert_int_equal(atomic_load(&tb.released_a), 1);
  assert_int_equal(dlock_release(again), 0);
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback_pending, 0);
  dlock_close(c);
}

/* A release the store left unanswered is given back in the background,
 * and the key waits for it: the session would otherwise keep it. */
static void test_unanswered_release_given_back(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-session://h?retry_initial=1ms&retry_max=4ms", &c), 0);
  dlock_lock *l = NULL, *again = NULL;
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &l), 0);
  tb.release_down = 1;
  assert_int_equal(dlock_release(l), DLOCK_ECONN);
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &again), DLOCK_EBUSY);
  /* Retries come every few ms: more may have been made by the time this
   * thread looks. */
  assert_true(event_wait(&tb.released, 2, 10000) >= 2);
  tb.release_down = 0;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 10000;
  assert_int_equal(dlock_acquire(c, "a", &o, &again), 0);
  assert_int_equal(atomic_load(&tb.released_a), 1);
  assert_int_equal(dlock_release(again), 0);
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback, 1);
  assert_int_equal(m.giveback_pending, 0);
  dlock_close(c);
  /* Elsewhere it is left to expire, as before. */
  tb_reset();
  assert_int_equal(dlock_open("test://h", &c), 0);
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &l), 0);
  tb.release_down = 1;
  assert_int_equal(dlock_release(l), DLOCK_ECONN);
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &again), 0);
  tb.release_down = 0;
  assert_int_equal(dlock_release(again), 0);
  assert_int_equal(atomic_load(&tb.releases), 2);
  dlock_close(c);
}

/* ---- stores that may carry out a request late ---- */

/* Until C's key table is empty: its watched attempts are over. */
static void wait_table_empty(dlock_client *c) {
  int64_t until = dlock__now_ns() + 10 * 1000000000LL;
  for (;;) {
    pthread_mutex_lock(&c->mu);
    bool empty = c->head == NULL;
    pthread_mutex_unlock(&c->mu);
    if (empty)
      return;
    assert_true(dlock__now_ns() < until);
    nap(1);
  }
}

/* A client of the scripted store at URL, reset, whose first UNANSWERED
 * attempts get no answer. */
static dlock_client *open_scripted(const char *url, int unanswered) {
  tb_reset();
  tb.fail_for = unanswered;
  tb.fail_rc = DLOCK_ECONN;
  dlock_client *c = NULL;
  assert_int_equal(dlock_open(url, &c), 0);
  return c;
}

/* An attempt that got no answer is given back and then looked at again,
 * under its own owner, until the store can no longer grant it; the looks
 * do not count as give-backs still due. */
static void test_late_grant_looked_at_again(void **state) {
  (void)state;
  dlock_client *c =
      open_scripted("test-late://h?late=300ms&retry_initial=1ms&retry_max=10ms", 1);
  dlock_lock *l = NULL;
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &l), DLOCK_ECONN);
  /* Retries come every few ms: more may have been made by the time this
   * thread looks. */
  assert_true(event_wait(&tb.released, 3, 10000) >= 3);
  for (int i = 0; i < 3; i++)
    assert_string_equal(tb.released_owner[i], tb.owners[0]);
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback, 1);
  assert_int_equal(m.giveback_pending, 0);
  wait_table_empty(c);
  int looks = atomic_load(&tb.releases);
  dlock_close(c);
  assert_int_equal(atomic_load(&tb.releases), looks);
  /* A store that answers every request in time is not looked at again. */
  c = open_scripted("test-late://h?retry_initial=1ms&retry_max=10ms", 1);
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &l), DLOCK_ECONN);
  assert_int_equal(event_wait(&tb.released, 1, 10000), 1);
  wait_table_empty(c);
  dlock_close(c);
  assert_int_equal(atomic_load(&tb.releases), 1);
}

/* The looks leave the key to this client: its acquire goes ahead (a try
 * waits for a look on its way, no more), no look is made while it holds
 * the key, and one is once it has let go. */
static void test_late_grant_waits_for_the_holder(void **state) {
  (void)state;
  dlock_client *c =
      open_scripted("test-late://h?late=200ms&retry_initial=1ms&retry_max=10ms", 1);
  tb.release_stall_ms = 50;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 300;
  dlock_lock *l = NULL;
  assert_int_equal(dlock_try_acquire(c, "a", &o, &l), DLOCK_ECONN);
  /* The give-back, then a look that the store is slow to answer. */
  assert_true(event_wait(&tb.releasing, 2, 10000) >= 2);
  assert_int_equal(dlock_try_acquire(c, "a", &o, &l), 0);
  tb.release_stall_ms = 0;
  int before = atomic_load(&tb.releases);
  for (int i = 0; i < before; i++)
    assert_string_equal(tb.released_owner[i], tb.owners[0]);
  /* Renewed for longer than the store could still grant the attempt. */
  int64_t until = dlock__now_ns() + 10 * 1000000000LL;
  while (atomic_load(&tb.renews) < 4) {
    assert_true(dlock__now_ns() < until);
    nap(1);
  }
  assert_int_equal(atomic_load(&tb.releases), before);
  assert_int_equal(dlock_release(l), 0);
  assert_int_equal(event_wait(&tb.released, before + 2, 10000), before + 2);
  assert_string_equal(tb.released_owner[before], tb.owners[1]);
  assert_string_equal(tb.released_owner[before + 1], tb.owners[0]);
  wait_table_empty(c);
  dlock_close(c);
  assert_int_equal(atomic_load(&tb.releases), before + 2);
}

/* The give-back a blocking acquire makes at once, before trying again, is
 * watched as well: once the lock that followed it is let go. */
static void test_late_grant_after_inline_giveback(void **state) {
  (void)state;
  dlock_client *c = open_scripted("test-late://h?late=10s&retry_initial=1ms&retry_max=10ms", 1);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 10000;
  dlock_lock *l = NULL;
  assert_int_equal(dlock_acquire(c, "a", &o, &l), 0);
  assert_int_equal(atomic_load(&tb.releases), 1);
  assert_string_equal(tb.released_owner[0], tb.owners[0]);
  assert_int_equal(dlock_release(l), 0);
  /* The looks go on every few ms until the store's 10 s are up. */
  assert_true(event_wait(&tb.released, 3, 10000) >= 3);
  assert_string_equal(tb.released_owner[1], tb.owners[1]);
  assert_string_equal(tb.released_owner[2], tb.owners[0]);
  dlock_close(c);
}

/* On such a store a wait that ends at its deadline with its request still
 * unanswered is given back too; elsewhere the backend has cleaned up. */
static void test_late_store_wait_cut_at_deadline(void **state) {
  (void)state;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 100;
  dlock_lock *l = NULL;
  dlock_client *c =
      open_scripted("test-late://h?late=100ms&retry_initial=1ms&retry_max=10ms", 0);
  tb.cut_wait = 1;
  assert_int_equal(dlock_acquire(c, "a", &o, &l), DLOCK_ETIMEDOUT);
  assert_non_null(strstr(dlock_client_errmsg(c), "unanswered"));
  /* Looks follow the give-back every few ms for the store's 100 ms. */
  assert_true(event_wait(&tb.released, 1, 10000) >= 1);
  dlock_metrics m;
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback, 1);
  assert_int_equal(m.acquire_timeout, 1);
  wait_table_empty(c);
  dlock_close(c);
  c = open_scripted("test-late://h", 0);
  tb.cut_wait = 1;
  assert_int_equal(dlock_acquire(c, "a", &o, &l), DLOCK_ETIMEDOUT);
  dlock_metrics_get(c, &m);
  assert_int_equal(m.giveback, 0);
  dlock_close(c);
  assert_int_equal(atomic_load(&tb.releases), 0);
}

/* ---- the application's log ---- */

static struct {
  pthread_mutex_t mu;
  int n;
  int level[32];
  char msg[32][512];
} logged = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void capture(dlock_log_level level, const char *msg, void *arg) {
  assert_ptr_equal(arg, &logged);
  pthread_mutex_lock(&logged.mu);
  if (logged.n < 32) {
    logged.level[logged.n] = level;
    snprintf(logged.msg[logged.n], sizeof logged.msg[0], "%s", msg);
    logged.n++;
  }
  pthread_mutex_unlock(&logged.mu);
}

/* How many messages of LEVEL contain TEXT; every message, whatever it
 * says, starts with the redacted URL and holds no secret. */
static int logged_with(int level, const char *text) {
  int k = 0;
  pthread_mutex_lock(&logged.mu);
  for (int i = 0; i < logged.n; i++) {
    if (strncmp(logged.msg[i], "test://u:***@h", 14) != 0 || strstr(logged.msg[i], "hunt"))
      fail_msg("unsafe or unprefixed log message: %s", logged.msg[i]);
    if (logged.level[i] == level && strstr(logged.msg[i], text))
      k++;
  }
  pthread_mutex_unlock(&logged.mu);
  return k;
}

static void test_log(void **state) {
  (void)state;
  assert_int_equal(dlock_set_log(capture, &logged, 0), DLOCK_EINVAL);
  assert_int_equal(dlock_set_log(capture, &logged, 5), DLOCK_EINVAL);
  assert_string_equal(dlock_log_level_name(DLOCK_LOG_WARN), "warn");
  assert_string_equal(dlock_log_level_name(9), "?");
  assert_int_equal(dlock_set_log(capture, &logged, DLOCK_LOG_DEBUG), 0);
  logged.n = 0;

  /* Retries, each with the store's (scrubbed) reason, and the give-back of
   * every unanswered attempt. */
  tb_reset();
  tb.fail_for = 2;
  tb.fail_rc = DLOCK_ECONN;
  tb.log_in_try = 1;
  dlock_client *c;
  assert_int_equal(dlock_open("test://u:hunter2-pw@h?retry_initial=1ms&retry_max=4ms", &c), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 30000;
  o.auto_renew = 0;
  dlock_lock *l = NULL;
  assert_int_equal(dlock_acquire(c, "k", &o, &l), 0);
  assert_int_equal(logged_with(DLOCK_LOG_WARN, "acquire of 'k' failed (DLOCK_ECONN: test: "), 2);
  assert_int_equal(logged_with(DLOCK_LOG_WARN, "got no answer from [***]"), 2);
  assert_int_equal(logged_with(DLOCK_LOG_INFO, "gave back what an unanswered acquire of 'k'"), 2);
  /* A backend's own message, quoting the URL's password. */
  assert_int_equal(logged_with(DLOCK_LOG_INFO, "test: reconnected to [***]"), 1);

  /* Loss, once, with why. */
  tb.renew_rc = DLOCK_ELOST;
  assert_int_equal(dlock_renew(l, 0), DLOCK_ELOST);
  assert_int_equal(dlock_renew(l, 0), DLOCK_ELOST);
  assert_int_equal(logged_with(DLOCK_LOG_ERROR, ") lost: the store refused its renewal"), 1);
  assert_int_equal(logged_with(DLOCK_LOG_ERROR, "lock 'k' (token "), 1);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);

  /* Only what the level asks for; then nothing at all. */
  int before = logged.n;
  assert_int_equal(dlock_set_log(capture, &logged, DLOCK_LOG_WARN), 0);
  tb_reset();
  tb.log_in_try = 1;
  assert_int_equal(dlock_try_acquire(c, "k2", &o, &l), 0);
  assert_int_equal(dlock_release(l), 0);
  assert_int_equal(logged.n, before);
  assert_int_equal(dlock_set_log(NULL, NULL, 0), 0);
  tb_reset();
  tb.renew_rc = DLOCK_ELOST;
  assert_int_equal(dlock_try_acquire(c, "k3", &o, &l), 0);
  assert_int_equal(dlock_renew(l, 0), DLOCK_ELOST);
  assert_int_equal(dlock_release(l), DLOCK_ELOST);
  assert_int_equal(logged.n, before);
  dlock_close(c);
}

/* dlock_set_log() returns only once no call to the function it replaces
 * is running: the caller may then free that function's argument. */
static atomic_int slow_entered, slow_inside;

static void slow_log(dlock_log_level level, const char *msg, void *arg) {
  (void)level;
  (void)msg;
  (void)arg;
  atomic_store(&slow_inside, 1);
  atomic_store(&slow_entered, 1);
  nap(200); /* a log function that writes to a slow disk */
  atomic_store(&slow_inside, 0);
}

static void *log_from_try(void *arg) {
  dlock_client *c = arg;
  dlock_lock *l;
  if (dlock_try_acquire(c, "slow-log", NULL, &l) == 0)
    dlock_release(l);
  return NULL;
}

static void test_set_log_waits_for_calls(void **state) {
  (void)state;
  tb_reset();
  tb.log_in_try = 1;
  dlock_client *c;
  assert_int_equal(dlock_open("test://h", &c), 0);
  assert_int_equal(dlock_set_log(slow_log, NULL, DLOCK_LOG_INFO), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, log_from_try, c), 0);
  int64_t until = dlock__now_ns() + 10 * 1000000000LL;
  while (!atomic_load(&slow_entered)) {
    assert_true(dlock__now_ns() < until);
    nap(1);
  }
  assert_int_equal(dlock_set_log(NULL, NULL, 0), 0);
  assert_int_equal(atomic_load(&slow_inside), 0);
  pthread_join(th, NULL);
  dlock_close(c);
}

/* ---- give-backs and the renew thread ---- */

/* A holder's own dlock_renew that finds the validity passed turns the lock
 * LOST, and the core gives it back as it does when the renew thread
 * notices first.  The renew thread is held up by a slow renewal of another
 * lock so that the holder's call comes first. */
static void test_renew_after_expiry_given_back(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-session://h?retry_initial=1ms&retry_max=4ms", &c), 0);
  tb.stall_ms = 800;
  dlock_options ko = DLOCK_OPTIONS_INIT;
  ko.ttl_ms = 300;
  dlock_lock *kept = NULL;
  assert_int_equal(dlock_try_acquire(c, "kept", &ko, &kept), 0);
  struct event lost;
  event_init(&lost);
  dlock_lock *l = acquire_expiring(c, "a", &lost);
  int64_t until = dlock__now_ns() + 10 * 1000000000LL;
  while (atomic_load(&tb.renews) < 1 || dlock_lock_state(l) != DLOCK_LOST) {
    assert_true(dlock__now_ns() < until);
    nap(1);
  }
  /* The renew thread is inside kept's renewal; a's validity has passed. */
  assert_int_equal(dlock_renew(l, 0), DLOCK_ELOST);
  tb.stall_ms = 0;
  /* kept, late renewed, is lost and given back by the renew thread, whose
   * scans see a too. */
  assert_int_equal(event_wait(&tb.released, 2, 10000), 2);
  assert_int_equal(atomic_load(&tb.released_a), 1);
  dlock_release(l);
  dlock_release(kept);
  dlock_close(c);
}

/* A give-back the store is slow to answer never holds up the renewals of
 * other locks: one that the store renews at once whenever asked stays
 * held however long the give-backs take. */
static void test_slow_giveback_spares_renewals(void **state) {
  (void)state;
  tb_reset();
  dlock_client *c;
  assert_int_equal(dlock_open("test-session://h?retry_initial=1ms&retry_max=4ms", &c), 0);
  struct event lost;
  event_init(&lost);
  dlock_options ko = DLOCK_OPTIONS_INIT;
  ko.ttl_ms = 600;
  ko.on_lost = event_on_lost;
  ko.on_lost_arg = &lost;
  dlock_lock *k = NULL, *a = NULL;
  assert_int_equal(dlock_try_acquire(c, "k", &ko, &k), 0);
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &a), 0);
  tb.release_down = 1;
  tb.release_stall_ms = 700;
  assert_int_equal(dlock_release(a), DLOCK_ECONN);
  /* Several slow give-backs, each longer than k's ttl. */
  assert_true(event_wait(&tb.released, 4, 20000) >= 4);
  int got = event_wait(&lost, 1, 0);
  assert_int_equal(dlock_lock_state(k), DLOCK_HELD);
  tb.release_down = 0;
  tb.release_stall_ms = 0;
  assert_int_equal(got, 0);
  dlock_release(k);
  dlock_close(c);
}

/* A blocking acquire behind a look on its way waits for it only until its
 * own deadline. */
static void test_wait_for_look_ends_at_deadline(void **state) {
  (void)state;
  dlock_client *c =
      open_scripted("test-late://h?late=10s&retry_initial=1ms&retry_max=10ms", 1);
  dlock_lock *l = NULL;
  assert_int_equal(dlock_try_acquire(c, "a", NULL, &l), DLOCK_ECONN);
  assert_true(event_wait(&tb.released, 1, 10000) >= 1);
  tb.release_stall_ms = 1000;
  /* A look begun after the stall was set is the one that stalls. */
  int begun = event_wait(&tb.releasing, 0, 0);
  assert_true(event_wait(&tb.releasing, begun + 1, 10000) >= begun + 1);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 50;
  int64_t t0 = dlock__now_ns();
  int rc = dlock_acquire(c, "a", &o, &l);
  int64_t took = (dlock__now_ns() - t0) / 1000000;
  tb.release_stall_ms = 0;
  assert_int_equal(rc, DLOCK_ETIMEDOUT);
  assert_true(took < 800); /* the look takes 1000 ms */
  dlock_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_table),
      cmocka_unit_test(test_registry),
      cmocka_unit_test(test_renew_many_only),
      cmocka_unit_test(test_renewals_of_locks_taken_apart_go_together),
      cmocka_unit_test_setup(test_version1_backend, setup),
      cmocka_unit_test(test_poll_fallback),
      cmocka_unit_test(test_granted_too_late),
      cmocka_unit_test(test_deadline_without_reply),
      cmocka_unit_test(test_keys),
      cmocka_unit_test(test_mem_reentrancy_and_metrics),
      cmocka_unit_test(test_mem_evict_reports_loss),
      cmocka_unit_test(test_close_releases),
      cmocka_unit_test(test_owner_tokens_after_fork),
      cmocka_unit_test(test_failed_shorter_renew),
      cmocka_unit_test(test_ttl_shorter_than_margin),
      cmocka_unit_test(test_reentrancy_survives_thread_id_reuse),
      cmocka_unit_test(test_stalled_store_reports_loss_promptly),
      cmocka_unit_test(test_backend_reported_loss),
      cmocka_unit_test(test_loss_during_acquire),
      cmocka_unit_test(test_transient_errors_retried),
      cmocka_unit_test(test_try_fails_once_and_gives_back_behind),
      cmocka_unit_test(test_store_messages_scrubbed),
      cmocka_unit_test(test_giveback_behind_keeps_reentrancy),
      cmocka_unit_test(test_log),
      cmocka_unit_test(test_close_after_unanswered_giveback),
      cmocka_unit_test(test_expired_lock_given_back),
      cmocka_unit_test(test_expired_backlog_given_back),
      cmocka_unit_test(test_expired_lock_kept_for_release),
      cmocka_unit_test(test_expired_giveback_retried),
      cmocka_unit_test(test_unanswered_release_given_back),
      cmocka_unit_test(test_late_grant_looked_at_again),
      cmocka_unit_test(test_late_grant_waits_for_the_holder),
      cmocka_unit_test(test_late_grant_after_inline_giveback),
      cmocka_unit_test(test_late_store_wait_cut_at_deadline),
      cmocka_unit_test(test_set_log_waits_for_calls),
      cmocka_unit_test(test_renew_after_expiry_given_back),
      cmocka_unit_test(test_slow_giveback_spares_renewals),
      cmocka_unit_test(test_wait_for_look_ends_at_deadline),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
