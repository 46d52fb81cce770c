/* etcd backend: leases, the revision-ordered queue, fencing by revision.
 *
 * Every lock is a key NAME/<lease hex> attached to a lease of the client,
 * the layout of etcd's own concurrency.Mutex, so `etcdctl lock NAME` and
 * dlock exclude each other.  The holder is the key under NAME/ with the
 * lowest create_revision, which is also the fencing token: revisions never
 * go back, whatever happens to the key.
 *
 * Leases are shared.  A client has one lease per ttl in use (one in the
 * usual case), and "renew" keeps the lease alive: one keepalive per
 * period however many locks ride on it.  A lock's validity counts from the
 * send time of the last keepalive the server confirmed, never from the
 * acquire, since the key lives exactly as long as its lease.
 *
 * So a key outlives its lock's ttl for as long as the client's other locks
 * keep the lease alive, and open() has the core give back what the lease
 * would keep (bc->give_back_expired): a lock whose validity ran out
 * unrenewed, a release the store left unanswered, and an attempt that may
 * have left its key in the queue (bl->sent_ns).  release() deletes the key
 * and keeps what it needs to be called again until the store answers.  No
 * thread of its own: the core's give-back thread does the retries.
 *
 * Requests go through a transport the URL's scheme picks
 * (etcd-transport.h): the v3 HTTP/JSON gateway for etcd:// and
 * etcd+https://, etcd's gRPC API for etcd+grpc:// and etcd+grpcs://.
 * Everything here runs over either. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/etcd/etcd-codec.h"
#include "backends/etcd/etcd-transport.h"
#include "backends/http/http.h"
#include "dlock/lease.h"

/* How often an acquisition whose key vanished while it queued (its lease
 * expired or was revoked) joins the queue again before giving up. */
#define REQUEUE_MAX 5
/* Compares per check txn: etcd refuses more than --max-txn-ops (128 by
 * default) in one txn. */
#define CHECK_BATCH 100
/* Locks due together on one lease from which one read of the lease's keys
 * is cheaper than a check txn per hundred of them (10,000 locks are one
 * request a pass instead of 100), unless the lease has many more keys
 * than are due: LEASE_CHECK_SPREAD times as many held on it at most. */
#define LEASE_CHECK_MIN (CHECK_BATCH + 1)
#define LEASE_CHECK_SPREAD 4
/* A lease whose keys come to more bytes than this (all its held locks
 * counted) is checked by txns: the gRPC transport takes answers up to
 * 4 MiB.  Keys still queued on the lease are not counted; should they
 * make the answer too long, the read fails and the txns check. */
#define LEASE_CHECK_BYTES (2u << 20)
/* Leases read in one pass; locks on further ones are checked by txns. */
#define LEASE_CHECK_LEASES 8
/* After a read of a lease's keys failed, this many of the passes that have
 * a lease to read check by txns. */
#define LEASE_CHECK_BACKOFF 8

/* A lease's state in the client's lease table (dlock/lease.h): its id. */
typedef struct etcd_lease_id {
  int64_t id;
} etcd_lease_id;

static int64_t lease_id(const dlock_lease *l) {
  return ((const etcd_lease_id *)dlock_lease_priv(l))->id;
}

/* bl->priv: a lock, in the client's registry while held.  LEASE (with a
 * reference), NAMED and REV stay until the store has answered the release,
 * or the attempt's give-back, of our key.  What is kept for that is movable
 * (the core may copy it to a handle of its own): no pointer into it,
 * nothing to free but the reference. */
typedef struct etcd_lock {
  struct etcd_lock *prev, *next;
  dlock_backend_lock *bl;
  dlock_lease *lease;   /* the one our key is on */
  char *key;            /* while listed */
  int64_t named;        /* the lease in our key's name (a move keeps it) */
  int64_t rev;          /* create_revision of our key: the token; 0 when its
                           put went unanswered */
  int64_t confirmed_ns; /* the last lease confirmation this lock was given */
  bool listed;
  bool lost;
} etcd_lock;

typedef struct etcd_client {
  dlock_backend_client *bc;
  pthread_mutex_t mu;
  pthread_mutex_t auth_mu;     /* one login at a time */
  const dlock__etcd_transport *tp;
  void *tps;                   /* the transport's own state */
  char *user, *password;
  char *token;                 /* under mu; NULL without auth */
  uint64_t token_gen;
  char *prefix;
  dlock_leases *leases;        /* dlock/lease.h */
  etcd_lock *held;
  int stale_watches;           /* DLOCK_ETCD_CTL_STALE_WATCH */
  int list_page;               /* DLOCK_ETCD_CTL_LIST_PAGE, 0 = the default */
  int lease_check_skip;        /* passes left to check by txns only */
  struct dlock_etcd_stats stats;
  struct dlock_etcd_checks checks;
} etcd_client;

static int64_t now_ns(void) { return dlock_backend_now_ns(); }

/* ---- the transport's hooks ---- */

static char *host_token(void *ctx, uint64_t *gen) {
  etcd_client *ec = ctx;
  pthread_mutex_lock(&ec->mu);
  *gen = ec->token_gen;
  char *t = ec->token ? strdup(ec->token) : NULL;
  pthread_mutex_unlock(&ec->mu);
  return t;
}

static int login(etcd_client *ec, uint64_t seen_gen, int64_t deadline);

static int host_relogin(void *ctx, uint64_t gen, int64_t deadline) {
  return login(ctx, gen, deadline);
}

/* Log in (again).  SEEN_GEN is the token generation the caller found
 * invalid: if another thread has already replaced it, nothing to do. */
static int login(etcd_client *ec, uint64_t seen_gen, int64_t deadline) {
  pthread_mutex_lock(&ec->auth_mu);
  /* The old token stays in use until the new one replaces it: other
   * threads' requests must not go out without one meanwhile. */
  pthread_mutex_lock(&ec->mu);
  bool fresh = ec->token && ec->token_gen != seen_gen;
  pthread_mutex_unlock(&ec->mu);
  int rc = 0;
  if (!fresh) {
    char *token = NULL;
    rc = ec->tp->authenticate(ec->tps, ec->user, ec->password ? ec->password : "",
                              dlock_backend_deadline(ec->bc, deadline), &token);
    if (rc == DLOCK_EAUTH) {
      /* A copy: the message lives in the buffer dlock_seterr writes. */
      char why[256];
      const char *m = dlock_client_errmsg(NULL);
      snprintf(why, sizeof why, "%s", strncmp(m, "etcd: ", 6) == 0 ? m + 6 : m);
      rc = dlock_seterr(DLOCK_EAUTH, "etcd: cannot log in as '%s': %s", ec->user, why);
    }
    pthread_mutex_lock(&ec->mu);
    if (rc == 0) {
      free(ec->token);
      ec->token = token;
      ec->token_gen++;
      ec->stats.logins++;
    }
    pthread_mutex_unlock(&ec->mu);
  }
  pthread_mutex_unlock(&ec->auth_mu);
  return rc;
}

/* The txn REQ (freed here; NULL: out of memory building it), decoded. */
static int txn(etcd_client *ec, dlock__etcd_txreq *req, int64_t deadline, dlock__etcd_txn *t,
               enum dlock__etcd_fault *fault) {
  memset(t, 0, sizeof *t);
  if (fault)
    *fault = DLOCK__ETCD_F_NONE;
  if (!req)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  int rc = ec->tp->txn(ec->tps, req, deadline, t, fault);
  free(req);
  return rc;
}

/* ---- leases ---- */

/* The lease table's requests (dlock/lease.h). */

static int lease_grant(dlock_backend_client *bc, void *priv, int64_t ttl_ms, int64_t deadline,
                       int64_t *keep_ms) {
  etcd_client *ec = bc->priv;
  int64_t ttl_s = (ttl_ms + 999) / 1000;
  int64_t id = 0, got = 0;
  int rc = ec->tp->grant(ec->tps, ttl_s, deadline, &id, &got);
  if (rc == 0 && (id <= 0 || got < ttl_s))
    rc = dlock_seterr(DLOCK_EBACKEND, "etcd: lease grant gave id %" PRId64 " ttl %" PRId64
                      " s for %" PRId64 " s", id, got, ttl_s);
  if (rc == 0) {
    ((etcd_lease_id *)priv)->id = id;
    *keep_ms = got * 1000;
  }
  return rc;
}

static int lease_keepalive(dlock_backend_client *bc, void *priv, int64_t deadline,
                           int64_t *keep_ms) {
  etcd_client *ec = bc->priv;
  int64_t id = ((etcd_lease_id *)priv)->id, ttl = 0;
  int rc = ec->tp->keepalive(ec->tps, id, deadline, &ttl);
  if (rc == 0 && ttl <= 0)
    return dlock_seterr(DLOCK_ELOST, "etcd: lease %" PRIx64 " has expired or was revoked",
                        (uint64_t)id);
  if (rc == 0)
    *keep_ms = ttl * 1000;
  return rc;
}

static int lease_revoke(dlock_backend_client *bc, void *priv, int64_t deadline) {
  etcd_client *ec = bc->priv;
  ec->tp->revoke(ec->tps, ((etcd_lease_id *)priv)->id, deadline);
  /* Every lease is tried whatever the last answer, as etcd's close always
   * did: a cluster that comes back during the close still gets the later
   * ones revoked. */
  return 0;
}

/* The server no longer has L: every lock on it is lost, and its keys went
 * with it. */
static void lease_gone(dlock_backend_client *bc, dlock_lease *l) {
  etcd_client *ec = bc->priv;
  pthread_mutex_lock(&ec->mu);
  for (etcd_lock *lk = ec->held; lk; lk = lk->next)
    if (lk->lease == l && !lk->lost) {
      lk->lost = true;
      dlock_backend_lock_lost(ec->bc, lk->bl);
    }
  pthread_mutex_unlock(&ec->mu);
}

static const dlock_lease_ops etcd_lease_ops = {
    .store = "etcd",
    .what = "lease",
    .priv_size = sizeof(etcd_lease_id),
    .grant = lease_grant,
    .refresh = lease_keepalive,
    .gone = lease_gone,
    .revoke = lease_revoke,
};

/* Delete KEY if it is still the one created at REV, or with REV 0 (its put
 * went unanswered, so its revision is unknown) if it still holds VALUE: a
 * later attempt of this client on the same lease puts another owner's
 * value under the same key.  1 deleted, 0 it was already gone or someone
 * else's, or a negative code. */
static int drop_key(etcd_client *ec, const char *key, int64_t rev, const char *value,
                    int64_t deadline) {
  dlock__etcd_txn t;
  dlock__etcd_txreq *req = rev ? dlock__etcd_tx_release(key, rev)
                                : dlock__etcd_tx_release_value(key, value);
  int rc = txn(ec, req, dlock_backend_deadline(ec->bc, deadline), &t, NULL);
  if (rc == 0)
    rc = t.succeeded ? 1 : 0;
  dlock__etcd_txn_free(&t);
  return rc;
}

/* Delete BL's key on LK->lease (drop_key): what a release, or a give-back
 * of an attempt, sends.  Nothing to send once the lease is gone. */
static int drop_own(etcd_client *ec, const dlock_backend_lock *bl, const etcd_lock *lk) {
  if (dlock_lease_dead(ec->leases, lk->lease))
    return 0;
  char *name = dlock__etcd_lock_name(ec->prefix, bl->key, bl->keylen);
  char *key = name ? dlock__etcd_lock_key(name, lk->named) : NULL;
  char *value = key && !lk->rev ? dlock__etcd_value(bl->owner, bl->label) : NULL;
  int rc = key && (lk->rev || value) ? drop_key(ec, key, lk->rev, value, -1)
                                     : dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  free(name);
  free(key);
  free(value);
  return rc;
}

/* Delete what the store may still have of BL, a lock (LOST if the backend
 * knows it lost) or an attempt.  Until the store answers, everything stays
 * for the next call, which the core makes (its give-back). */
static int drop_held(etcd_client *ec, dlock_backend_lock *bl, bool lost) {
  etcd_lock *lk = bl->priv;
  if (!lk->lease)
    return dlock_seterr(DLOCK_ELOST, "etcd: '%s' was not held", bl->key);
  /* Even a lock declared lost may still have its key, which would hold
   * the queue for as long as the lease lives. */
  int d = drop_own(ec, bl, lk);
  if (dlock_err_is_transient(d))
    return d;
  dlock_lease_put(ec->leases, lk->lease);
  lk->lease = NULL;
  if (d == 0 || lost)
    return dlock_seterr(DLOCK_ELOST, "etcd: '%s' was lost before release", bl->key);
  return d < 0 ? d : 0;
}

/* ---- open / close ---- */

static void client_free(etcd_client *ec) {
  dlock_leases_free(ec->leases);
  ec->leases = NULL;
  if (ec->tp)
    ec->tp->close(ec->tps);
  ec->tp = NULL;
  free(ec->user);
  if (ec->password)
    memset(ec->password, 0, strlen(ec->password));
  free(ec->password);
  free(ec->token);
  free(ec->prefix);
  pthread_mutex_destroy(&ec->mu);
  pthread_mutex_destroy(&ec->auth_mu);
}

static int etcd_open(dlock_backend_client *bc, dlock_url *url) {
  etcd_client *ec = bc->priv;
  ec->bc = bc;
  pthread_mutex_init(&ec->mu, NULL);
  pthread_mutex_init(&ec->auth_mu, NULL);
  /* A key lives as long as its lease, which the client's other locks keep
   * alive: the core gives back what that would keep. */
  bc->give_back_expired = true;
  const char *path = dlock_url_path(url);
  dlock__etcd_host host = {.bc = bc, .ctx = ec, .auth = false, .token = host_token,
                           .relogin = host_relogin};
  const char *user = dlock_url_user(url), *pw = dlock_url_password(url);
  host.auth = user && user[0];
  ec->tp = &dlock__etcd_gateway;
  int rc = 0;
  if (strncmp(dlock_url_scheme(url), "etcd+grpc", 9) == 0) {
#ifdef DLOCK_HAVE_ETCD_GRPC
    ec->tp = &dlock__etcd_grpc;
#else
    ec->tp = NULL;
    rc = dlock_seterr(DLOCK_ENOTSUP, "etcd: this build has no gRPC transport (-Detcd_grpc: "
                      "libnghttp2, OpenSSL); use etcd://");
#endif
  }
  if (rc == 0)
    rc = ec->tp->open(&ec->tps, &host, url);
  if (rc == 0)
    rc = dlock_leases_new(bc, &etcd_lease_ops, &ec->leases);
  if (rc == 0 && path[0] && strcmp(path, "/") != 0)
    rc = dlock_seterr(DLOCK_EINVAL, "etcd: the URL takes no path (got '%s'); use ?prefix=",
                      path);
  if (rc == 0 && pw && (!user || !user[0]))
    rc = dlock_seterr(DLOCK_EINVAL, "etcd: a password needs a user name");
  if (rc == 0 && user && user[0]) {
    ec->user = strdup(user);
    ec->password = strdup(pw ? pw : "");
    if (!ec->user || !ec->password)
      rc = dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  }
  if (rc == 0 && !(ec->prefix = strdup(bc->prefix ? bc->prefix : DLOCK__ETCD_DEFAULT_PREFIX)))
    rc = dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  /* Reach the cluster now, so that a wrong address or password shows at
   * open: logging in does both; without auth the cheapest read does. */
  int64_t neps = rc == 0 ? (int64_t)ec->tp->endpoints(ec->tps) : 1;
  int64_t deadline = now_ns() + bc->connect_timeout_ms * 1000000 * neps + bc->timeout_ms * 1000000;
  if (rc == 0 && ec->user) {
    rc = login(ec, 0, deadline);
  } else if (rc == 0) {
    rc = ec->tp->status(ec->tps, deadline);
  }
  if (rc < 0)
    client_free(ec);
  return rc;
}

static void etcd_close(dlock_backend_client *bc) {
  etcd_client *ec = bc->priv;
  pthread_mutex_lock(&ec->mu);
  for (etcd_lock *lk = ec->held; lk; lk = lk->next) {
    free(lk->key);
    lk->key = NULL;
    lk->lease = NULL;
    lk->listed = false;
  }
  ec->held = NULL;
  pthread_mutex_unlock(&ec->mu);
  /* client_free revokes every lease the client still has (listed ones,
   * and those of locks and attempts the core could not give back), which
   * deletes at once whatever keys they still carry, instead of after a
   * ttl. */
  client_free(ec);
}

/* ---- acquire ---- */

/* A watch: it ends on a deletion, a cancel or an error. */
typedef struct watch_ctx {
  dlock__etcd_watch_ev ev;
  int64_t start;
  bool shortcut; /* may end at once when the watch starts in the past */
  int outcome; /* 0 running, 1 deleted, 2 compacted, 3 canceled, 4 error, 5 look again */
} watch_ctx;

/* One answer of the watch stream: true when it ends the watch. */
static bool watch_event(void *ud, const dlock__etcd_watch_ev *ev) {
  watch_ctx *w = ud;
  if (ev->error)
    w->outcome = 4;
  else if (ev->deletes)
    w->outcome = 1;
  else if (ev->canceled)
    w->outcome = ev->compact_revision ? 2 : 3; /* refusals come as cancels too */
  else if (ev->created && w->shortcut && ev->revision >= w->start)
    /* The store moved on between our look at the queue and this watch,
     * so the watch starts in the past, and etcd delivers past events
     * only from a catch-up loop that runs every 100 ms.  Looking at the
     * queue again is one round trip; the caller allows it once per
     * predecessor, so a busy store cannot make a waiter spin. */
    w->outcome = 5;
  if (w->outcome)
    w->ev = *ev;
  return w->outcome != 0;
}

enum { W_DELETED, W_COMPACTED, W_ROUND, W_RETRY, W_LOOK, W_RELOGGED };

/* Wait for KEY to be deleted at or after START, until UNTIL.  W_DELETED,
 * W_COMPACTED (START is gone: look again), W_ROUND (UNTIL came), W_RETRY
 * (the stream broke: look again after a pause), or a negative code. */
static int watch_delete(etcd_client *ec, const char *key, int64_t start, int64_t until,
                        bool shortcut) {
  /* The real start decides whether the store moved on; the test hook only
   * changes what is asked for. */
  int64_t asked = start;
  pthread_mutex_lock(&ec->mu);
  if (ec->stale_watches > 0) {
    ec->stale_watches--;
    asked = 1;
    shortcut = false;
  }
  pthread_mutex_unlock(&ec->mu);
  watch_ctx w = {.start = start, .shortcut = shortcut};
  uint64_t gen = 0;
  size_t ep = 0;
  int end = ec->tp->watch(ec->tps, key, asked, until, watch_event, &w, &gen, &ep);
  int rc;
  pthread_mutex_lock(&ec->mu);
  ec->stats.watches++;
  if (w.outcome == 2)
    ec->stats.watch_compacted++;
  pthread_mutex_unlock(&ec->mu);
  if (end < 0)
    rc = end;
  else if (w.outcome == 1)
    rc = W_DELETED;
  else if (w.outcome == 5)
    rc = W_LOOK;
  else if (w.outcome == 2)
    rc = W_COMPACTED;
  else if ((w.outcome == 3 || w.outcome == 4) && ec->user &&
           (w.ev.fault == DLOCK__ETCD_F_REAUTH || w.ev.fault == DLOCK__ETCD_F_AUTH))
    /* etcd 3.4 refuses a watch with an unknown token (a restarted member
     * forgot it) as "permission denied": log in again; the caller gives
     * up when a fresh token is refused too. */
    rc = login(ec, gen, dlock_backend_deadline(ec->bc, -1)) == 0 ? W_RELOGGED : DLOCK_EAUTH;
  else if ((w.outcome == 3 || w.outcome == 4) && w.ev.fault == DLOCK__ETCD_F_RETRY) {
    ec->tp->move_on(ec->tps, ep);
    rc = W_RETRY;
  } else if ((w.outcome == 3 || w.outcome == 4) && (w.ev.fault == DLOCK__ETCD_F_AUTH ||
                                                   w.ev.fault == DLOCK__ETCD_F_INVALID))
    rc = dlock_seterr(dlock__etcd_fault_code(w.ev.fault), "etcd: watch: %s", w.ev.msg);
  else if (!w.outcome && end == DLOCK__ETCD_WATCH_UNTIL)
    rc = W_ROUND;
  else
    /* Canceled without compaction (the member lost its leader), a stream
     * that ended or broke: look again (the transport moved on to another
     * endpoint if this one broke). */
    rc = W_RETRY;
  return rc;
}

static int lost_while_acquiring(const char *key) {
  return dlock_seterr(DLOCK_ELOST, "etcd: the lease under '%s' expired while it was acquired",
                      key);
}

/* Is the first holder key under NAME one of ours?  Only a key an earlier
 * attempt left can be (its give-back not yet answered): the core lets one
 * acquisition per key and client run. */
static bool same_id(const void *priv, void *ud) {
  return ((const etcd_lease_id *)priv)->id == *(const int64_t *)ud;
}

static bool ours(etcd_client *ec, int64_t lease) {
  return lease != 0 && dlock_leases_any(ec->leases, same_id, &lease);
}

static const dlock__etcd_kv *first_kv(const dlock__etcd_txn *t, size_t i) {
  if (i >= t->nres || t->res[i].op != DLOCK__ETCD_OP_RANGE || t->res[i].nkvs == 0)
    return NULL;
  return &t->res[i].kvs[0];
}

/* One place in the queue: join (or, for a try, take the lock only if
 * nobody is queued) and wait for our turn.  0 held at *rev, DLOCK_EBUSY,
 * DLOCK_ETIMEDOUT, 1 when our key vanished while queued (join again), or
 * another negative code.  On failure *PLACED says whether the store may
 * still have our key: queued at *rev, or, when our put went unanswered, at
 * a revision unknown (*rev 0).  An earlier attempt on another endpoint may
 * have applied the put and only its answer got lost, whatever the last
 * attempt said. */
static int queue_once(etcd_client *ec, dlock_backend_lock *bl, dlock_lease *l, const char *name,
                      const char *key, const char *value, int64_t deadline, bool try_only,
                      int64_t *rev, bool *placed) {
  dlock__etcd_txn t;
  enum dlock__etcd_fault f = DLOCK__ETCD_F_NONE;
  int rc;
  for (int leftovers = 0;; leftovers++) {
    dlock__etcd_txreq *req = try_only ? dlock__etcd_tx_try(name, key, lease_id(l), value)
                                      : dlock__etcd_tx_enqueue(name, key, lease_id(l), value);
    rc = txn(ec, req, dlock_backend_deadline(ec->bc, deadline), &t, &f);
    if (rc < 0) {
      if (f == DLOCK__ETCD_F_LEASE_GONE) {
        dlock_lease_gone(ec->leases, l);
        return 1;
      }
      *placed = true;
      return rc;
    }
    if (t.succeeded) {
      *rev = t.revision;
      break;
    }
    const dlock__etcd_kv *kv = first_kv(&t, 0);
    if (try_only) {
      /* Someone is queued.  A key of our own there is an earlier
       * attempt's; it would grant us a token we already handed out. */
      if (kv && ours(ec, kv->lease) && leftovers < 2) {
        char *k = kv->key ? strdup(kv->key) : NULL;
        int64_t r = kv->create_revision;
        dlock__etcd_txn_free(&t);
        if (k)
          drop_key(ec, k, r, NULL, deadline);
        free(k);
        continue;
      }
      dlock__etcd_txn_free(&t);
      return dlock_seterr(DLOCK_EBUSY, "etcd: '%s' is held", bl->key);
    }
    /* Our key exists already: an earlier attempt's (see above). */
    int64_t r = kv ? kv->create_revision : 0;
    dlock__etcd_txn_free(&t);
    if (leftovers >= 2 || r == 0)
      return dlock_seterr(DLOCK_EBACKEND, "etcd: '%s' keeps a key of ours that cannot be "
                          "deleted", bl->key);
    if ((rc = drop_key(ec, key, r, NULL, deadline)) < 0)
      return rc;
  }
  const dlock__etcd_kv *first = first_kv(&t, 1);
  bool held = try_only || (first && first->create_revision == *rev);
  dlock__etcd_txn_free(&t);
  if (held)
    return 0;

  /* Wait for the predecessor, never for the holder: each release wakes
   * one waiter, not the whole queue. */
  bool woke = false, shortcut = true;
  int relogins = 0;
  for (;;) {
    if (!woke && deadline >= 0 && now_ns() >= deadline) {
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "etcd: timed out waiting for '%s'", bl->key);
      break;
    }
    /* After a wake-up the answer decides, even a little past the deadline:
     * the lock may be ours. */
    rc = txn(ec, dlock__etcd_tx_queue(name, key, *rev),
             dlock_backend_deadline(ec->bc, woke ? -1 : deadline), &t, &f);
    if (rc < 0) {
      dlock__etcd_txn_free(&t);
      if ((rc == DLOCK_ECONN || rc == DLOCK_ETIMEDOUT) && (deadline < 0 || now_ns() < deadline)) {
        dlock__http_pause(deadline);
        continue;
      }
      break;
    }
    if (!t.succeeded) {
      dlock__etcd_txn_free(&t);
      return 1; /* our key is gone: lease expired or revoked */
    }
    first = first_kv(&t, 0);
    const dlock__etcd_kv *pred = first_kv(&t, 1);
    if ((first && first->create_revision == *rev) || !pred) {
      dlock__etcd_txn_free(&t);
      return 0;
    }
    char *pkey = pred->key ? strdup(pred->key) : NULL;
    int64_t start = t.revision + 1;
    dlock__etcd_txn_free(&t);
    if (!pkey) {
      rc = dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
      break;
    }
    /* Wake up in time to keep the lease (and so our place) alive. */
    int64_t third = dlock_lease_ttl_ms(l) * 1000000 / 3;
    int64_t refresh_at = dlock_lease_fresh_ns(ec->leases, l) + third;
    int64_t until = deadline >= 0 && deadline < refresh_at ? deadline : refresh_at;
    int w = W_ROUND;
    if (until > now_ns())
      w = watch_delete(ec, pkey, start, until, shortcut);
    free(pkey);
    if (w < 0) {
      rc = w;
      break;
    }
    if (w == W_RELOGGED && ++relogins > 2) {
      rc = dlock_seterr(DLOCK_EAUTH, "etcd: the watch on '%s' is refused with a fresh token",
                        bl->key);
      break;
    }
    woke = w == W_DELETED;
    shortcut = w != W_LOOK;
    if (now_ns() >= refresh_at) {
      rc = dlock_lease_refresh(ec->leases, l, refresh_at - third + 1, deadline);
      if (rc == DLOCK_ELOST)
        return 1;
      if (rc < 0 && rc != DLOCK_ECONN && rc != DLOCK_ETIMEDOUT)
        break;
    }
    if (w == W_RETRY)
      dlock__http_pause(deadline);
  }
  *placed = true;
  return rc;
}

/* After a failed attempt the store may still have our key on its lease
 * (queue_once's *placed): it goes now, as a release would.  If the store
 * leaves that unanswered, the key is handed to the core's give-back
 * (bl->sent_ns set, a code the core retries).  The core gives back nothing
 * after a wait that ran out or a refusal, so those become DLOCK_ECONN then,
 * saying both. */
static int leave_queue(etcd_client *ec, dlock_backend_lock *bl, int rc, int64_t deadline,
                       int64_t sent) {
  char why[512], unanswered[512];
  snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
  if (!dlock_err_is_transient(drop_held(ec, bl, false)))
    return dlock_seterr(rc, "%s", why);
  bl->sent_ns = sent;
  if (rc == DLOCK_ECONN || (rc == DLOCK_ETIMEDOUT && deadline < 0))
    return dlock_seterr(rc, "%s", why);
  snprintf(unanswered, sizeof unanswered, "%s", dlock_client_errmsg(NULL));
  return dlock_seterr(DLOCK_ECONN, "%s; leaving the queue got no answer either (%s)", why,
                      unanswered);
}

static int do_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline,
                      bool try_only) {
  etcd_client *ec = bc->priv;
  etcd_lock *lk = bl->priv;
  char *name = dlock__etcd_lock_name(ec->prefix, bl->key, bl->keylen);
  char *value = dlock__etcd_value(bl->owner, bl->label);
  int rc = name && value ? 0 : dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  int64_t sent = 0;
  for (int round = 0; rc == 0; round++) {
    dlock_lease *l;
    if ((rc = dlock_lease_get(ec->leases, bl->ttl_ms, try_only ? -1 : deadline, &l)) < 0)
      break;
    char *key = dlock__etcd_lock_key(name, lease_id(l));
    int64_t rev = 0;
    bool placed = false;
    sent = now_ns();
    rc = key ? queue_once(ec, bl, l, name, key, value, deadline, try_only, &rev, &placed)
             : dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
    /* Under mu, so that a lease going now finds the lock (lease_gone). */
    pthread_mutex_lock(&ec->mu);
    if (rc == 0 && dlock_lease_dead(ec->leases, l))
      rc = 1; /* the lease went while we were granted: the key went with it */
    int64_t fresh = dlock_lease_fresh_ns(ec->leases, l);
    if (rc == 0) {
      lk->bl = bl;
      lk->lease = l;
      lk->key = key;
      lk->named = lease_id(l);
      lk->rev = rev;
      lk->confirmed_ns = fresh;
      lk->listed = true;
      lk->next = ec->held;
      if (ec->held)
        ec->held->prev = lk;
      ec->held = lk;
      bl->token = (uint64_t)rev;
      bl->sent_ns = fresh;
      key = NULL;
    } else if (rc < 0 && placed) {
      lk->lease = l; /* for leave_queue, or the core's give-back */
      lk->named = lease_id(l);
      lk->rev = rev;
    } else {
      dlock_lease_put(ec->leases, l);
    }
    pthread_mutex_unlock(&ec->mu);
    free(key);
    if (rc == 1) {
      rc = round < REQUEUE_MAX ? 0 : lost_while_acquiring(bl->key);
      continue;
    }
    break;
  }
  /* A request cut short by the end of the caller's wait is a timeout, not
   * an unreachable cluster. */
  if ((rc == DLOCK_ECONN || rc == DLOCK_ETIMEDOUT) && !try_only && deadline >= 0 &&
      now_ns() >= deadline)
    rc = dlock_seterr(DLOCK_ETIMEDOUT, "etcd: timed out waiting for '%s'", bl->key);
  if (rc < 0 && lk->lease)
    rc = leave_queue(ec, bl, rc, deadline, sent);
  free(name);
  free(value);
  return rc;
}

static int etcd_try_acquire(dlock_backend_client *bc, dlock_backend_lock *bl) {
  return do_acquire(bc, bl, -1, true);
}

static int etcd_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline_ns) {
  return do_acquire(bc, bl, deadline_ns, false);
}

/* ---- renew / release ---- */

/* Move a held lock to the lease of its new ttl.  A put keeps the key's
 * create_revision, so token and queue place stay. */
static int move_lease(etcd_client *ec, etcd_lock *lk, int64_t deadline) {
  dlock_lease *nl;
  int rc = dlock_lease_get(ec->leases, lk->bl->ttl_ms, deadline, &nl);
  if (rc < 0)
    return rc;
  char *value = dlock__etcd_value(lk->bl->owner, lk->bl->label);
  dlock__etcd_txn t;
  enum dlock__etcd_fault f = DLOCK__ETCD_F_NONE;
  rc = txn(ec, value ? dlock__etcd_tx_move(lk->key, lk->rev, lease_id(nl), value) : NULL,
           dlock_backend_deadline(ec->bc, deadline), &t, &f);
  free(value);
  if (rc == 0 && !t.succeeded)
    rc = dlock_seterr(DLOCK_ELOST, "etcd: '%s' is no longer ours", lk->bl->key);
  if (f == DLOCK__ETCD_F_LEASE_GONE) {
    /* The new lease, not the lock: the next renewal gets another. */
    dlock_lease_gone(ec->leases, nl);
    rc = dlock_seterr(DLOCK_ECONN, "etcd: the lease for ttl %lld ms vanished; retrying",
                      (long long)lk->bl->ttl_ms);
  }
  dlock__etcd_txn_free(&t);
  pthread_mutex_lock(&ec->mu);
  if (rc == 0) {
    dlock_lease *old = lk->lease;
    lk->lease = nl;
    dlock_lease_put(ec->leases, old);
  } else {
    dlock_lease_put(ec->leases, nl);
  }
  pthread_mutex_unlock(&ec->mu);
  return rc;
}

/* For dlock_lease_renew: the lease BL rides on, and when it was last
 * confirmed. */
static dlock_lease *lock_lease(dlock_backend_lock *bl, int64_t *confirmed_ns) {
  etcd_lock *lk = bl->priv;
  *confirmed_ns = lk->confirmed_ns;
  return lk->lease;
}

/* Renew N locks: one keepalive per lease among them (none if another
 * renewal already confirmed it since these locks were last confirmed), and
 * one txn per hundred locks checking that their keys are still there. */
/* renew_many's check of a batch: does each key still exist, created by
 * our put? */
static int check_keys(void *ud, dlock_backend_lock *const *batch, size_t m, int64_t deadline,
                      int *rcs) {
  etcd_client *ec = ud;
  const char *keys[CHECK_BATCH];
  int64_t revs[CHECK_BATCH];
  if (m > CHECK_BATCH)
    return dlock_seterr(DLOCK_EINVAL, "etcd: %zu keys to check at once", m);
  for (size_t k = 0; k < m; k++) {
    const etcd_lock *lk = batch[k]->priv;
    keys[k] = lk->key;
    revs[k] = lk->rev;
  }
  pthread_mutex_lock(&ec->mu);
  ec->checks.txns++;
  pthread_mutex_unlock(&ec->mu);
  dlock__etcd_txn t;
  int rc = txn(ec, dlock__etcd_tx_check(keys, revs, m),
               dlock_backend_deadline(ec->bc, deadline), &t, NULL);
  for (size_t k = 0; rc == 0 && k < m; k++) {
    const dlock__etcd_kv *kv = t.succeeded ? NULL : first_kv(&t, k);
    rcs[k] = t.succeeded || (kv && kv->create_revision == revs[k])
                 ? 0
                 : dlock_seterr(DLOCK_ELOST, "etcd: the key of '%s' was deleted", batch[k]->key);
  }
  dlock__etcd_txn_free(&t);
  return rc;
}

/* Reads the keys of lease L, on which M of the pass's locks are to be
 * checked (by DEADLINE): 1 with *KS when it could, 0 when it should not
 * be read (too few locks due, too many others on the lease, or too many
 * bytes for one answer), or a negative code. */
static int lease_keys(etcd_client *ec, dlock_lease *l, size_t m, int64_t deadline,
                      dlock__etcd_keys *ks) {
  if (m < LEASE_CHECK_MIN)
    return 0;
  size_t bytes = 0, on = 0;
  pthread_mutex_lock(&ec->mu);
  for (const etcd_lock *lk = ec->held; lk; lk = lk->next)
    if (lk->lease == l && lk->key) {
      on++;
      bytes += strlen(lk->key) + 3; /* a tag and a length: two or three bytes */
    }
  bool read = bytes <= LEASE_CHECK_BYTES && on <= LEASE_CHECK_SPREAD * m;
  if (read)
    ec->checks.lease_reads++;
  pthread_mutex_unlock(&ec->mu);
  if (!read)
    return 0;
  int64_t ttl_ms = -1;
  int rc = ec->tp->timetolive(ec->tps, lease_id(l), dlock_backend_deadline(ec->bc, deadline),
                              &ttl_ms, ks);
  if (rc < 0)
    return rc;
  if (ttl_ms < 0)
    dlock__etcd_keys_free(ks); /* gone: its keys went with it */
  return 1;
}

/* Before the check txns: a lock whose lease, read with its keys, still has
 * its key is confirmed (RCS DLOCK_LEASE_PENDING until the txns are done).
 * The others (no longer listed, on a lease that is gone, or every lock
 * of a lease whose read failed) are left to the txns, so that only the
 * store's answer for a key declares its lock lost.  A lease's key list is
 * the leader's view as it has applied the log: a deletion it has not
 * applied yet is seen by the next pass. */
static void check_by_lease(etcd_client *ec, dlock_backend_lock **bls, size_t n, int *rcs) {
  dlock_lease *leases[LEASE_CHECK_LEASES];
  size_t counts[LEASE_CHECK_LEASES] = {0}, nl = 0;
  int64_t dmin = INT64_MAX;
  for (size_t i = 0; i < n; i++) {
    if (rcs[i] != 0)
      continue;
    int64_t d = bls[i]->io_deadline_ns ? bls[i]->io_deadline_ns : INT64_MAX;
    if (d < dmin)
      dmin = d;
    dlock_lease *l = ((etcd_lock *)bls[i]->priv)->lease;
    size_t j = 0;
    while (j < nl && leases[j] != l)
      j++;
    if (j == nl) {
      if (nl == LEASE_CHECK_LEASES)
        continue;
      leases[nl++] = l;
    }
    counts[j]++;
  }
  /* The reads, one after another, have the first half of the time left to
   * the soonest due of the pass's locks (on a read lease or not), so that
   * slow reads still leave the txns time to check every one of them. */
  int64_t t0 = now_ns();
  int64_t by = dmin == INT64_MAX ? -1 : t0 + (dmin - t0) / 2;
  /* The backoff counts passes that had a lease to read, not leases. */
  bool readable = false;
  for (size_t j = 0; j < nl; j++)
    readable |= counts[j] >= LEASE_CHECK_MIN;
  pthread_mutex_lock(&ec->mu);
  bool skip = ec->lease_check_skip > 0;
  if (skip && readable)
    ec->lease_check_skip--;
  pthread_mutex_unlock(&ec->mu);
  if (skip)
    return;
  for (size_t j = 0; j < nl; j++) {
    if (by >= 0 && now_ns() >= by)
      continue;
    dlock__etcd_keys ks = {0};
    int rc = lease_keys(ec, leases[j], counts[j], by, &ks);
    if (rc < 0) {
      pthread_mutex_lock(&ec->mu);
      ec->lease_check_skip = LEASE_CHECK_BACKOFF;
      pthread_mutex_unlock(&ec->mu);
      dlock__clear_err();
      continue;
    }
    for (size_t i = 0; rc == 1 && i < n; i++) {
      const etcd_lock *lk = bls[i]->priv;
      if (rcs[i] == 0 && lk->lease == leases[j] && dlock__etcd_keys_has(&ks, lk->key))
        rcs[i] = DLOCK_LEASE_PENDING;
    }
    dlock__etcd_keys_free(&ks);
  }
}

static int etcd_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                           int *rcs) {
  etcd_client *ec = bc->priv;
  for (size_t i = 0; i < n; i++) {
    etcd_lock *lk = bls[i]->priv;
    rcs[i] = DLOCK_LEASE_PENDING;
    pthread_mutex_lock(&ec->mu);
    bool lost = !lk->listed || lk->lost;
    bool moved = !lost && bls[i]->ttl_ms != dlock_lease_ttl_ms(lk->lease);
    pthread_mutex_unlock(&ec->mu);
    if (lost)
      rcs[i] = dlock_seterr(DLOCK_ELOST, "etcd: '%s' was lost", bls[i]->key);
    else if (moved) {
      int64_t dl = bls[i]->io_deadline_ns ? bls[i]->io_deadline_ns : -1;
      int rc = move_lease(ec, lk, dl);
      if (rc < 0)
        rcs[i] = rc;
    }
  }
  /* Keepalives, lease by lease. */
  int lrc = dlock_lease_renew(ec->leases, bls, n, rcs, lock_lease);
  if (lrc < 0)
    return lrc;
  /* The keys: those of a lease with many by one read of its keys, the
   * others a hundred at a time. */
  check_by_lease(ec, bls, n, rcs);
  int crc = dlock_lease_check(bls, n, rcs, CHECK_BATCH, check_keys, ec);
  for (size_t i = 0; i < n; i++)
    if (rcs[i] == DLOCK_LEASE_PENDING)
      rcs[i] = 0;
  if (crc < 0)
    return crc;
  pthread_mutex_lock(&ec->mu);
  for (size_t i = 0; i < n; i++) {
    etcd_lock *lk = bls[i]->priv;
    if (rcs[i] == 0)
      lk->confirmed_ns = bls[i]->sent_ns;
    else if (rcs[i] == DLOCK_ELOST)
      lk->lost = true;
  }
  pthread_mutex_unlock(&ec->mu);
  return 0;
}

static int etcd_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  etcd_client *ec = bc->priv;
  etcd_lock *lk = bl->priv;
  pthread_mutex_lock(&ec->mu);
  bool lost = lk->lost;
  if (!lk->listed) {
    pthread_mutex_unlock(&ec->mu);
    return drop_held(ec, bl, lost); /* again, or an attempt's give-back */
  }
  /* Out of the registry first, so no loss report names a lock the core is
   * about to free. */
  if (lk->prev)
    lk->prev->next = lk->next;
  else
    ec->held = lk->next;
  if (lk->next)
    lk->next->prev = lk->prev;
  lk->listed = false;
  pthread_mutex_unlock(&ec->mu);
  free(lk->key);
  lk->key = NULL;
  return drop_held(ec, bl, lost);
}

/* ---- inspect / list / break / control ---- */

/* What LEASE has left, or -1.  The remaining time is a nicety: a request
 * that fails leaves it unknown, and the caller's message as it was. */
static int64_t lease_left_ms(etcd_client *ec, int64_t lease, int64_t deadline) {
  char why[512];
  snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
  int64_t ttl_ms = -1;
  if (ec->tp->timetolive(ec->tps, lease, dlock_backend_deadline(ec->bc, deadline), &ttl_ms,
                        NULL) < 0)
    ttl_ms = -1;
  dlock_seterr(0, "%s", why);
  return ttl_ms;
}

static int etcd_inspect(dlock_backend_client *bc, const char *key, size_t keylen,
                        dlock_info *info) {
  etcd_client *ec = bc->priv;
  char *name = dlock__etcd_lock_name(ec->prefix, key, keylen);
  dlock__etcd_txn t;
  int rc = txn(ec, name ? dlock__etcd_tx_first(name) : NULL,
               dlock_backend_deadline(ec->bc, -1), &t, NULL);
  free(name);
  info->ttl_ms = -1;
  const dlock__etcd_kv *kv = rc == 0 ? first_kv(&t, 0) : NULL;
  int64_t lease = 0;
  if (kv) {
    info->held = 1;
    info->token = (uint64_t)kv->create_revision;
    dlock__etcd_value_split(kv->value, kv->valuelen, info->owner, sizeof info->owner,
                            info->label, sizeof info->label);
    lease = kv->lease;
  }
  dlock__etcd_txn_free(&t);
  if (rc == 0 && lease > 0)
    info->ttl_ms = lease_left_ms(ec, lease, -1);
  return rc;
}

/* What a listing has learnt of leases: a lease's time left, as looked up
 * at AT.  dlock clients carry all their locks on one lease per ttl, so a
 * walk over many locks asks about few leases; an entry serves for a
 * second, less the time since, and is then asked about again. */
typedef struct lease_seen {
  int64_t id; /* 0: free slot */
  int64_t ttl_ms;
  int64_t at;
  bool asked;
} lease_seen;

typedef struct lease_memo {
  lease_seen *slot;
  size_t cap, n; /* cap a power of two, or 0 */
} lease_memo;

#define MEMO_FRESH_NS 1000000000LL

static lease_seen *memo_find(lease_memo *m, int64_t id) {
  size_t i = (size_t)(((uint64_t)id * 0x9e3779b97f4a7c15ull) >> 32) & (m->cap - 1);
  while (m->slot[i].id != 0 && m->slot[i].id != id)
    i = (i + 1) & (m->cap - 1);
  return &m->slot[i];
}

/* The slot for ID, made when it is new; NULL when out of memory. */
static lease_seen *memo_get(lease_memo *m, int64_t id) {
  if ((m->n + 1) * 2 > m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    lease_memo grown = {calloc(cap, sizeof *grown.slot), cap, 0};
    if (!grown.slot)
      return NULL;
    for (size_t i = 0; i < m->cap; i++)
      if (m->slot[i].id != 0) {
        *memo_find(&grown, m->slot[i].id) = m->slot[i];
        grown.n++;
      }
    free(m->slot);
    *m = grown;
  }
  lease_seen *s = memo_find(m, id);
  if (s->id == 0) {
    s->id = id;
    s->asked = false;
    m->n++;
  }
  return s;
}

static int64_t memo_left_ms(etcd_client *ec, lease_memo *m, int64_t id, int64_t deadline) {
  if (id == 0)
    return -1; /* a key without a lease: no expiry */
  lease_seen *s = memo_get(m, id);
  int64_t now = now_ns();
  if (!s)
    return lease_left_ms(ec, id, deadline);
  if (!s->asked || now - s->at >= MEMO_FRESH_NS) {
    s->ttl_ms = lease_left_ms(ec, id, deadline);
    s->at = now;
    s->asked = true;
    return s->ttl_ms;
  }
  if (s->ttl_ms < 0)
    return -1;
  int64_t left = s->ttl_ms - (now - s->at) / 1000000;
  return left > 0 ? left : 0;
}

/* A listing's holder of one name so far: the key under the name with the
 * lowest create_revision seen yet. */
typedef struct list_holder {
  bool have;
  char key[DLOCK_KEY_MAX + 1];
  size_t keylen;
  int64_t rev, lease;
  dlock_info info;
} list_holder;

static void holder_take(list_holder *h, const dlock__etcd_kv *kv) {
  h->have = true;
  h->rev = kv->create_revision;
  h->lease = kv->lease;
  memset(&h->info, 0, sizeof h->info);
  h->info.held = 1;
  h->info.token = (uint64_t)kv->create_revision;
  dlock__etcd_value_split(kv->value, kv->valuelen, h->info.owner, sizeof h->info.owner,
                          h->info.label, sizeof h->info.label);
}

typedef struct list_walk {
  etcd_client *ec;
  dlock_backend_emit_fn emit;
  void *ud;
  int64_t deadline;
  lease_memo leases;
  size_t reported;
} list_walk;

/* Hand H over.  The caller's time in EMIT is not the store's: the walk's
 * deadline moves by as much. */
static int holder_emit(list_walk *w, list_holder *h) {
  h->have = false;
  h->info.ttl_ms = memo_left_ms(w->ec, &w->leases, h->lease, w->deadline);
  int64_t t0 = now_ns();
  int rc = w->emit(w->ud, h->key, h->keylen, &h->info);
  w->deadline += now_ns() - t0;
  w->reported++;
  return rc;
}

static int bytes_cmp(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  return c ? c : al < bl ? -1 : al > bl;
}

/* Every name under the range, page by page in key order.  The keys of one
 * name are next to each other in that order (names hold no '/'), but
 * ordered by lease, not by age: a name's holder is known only once its
 * last key has been seen, which may be on the next page.  All pages are
 * read at the first one's revision, so that a name split between two
 * pages is seen as it was at one moment. */
static int etcd_list(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
                     dlock_backend_emit_fn emit, void *ud) {
  etcd_client *ec = bc->priv;
  pthread_mutex_lock(&ec->mu);
  int64_t limit = ec->list_page > 0 ? ec->list_page : DLOCK__ETCD_LIST_PAGE;
  pthread_mutex_unlock(&ec->mu);
  list_walk w = {.ec = ec, .emit = emit, .ud = ud,
                 .deadline = now_ns() + bc->timeout_ms * 1000000};
  char *start = dlock__etcd_lock_name(ec->prefix, prefix, prefixlen);
  size_t sl = start ? strlen(start) : 0;
  char *end = start ? malloc(sl + 1) : NULL;
  /* FROM: where the next page starts, the last key seen and a NUL. */
  size_t fromcap = sl + 1, fromlen = sl;
  char *from = end ? malloc(fromcap) : NULL;
  list_holder *h = from ? calloc(1, sizeof *h) : NULL;
  if (!h) {
    free(start);
    free(end);
    free(from);
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  }
  size_t el = dlock__etcd_prefix_end(start, sl, end);
  memcpy(from, start, sl);
  char key[DLOCK_KEY_MAX + 1];
  size_t keylen;
  int64_t rev = 0;
  int rc = 0;
  for (bool more = true; more && rc == 0;) {
    /* Each page, with the lease look-ups of its holders, within one
     * ?timeout=: a store of many names or leases takes more pages, not a
     * failed listing. */
    w.deadline = now_ns() + bc->timeout_ms * 1000000;
    dlock__etcd_txn t;
    rc = txn(ec, dlock__etcd_tx_page(from, fromlen, end, el, rev, limit),
             dlock_backend_deadline(ec->bc, w.deadline), &t, NULL);
    if (rc < 0 && rev && dlock__etcd_compacted(dlock_client_errmsg(NULL))) {
      /* The store forgot the walk's revision: the rest as it is now. */
      rev = 0;
      rc = 0;
      continue;
    }
    if (rc < 0) {
      char why[512];
      snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
      rc = dlock_seterr(rc, "%s (listing, after %zu locks)", why, w.reported);
      break;
    }
    if (t.nres != 1 || t.res[0].op != DLOCK__ETCD_OP_RANGE) {
      dlock__etcd_txn_free(&t);
      rc = dlock_seterr(DLOCK_EBACKEND, "etcd: a listing's range came back without its keys");
      break;
    }
    if (!rev)
      rev = t.revision;
    const dlock__etcd_opres *r = &t.res[0];
    for (size_t i = 0; i < r->nkvs && rc == 0; i++) {
      const dlock__etcd_kv *kv = &r->kvs[i];
      if (!kv->key || !dlock__etcd_key_of(ec->prefix, kv->key, kv->keylen, key, &keylen))
        continue; /* not a lock: someone else's data under the prefix */
      if (h->have && keylen == h->keylen && memcmp(key, h->key, keylen) == 0) {
        if (kv->create_revision < h->rev)
          holder_take(h, kv);
        continue;
      }
      if (h->have)
        rc = holder_emit(&w, h);
      memcpy(h->key, key, keylen + 1);
      h->keylen = keylen;
      holder_take(h, kv);
    }
    /* COUNT is what [FROM, END) held at REV: more than this page means
     * another page, which must start past this one. */
    more = rc == 0 && r->nkvs > 0 && r->count > (int64_t)r->nkvs;
    if (more) {
      const dlock__etcd_kv *last = &r->kvs[r->nkvs - 1];
      if (!last->key || bytes_cmp(last->key, last->keylen, from, fromlen) < 0) {
        rc = dlock_seterr(DLOCK_EBACKEND, "etcd: a listing's page went backwards");
      } else if (last->keylen + 1 > fromcap) {
        char *f = realloc(from, last->keylen + 1);
        if (!f)
          rc = dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
        else {
          from = f;
          fromcap = last->keylen + 1;
        }
      }
      if (rc == 0) {
        memcpy(from, last->key, last->keylen);
        from[last->keylen] = '\0';
        fromlen = last->keylen + 1;
      }
    }
    dlock__etcd_txn_free(&t);
  }
  if (rc == 0 && h->have)
    rc = holder_emit(&w, h);
  free(w.leases.slot);
  free(h);
  free(start);
  free(end);
  free(from);
  return rc;
}

/* Rounds of read and delete before a break gives up on a holder that
 * keeps changing. */
#define BREAK_ROUNDS 5

/* The holder as read, then deleted only if it is still that key as it was
 * (create and mod revision): a holder that changed meanwhile is read again.
 * Only the key goes; its lease stays, since it may carry the holder's other
 * locks.  The holder sees the key gone at its next renewal's check, and
 * its successor is woken by the delete like by a release. */
static int etcd_force_release(dlock_backend_client *bc, const char *key, size_t keylen,
                              const dlock_info *holder, dlock_info *broken) {
  etcd_client *ec = bc->priv;
  int64_t deadline = now_ns() + bc->timeout_ms * 1000000;
  char *name = dlock__etcd_lock_name(ec->prefix, key, keylen);
  dlock__etcd_txn t;
  int rc = txn(ec, name ? dlock__etcd_tx_first(name) : NULL,
               dlock_backend_deadline(ec->bc, deadline), &t, NULL);
  /* After the first read only the holder it found is broken: a break
   * whose answer was lost and that the transport sent again finds it gone
   * and must not go on to the waiter its delete woke. */
  int64_t pin = holder->owner[0] ? 0 : (int64_t)holder->token;
  /* The first read is res[0] of a txn of one range; a failed break's
   * failure branch is the same. */
  for (int round = 1; rc == 0; round++) {
    const dlock__etcd_kv *kv = first_kv(&t, 0);
    if (!kv || !kv->key) {
      broken->held = 0;
      break;
    }
    if (round > 1 && pin && kv->create_revision != pin) {
      broken->held = 0; /* the holder looked at went (perhaps by this break) */
      break;
    }
    dlock_info seen;
    memset(&seen, 0, sizeof seen);
    seen.held = 1;
    seen.token = (uint64_t)kv->create_revision;
    seen.ttl_ms = -1;
    dlock__etcd_value_split(kv->value, kv->valuelen, seen.owner, sizeof seen.owner, seen.label,
                            sizeof seen.label);
    if (holder->owner[0] ? strcmp(seen.owner, holder->owner) != 0
                         : holder->token && seen.token != holder->token) {
      rc = dlock_seterr(DLOCK_EBUSY, "etcd: '%.*s' is held by another holder (token %" PRIu64
                        ") than the one named", (int)keylen, key, seen.token);
      break;
    }
    if (round > BREAK_ROUNDS) {
      rc = dlock_seterr(DLOCK_EBUSY, "etcd: the holder of '%.*s' changed %d times while it was "
                        "broken; nothing was broken", (int)keylen, key, BREAK_ROUNDS);
      break;
    }
    if (!pin)
      pin = kv->create_revision;
    char *hk = strdup(kv->key);
    int64_t create = kv->create_revision, mod = kv->mod_revision, lease = kv->lease;
    dlock__etcd_txn_free(&t);
    if (!hk) {
      rc = dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
      break;
    }
    rc = txn(ec, dlock__etcd_tx_break(name, hk, create, mod),
             dlock_backend_deadline(ec->bc, deadline), &t, NULL);
    free(hk);
    if (rc == 0 && t.succeeded) {
      *broken = seen;
      /* Asked after the delete, which must not wait for it; the lease
       * lives on. */
      if (lease > 0)
        broken->ttl_ms = lease_left_ms(ec, lease, deadline);
      break;
    }
  }
  dlock__etcd_txn_free(&t);
  free(name);
  if (rc < 0 && rc != DLOCK_EBUSY) {
    char why[512];
    snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
    rc = dlock_seterr(rc, "%s (breaking '%.*s')", why, (int)keylen, key);
  }
  return rc;
}

static int etcd_control(dlock_backend_client *bc, dlock_backend_lock *bl, int op, void *arg) {
  etcd_client *ec = bc->priv;
  if (!arg)
    return dlock_seterr(DLOCK_EINVAL, "etcd: control operation %d needs an argument", op);
  int rc = 0;
  pthread_mutex_lock(&ec->mu);
  switch (op) {
  case DLOCK_ETCD_CTL_STATS:
    *(struct dlock_etcd_stats *)arg = ec->stats;
    dlock_leases_counts(ec->leases, &((struct dlock_etcd_stats *)arg)->grants,
                        &((struct dlock_etcd_stats *)arg)->keepalives);
    ((struct dlock_etcd_stats *)arg)->failovers = ec->tp->failovers(ec->tps);
    break;
  case DLOCK_ETCD_CTL_ENDPOINT:
    ec->tp->endpoint(ec->tps, arg);
    break;
  case DLOCK_ETCD_CTL_CHECKS:
    *(struct dlock_etcd_checks *)arg = ec->checks;
    break;
  case DLOCK_ETCD_CTL_LEASE: {
    etcd_lock *lk = bl ? bl->priv : NULL;
    if (!lk || !lk->listed)
      rc = dlock_seterr(DLOCK_EINVAL, "etcd: DLOCK_ETCD_CTL_LEASE needs a held lock");
    else
      *(int64_t *)arg = lease_id(lk->lease);
    break;
  }
  case DLOCK_ETCD_CTL_STALE_WATCH:
    ec->stale_watches = *(int *)arg;
    break;
  case DLOCK_ETCD_CTL_LIST_PAGE:
    if (*(int *)arg < 0)
      rc = dlock_seterr(DLOCK_EINVAL, "etcd: DLOCK_ETCD_CTL_LIST_PAGE needs 0 or more keys");
    else
      ec->list_page = *(int *)arg;
    break;
  default:
    rc = dlock_seterr(DLOCK_ENOTSUP, "etcd: unknown control operation %d", op);
  }
  pthread_mutex_unlock(&ec->mu);
  return rc;
}

static const char *const etcd_schemes[] = {"etcd", "etcd+https", "etcd+grpc", "etcd+grpcs",
                                           NULL};

const dlock_backend_ops dlock__etcd_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "etcd",
    .schemes = etcd_schemes,
    .caps = DLOCK_CAP_FENCING | DLOCK_CAP_NATIVE_WAIT | DLOCK_CAP_FAIR | DLOCK_CAP_LOSS_DETECT |
            DLOCK_CAP_SERVER_TTL | DLOCK_CAP_CROSS_HOST | DLOCK_CAP_CROSS_PROCESS |
            DLOCK_CAP_HOLDER_INFO | DLOCK_CAP_LIST | DLOCK_CAP_BREAK,
    .client_size = sizeof(etcd_client),
    .lock_size = sizeof(etcd_lock),
    .open = etcd_open,
    .close = etcd_close,
    .try_acquire = etcd_try_acquire,
    .acquire = etcd_acquire,
    .release = etcd_release,
    .renew_many = etcd_renew_many,
    .inspect = etcd_inspect,
    .control = etcd_control,
    .list = etcd_list,
    .force_release = etcd_force_release,
};
