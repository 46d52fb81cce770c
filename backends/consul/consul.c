/* Consul backend: sessions, KV acquire, blocking queries.
 *
 * A lock is the key <prefix><key>/.lock acquired by a session of the
 * client, with the flags `consul lock` uses, so `consul lock` and dlock
 * exclude each other.  The fencing token is the key's ModifyIndex right
 * after our acquire: a Raft index, so it grows with every write anywhere
 * in the cluster and never goes back.
 *
 * Sessions are shared: one per ttl in use (one in the usual case), with
 * no health checks, so that no health flap ends them: only their TTL (after
 * which the local validity deadline has long passed), a destroy, or the
 * deregistration of their node.  The last two free the keys after the
 * lock-delay, so a lock-delay above a third of the ttl plus the request
 * timeout lets the holder learn of it at its next renewal first.
 * Renewal renews the session once per period however many locks it
 * carries, and checks in one txn per 64 locks that the session still holds
 * their keys.  A lock's validity counts from the send time of the last
 * renewal the server confirmed.
 *
 * Giving a key back (a release, the reaper, an attempt whose answer never
 * came) is an unlock by session, and the session is every lock's of the
 * client: on its own it would free any later lock of the same key by the
 * same client.  An agent without a leader (a restart, an election) holds
 * requests for seconds and then carries them out, also those whose client
 * gave up, in no particular order; and the reaper may give an orphan back
 * while an acquire of its key is on its way.  So every release is
 * conditional on the key's ModifyIndex (a delete-cas, after a
 * check-session in the same txn):
 * the index the acquisition left (its token), or one just read that shows
 * the key still holding the acquisition's own value, whose owner part is
 * new with every attempt.  Any lock written since moves the index, and
 * the release then fails.  The reaper also leaves the orphans of a key
 * alone while an acquire of that key runs; the acquire settles them
 * itself.  A lock txn that got no answer may likewise be carried out after
 * its orphan found the key free or gave it back: such orphans are looked
 * at again for ORPHAN_GRACE_MS, or the key would stay with our session for
 * as long as other locks keep the session alive.
 *
 * An operator's list reads every lock key under the prefix in one
 * consistent txn and their sessions' TTLs in one session list.  A break
 * deletes the lock key the way a release does, at the ModifyIndex it read
 * and only while that still shows the holder named: not by destroying
 * the holder's session, which carries its client's other locks and would
 * start a lock-delay.  A delete starts none, so waiters get the key at
 * once, and the broken holder finds its key gone or another session's at
 * its next renewal, a third of its ttl away at most.
 *
 * Consul's minimum session TTL is 10 s and it invalidates a session only
 * after twice its TTL, so a lock with a shorter ttl that its holder stops
 * renewing is released by the client's reaper thread once the ttl has
 * passed; a holder that dies is freed by the server after 2 x TTL plus the
 * lock-delay. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "backends/consul/consul-codec.h"
#include "backends/http/http.h"
#include "dlock/lease.h"

#define SESSION_TTL_MIN_S 10
#define SESSION_TTL_MAX_S 86400
/* Longest blocking query; Consul caps wait at 10 minutes. */
#define BLOCK_MAX_MS 300000
/* How long an attempt whose lock txn got no answer is watched for a grant
 * the agent carries out late: an agent without a leader holds a request
 * for its rpc_hold_timeout (7 s by default) and a restarted one applies
 * what it held after replaying its log, which can take seconds more.  A
 * grant that lands after its orphan found the key free (or gave back an
 * earlier copy of it) would otherwise leave the key held by our session
 * with nobody to give it back. */
#define ORPHAN_GRACE_MS 30000

/* A session's state in the client's lease table (dlock/lease.h): its id. */
typedef struct cs_session_id {
  char id[DLOCK_CONSUL_SESSION_MAX];
} cs_session_id;

static const char *sess_id(const dlock_lease *s) {
  return ((const cs_session_id *)dlock_lease_priv(s))->id;
}

/* bl->priv */
typedef struct cs_lock {
  struct cs_lock *prev, *next; /* the client's held (or being given back) locks */
  dlock_backend_lock *bl;      /* NULL once the core has let go of it */
  dlock_lease *sess;
  char *key;
  char *value;                 /* what its lock txn wrote: "<owner>\n<label>" */
  uint64_t index;              /* the key's ModifyIndex its lock left (the token), 0 when
                                  unknown (an attempt that got no answer) */
  int64_t confirmed_ns;
  int64_t ttl_ms;
  bool listed;
  bool lost;
  bool orphan;                 /* a copy: the key may still be held; the reaper gives it
                                  back (confirmed_ns = when to try next) */
  bool settling;               /* settle_orphans is giving it back */
  bool reaping;                /* the reaper is giving it back */
  int renew_failures;          /* orphans: failed attempts so far */
  int64_t born_ns;             /* orphans: when the attempt was given up */
} cs_lock;

/* An acquire under way, on the stack of its thread (cs_client.acquiring). */
typedef struct cs_acq {
  struct cs_acq *next;
  const char *key;
} cs_acq;

typedef struct cs_client {
  dlock_backend_client *bc;
  pthread_mutex_t mu;
  pthread_cond_t cv;           /* sessions changed, reaper work */
  dlock__http http;
  char *token;                 /* ACL token, NULL without */
  char *prefix;
  char name[160];              /* session name */
  int64_t lock_delay_ms;
  dlock_leases *sessions;      /* dlock/lease.h */
  cs_lock *held;
  const char *reaping;         /* key the reaper is giving back, or NULL */
  cs_acq *acquiring;           /* keys being acquired: their orphans are the acquire's */
  bool reaper_skipped;         /* the reaper left an orphan to an acquire */
  pthread_t reaper;
  pthread_cond_t reaper_cv;    /* work for the reaper */
  /* When the reaper will next look, INT64_MAX while it sleeps with nothing
   * due, INT64_MIN while it is awake: an acquire wakes it only for a lock
   * due earlier, which keeps a context switch off the acquire path. */
  int64_t reaper_wake_ns;
  bool reaper_started, stop;
  struct dlock_consul_stats stats;
} cs_client;

static int64_t now_ns(void) { return dlock_backend_now_ns(); }

static int64_t bound(const cs_client *cc, int64_t deadline) {
  int64_t own = now_ns() + cc->bc->timeout_ms * 1000000;
  return deadline < 0 || deadline > own ? own : deadline;
}

/* ---- transport ---- */

typedef struct reply {
  dlock__http_body body;
  long status;
  uint64_t index; /* X-Consul-Index, 0 when absent */
} reply;

/* One request of request(): what its hooks for dlock__http_send need. */
typedef struct cs_call {
  cs_client *cc;
  const char *method;
  reply *r;
} cs_call;

/* libcurl hands over each header line as it is, without a NUL; a
 * malformed index counts as none. */
static size_t on_header(char *p, size_t size, size_t n, void *ctx) {
  reply *r = ((cs_call *)ctx)->r;
  size_t len = size * n;
  uint64_t index;
  if (dlock__consul_header_index(p, len, &index) == 1)
    r->index = index;
  return len;
}

static struct curl_slist *call_headers(void *ctx) {
  cs_call *call = ctx;
  call->r->index = 0; /* a new attempt: only its own answer's index counts */
  struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
  struct curl_slist *t = hs ? curl_slist_append(hs, "Expect:") : NULL;
  if (t && call->cc->token) {
    char tokh[600];
    snprintf(tokh, sizeof tokh, "X-Consul-Token: %s", call->cc->token);
    t = curl_slist_append(t, tokh);
    explicit_bzero(tokh, sizeof tokh);
  }
  if (!t)
    curl_slist_free_all(hs);
  return t;
}

/* A 5xx is an agent between leaders: again, after a pause.  Everything
 * else but 403 is the caller's to read. */
static int call_judge(void *ctx, long status, const dlock__http_body *b, char *msg,
                      size_t msglen) {
  cs_call *call = ctx;
  (void)msg;
  (void)msglen;
  if (status >= 500)
    return DLOCK__HTTP_AGAIN;
  if (status == 403)
    return dlock_seterr(DLOCK_EAUTH, "consul: %s refused: %.200s", call->method,
                        b->data ? b->data : "permission denied");
  return DLOCK__HTTP_DONE;
}

/* One request through dlock__http_send, until DEADLINE.  0 with R holding
 * any answer but a 5xx or a 403 (the caller reads r->status), or
 * DLOCK_ECONN / DLOCK_EAUTH (403) with a message. */
static int request(cs_client *cc, const char *method, const char *path, const char *body,
                   int64_t deadline, reply *r) {
  cs_call call = {cc, method, r};
  dlock__http_req q = {
      .method = method,
      .path = path,
      .body = body,
      .deadline = deadline,
      .ctx = &call,
      .headers = call_headers,
      .judge = call_judge,
      .on_header = on_header,
  };
  return dlock__http_send(&cc->http, &q, &r->body, &r->status);
}

static void reply_free(reply *r) { free(r->body.data); }

/* ---- sessions ---- */

/* The lease table's requests (dlock/lease.h). */

static int sess_create(dlock_backend_client *bc, void *priv, int64_t ttl_ms, int64_t deadline,
                       int64_t *keep_ms) {
  cs_client *cc = bc->priv;
  int64_t ttl_s = (ttl_ms + 999) / 1000;
  if (ttl_s < SESSION_TTL_MIN_S)
    ttl_s = SESSION_TTL_MIN_S;
  if (ttl_s > SESSION_TTL_MAX_S)
    ttl_s = SESSION_TTL_MAX_S;
  char *req = dlock__consul_req_session(cc->name, ttl_s, cc->lock_delay_ms);
  reply r = {0};
  int rc = req ? request(cc, "PUT", "/v1/session/create", req, deadline, &r)
               : dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  if (rc == 0 && r.status != 200)
    rc = dlock_seterr(DLOCK_EBACKEND, "consul: session create: HTTP %ld: %.200s", r.status,
                      r.body.data ? r.body.data : "");
  if (rc == 0)
    rc = dlock__consul_parse_session(r.body.data, r.body.len, ((cs_session_id *)priv)->id);
  reply_free(&r);
  free(req);
  if (rc == 0)
    *keep_ms = ttl_s * 1000;
  return rc;
}

static int sess_renew(dlock_backend_client *bc, void *priv, int64_t deadline, int64_t *keep_ms) {
  cs_client *cc = bc->priv;
  const char *id = ((cs_session_id *)priv)->id;
  (void)keep_ms; /* a session's TTL is fixed */
  char path[128];
  snprintf(path, sizeof path, "/v1/session/renew/%s", id);
  reply r = {0};
  int rc = request(cc, "PUT", path, "", deadline, &r);
  int64_t ttl = -1;
  if (rc == 0 && r.status == 200)
    rc = dlock__consul_parse_renew(r.body.data, r.body.len, &ttl);
  else if (rc == 0 && r.status != 404)
    rc = dlock_seterr(DLOCK_EBACKEND, "consul: session renew: HTTP %ld: %.200s", r.status,
                      r.body.data ? r.body.data : "");
  bool gone = rc == 0 && r.status == 404;
  reply_free(&r);
  if (!gone)
    return rc;
  /* A server that has just become leader answers renewals from its own
   * state before it has applied the log it found (a restarted server
   * replaying it): a session created since its last snapshot is not there
   * yet, and 404 would report every lock it carries lost, and leave their
   * keys held by a session nobody renews for 2 x TTL.  A consistent read
   * waits for the log; only if it does not know the session either is it
   * gone.  Either way this renewal confirmed nothing. */
  char ipath[160];
  snprintf(ipath, sizeof ipath, "/v1/session/info/%s?consistent", id);
  reply si = {0};
  int irc = request(cc, "GET", ipath, NULL, deadline, &si);
  if (irc == 0 && si.status == 200)
    irc = dlock__consul_parse_session_info(si.body.data, si.body.len, id);
  else if (irc == 0)
    irc = dlock_seterr(DLOCK_EBACKEND, "consul: session info: HTTP %ld: %.200s", si.status,
                       si.body.data ? si.body.data : "");
  reply_free(&si);
  if (irc < 0)
    return irc;
  if (irc > 0)
    return dlock_seterr(DLOCK_ECONN, "consul: the agent did not know session %s yet "
                        "(a new leader catching up)", id);
  return dlock_seterr(DLOCK_ELOST, "consul: the session has expired or was destroyed");
}

/* Destroying a session releases whatever keys it still holds (locks the
 * core could not release, orphans) instead of after 2 x TTL. */
static int sess_destroy(dlock_backend_client *bc, void *priv, int64_t deadline) {
  cs_client *cc = bc->priv;
  char path[128];
  snprintf(path, sizeof path, "/v1/session/destroy/%s", ((cs_session_id *)priv)->id);
  reply r = {0};
  int rc = request(cc, "PUT", path, "", deadline, &r);
  reply_free(&r);
  return rc;
}

/* The server no longer has S: every lock it carried is lost. */
static void sess_gone(dlock_backend_client *bc, dlock_lease *s) {
  cs_client *cc = bc->priv;
  pthread_mutex_lock(&cc->mu);
  for (cs_lock *lk = cc->held; lk; lk = lk->next)
    if (lk->sess == s && !lk->lost) {
      lk->lost = true;
      if (lk->bl)
        dlock_backend_lock_lost(cc->bc, lk->bl);
    }
  pthread_cond_broadcast(&cc->cv);
  pthread_mutex_unlock(&cc->mu);
}

static const dlock_lease_ops consul_session_ops = {
    .store = "consul",
    .what = "session",
    .priv_size = sizeof(cs_session_id),
    .grant = sess_create,
    .refresh = sess_renew,
    .gone = sess_gone,
    .revoke = sess_destroy,
};

/* Send the txn REQ (freed here) to PATH and parse the answer into *T,
 * whose results or errors the caller reads: 0 with *STATUS 200 (applied)
 * or 409 (refused, t->msg says why), or a negative code.  Free *T in every
 * case. */
static int txn(cs_client *cc, const char *path, char *req, int64_t deadline, const char *what,
               dlock__consul_txn *t, long *status) {
  memset(t, 0, sizeof *t);
  reply r = {0};
  int rc = req ? request(cc, "PUT", path, req, bound(cc, deadline), &r)
               : dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  free(req);
  *status = r.status;
  if (rc == 0 && (r.status == 200 || r.status == 409))
    rc = dlock__consul_parse_txn((int)r.status, r.body.data, r.body.len, t);
  else if (rc == 0)
    rc = dlock_seterr(DLOCK_EBACKEND, "consul: %s: HTTP %ld: %.200s", what, r.status,
                      r.body.data ? r.body.data : "");
  reply_free(&r);
  return rc;
}

/* KEY read consistently through a read-only txn, which takes any key (see
 * consul-codec.h): 1 with *kv filled, 0 when there is no such key, or a
 * negative code.  Free *kv in every case. */
static int read_key(cs_client *cc, const char *key, int64_t deadline, dlock__consul_kv *kv) {
  memset(kv, 0, sizeof *kv);
  dlock__consul_txn t;
  long status;
  int rc = txn(cc, "/v1/txn?consistent", dlock__consul_req_get(key), deadline, "read txn", &t,
               &status);
  if (rc == 0 && status == 409)
    rc = dlock_seterr(strstr(t.msg, "ermission denied") ? DLOCK_EAUTH : DLOCK_EBACKEND,
                      "consul: reading '%s': %s", key, t.msg);
  if (rc == 0) {
    const dlock__consul_kv *found = dlock__consul_txn_find(&t, key);
    if (found) {
      /* Moved out: the txn's copy must not be freed with it. */
      size_t i = (size_t)(found - t.results);
      *kv = t.results[i];
      memset(&t.results[i], 0, sizeof t.results[i]);
      rc = 1;
    }
  }
  dlock__consul_txn_free(&t);
  return rc;
}

/* Give KEY back from SESSION for the acquisition that wrote VALUE and left
 * the key at INDEX (0: unknown): 1 released, 0 not ours (any more), or a
 * negative code.  The release is a check-session and a delete-cas (see the
 * top of this file), at INDEX or else at the index of a consistent read that shows the
 * key held by SESSION with VALUE; when the check fails the key is read
 * again.  With LIVE the caller is the client's only hold of KEY (a
 * release, or the reaper for a lock the core still has a handle of), and
 * SESSION holding the key is enough: another value there can only be an
 * unanswered lock of ours that the agent carried out late.  A txn, like
 * the lock: it takes keys the agent refuses in a /v1/kv/ path. */
static int give_back(cs_client *cc, const char *key, const char *session, uint64_t index,
                     const char *value, bool live, int64_t deadline) {
  char why[256] = "";
  uint64_t refused = 0; /* the index an unlock was refused at */
  for (int round = 0; round < 4; round++) {
    if (!index) {
      dlock__consul_kv kv;
      int f = read_key(cc, key, deadline, &kv);
      bool ours = f == 1 && strcmp(kv.session, session) == 0 &&
                  (live || (value && kv.valuelen == strlen(value) &&
                            memcmp(kv.value, value, kv.valuelen) == 0));
      uint64_t at = kv.modify_index;
      dlock__consul_kv_free(&kv);
      if (f < 0)
        return f;
      if (!ours)
        return 0;
      if (!at)
        return dlock_seterr(DLOCK_EBACKEND, "consul: '%s' was read without its index", key);
      if (at == refused)
        /* Refused although nothing moved: not the index but the unlock. */
        return dlock_seterr(DLOCK_EBACKEND, "consul: release of '%s' refused: %s", key, why);
      index = at;
    }
    dlock__consul_txn t;
    long status;
    int rc = txn(cc, "/v1/txn", dlock__consul_req_release_at(key, session, index), deadline,
                 "release", &t, &status);
    if (rc == 0 && status == 200) {
      rc = 1;
    } else if (rc == 0 && strstr(t.msg, "ermission denied")) {
      rc = dlock_seterr(DLOCK_EAUTH, "consul: release of '%s' refused: %s", key, t.msg);
    } else if (rc == 0) {
      /* Refused.  The agent says why only in prose ("current modify index
       * 7 != 6", "lock isn't held, or is held by another session"); the
       * key itself says whether it is still ours. */
      snprintf(why, sizeof why, "%s", t.msg);
      refused = index;
      index = 0;
      rc = 2;
    }
    dlock__consul_txn_free(&t);
    if (rc != 2)
      return rc;
  }
  return dlock_seterr(DLOCK_ECONN, "consul: '%s' kept changing while it was given back", key);
}

/* Under mu: whether an acquire of KEY is under way. */
static bool acquiring(const cs_client *cc, const char *key) {
  for (const cs_acq *a = cc->acquiring; a; a = a->next)
    if (strcmp(a->key, key) == 0)
      return true;
  return false;
}

/* Under mu: something is due at DUE_NS for the reaper. */
static void kick_reaper(cs_client *cc, int64_t due_ns) {
  if (due_ns < cc->reaper_wake_ns)
    pthread_cond_signal(&cc->reaper_cv);
}

static void unlink_lock(cs_client *cc, cs_lock *lk) {
  if (lk->prev)
    lk->prev->next = lk->next;
  else
    cc->held = lk->next;
  if (lk->next)
    lk->next->prev = lk->prev;
  lk->prev = lk->next = NULL;
  lk->listed = false;
}

/* ---- the reaper ---- */

/* Under mu: remember that KEY may still be held by S although nobody holds
 * it any more (a release or a lock whose answer never came), so that the
 * reaper gives it back; a session kept alive by other locks would hold it
 * for good.  VALUE and INDEX are the acquisition's (see give_back).  Takes
 * a reference on S. */
static void orphan_add(cs_client *cc, dlock_lease *s, const char *key, const char *value,
                       uint64_t index) {
  cs_lock *o = calloc(1, sizeof *o);
  char *k = strdup(key);
  char *v = value ? strdup(value) : NULL;
  if (!o || !k || !v) {
    free(o);
    free(k);
    free(v);
    return; /* the session ends with the client, and the key with it */
  }
  o->sess = s;
  o->key = k;
  o->value = v;
  o->index = index;
  o->born_ns = now_ns();
  o->orphan = true;
  o->listed = true;
  o->next = cc->held;
  if (cc->held)
    cc->held->prev = o;
  cc->held = o;
  dlock_lease_hold(cc->sessions, s);
  kick_reaper(cc, 0);
}

/* Under mu: whether orphan O, just given back or found not ours, is still
 * watched: a lock txn that got no answer may yet be carried out, and so
 * may a copy of it that the transport sent again. */
static bool orphan_watched(const cs_lock *o) {
  return o->index == 0 && now_ns() - o->born_ns < (int64_t)ORPHAN_GRACE_MS * 1000000;
}

static void orphan_free(cs_client *cc, cs_lock *o) {
  unlink_lock(cc, o);
  dlock_lease_put(cc->sessions, o->sess);
  free(o->key);
  free(o->value);
  free(o);
}

/* Gives back, at the store, locks whose ttl passed without renewal (the
 * core has already declared them lost, and a session kept alive by other
 * locks or by Consul's 10 s minimum must not keep them), and orphans.
 * Only this thread frees an orphan that is in the list, and only
 * settle_orphans takes one out, while this thread is not at it.  The
 * orphans of a key being acquired are left to the acquire. */
static void *reaper_main(void *arg) {
  cs_client *cc = arg;
  pthread_mutex_lock(&cc->mu);
  while (!cc->stop) {
    int64_t now = now_ns(), wake = INT64_MAX;
    cs_lock *job = NULL;
    for (cs_lock *lk = cc->held; lk && !job; lk = lk->next) {
      if (lk->settling || lk->reaping)
        continue;
      if (lk->orphan && acquiring(cc, lk->key)) {
        cc->reaper_skipped = true; /* the acquire's end wakes us */
        continue;
      }
      int64_t due = lk->orphan ? lk->confirmed_ns
                               : lk->lost ? INT64_MAX : lk->confirmed_ns + lk->ttl_ms * 1000000;
      if (due <= now)
        job = lk;
      else if (due < wake)
        wake = due;
    }
    if (!job) {
      struct timespec ts;
      dlock__ns_to_timespec(wake == INT64_MAX ? now + 3600 * 1000000000LL : wake, &ts);
      cc->reaper_wake_ns = wake;
      pthread_cond_timedwait(&cc->reaper_cv, &cc->mu, &ts);
      cc->reaper_wake_ns = INT64_MIN;
      continue;
    }
    if (!job->orphan) {
      job->lost = true;
      if (job->bl)
        dlock_backend_lock_lost(cc->bc, job->bl);
    }
    dlock_lease *s = job->sess;
    dlock_lease_hold(cc->sessions, s);
    char *key = strdup(job->key);
    char *value = job->value ? strdup(job->value) : NULL;
    uint64_t index = job->index;
    bool live = !job->orphan;
    char sid[DLOCK_CONSUL_SESSION_MAX];
    snprintf(sid, sizeof sid, "%s", sess_id(s));
    bool dead = dlock_lease_dead(cc->sessions, s);
    cc->reaping = key;
    job->reaping = true; /* nobody else gives this one back meanwhile */
    pthread_mutex_unlock(&cc->mu);
    int rc = key && !dead ? give_back(cc, key, sid, index, value, live, -1) : 0;
    pthread_mutex_lock(&cc->mu);
    cc->reaping = NULL;
    job->reaping = false;
    pthread_cond_broadcast(&cc->cv);
    if (job->orphan && rc >= 0 && !dead && orphan_watched(job)) {
      job->confirmed_ns = now_ns() + 2000000000; /* look again */
    } else if (job->orphan && (rc >= 0 || dead || rc == DLOCK_EAUTH || rc == DLOCK_EBACKEND)) {
      orphan_free(cc, job); /* given back, or it never will be */
    } else if (job->orphan) {
      /* Unreachable agent: again later, with growing gaps. */
      job->renew_failures++;
      int64_t gap = (int64_t)1000000000 << (job->renew_failures < 5 ? job->renew_failures : 5);
      job->confirmed_ns = now_ns() + gap;
    } else if (rc < 0 && key) {
      orphan_add(cc, s, key, value, index); /* the handle is the core's: keep a copy */
    }
    dlock_lease_put(cc->sessions, s);
    free(key);
    free(value);
  }
  pthread_mutex_unlock(&cc->mu);
  return NULL;
}

/* Before each lock attempt on KEY: orphans of KEY are given back first, by
 * whichever session left them (or they would keep the key from a new
 * session of ours).  Those that cannot be given back now stay, for the
 * next attempt and, once the acquire is over, the reaper; a lock we then
 * get under their session is ours, and try_lock's caller drops them. */
static void settle_orphans(cs_client *cc, const char *key, int64_t deadline) {
  pthread_mutex_lock(&cc->mu);
  while (cc->reaping && strcmp(cc->reaping, key) == 0)
    pthread_cond_wait(&cc->cv, &cc->mu);
  for (;;) {
    cs_lock *o = cc->held;
    while (o && !(o->orphan && strcmp(o->key, key) == 0 && !o->settling && !o->reaping))
      o = o->next;
    if (!o)
      break;
    o->settling = true;
    char sid[DLOCK_CONSUL_SESSION_MAX];
    snprintf(sid, sizeof sid, "%s", sess_id(o->sess));
    bool dead = dlock_lease_dead(cc->sessions, o->sess);
    pthread_mutex_unlock(&cc->mu);
    /* The orphan's fields stay: nobody frees one that is settling. */
    int rc = dead ? 0 : give_back(cc, key, sid, o->index, o->value, false, deadline);
    pthread_mutex_lock(&cc->mu);
    if (rc >= 0 && !dead && orphan_watched(o))
      continue; /* still settling: not again in this round */
    if (rc >= 0 || rc == DLOCK_EAUTH || rc == DLOCK_EBACKEND)
      orphan_free(cc, o);
  }
  /* Those that failed are the reaper's again. */
  for (cs_lock *o = cc->held; o; o = o->next)
    if (o->orphan && strcmp(o->key, key) == 0)
      o->settling = false; /* one settle per key at a time: the core's rule */
  pthread_mutex_unlock(&cc->mu);
}

/* Under mu: we hold KEY through S now, so orphans of KEY under S are ours
 * again and must not be given back. */
static void drop_orphans(cs_client *cc, const char *key, dlock_lease *s) {
  for (cs_lock *o = cc->held, *next; o; o = next) {
    next = o->next;
    if (o->orphan && o->sess == s && strcmp(o->key, key) == 0 && !o->settling && !o->reaping)
      orphan_free(cc, o);
  }
}

/* ---- open / close ---- */

static void client_free(cs_client *cc) {
  if (cc->reaper_started) {
    pthread_mutex_lock(&cc->mu);
    cc->stop = true;
    pthread_cond_broadcast(&cc->cv);
    pthread_cond_signal(&cc->reaper_cv);
    pthread_mutex_unlock(&cc->mu);
    pthread_join(cc->reaper, NULL);
  }
  while (cc->held) {
    cs_lock *lk = cc->held;
    unlink_lock(cc, lk);
    free(lk->key);
    lk->key = NULL;
    free(lk->value);
    lk->value = NULL;
    if (lk->orphan)
      free(lk);
  }
  /* Destroys the sessions the agent still has. */
  dlock_leases_free(cc->sessions);
  cc->sessions = NULL;
  dlock__http_close(&cc->http);
  if (cc->token)
    memset(cc->token, 0, strlen(cc->token));
  free(cc->token);
  free(cc->prefix);
  pthread_mutex_destroy(&cc->mu);
  pthread_cond_destroy(&cc->cv);
  pthread_cond_destroy(&cc->reaper_cv);
}

static int consul_open(dlock_backend_client *bc, dlock_url *url) {
  cs_client *cc = bc->priv;
  cc->bc = bc;
  pthread_mutex_init(&cc->mu, NULL);
  dlock__cond_init(&cc->cv);
  dlock__cond_init(&cc->reaper_cv);
  cc->reaper_wake_ns = INT64_MIN;
  int rc = dlock__http_open(&cc->http, "consul", url, "consul+https", 8500,
                            bc->connect_timeout_ms);
  cc->http.bc = bc;
  cc->http.steady_pause = true;
  if (rc == 0)
    rc = dlock_leases_new(bc, &consul_session_ops, &cc->sessions);
  const char *path = dlock_url_path(url);
  if (rc == 0 && path[0] && strcmp(path, "/") != 0)
    rc = dlock_seterr(DLOCK_EINVAL, "consul: the URL takes no path (got '%s'); use ?prefix=",
                      path);
  if (rc == 0 && (dlock_url_user(url) || dlock_url_password(url)))
    rc = dlock_seterr(DLOCK_EINVAL, "consul: give the ACL token as ?token= or "
                      "CONSUL_HTTP_TOKEN, not as user:password");
  const char *tok = NULL;
  if (rc == 0 && !dlock_url_param(url, "token", &tok))
    tok = getenv("CONSUL_HTTP_TOKEN");
  if (rc == 0 && tok && *tok) {
    if (strlen(tok) > 512 || strpbrk(tok, "\r\n"))
      rc = dlock_seterr(DLOCK_EINVAL, "consul: the ACL token is malformed");
    else if (!(cc->token = strdup(tok)))
      rc = dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  }
  if (rc == 0)
    rc = dlock_url_param_duration(url, "lock_delay", 15000, &cc->lock_delay_ms);
  if (rc == 0 && cc->lock_delay_ms > 60000)
    rc = dlock_seterr(DLOCK_EINVAL, "consul: lock_delay is at most 60s (Consul's limit)");
  if (rc == 0 && !(cc->prefix = strdup(bc->prefix ? bc->prefix : DLOCK__CONSUL_DEFAULT_PREFIX)))
    rc = dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  if (rc == 0) {
    char host[96] = "";
    gethostname(host, sizeof host - 1);
    snprintf(cc->name, sizeof cc->name, "dlock %s:%ld", host, (long)getpid());
  }
  /* Reach the agent now: a wrong address or token shows at open. */
  if (rc == 0) {
    reply r = {0};
    int64_t deadline = now_ns() + bc->connect_timeout_ms * 1000000 *
                                      (int64_t)cc->http.nendpoints + bc->timeout_ms * 1000000;
    rc = request(cc, "GET", "/v1/status/leader", NULL, deadline, &r);
    if (rc == 0 && r.status != 200)
      rc = dlock_seterr(DLOCK_ECONN, "consul: status/leader: HTTP %ld", r.status);
    else if (rc == 0 && (r.body.len < 3))
      rc = dlock_seterr(DLOCK_ECONN, "consul: the agent knows no leader");
    reply_free(&r);
  }
  if (rc == 0 && pthread_create(&cc->reaper, NULL, reaper_main, cc) != 0)
    rc = dlock_seterr(DLOCK_ENOMEM, "consul: cannot start the reaper thread");
  else if (rc == 0)
    cc->reaper_started = true;
  if (rc < 0)
    client_free(cc);
  return rc;
}

static void consul_close(dlock_backend_client *bc) {
  cs_client *cc = bc->priv;
  pthread_mutex_lock(&cc->mu);
  cc->stop = true;
  pthread_cond_broadcast(&cc->cv);
  pthread_cond_signal(&cc->reaper_cv);
  pthread_mutex_unlock(&cc->mu);
  if (cc->reaper_started) {
    pthread_join(cc->reaper, NULL);
    cc->reaper_started = false;
  }
  client_free(cc);
}

/* ---- acquire ---- */

/* After a refused lock: is KEY held, or free inside a lock-delay (1 in
 * *delay), and the index to block on (*index, 0 when there is none).  The
 * index is read before the key's state, so that a release between the two
 * moves the index past it and the blocking query returns at once.  The
 * key's own path gives both in one answer; once the agent refuses it
 * (*exact cleared, see consul-codec.h) the index comes from a listing of
 * the key's printable prefix and the state from a txn. */
static void look(cs_client *cc, const char *key, bool *exact, int64_t deadline, int *delay,
                 uint64_t *index) {
  for (int whole = *exact;; whole = 0) {
    char *path = dlock__consul_watch_path(key, whole, "consistent");
    reply g = {0};
    int grc = path ? request(cc, "GET", path, NULL, bound(cc, deadline), &g) : -1;
    free(path);
    long st = grc == 0 ? g.status : 0;
    *index = st == 200 || st == 404 ? g.index : 0;
    dlock__consul_kv kv = {0};
    if (whole && st == 404)
      *delay = 1;
    else if (whole && st == 200 && dlock__consul_parse_kv(g.body.data, g.body.len, &kv) == 0)
      *delay = kv.session[0] == '\0';
    dlock__consul_kv_free(&kv);
    reply_free(&g);
    if (whole && grc == 0 && st != 200 && st != 404 && st < 500) {
      *exact = false; /* refused by the agent's path checks: the prefix from now on */
      continue;
    }
    if (!whole && *index) {
      int f = read_key(cc, key, deadline, &kv);
      if (f < 0)
        *index = 0;
      else
        *delay = f == 0 || kv.session[0] == '\0';
      dlock__consul_kv_free(&kv);
    }
    return;
  }
}

/* One lock attempt: 0 with *token, DLOCK_EBUSY (1 in *delay when nobody
 * holds the key: a lock-delay is in force; *index the index to block on,
 * see look()), or another negative code. */
static int try_lock(cs_client *cc, dlock_lease *s, const char *key, const char *value,
                    int64_t deadline, bool *exact, uint64_t *token, int *delay,
                    uint64_t *index) {
  *delay = 0;
  *index = 0;
  pthread_mutex_lock(&cc->mu);
  cc->stats.locks++;
  pthread_mutex_unlock(&cc->mu);
  dlock__consul_txn t;
  long status;
  int rc = txn(cc, "/v1/txn", dlock__consul_req_lock(key, sess_id(s), value), deadline, "txn", &t,
               &status);
  if (rc == 0 && status == 200) {
    const dlock__consul_kv *kv = t.nresults > 1 && t.found[1] ? &t.results[1] : NULL;
    if (!kv || strcmp(kv->session, sess_id(s)) != 0 || !kv->modify_index)
      rc = dlock_seterr(DLOCK_EBACKEND, "consul: the lock txn answered without our session");
    else
      *token = kv->modify_index;
  } else if (rc == 0) {
    if (strstr(t.msg, "Invalid session") || strstr(t.msg, "invalid session"))
      rc = dlock_seterr(DLOCK_ELOST, "consul: %s", t.msg);
    else
      rc = dlock_seterr(DLOCK_EBUSY, "consul: '%s' is held", key);
  }
  dlock__consul_txn_free(&t);
  if (rc == DLOCK_EBUSY)
    look(cc, key, exact, deadline, delay, index);
  return rc;
}

/* Block until KEY (its path with EXACT, else its printable prefix: see
 * look()) changes past INDEX or UNTIL comes: returns the new index, or 0
 * on an error (the caller pauses and looks again). */
static uint64_t block_on(cs_client *cc, const char *key, bool exact, uint64_t index,
                         int64_t until) {
  int64_t left_ms = (until - now_ns()) / 1000000;
  /* Consul adds up to wait/16 of jitter; leave room for it and the trip. */
  int64_t wait_ms = left_ms * 15 / 16 - 50;
  if (wait_ms > BLOCK_MAX_MS)
    wait_ms = BLOCK_MAX_MS;
  if (wait_ms < 10)
    return index;
  char q[96];
  snprintf(q, sizeof q, "index=%" PRIu64 "&wait=%" PRId64 "ms", index, wait_ms);
  char *path = dlock__consul_watch_path(key, exact, q);
  reply r = {0};
  int64_t dl = now_ns() + (wait_ms + wait_ms / 16 + 2000) * 1000000;
  pthread_mutex_lock(&cc->mu);
  cc->stats.blocking++;
  pthread_mutex_unlock(&cc->mu);
  int rc = path ? request(cc, "GET", path, NULL, dl, &r) : -1;
  uint64_t got = rc == 0 && (r.status == 200 || r.status == 404) ? r.index : 0;
  reply_free(&r);
  free(path);
  /* An index that went backwards (a restored snapshot) starts over. */
  if (got && got < index)
    got = 1;
  return got;
}

static int do_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline,
                      bool try_only) {
  cs_client *cc = bc->priv;
  cs_lock *lk = bl->priv;
  char *key = dlock__consul_lock_key(cc->prefix, bl->key, bl->keylen);
  char *value = dlock__consul_value(bl->owner, bl->label);
  int rc = key && value ? 0 : dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  if (rc == 0 && bl->ttl_ms > SESSION_TTL_MAX_S * 1000)
    rc = dlock_seterr(DLOCK_EINVAL, "consul: a ttl above %d s cannot be kept: Consul's "
                      "longest session TTL", SESSION_TTL_MAX_S);
  /* From here on the orphans of KEY are ours to give back, not the
   * reaper's: one that it gave back while our lock was on its way would
   * free that lock (see the top of this file). */
  cs_acq acq = {.key = rc == 0 ? key : NULL};
  if (acq.key) {
    pthread_mutex_lock(&cc->mu);
    acq.next = cc->acquiring;
    cc->acquiring = &acq;
    pthread_mutex_unlock(&cc->mu);
  }
  uint64_t index, token = 0;
  int64_t pause_ns = 50000000;
  bool exact = true; /* the agent takes the key's path (until it refuses it) */
  dlock_lease *s = NULL;
  for (int lost = 0; rc == 0;) {
    settle_orphans(cc, key, try_only ? -1 : deadline);
    if ((rc = dlock_lease_get(cc->sessions, bl->ttl_ms, try_only ? -1 : deadline, &s)) < 0)
      break;
    int delay = 0;
    rc = try_lock(cc, s, key, value, try_only ? -1 : deadline, &exact, &token, &delay,
                  &index);
    if (rc == 0) {
      /* Under mu, so that a session going now finds the lock (sess_gone). */
      pthread_mutex_lock(&cc->mu);
      drop_orphans(cc, key, s);
      int64_t fresh = dlock_lease_fresh_ns(cc->sessions, s);
      if (dlock_lease_dead(cc->sessions, s)) {
        rc = DLOCK_ELOST;
      } else {
        lk->bl = bl;
        lk->sess = s;
        lk->key = key;
        lk->value = value;
        lk->index = token;
        lk->ttl_ms = bl->ttl_ms;
        lk->confirmed_ns = fresh;
        lk->listed = true;
        lk->next = cc->held;
        if (cc->held)
          cc->held->prev = lk;
        cc->held = lk;
        bl->token = token;
        bl->sent_ns = fresh;
        key = NULL;
        value = NULL;
        kick_reaper(cc, lk->confirmed_ns + lk->ttl_ms * 1000000);
      }
      pthread_mutex_unlock(&cc->mu);
      if (rc == 0)
        break;
    }
    if (rc == DLOCK_ELOST)
      dlock_lease_gone(cc->sessions, s);
    pthread_mutex_lock(&cc->mu);
    if (rc != DLOCK_ELOST && rc != DLOCK_EBUSY && rc != DLOCK_EINVAL && rc != DLOCK_ENOMEM)
      /* No definite answer: the lock may have been applied. */
      orphan_add(cc, s, key, value, 0);
    dlock_lease_put(cc->sessions, s);
    if (delay)
      cc->stats.lock_delays++;
    pthread_mutex_unlock(&cc->mu);
    s = NULL;
    if (rc == DLOCK_ELOST && ++lost <= 3) {
      rc = 0; /* the session vanished under us: a new one */
      continue;
    }
    if (rc != DLOCK_EBUSY || try_only)
      break;
    if (deadline >= 0 && now_ns() >= deadline) {
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "consul: timed out waiting for '%s'", bl->key);
      break;
    }
    rc = 0;
    if (delay) {
      /* Free, but inside the lock-delay of a session that ended: no write
       * will announce its end, so look again after a growing pause. */
      int64_t until = now_ns() + pause_ns + (int64_t)dlock__random_below((uint64_t)pause_ns);
      if (deadline >= 0 && until > deadline)
        until = deadline;
      struct timespec ts;
      dlock__ns_to_timespec(until, &ts);
      pthread_mutex_lock(&cc->mu);
      while (!cc->stop && now_ns() < until)
        pthread_cond_timedwait(&cc->cv, &cc->mu, &ts);
      pthread_mutex_unlock(&cc->mu);
      pause_ns = pause_ns * 2 > 1000000000 ? 1000000000 : pause_ns * 2;
      continue;
    }
    /* Held: a blocking query wakes us when the key changes (release,
     * session end), capped by the deadline and by a third of the ttl so
     * the session we will lock with is renewed in time. */
    int64_t until = now_ns() + bl->ttl_ms * 1000000 / 3;
    if (deadline >= 0 && deadline < until)
      until = deadline;
    int64_t before = now_ns();
    if (!index || !block_on(cc, key, exact, index, until) || now_ns() - before < 5000000)
      dlock__http_pause(deadline); /* it did not block: do not spin */
  }
  /* A request cut short by the end of the caller's wait is a timeout, not
   * an unreachable agent. */
  if ((rc == DLOCK_ECONN || rc == DLOCK_ETIMEDOUT) && deadline >= 0 && now_ns() >= deadline)
    rc = dlock_seterr(DLOCK_ETIMEDOUT, "consul: timed out waiting for '%s'", bl->key);
  if (acq.key) {
    pthread_mutex_lock(&cc->mu);
    for (cs_acq **a = &cc->acquiring; *a; a = &(*a)->next)
      if (*a == &acq) {
        *a = acq.next;
        break;
      }
    /* Orphans the reaper left to us that we could not give back. */
    if (cc->reaper_skipped) {
      cc->reaper_skipped = false;
      pthread_cond_signal(&cc->reaper_cv);
    }
    pthread_mutex_unlock(&cc->mu);
  }
  free(key);
  free(value);
  return rc;
}

static int consul_try_acquire(dlock_backend_client *bc, dlock_backend_lock *bl) {
  return do_acquire(bc, bl, -1, true);
}

static int consul_acquire(dlock_backend_client *bc, dlock_backend_lock *bl, int64_t deadline_ns) {
  return do_acquire(bc, bl, deadline_ns, false);
}

/* ---- renew / release ---- */

/* For dlock_lease_renew: the lease BL rides on, and when it was last
 * confirmed. */
static dlock_lease *lock_sess(dlock_backend_lock *bl, int64_t *confirmed_ns) {
  cs_lock *lk = bl->priv;
  *confirmed_ns = lk->confirmed_ns;
  return lk->sess;
}

static int consul_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                             int *rcs) {
  cs_client *cc = bc->priv;
  int64_t start = now_ns();
  pthread_mutex_lock(&cc->mu);
  for (size_t i = 0; i < n; i++) {
    cs_lock *lk = bls[i]->priv;
    lk->ttl_ms = bls[i]->ttl_ms;
    rcs[i] = !lk->listed || lk->lost ? DLOCK_ELOST : DLOCK_LEASE_PENDING;
    /* The session's TTL is fixed: a lock cannot be promised longer than
     * the server keeps it.  Refusing lets the local deadline run out. */
    if (rcs[i] == DLOCK_LEASE_PENDING && lk->ttl_ms > dlock_lease_keep_ms(cc->sessions, lk->sess))
      rcs[i] = DLOCK_ENOTSUP;
  }
  pthread_mutex_unlock(&cc->mu);
  for (size_t i = 0; i < n; i++)
    if (rcs[i] == DLOCK_ELOST)
      dlock_seterr(DLOCK_ELOST, "consul: '%s' was lost", bls[i]->key);
    else if (rcs[i] == DLOCK_ENOTSUP)
      dlock_seterr(DLOCK_ENOTSUP, "consul: the ttl of '%s' cannot grow past its session's "
                   "TTL; acquire it with the longer ttl", bls[i]->key);
  /* One renewal per session among them. */
  int lrc = dlock_lease_renew(cc->sessions, bls, n, rcs, lock_sess);
  if (lrc < 0)
    return lrc;
  /* Does each session still hold its keys?  One consistent txn per 64. */
  for (size_t i = 0; i < n;) {
    const char *keys[DLOCK__CONSUL_TXN_MAX], *sids[DLOCK__CONSUL_TXN_MAX];
    size_t idx[DLOCK__CONSUL_TXN_MAX], m = 0;
    int64_t dl = INT64_MAX;
    for (; i < n && m < DLOCK__CONSUL_TXN_MAX; i++) {
      if (rcs[i] != 0)
        continue;
      cs_lock *lk = bls[i]->priv;
      keys[m] = lk->key;
      sids[m] = sess_id(lk->sess);
      idx[m++] = i;
      int64_t d = bls[i]->io_deadline_ns ? bls[i]->io_deadline_ns : INT64_MAX;
      if (d < dl)
        dl = d;
    }
    if (m == 0)
      continue;
    dlock__consul_txn t;
    long status;
    int rc = txn(cc, "/v1/txn?consistent", dlock__consul_req_check(keys, sids, m),
                 dl == INT64_MAX ? -1 : dl, "check txn", &t, &status);
    for (size_t k = 0; k < m; k++) {
      size_t j = idx[k];
      bool bad = false;
      for (size_t e = 0; rc == 0 && e < t.nerr; e++)
        bad |= t.err_op[e] == (int)k;
      if (rc < 0)
        rcs[j] = rc;
      else if (bad)
        rcs[j] = dlock_seterr(DLOCK_ELOST, "consul: '%s' is no longer held by our session",
                              bls[j]->key);
      else
        rcs[j] = 0;
    }
    dlock__consul_txn_free(&t);
  }
  pthread_mutex_lock(&cc->mu);
  for (size_t i = 0; i < n; i++) {
    cs_lock *lk = bls[i]->priv;
    if (rcs[i] == 0)
      lk->confirmed_ns = bls[i]->sent_ns;
    else if (rcs[i] == DLOCK_ELOST)
      lk->lost = true;
    if (!bls[i]->sent_ns)
      bls[i]->sent_ns = start;
  }
  pthread_mutex_unlock(&cc->mu);
  return 0;
}

static int consul_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  cs_client *cc = bc->priv;
  cs_lock *lk = bl->priv;
  pthread_mutex_lock(&cc->mu);
  if (!lk->listed) {
    pthread_mutex_unlock(&cc->mu);
    return dlock_seterr(DLOCK_ELOST, "consul: '%s' was not held", bl->key);
  }
  /* The reaper may be giving it back (its ttl ran out): LK is the core's
   * memory, freed when we return. */
  while (lk->reaping)
    pthread_cond_wait(&cc->cv, &cc->mu);
  bool lost = lk->lost;
  dlock_lease *s = lk->sess;
  bool alive = !dlock_lease_dead(cc->sessions, s);
  char sid[DLOCK_CONSUL_SESSION_MAX];
  snprintf(sid, sizeof sid, "%s", sess_id(s));
  /* No loss report may name it from here on: the core frees BL. */
  lk->bl = NULL;
  lk->lost = true;
  pthread_mutex_unlock(&cc->mu);
  int rc = 0;
  int b = alive ? give_back(cc, lk->key, sid, lk->index, lk->value, true, -1) : 0;
  if (b == 0)
    lost = true;
  pthread_mutex_lock(&cc->mu);
  unlink_lock(cc, lk);
  if (b < 0) {
    orphan_add(cc, s, lk->key, lk->value, lk->index);
    if (!lost)
      rc = b;
  }
  dlock_lease_put(cc->sessions, s);
  pthread_mutex_unlock(&cc->mu);
  free(lk->key);
  lk->key = NULL;
  free(lk->value);
  lk->value = NULL;
  lk->sess = NULL;
  if (lost && rc == 0)
    return dlock_seterr(DLOCK_ELOST, "consul: '%s' was lost before release", bl->key);
  return rc;
}

/* ---- inspect / list / break / control ---- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int consul_inspect(dlock_backend_client *bc, const char *key, size_t keylen,
                          dlock_info *info) {
  cs_client *cc = bc->priv;
  char *k = dlock__consul_lock_key(cc->prefix, key, keylen);
  info->ttl_ms = -1;
  dlock__consul_kv kv = {0};
  int rc = k ? read_key(cc, k, -1, &kv) : dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  free(k);
  if (rc == 1 && kv.session[0]) {
    info->held = 1;
    info->token = kv.modify_index;
    dlock__consul_value_split(kv.value, kv.valuelen, info->owner, sizeof info->owner,
                              info->label, sizeof info->label);
    /* Consul does not say how long a session has left, only its TTL; a
     * holder that renews on schedule has between two thirds of it and all
     * of it, so the TTL is the estimate. */
    char spath[128];
    snprintf(spath, sizeof spath, "/v1/session/info/%s", kv.session);
    reply si = {0};
    int64_t ttl = -1;
    if (request(cc, "GET", spath, NULL, bound(cc, -1), &si) == 0 && si.status == 200)
      dlock__consul_parse_renew(si.body.data, si.body.len, &ttl);
    info->ttl_ms = ttl;
    reply_free(&si);
  }
  dlock__consul_kv_free(&kv);
  return rc < 0 ? rc : 0;
}

/* Every held lock key under the tree of PREFIX, in one consistent read;
 * their sessions' TTLs (what inspect reports as the ttl) in one more. */
static int consul_list(dlock_backend_client *bc, const char *prefix, size_t prefixlen,
                       dlock_backend_emit_fn emit, void *ud) {
  cs_client *cc = bc->priv;
  /* The escape is a prefix code: the lock key of every key that begins
   * with PREFIX begins with the escaped PREFIX, and no other does.  A txn
   * takes any tree, also one the agent would refuse in a path. */
  char *tree = dlock__escape_slash(cc->prefix, prefix, prefixlen, "");
  if (!tree)
    return dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  dlock__consul_txn t;
  long status;
  int rc = txn(cc, "/v1/txn?consistent", dlock__consul_req_get(tree), -1, "list txn", &t,
               &status);
  if (rc == 0 && status == 409)
    rc = dlock_seterr(strstr(t.msg, "ermission denied") ? DLOCK_EAUTH : DLOCK_EBACKEND,
                      "consul: listing the locks under '%s': %s", tree, t.msg);
  free(tree);
  size_t *held = rc == 0 && t.nresults ? calloc(t.nresults, sizeof *held) : NULL;
  const char **ids = held ? calloc(t.nresults, sizeof *ids) : NULL;
  int64_t *ttls = ids ? malloc(t.nresults * sizeof *ttls) : NULL;
  if (rc == 0 && t.nresults && !ttls)
    rc = dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  char k[DLOCK_KEY_MAX + 1];
  size_t nheld = 0, nids = 0;
  for (size_t i = 0; rc == 0 && i < t.nresults; i++) {
    const dlock__consul_kv *kv = &t.results[i];
    /* Held now: a KV entry with a live session (Consul clears the field
     * when the session ends).  Anything else under the prefix that no
     * key maps to is not a lock of dlock's layout. */
    if (!t.found[i] || !kv->session[0] || !kv->key)
      continue;
    size_t kl = dlock__consul_key_of(cc->prefix, kv->key, kv->keylen, k);
    if (kl == 0 || kl < prefixlen || memcmp(k, prefix, prefixlen) != 0)
      continue;
    held[nheld++] = i;
    ids[nids++] = kv->session;
  }
  if (nids) {
    /* One session/list for all, however many keys they hold; a lookup
     * that fails leaves the ttls unknown, as inspect does. */
    qsort(ids, nids, sizeof *ids, cmp_str);
    size_t u = 1;
    for (size_t i = 1; i < nids; i++)
      if (strcmp(ids[i], ids[u - 1]) != 0)
        ids[u++] = ids[i];
    nids = u;
    for (size_t i = 0; i < nids; i++)
      ttls[i] = -1;
    reply r = {0};
    if (request(cc, "GET", "/v1/session/list", NULL, bound(cc, -1), &r) == 0 && r.status == 200)
      dlock__consul_parse_session_ttls(r.body.data, r.body.len, ids, nids, ttls);
    reply_free(&r);
    dlock__clear_err();
  }
  for (size_t h = 0; rc == 0 && h < nheld; h++) {
    const dlock__consul_kv *kv = &t.results[held[h]];
    size_t kl = dlock__consul_key_of(cc->prefix, kv->key, kv->keylen, k);
    dlock_info info;
    memset(&info, 0, sizeof info);
    info.held = 1;
    info.token = kv->modify_index;
    const char *sid = kv->session;
    const char **at = bsearch(&sid, ids, nids, sizeof *ids, cmp_str);
    info.ttl_ms = at ? ttls[at - ids] : -1;
    dlock__consul_value_split(kv->value, kv->valuelen, info.owner, sizeof info.owner,
                              info.label, sizeof info.label);
    rc = emit(ud, k, kl, &info);
  }
  free(held);
  free(ids);
  free(ttls);
  dlock__consul_txn_free(&t);
  return rc;
}

/* Under mu: a lock of this client whose key was just broken at INDEX is
 * lost now; its renewal would say so only at its next period. */
static void mark_broken(cs_client *cc, const char *key, uint64_t index) {
  for (cs_lock *lk = cc->held; lk; lk = lk->next)
    if (!lk->orphan && !lk->lost && lk->key && lk->index == index && strcmp(lk->key, key) == 0) {
      lk->lost = true;
      if (lk->bl)
        dlock_backend_lock_lost(cc->bc, lk->bl);
    }
}

/* The key is read, its holder compared with HOLDER, and the lock key
 * deleted by a check-session and a delete-cas at the ModifyIndex read:
 * any lock, unlock or release since moves that index and the delete
 * fails, so a holder that took the key after the read is never broken.
 * A delete, not a session destroy: the session carries its client's other
 * locks, and an invalidated session starts a lock-delay where a delete
 * frees the key at once, waking waiters as a release does.  The broken
 * holder's next renewal finds its key gone (or another session's) in its
 * check txn, and its release then fails that check too and touches
 * nothing. */
static int consul_force_release(dlock_backend_client *bc, const char *key, size_t keylen,
                                const dlock_info *holder, dlock_info *broken) {
  cs_client *cc = bc->priv;
  char *k = dlock__consul_lock_key(cc->prefix, key, keylen);
  if (!k)
    return dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  int rc = 0;
  /* After the first read only the session it found holding the key is
   * broken: a break whose answer was lost and that the transport sent
   * again finds the key gone or another's, and must not go on to the
   * waiter its delete woke. */
  char pin[DLOCK_CONSUL_SESSION_MAX] = "";
  for (int round = 0;; round++) {
    dlock__consul_kv kv;
    int f = read_key(cc, k, -1, &kv);
    char owner[sizeof broken->owner], label[sizeof broken->label];
    dlock__consul_value_split(kv.value, kv.valuelen, owner, sizeof owner, label, sizeof label);
    uint64_t index = kv.modify_index;
    char sid[DLOCK_CONSUL_SESSION_MAX];
    snprintf(sid, sizeof sid, "%s", kv.session);
    dlock__consul_kv_free(&kv);
    if (f < 0) {
      rc = f;
      break;
    }
    if (f == 0 || !sid[0] || (pin[0] && strcmp(pin, sid) != 0)) {
      broken->held = 0; /* nobody holds it, or not the one looked at: nothing to do */
      break;
    }
    if (holder->owner[0] ? strcmp(owner, holder->owner) != 0
                         : holder->token && index != holder->token) {
      rc = dlock_seterr(DLOCK_EBUSY, "consul: '%s' is held by another holder (token %" PRIu64
                        ") than the one named", key, index);
      break;
    }
    if (!index) {
      rc = dlock_seterr(DLOCK_EBACKEND, "consul: '%s' was read without its index", key);
      break;
    }
    snprintf(pin, sizeof pin, "%s", sid);
    if (round == 4) {
      rc = dlock_seterr(DLOCK_EBUSY, "consul: '%s' kept changing while it was broken; look "
                        "at it again", key);
      break;
    }
    dlock__consul_txn t;
    long status;
    rc = txn(cc, "/v1/txn", dlock__consul_req_release_at(k, sid, index), -1, "break", &t,
             &status);
    if (rc == 0 && status == 409 && strstr(t.msg, "ermission denied"))
      rc = dlock_seterr(DLOCK_EAUTH, "consul: breaking '%s' refused: %s", key, t.msg);
    else if (rc == DLOCK_ECONN || rc == DLOCK_ETIMEDOUT) {
      /* The delete may have been carried out all the same. */
      char why[256];
      snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
      rc = dlock_seterr(rc, "consul: no answer to the break of '%s', which may or may not "
                        "have been carried out: %s", key, why);
    }
    bool done = rc == 0 && status == 200;
    dlock__consul_txn_free(&t);
    if (rc < 0)
      break;
    if (!done)
      continue; /* it changed since the read: what holds it now? */
    broken->held = 1;
    broken->token = index;
    broken->ttl_ms = -1;
    memcpy(broken->owner, owner, sizeof owner);
    memcpy(broken->label, label, sizeof label);
    pthread_mutex_lock(&cc->mu);
    mark_broken(cc, k, index);
    pthread_mutex_unlock(&cc->mu);
    break;
  }
  free(k);
  return rc;
}

static int consul_control(dlock_backend_client *bc, dlock_backend_lock *bl, int op, void *arg) {
  cs_client *cc = bc->priv;
  if (!arg)
    return dlock_seterr(DLOCK_EINVAL, "consul: control operation %d needs an argument", op);
  if (op == DLOCK_CONSUL_CTL_LOCK_DELAY) {
    *(int64_t *)arg = cc->lock_delay_ms;
    return 0;
  }
  if (op == DLOCK_CONSUL_CTL_STATS) {
    pthread_mutex_lock(&cc->mu);
    *(struct dlock_consul_stats *)arg = cc->stats;
    pthread_mutex_lock(&cc->http.mu);
    ((struct dlock_consul_stats *)arg)->retries = cc->http.retries;
    pthread_mutex_unlock(&cc->http.mu);
    dlock_leases_counts(cc->sessions, &((struct dlock_consul_stats *)arg)->sessions,
                        &((struct dlock_consul_stats *)arg)->renewals);
    pthread_mutex_unlock(&cc->mu);
    return 0;
  }
  if (op == DLOCK_CONSUL_CTL_SESSION) {
    dlock_lease *s = NULL;
    int rc = 0;
    if (!bl) {
      if ((rc = dlock_lease_get(cc->sessions, bc->default_ttl_ms, -1, &s)) < 0)
        return rc;
    }
    pthread_mutex_lock(&cc->mu);
    cs_lock *lk = bl ? bl->priv : NULL;
    if (bl && (!lk->listed || !lk->sess))
      rc = dlock_seterr(DLOCK_EINVAL, "consul: DLOCK_CONSUL_CTL_SESSION needs a held lock");
    else
      snprintf(arg, DLOCK_CONSUL_SESSION_MAX, "%s", sess_id(bl ? lk->sess : s));
    if (s)
      dlock_lease_put(cc->sessions, s);
    pthread_mutex_unlock(&cc->mu);
    return rc;
  }
  return dlock_seterr(DLOCK_ENOTSUP, "consul: unknown control operation %d", op);
}

static const char *const consul_schemes[] = {"consul", "consul+https", NULL};

const dlock_backend_ops dlock__consul_ops = {
    .version = DLOCK_BACKEND_VERSION,
    .name = "consul",
    .schemes = consul_schemes,
    .caps = DLOCK_CAP_FENCING | DLOCK_CAP_NATIVE_WAIT | DLOCK_CAP_LOSS_DETECT |
            DLOCK_CAP_SERVER_TTL | DLOCK_CAP_CROSS_HOST | DLOCK_CAP_CROSS_PROCESS |
            DLOCK_CAP_HOLDER_INFO | DLOCK_CAP_LIST | DLOCK_CAP_BREAK,
    .client_size = sizeof(cs_client),
    .lock_size = sizeof(cs_lock),
    .open = consul_open,
    .close = consul_close,
    .try_acquire = consul_try_acquire,
    .acquire = consul_acquire,
    .release = consul_release,
    .renew_many = consul_renew_many,
    .inspect = consul_inspect,
    .control = consul_control,
    .list = consul_list,
    .force_release = consul_force_release,
};
