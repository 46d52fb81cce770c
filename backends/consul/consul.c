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
 * Giving a key back (a release, a lock whose ttl passed unrenewed, an
 * attempt whose answer never came: the core asks for each through
 * release(), and again until the agent answers) is an unlock by session,
 * and the session is every lock's of the client: on its own it would free
 * any later lock of the same key by the same client.  An agent without a
 * leader (a restart, an election) holds requests for seconds and then
 * carries them out, also those whose client gave up, in no particular
 * order.  So every release is conditional on the key's ModifyIndex (a
 * delete-cas, after a check-session in the same txn): the index the
 * acquisition left (its token), or one just read that shows the key still
 * holding the acquisition's own value, whose owner part is new with every
 * attempt.  Any lock written since moves the index, and the release then
 * fails.  A lock txn that got no answer may likewise be carried out after
 * its give-back found the key free or gave it back: the core looks at such
 * attempts again for LATE_MS (bc->late_ms), never while this client uses
 * the key, or the key would stay with our session for as long as other
 * locks keep the session alive.  While this client uses the key, an
 * acquire that finds it held by a session of ours frees it: nothing else
 * of the client can hold it then (the core's key table), so it is such a
 * grant, and a held lock's release frees the key whatever value such a
 * grant wrote over its own.
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
 * renewing is given back by the core once its validity has passed
 * (bc->give_back_expired); a holder that dies is freed by the server after
 * 2 x TTL plus the lock-delay.  The backend starts no thread: libcurl's
 * requests run on the caller's. */
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
/* Less time left than this, a waiter sends no more lock txns. */
#define LAST_SEND_NS 10000000
/* A blocking query answered sooner than this came back at once. */
#define QUICK_ANSWER_NS 5000000
/* Longest blocking query; Consul caps wait at 10 minutes. */
#define BLOCK_MAX_MS 300000
/* How long after a lock txn got no answer the agent may still carry it out
 * (bc->late_ms): an agent without a leader holds a request for its
 * rpc_hold_timeout (7 s by default) and a restarted one applies what it
 * held after replaying its log, which can take seconds more.  A grant that
 * lands after its give-back found the key free (or gave back an earlier
 * copy of it) would otherwise leave the key held by our session with
 * nobody to give it back. */
#define LATE_MS 30000

/* A session's state in the client's lease table (dlock/lease.h): its id. */
typedef struct cs_session_id {
  char id[DLOCK_CONSUL_SESSION_MAX];
} cs_session_id;

static const char *sess_id(const dlock_lease *s) {
  return ((const cs_session_id *)dlock_lease_priv(s))->id;
}

/* bl->priv.  An attempt that failed holds nothing but SID, so the core
 * may move it (to give it back under a copy of the handle). */
typedef struct cs_lock {
  struct cs_lock *prev, *next; /* the client's held locks (listed) */
  dlock_backend_lock *bl;      /* NULL once the core has let go of it */
  dlock_lease *sess;           /* listed: its session, with a reference */
  char *key;                   /* listed: the lock key */
  char sid[DLOCK_CONSUL_SESSION_MAX]; /* the session its lock txn was sent for */
  uint64_t index;              /* the key's ModifyIndex its lock left (the token) */
  int64_t confirmed_ns;
  int64_t ttl_ms;
  bool listed;
  bool lost;
} cs_lock;

typedef struct cs_client {
  dlock_backend_client *bc;
  pthread_mutex_t mu;
  dlock__http http;
  char *token;                 /* ACL token, NULL without */
  char *prefix;
  char name[160];              /* session name */
  int64_t lock_delay_ms;
  dlock_leases *sessions;      /* dlock/lease.h */
  cs_lock *held;
  struct dlock_consul_checks checks;
  unsigned tree_skip;          /* renew passes left that check by key, not by tree */
  struct dlock_consul_stats stats;
} cs_client;

static int64_t now_ns(void) { return dlock_backend_now_ns(); }

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
 * core could not release, grants the agent carried out late) instead of
 * after 2 x TTL. */
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
  int rc = req ? request(cc, "PUT", path, req, dlock_backend_deadline(cc->bc, deadline), &r)
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
 * again.  With LIVE the caller is the client's only hold of KEY (the
 * release of a lock, also one whose ttl ran out, or an acquire that found
 * the key held by a session of ours), and SESSION holding the key is
 * enough: another value there can only be an unanswered lock of ours that
 * the agent carried out late.  A txn, like the lock: it takes keys the
 * agent refuses in a /v1/kv/ path. */
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

/* Whether SID is a session of this client that the agent still has. */
static bool sid_match(const void *priv, void *ud) {
  return strcmp(((const cs_session_id *)priv)->id, ud) == 0;
}

static bool own_session(cs_client *cc, const char *sid) {
  return sid[0] && dlock_leases_any(cc->sessions, sid_match, (void *)sid);
}

/* ---- open / close ---- */

static void client_free(cs_client *cc) {
  /* Locks whose release got no answer: the core frees their handles. */
  while (cc->held) {
    cs_lock *lk = cc->held;
    unlink_lock(cc, lk);
    free(lk->key);
    lk->key = NULL;
  }
  /* Destroys the sessions the agent still has, and so frees what they
   * hold: those locks, and grants the agent carried out late. */
  dlock_leases_free(cc->sessions);
  cc->sessions = NULL;
  dlock__http_close(&cc->http);
  if (cc->token)
    memset(cc->token, 0, strlen(cc->token));
  free(cc->token);
  free(cc->prefix);
  pthread_mutex_destroy(&cc->mu);
}

static int consul_open(dlock_backend_client *bc, dlock_url *url) {
  cs_client *cc = bc->priv;
  cc->bc = bc;
  pthread_mutex_init(&cc->mu, NULL);
  /* Sessions keep a lock past its ttl and past an unanswered request. */
  bc->give_back_expired = true;
  bc->late_ms = LATE_MS;
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
  if (rc < 0)
    client_free(cc);
  return rc;
}

static void consul_close(dlock_backend_client *bc) { client_free(bc->priv); }

/* ---- acquire ---- */

/* What look() saw of a key our lock found taken. */
typedef struct cs_seen {
  int delay;                             /* 1: free, inside a lock-delay */
  uint64_t index;                        /* to block on, 0 when there is none */
  char holder[DLOCK_CONSUL_SESSION_MAX]; /* the session holding it, "" if none or unknown */
  uint64_t held_at;                      /* the key's ModifyIndex with that holder */
} cs_seen;

/* After a refused lock: is KEY held (by whom, at which ModifyIndex), or
 * free inside a lock-delay, and the index to block on.  The index is read
 * before the key's state, so that a release between the two moves the
 * index past it and the blocking query returns at once.  The key's own
 * path gives both in one answer; once the agent refuses it (*exact
 * cleared, see consul-codec.h) the index comes from a listing of the key's
 * printable prefix and the state from a txn. */
static void look(cs_client *cc, const char *key, bool *exact, int64_t deadline, cs_seen *seen) {
  for (int whole = *exact;; whole = 0) {
    char *path = dlock__consul_watch_path(key, whole, "consistent");
    reply g = {0};
    int grc = path ? request(cc, "GET", path, NULL,
                             dlock_backend_deadline(cc->bc, deadline), &g) : -1;
    free(path);
    long st = grc == 0 ? g.status : 0;
    seen->index = st == 200 || st == 404 ? g.index : 0;
    dlock__consul_kv kv = {0};
    bool read = false;
    if (whole && st == 404)
      seen->delay = 1;
    else if (whole && st == 200 && dlock__consul_parse_kv(g.body.data, g.body.len, &kv) == 0)
      read = true;
    reply_free(&g);
    if (whole && grc == 0 && st != 200 && st != 404 && st < 500) {
      *exact = false; /* refused by the agent's path checks: the prefix from now on */
      continue;
    }
    if (!whole && seen->index) {
      int f = read_key(cc, key, deadline, &kv);
      if (f < 0)
        seen->index = 0;
      else if (f == 0)
        seen->delay = 1;
      else
        read = true;
    }
    if (read) {
      seen->delay = kv.session[0] == '\0';
      snprintf(seen->holder, sizeof seen->holder, "%s", kv.session);
      seen->held_at = kv.modify_index;
    }
    dlock__consul_kv_free(&kv);
    return;
  }
}

/* One lock attempt: 0 with *token, DLOCK_EBUSY (*seen says what holds the
 * key, see look()), or another negative code.  bl->sent_ns stays set when
 * the lock txn got no answer (the core then gives the attempt back); LK's
 * sid names the session it was sent for. */
static int try_lock(cs_client *cc, dlock_backend_lock *bl, dlock_lease *s, const char *key,
                    const char *value, int64_t deadline, bool *exact, uint64_t *token,
                    cs_seen *seen) {
  cs_lock *lk = bl->priv;
  memset(seen, 0, sizeof *seen);
  pthread_mutex_lock(&cc->mu);
  cc->stats.locks++;
  pthread_mutex_unlock(&cc->mu);
  snprintf(lk->sid, sizeof lk->sid, "%s", sess_id(s));
  bl->sent_ns = now_ns();
  dlock__consul_txn t;
  long status;
  int rc = txn(cc, "/v1/txn", dlock__consul_req_lock(key, lk->sid, value), deadline, "txn", &t,
               &status);
  bool unanswered = rc == DLOCK_ECONN || rc == DLOCK_ETIMEDOUT;
  if (rc == 0 && status == 200) {
    const dlock__consul_kv *kv = t.nresults > 1 && t.found[1] ? &t.results[1] : NULL;
    if (!kv || strcmp(kv->session, lk->sid) != 0 || !kv->modify_index)
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
  if (!unanswered)
    bl->sent_ns = 0;
  if (rc < 0 && !unanswered && status == 200) {
    /* Carried out (a txn is answered 200 only then) but unreadable: no
     * lock to hand out, and the core gives back only what got no answer. */
    char why[256];
    snprintf(why, sizeof why, "%s", dlock_client_errmsg(NULL));
    give_back(cc, key, lk->sid, 0, value, false, deadline);
    dlock_seterr(rc, "%s", why);
  }
  if (rc == DLOCK_EBUSY)
    look(cc, key, exact, deadline, seen);
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

static void sleep_until(int64_t until) {
  struct timespec ts;
  dlock__ns_to_timespec(until, &ts);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
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
  uint64_t token = 0;
  int64_t pause_ns = 50000000;
  int64_t dl = try_only ? -1 : deadline;
  bool exact = true; /* the agent takes the key's path (until it refuses it) */
  unsigned free_run = 0; /* refused locks in a row after which the key looked free */
  bool quick = false;    /* the last blocking query answered at once, its index moved */
  cs_seen prev = {0};    /* what the look before that query saw */
  dlock_lease *s = NULL;
  for (int lost = 0, freed = 0, round = 0; rc == 0; round++) {
    /* A lock txn sent with almost no time left is cut short by the
     * deadline, and the core then gives back what it may have taken. */
    if (round > 0 && deadline >= 0 && now_ns() + LAST_SEND_NS >= deadline) {
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "consul: timed out waiting for '%s'", bl->key);
      break;
    }
    if ((rc = dlock_lease_get(cc->sessions, bl->ttl_ms, dl, &s)) < 0)
      break;
    cs_seen seen;
    rc = try_lock(cc, bl, s, key, value, dl, &exact, &token, &seen);
    if (rc == 0) {
      /* Under mu, so that a session going now finds the lock (sess_gone). */
      pthread_mutex_lock(&cc->mu);
      int64_t fresh = dlock_lease_fresh_ns(cc->sessions, s);
      if (dlock_lease_dead(cc->sessions, s)) {
        rc = DLOCK_ELOST;
      } else {
        lk->bl = bl;
        lk->sess = s;
        lk->key = key;
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
      }
      pthread_mutex_unlock(&cc->mu);
      if (rc == 0)
        break;
    }
    if (rc == DLOCK_ELOST)
      dlock_lease_gone(cc->sessions, s);
    pthread_mutex_lock(&cc->mu);
    dlock_lease_put(cc->sessions, s);
    if (seen.delay)
      cc->stats.lock_delays++;
    pthread_mutex_unlock(&cc->mu);
    s = NULL;
    if (rc == DLOCK_ELOST && ++lost <= 3) {
      rc = 0; /* the session vanished under us: a new one */
      continue;
    }
    if (rc == DLOCK_EBUSY && own_session(cc, seen.holder) && ++freed <= 3) {
      /* Held by a session of ours, though nothing of this client holds the
       * key while it acquires it: an attempt of ours that the agent carried
       * out late.  Given back, and the key tried again. */
      if (give_back(cc, key, seen.holder, seen.held_at, NULL, true, dl) >= 0) {
        rc = 0;
        continue;
      }
      rc = dlock_seterr(DLOCK_EBUSY, "consul: '%s' is held", key);
    }
    if (rc != DLOCK_EBUSY || try_only)
      break;
    if (deadline >= 0 && now_ns() >= deadline) {
      rc = dlock_seterr(DLOCK_ETIMEDOUT, "consul: timed out waiting for '%s'", bl->key);
      break;
    }
    rc = 0;
    bool unchanged = quick && !seen.delay &&
                     dlock__consul_pause_unchanged(prev.holder, prev.held_at, seen.holder,
                                                   seen.held_at);
    prev = seen;
    free_run = seen.delay ? free_run + 1 : 0;
    if (seen.delay && !dlock__consul_pause_when_free(free_run))
      continue;
    if (seen.delay) {
      /* Free, but inside the lock-delay of a session that ended: no write
       * will announce its end, so look again after a growing pause. */
      int64_t until = now_ns() + pause_ns + (int64_t)dlock__random_below((uint64_t)pause_ns);
      sleep_until(deadline >= 0 && until > deadline ? deadline : until);
      pause_ns = pause_ns * 2 > 1000000000 ? 1000000000 : pause_ns * 2;
      continue;
    }
    /* Held: a blocking query wakes us when the key changes (release,
     * session end), capped by the deadline and by a third of the ttl so
     * the session we will lock with is renewed in time. */
    int64_t until = now_ns() + bl->ttl_ms * 1000000 / 3;
    if (deadline >= 0 && deadline < until)
      until = deadline;
    if (unchanged)
      dlock__http_pause(deadline);
    int64_t before = now_ns();
    uint64_t got = seen.index ? block_on(cc, key, exact, seen.index, until) : 0;
    int64_t took = now_ns() - before;
    quick = got && got != seen.index && took < QUICK_ANSWER_NS;
    if (dlock__consul_pause_after_block(seen.index, got, took))
      dlock__http_pause(deadline); /* it did not block: do not spin */
  }
  /* A request cut short by the end of the caller's wait is a timeout, not
   * an unreachable agent. */
  if ((rc == DLOCK_ECONN || rc == DLOCK_ETIMEDOUT) && deadline >= 0 && now_ns() >= deadline)
    rc = dlock_seterr(DLOCK_ETIMEDOUT, "consul: timed out waiting for '%s'", bl->key);
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

/* renew_many's check of a batch: does each key still name our session?
 * In one consistent txn. */
static int check_keys(void *ud, dlock_backend_lock *const *batch, size_t m, int64_t deadline,
                      int *rcs) {
  cs_client *cc = ud;
  const char *keys[DLOCK__CONSUL_TXN_MAX] = {0}, *sids[DLOCK__CONSUL_TXN_MAX] = {0};
  if (m > DLOCK__CONSUL_TXN_MAX)
    return dlock_seterr(DLOCK_EINVAL, "consul: %zu keys to check at once", m);
  for (size_t k = 0; k < m; k++) {
    const cs_lock *lk = batch[k]->priv;
    keys[k] = lk->key;
    sids[k] = lk->sid;
  }
  pthread_mutex_lock(&cc->mu);
  cc->checks.txns++;
  pthread_mutex_unlock(&cc->mu);
  dlock__consul_txn t;
  long status;
  int rc = txn(cc, "/v1/txn?consistent", dlock__consul_req_check(keys, sids, m), deadline,
               "check txn", &t, &status);
  for (size_t k = 0; rc == 0 && k < m; k++) {
    bool bad = false;
    for (size_t e = 0; e < t.nerr; e++)
      bad |= t.err_op[e] == (int)k;
    rcs[k] = bad ? dlock_seterr(DLOCK_ELOST, "consul: '%s' is no longer held by our session",
                                batch[k]->key)
                 : 0;
  }
  dlock__consul_txn_free(&t);
  return rc;
}

/* Locks to check in one pass from which one read of the prefix's whole
 * tree is cheaper than a check txn per 64 of them: 10,000 locks are one
 * request a pass instead of 157. */
#define TREE_CHECK_MIN (2 * DLOCK__CONSUL_TXN_MAX)
/* A tree with more entries than this per lock checked is mostly others'
 * keys: reading it would cost more than checking by key, which the next
 * TREE_CHECK_BACKOFF passes then do. */
#define TREE_CHECK_SPREAD 8
#define TREE_CHECK_BACKOFF 8

/* Of the M locks in BATCH, which the tree of the client's prefix, read
 * in one consistent txn, shows held by their sessions: HELD[k] 1 or 0.
 * 0, or a negative code when the tree could not be read or used. */
static int read_tree(cs_client *cc, dlock_backend_lock *const *batch, size_t m,
                     int64_t deadline, int *held) {
  const char **keys = malloc(m * sizeof *keys), **sids = malloc(m * sizeof *sids);
  int rc = keys && sids ? 0 : dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  dlock__consul_txn t;
  long status = 0;
  memset(&t, 0, sizeof t);
  if (rc == 0) {
    pthread_mutex_lock(&cc->mu);
    cc->checks.trees++;
    pthread_mutex_unlock(&cc->mu);
    rc = txn(cc, "/v1/txn?consistent", dlock__consul_req_get(cc->prefix), deadline,
             "check tree txn", &t, &status);
  }
  if (rc == 0 && status != 200)
    rc = dlock_seterr(DLOCK_EBACKEND, "consul: reading the tree of '%s': %s", cc->prefix, t.msg);
  for (size_t k = 0; rc == 0 && k < m; k++) {
    const cs_lock *lk = batch[k]->priv;
    keys[k] = lk->key;
    sids[k] = lk->sid;
  }
  if (rc == 0)
    rc = dlock__consul_tree_holds(&t, keys, sids, m, held);
  pthread_mutex_lock(&cc->mu);
  if (rc < 0 || t.nresults > TREE_CHECK_SPREAD * m)
    cc->tree_skip = TREE_CHECK_BACKOFF;
  pthread_mutex_unlock(&cc->mu);
  dlock__consul_txn_free(&t);
  free(keys);
  free(sids);
  return rc;
}

/* renew_many's check of all the locks of a pass at once, by the tree (see
 * read_tree).  A lock it shows under its session is confirmed; any other
 * (gone, another session's, hidden from the token by an ACL policy, or
 * every lock when the tree could not be read) is checked by key, so that
 * only the store's answer for that key declares it lost. */
static int check_tree(void *ud, dlock_backend_lock *const *batch, size_t m, int64_t deadline,
                      int *rcs) {
  cs_client *cc = ud;
  if (read_tree(cc, batch, m, deadline, rcs) < 0)
    memset(rcs, 0, m * sizeof *rcs);
  dlock__clear_err();
  /* The others go to check txns as when there is no tree: those whose RCS
   * is 0, each batch by its own locks' deadline.  A confirmed one is
   * marked DLOCK_LEASE_PENDING meanwhile, which no check result is. */
  for (size_t k = 0; k < m; k++)
    rcs[k] = rcs[k] ? DLOCK_LEASE_PENDING : 0;
  int crc = dlock_lease_check((dlock_backend_lock **)batch, m, rcs, DLOCK__CONSUL_TXN_MAX,
                              check_keys, cc);
  for (size_t k = 0; k < m; k++)
    if (rcs[k] == DLOCK_LEASE_PENDING)
      rcs[k] = 0;
    else if (crc < 0)
      rcs[k] = crc; /* not checked at all: the whole pass's failure */
  return 0;
}

static int consul_renew_many(dlock_backend_client *bc, dlock_backend_lock **bls, size_t n,
                             int *rcs) {
  cs_client *cc = bc->priv;
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
  /* Does each session still hold its keys?  One consistent txn per 64,
   * or for many, one read of the whole tree. */
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    m += rcs[i] == 0;
  pthread_mutex_lock(&cc->mu);
  bool tree = m >= TREE_CHECK_MIN && cc->tree_skip == 0;
  if (m >= TREE_CHECK_MIN && cc->tree_skip > 0)
    cc->tree_skip--;
  pthread_mutex_unlock(&cc->mu);
  int crc = tree ? dlock_lease_check(bls, n, rcs, m, check_tree, cc)
                 : dlock_lease_check(bls, n, rcs, DLOCK__CONSUL_TXN_MAX, check_keys, cc);
  if (crc < 0)
    return crc;
  pthread_mutex_lock(&cc->mu);
  for (size_t i = 0; i < n; i++) {
    cs_lock *lk = bls[i]->priv;
    if (rcs[i] == 0)
      lk->confirmed_ns = bls[i]->sent_ns;
    else if (rcs[i] == DLOCK_ELOST)
      lk->lost = true;
  }
  pthread_mutex_unlock(&cc->mu);
  return 0;
}

/* The give-back of an attempt whose lock txn got no answer, or of the
 * same again (bc->late_ms): by its value, under the session it was sent
 * for, which must still be there (an ended one took the key with it). */
static int give_back_attempt(cs_client *cc, dlock_backend_lock *bl) {
  cs_lock *lk = bl->priv;
  if (!own_session(cc, lk->sid))
    return dlock_seterr(DLOCK_ELOST, "consul: '%s' was not held", bl->key);
  char *key = dlock__consul_lock_key(cc->prefix, bl->key, bl->keylen);
  char *value = dlock__consul_value(bl->owner, bl->label);
  int b = key && value ? give_back(cc, key, lk->sid, 0, value, false, -1)
                       : dlock_seterr(DLOCK_ENOMEM, "consul: out of memory");
  free(key);
  free(value);
  if (b == 0)
    return dlock_seterr(DLOCK_ELOST, "consul: '%s' was not held", bl->key);
  return b < 0 ? b : 0;
}

/* A held lock's release, or the core's give-back of one (its ttl ran out,
 * or its release got no answer: then it is called again for the same
 * lock, which keeps what it needs until the agent answers). */
static int consul_release(dlock_backend_client *bc, dlock_backend_lock *bl) {
  cs_client *cc = bc->priv;
  cs_lock *lk = bl->priv;
  pthread_mutex_lock(&cc->mu);
  if (!lk->listed) {
    pthread_mutex_unlock(&cc->mu);
    return give_back_attempt(cc, bl);
  }
  /* A lost lock's key is not ours any more, or went with its session. */
  bool lost = lk->lost || dlock_lease_dead(cc->sessions, lk->sess);
  /* No loss report may name it from here on: the core may free BL. */
  lk->bl = NULL;
  pthread_mutex_unlock(&cc->mu);
  int b = lost ? 0 : give_back(cc, lk->key, lk->sid, lk->index, NULL, true, -1);
  if (dlock_err_is_transient(b))
    return b;
  pthread_mutex_lock(&cc->mu);
  unlink_lock(cc, lk);
  dlock_lease_put(cc->sessions, lk->sess);
  pthread_mutex_unlock(&cc->mu);
  free(lk->key);
  lk->key = NULL;
  lk->sess = NULL;
  if (b == 0)
    return dlock_seterr(DLOCK_ELOST, "consul: '%s' was lost before release", bl->key);
  return b < 0 ? b : 0;
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
    if (request(cc, "GET", spath, NULL,
                dlock_backend_deadline(cc->bc, -1), &si) == 0 && si.status == 200)
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
    if (request(cc, "GET", "/v1/session/list", NULL,
                dlock_backend_deadline(cc->bc, -1), &r) == 0 && r.status == 200)
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
    if (!lk->lost && lk->index == index && strcmp(lk->key, key) == 0) {
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
  if (op == DLOCK_CONSUL_CTL_CHECKS) {
    pthread_mutex_lock(&cc->mu);
    *(struct dlock_consul_checks *)arg = cc->checks;
    pthread_mutex_unlock(&cc->mu);
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
