/* The give-back queue: what the store may still keep for the client.
 *
 * Entries are handles in the key table: an attempt whose answer never came
 * (giveback, its key reserved until it is done), a release the store left
 * unanswered on a store whose sessions keep locks (the same), a lock whose
 * validity ran out there (owed, still the caller's handle), and with
 * bc.late_ms an attempt that may yet be granted late (watch, reserving
 * its key only while a look is on its way).  One thread per client, started
 * with the first entry, gives them back with the backend's release(),
 * paced by the client's backoff.  It is not the renew thread: a give-back
 * that waits out its request timeout must never hold up a renewal. */
#include "internal.h"

/* Give-backs sent in one round at most, so that a backlog of them (a
 * thousand locks that expired together) never keeps the thread from
 * looking again at what came due meanwhile. */
#define GIVEBACKS_PER_ROUND 16

static void *giveback_main(void *arg);
static void giveback_later(dlock_client *c, struct dlock_lock *l);

int dlock__giveback_start(dlock_client *c) {
  if (c->gb_started)
    return 0;
  if (c->gb_stop || pthread_create(&c->gb_thread, NULL, giveback_main, c) != 0)
    return dlock_seterr(DLOCK_ENOMEM, "cannot start the give-back thread");
  c->gb_started = true;
  return 0;
}

void dlock__giveback_kick(dlock_client *c) { pthread_cond_signal(&c->gb_cv); }

void dlock__giveback_stop(dlock_client *c) {
  pthread_mutex_lock(&c->mu);
  bool started = c->gb_started;
  c->gb_stop = true;
  pthread_cond_signal(&c->gb_cv);
  pthread_mutex_unlock(&c->mu);
  if (started)
    pthread_join(c->gb_thread, NULL);
}

/* Under c->mu: the give-back of L is over; unlinks it (the caller frees it
 * once c->mu is released). */
static void giveback_done(dlock_client *c, struct dlock_lock *l) {
  dlock__table_remove(c, l);
  l->giveback = false;
  atomic_fetch_sub(&c->metrics.giveback_pending, 1);
  pthread_cond_broadcast(&c->cv);
}

void dlock__giveback(dlock_client *c, struct dlock_lock *l, const char *why) {
  int64_t now = dlock__now_ns();
  pthread_mutex_lock(&c->mu);
  l->giveback = true;
  l->giveback_tries = 0;
  l->giveback_next_ns = now;
  /* The request may still be on its way; once it lands, the store keeps the
   * grant for at most a ttl.  Past this, giving back has nothing left to do,
   * but on a store whose sessions keep locks past their ttl. */
  l->giveback_until_ns = c->bc.give_back_expired
                             ? INT64_MAX
                             : now + l->bl.ttl_ms * 1000000 + dlock__margin_ns(c, l->bl.ttl_ms);
  /* Counted before the give-back thread can see it and count it done. */
  atomic_fetch_add(&c->metrics.giveback, 1);
  atomic_fetch_add(&c->metrics.giveback_pending, 1);
  dlock__log(c, DLOCK_LOG_WARN, "giving back '%s': %s", l->key, why);
  int rc = dlock__giveback_start(c);
  /* Without a thread to do it later: now, once, claimed (inflight) so
   * that a thread started meanwhile leaves it alone.  Elsewhere the store
   * expires what is left; a session would keep it, so the entry stays, for
   * the thread the next acquire of the key starts, or for close. */
  if (rc < 0)
    l->inflight = true;
  pthread_mutex_unlock(&c->mu);
  if (rc == 0) {
    dlock__giveback_kick(c);
    return;
  }
  rc = c->ops->release(&c->bc, &l->bl);
  pthread_mutex_lock(&c->mu);
  l->inflight = false;
  bool over = !dlock_err_is_transient(rc) || !c->bc.give_back_expired;
  if (over) {
    giveback_done(c, l);
  } else {
    /* Paced from now, and handed to a thread that may have started while
     * this one was out (which skipped it then), or to the acquire that
     * waits behind it and starts one. */
    giveback_later(c, l);
    if (dlock__giveback_start(c) == 0)
      dlock__giveback_kick(c);
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  if (over)
    dlock__lock_free(l);
}

/* Under c->mu: the next try of L's give-back, paced by the client's
 * backoff. */
static void giveback_later(dlock_client *c, struct dlock_lock *l) {
  double gap = (double)c->retry_initial_ms;
  for (int i = 0; i < l->giveback_tries && gap < (double)c->retry_max_ms; i++)
    gap *= c->retry_multiplier;
  if (gap > (double)c->retry_max_ms)
    gap = (double)c->retry_max_ms;
  l->giveback_tries++;
  l->giveback_next_ns = dlock__now_ns() + (int64_t)(gap * 1e6);
}

/* Under c->mu: when a give-back of L that failed with RC is over, logged
 * as such; else false, with the next try paced by the client's backoff. */
static bool giveback_over(dlock_client *c, struct dlock_lock *l, int rc, int64_t until_ns) {
  int64_t now = dlock__now_ns();
  if (!dlock_err_is_transient(rc) || now >= until_ns) {
    if (rc >= 0 || rc == DLOCK_ELOST || rc == DLOCK_ENOTOWNED)
      dlock__log(c, DLOCK_LOG_INFO, "gave back '%s'", l->key);
    else
      dlock__log(c, DLOCK_LOG_WARN, "stopped giving back '%s' (%s): %s", l->key,
                 dlock_err_name(rc),
                 dlock_err_is_transient(rc) ? "the store kept it at most a ttl" : "not retried");
    return true;
  }
  giveback_later(c, l);
  return false;
}

/* The store's answer to a give-back: released, or nothing of the owner's
 * there. */
static bool answered(int rc) { return rc >= 0 || rc == DLOCK_ELOST || rc == DLOCK_ENOTOWNED; }

/* Under c->mu: L, whose give-back the store has answered, may yet be
 * granted late: from now on it is looked at again, without keeping its key
 * from this client's acquires. */
static void watch(dlock_client *c, struct dlock_lock *l) {
  l->watch = true;
  giveback_later(c, l);
}

/* Under c->mu: a look at watched L returned RC.  Over (and unlinked) once
 * an answer came after the store could still grant it, or one that is not
 * retried. */
static bool watch_result(dlock_client *c, struct dlock_lock *l, int rc) {
  if (rc == 0)
    dlock__log(c, DLOCK_LOG_WARN, "gave back '%s' again: the store granted an attempt that "
               "went unanswered after its give-back", l->key);
  if (dlock_err_is_transient(rc) || (answered(rc) && dlock__now_ns() < l->late_until_ns)) {
    giveback_later(c, l);
    return false;
  }
  if (!answered(rc))
    dlock__log(c, DLOCK_LOG_WARN, "stopped looking at '%s' again (%s): not retried", l->key,
               dlock_err_name(rc));
  dlock__table_remove(c, l);
  pthread_cond_broadcast(&c->cv);
  return true;
}

int dlock__giveback_watch(dlock_client *c, struct dlock_lock *l) {
  int rc = dlock__giveback_start(c);
  if (rc == 0) {
    watch(c, l);
    dlock__giveback_kick(c);
  }
  return rc;
}

/* Under c->mu: the give-back (or a look, when L is watched) of L returned
 * RC.  True when it is over (L is unlinked and must be freed), false when
 * it is to be tried again later. */
static bool giveback_result(dlock_client *c, struct dlock_lock *l, int rc) {
  l->inflight = false;
  if (l->watch)
    return watch_result(c, l, rc);
  if (!giveback_over(c, l, rc, l->giveback_until_ns))
    return false;
  if (answered(rc) && dlock__now_ns() < l->late_until_ns) {
    l->giveback = false;
    atomic_fetch_sub(&c->metrics.giveback_pending, 1);
    pthread_cond_broadcast(&c->cv);
    watch(c, l);
    return false;
  }
  giveback_done(c, l);
  return true;
}

void dlock__owe(dlock_client *c, struct dlock_lock *l) {
  if (!c->bc.give_back_expired || l->owed || l->returned)
    return;
  l->owed = true;
  l->giveback_tries = 0;
  l->giveback_next_ns = dlock__now_ns();
  atomic_fetch_add(&c->metrics.giveback, 1);
  atomic_fetch_add(&c->metrics.giveback_pending, 1);
  if (dlock__giveback_start(c) == 0)
    dlock__giveback_kick(c); /* else the holder's release gives it back */
}

/* Under c->mu: the give-back of an owed L returned RC. */
static void owed_result(dlock_client *c, struct dlock_lock *l, int rc) {
  l->inflight = false;
  if (!giveback_over(c, l, rc, INT64_MAX))
    return;
  l->owed = false;
  /* A refusal that is not an answer (an error of the store) leaves the
   * holder's release to try once more. */
  l->returned = answered(rc);
  atomic_fetch_sub(&c->metrics.giveback_pending, 1);
  pthread_cond_broadcast(&c->cv);
}

static void *giveback_main(void *arg) {
  dlock_client *c = arg;
  struct dlock_lock *gbs[GIVEBACKS_PER_ROUND];
  int grcs[GIVEBACKS_PER_ROUND];
  /* What a backend says on this thread is never shown, but is still made
   * without the URL's secrets. */
  dlock__err_scope(c->url);
  pthread_mutex_lock(&c->mu);
  while (!c->gb_stop) {
    int64_t now = dlock__now_ns(), wake = INT64_MAX;
    size_t ng = 0;
    for (struct dlock_lock *l = c->head; l; l = l->next) {
      if (l->inflight || !(l->owed || l->giveback || l->watch))
        continue;
      /* An expired lock's on_lost comes first; its delivery wakes us. */
      if (l->owed && l->lost_pending)
        continue;
      /* A look at a watched attempt waits while this client uses its key:
       * that use's end wakes us (dlock__table_remove). */
      if (l->watch && dlock__table_find(c, l->key))
        continue;
      if (l->giveback_next_ns <= now && ng < GIVEBACKS_PER_ROUND) {
        l->inflight = true;
        gbs[ng++] = l;
      } else if (l->giveback_next_ns < wake) {
        wake = l->giveback_next_ns;
      }
    }
    if (ng == 0) {
      dlock_backend_cond_wait(&c->gb_cv, &c->mu, wake == INT64_MAX ? -1 : wake);
      continue;
    }
    pthread_mutex_unlock(&c->mu);
    /* One that finds the store away or too slow to answer defers the rest
     * of the round. */
    int down = 0;
    for (size_t i = 0; i < ng; i++) {
      grcs[i] = down ? down : c->ops->release(&c->bc, &gbs[i]->bl);
      if (dlock_err_is_transient(grcs[i]))
        down = grcs[i];
    }
    pthread_mutex_lock(&c->mu);
    size_t nfree = 0;
    for (size_t i = 0; i < ng; i++) {
      if (gbs[i]->owed)
        owed_result(c, gbs[i], grcs[i]);
      else if (giveback_result(c, gbs[i], grcs[i]))
        gbs[nfree++] = gbs[i];
    }
    pthread_cond_broadcast(&c->cv);
    if (nfree) {
      pthread_mutex_unlock(&c->mu);
      for (size_t i = 0; i < nfree; i++)
        dlock__lock_free(gbs[i]);
      pthread_mutex_lock(&c->mu);
    }
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}
