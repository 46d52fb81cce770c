/* The lease table (dlock/lease.h) over a store of its own: what it asks the
 * store for, and when. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dlock/lease.h"
#include "internal.h"

/* The store: numbered leases, answers chosen by the test. */
typedef struct store {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int next_id;
  int grants, refreshes, revokes, gones, releases;
  int refresh_rc, revoke_rc, grant_rc;
  int64_t last_deadline;
  bool hold;    /* grant and refresh wait while set */
  int inside;   /* calls waiting on hold */
  int refreshed[8];
  char steps[16]; /* refresh_send 's' and refresh_wait 'w', in order */
  int send_rc;
} store;

typedef struct lease_id {
  int id;
} lease_id;

static void wait_hold(store *s) {
  pthread_mutex_lock(&s->mu);
  s->inside++;
  pthread_cond_broadcast(&s->cv);
  while (s->hold)
    pthread_cond_wait(&s->cv, &s->mu);
  s->inside--;
  pthread_mutex_unlock(&s->mu);
}

static int t_grant(dlock_backend_client *bc, void *priv, int64_t ttl_ms, int64_t deadline,
                   int64_t *keep_ms) {
  store *s = bc->priv;
  wait_hold(s);
  pthread_mutex_lock(&s->mu);
  s->grants++;
  if (s->grant_rc) {
    int rc = s->grant_rc;
    pthread_mutex_unlock(&s->mu);
    return dlock_seterr(rc, "test: grant refused");
  }
  ((lease_id *)priv)->id = ++s->next_id;
  s->last_deadline = deadline;
  pthread_mutex_unlock(&s->mu);
  *keep_ms = ttl_ms * 2;
  return 0;
}

static int t_refresh(dlock_backend_client *bc, void *priv, int64_t deadline, int64_t *keep_ms) {
  store *s = bc->priv;
  wait_hold(s);
  pthread_mutex_lock(&s->mu);
  s->refreshes++;
  s->refreshed[((lease_id *)priv)->id & 7]++;
  s->last_deadline = deadline;
  int rc = s->refresh_rc;
  pthread_mutex_unlock(&s->mu);
  (void)keep_ms;
  return rc ? dlock_seterr(rc, "test: refresh refused") : 0;
}

static void t_gone(dlock_backend_client *bc, dlock_lease *l) {
  store *s = bc->priv;
  (void)l;
  pthread_mutex_lock(&s->mu);
  s->gones++;
  pthread_mutex_unlock(&s->mu);
}

static int t_revoke(dlock_backend_client *bc, void *priv, int64_t deadline) {
  store *s = bc->priv;
  (void)priv;
  (void)deadline;
  s->revokes++;
  return s->revoke_rc;
}

static void t_release(dlock_backend_client *bc, void *priv) {
  store *s = bc->priv;
  (void)priv;
  s->releases++;
}

static void step(store *s, char c) {
  size_t n = strlen(s->steps);
  if (n + 1 < sizeof s->steps)
    s->steps[n] = c;
}

/* The request is its lease's id; the answer is refresh's. */
static int t_send(dlock_backend_client *bc, void *priv, void **req) {
  store *s = bc->priv;
  step(s, 's');
  if (s->send_rc)
    return dlock_seterr(s->send_rc, "test: send refused");
  *req = priv;
  return 0;
}

static int t_wait(dlock_backend_client *bc, void *priv, void *req, int64_t deadline,
                  int64_t *keep_ms) {
  store *s = bc->priv;
  step(s, 'w');
  assert_ptr_equal(req, priv);
  return t_refresh(bc, priv, deadline, keep_ms);
}

static const dlock_lease_ops ops = {
    .store = "test",
    .what = "lease",
    .priv_size = sizeof(lease_id),
    .grant = t_grant,
    .refresh = t_refresh,
    .gone = t_gone,
    .revoke = t_revoke,
};

/* A store like ZooKeeper's: a handle per lease to let go of, refreshes in
 * two steps, and every answer on a lease a confirmation. */
static const dlock_lease_ops session_ops = {
    .store = "test",
    .what = "session",
    .priv_size = sizeof(lease_id),
    .grant = t_grant,
    .refresh = t_refresh,
    .gone = t_gone,
    .release = t_release,
    .refresh_send = t_send,
    .refresh_wait = t_wait,
    .confirmed_by_use = true,
};

typedef struct fixture {
  store s;
  dlock_backend_client bc;
  dlock_leases *t;
} fixture;

static int setup_with(void **state, const dlock_lease_ops *o) {
  fixture *f = calloc(1, sizeof *f);
  pthread_mutex_init(&f->s.mu, NULL);
  pthread_cond_init(&f->s.cv, NULL);
  f->bc.priv = &f->s;
  f->bc.timeout_ms = 5000;
  assert_int_equal(dlock_leases_new(&f->bc, o, &f->t), 0);
  *state = f;
  return 0;
}

static int setup(void **state) { return setup_with(state, &ops); }

static int setup_sessions(void **state) { return setup_with(state, &session_ops); }

static int teardown(void **state) {
  fixture *f = *state;
  dlock_leases_free(f->t);
  pthread_mutex_destroy(&f->s.mu);
  pthread_cond_destroy(&f->s.cv);
  free(f);
  return 0;
}

static int id_of(const dlock_lease *l) { return ((const lease_id *)dlock_lease_priv(l))->id; }

static void one_lease_per_ttl(void **state) {
  fixture *f = *state;
  dlock_lease *a, *b, *c;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &a), 0);
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &b), 0);
  assert_int_equal(dlock_lease_get(f->t, 30000, -1, &c), 0);
  assert_ptr_equal(a, b);
  assert_ptr_not_equal(a, c);
  assert_int_equal(f->s.grants, 2);
  assert_int_equal(f->s.refreshes, 0); /* both were fresh */
  assert_int_equal(dlock_lease_ttl_ms(a), 15000);
  assert_int_equal(dlock_lease_keep_ms(f->t, a), 30000);
  /* The grant's deadline is the request timeout when the caller has none. */
  int64_t now = dlock_backend_now_ns();
  assert_true(f->s.last_deadline > now && f->s.last_deadline <= now + 5000 * INT64_C(1000000));
  uint64_t g, r;
  dlock_leases_counts(f->t, &g, &r);
  assert_int_equal(g, 2);
  assert_int_equal(r, 0);
  dlock_lease_put(f->t, a);
  dlock_lease_put(f->t, b);
  dlock_lease_put(f->t, c);
}

typedef struct getter {
  fixture *f;
  int64_t ttl_ms;
  dlock_lease *got;
  int rc;
} getter;

static void *get_main(void *arg) {
  getter *g = arg;
  g->rc = dlock_lease_get(g->f->t, g->ttl_ms, -1, &g->got);
  return NULL;
}

/* Whoever comes while the grant is on its way waits for it: one grant. */
static void concurrent_gets_share_the_grant(void **state) {
  fixture *f = *state;
  f->s.hold = true;
  getter g[3];
  pthread_t th[3];
  g[0] = (getter){f, 15000, NULL, 1};
  pthread_create(&th[0], NULL, get_main, &g[0]);
  pthread_mutex_lock(&f->s.mu);
  while (f->s.inside < 1)
    pthread_cond_wait(&f->s.cv, &f->s.mu);
  pthread_mutex_unlock(&f->s.mu);
  for (int i = 1; i < 3; i++) {
    g[i] = (getter){f, 15000, NULL, 1};
    pthread_create(&th[i], NULL, get_main, &g[i]);
  }
  pthread_mutex_lock(&f->s.mu);
  f->s.hold = false;
  pthread_cond_broadcast(&f->s.cv);
  pthread_mutex_unlock(&f->s.mu);
  for (int i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(g[i].rc, 0);
    assert_ptr_equal(g[i].got, g[0].got);
  }
  assert_int_equal(f->s.grants, 1);
  for (int i = 0; i < 3; i++)
    dlock_lease_put(f->t, g[i].got);
}

typedef struct refresher {
  fixture *f;
  dlock_lease *l;
  int64_t since;
  int rc;
} refresher;

static void *refresh_main(void *arg) {
  refresher *r = arg;
  r->rc = dlock_lease_refresh(r->f->t, r->l, r->since, -1);
  return NULL;
}

/* A refresh in flight serves everyone whose last confirmation is older
 * than its send time; one who needs a newer one sends its own. */
static void refresh_is_shared(void **state) {
  fixture *f = *state;
  dlock_lease *l;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &l), 0);
  int64_t granted = dlock_lease_fresh_ns(f->t, l);
  /* Already confirmed at or after SINCE: nothing sent. */
  assert_int_equal(dlock_lease_refresh(f->t, l, granted, -1), 0);
  assert_int_equal(f->s.refreshes, 0);

  f->s.hold = true;
  refresher a = {f, l, granted + 1, 1};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, refresh_main, &a);
  pthread_mutex_lock(&f->s.mu);
  while (f->s.inside < 1)
    pthread_cond_wait(&f->s.cv, &f->s.mu);
  pthread_mutex_unlock(&f->s.mu);
  refresher b = {f, l, granted + 1, 1};
  pthread_create(&tb, NULL, refresh_main, &b);
  pthread_mutex_lock(&f->s.mu);
  f->s.hold = false;
  pthread_cond_broadcast(&f->s.cv);
  pthread_mutex_unlock(&f->s.mu);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(a.rc, 0);
  assert_int_equal(b.rc, 0);
  assert_int_equal(f->s.refreshes, 1);
  int64_t fresh = dlock_lease_fresh_ns(f->t, l);
  assert_true(fresh > granted);
  /* Newer than the last one: sent. */
  assert_int_equal(dlock_lease_refresh(f->t, l, fresh + 1, -1), 0);
  assert_int_equal(f->s.refreshes, 2);
  dlock_lease_put(f->t, l);
}

/* A lease a third of its ttl old is confirmed again before it is handed
 * out, so a lock taken on it starts with two thirds of its ttl at least. */
static void get_refreshes_a_stale_lease(void **state) {
  fixture *f = *state;
  dlock_lease *l, *m;
  assert_int_equal(dlock_lease_get(f->t, 3, -1, &l), 0);
  int64_t fresh = dlock_lease_fresh_ns(f->t, l);
  while (dlock_backend_now_ns() - fresh <= 1000000)
    ; /* a third of 3 ms */
  assert_int_equal(dlock_lease_get(f->t, 3, -1, &m), 0);
  assert_ptr_equal(l, m);
  assert_int_equal(f->s.refreshes, 1);
  assert_true(dlock_lease_fresh_ns(f->t, l) > fresh);
  dlock_lease_put(f->t, l);
  dlock_lease_put(f->t, m);
}

/* A lease the store no longer has: its locks are told once, and the next
 * acquisition gets a new one. */
static void gone_once_then_a_new_lease(void **state) {
  fixture *f = *state;
  dlock_lease *l, *n;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &l), 0);
  f->s.refresh_rc = DLOCK_ELOST;
  int64_t fresh = dlock_lease_fresh_ns(f->t, l);
  assert_int_equal(dlock_lease_refresh(f->t, l, fresh + 1, -1), DLOCK_ELOST);
  assert_true(dlock_lease_dead(f->t, l));
  assert_int_equal(f->s.gones, 1);
  dlock_lease_gone(f->t, l);
  assert_int_equal(f->s.gones, 1);
  /* A refresh of a dead lease asks nothing. */
  assert_int_equal(dlock_lease_refresh(f->t, l, fresh + 1, -1), DLOCK_ELOST);
  assert_int_equal(f->s.refreshes, 1);
  f->s.refresh_rc = 0;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &n), 0);
  assert_ptr_not_equal(n, l);
  assert_int_equal(f->s.grants, 2);
  assert_int_equal(id_of(n), 2);
  dlock_lease_put(f->t, l); /* frees the dead one */
  dlock_lease_put(f->t, n);
}

/* A transient failure is not loss. */
static void transient_failure_keeps_the_lease(void **state) {
  fixture *f = *state;
  dlock_lease *l;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &l), 0);
  f->s.refresh_rc = DLOCK_ECONN;
  int64_t fresh = dlock_lease_fresh_ns(f->t, l);
  assert_int_equal(dlock_lease_refresh(f->t, l, fresh + 1, -1), DLOCK_ECONN);
  assert_false(dlock_lease_dead(f->t, l));
  assert_int_equal(f->s.gones, 0);
  assert_int_equal(dlock_lease_fresh_ns(f->t, l), fresh);
  dlock_lease_put(f->t, l);
}

/* What a backend keeps per lock for dlock_lease_renew. */
typedef struct held {
  dlock_lease *lease;
  int64_t confirmed_ns;
} held;

static dlock_lease *held_lease(dlock_backend_lock *bl, int64_t *confirmed_ns) {
  held *h = bl->priv;
  *confirmed_ns = h->confirmed_ns;
  return h->lease;
}

/* renew_many's keepalives: one per lease among the pending locks, by the
 * earliest deadline of its locks, and none where the oldest confirmation
 * among them is already covered. */
static void renew_once_per_lease(void **state) {
  fixture *f = *state;
  dlock_lease *a, *b;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &a), 0);
  assert_int_equal(dlock_lease_get(f->t, 30000, -1, &b), 0);
  int64_t fa = dlock_lease_fresh_ns(f->t, a), fb = dlock_lease_fresh_ns(f->t, b);
  int64_t now = dlock_backend_now_ns(), soon = now + 2000000000, later = now + 3000000000;
  held h[5] = {{a, fa - 5}, {b, fb}, {a, fa - 5}, {b, fb}, {b, fb}};
  dlock_backend_lock bl[5];
  dlock_backend_lock *bls[5];
  int rcs[5];
  for (int i = 0; i < 5; i++) {
    bl[i] = (dlock_backend_lock){.priv = &h[i], .sent_ns = -1};
    bls[i] = &bl[i];
    rcs[i] = DLOCK_LEASE_PENDING;
  }
  bl[0].io_deadline_ns = later;
  bl[2].io_deadline_ns = soon;
  rcs[3] = DLOCK_ELOST; /* not pending: left alone */
  assert_int_equal(dlock_lease_renew(f->t, bls, 5, rcs, held_lease), 0);
  /* a: its locks' oldest confirmation (fa - 5) is covered by the grant at
   * fa, so nothing is sent for it; b's locks need one newer than fb. */
  assert_int_equal(f->s.refreshes, 1);
  assert_int_equal(f->s.refreshed[id_of(a) & 7], 0);
  assert_int_equal(f->s.refreshed[id_of(b) & 7], 1);
  int want[5] = {0, 0, 0, DLOCK_ELOST, 0};
  for (int i = 0; i < 5; i++)
    assert_int_equal(rcs[i], want[i]);
  assert_int_equal(bl[0].sent_ns, fa);
  assert_int_equal(bl[2].sent_ns, fa);
  assert_true(bl[1].sent_ns > fb);
  assert_int_equal(bl[1].sent_ns, bl[4].sent_ns);
  assert_int_equal(bl[3].sent_ns, -1);
  /* No deadline among b's locks: the request timeout bounds it. */
  int64_t t1 = dlock_backend_now_ns();
  assert_true(f->s.last_deadline > t1 && f->s.last_deadline <= t1 + 5000 * INT64_C(1000000));

  /* Every lock confirmed by its lease's last confirmation: one request per
   * lease, by the earliest deadline among its locks. */
  for (int i = 0; i < 5; i++) {
    h[i].confirmed_ns = bl[i].sent_ns;
    rcs[i] = DLOCK_LEASE_PENDING;
  }
  rcs[1] = rcs[3] = rcs[4] = 0;
  assert_int_equal(dlock_lease_renew(f->t, bls, 5, rcs, held_lease), 0);
  assert_int_equal(f->s.refreshes, 2);
  assert_int_equal(f->s.refreshed[id_of(a) & 7], 1);
  assert_int_equal(f->s.last_deadline, soon);
  /* A failed refresh is every one of its locks' answer. */
  f->s.refresh_rc = DLOCK_ECONN;
  for (int i = 0; i < 5; i++) {
    h[i].confirmed_ns = dlock_lease_fresh_ns(f->t, h[i].lease);
    rcs[i] = DLOCK_LEASE_PENDING;
  }
  assert_int_equal(dlock_lease_renew(f->t, bls, 5, rcs, held_lease), 0);
  assert_int_equal(f->s.refreshes, 4);
  for (int i = 0; i < 5; i++)
    assert_int_equal(rcs[i], DLOCK_ECONN);
  dlock_lease_put(f->t, a);
  dlock_lease_put(f->t, b);
}

static bool id_is(const void *priv, void *ud) {
  return ((const lease_id *)priv)->id == *(int *)ud;
}

static void any_sees_only_live_leases(void **state) {
  fixture *f = *state;
  dlock_lease *l;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &l), 0);
  int id = id_of(l), other = id + 1;
  assert_true(dlock_leases_any(f->t, id_is, &id));
  assert_false(dlock_leases_any(f->t, id_is, &other));
  dlock_lease_gone(f->t, l);
  assert_false(dlock_leases_any(f->t, id_is, &id));
  dlock_lease_put(f->t, l);
}

/* Closing revokes what the store still has, and stops trying once the
 * store is unreachable. */
static void free_revokes_live_leases(void **state) {
  fixture *f = *state;
  dlock_lease *l[3];
  for (int i = 0; i < 3; i++)
    assert_int_equal(dlock_lease_get(f->t, 1000 * (i + 1), -1, &l[i]), 0);
  dlock_lease_gone(f->t, l[0]);
  dlock_leases_free(f->t); /* held references too */
  assert_int_equal(f->s.revokes, 2);
  assert_int_equal(dlock_leases_new(&f->bc, &ops, &f->t), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(dlock_lease_get(f->t, 1000 * (i + 1), -1, &l[i]), 0);
  f->s.revoke_rc = DLOCK_ECONN;
  dlock_leases_free(f->t);
  assert_int_equal(f->s.revokes, 3);
  assert_int_equal(dlock_leases_new(&f->bc, &ops, &f->t), 0);
}

/* A grant the store refused leaves nothing behind: the next acquisition
 * asks again. */
static void failed_grant_is_forgotten(void **state) {
  fixture *f = *state;
  dlock_lease *l = NULL;
  f->s.grant_rc = DLOCK_ECONN;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &l), DLOCK_ECONN);
  assert_null(l);
  int one = 1;
  assert_false(dlock_leases_any(f->t, id_is, &one));
  uint64_t g, r;
  dlock_leases_counts(f->t, &g, &r);
  assert_int_equal(g, 1); /* asked for once, and kept nothing */
  f->s.grant_rc = 0;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &l), 0);
  assert_int_equal(f->s.grants, 2);
  assert_false(dlock_lease_dead(f->t, l));
  dlock_lease_put(f->t, l);
}

/* A lease's own resources go once nothing uses it: after the last
 * reference to a gone one, or at the end, and never for a failed grant. */
static void release_once_out_of_use(void **state) {
  fixture *f = *state;
  dlock_lease *l, *m, *n;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &l), 0);
  dlock_lease_hold(f->t, l);
  dlock_lease_gone(f->t, l);
  dlock_lease_put(f->t, l);
  assert_int_equal(f->s.releases, 0); /* still referenced */
  dlock_lease_put(f->t, l);
  assert_int_equal(f->s.releases, 1);
  /* Listed and unreferenced: kept for the next lock. */
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &m), 0);
  dlock_lease_put(f->t, m);
  assert_int_equal(f->s.releases, 1);
  f->s.grant_rc = DLOCK_ECONN;
  assert_int_equal(dlock_lease_get(f->t, 30000, -1, &n), DLOCK_ECONN);
  assert_int_equal(f->s.releases, 1);
  f->s.grant_rc = 0;
  assert_int_equal(dlock_lease_get(f->t, 30000, -1, &n), 0);
  dlock_leases_free(f->t); /* referenced or not */
  assert_int_equal(f->s.releases, 3);
  assert_int_equal(f->s.revokes, 0);
  assert_int_equal(dlock_leases_new(&f->bc, &session_ops, &f->t), 0);
}

/* On a store whose every answer keeps a lease alive, the backend's answers
 * move the confirmation, a stale lease is handed out as it is, and a
 * refresh sent before a later answer leaves that answer's time. */
static void answers_confirm(void **state) {
  fixture *f = *state;
  dlock_lease *l, *m;
  assert_int_equal(dlock_lease_get(f->t, 3, -1, &l), 0);
  int64_t fresh = dlock_lease_fresh_ns(f->t, l);
  dlock_lease_confirm(f->t, l, fresh - 1);
  assert_int_equal(dlock_lease_fresh_ns(f->t, l), fresh);
  while (dlock_backend_now_ns() - fresh <= 1000000)
    ; /* a third of 3 ms */
  assert_int_equal(dlock_lease_get(f->t, 3, -1, &m), 0);
  assert_ptr_equal(l, m);
  assert_int_equal(f->s.refreshes, 0);
  dlock_lease_put(f->t, m);

  f->s.hold = true;
  refresher r = {f, l, dlock_backend_now_ns(), 1};
  pthread_t th;
  pthread_create(&th, NULL, refresh_main, &r);
  pthread_mutex_lock(&f->s.mu);
  while (f->s.inside < 1)
    pthread_cond_wait(&f->s.cv, &f->s.mu);
  pthread_mutex_unlock(&f->s.mu);
  int64_t answered = dlock_backend_now_ns();
  dlock_lease_confirm(f->t, l, answered);
  pthread_mutex_lock(&f->s.mu);
  f->s.hold = false;
  pthread_cond_broadcast(&f->s.cv);
  pthread_mutex_unlock(&f->s.mu);
  pthread_join(th, NULL);
  assert_int_equal(r.rc, 0);
  assert_int_equal(dlock_lease_fresh_ns(f->t, l), answered);

  dlock_lease_gone(f->t, l);
  dlock_lease_confirm(f->t, l, answered + 1);
  assert_int_equal(dlock_lease_fresh_ns(f->t, l), answered);
  dlock_lease_put(f->t, l);
}

/* With refreshes in two steps, every lease's request is out before any is
 * waited for; one refused at sending is that lease's answer alone. */
static void renew_sends_all_first(void **state) {
  fixture *f = *state;
  dlock_lease *a, *b, *c;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &a), 0);
  assert_int_equal(dlock_lease_get(f->t, 30000, -1, &b), 0);
  held h[3] = {{a, dlock_lease_fresh_ns(f->t, a)}, {b, dlock_lease_fresh_ns(f->t, b)},
               {a, dlock_lease_fresh_ns(f->t, a)}};
  dlock_backend_lock bl[3];
  dlock_backend_lock *bls[3];
  int rcs[3];
  for (int i = 0; i < 3; i++) {
    bl[i] = (dlock_backend_lock){.priv = &h[i]};
    bls[i] = &bl[i];
    rcs[i] = DLOCK_LEASE_PENDING;
  }
  int64_t soon = dlock_backend_now_ns() + 2000000000;
  bl[2].io_deadline_ns = soon;
  assert_int_equal(dlock_lease_renew(f->t, bls, 3, rcs, held_lease), 0);
  assert_string_equal(f->s.steps, "ssww");
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rcs[i], 0);
    assert_true(bl[i].sent_ns > h[i].confirmed_ns);
  }
  assert_int_equal(f->s.refreshes, 2);
  uint64_t g, r;
  dlock_leases_counts(f->t, &g, &r);
  assert_int_equal(r, 2);
  /* b's wait came last, bounded by the request timeout; a's by its lock's
   * deadline. */
  int64_t t1 = dlock_backend_now_ns();
  assert_true(f->s.last_deadline > t1 && f->s.last_deadline <= t1 + 5000 * INT64_C(1000000));

  memset(f->s.steps, 0, sizeof f->s.steps);
  f->s.send_rc = DLOCK_ELOST;
  for (int i = 0; i < 3; i++) {
    h[i].confirmed_ns = bl[i].sent_ns;
    rcs[i] = DLOCK_LEASE_PENDING;
  }
  rcs[1] = 0;
  assert_int_equal(dlock_lease_renew(f->t, bls, 3, rcs, held_lease), 0);
  assert_string_equal(f->s.steps, "s");
  assert_int_equal(rcs[0], DLOCK_ELOST);
  assert_int_equal(rcs[1], 0);
  assert_int_equal(rcs[2], DLOCK_ELOST);
  assert_true(dlock_lease_dead(f->t, a));
  assert_false(dlock_lease_dead(f->t, b));
  assert_int_equal(f->s.gones, 1);
  f->s.send_rc = 0;
  assert_int_equal(dlock_lease_get(f->t, 15000, -1, &c), 0);
  assert_ptr_not_equal(c, a);
  dlock_lease_put(f->t, a);
  assert_int_equal(f->s.releases, 1);
  dlock_lease_put(f->t, b);
  dlock_lease_put(f->t, c);
}

static void bad_arguments(void **state) {
  fixture *f = *state;
  dlock_leases *t = NULL;
  assert_int_equal(dlock_leases_new(NULL, &ops, &t), DLOCK_EINVAL);
  dlock_lease_ops none = {.store = "x"};
  assert_int_equal(dlock_leases_new(&f->bc, &none, &t), DLOCK_EINVAL);
  dlock_lease_ops half = ops;
  half.refresh_send = t_send;
  assert_int_equal(dlock_leases_new(&f->bc, &half, &t), DLOCK_EINVAL);
  assert_null(t);
  dlock_leases_free(NULL);
  dlock_lease *l = NULL;
  assert_int_equal(dlock_lease_get(f->t, 0, -1, &l), DLOCK_EINVAL);
  assert_int_equal(dlock_lease_get(f->t, -5, -1, &l), DLOCK_EINVAL);
  assert_int_equal(dlock_lease_get(NULL, 1000, -1, &l), DLOCK_EINVAL);
  assert_int_equal(dlock_lease_get(f->t, 1000, -1, NULL), DLOCK_EINVAL);
  assert_null(l);
  assert_int_equal(dlock_lease_refresh(f->t, NULL, 0, -1), DLOCK_EINVAL);
  assert_int_equal(dlock_lease_renew(f->t, NULL, 1, NULL, NULL), DLOCK_EINVAL);
  assert_int_equal(dlock_lease_renew(f->t, NULL, 0, NULL, NULL), 0);
  dlock_lease_put(f->t, NULL);
  dlock_lease_hold(NULL, NULL);
  dlock_lease_gone(f->t, NULL);
  dlock_lease_confirm(NULL, NULL, 0);
  assert_true(dlock_lease_dead(f->t, NULL));
  assert_null(dlock_lease_priv(NULL));
  assert_false(dlock_leases_any(f->t, NULL, NULL));
  dlock_leases_counts(f->t, NULL, NULL);
  assert_int_equal(dlock_backend_cond_init(NULL), DLOCK_EINVAL);
  assert_int_equal(dlock_backend_cond_wait(NULL, NULL, -1), DLOCK_EINVAL);
  assert_int_equal(f->s.grants, 0);
}

/* ---- dlock_lease_check ---- */

struct checked {
  int calls;
  size_t sizes[8];
  int64_t deadlines[8];
  const char *seen[16];
  size_t nseen;
  int fail_call; /* this call (1-based) fails as a whole */
};

static int check_some(void *ud, dlock_backend_lock *const *batch, size_t m, int64_t deadline,
                      int *brcs) {
  struct checked *c = ud;
  int call = ++c->calls;
  c->sizes[call - 1] = m;
  c->deadlines[call - 1] = deadline;
  if (call == c->fail_call)
    return DLOCK_ECONN;
  for (size_t k = 0; k < m; k++) {
    c->seen[c->nseen++] = batch[k]->key;
    brcs[k] = batch[k]->key[0] == 'x' ? DLOCK_ELOST : 0;
  }
  return 0;
}

/* Only the locks still at 0 are checked, in batches of at most the size
 * given, each by the earliest deadline among its locks; a batch that
 * fails as a whole fails its locks only. */
static void check_in_batches(void **state) {
  (void)state;
  const char *keys[] = {"a", "b", "x", "c", "d", "e", "f"};
  int64_t dls[] = {0, 50, 40, 0, 0, 0, 0};
  dlock_backend_lock bl[7], *bls[7];
  int rcs[7] = {0, 0, 0, DLOCK_ECONN, 0, 0, 0};
  for (int i = 0; i < 7; i++) {
    memset(&bl[i], 0, sizeof bl[i]);
    bl[i].key = keys[i];
    bl[i].keylen = 1;
    bl[i].io_deadline_ns = dls[i];
    bls[i] = &bl[i];
  }
  struct checked c = {.fail_call = 3};
  assert_int_equal(dlock_lease_check(bls, 7, rcs, 2, check_some, &c), 0);
  assert_int_equal(c.calls, 3);
  assert_int_equal(c.sizes[0], 2); /* a b */
  assert_int_equal(c.deadlines[0], 50);
  assert_int_equal(c.sizes[1], 2); /* x d: c is not checked */
  assert_int_equal(c.deadlines[1], 40);
  assert_int_equal(c.sizes[2], 2); /* e f, which fail together */
  assert_int_equal(c.deadlines[2], -1);
  assert_int_equal(c.nseen, 4);
  assert_string_equal(c.seen[2], "x");
  assert_string_equal(c.seen[3], "d");
  int want[7] = {0, 0, DLOCK_ELOST, DLOCK_ECONN, 0, DLOCK_ECONN, DLOCK_ECONN};
  for (int i = 0; i < 7; i++)
    assert_int_equal(rcs[i], want[i]);
  /* Nothing to check: no call. */
  struct checked none = {0};
  assert_int_equal(dlock_lease_check(bls, 0, rcs, 4, check_some, &none), 0);
  assert_int_equal(none.calls, 0);
  assert_int_equal(dlock_lease_check(bls, 7, rcs, 0, check_some, &none), DLOCK_EINVAL);
  assert_int_equal(dlock_lease_check(bls, 7, rcs, 4, NULL, &none), DLOCK_EINVAL);
  assert_int_equal(dlock_lease_check(NULL, 7, rcs, 4, check_some, &none), DLOCK_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(one_lease_per_ttl, setup, teardown),
      cmocka_unit_test_setup_teardown(concurrent_gets_share_the_grant, setup, teardown),
      cmocka_unit_test_setup_teardown(refresh_is_shared, setup, teardown),
      cmocka_unit_test_setup_teardown(get_refreshes_a_stale_lease, setup, teardown),
      cmocka_unit_test_setup_teardown(gone_once_then_a_new_lease, setup, teardown),
      cmocka_unit_test_setup_teardown(transient_failure_keeps_the_lease, setup, teardown),
      cmocka_unit_test_setup_teardown(renew_once_per_lease, setup, teardown),
      cmocka_unit_test_setup_teardown(any_sees_only_live_leases, setup, teardown),
      cmocka_unit_test_setup_teardown(free_revokes_live_leases, setup, teardown),
      cmocka_unit_test_setup_teardown(failed_grant_is_forgotten, setup, teardown),
      cmocka_unit_test_setup_teardown(release_once_out_of_use, setup_sessions, teardown),
      cmocka_unit_test_setup_teardown(answers_confirm, setup_sessions, teardown),
      cmocka_unit_test_setup_teardown(renew_sends_all_first, setup_sessions, teardown),
      cmocka_unit_test_setup_teardown(bad_arguments, setup, teardown),
      cmocka_unit_test(check_in_batches),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
