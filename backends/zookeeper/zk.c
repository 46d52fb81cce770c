/* ZooKeeper backend: sessions, the fair lock queue, loss detection.
 *
 * A session is the lease: every lock node is ephemeral, and the server
 * expires a session one negotiated timeout after it last heard from it.
 * Sessions are keyed by their requested timeout (the lock's ttl), so a
 * client that uses one ttl, the usual case, has exactly one session; a lock
 * asking for a shorter ttl gets a session that really expires that soon
 * after its holder dies.  They are the leases of the core's lease table
 * (dlock/lease.h), which connects one per timeout, shares its syncs and
 * closes its handle once it expired and nothing uses it any more.
 *
 * Validity follows the rule of every other store: a lock is valid until the
 * send time of the last request of its session that the server answered,
 * plus the lease, less the core's margin.  The C client's own pings keep
 * the session alive but tell us nothing we can time (their replies are not
 * visible), and the C client reports a disconnect only when its IO thread
 * has run and noticed, which after a pause or behind slow replies is far
 * later than the last time the server heard from us.  So a renewal is a
 * real request: one sync per session, shared by all its locks.
 *
 * The session that carries a lock would keep its node for as long as the
 * client's other locks, or the C client's pings, keep the session alive.
 * So open() sets bc->give_back_expired, and the core gives back, with
 * zk_release on its give-back thread, every lock whose validity ran out
 * unrenewed, every release the server left unanswered, and every attempt
 * that may have left a node (leave_queue), until the server answers.
 *
 * Only a request the leader must see counts as "answered": a write
 * (create, delete) or a sync.  The leader alone expires sessions, and a
 * follower cut off from it goes on answering reads (exists, getData,
 * getChildren) from its own copy for up to syncLimit x tickTime, all the
 * while the leader may expire our session and give the lock to the next
 * in line.  A follower forwards writes and syncs to the leader and cannot
 * answer them while cut off: they hang until our own deadline or fail
 * with a lost connection when it gives up on the leader, and neither
 * counts.  The leader checks that the session lives before it processes
 * the request, which it does after we sent it.
 *
 * The leader hears of activity on a session held through a follower from
 * that follower's pings (the leader pings its followers every tickTime/2),
 * not from the forwarded request.  Normally the ping after our request
 * moves the leader's expiry to our send time plus the timeout, or up to
 * tickTime/2 later: later than our bound, the safe direction.  Not
 * covered: a follower cut off after it answered our sync but before that
 * ping leaves the leader counting from the last touch the follower did
 * deliver, which can be older than our send time.  The window is one
 * reply and one ping wide, and the core's margin (ttl/100) is not sized
 * for it.
 *
 * Every request is asynchronous and waited for on a condition variable
 * bounded by ?timeout= (or the caller's deadline): the C client's own
 * request timeout is two thirds of the session timeout, which can be far
 * longer.  Watch and completion callbacks run on the C client's single
 * completion thread, so they only take short mutexes, signal and submit
 * requests they do not wait for (setting a watch on our node again after
 * a reconnect or a data change); anything that waits for an answer runs
 * on the acquiring thread or one of the core's.  The backend starts
 * no thread: the C client's IO and completion threads, which it starts
 * for every handle, are the only ones.  Closing a handle waits for those:
 * so the callbacks never give a session reference back (the last one
 * closes the handle), and the watcher only marks an expired session, for
 * the next thread that uses it to report it gone. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zookeeper/zookeeper.h>

#include "backends/zookeeper/zk-codec.h"
#include "dlock/lease.h"

/* How often an acquisition whose node vanished under it (session expired,
 * node deleted by someone else) queues again before giving up. */
#define REQUEUE_MAX 5

typedef struct zk_client zk_client;

/* A session: what the client's lease table (dlock/lease.h) keeps of each
 * of its leases, whose ttl is the session's requested timeout.  The table
 * keeps the send time of the latest request the leader answered (a write
 * or a sync, never a read a follower could answer alone, and the session's
 * creation): the session lives at least one timeout past it.  A session
 * lives from its grant until the table lets go of it, which closes the
 * handle first (sess_close), so that every callback of the handle runs
 * while the session does.  The flags are under zc->mu. */
typedef struct zk_sess {
  zk_client *zc;
  zhandle_t *zh;
  int64_t timeout_ms;   /* negotiated (zoo_recv_timeout) */
  bool ever_connected;
  bool connected;
  bool expired;         /* expired or refused: never used again */
  bool dropped;         /* the connection dropped since it was last connected */
} zk_sess;

static zk_sess *sess_of(const dlock_lease *s) { return dlock_lease_priv(s); }

/* bl->priv: a held lock, in the client's registry while held; or, after
 * a release or an attempt the server left unanswered, what the core's
 * give-back needs to delete our node.  Nothing points into it but the
 * registry, so the core may move it once it is out of there. */
typedef struct zk_lock {
  struct zk_lock *prev, *next;
  dlock_backend_lock *bl; /* while listed */
  /* The session our node is on, with a reference; NULL: we have no node
   * at the server (or it went with its session). */
  dlock_lease *sess;
  /* Our node's sequence number (its path is node_path's), or -1 when it
   * was created by a request that got no answer and is found by owner. */
  int64_t seq;
  int64_t ttl_ms;       /* the lease granted (bl->ttl_ms as last returned) */
  int64_t renew_since;  /* in renew_many: a sync unless answered after this */
  bool listed;
  bool lost;
} zk_lock;

/* An acquisition waiting for its predecessor's node to go. */
typedef struct zk_waiter {
  struct zk_waiter *next;
  zk_sess *sess;
  const char *path;
  bool fired;
} zk_waiter;

struct zk_client {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* session state changed, a watch fired */
  bool sync_ready;
  dlock_backend_client *bc;
  char *hosts;
  char *root;
  char *auth; /* "user:password" for digest, or NULL */
  bool container_ok;
  bool root_made; /* the root's components were found or made once */
  dlock_leases *sessions; /* dlock/lease.h */
  zk_lock *held;
  zk_waiter *waiters;
  uint64_t pred_events;
  uint64_t syncs; /* sync requests sent (DLOCK_ZK_CTL_SYNCS) */
};

static int64_t now_ns(void) { return dlock_backend_now_ns(); }

static void quiet_log(const char *message) { (void)message; }

static struct ACL_vector *acl_for(const zk_client *zc) {
  return zc->auth ? &ZOO_CREATOR_ALL_ACL : &ZOO_OPEN_ACL_UNSAFE;
}

/* Waits on CV under MU until DEADLINE (-1 = none).  False once it passed. */
static bool cv_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline) {
  return dlock_backend_cond_wait(cv, mu, deadline) == 0;
}

/* ---- loss bookkeeping (under zc->mu) ---- */

static void lose(zk_client *zc, zk_lock *lk) {
  if (lk->lost)
    return;
  lk->lost = true;
  dlock_backend_lock_lost(zc->bc, lk->bl);
}

/* The server ended S, and every lock on it with it. */
static void session_ended(zk_client *zc, zk_sess *s) {
  s->expired = true;
  s->connected = false;
  for (zk_lock *lk = zc->held; lk; lk = lk->next)
    if (sess_of(lk->sess) == s)
      lose(zc, lk);
}

/* The lease a lock of WANT_MS gets on S: what was asked, but never more
 * than the negotiated session timeout, which is all the server promises.
 * The server clamps the timeout to its [min, max]SessionTimeout (2 and 20
 * ticks by default); asking for more than the maximum gets the maximum, and
 * the lock's deadline and renewals (the core renews at a third of the
 * lease) must count that, not what was asked. */
static int64_t lease_ms(const zk_sess *s, int64_t want_ms) {
  return s->timeout_ms > 0 && s->timeout_ms < want_ms ? s->timeout_ms : want_ms;
}

/* Whether RC is an answer from the server, which it gives only on a live
 * session, rather than a local failure. */
static bool server_answered(int rc) {
  return rc == ZOK || rc == ZNONODE || rc == ZNODEEXISTS || rc == ZNOTEMPTY || rc == ZBADVERSION;
}

/* Our node for BL, numbered SEQ by its sequential create, malloc'd. */
static char *node_path(const zk_client *zc, const dlock_backend_lock *bl, int64_t seq) {
  char *dir = dlock__zk_lock_dir(zc->root, bl->key, bl->keylen);
  char *prefix = dir ? dlock__zk_node_prefix(dir, bl->owner) : NULL;
  size_t n = prefix ? strlen(prefix) + DLOCK__ZK_SEQ_DIGITS + 1 : 0;
  char *p = n ? malloc(n) : NULL;
  if (p)
    snprintf(p, n, "%s%0*lld", prefix, DLOCK__ZK_SEQ_DIGITS, (long long)seq);
  free(prefix);
  free(dir);
  return p;
}

/* The sequence number in our node's PATH, or -1. */
static int64_t seq_of(const char *path) {
  char guid[DLOCK__ZK_GUID_LEN + 1];
  int64_t seq;
  const char *name = strrchr(path, '/');
  return name && dlock__zk_parse_node(name + 1, guid, &seq) == 0 ? seq : -1;
}

/* Under zc->mu: the held lock whose node on S is PATH, or NULL. */
static zk_lock *held_at(zk_client *zc, const zk_sess *s, const char *path) {
  char guid[DLOCK__ZK_GUID_LEN + 1];
  int64_t seq;
  const char *name = strrchr(path, '/');
  if (!name || dlock__zk_parse_node(name + 1, guid, &seq) < 0)
    return NULL;
  for (zk_lock *lk = zc->held; lk; lk = lk->next)
    if (sess_of(lk->sess) == s && lk->seq == seq && strcmp(lk->bl->owner, guid) == 0)
      return lk;
  return NULL;
}

/* The watched read of a held lock's node.  Nobody waits for it, so it may
 * complete after the lock was released and freed: it names the lock by
 * session and path.  A session outlives every completion of its handle
 * (sess_close), so no other can take that name meanwhile. */
typedef struct own_watch {
  zk_client *zc;
  zk_sess *s;
  char path[];
} own_watch;

static void own_watch_done(int rc, const char *value, int len, const struct Stat *stat,
                           const void *data) {
  (void)value;
  (void)len;
  (void)stat;
  own_watch *w = (own_watch *)data;
  zk_client *zc = w->zc;
  pthread_mutex_lock(&zc->mu);
  /* A lost connection may have left no watch; the reconnect sets it
   * again.  ZCLOSING: the client is going. */
  zk_lock *lk = held_at(zc, w->s, w->path);
  if (lk && rc != ZOK && rc != ZCONNECTIONLOSS && rc != ZOPERATIONTIMEOUT && rc != ZCLOSING)
    lose(zc, lk);
  pthread_mutex_unlock(&zc->mu);
  free(w);
}

/* Submit the watch on LK's node, whose deletion by anyone else is a loss,
 * without waiting for it: a deletion or failure reported later declares
 * the lock lost, and renewal reports that even when it happened before
 * acquire returned.  A request only, so the watcher may set it again.
 * LK is held; under zc->mu or not. */
static int watch_own(zk_client *zc, zk_lock *lk) {
  char *path = node_path(zc, lk->bl, lk->seq);
  size_t n = path ? strlen(path) + 1 : 0;
  own_watch *w = n ? malloc(sizeof *w + n) : NULL;
  int rc = ZSYSTEMERROR;
  if (w) {
    w->zc = zc;
    w->s = sess_of(lk->sess);
    memcpy(w->path, path, n);
    rc = zoo_aget(w->s->zh, w->path, 1, own_watch_done, w);
    if (rc != ZOK)
      free(w);
  }
  free(path);
  return rc;
}

/* ---- the watcher (completion thread) ---- */

static void on_session_event(zk_client *zc, zk_sess *s, int state) {
  if (state == ZOO_CONNECTED_STATE) {
    if (!s->ever_connected || s->dropped) {
      int64_t was = s->timeout_ms;
      s->timeout_ms = zoo_recv_timeout(s->zh);
      /* A server with a lower maxSessionTimeout took the session back on
       * a shorter timeout, from the reconnect on.  The core keeps each
       * lock's deadline at the old lease until its next renewal, which
       * lowers it (lease_ms), and that renewal may not come, or not in
       * time: a lock whose lease is longer than the new timeout could be
       * HELD past what the server now promises.  Such locks are lost; the
       * case needs an ensemble whose members disagree on their limits. */
      if (s->dropped && was > 0 && s->timeout_ms > 0 && s->timeout_ms < was)
        for (zk_lock *lk = zc->held; lk; lk = lk->next)
          if (sess_of(lk->sess) == s && lk->ttl_ms > s->timeout_ms)
            lose(zc, lk);
    }
    if (s->dropped) {
      dlock_backend_log(zc->bc, DLOCK_LOG_INFO,
                        "zk: session reconnected (timeout %lld ms); checking its locks",
                        (long long)s->timeout_ms);
      /* A node deleted while we were away fires its watch when the
       * watches are registered again, but each one is read again as
       * well (watched: the read that set the watch may have been lost
       * with the connection) rather than rely on that alone. */
      for (zk_lock *lk = zc->held; lk; lk = lk->next)
        if (sess_of(lk->sess) == s && !lk->lost)
          watch_own(zc, lk);
    }
    s->ever_connected = true;
    s->connected = true;
    s->dropped = false;
  } else if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE) {
    /* Nothing to time here: the deadlines count from confirmed requests,
     * and a disconnect is reported late after a pause. */
    if (s->connected) {
      s->connected = false;
      s->dropped = true;
      dlock_backend_log(zc->bc, DLOCK_LOG_WARN,
                        "zk: connection to the ensemble lost; reconnecting within the session");
    }
  } else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
    dlock_backend_log(zc->bc, DLOCK_LOG_WARN, "zk: %s",
                      state == ZOO_EXPIRED_SESSION_STATE ? "the server expired the session"
                                                         : "the server refused the credentials");
    session_ended(zc, s);
  }
}

static void on_node_event(zk_client *zc, zk_sess *s, int type, const char *path) {
  for (zk_waiter *w = zc->waiters; w; w = w->next)
    if (w->sess == s && strcmp(w->path, path) == 0) {
      w->fired = true;
      zc->pred_events++;
    }
  zk_lock *lk = held_at(zc, s, path);
  if (lk && type == ZOO_DELETED_EVENT)
    lose(zc, lk);
  else if (lk) /* a data change used up the watch: a later deletion needs one */
    watch_own(zc, lk);
}

static void watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx) {
  (void)zh;
  zk_sess *s = ctx;
  zk_client *zc = s->zc;
  pthread_mutex_lock(&zc->mu);
  if (type == ZOO_SESSION_EVENT)
    on_session_event(zc, s, state);
  else if (path && type != ZOO_NOTWATCHING_EVENT)
    on_node_event(zc, s, type, path);
  pthread_cond_broadcast(&zc->cv);
  pthread_mutex_unlock(&zc->mu);
}

/* ---- requests: asynchronous, waited for with a deadline ---- */

enum { CALL_PENDING, CALL_DONE, CALL_ABANDONED };

typedef struct zk_call {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int state;
  int rc;
  zk_client *zc;
  zhandle_t *zh;
  int64_t sent_ns; /* taken before the request was submitted */
  /* The session of a write or sync, whose answer passed through the
   * leader and so confirms it; NULL for reads. */
  dlock_lease *confirms;
  bool has_stat;
  bool dir;       /* a lock dir's create, whose node others may use: never undone */
  bool container; /* a lock dir's create asked for a container node */
  struct Stat stat;
  char *str;
  char **kids;
  size_t nkids;
  char *data;
  int datalen;
} zk_call;

/* Made right before the request is submitted on S: its send time is taken
 * here, never later, so that it can only understate how long the session
 * lives.  CONFIRMS: S's lease when the request is one the leader must see
 * (write, sync), whose answer therefore confirms the session; NULL for
 * reads. */
static zk_call *call_new(zk_sess *s, dlock_lease *confirms) {
  zk_call *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  pthread_mutex_init(&c->mu, NULL);
  dlock__cond_init(&c->cv);
  c->zc = s->zc;
  c->zh = s->zh;
  c->confirms = confirms;
  c->sent_ns = now_ns();
  return c;
}

/* A request on session S, confirming it when LEADER (see call_new). */
static zk_call *call_on(dlock_lease *s, bool leader) {
  return call_new(sess_of(s), leader ? s : NULL);
}

static void call_free(zk_call *c) {
  if (!c)
    return;
  for (size_t i = 0; i < c->nkids; i++)
    free(c->kids[i]);
  free(c->kids);
  free(c->str);
  free(c->data);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

static void noop_void(int rc, const void *data) {
  (void)rc;
  (void)data;
}

/* Completion side: hand the result over, or clean up after a waiter that
 * gave up.  A create whose waiter gave up made a node nobody will use:
 * delete it now, or it would block the queue for the session's life. */
static void call_finish(zk_call *c) {
  pthread_mutex_lock(&c->mu);
  if (c->state == CALL_ABANDONED) {
    pthread_mutex_unlock(&c->mu);
    if (c->rc == ZOK && c->str && !c->dir)
      zoo_adelete(c->zh, c->str, -1, noop_void, NULL);
    call_free(c);
    return;
  }
  c->state = CALL_DONE;
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static void done_void(int rc, const void *data) {
  zk_call *c = (zk_call *)data;
  c->rc = rc;
  call_finish(c);
}

static void done_string(int rc, const char *value, const void *data) {
  (void)value;
  zk_call *c = (zk_call *)data;
  c->rc = rc;
  call_finish(c);
}

static void done_string_stat(int rc, const char *str, const struct Stat *stat, const void *data) {
  zk_call *c = (zk_call *)data;
  c->rc = rc;
  if (rc == ZOK) {
    c->str = str ? strdup(str) : NULL;
    if (!c->str)
      c->rc = ZSYSTEMERROR;
    if (stat) {
      c->stat = *stat;
      c->has_stat = true;
    }
  }
  call_finish(c);
}

static void done_strings(int rc, const struct String_vector *sv, const void *data) {
  zk_call *c = (zk_call *)data;
  c->rc = rc;
  if (rc == ZOK && sv && sv->count > 0) {
    c->kids = calloc((size_t)sv->count, sizeof *c->kids);
    if (!c->kids) {
      c->rc = ZSYSTEMERROR;
    } else {
      for (int32_t i = 0; i < sv->count; i++) {
        c->kids[i] = strdup(sv->data[i]);
        if (!c->kids[i]) {
          c->rc = ZSYSTEMERROR;
          break;
        }
        c->nkids++;
      }
    }
  }
  call_finish(c);
}

static void done_data(int rc, const char *value, int len, const struct Stat *stat,
                      const void *data) {
  zk_call *c = (zk_call *)data;
  c->rc = rc;
  if (rc == ZOK) {
    if (stat) {
      c->stat = *stat;
      c->has_stat = true;
    }
    if (value && len > 0) {
      c->data = malloc((size_t)len + 1);
      if (c->data) {
        memcpy(c->data, value, (size_t)len);
        c->data[len] = '\0';
        c->datalen = len;
      }
    }
  }
  call_finish(c);
}

/* After a zoo_a* call returned SUBMIT_RC: wait for the completion until
 * DEADLINE.  Returns the ZooKeeper code; *out keeps the call (results)
 * when the code came from the server, else the call is freed or left to
 * its completion.  An answer to a write or sync moves the session's
 * confirmation to the request's send time; an answer to a read does not,
 * since a follower that lost the leader still gives it. */
static int call_wait(zk_call *c, int submit_rc, int64_t deadline, zk_call **out) {
  *out = NULL;
  if (submit_rc != ZOK) {
    call_free(c);
    return submit_rc;
  }
  pthread_mutex_lock(&c->mu);
  while (c->state == CALL_PENDING) {
    if (!cv_wait(&c->cv, &c->mu, deadline)) {
      c->state = CALL_ABANDONED;
      pthread_mutex_unlock(&c->mu);
      return ZOPERATIONTIMEOUT;
    }
  }
  pthread_mutex_unlock(&c->mu);
  if (c->confirms && server_answered(c->rc))
    dlock_lease_confirm(c->zc->sessions, c->confirms, c->sent_ns);
  *out = c;
  return c->rc;
}

static int z_create(zk_client *zc, dlock_lease *s, const char *path, const char *val,
                    int mode, int64_t deadline, char **created, struct Stat *stat) {
  zk_call *c = call_on(s, true), *r;
  if (!c)
    return ZSYSTEMERROR;
  int vl = val ? (int)strlen(val) : -1;
  int rc = call_wait(c, zoo_acreate2(c->zh, path, val, vl, acl_for(zc), mode, done_string_stat, c),
                     dlock_backend_deadline(zc->bc, deadline), &r);
  if (r && rc == ZOK) {
    if (created) {
      *created = r->str;
      r->str = NULL;
    }
    if (stat)
      *stat = r->stat;
  }
  call_free(r);
  return rc;
}

/* Delete PATH if its data version is still VERSION (-1: any). */
static int z_delete_at(zk_client *zc, dlock_lease *s, const char *path, int version,
                       int64_t deadline) {
  zk_call *c = call_on(s, true), *r;
  if (!c)
    return ZSYSTEMERROR;
  int rc =
      call_wait(c, zoo_adelete(c->zh, path, version, done_void, c),
                dlock_backend_deadline(zc->bc, deadline), &r);
  call_free(r);
  return rc;
}

static int z_delete(zk_client *zc, dlock_lease *s, const char *path, int64_t deadline) {
  return z_delete_at(zc, s, path, -1, deadline);
}

/* getData, leaving a watch when WATCH is set.  Unlike exists, getData
 * leaves no watch behind on a node that is already gone. */
static int z_get(zk_client *zc, dlock_lease *s, const char *path, int watch, int64_t deadline,
                 zk_call **out) {
  zk_call *c = call_on(s, false);
  if (!c)
    return ZSYSTEMERROR;
  return call_wait(c, zoo_aget(c->zh, path, watch, done_data, c),
                   dlock_backend_deadline(zc->bc, deadline), out);
}

static int z_children(zk_client *zc, dlock_lease *s, const char *path, int64_t deadline,
                      zk_call **out) {
  zk_call *c = call_on(s, false);
  if (!c)
    return ZSYSTEMERROR;
  return call_wait(c, zoo_aget_children(c->zh, path, 0, done_strings, c),
                   dlock_backend_deadline(zc->bc, deadline), out);
}

/* Submits C, a sync, which a follower forwards to the leader and answers
 * only once the leader did; counted for DLOCK_ZK_CTL_SYNCS. */
static int sync_submit(zk_call *c) {
  pthread_mutex_lock(&c->zc->mu);
  c->zc->syncs++;
  pthread_mutex_unlock(&c->zc->mu);
  return zoo_async(c->zh, "/", done_string, c);
}

/* A sync, waited for: ZOK moves the session's confirmation to its send
 * time.  A follower without a leader holds it (until DEADLINE, at most
 * ?timeout=) or fails it with a lost connection, and neither counts. */
static int z_sync(zk_client *zc, dlock_lease *s, int64_t deadline) {
  zk_call *c = call_on(s, true), *r;
  if (!c)
    return ZSYSTEMERROR;
  int rc = call_wait(c, sync_submit(c), dlock_backend_deadline(zc->bc, deadline), &r);
  call_free(r);
  return rc;
}

/* The dlock code for a ZooKeeper failure, with a message. */
static int zk_err(int rc, const char *what, const char *key) {
  switch (rc) {
  case ZCONNECTIONLOSS:
  case ZOPERATIONTIMEOUT:
  case ZCLOSING:
    return dlock_seterr(DLOCK_ECONN, "zk: %s '%s': %s", what, key,
                        rc == ZOPERATIONTIMEOUT ? "no reply in time" : zerror(rc));
  case ZSESSIONEXPIRED:
  case ZINVALIDSTATE:
    return dlock_seterr(DLOCK_ECONN, "zk: %s '%s': the session expired", what, key);
  case ZNOAUTH:
  case ZAUTHFAILED:
    return dlock_seterr(DLOCK_EAUTH, "zk: %s '%s': %s", what, key, zerror(rc));
  case ZSYSTEMERROR:
    return dlock_seterr(DLOCK_ENOMEM, "zk: %s '%s': out of memory", what, key);
  default:
    return dlock_seterr(DLOCK_EBACKEND, "zk: %s '%s': %s", what, key, zerror(rc));
  }
}

/* ---- sessions: the lease table's requests (dlock/lease.h) ---- */

/* Close S's handle (the lease table's release).  The close joins the C
 * client's threads, which take zc->mu and run S's callbacks: so never
 * under zc->mu, nor on one of those threads, which therefore never give a
 * session reference back. */
static void sess_close(dlock_backend_client *bc, void *priv) {
  (void)bc;
  zk_sess *s = priv;
  if (s->zh)
    zookeeper_close(s->zh);
  s->zh = NULL;
}

/* Connect a session for locks of TTL_MS, logged in before the table lets
 * other threads use it.  Bounded by ?connect_timeout=, whatever the
 * request timeout: it is the session's first contact. */
static int sess_grant(dlock_backend_client *bc, void *priv, int64_t ttl_ms, int64_t deadline_ns,
                      int64_t *keep_ms) {
  (void)deadline_ns;
  zk_client *zc = bc->priv;
  zk_sess *s = priv;
  int64_t deadline = now_ns() + bc->connect_timeout_ms * 1000000;
  s->zc = zc;
  pthread_mutex_lock(&zc->mu);
  /* The watcher can run as soon as the handle exists: publish it under
   * the lock the watcher takes. */
  errno = 0;
  int timeout = ttl_ms > INT32_MAX ? INT32_MAX : (int)ttl_ms;
  s->zh = zookeeper_init2(zc->hosts, watcher, timeout, NULL, s, 0, quiet_log);
  int err = errno;
  zk_call *auth = NULL;
  int arc = ZOK;
  if (s->zh && zc->auth) {
    auth = call_new(s, NULL);
    arc = auth ? zoo_add_auth(s->zh, "digest", zc->auth, (int)strlen(zc->auth), done_void, auth)
               : ZSYSTEMERROR;
  }
  while (s->zh && !s->ever_connected && !s->expired && cv_wait(&zc->cv, &zc->mu, deadline))
    ;
  bool ok = s->zh && s->ever_connected && !s->expired;
  *keep_ms = s->timeout_ms;
  pthread_mutex_unlock(&zc->mu);
  int rc = 0;
  if (!s->zh) {
    rc = dlock_seterr(DLOCK_ECONN, "zk: cannot start a session with %s: %s", zc->hosts,
                      err ? strerror(err) : "invalid host list");
  } else if (!ok) {
    rc = dlock_seterr(DLOCK_ECONN, "zk: no session with %s within %lld ms", zc->hosts,
                      (long long)bc->connect_timeout_ms);
  }
  if (auth) {
    zk_call *r = NULL;
    arc = call_wait(auth, arc, rc == 0 ? deadline : 0, &r);
    call_free(r);
    if (rc == 0 && arc != ZOK)
      rc = arc == ZOPERATIONTIMEOUT
               ? dlock_seterr(DLOCK_ECONN, "zk: no answer to the login within %lld ms",
                              (long long)bc->connect_timeout_ms)
               : dlock_seterr(DLOCK_EAUTH, "zk: digest login refused: %s", zerror(arc));
  }
  if (rc < 0)
    sess_close(bc, s); /* the table forgets a failed grant */
  return rc;
}

/* What a sync's answer ZRC says of its session, as the lease table's
 * refresh returns it. */
static int sync_answer(int zrc) {
  if (zrc == ZSESSIONEXPIRED || zrc == ZINVALIDSTATE)
    return dlock_seterr(DLOCK_ELOST, "zk: the session expired");
  return zrc == ZOK ? 0 : zk_err(zrc, "cannot sync", "/");
}

/* The lease table's refresh in two steps: a sync sent, then waited for.
 * Its answer confirms the session at the table's own send time. */
static int sess_sync_send(dlock_backend_client *bc, void *priv, void **req) {
  (void)bc;
  zk_call *c = call_new(priv, NULL);
  int zrc = c ? sync_submit(c) : ZSYSTEMERROR;
  if (zrc != ZOK) {
    call_free(c);
    return sync_answer(zrc);
  }
  *req = c;
  return 0;
}

static int sess_sync_wait(dlock_backend_client *bc, void *priv, void *req, int64_t deadline_ns,
                          int64_t *keep_ms) {
  (void)bc;
  (void)priv;
  (void)keep_ms;
  zk_call *r = NULL;
  int zrc = call_wait(req, ZOK, deadline_ns, &r);
  call_free(r);
  return sync_answer(zrc);
}

static int sess_sync(dlock_backend_client *bc, void *priv, int64_t deadline_ns,
                     int64_t *keep_ms) {
  void *req;
  int rc = sess_sync_send(bc, priv, &req);
  return rc < 0 ? rc : sess_sync_wait(bc, priv, req, deadline_ns, keep_ms);
}

/* The server ended the session (a sync said so, or the watcher did and a
 * caller noticed): every lock on it is lost. */
static void sess_gone(dlock_backend_client *bc, dlock_lease *s) {
  zk_client *zc = bc->priv;
  pthread_mutex_lock(&zc->mu);
  session_ended(zc, sess_of(s));
  pthread_mutex_unlock(&zc->mu);
}

static const dlock_lease_ops zk_session_ops = {
    .store = "zk",
    .what = "session",
    .priv_size = sizeof(zk_sess),
    .grant = sess_grant,
    .refresh = sess_sync,
    .gone = sess_gone,
    .release = sess_close,
    .refresh_send = sess_sync_send,
    .refresh_wait = sess_sync_wait,
    .confirmed_by_use = true,
};

/* The session for locks of WANT_MS, with a reference: the table's, or a
 * new one in place of one the server expired, which the watcher could only
 * mark (it runs on the thread that closing the handle waits for).  0 or a
 * negative code. */
static int sess_get(zk_client *zc, int64_t want_ms, dlock_lease **out) {
  for (int tries = 0;; tries++) {
    dlock_lease *s;
    int rc = dlock_lease_get(zc->sessions, want_ms, -1, &s);
    if (rc < 0)
      return rc;
    pthread_mutex_lock(&zc->mu);
    bool expired = sess_of(s)->expired;
    pthread_mutex_unlock(&zc->mu);
    if (!expired) {
      *out = s;
      return 0;
    }
    dlock_lease_gone(zc->sessions, s);
    dlock_lease_put(zc->sessions, s);
    if (tries == 3)
      return dlock_seterr(DLOCK_ECONN, "zk: every session with %s expired at once", zc->hosts);
  }
}

/* Give back a reference to S, never under zc->mu: it may be the last. */
static void sess_put(zk_client *zc, dlock_lease *s) { dlock_lease_put(zc->sessions, s); }

/* ---- open / close ---- */

static void client_free(zk_client *zc) {
  dlock_leases_free(zc->sessions);
  zc->sessions = NULL;
  free(zc->hosts);
  free(zc->root);
  if (zc->auth) {
    memset(zc->auth, 0, strlen(zc->auth));
    free(zc->auth);
  }
  if (zc->sync_ready) {
    pthread_mutex_destroy(&zc->mu);
    pthread_cond_destroy(&zc->cv);
    zc->sync_ready = false;
  }
}

static int zk_open(dlock_backend_client *bc, dlock_url *url) {
  zk_client *zc = bc->priv;
  zc->bc = bc;
  zc->container_ok = true;
  pthread_mutex_init(&zc->mu, NULL);
  dlock__cond_init(&zc->cv);
  zc->sync_ready = true;
  /* The session that carries a lock keeps its node for as long as the
   * client's other locks, or the C client's pings, keep it alive. */
  bc->give_back_expired = true;
  int rc = dlock__zk_connect_string(url, &zc->hosts);
  if (rc == 0)
    rc = dlock__zk_root(dlock_url_path(url), bc->prefix, &zc->root);
  if (rc == 0 && bc->default_ttl_ms > INT32_MAX)
    rc = dlock_seterr(DLOCK_EINVAL, "zk: ttl of %lld ms is too long for a session timeout",
                      (long long)bc->default_ttl_ms);
  const char *user = dlock_url_user(url), *pw = dlock_url_password(url);
  if (rc == 0 && (user || pw)) {
    size_t n = strlen(user ? user : "") + strlen(pw ? pw : "") + 2;
    zc->auth = malloc(n);
    if (!zc->auth)
      rc = dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
    else
      snprintf(zc->auth, n, "%s:%s", user ? user : "", pw ? pw : "");
  }
  if (rc == 0)
    rc = dlock_leases_new(bc, &zk_session_ops, &zc->sessions);
  dlock_lease *s;
  if (rc == 0 && (rc = sess_get(zc, bc->default_ttl_ms, &s)) == 0)
    sess_put(zc, s);
  if (rc < 0)
    client_free(zc);
  return rc;
}

static void zk_close(dlock_backend_client *bc) { client_free(bc->priv); }

/* ---- the lock recipe ---- */

/* Create ROOT's components, once per client: a root deleted from outside
 * shows as a lock dir that cannot be made, which asks for them again. */
static int make_root(zk_client *zc, dlock_lease *s, int64_t deadline) {
  pthread_mutex_lock(&zc->mu);
  bool made = zc->root_made;
  pthread_mutex_unlock(&zc->mu);
  if (made)
    return ZOK;
  size_t rl = strlen(zc->root);
  char *p = strdup(zc->root);
  if (!p)
    return ZSYSTEMERROR;
  int rc = ZOK;
  for (size_t i = 1; i <= rl && rc == ZOK; i++) {
    if (i < rl && p[i] != '/')
      continue;
    char save = p[i];
    p[i] = '\0';
    rc = z_create(zc, s, p, NULL, ZOO_PERSISTENT, deadline, NULL, NULL);
    p[i] = save;
    if (rc == ZNODEEXISTS)
      rc = ZOK;
  }
  free(p);
  if (rc == ZOK) {
    pthread_mutex_lock(&zc->mu);
    zc->root_made = true;
    pthread_mutex_unlock(&zc->mu);
  }
  return rc;
}

/* The create of lock dir DIR, submitted and not waited for, so that the
 * create of the node in it can follow in the same round trip.  DIR is a
 * container node, which the server removes once its last child is gone,
 * so lock dirs of keys no longer used do not pile up; without container
 * support it is persistent and release deletes it when empty.  *SUBMIT
 * gets zoo_acreate2's code; NULL when out of memory. */
static zk_call *dir_create_send(zk_client *zc, dlock_lease *s, const char *dir, int *submit) {
  zk_call *c = call_on(s, true);
  if (!c)
    return NULL;
  pthread_mutex_lock(&zc->mu);
  c->dir = true;
  c->container = zc->container_ok;
  pthread_mutex_unlock(&zc->mu);
  *submit = zoo_acreate2(c->zh, dir, NULL, -1, acl_for(zc),
                         c->container ? ZOO_CONTAINER : ZOO_PERSISTENT, done_string_stat, c);
  return c;
}

/* Its answer: ZOK when DIR is there (made, or found); a server without
 * containers turns the client to persistent dirs, and a missing parent
 * asks for the root again. */
static int dir_create_wait(zk_client *zc, zk_call *c, int submit, int64_t deadline) {
  bool container = c->container;
  zk_call *r;
  int rc = call_wait(c, submit, dlock_backend_deadline(zc->bc, deadline), &r);
  call_free(r);
  pthread_mutex_lock(&zc->mu);
  if (container && (rc == ZUNIMPLEMENTED || rc == ZBADARGUMENTS || rc == ZAPIERROR))
    zc->container_ok = false;
  if (rc == ZNONODE)
    zc->root_made = false;
  pthread_mutex_unlock(&zc->mu);
  return rc == ZNODEEXISTS ? ZOK : rc;
}

typedef struct queue_view {
  zk_call *call; /* owns the names */
  dlock__zk_child *kids;
  size_t n;
} queue_view;

static void view_free(queue_view *v) {
  call_free(v->call);
  free(v->kids);
  memset(v, 0, sizeof *v);
}

/* Sort the children C got into *V, which takes C over. */
static int view_from(zk_call *c, queue_view *v) {
  memset(v, 0, sizeof *v);
  v->call = c;
  if (v->call->nkids) {
    v->kids = calloc(v->call->nkids, sizeof *v->kids);
    if (!v->kids) {
      view_free(v);
      return ZSYSTEMERROR;
    }
    v->n = dlock__zk_sort_children((const char *const *)v->call->kids, v->call->nkids, v->kids);
  }
  return ZOK;
}

/* List and sort DIR's queue.  ZNONODE when the dir is gone. */
static int list_queue(zk_client *zc, dlock_lease *s, const char *dir, int64_t deadline,
                      queue_view *v) {
  memset(v, 0, sizeof *v);
  zk_call *c = NULL;
  int rc = z_children(zc, s, dir, deadline, &c);
  if (rc != ZOK) {
    call_free(c);
    return rc;
  }
  return view_from(c, v);
}

/* Create our node and list DIR right behind it.  The server answers one
 * session's requests in order, so the listing already holds our node and
 * the uncontended case needs one round trip, not two.  *V stays empty
 * unless both succeeded; the caller then lists again. */
static int create_and_list(zk_client *zc, dlock_lease *s, const char *prefix, const char *data,
                           int dlen, const char *dir, int64_t deadline, char **created,
                           struct Stat *stat, queue_view *v) {
  memset(v, 0, sizeof *v);
  zk_call *cc = call_on(s, true), *lc = call_on(s, false), *r = NULL;
  if (!cc || !lc) {
    call_free(cc);
    call_free(lc);
    return ZSYSTEMERROR;
  }
  int64_t d = dlock_backend_deadline(zc->bc, deadline);
  int crc = zoo_acreate2(cc->zh, prefix, data, dlen, acl_for(zc), ZOO_EPHEMERAL_SEQUENTIAL,
                         done_string_stat, cc);
  int lrc = crc == ZOK ? zoo_aget_children(lc->zh, dir, 0, done_strings, lc) : crc;
  int rc = call_wait(cc, crc, d, &r);
  if (r && rc == ZOK) {
    *created = r->str;
    r->str = NULL;
    *stat = r->stat;
  }
  call_free(r);
  /* Without our node the listing is of no use: a deadline long past (0)
   * takes it only if it is already in, else leaves it to its completion. */
  int grc = call_wait(lc, lrc, rc == ZOK ? d : 0, &r);
  if (rc == ZOK && grc == ZOK)
    (void)view_from(r, v); /* on failure *v stays empty */
  else
    call_free(r);
  return rc;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* BL's node in DIR's queue on S, after a create of it got no answer: ZOK
 * with *SEQ when it is there, ZNONODE when it is not, or the listing's
 * failure. */
static int find_own(zk_client *zc, dlock_lease *s, const dlock_backend_lock *bl,
                    const char *dir, int64_t deadline, int64_t *seq) {
  queue_view v;
  int rc = list_queue(zc, s, dir, deadline, &v);
  long i = rc == ZOK ? dlock__zk_find(v.kids, v.n, bl->owner) : -1;
  if (i >= 0)
    *seq = v.kids[i].seq;
  else if (rc == ZOK)
    rc = ZNONODE;
  view_free(&v);
  return rc;
}

/* Put our entry in DIR's queue.  *path gets its full name and *czxid the
 * zxid that created it (the fencing token).  A create whose reply was lost
 * may have happened: look for our GUID before trying again, so one
 * acquisition never leaves a second node behind.  *first gets the queue as
 * listed right after the create, when that listing came back.  On failure
 * *path still names our node if we know of one, and *unsure says whether
 * a create that got no answer may have made one we could not find. */
static int enqueue(zk_client *zc, dlock_lease *s, dlock_backend_lock *bl, const char *dir,
                   int64_t deadline, char **path, uint64_t *czxid, queue_view *first,
                   bool *unsure) {
  memset(first, 0, sizeof *first);
  char *prefix = dlock__zk_node_prefix(dir, bl->owner);
  if (!prefix)
    return ZSYSTEMERROR;
  /* The node says who holds it and how long it can outlive its holder
   * (the session timeout), for inspect. */
  pthread_mutex_lock(&zc->mu);
  int64_t timeout = sess_of(s)->timeout_ms;
  pthread_mutex_unlock(&zc->mu);
  char data[DLOCK__ZK_DATA_MAX];
  int dlen = (int)dlock__zk_node_data(bl->label, timeout, data);
  int rc = ZOK;
  bool parents_made = false, make_dir = false;
  for (int attempt = 0; attempt < 4; attempt++) {
    struct Stat st = {0};
    char *created = NULL;
    /* A dir to make goes out right before the node's create: the server
     * answers one session's requests in order, so both take one trip. */
    int dsubmit = ZOK, drc = ZOK;
    zk_call *dc = make_dir ? dir_create_send(zc, s, dir, &dsubmit) : NULL;
    if (make_dir && !dc) {
      rc = ZSYSTEMERROR;
      break;
    }
    rc = create_and_list(zc, s, prefix, data, dlen, dir, deadline, &created, &st, first);
    if (dc)
      drc = dir_create_wait(zc, dc, dsubmit, deadline);
    if (rc == ZOK) {
      *path = created;
      *czxid = (uint64_t)st.czxid;
      break;
    }
    if (rc == ZNONODE && make_dir && drc != ZOK && drc != ZNONODE && drc != ZUNIMPLEMENTED &&
        drc != ZBADARGUMENTS && drc != ZAPIERROR) {
      rc = drc; /* the dir could not be made: that is the reason */
      break;
    }
    if (rc == ZNONODE && make_dir && drc != ZOK) {
      /* Made again as the answer asked: a persistent dir, or the root. */
      if (drc == ZNONODE && (rc = make_root(zc, s, deadline)) != ZOK)
        break;
      continue;
    }
    if (rc == ZNONODE && !parents_made) {
      parents_made = make_dir = true;
      if ((rc = make_root(zc, s, deadline)) != ZOK)
        break;
      continue;
    }
    make_dir = false;
    if (rc == ZNONODE) {
      /* The container went away between making it and using it. */
      parents_made = false;
      continue;
    }
    if (rc != ZCONNECTIONLOSS && rc != ZOPERATIONTIMEOUT)
      break;
    /* Outcome unknown.  A timed-out create deletes its own node when its
     * reply finally comes; a lost connection leaves us to find it. */
    if (rc == ZOPERATIONTIMEOUT)
      break;
    int64_t seq;
    int lrc = find_own(zc, s, bl, dir, deadline, &seq);
    if (lrc == ZOK) {
      zk_call *g = NULL;
      *path = node_path(zc, bl, seq);
      rc = *path ? z_get(zc, s, *path, 0, deadline, &g) : ZSYSTEMERROR;
      if (rc == ZOK)
        *czxid = (uint64_t)g->stat.czxid;
      call_free(g);
      break;
    }
    if (lrc != ZNONODE) {
      *unsure = true;
      rc = lrc;
      break;
    }
  }
  /* The last round only made the root again: no node to show for it. */
  if (rc == ZOK && !*path)
    rc = ZNONODE;
  free(prefix);
  return rc;
}

static void registry_add(zk_client *zc, zk_lock *lk) {
  lk->prev = NULL;
  lk->next = zc->held;
  if (zc->held)
    zc->held->prev = lk;
  zc->held = lk;
  lk->listed = true;
  /* The session outlives the locks that name it. */
  dlock_lease_hold(zc->sessions, lk->sess);
}

/* Under zc->mu.  True when LK was listed: the caller then gives back its
 * session reference (sess_put, once zc->mu is released). */
static bool registry_remove(zk_client *zc, zk_lock *lk) {
  if (!lk->listed)
    return false;
  if (lk->prev)
    lk->prev->next = lk->next;
  else
    zc->held = lk->next;
  if (lk->next)
    lk->next->prev = lk->prev;
  lk->listed = false;
  return true;
}

/* Whether ZRC says a request got no answer: it may or may not have been
 * carried out. */
static bool unanswered(int zrc) {
  return zrc == ZCONNECTIONLOSS || zrc == ZOPERATIONTIMEOUT || zrc == ZCLOSING;
}

/* Give up our place on S after the attempt for BL failed with RC: delete
 * our node PATH (NULL: none, or with UNSURE one that a create which got
 * no answer may have made).  RC when nothing of ours is left.  Else what
 * the core takes for no answer, with BL's state and bl->sent_ns set: the
 * core gives the node back with zk_release. */
static int leave_queue(zk_client *zc, dlock_lease *s, dlock_backend_lock *bl, const char *path,
                       bool unsure, int rc) {
  zk_lock *lk = bl->priv;
  int zrc = path ? z_delete(zc, s, path, -1) : unsure ? ZCONNECTIONLOSS : ZOK;
  lk->sess = NULL;
  bl->sent_ns = 0;
  if (!unanswered(zrc))
    return rc;
  lk->sess = s;
  dlock_lease_hold(zc->sessions, s);
  lk->seq = path ? seq_of(path) : -1;
  bl->sent_ns = now_ns();
  return rc == DLOCK_ECONN ? rc : zk_err(zrc, "cannot leave the queue of", bl->key);
}

enum { STEP_DONE, STEP_REQUEUE };

/* One pass of the recipe on session S: enqueue, then wait for our turn.
 * Returns STEP_DONE with *rc set, or STEP_REQUEUE when our node vanished
 * with no fault of the caller (expired session, deleted from outside). */
static int attempt(zk_client *zc, dlock_lease *s, dlock_backend_lock *bl, const char *dir,
                   int64_t deadline, bool try_only, int *rc) {
  zk_lock *lk = bl->priv;
  zk_sess *zs = sess_of(s);
  char *path = NULL;
  uint64_t czxid = 0;
  queue_view first;
  bool unsure = false;
  int zrc = enqueue(zc, s, bl, dir, deadline, &path, &czxid, &first, &unsure);
  if (zrc != ZOK) {
    view_free(&first);
    *rc = zrc == ZOPERATIONTIMEOUT && deadline >= 0 && now_ns() >= deadline
              ? dlock_seterr(DLOCK_ETIMEDOUT, "zk: timed out queueing for '%s'", bl->key)
              : zk_err(zrc, "cannot queue for", bl->key);
    *rc = leave_queue(zc, s, bl, path, unsure, *rc);
    free(path);
    return STEP_DONE;
  }
  bool waited = false; /* a predecessor's watch fired since the create */
  for (;;) {
    queue_view v = first;
    if (v.call) {
      memset(&first, 0, sizeof first);
      zrc = ZOK;
    } else {
      zrc = list_queue(zc, s, dir, deadline, &v);
    }
    if (zrc == ZNONODE) {
      free(path);
      return STEP_REQUEUE;
    }
    if (zrc != ZOK) {
      *rc = zk_err(zrc, "cannot list the queue of", bl->key);
      break;
    }
    long pred = dlock__zk_predecessor(v.kids, v.n, bl->owner);
    if (pred == -2) {
      view_free(&v);
      free(path);
      return STEP_REQUEUE;
    }
    if (pred == -1) {
      view_free(&v);
      /* Uncontended, the session's confirmation is at the latest the
       * create's send time (a write).  After a wait it can be as old as
       * that create, or the last renewal of another lock, and the
       * listing that put us first is a read, which a follower cut off
       * from the leader still answers while the leader may already have
       * expired the session and given the lock to the next in line.  So
       * a stale confirmation (older than a sixth of the lease, the
       * renewal's own rule) is refreshed with a sync first; one that
       * cannot be refreshed fails the acquisition like any other error,
       * and the node goes (or goes with the session). */
      if (waited) {
        pthread_mutex_lock(&zc->mu);
        bool stale = now_ns() - dlock_lease_fresh_ns(zc->sessions, s) >=
                     lease_ms(zs, bl->ttl_ms) * 1000000 / 6;
        pthread_mutex_unlock(&zc->mu);
        if (stale && (zrc = z_sync(zc, s, deadline)) != ZOK) {
          if (zrc == ZSESSIONEXPIRED) {
            dlock_lease_gone(zc->sessions, s);
            free(path);
            return STEP_REQUEUE;
          }
          *rc = zrc == ZOPERATIONTIMEOUT && deadline >= 0 && now_ns() >= deadline
                    ? dlock_seterr(DLOCK_ETIMEDOUT, "zk: timed out confirming the session for '%s'",
                                   bl->key)
                    : zk_err(zrc, "cannot confirm the session for", bl->key);
          break;
        }
      }
      lk->bl = bl;
      lk->sess = s;
      lk->seq = seq_of(path);
      lk->lost = false;
      pthread_mutex_lock(&zc->mu);
      bool gone = zs->expired;
      if (!gone) {
        /* Valid from the last request of this session the leader
         * answered (the create or the sync above), not from now: the
         * server may have heard nothing from us since. */
        bl->sent_ns = dlock_lease_fresh_ns(zc->sessions, s);
        lk->ttl_ms = lease_ms(zs, bl->ttl_ms);
        bl->ttl_ms = lk->ttl_ms;
        registry_add(zc, lk);
      }
      pthread_mutex_unlock(&zc->mu);
      if (gone) {
        lk->sess = NULL;
        free(path);
        return STEP_REQUEUE;
      }
      zrc = watch_own(zc, lk);
      if (zrc != ZOK) {
        pthread_mutex_lock(&zc->mu);
        bool listed = registry_remove(zc, lk);
        pthread_mutex_unlock(&zc->mu);
        if (listed)
          sess_put(zc, s);
        *rc = zk_err(zrc, "cannot watch the lock node of", bl->key);
        break;
      }
      free(path);
      bl->token = czxid;
      *rc = 0;
      return STEP_DONE;
    }
    if (try_only) {
      view_free(&v);
      bl->holder_ttl_ms = -1;
      *rc = leave_queue(zc, s, bl, path, false,
                        dlock_seterr(DLOCK_EBUSY, "zk: '%s' is held", bl->key));
      free(path);
      return STEP_DONE;
    }
    /* Watch only the entry just ahead of us: one release wakes one
     * waiter, not the whole queue. */
    char *pp = join(dir, v.kids[pred].name);
    view_free(&v);
    if (!pp) {
      *rc = dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
      break;
    }
    zk_waiter w = {.sess = zs, .path = pp};
    pthread_mutex_lock(&zc->mu);
    w.next = zc->waiters;
    zc->waiters = &w;
    pthread_mutex_unlock(&zc->mu);
    zk_call *g = NULL;
    zrc = z_get(zc, s, pp, 1, deadline, &g);
    call_free(g);
    bool timed_out = false, expired = false;
    pthread_mutex_lock(&zc->mu);
    if (zrc == ZOK)
      while (!w.fired && !(expired = zs->expired))
        if (!cv_wait(&zc->cv, &zc->mu, deadline)) {
          timed_out = true;
          break;
        }
    for (zk_waiter **p = &zc->waiters; *p; p = &(*p)->next)
      if (*p == &w) {
        *p = w.next;
        break;
      }
    pthread_mutex_unlock(&zc->mu);
    free(pp);
    if (expired) {
      free(path);
      return STEP_REQUEUE;
    }
    if (timed_out || (zrc == ZOPERATIONTIMEOUT && deadline >= 0 && now_ns() >= deadline)) {
      *rc = dlock_seterr(DLOCK_ETIMEDOUT, "zk: timed out waiting for '%s'", bl->key);
      break;
    }
    if (zrc != ZOK && zrc != ZNONODE) {
      *rc = zk_err(zrc, "cannot watch the queue of", bl->key);
      break;
    }
    waited = true;
  }
  *rc = leave_queue(zc, s, bl, path, false, *rc);
  free(path);
  return STEP_DONE;
}

static int do_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline,
                      bool try_only) {
  zk_client *zc = bc->priv;
  int64_t want = bl->ttl_ms > 0 ? bl->ttl_ms : bc->default_ttl_ms;
  if (want > INT32_MAX)
    return dlock_seterr(DLOCK_EINVAL, "zk: ttl of %lld ms is too long for a session timeout",
                        (long long)want);
  char *dir = dlock__zk_lock_dir(zc->root, bl->key, bl->keylen);
  if (!dir)
    return dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  bl->sent_ns = 0;
  int rc = DLOCK_ECONN;
  for (int round = 0; round < REQUEUE_MAX; round++) {
    dlock_lease *s;
    if ((rc = sess_get(zc, want, &s)) < 0)
      break;
    int step = attempt(zc, s, bl, dir, deadline, try_only, &rc);
    sess_put(zc, s);
    if (step == STEP_DONE)
      break;
    rc = dlock_seterr(DLOCK_ECONN, "zk: the queue entry for '%s' kept vanishing", bl->key);
    if (deadline >= 0 && now_ns() >= deadline) {
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "zk: timed out waiting for '%s'", bl->key);
      break;
    }
  }
  free(dir);
  return rc;
}

static int zk_try_acquire(dlock_backend_client *bc, dlock_backend_lock *bl) {
  return do_acquire(bc, bl, -1, true);
}

static int zk_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline_ns) {
  return do_acquire(bc, bl, deadline_ns, false);
}

/* For dlock_lease_renew: BL's session, and when it must have been
 * answered last for its locks to count from that answer. */
static dlock_lease *lock_session(dlock_backend_lock *bl, int64_t *confirmed_ns) {
  zk_lock *lk = bl->priv;
  *confirmed_ns = lk->renew_since;
  return lk->sess;
}

/* Renewal: one sync per session among BLS, answered only once the leader
 * saw it, so only while the session lives (a read would do for a server
 * that is the leader or follows one, but a follower cut off from the
 * leader answers reads too), and none for a session whose last answered
 * request is recent enough (a sixth of the lease) that counting from it
 * loses little; locks of one session thereby fall into step and cost one
 * request per session per period.  Each lock's validity counts from the
 * session's confirmation, so a reply that comes late does not stretch it.
 * The node itself is watched: a deletion reaches us before the reply to
 * any later request on the same connection (and a sync brings the server
 * up to date with the leader first). */
static int zk_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                         int *rcs) {
  zk_client *zc = bc->priv;
  /* Each session's rule is that of its lock with the shortest lease. */
  typedef struct {
    dlock_lease *s;
    int64_t since;
  } group;
  group *g = calloc(n ? n : 1, sizeof *g);
  if (!g)
    return dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  size_t ng = 0;
  int64_t now = now_ns();
  pthread_mutex_lock(&zc->mu);
  for (size_t i = 0; i < n; i++) {
    zk_lock *lk = bls[i]->priv;
    rcs[i] = DLOCK_ELOST;
    if (!lk->listed || lk->lost || sess_of(lk->sess)->expired)
      continue;
    /* A ttl changed by dlock_renew cannot move the node to a session of
     * that timeout: the lease is at most this session's. */
    bls[i]->ttl_ms = lease_ms(sess_of(lk->sess), bls[i]->ttl_ms);
    size_t k = 0;
    while (k < ng && g[k].s != lk->sess)
      k++;
    if (k == ng)
      g[ng++] = (group){.s = lk->sess, .since = INT64_MIN};
    int64_t since = now - bls[i]->ttl_ms * 1000000 / 6;
    if (since > g[k].since)
      g[k].since = since;
    rcs[i] = DLOCK_LEASE_PENDING;
  }
  for (size_t i = 0; i < n; i++) {
    zk_lock *lk = bls[i]->priv;
    for (size_t k = 0; rcs[i] == DLOCK_LEASE_PENDING && k < ng; k++)
      if (g[k].s == lk->sess)
        lk->renew_since = g[k].since;
  }
  pthread_mutex_unlock(&zc->mu);
  free(g);

  int lrc = dlock_lease_renew(zc->sessions, bls, n, rcs, lock_session);
  if (lrc < 0)
    return lrc;

  pthread_mutex_lock(&zc->mu);
  for (size_t i = 0; i < n; i++) {
    dlock_backend_lock *bl = bls[i];
    zk_lock *lk = bl->priv;
    if (rcs[i] == 0 && (lk->lost || !lk->listed || sess_of(lk->sess)->expired))
      rcs[i] = DLOCK_ELOST;
    if (rcs[i] == DLOCK_ELOST) {
      rcs[i] = dlock_seterr(DLOCK_ELOST, "zk: '%s' is no longer ours (node deleted, lease "
                            "given back or session expired)", bl->key);
    } else if (rcs[i] == 0) {
      lk->ttl_ms = bl->ttl_ms;
    }
  }
  pthread_mutex_unlock(&zc->mu);
  return 0;
}

/* Delete BL's node on S, numbered SEQ (-1: found by owner first), and
 * its dir if that is not a container and now empty.  A connection lost in
 * the middle (a member going down, a leader election) is ridden out
 * within one request timeout, as the client library reconnects the
 * session: a release right after a failover should release, not leave it
 * to the core's give-back.  The last delete's answer, ZSESSIONEXPIRED when
 * the session took the node with it. */
static int delete_own(zk_client *zc, dlock_lease *s, const dlock_backend_lock *bl, int64_t seq) {
  char *dir = dlock__zk_lock_dir(zc->root, bl->key, bl->keylen);
  int64_t until = dlock_backend_deadline(zc->bc, -1);
  int zrc = !dir ? ZSYSTEMERROR : seq >= 0 ? ZOK : find_own(zc, s, bl, dir, until, &seq);
  char *path = zrc == ZOK ? node_path(zc, bl, seq) : NULL;
  if (zrc == ZOK && !path)
    zrc = ZSYSTEMERROR;
  bool expired = false;
  while (path) {
    zrc = z_delete(zc, s, path, until);
    pthread_mutex_lock(&zc->mu);
    expired = sess_of(s)->expired;
    pthread_mutex_unlock(&zc->mu);
    if (zrc != ZCONNECTIONLOSS || expired || now_ns() + 50000000 >= until)
      break;
    struct timespec pause = {0, 50000000};
    nanosleep(&pause, NULL);
  }
  pthread_mutex_lock(&zc->mu);
  bool container = zc->container_ok;
  pthread_mutex_unlock(&zc->mu);
  if (path && zrc == ZOK && !container)
    z_delete(zc, s, dir, -1); /* ZNOTEMPTY: someone is queued */
  free(path);
  free(dir);
  return expired && zrc != ZOK ? ZSESSIONEXPIRED : zrc;
}

/* A release, or the core's give-back of a lock lost by its deadline, of a
 * release the server left unanswered or of an attempt that may have left a
 * node (leave_queue).  Until the server answers, the session and the node
 * stay in BL's state for the next try. */
static int zk_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  zk_client *zc = bc->priv;
  zk_lock *lk = bl->priv;
  pthread_mutex_lock(&zc->mu);
  /* Out of the registry before anything else, so no loss report can name
   * this lock once the core frees it. */
  bool held = registry_remove(zc, lk);
  dlock_lease *s = lk->sess;
  bool expired = !s || sess_of(s)->expired;
  bool lost = !held || lk->lost || expired;
  pthread_mutex_unlock(&zc->mu);
  /* Even a lock we had to declare lost may still have its node, which
   * would block the queue for as long as the session lives. */
  int zrc = expired ? ZSESSIONEXPIRED : delete_own(zc, s, bl, lk->seq);
  if (unanswered(zrc))
    return zk_err(zrc, "cannot release", bl->key);
  bool gone = zrc == ZSESSIONEXPIRED || zrc == ZINVALIDSTATE;
  if (s && gone)
    dlock_lease_gone(zc->sessions, s); /* noticed here first, perhaps */
  lk->sess = NULL;
  sess_put(zc, s);
  /* A missing node, even after a retry whose first delete may have
   * landed, is reported as lost: that errs on the side the caller can act
   * on safely.  A session that expired took its node with it. */
  if (lost || gone || zrc == ZNONODE)
    return dlock_seterr(DLOCK_ELOST, "zk: '%s' was lost before release", bl->key);
  return zrc == ZOK ? 0 : zk_err(zrc, "cannot release", bl->key);
}

/* What inspect says of a queue's first entry KID, whose getData G was. */
static void holder_info(const dlock__zk_child *kid, const zk_call *g, dlock_info *info) {
  info->held = 1;
  info->token = (uint64_t)g->stat.czxid;
  snprintf(info->owner, sizeof info->owner, "%s", kid->guid);
  dlock__zk_parse_data(g->data, (size_t)g->datalen, info->label, sizeof info->label,
                       &info->ttl_ms);
}

/* Who DIR's queue names as the holder: its first entry.  INFO->held 0
 * when the queue is empty or gone.  *HPATH (when HPATH is not NULL) gets
 * the holder's node, malloc'd, and *VERSION its data version, for a
 * delete of exactly what was read.  0, or a negative code whose message
 * says WHAT failed for KEY. */
static int describe_dir(zk_client *zc, dlock_lease *s, const char *dir, const char *key,
                        const char *what, dlock_info *info, char **hpath, int *version) {
  info->held = 0;
  info->ttl_ms = -1;
  for (int tries = 0; tries < 8; tries++) {
    queue_view v;
    int zrc = list_queue(zc, s, dir, -1, &v);
    if (zrc == ZNONODE || (zrc == ZOK && v.n == 0)) {
      view_free(&v);
      return 0;
    }
    if (zrc != ZOK)
      return zk_err(zrc, what, key);
    char *p = join(dir, v.kids[0].name);
    zk_call *g = NULL;
    zrc = p ? z_get(zc, s, p, 0, -1, &g) : ZSYSTEMERROR;
    if (zrc == ZOK) {
      holder_info(&v.kids[0], g, info);
      if (version)
        *version = g->stat.version;
      if (hpath) {
        *hpath = p;
        p = NULL;
      }
    }
    free(p);
    call_free(g);
    view_free(&v);
    if (zrc == ZNONODE)
      continue; /* released while we looked: look again */
    return zrc == ZOK ? 0 : zk_err(zrc, what, key);
  }
  return 0;
}

static int zk_inspect(dlock_backend_client *bc, const char *key, size_t keylen,
                      dlock_info *info) {
  zk_client *zc = bc->priv;
  char *dir = dlock__zk_lock_dir(zc->root, key, keylen);
  if (!dir)
    return dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  dlock_lease *s;
  int rc = sess_get(zc, bc->default_ttl_ms, &s);
  if (rc == 0) {
    rc = describe_dir(zc, s, dir, key, "cannot inspect", info, NULL, NULL);
    sess_put(zc, s);
  }
  free(dir);
  return rc;
}

/* Lock dirs read per round of list: their queues, then their holders'
 * nodes, each round's requests all sent before any is waited for, so
 * that a round costs two round trips however many locks it covers, and
 * the requests in flight stay few. */
#define LIST_BATCH 64

typedef struct list_item {
  char key[DLOCK_KEY_MAX];
  size_t keylen;
  char *dir;
  zk_call *call; /* the request in flight */
  int submit_rc;
  dlock_info info;
} list_item;

/* Reads the queues of IT[0..N), then the nodes of their holders, into each
 * INFO.  Every wait ends one request timeout after its round was sent.  0
 * or a negative code. */
static int list_round(zk_client *zc, dlock_lease *s, list_item *it, size_t n) {
  int rc = 0;
  queue_view *v = calloc(n, sizeof *v);
  if (!v)
    return dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  int64_t deadline = dlock_backend_deadline(zc->bc, -1);
  for (size_t i = 0; i < n; i++) {
    it[i].call = call_on(s, false);
    it[i].submit_rc = it[i].call ? zoo_aget_children(sess_of(s)->zh, it[i].dir, 0, done_strings,
                                                     it[i].call)
                                 : ZSYSTEMERROR;
  }
  /* Each call is waited for even after a failure, which an expired
   * deadline turns into an abandon the completion cleans up. */
  for (size_t i = 0; i < n; i++) {
    zk_call *r = NULL;
    int zrc = call_wait(it[i].call, it[i].submit_rc, rc == 0 ? deadline : 0, &r);
    it[i].call = NULL;
    if (zrc == ZOK)
      zrc = view_from(r, &v[i]);
    else
      call_free(r);
    if (zrc != ZOK && zrc != ZNONODE && rc == 0)
      rc = zk_err(zrc, "cannot list the queue of", it[i].key);
  }
  char **hp = rc == 0 ? calloc(n, sizeof *hp) : NULL;
  if (rc == 0 && !hp)
    rc = dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  if (rc == 0) {
    deadline = dlock_backend_deadline(zc->bc, -1);
    for (size_t i = 0; i < n; i++) {
      if (v[i].n == 0)
        continue;
      hp[i] = join(it[i].dir, v[i].kids[0].name);
      it[i].call = hp[i] ? call_on(s, false) : NULL;
      it[i].submit_rc =
          it[i].call ? zoo_aget(sess_of(s)->zh, hp[i], 0, done_data, it[i].call) : ZSYSTEMERROR;
    }
    for (size_t i = 0; i < n; i++) {
      if (v[i].n == 0)
        continue;
      zk_call *r = NULL;
      int zrc = call_wait(it[i].call, it[i].submit_rc, rc == 0 ? deadline : 0, &r);
      it[i].call = NULL;
      if (zrc == ZOK)
        holder_info(&v[i].kids[0], r, &it[i].info);
      call_free(r);
      free(hp[i]);
      hp[i] = NULL;
      if (zrc != ZOK && zrc != ZNONODE && rc == 0)
        rc = zk_err(zrc, "cannot list", it[i].key);
      /* ZNONODE: released since the listing, and the next in line may
       * hold it now; looked at again below, once no wait of this round
       * is left to run out behind the look. */
    }
    for (size_t i = 0; i < n && rc == 0; i++)
      if (v[i].n && !it[i].info.held)
        rc = describe_dir(zc, s, it[i].dir, it[i].key, "cannot list", &it[i].info, NULL, NULL);
  }
  free(hp);
  for (size_t i = 0; i < n; i++)
    view_free(&v[i]);
  free(v);
  return rc;
}

/* Every lock dir under the root whose name decodes to a key with PREFIX,
 * and whose queue has a first entry: the locks held, as inspect would
 * describe each.  Names that esc() does not write (another recipe's nodes,
 * a hand-made node) are not locks of ours and are passed over. */
static int zk_list(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
                   dlock_backend_emit_fn emit, void *ud) {
  zk_client *zc = bc->priv;
  dlock_lease *s;
  int rc = sess_get(zc, bc->default_ttl_ms, &s);
  if (rc < 0)
    return rc;
  /* A member that follows the leader answers reads from its own copy,
   * which may not have the latest writes of other clients yet: caught up
   * first, the walk sees every lock taken or released before it began. */
  zk_call *top = NULL;
  int zrc = z_sync(zc, s, -1);
  if (zrc == ZOK)
    zrc = z_children(zc, s, zc->root, -1, &top);
  list_item *it = NULL;
  if (zrc != ZOK && zrc != ZNONODE)
    rc = zk_err(zrc, "cannot list the lock dirs under", zc->root);
  else if (zrc == ZOK && top->nkids && !(it = calloc(LIST_BATCH, sizeof *it)))
    rc = dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  size_t next = 0;
  while (rc == 0 && it && next < top->nkids) {
    size_t n = 0;
    for (; next < top->nkids && n < LIST_BATCH && rc == 0; next++) {
      list_item *x = &it[n];
      if (dlock__zk_unescape(top->kids[next], x->key, sizeof x->key, &x->keylen) < 0 ||
          x->keylen < prefixlen || memcmp(x->key, prefix, prefixlen) != 0)
        continue;
      memset(&x->info, 0, sizeof x->info);
      if (!(x->dir = join(zc->root, top->kids[next])))
        rc = dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
      else
        n++;
    }
    if (rc == 0 && n)
      rc = list_round(zc, s, it, n);
    /* EMIT may call back into the client: nothing of ours is locked. */
    for (size_t i = 0; i < n; i++) {
      if (rc == 0 && it[i].info.held)
        rc = emit(ud, it[i].key, it[i].keylen, &it[i].info);
      free(it[i].dir);
      it[i].dir = NULL;
    }
  }
  free(it);
  call_free(top);
  sess_put(zc, s);
  return rc;
}

/* Whether GOT is the holder WANT names: by owner, else by token, else
 * whoever it is. */
static bool names_holder(const dlock_info *want, const dlock_info *got) {
  if (want->owner[0])
    return strcmp(want->owner, got->owner) == 0;
  return !want->token || want->token == got->token;
}

/* The holder is the first entry of the queue, and an entry's node, once
 * gone, never comes back (a new one gets a higher sequence number), so
 * a delete of the node read, at the data version read, releases exactly
 * the holder that was checked, in one step at the server.  It fires the
 * holder's own watch on that node (its lock turns LOST at once) and the
 * next waiter's watch on its predecessor, as a release does.  Another
 * session's ephemeral node is anyone's to delete whom the dir's ACL lets
 * delete. */
static int zk_force_release(dlock_backend_client *bc, const char *key, size_t keylen,
                            const dlock_info *holder, dlock_info *broken) {
  zk_client *zc = bc->priv;
  char *dir = dlock__zk_lock_dir(zc->root, key, keylen);
  if (!dir)
    return dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
  dlock_lease *s;
  int rc = sess_get(zc, bc->default_ttl_ms, &s);
  if (rc < 0) {
    free(dir);
    return rc;
  }
  /* Caught up with the leader, as list is: "nobody holds it" must not be
   * a lagging member's view.  A delete that finds the node gone brings the
   * member up to date by itself, as every answer to a write does. */
  int zrc = z_sync(zc, s, -1);
  if (zrc != ZOK)
    rc = zk_err(zrc, "cannot break", key);
  /* After the first look, only the holder it found is broken: one that
   * comes after it (its release woke a waiter) was never looked at. */
  dlock_info pin = *holder;
  for (int tries = 0; rc == 0; tries++) {
    if (tries == 8) {
      rc = dlock_seterr(DLOCK_EBUSY,
                        "zk: the holder of '%s' kept changing while breaking it", key);
      break;
    }
    dlock_info got;
    memset(&got, 0, sizeof got);
    char *hpath = NULL;
    int version = -1;
    int drc = describe_dir(zc, s, dir, key, "cannot break", &got, &hpath, &version);
    if (drc < 0 || !got.held) {
      rc = drc;
      break;
    }
    if (!names_holder(&pin, &got)) {
      free(hpath);
      if (tries > 0) {
        broken->held = 0; /* the holder looked at went meanwhile */
        break;
      }
      rc = dlock_seterr(DLOCK_EBUSY, "zk: '%s' is held by another holder (token %llu)", key,
                        (unsigned long long)got.token);
      break;
    }
    if (!pin.owner[0] && !pin.token)
      pin.token = got.token;
    zrc = z_delete_at(zc, s, hpath, version, -1);
    free(hpath);
    if (zrc == ZOK) {
      *broken = got;
      pthread_mutex_lock(&zc->mu);
      bool container = zc->container_ok;
      pthread_mutex_unlock(&zc->mu);
      if (!container)
        z_delete(zc, s, dir, -1); /* ZNOTEMPTY: someone is queued */
      rc = 0;
      break;
    }
    /* Gone (released, or broken by another) or written to since it was
     * read: look again at who holds it now. */
    if (zrc == ZNONODE || zrc == ZBADVERSION)
      continue;
    rc = zrc == ZOPERATIONTIMEOUT || zrc == ZCONNECTIONLOSS
             ? dlock_seterr(DLOCK_ECONN,
                            "zk: no answer to the delete that breaks '%s' (it may have been "
                            "carried out): %s",
                            key, zrc == ZOPERATIONTIMEOUT ? "no reply in time" : zerror(zrc))
             : zk_err(zrc, "cannot break", key);
    break;
  }
  sess_put(zc, s);
  free(dir);
  return rc;
}

static int zk_control(dlock_backend_client *bc, dlock_backend_lock *bl, int op, void *arg) {
  (void)bl;
  zk_client *zc = bc->priv;
  if (!arg)
    return dlock_seterr(DLOCK_EINVAL, "zk: control operation %d needs an argument", op);
  if (op == DLOCK_ZK_CTL_WATCH_EVENTS || op == DLOCK_ZK_CTL_SYNCS) {
    pthread_mutex_lock(&zc->mu);
    *(uint64_t *)arg = op == DLOCK_ZK_CTL_SYNCS ? zc->syncs : zc->pred_events;
    pthread_mutex_unlock(&zc->mu);
    return 0;
  }
  if (op == DLOCK_ZK_CTL_CLIENT_ID || op == DLOCK_ZK_CTL_SESSION_TIMEOUT) {
    dlock_lease *s;
    int rc = sess_get(zc, bc->default_ttl_ms, &s);
    if (rc < 0)
      return rc;
    if (op == DLOCK_ZK_CTL_CLIENT_ID)
      *(clientid_t *)arg = *zoo_client_id(sess_of(s)->zh);
    else
      *(int64_t *)arg = zoo_recv_timeout(sess_of(s)->zh);
    sess_put(zc, s);
    return 0;
  }
  if (op == DLOCK_ZK_CTL_QUEUE_LEN) {
    struct dlock_zk_queue *q = arg;
    size_t keylen;
    int rc = dlock__key_check(q->key, &keylen);
    if (rc < 0)
      return rc;
    char *dir = dlock__zk_lock_dir(zc->root, q->key, keylen);
    dlock_lease *s;
    if (!dir)
      return dlock_seterr(DLOCK_ENOMEM, "zk: out of memory");
    if ((rc = sess_get(zc, bc->default_ttl_ms, &s)) < 0) {
      free(dir);
      return rc;
    }
    queue_view v;
    int zrc = list_queue(zc, s, dir, -1, &v);
    q->count = zrc == ZOK ? (int)v.n : 0;
    if (zrc != ZOK && zrc != ZNONODE)
      rc = zk_err(zrc, "cannot list the queue of", q->key);
    view_free(&v);
    sess_put(zc, s);
    free(dir);
    return rc;
  }
  return dlock_seterr(DLOCK_ENOTSUP, "zk: unknown control operation %d", op);
}

static const char *const zk_schemes[] = {"zk", NULL};

const dlock_backend_ops dlock__zk_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "zookeeper",
    .schemes = zk_schemes,
    .caps = DLOCK_CAP_FENCING | DLOCK_CAP_NATIVE_WAIT | DLOCK_CAP_FAIR | DLOCK_CAP_HOLDER_INFO |
            DLOCK_CAP_LOSS_DETECT | DLOCK_CAP_SERVER_TTL | DLOCK_CAP_CROSS_HOST |
            DLOCK_CAP_CROSS_PROCESS | DLOCK_CAP_LIST | DLOCK_CAP_BREAK,
    .client_size = sizeof(zk_client),
    .lock_size = sizeof(zk_lock),
    .open = zk_open,
    .close = zk_close,
    .try_acquire = zk_try_acquire,
    .acquire = zk_acquire,
    .release = zk_release,
    .renew_many = zk_renew_many,
    .inspect = zk_inspect,
    .control = zk_control,
    .list = zk_list,
    .force_release = zk_force_release,
};
