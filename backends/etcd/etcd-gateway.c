/* etcd backend: the v3 HTTP/JSON gateway as a transport (etcd-transport.h).
 *
 * Requests go through libcurl: a pool of easy handles (one keep-alive
 * connection each) for unary requests, and a fresh handle per watch, a
 * stream that only a deletion of the watched key, the caller's deadline
 * or the lease's next keepalive ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "backends/etcd/etcd-transport.h"
#include "backends/http/http.h"

typedef struct gateway {
  dlock__http http; /* endpoints, TLS files, connection pool */
  dlock__etcd_host host;
} gateway;

/* One request of post(): what its hooks for dlock__http_send need. */
typedef struct gw_call {
  gateway *gw;
  bool auth_req; /* logging in: without a token, never logging in again */
  uint64_t gen;  /* the token generation its last attempt sent */
  enum dlock__etcd_fault *fault;
} gw_call;

/* Headers of one attempt: JSON, no "Expect: 100-continue" (curl would
 * wait up to a second for it on bodies over 1 KiB), the token if logged
 * in. */
static struct curl_slist *call_headers(void *ctx) {
  gw_call *call = ctx;
  gateway *gw = call->gw;
  struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
  struct curl_slist *t = hs ? curl_slist_append(hs, "Expect:") : NULL;
  if (!t) {
    curl_slist_free_all(hs);
    return NULL;
  }
  hs = t;
  /* The gateway hands Grpc-Metadata-* headers to the server as metadata.
   * "hasleader" makes a member without a leader refuse a request at once
   * (so we try the next member) instead of holding it until its own
   * timeout, and cancel a watch instead of leaving it silently stale. */
  if (!(t = curl_slist_append(hs, "Grpc-Metadata-hasleader: true"))) {
    curl_slist_free_all(hs);
    return NULL;
  }
  hs = t;
  call->gen = 0;
  char *token = gw->host.token(gw->host.ctx, &call->gen);
  if (token && !call->auth_req) {
    size_t n = strlen(token) + 32;
    char *line = malloc(n);
    if (line) {
      snprintf(line, n, "Authorization: %s", token);
      t = curl_slist_append(hs, line);
      explicit_bzero(line, n);
      free(line);
    }
    if (!line || !t) {
      curl_slist_free_all(hs);
      hs = NULL;
    }
  }
  if (token) {
    explicit_bzero(token, strlen(token));
    free(token);
  }
  return hs;
}

/* 200 is the answer; anything else says what it asks for. */
static int call_judge(void *ctx, long status, const dlock__http_body *b, char *msg,
                      size_t msglen) {
  gw_call *call = ctx;
  if (status == 200)
    return DLOCK__HTTP_DONE;
  enum dlock__etcd_fault f =
      dlock__etcd_error((int)status, b->data ? b->data : "", b->len, msg, msglen);
  /* etcd 3.4 answers a request without a token "user name is empty": the
   * same cure as an expired token. */
  if (f == DLOCK__ETCD_F_AUTH && call->gw->host.auth && strstr(msg, "user name is empty"))
    f = DLOCK__ETCD_F_REAUTH;
  *call->fault = f;
  if (f == DLOCK__ETCD_F_RETRY)
    return DLOCK__HTTP_NEXT;
  int rc = dlock_seterr(dlock__etcd_fault_code(f), "etcd: %s", msg);
  return f == DLOCK__ETCD_F_REAUTH && call->gw->host.auth && !call->auth_req
             ? DLOCK__HTTP_REAUTH
             : rc;
}

static int call_reauth(void *ctx, int64_t deadline) {
  gw_call *call = ctx;
  return call->gw->host.relogin(call->gw->host.ctx, call->gen, deadline);
}

/* POST REQ to PATH through dlock__http_send, logging in again when the
 * token has expired, until DEADLINE.  0 with OUT holding a 200 answer, or
 * a negative code with a message; *fault says what an error answer asked
 * for.  REQ NULL: out of memory building it. */
static int post(gateway *gw, const char *path, const char *req, int64_t deadline,
                dlock__http_body *out, enum dlock__etcd_fault *fault) {
  enum dlock__etcd_fault dummy;
  gw_call call = {gw, strcmp(path, "/v3/auth/authenticate") == 0, 0, fault ? fault : &dummy};
  *call.fault = DLOCK__ETCD_F_NONE;
  if (!req)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  dlock__http_req r = {
      .method = "POST",
      .path = path,
      .body = req,
      .deadline = deadline,
      .ctx = &call,
      .headers = call_headers,
      .judge = call_judge,
      .reauth = call_reauth,
  };
  long status;
  return dlock__http_send(&gw->http, &r, out, &status);
}

static int gw_open(void **tp, const dlock__etcd_host *host, dlock_url *url) {
  gateway *gw = calloc(1, sizeof *gw);
  *tp = gw;
  if (!gw)
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  int rc = dlock__http_open(&gw->http, "etcd", url, "etcd+https", 2379,
                            host->bc->connect_timeout_ms);
  gw->http.bc = host->bc;
  gw->host = *host;
  return rc;
}

static void gw_close(void *tp) {
  gateway *gw = tp;
  if (!gw)
    return;
  dlock__http_close(&gw->http);
  free(gw);
}

static size_t gw_endpoints(void *tp) { return ((gateway *)tp)->http.nendpoints; }

static void gw_endpoint(void *tp, char *out) {
  gateway *gw = tp;
  snprintf(out, DLOCK_ETCD_ENDPOINT_MAX, "%s",
           strstr(gw->http.endpoints[dlock__http_current(&gw->http)], "://") + 3);
}

static uint64_t gw_failovers(void *tp) {
  gateway *gw = tp;
  pthread_mutex_lock(&gw->http.mu);
  uint64_t n = gw->http.failovers;
  pthread_mutex_unlock(&gw->http.mu);
  return n;
}

static int gw_txn(void *tp, const dlock__etcd_txreq *t, int64_t deadline, dlock__etcd_txn *out,
                  enum dlock__etcd_fault *fault) {
  memset(out, 0, sizeof *out);
  char *req = dlock__etcd_tx_json(t);
  dlock__http_body b = {0};
  int rc = post(tp, "/v3/kv/txn", req, deadline, &b, fault);
  free(req);
  if (rc == 0)
    rc = dlock__etcd_parse_txn(b.data, b.len, out);
  free(b.data);
  return rc;
}

static int gw_grant(void *tp, int64_t ttl_s, int64_t deadline, int64_t *id,
                    int64_t *granted_s) {
  char *req = dlock__etcd_req_grant(ttl_s);
  dlock__http_body b = {0};
  int rc = post(tp, "/v3/lease/grant", req, deadline, &b, NULL);
  if (rc == 0)
    rc = dlock__etcd_parse_grant(b.data, b.len, id, granted_s);
  free(b.data);
  free(req);
  return rc;
}

static int gw_keepalive(void *tp, int64_t id, int64_t deadline, int64_t *ttl_s) {
  char *req = dlock__etcd_req_lease(id);
  dlock__http_body b = {0};
  int rc = post(tp, "/v3/lease/keepalive", req, deadline, &b, NULL);
  char msg[256];
  if (rc == 0)
    rc = dlock__etcd_parse_keepalive(b.data, b.len, ttl_s, msg, sizeof msg);
  free(b.data);
  free(req);
  return rc;
}

static int gw_revoke(void *tp, int64_t id, int64_t deadline) {
  char *req = dlock__etcd_req_lease(id);
  dlock__http_body b = {0};
  int rc = post(tp, "/v3/lease/revoke", req, deadline, &b, NULL);
  free(b.data);
  free(req);
  return rc;
}

static int gw_timetolive(void *tp, int64_t id, int64_t deadline, int64_t *ttl_ms,
                         dlock__etcd_keys *keys) {
  char *req = dlock__etcd_req_timetolive(id, keys != NULL);
  dlock__http_body b = {0};
  *ttl_ms = -1;
  int rc = post(tp, "/v3/lease/timetolive", req, deadline, &b, NULL);
  if (rc == 0)
    rc = dlock__etcd_parse_timetolive(b.data, b.len, ttl_ms, keys);
  free(b.data);
  free(req);
  return rc;
}

static int gw_authenticate(void *tp, const char *user, const char *password, int64_t deadline,
                           char **token) {
  *token = NULL;
  char *req = dlock__etcd_req_auth(user, password);
  dlock__http_body b = {0};
  int rc = post(tp, "/v3/auth/authenticate", req, deadline, &b, NULL);
  if (rc == 0)
    rc = dlock__etcd_parse_auth(b.data, b.len, token);
  if (b.data)
    explicit_bzero(b.data, b.len);
  free(b.data);
  if (req)
    explicit_bzero(req, strlen(req));
  free(req);
  return rc;
}

static int gw_status(void *tp, int64_t deadline) {
  dlock__http_body b = {0};
  int rc = post(tp, "/v3/maintenance/status", "{}", deadline, &b, NULL);
  free(b.data);
  return rc;
}

/* A watch: the stream is lines of JSON, each an answer for FN. */
typedef struct gw_watch {
  dlock__http_body line;
  dlock__etcd_watch_fn fn;
  void *ud;
  bool stopped;
} gw_watch;

/* One complete line: true when it ends the watch. */
static bool watch_line(gw_watch *w) {
  dlock__etcd_watch_ev ev;
  if (w->line.len && dlock__etcd_parse_watch(w->line.data, w->line.len, &ev) == 0 &&
      w->fn(w->ud, &ev)) {
    w->stopped = true;
    return true;
  }
  dlock__http_body_reset(&w->line);
  return false;
}

static size_t on_watch(char *p, size_t size, size_t n, void *arg) {
  gw_watch *w = arg;
  size_t total = size * n;
  for (size_t i = 0; i < total; i++) {
    if (p[i] != '\n') {
      if (!dlock__http_body_add(&w->line, p + i, 1))
        return 0;
      continue;
    }
    if (watch_line(w))
      return 0; /* ends the transfer: we have what we waited for */
  }
  return total;
}

static int gw_watch_delete(void *tp, const char *key, int64_t start, int64_t until,
                           dlock__etcd_watch_fn fn, void *ud, uint64_t *gen, size_t *epp) {
  gateway *gw = tp;
  size_t ep = dlock__http_current(&gw->http);
  *epp = ep;
  char *req = dlock__etcd_req_watch(key, start);
  enum dlock__etcd_fault unused;
  gw_call call = {gw, false, 0, &unused};
  struct curl_slist *hs = req ? call_headers(&call) : NULL;
  *gen = call.gen;
  CURL *h = hs ? curl_easy_init() : NULL;
  if (!h) {
    curl_slist_free_all(hs);
    free(req);
    return dlock_seterr(DLOCK_ENOMEM, "etcd: out of memory");
  }
  gw_watch w = {.fn = fn, .ud = ud};
  dlock__http_setup(&gw->http, h, ep, "POST", "/v3/watch", req, hs, until);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_watch);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &w);
  CURLcode cc = curl_easy_perform(h);
  /* A stream may end with an error object and no newline. */
  if (!w.stopped && w.line.len)
    watch_line(&w);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  curl_slist_free_all(hs);
  free(req);
  int rc;
  if (w.stopped)
    rc = DLOCK__ETCD_WATCH_STOPPED;
  else if (cc == CURLE_OPERATION_TIMEDOUT && dlock_backend_now_ns() >= until - 1000000)
    rc = DLOCK__ETCD_WATCH_UNTIL;
  else if (cc == CURLE_OK && status != 200 && status != 0) {
    char msg[256];
    enum dlock__etcd_fault f = dlock__etcd_error((int)status, w.line.data ? w.line.data : "",
                                                 w.line.len, msg, sizeof msg);
    if (f == DLOCK__ETCD_F_AUTH || f == DLOCK__ETCD_F_INVALID || f == DLOCK__ETCD_F_OTHER)
      rc = dlock_seterr(dlock__etcd_fault_code(f), "etcd: watch: %s", msg);
    else
      rc = DLOCK__ETCD_WATCH_BROKE;
  } else {
    /* A stream that ended or broke: another endpoint may do better. */
    if (cc != CURLE_OK && cc != CURLE_WRITE_ERROR)
      dlock__http_move_on(&gw->http, ep);
    rc = DLOCK__ETCD_WATCH_BROKE;
  }
  free(w.line.data);
  return rc;
}

static void gw_move_on(void *tp, size_t ep) { dlock__http_move_on(&((gateway *)tp)->http, ep); }

const dlock__etcd_transport dlock__etcd_gateway = {
    .name = "gateway",
    .open = gw_open,
    .close = gw_close,
    .endpoints = gw_endpoints,
    .endpoint = gw_endpoint,
    .failovers = gw_failovers,
    .txn = gw_txn,
    .grant = gw_grant,
    .keepalive = gw_keepalive,
    .revoke = gw_revoke,
    .timetolive = gw_timetolive,
    .authenticate = gw_authenticate,
    .status = gw_status,
    .watch = gw_watch_delete,
    .move_on = gw_move_on,
};
