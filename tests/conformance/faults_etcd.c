/* etcd fault injection for the conformance suite: requests of our own to
 * the same v3 JSON gateway dlock talks to, revoking a holder's lease the
 * way an operator's `etcdctl lease revoke` would, or deleting a lock's keys
 * behind its holders' backs.  Bodies come from the backend's codec, so the
 * injector and the client agree on the key layout by construction. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "backends/etcd/etcd-codec.h"
#include "backends/http/http.h"
#include "faults.h"
#include "internal.h"

/* Generous, since a cluster member may be between leaders when asked; an
 * endpoint that is down fails at connect and the next one is tried. */
#define CONNECT_MS 2000L
#define REQUEST_MS 10000L

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* What a request needs from a dlock URL. */
struct target {
  dlock_url *u;
  bool tls;
  const char *cacert, *cert, *key;
};

static int target_open(const char *url, struct target *t) {
  memset(t, 0, sizeof *t);
  pthread_once(&curl_once, curl_init);
  if (dlock__url_parse(url, &t->u) < 0) {
    fprintf(stderr, "faults_etcd: bad URL: %s\n", dlock_client_errmsg(NULL));
    return -1;
  }
  /* The gateway shares the client port with gRPC, so an etcd+grpc:// URL
   * is reached here the same way. */
  t->tls = strcmp(dlock_url_scheme(t->u), "etcd+https") == 0 ||
           strcmp(dlock_url_scheme(t->u), "etcd+grpcs") == 0;
  dlock_url_param(t->u, "cacert", &t->cacert);
  dlock_url_param(t->u, "cert", &t->cert);
  dlock_url_param(t->u, "key", &t->key);
  return 0;
}

/* One POST to endpoint EP: the HTTP status, or -1 when the endpoint could
 * not be reached (then the caller tries the next one). */
static long post_one(const struct target *t, size_t ep, const char *token, const char *path,
                     const char *body, dlock__http_body *out) {
  const char *h = dlock_url_host(t->u, ep);
  int port = dlock_url_port(t->u, ep);
  bool v6 = strchr(h, ':') != NULL;
  char url[600], auth[1024];
  snprintf(url, sizeof url, "%s://%s%s%s:%d%s", t->tls ? "https" : "http", v6 ? "[" : "", h,
           v6 ? "]" : "", port ? port : 2379, path);
  CURL *c = curl_easy_init();
  if (!c)
    return -1;
  struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
  hs = curl_slist_append(hs, "Expect:");
  if (token) {
    snprintf(auth, sizeof auth, "Authorization: %s", token);
    hs = curl_slist_append(hs, auth);
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_MS);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, REQUEST_MS);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dlock__http_on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
  if (t->cacert)
    curl_easy_setopt(c, CURLOPT_CAINFO, t->cacert);
  if (t->cert)
    curl_easy_setopt(c, CURLOPT_SSLCERT, t->cert);
  if (t->key)
    curl_easy_setopt(c, CURLOPT_SSLKEY, t->key);
  CURLcode cc = curl_easy_perform(c);
  long status = -1;
  if (cc == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  else
    fprintf(stderr, "faults_etcd: %s: %s\n", url, curl_easy_strerror(cc));
  curl_slist_free_all(hs);
  curl_easy_cleanup(c);
  return status;
}

/* Log in on endpoint EP: 200 and *token, another status (*out holds the
 * refusal), or -1 when unreachable. */
static long login_one(const struct target *t, size_t ep, char **token, dlock__http_body *out) {
  const char *pw = dlock_url_password(t->u);
  char *req = dlock__etcd_req_auth(dlock_url_user(t->u), pw ? pw : "");
  long st = req ? post_one(t, ep, NULL, "/v3/auth/authenticate", req, out) : -1;
  free(req);
  if (st == 200 && dlock__etcd_parse_auth(out->data, out->len, token) < 0) {
    fprintf(stderr, "faults_etcd: %s\n", dlock_client_errmsg(NULL));
    st = -1;
  }
  return st;
}

/* LOGIN: as URL's user, when it has one; otherwise TOKEN goes as given. */
static int post_any(const char *url, bool login, const char *token, const char *path,
                    const char *body, char **answer) {
  *answer = NULL;
  struct target t;
  if (target_open(url, &t) < 0)
    return -1;
  long st = -1;
  for (size_t ep = 0; st < 0 && ep < dlock_url_host_count(t.u); ep++) {
    dlock__http_body out = {0};
    char *mine = NULL;
    if (login && dlock_url_user(t.u)) {
      st = login_one(&t, ep, &mine, &out);
      if (st != 200) {
        free(*answer);
        *answer = out.data;
        continue;
      }
      free(out.data);
      out = (dlock__http_body){0};
    }
    st = post_one(&t, ep, mine ? mine : token, path, body, &out);
    free(mine);
    free(*answer);
    *answer = out.data;
  }
  dlock__url_free(t.u);
  if (st < 0)
    fprintf(stderr, "faults_etcd: no endpoint of the URL answered %s\n", path);
  return (int)st;
}

int conf_etcd_post(const char *url, const char *path, const char *body, char **answer) {
  return post_any(url, true, NULL, path, body, answer);
}

int conf_etcd_post_token(const char *url, const char *token, const char *path,
                         const char *body, char **answer) {
  return post_any(url, false, token, path, body, answer);
}

int conf_etcd_login(const char *url, char **token) {
  *token = NULL;
  struct target t;
  if (target_open(url, &t) < 0)
    return -1;
  long st = -1;
  for (size_t ep = 0; st < 0 && ep < dlock_url_host_count(t.u); ep++) {
    dlock__http_body out = {0};
    st = login_one(&t, ep, token, &out);
    if (st >= 0 && st != 200)
      fprintf(stderr, "faults_etcd: login refused: HTTP %ld: %s\n", st,
              out.data ? out.data : "");
    free(out.data);
  }
  dlock__url_free(t.u);
  return st == 200 ? 0 : -1;
}

static void put_encoded(char **w, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        strchr("-._~", c)) {
      *(*w)++ = (char)c;
    } else {
      *(*w)++ = '%';
      *(*w)++ = hex[c >> 4];
      *(*w)++ = hex[c & 15];
    }
  }
}

char *conf_etcd_url_as(const char *url, const char *user, const char *password) {
  const char *auth = strstr(url, "://");
  if (!auth)
    return NULL;
  auth += 3;
  const char *end = auth + strcspn(auth, "/?#");
  const char *at = NULL;
  for (const char *p = auth; p < end; p++)
    if (*p == '@')
      at = p;
  const char *hosts = at ? at + 1 : auth;
  char *s = malloc(strlen(url) + 3 * (strlen(user) + strlen(password)) + 3);
  if (!s)
    return NULL;
  char *w = s;
  memcpy(w, url, (size_t)(auth - url));
  w += auth - url;
  put_encoded(&w, user);
  *w++ = ':';
  put_encoded(&w, password);
  *w++ = '@';
  strcpy(w, hosts);
  return s;
}

char *conf_etcd_lock_name(const char *url, const char *key) {
  dlock_url *u;
  if (dlock__url_parse(url, &u) < 0)
    return NULL;
  const char *prefix = NULL;
  dlock_url_param(u, "prefix", &prefix);
  char *name = dlock__etcd_lock_name(prefix, key, strlen(key));
  dlock__url_free(u);
  return name;
}

int conf_etcd_txn(const char *url, char *req, dlock__etcd_txn *t) {
  memset(t, 0, sizeof *t);
  if (!req) {
    fprintf(stderr, "faults_etcd: out of memory\n");
    return -1;
  }
  char *answer = NULL;
  int st = conf_etcd_post(url, "/v3/kv/txn", req, &answer);
  free(req);
  int rc = -1;
  if (st == 200) {
    rc = dlock__etcd_parse_txn(answer, answer ? strlen(answer) : 0, t) == 0 ? 0 : -1;
    if (rc < 0)
      fprintf(stderr, "faults_etcd: %s\n", dlock_client_errmsg(NULL));
  } else if (st > 0) {
    fprintf(stderr, "faults_etcd: txn: HTTP %d: %s\n", st, answer ? answer : "");
  }
  free(answer);
  return rc;
}

/* The codec has no request for a whole queue (the backend never needs
 * one): a txn with one range over NAME/, sorted as the queue is. */
static char *req_queue_all(const char *name) {
  size_t n = strlen(name) + 1;
  char *start = malloc(n + 1), *end = malloc(n + 1);
  cJSON *root = cJSON_CreateObject();
  cJSON *ok = root ? cJSON_AddArrayToObject(root, "success") : NULL;
  cJSON *op = ok ? cJSON_CreateObject() : NULL;
  cJSON *r = NULL;
  if (op && cJSON_AddItemToArray(ok, op))
    r = cJSON_AddObjectToObject(op, "request_range");
  else
    cJSON_Delete(op);
  char *req = NULL;
  if (start && end && r) {
    snprintf(start, n + 1, "%s/", name);
    size_t en = dlock__etcd_prefix_end(start, n, end);
    char *k = dlock__b64_encode(start, n), *e = dlock__b64_encode(end, en);
    if (k && e && cJSON_AddStringToObject(r, "key", k) &&
        cJSON_AddStringToObject(r, "range_end", e) &&
        cJSON_AddStringToObject(r, "sort_target", "CREATE") &&
        cJSON_AddStringToObject(r, "sort_order", "ASCEND"))
      req = cJSON_PrintUnformatted(root);
    free(k);
    free(e);
  }
  cJSON_Delete(root);
  free(start);
  free(end);
  return req;
}

int conf_etcd_queue(const char *url, const char *key, dlock__etcd_txn *t) {
  char *name = conf_etcd_lock_name(url, key);
  int rc = conf_etcd_txn(url, name ? req_queue_all(name) : NULL, t);
  free(name);
  if (rc == 0 && (t->nres != 1 || t->res[0].op != DLOCK__ETCD_OP_RANGE)) {
    fprintf(stderr, "faults_etcd: the queue range came back without its range\n");
    dlock__etcd_txn_free(t);
    rc = -1;
  }
  return rc;
}

int conf_etcd_break_lock(const char *url, const char *key) {
  char *name = conf_etcd_lock_name(url, key);
  dlock__etcd_txn t;
  if (conf_etcd_txn(url, name ? dlock__etcd_req_first(name) : NULL, &t) < 0) {
    free(name);
    return -1;
  }
  const dlock__etcd_kv *kv = t.nres == 1 && t.res[0].nkvs ? &t.res[0].kvs[0] : NULL;
  int64_t lease = kv ? kv->lease : 0;
  if (!kv)
    fprintf(stderr, "faults_etcd: nobody holds %s\n", name);
  else if (lease == 0)
    fprintf(stderr, "faults_etcd: the holder of %s has no lease\n", name);
  dlock__etcd_txn_free(&t);
  free(name);
  if (lease == 0)
    return -1;
  char *req = dlock__etcd_req_lease(lease), *answer = NULL;
  int st = req ? conf_etcd_post(url, "/v3/lease/revoke", req, &answer) : -1;
  if (st != 200 && st > 0)
    fprintf(stderr, "faults_etcd: lease revoke: HTTP %d: %s\n", st, answer ? answer : "");
  free(req);
  free(answer);
  return st == 200 ? 0 : -1;
}

/* Deleting keys does not take revisions back: the next holder's
 * create_revision, its token, is still above every earlier one. */
int conf_etcd_forget_key(const char *url, const char *key) {
  char *name = conf_etcd_lock_name(url, key);
  dlock__etcd_txn t;
  int rc = conf_etcd_txn(url, name ? dlock__etcd_req_delete_all(name) : NULL, &t);
  dlock__etcd_txn_free(&t);
  free(name);
  return rc;
}
