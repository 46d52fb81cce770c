/* The renew scheduler: one thread per client, started with the first lock.
 *
 * It renews auto-renew locks at ttl/3 (a round goes out once a renewal is
 * due and takes those due within half a period, or two thirds on a store
 * with renew_many, so a thousand locks cost one round trip on stores that
 * pipeline or take many keys per request), turns a lock LOST when a
 * renewal is refused or its validity deadline passes (handing it to the
 * give-back thread on a store whose sessions would keep it), and delivers
 * on_lost callbacks. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

/* A renewal due within this window goes out with the one that is due now
 * (a round goes out only once one is due: see renew_main).  Locks taken
 * over a span of time come due at as many moments; a narrow window kept
 * those moments apart for good, each a round of requests (one ping per
 * session, one statement or script call per batch) that a single round
 * would have served: 10,000 locks taken over a few seconds cost a store
 * hundreds of requests per period where one round needs a few.  With half
 * a period, two rounds less than a period apart become one within a
 * period.  Where a round is one renew_many call, the window is two thirds
 * of a period, so that it also merges groups whose renewals fall apart in
 * a period after one round, with a third of a period to spare for the
 * time a batch takes to send.  A lock is renewed at most three times a
 * period that way, and none later than before: an early renewal only
 * moves its deadline out. */
static int64_t batch_slack_ns(const dlock_client *c, const struct dlock_lock *l) {
  if (c->ops->renew_many)
    return l->bl.ttl_ms * 1000000 * 2 / 9;
  return l->bl.ttl_ms * 1000000 / 6;
}

int dlock__renew_one(dlock_client *c, dlock_backend_lock *bl) {
  if (c->ops->renew)
    return c->ops->renew(&c->bc, bl);
  int rc = DLOCK_EBACKEND;
  int mrc = c->ops->renew_many(&c->bc, &bl, 1, &rc);
  return mrc < 0 ? mrc : rc;
}

static void apply_renew(dlock_client *c, struct dlock_lock *l, int rc, int64_t start) {
  int64_t sent = l->bl.sent_ns ? l->bl.sent_ns : start;
  if (rc == 0) {
    atomic_fetch_add(&c->metrics.renew_ok, 1);
    l->renew_failures = 0;
    if (c->bc.caps & DLOCK_CAP_SERVER_TTL)
      l->valid_until_ns = sent + l->bl.ttl_ms * 1000000 - dlock__margin_ns(c, l->bl.ttl_ms);
    l->next_renew_ns = sent + l->bl.ttl_ms * 1000000 / 3;
    return;
  }
  atomic_fetch_add(&c->metrics.renew_failed, 1);
  if (rc == DLOCK_ELOST || rc == DLOCK_ENOTOWNED) {
    dlock__mark_lost(c, l, "the store refused its renewal");
    return;
  }
  /* Transient: the store may have applied the ttl and lost the reply; never
   * let that stretch the deadline.  Try again soon, with growing gaps, until
   * the validity deadline decides. */
  int64_t maybe = dlock__validity_deadline(c, start, l->bl.ttl_ms);
  if (maybe < l->valid_until_ns)
    l->valid_until_ns = maybe;
  l->renew_failures++;
  int64_t gap = (int64_t)l->renew_failures * 200000000;
  int64_t cap = l->bl.ttl_ms * 1000000 / 10;
  if (gap > cap)
    gap = cap;
  int64_t now = dlock__now_ns();
  l->next_renew_ns = now + gap;
  dlock__log(c, DLOCK_LOG_WARN,
             "renewal of '%s' failed (%s: %s); retrying in %lld ms, valid for %lld ms more",
             l->key, dlock_err_name(rc), dlock_client_errmsg(NULL), (long long)(gap / 1000000),
             (long long)((l->valid_until_ns - now) / 1000000));
}

static void *renew_main(void *arg) {
  dlock_client *c = arg;
  size_t cap = 0;
  struct dlock_lock **batch = NULL, **cbs = NULL;
  dlock_backend_lock **bls = NULL;
  int *rcs = NULL;

  /* What a backend says on this thread is never shown, but is still made
   * without the URL's secrets. */
  dlock__err_scope(c->url);
  pthread_mutex_lock(&c->mu);
  while (!c->renew_stop) {
    int64_t now = dlock__now_ns();
    int64_t wake = INT64_MAX;
    size_t nb = 0, nc = 0;
    bool due = false;
    if (cap < c->table_count) {
      size_t ncap = c->table_count * 2;
      struct dlock_lock **b2 = realloc(batch, ncap * sizeof *b2);
      if (b2)
        batch = b2;
      struct dlock_lock **c2 = realloc(cbs, ncap * sizeof *c2);
      if (c2)
        cbs = c2;
      dlock_backend_lock **l2 = realloc(bls, ncap * sizeof *l2);
      if (l2)
        bls = l2;
      int *r2 = realloc(rcs, ncap * sizeof *r2);
      if (r2)
        rcs = r2;
      if (b2 && c2 && l2 && r2)
        cap = ncap;
    }
    for (struct dlock_lock *l = c->head; l; l = l->next) {
      if (l->inflight)
        continue;
      if (l->owed || l->giveback || l->watch) {
        /* Only an owed lock is still the caller's: its on_lost is due. */
        if (l->owed && l->lost_pending && nc < cap) {
          l->lost_pending = false; /* the give-back thread waits for it */
          l->inflight = true;
          cbs[nc++] = l;
        }
        continue;
      }
      if (l->state == DLOCK_HELD) {
        if (l->valid_until_ns <= now) {
          dlock__mark_lost(c, l, "its validity ran out without a confirmed renewal");
          dlock__owe(c, l);
        } else if (l->auto_renew && l->next_renew_ns <= now + batch_slack_ns(c, l) && nb < cap) {
          l->inflight = true;
          l->bl.io_deadline_ns = l->valid_until_ns == INT64_MAX ? 0 : l->valid_until_ns;
          batch[nb++] = l;
          due |= l->next_renew_ns <= now;
          if (l->next_renew_ns < wake)
            wake = l->next_renew_ns;
          if (l->valid_until_ns < wake)
            wake = l->valid_until_ns;
          continue;
        } else {
          if (l->auto_renew && l->next_renew_ns < wake)
            wake = l->next_renew_ns;
          if (l->valid_until_ns < wake)
            wake = l->valid_until_ns;
          /* Due but left out of a full batch (the arrays could not grow):
           * the batch goes now, or the thread would wake at once for it
           * again and again with nothing sent. */
          due |= l->auto_renew && l->next_renew_ns <= now;
        }
      }
      if (l->state == DLOCK_LOST && l->lost_pending && nc < cap) {
        l->lost_pending = false;
        l->inflight = true;
        cbs[nc++] = l;
      }
    }
    if (!due) {
      /* Nothing is due yet: the window only widens a round that goes out
       * anyway.  Sent now, it would be a round per wake-up, each taking
       * the few renewals that slid into the window since the last one
       * (the loop comes back at once after a round): a ping or a
       * statement every millisecond or so while locks taken one after
       * another come due. */
      for (size_t i = 0; i < nb; i++)
        batch[i]->inflight = false;
      nb = 0;
    }
    if (nb == 0 && nc == 0) {
      /* Due, yet not even one entry could be had for a batch: look again
       * a little later rather than at once, over and over. */
      if (due && cap == 0 && wake <= now)
        wake = now + 10000000;
      c->renew_wake_ns = wake;
      if (wake == INT64_MAX) {
        pthread_cond_wait(&c->renew_cv, &c->mu);
      } else {
        struct timespec ts;
        dlock__ns_to_timespec(wake, &ts);
        pthread_cond_timedwait(&c->renew_cv, &c->mu, &ts);
      }
      c->renew_wake_ns = INT64_MIN;
      continue;
    }
    pthread_mutex_unlock(&c->mu);

    /* Callbacks first: a loss must not be reported late because the store
     * has stopped answering renewals. */
    for (size_t i = 0; i < nc; i++)
      cbs[i]->on_lost(cbs[i]->key, cbs[i]->bl.token, cbs[i]->on_lost_arg);

    int64_t start = dlock__now_ns();
    for (size_t i = 0; i < nb; i++) {
      batch[i]->bl.sent_ns = 0;
      bls[i] = &batch[i]->bl;
    }
    if (nb > 1 && c->ops->renew_many) {
      int mrc = c->ops->renew_many(&c->bc, bls, nb, rcs);
      for (size_t i = 0; mrc < 0 && i < nb; i++)
        rcs[i] = mrc;
    } else {
      int down = 0;
      for (size_t i = 0; i < nb; i++) {
        /* One unreachable store fails the rest without waiting again. */
        if (down) {
          rcs[i] = down;
          continue;
        }
        int64_t s1 = dlock__now_ns();
        rcs[i] = dlock__renew_one(c, bls[i]);
        if (!bls[i]->sent_ns)
          bls[i]->sent_ns = s1;
        if (rcs[i] == DLOCK_ECONN)
          down = rcs[i];
      }
    }

    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < nb; i++) {
      apply_renew(c, batch[i], rcs[i], start);
      batch[i]->inflight = false;
    }
    bool owed = false;
    for (size_t i = 0; i < nc; i++) {
      cbs[i]->inflight = false;
      owed |= cbs[i]->owed;
    }
    if (owed)
      dlock__giveback_kick(c); /* on_lost delivered: the give-back may go */
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  free(batch);
  free(cbs);
  free(bls);
  free(rcs);
  return NULL;
}

int dlock__renew_start(dlock_client *c) {
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  if (!c->renew_started) {
    if (pthread_create(&c->renew_thread, NULL, renew_main, c) == 0)
      c->renew_started = true;
    else
      rc = dlock_seterr(DLOCK_ENOMEM, "cannot start the renew thread");
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

void dlock__renew_kick(dlock_client *c) { pthread_cond_signal(&c->renew_cv); }

void dlock__renew_stop(dlock_client *c) {
  pthread_mutex_lock(&c->mu);
  bool started = c->renew_started;
  c->renew_stop = true;
  pthread_cond_signal(&c->renew_cv);
  pthread_mutex_unlock(&c->mu);
  if (started)
    pthread_join(c->renew_thread, NULL);
}
