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
  if (!bc || !ops || !ops->store || !ops->what || !ops->grant || !ops->refresh || !out)
    return dlock_seterr(DLOCK_EINVAL, "lease table: a client, the store's names, grant and "
                        "refresh are needed");
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
    free(l);
  }
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
  free(t);
}

/* A request's deadline: the caller's, or the request timeout from now. */
static int64_t bound(const dlock_leases *t, int64_t deadline) {
  int64_t own = dlock__now_ns() + t->bc->timeout_ms * 1000000;
  return deadline < 0 || deadline > own ? own : deadline;
}

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

/* Under t->mu. */
static void put_locked(dlock_leases *t, dlock_lease *l) {
  if (--l->refs == 0 && !l->listed) {
    unlink_lease(t, l);
    free(l);
  }
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
  pthread_mutex_lock(&t->mu);
  put_locked(t, l);
  pthread_mutex_unlock(&t->mu);
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

int dlock_lease_refresh(dlock_leases *t, dlock_lease *l, int64_t since, int64_t deadline) {
  if (!t || !l)
    return dlock_seterr(DLOCK_EINVAL, "lease table: refresh needs a table and a lease");
  const dlock_lease_ops *ops = t->ops;
  pthread_mutex_lock(&t->mu);
  for (;;) {
    if (l->dead) {
      pthread_mutex_unlock(&t->mu);
      return dlock_seterr(DLOCK_ELOST, "%s: the %s is gone", ops->store, ops->what);
    }
    if (l->fresh_ns >= since) {
      pthread_mutex_unlock(&t->mu);
      return 0;
    }
    if (!l->busy)
      break;
    if (!wait_until(t, deadline)) {
      pthread_mutex_unlock(&t->mu);
      return dlock_seterr(DLOCK_ETIMEDOUT, "%s: timed out waiting for a %s refresh", ops->store,
                          ops->what);
    }
  }
  l->busy = true;
  l->refs++;
  t->refreshes++;
  int64_t keep = l->keep_ms;
  pthread_mutex_unlock(&t->mu);

  int64_t sent = dlock__now_ns();
  int rc = ops->refresh(t->bc, l->priv, bound(t, deadline), &keep);

  pthread_mutex_lock(&t->mu);
  l->busy = false;
  bool gone = rc == DLOCK_ELOST && mark_gone(t, l);
  if (rc == 0) {
    l->fresh_ns = sent;
    l->keep_ms = keep;
  }
  pthread_cond_broadcast(&t->cv);
  put_locked(t, l);
  pthread_mutex_unlock(&t->mu);
  if (gone)
    after_gone(t, l);
  return rc;
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
  int rc = t->ops->grant(t->bc, l->priv, l->ttl_ms, bound(t, deadline), &keep);
  pthread_mutex_lock(&t->mu);
  l->busy = false;
  if (rc == 0) {
    l->granted = true;
    l->keep_ms = keep;
    l->fresh_ns = sent;
  } else {
    l->dead = true;
    l->listed = false;
    put_locked(t, l);
  }
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
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
    while (!l->granted && !l->dead) {
      if (!wait_until(t, deadline)) {
        put_locked(t, l);
        pthread_mutex_unlock(&t->mu);
        return dlock_seterr(DLOCK_ETIMEDOUT, "%s: timed out waiting for a %s", ops->store,
                            ops->what);
      }
    }
    if (l->dead) {
      put_locked(t, l);
      pthread_mutex_unlock(&t->mu);
      if (attempt >= 3)
        return dlock_seterr(DLOCK_ECONN, "%s: could not get a %s", ops->store, ops->what);
      continue;
    }
    int64_t fresh = l->fresh_ns;
    pthread_mutex_unlock(&t->mu);

    int64_t now = dlock__now_ns();
    int rc = now - fresh < ttl_ms * 1000000 / 3 ? 0 : dlock_lease_refresh(t, l, now, deadline);
    if (rc == 0) {
      *out = l;
      return 0;
    }
    dlock_lease_put(t, l);
    if (rc != DLOCK_ELOST || attempt >= 3)
      return rc;
  }
}

int dlock_lease_renew(dlock_leases *t, dlock_backend_lock **bls, size_t n, int *rcs,
                      dlock_lease *(*lease_of)(dlock_backend_lock *bl, int64_t *confirmed_ns)) {
  if (!t || (n && (!bls || !rcs || !lease_of)))
    return dlock_seterr(DLOCK_EINVAL, "lease table: renew needs a table, locks, results and "
                        "lease_of");
  struct use {
    dlock_lease *lease; /* NULL: not pending, or done */
    int64_t since;
  } *uses = calloc(n ? n : 1, sizeof *uses);
  if (!uses)
    return dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", t->ops->store);
  for (size_t i = 0; i < n; i++)
    if (rcs[i] == DLOCK_LEASE_PENDING)
      uses[i].lease = lease_of(bls[i], &uses[i].since);
  for (size_t i = 0; i < n; i++) {
    dlock_lease *l = uses[i].lease;
    if (!l)
      continue;
    int64_t since = INT64_MAX, dl = INT64_MAX;
    for (size_t j = i; j < n; j++) {
      if (uses[j].lease != l)
        continue;
      if (uses[j].since < since)
        since = uses[j].since;
      int64_t d = bls[j]->io_deadline_ns;
      if (d && d < dl)
        dl = d;
    }
    int rc = dlock_lease_refresh(t, l, since + 1, dl == INT64_MAX ? -1 : dl);
    int64_t fresh = dlock_lease_fresh_ns(t, l);
    for (size_t j = i; j < n; j++)
      if (uses[j].lease == l) {
        uses[j].lease = NULL;
        rcs[j] = rc;
        bls[j]->sent_ns = fresh;
      }
  }
  free(uses);
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
  put_locked(t, l);
  pthread_mutex_unlock(&t->mu);
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
