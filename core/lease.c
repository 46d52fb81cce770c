/* The lease table (dlock/lease.h): one lease per lock ttl in use, granted
 * once, refreshed by one request at a time, gone for all its locks at once. */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlock/lease.h"
#include "internal.h"

struct dlock_lease {
  struct dlock_lease *next; /* every lease of the table, until freed */
  int64_t ttl_ms;           /* the lock ttl it serves */
  int64_t keep_ms;          /* what the store keeps it for */
  int64_t fresh_ns;         /* send time of the last grant/refresh it confirmed */
  int refs;                 /* locks, queued acquisitions and requests using it */
  bool granted;
  bool busy;                /* a grant or refresh is in flight */
  bool dead;                /* gone at the store, or never granted */
  bool listed;              /* dlock_lease_get hands it out */
  max_align_t priv[];       /* ops->priv_size bytes */
};

struct dlock_leases {
  dlock_backend_client *bc;
  const dlock_lease_ops *ops;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* a lease changed state */
  dlock_lease *all;
  uint64_t grants, refreshes;
};

int dlock_leases_new(dlock_backend_client *bc, const dlock_lease_ops *ops, dlock_leases **out) {
  if (!bc || !ops || !ops->store || !ops->what || !ops->grant || !ops->refresh || !out ||
      !ops->refresh_send != !ops->refresh_wait)
    return dlock_seterr(DLOCK_EINVAL, "lease table: a client, the store's names, grant and "
                        "refresh are needed, and refresh_send only with refresh_wait");
  dlock_leases *t = calloc(1, sizeof *t);
  if (!t || dlock__cond_init(&t->cv) != 0) {
    free(t);
    return dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", ops->store);
  }
  pthread_mutex_init(&t->mu, NULL);
  t->bc = bc;
  t->ops = ops;
  *out = t;
  return 0;
}

/* Let go of L, which nothing references or lists any more, without
 * t->mu. */
static void discard(dlock_leases *t, dlock_lease *l) {
  if (l->granted && t->ops->release)
    t->ops->release(t->bc, l->priv);
  free(l);
}

void dlock_leases_free(dlock_leases *t) {
  if (!t)
    return;
  bool reachable = t->ops->revoke != NULL;
  while (t->all) {
    dlock_lease *l = t->all;
    t->all = l->next;
    if (reachable && l->granted && !l->dead) {
      int64_t dl = dlock__now_ns() + t->bc->timeout_ms * 1000000;
      reachable = t->ops->revoke(t->bc, l->priv, dl) != DLOCK_ECONN;
    }
    discard(t, l);
  }
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
  free(t);
}

/* A request's deadline: the caller's, or the request timeout from now. */
/* Wait on t->cv until DEADLINE (-1 = no limit): false once it has passed. */
static bool wait_until(dlock_leases *t, int64_t deadline) {
  return dlock_backend_cond_wait(&t->cv, &t->mu, deadline) == 0;
}

static void unlink_lease(dlock_leases *t, dlock_lease *l) {
  for (dlock_lease **p = &t->all; *p; p = &(*p)->next)
    if (*p == l) {
      *p = l->next;
      return;
    }
}

/* Under t->mu: give back a reference.  True when it was the last one of
 * a lease out of use, which the caller is then to discard once t->mu is
 * released. */
static bool put_locked(dlock_leases *t, dlock_lease *l) {
  if (--l->refs > 0 || l->listed)
    return false;
  unlink_lease(t, l);
  return true;
}

/* Under t->mu: mark L gone; true when it was not already, and the caller
 * is to call ops->gone once t->mu is released.  A reference keeps L alive
 * until then. */
static bool mark_gone(dlock_leases *t, dlock_lease *l) {
  if (l->dead)
    return false;
  l->dead = true;
  l->listed = false;
  l->refs++;
  pthread_cond_broadcast(&t->cv);
  return true;
}

static void after_gone(dlock_leases *t, dlock_lease *l) {
  if (t->ops->gone)
    t->ops->gone(t->bc, l);
  dlock_lease_put(t, l);
}

void dlock_lease_gone(dlock_leases *t, dlock_lease *l) {
  if (!t || !l)
    return;
  pthread_mutex_lock(&t->mu);
  bool now = mark_gone(t, l);
  pthread_mutex_unlock(&t->mu);
  if (now)
    after_gone(t, l);
}

/* Under t->mu, which it drops while it waits for another caller's
 * refresh of L (until DEADLINE): L's refresh for a caller who needs a
 * confirmation sent at or after SINCE.  1 when the request is this
 * caller's to send (L busy, with a reference for it, and *KEEP what the
 * store said last); else the answer: 0, DLOCK_ELOST or DLOCK_ETIMEDOUT. */
static int claim(dlock_leases *t, dlock_lease *l, int64_t since, int64_t deadline,
                 int64_t *keep) {
  const dlock_lease_ops *ops = t->ops;
  for (;;) {
    if (l->dead)
      return dlock_seterr(DLOCK_ELOST, "%s: the %s is gone", ops->store, ops->what);
    if (l->fresh_ns >= since)
      return 0;
    if (!l->busy)
      break;
    if (!wait_until(t, deadline))
      return dlock_seterr(DLOCK_ETIMEDOUT, "%s: timed out waiting for a %s refresh", ops->store,
                          ops->what);
  }
  l->busy = true;
  l->refs++;
  t->refreshes++;
  *keep = l->keep_ms;
  return 1;
}

/* The end of the refresh of L that claim gave this caller, sent at SENT:
 * RC its answer, KEEP what the store said.  A confirmation reported
 * meanwhile (dlock_lease_confirm) may be later than SENT. */
static void settle(dlock_leases *t, dlock_lease *l, int rc, int64_t sent, int64_t keep) {
  pthread_mutex_lock(&t->mu);
  l->busy = false;
  bool gone = rc == DLOCK_ELOST && mark_gone(t, l);
  if (rc == 0) {
    if (sent > l->fresh_ns)
      l->fresh_ns = sent;
    l->keep_ms = keep;
  }
  pthread_cond_broadcast(&t->cv);
  bool last = put_locked(t, l);
  pthread_mutex_unlock(&t->mu);
  if (gone)
    after_gone(t, l);
  if (last)
    discard(t, l);
}

int dlock_lease_refresh(dlock_leases *t, dlock_lease *l, int64_t since, int64_t deadline) {
  if (!t || !l)
    return dlock_seterr(DLOCK_EINVAL, "lease table: refresh needs a table and a lease");
  int64_t keep;
  pthread_mutex_lock(&t->mu);
  int rc = claim(t, l, since, deadline, &keep);
  pthread_mutex_unlock(&t->mu);
  if (rc != 1)
    return rc;
  int64_t sent = dlock__now_ns();
  rc = t->ops->refresh(t->bc, l->priv, dlock_backend_deadline(t->bc, deadline), &keep);
  settle(t, l, rc, sent, keep);
  return rc;
}

void dlock_lease_confirm(dlock_leases *t, dlock_lease *l, int64_t sent_ns) {
  if (!t || !l)
    return;
  pthread_mutex_lock(&t->mu);
  if (!l->dead && sent_ns > l->fresh_ns)
    l->fresh_ns = sent_ns;
  pthread_mutex_unlock(&t->mu);
}

/* Under t->mu: the listed lease for TTL_MS, or a new one this caller is to
 * grant (*GRANT set), with a reference either way.  NULL when out of
 * memory. */
static dlock_lease *find_or_add(dlock_leases *t, int64_t ttl_ms, bool *grant) {
  dlock_lease *l = t->all;
  while (l && !(l->listed && l->ttl_ms == ttl_ms))
    l = l->next;
  *grant = false;
  if (!l) {
    if (!(l = calloc(1, sizeof *l + t->ops->priv_size)))
      return NULL;
    l->ttl_ms = ttl_ms;
    l->busy = true;
    l->listed = true;
    l->next = t->all;
    t->all = l;
    t->grants++;
    *grant = true;
  }
  l->refs++;
  return l;
}

/* Ask the store for L, which this caller added. */
static int grant(dlock_leases *t, dlock_lease *l, int64_t deadline) {
  int64_t keep = 0, sent = dlock__now_ns();
  int rc = t->ops->grant(t->bc, l->priv, l->ttl_ms, dlock_backend_deadline(t->bc, deadline), &keep);
  pthread_mutex_lock(&t->mu);
  l->busy = false;
  if (rc == 0) {
    l->granted = true;
    l->keep_ms = keep;
    l->fresh_ns = sent;
  } else {
    l->dead = true;
    l->listed = false;
  }
  pthread_cond_broadcast(&t->cv);
  bool last = rc != 0 && put_locked(t, l);
  pthread_mutex_unlock(&t->mu);
  if (last)
    discard(t, l);
  return rc;
}

int dlock_lease_get(dlock_leases *t, int64_t ttl_ms, int64_t deadline, dlock_lease **out) {
  if (!t || !out || ttl_ms <= 0)
    return dlock_seterr(DLOCK_EINVAL, "lease table: get needs a table, a ttl above 0 (got "
                        "%lld ms) and somewhere to put the lease", (long long)ttl_ms);
  const dlock_lease_ops *ops = t->ops;
  for (int attempt = 0;; attempt++) {
    bool add;
    pthread_mutex_lock(&t->mu);
    dlock_lease *l = find_or_add(t, ttl_ms, &add);
    if (!l) {
      pthread_mutex_unlock(&t->mu);
      return dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", ops->store);
    }
    if (add) {
      pthread_mutex_unlock(&t->mu);
      int rc = grant(t, l, deadline);
      if (rc == 0)
        *out = l;
      return rc;
    }
    /* Another thread's grant, until the caller's deadline only: the grant
     * ends by its own bound, but may run past a bound taken now (a re-login
     * it waits for), and a waiter must not give up on a lease being
     * granted. */
    bool waited_out = false;
    while (!l->granted && !l->dead && !waited_out)
      waited_out = !wait_until(t, deadline);
    if (waited_out || l->dead) {
      bool last = put_locked(t, l);
      pthread_mutex_unlock(&t->mu);
      if (last)
        discard(t, l);
      if (waited_out)
        return dlock_seterr(DLOCK_ETIMEDOUT, "%s: timed out waiting for a %s", ops->store,
                            ops->what);
      if (attempt >= 3)
        return dlock_seterr(DLOCK_ECONN, "%s: could not get a %s", ops->store, ops->what);
      continue;
    }
    int64_t fresh = l->fresh_ns;
    pthread_mutex_unlock(&t->mu);

    int64_t now = dlock__now_ns();
    bool young = ops->confirmed_by_use || now - fresh < ttl_ms * 1000000 / 3;
    int rc = young ? 0 : dlock_lease_refresh(t, l, now, deadline);
    if (rc == 0) {
      *out = l;
      return 0;
    }
    dlock_lease_put(t, l);
    if (rc != DLOCK_ELOST || attempt >= 3)
      return rc;
  }
}

/* One lease's refresh in dlock_lease_renew. */
struct renewal {
  dlock_lease *lease;
  int64_t since, deadline; /* the strictest among its locks; -1: no deadline */
  int rc;                  /* the answer, or 1 while the request is out */
  void *req;               /* ops->refresh_send's */
  int64_t sent, keep;
};

/* Send R's refresh, or with no refresh_send, make it and wait for it. */
static void renewal_send(dlock_leases *t, struct renewal *r) {
  if (!t->ops->refresh_send) {
    r->rc = dlock_lease_refresh(t, r->lease, r->since, r->deadline);
    return;
  }
  pthread_mutex_lock(&t->mu);
  r->rc = claim(t, r->lease, r->since, r->deadline, &r->keep);
  pthread_mutex_unlock(&t->mu);
  if (r->rc != 1)
    return;
  r->sent = dlock__now_ns();
  int rc = t->ops->refresh_send(t->bc, r->lease->priv, &r->req);
  if (rc < 0) {
    settle(t, r->lease, rc, r->sent, r->keep);
    r->rc = rc;
  }
}

int dlock_lease_renew(dlock_leases *t, dlock_backend_lock **bls, size_t n, int *rcs,
                      dlock_lease *(*lease_of)(dlock_backend_lock *bl, int64_t *confirmed_ns)) {
  if (!t || (n && (!bls || !rcs || !lease_of)))
    return dlock_seterr(DLOCK_EINVAL, "lease table: renew needs a table, locks, results and "
                        "lease_of");
  struct use {
    dlock_lease *lease; /* NULL: not pending */
    int64_t since;
    size_t renewal;     /* its lease's, in rs */
  } *uses = calloc(n ? n : 1, sizeof *uses);
  struct renewal *rs = calloc(n ? n : 1, sizeof *rs);
  if (!uses || !rs) {
    free(uses);
    free(rs);
    return dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", t->ops->store);
  }
  size_t nr = 0;
  for (size_t i = 0; i < n; i++) {
    if (rcs[i] != DLOCK_LEASE_PENDING)
      continue;
    struct use *u = &uses[i];
    u->lease = lease_of(bls[i], &u->since);
    size_t k = 0;
    while (k < nr && rs[k].lease != u->lease)
      k++;
    if (k == nr)
      rs[nr++] = (struct renewal){.lease = u->lease, .since = INT64_MAX, .deadline = INT64_MAX};
    u->renewal = k;
    struct renewal *r = &rs[k];
    if (u->since < r->since)
      r->since = u->since;
    int64_t d = bls[i]->io_deadline_ns;
    if (d && d < r->deadline)
      r->deadline = d;
  }
  for (size_t k = 0; k < nr; k++) {
    rs[k].since++;
    if (rs[k].deadline == INT64_MAX)
      rs[k].deadline = -1;
    renewal_send(t, &rs[k]);
  }
  for (size_t k = 0; k < nr; k++) {
    struct renewal *r = &rs[k];
    if (r->rc != 1)
      continue;
    r->rc = t->ops->refresh_wait(t->bc, r->lease->priv, r->req,
                                 dlock_backend_deadline(t->bc, r->deadline), &r->keep);
    settle(t, r->lease, r->rc, r->sent, r->keep);
  }
  for (size_t i = 0; i < n; i++)
    if (uses[i].lease) {
      rcs[i] = rs[uses[i].renewal].rc;
      bls[i]->sent_ns = dlock_lease_fresh_ns(t, uses[i].lease);
    }
  free(uses);
  free(rs);
  return 0;
}

void dlock_lease_hold(dlock_leases *t, dlock_lease *l) {
  if (!t || !l)
    return;
  pthread_mutex_lock(&t->mu);
  l->refs++;
  pthread_mutex_unlock(&t->mu);
}

void dlock_lease_put(dlock_leases *t, dlock_lease *l) {
  if (!t || !l)
    return;
  pthread_mutex_lock(&t->mu);
  bool last = put_locked(t, l);
  pthread_mutex_unlock(&t->mu);
  if (last)
    discard(t, l);
}

void *dlock_lease_priv(const dlock_lease *l) { return l ? (void *)l->priv : NULL; }

int64_t dlock_lease_ttl_ms(const dlock_lease *l) { return l ? l->ttl_ms : 0; }

int64_t dlock_lease_keep_ms(dlock_leases *t, const dlock_lease *l) {
  if (!t || !l)
    return 0;
  pthread_mutex_lock(&t->mu);
  int64_t v = l->keep_ms;
  pthread_mutex_unlock(&t->mu);
  return v;
}

int64_t dlock_lease_fresh_ns(dlock_leases *t, const dlock_lease *l) {
  if (!t || !l)
    return 0;
  pthread_mutex_lock(&t->mu);
  int64_t v = l->fresh_ns;
  pthread_mutex_unlock(&t->mu);
  return v;
}

bool dlock_lease_dead(dlock_leases *t, const dlock_lease *l) {
  if (!t || !l)
    return true;
  pthread_mutex_lock(&t->mu);
  bool v = l->dead;
  pthread_mutex_unlock(&t->mu);
  return v;
}

bool dlock_leases_any(dlock_leases *t, bool (*match)(const void *priv, void *ud), void *ud) {
  bool yes = false;
  if (!t || !match)
    return false;
  pthread_mutex_lock(&t->mu);
  for (dlock_lease *l = t->all; l && !yes; l = l->next)
    yes = l->granted && !l->dead && match(l->priv, ud);
  pthread_mutex_unlock(&t->mu);
  return yes;
}

void dlock_leases_counts(dlock_leases *t, uint64_t *grants, uint64_t *refreshes) {
  if (!t)
    return;
  pthread_mutex_lock(&t->mu);
  if (grants)
    *grants = t->grants;
  if (refreshes)
    *refreshes = t->refreshes;
  pthread_mutex_unlock(&t->mu);
}

int dlock_lease_check(dlock_backend_lock **bls, size_t n, int *rcs, size_t max,
                      dlock_lease_check_fn check, void *ud) {
  if ((n && (!bls || !rcs)) || !max || !check)
    return dlock_seterr(DLOCK_EINVAL, "dlock_lease_check: no locks, results, batch size or check");
  if (n < max)
    max = n;
  if (!max)
    return 0;
  dlock_backend_lock **batch = malloc(max * sizeof *batch);
  size_t *idx = malloc(max * sizeof *idx);
  int *brcs = malloc(max * sizeof *brcs);
  if (!batch || !idx || !brcs) {
    free(batch);
    free(idx);
    free(brcs);
    return dlock_seterr(DLOCK_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n;) {
    size_t m = 0;
    int64_t dl = INT64_MAX;
    for (; i < n && m < max; i++) {
      if (rcs[i] != 0)
        continue;
      int64_t d = bls[i]->io_deadline_ns ? bls[i]->io_deadline_ns : INT64_MAX;
      if (d < dl)
        dl = d;
      batch[m] = bls[i];
      idx[m++] = i;
    }
    if (m == 0)
      continue;
    for (size_t k = 0; k < m; k++)
      brcs[k] = DLOCK_EBACKEND; /* one CHECK left unset */
    int rc = check(ud, batch, m, dl == INT64_MAX ? -1 : dl, brcs);
    for (size_t k = 0; k < m; k++)
      rcs[idx[k]] = rc < 0 ? rc : brcs[k];
  }
  free(batch);
  free(idx);
  free(brcs);
  return 0;
}
