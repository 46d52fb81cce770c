/* Consul fault injection for the conformance suite: requests of our own to
 * the agent's HTTP API, destroying the session that holds a lock the way an
 * operator would (PUT /v1/session/destroy/<id>), or deleting a lock key
 * behind its holders' backs.  Key layout and answers
 * come from the backend's codec, so the injector and the client agree on
 * them by construction; the transport is separate, so a bug in the
 * backend's cannot hide here. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "backends/consul/consul-codec.h"
#include "backends/http/http.h"
#include "faults.h"
#include "internal.h"

#define CONNECT_MS 2000L
#define REQUEST_MS 10000L

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* What a request needs from a dlock URL. */
struct target {
  dlock_url *u;
  bool tls;
  const char *cacert, *cert, *key, *token, *prefix;
};

static int target_open(const char *url, struct target *t) {
  memset(t, 0, sizeof *t);
  pthread_once(&curl_once, curl_init);
  if (dlock__url_parse(url, &t->u) < 0) {
    fprintf(stderr, "faults_consul: bad URL: %s\n", dlock_client_errmsg(NULL));
    return -1;
  }
  t->tls = strcmp(dlock_url_scheme(t->u), "consul+https") == 0;
  dlock_url_param(t->u, "cacert", &t->cacert);
  dlock_url_param(t->u, "cert", &t->cert);
  dlock_url_param(t->u, "key", &t->key);
  dlock_url_param(t->u, "prefix", &t->prefix);
  /* The same rule as the backend: ?token=, else CONSUL_HTTP_TOKEN. */
  if (!dlock_url_param(t->u, "token", &t->token))
    t->token = getenv("CONSUL_HTTP_TOKEN");
  if (t->token && !*t->token)
    t->token = NULL;
  return 0;
}

char *conf_consul_agent_addr(const char *url, size_t ep) {
  dlock_url *u;
  if (dlock__url_parse(url, &u) < 0)
    return NULL;
  char *s = NULL;
  if (ep < dlock_url_host_count(u)) {
    const char *h = dlock_url_host(u, ep);
    bool v6 = strchr(h, ':') != NULL;
    int port = dlock_url_port(u, ep);
    if (asprintf(&s, "%s://%s%s%s:%d",
                 strcmp(dlock_url_scheme(u), "consul+https") == 0 ? "https" : "http",
                 v6 ? "[" : "", h, v6 ? "]" : "", port ? port : 8500) < 0)
      s = NULL;
  }
  dlock__url_free(u);
  return s;
}

/* One request to endpoint EP: the HTTP status, or -1 when the agent could
 * not be reached (then the caller tries the next one). */
static long request_one(const struct target *t, size_t ep, const char *method, const char *path,
                        const char *body, dlock__http_body *out) {
  const char *h = dlock_url_host(t->u, ep);
  int port = dlock_url_port(t->u, ep);
  bool v6 = strchr(h, ':') != NULL;
  char url[2400], auth[700];
  snprintf(url, sizeof url, "%s://%s%s%s:%d%s", t->tls ? "https" : "http", v6 ? "[" : "", h,
           v6 ? "]" : "", port ? port : 8500, path);
  CURL *c = curl_easy_init();
  if (!c)
    return -1;
  struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
  hs = curl_slist_append(hs, "Expect:");
  if (t->token) {
    snprintf(auth, sizeof auth, "X-Consul-Token: %s", t->token);
    hs = curl_slist_append(hs, auth);
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (strcmp(method, "GET") != 0)
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
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
    fprintf(stderr, "faults_consul: %s %s: %s\n", method, url, curl_easy_strerror(cc));
  curl_slist_free_all(hs);
  curl_easy_cleanup(c);
  return status;
}

int conf_consul_request(const char *url, const char *method, const char *path, const char *body,
                        char **answer) {
  *answer = NULL;
  struct target t;
  if (target_open(url, &t) < 0)
    return -1;
  long st = -1;
  for (size_t ep = 0; st < 0 && ep < dlock_url_host_count(t.u); ep++) {
    dlock__http_body out = {0};
    st = request_one(&t, ep, method, path, body, &out);
    free(*answer);
    *answer = out.data;
  }
  dlock__url_free(t.u);
  if (st < 0)
    fprintf(stderr, "faults_consul: no agent of the URL answered %s %s\n", method, path);
  return (int)st;
}

char *conf_consul_lock_key(const char *url, const char *key) {
  dlock_url *u;
  if (dlock__url_parse(url, &u) < 0)
    return NULL;
  const char *prefix = NULL;
  dlock_url_param(u, "prefix", &prefix);
  char *name = dlock__consul_lock_key(prefix, key, strlen(key));
  dlock__url_free(u);
  return name;
}

/* Through a read-only txn, as the backend reads: a /v1/kv/ path is refused
 * for keys with characters the agent deems unprintable. */
int conf_consul_get(const char *url, const char *key, dlock__consul_kv *kv) {
  memset(kv, 0, sizeof *kv);
  char *lk = conf_consul_lock_key(url, key);
  char *req = lk ? dlock__consul_req_get(lk) : NULL;
  char *answer = NULL;
  int st = req ? conf_consul_request(url, "PUT", "/v1/txn?consistent", req, &answer) : -1;
  int rc = -1;
  dlock__consul_txn t;
  if (st == 200 && dlock__consul_parse_txn(st, answer, answer ? strlen(answer) : 0, &t) == 0) {
    const dlock__consul_kv *found = dlock__consul_txn_find(&t, lk);
    rc = 0;
    if (found) {
      size_t i = (size_t)(found - t.results);
      *kv = t.results[i];
      memset(&t.results[i], 0, sizeof t.results[i]);
      rc = 1;
    }
    dlock__consul_txn_free(&t);
  } else if (st == 200) {
    fprintf(stderr, "faults_consul: %s: %s\n", lk, dlock_client_errmsg(NULL));
  } else if (st > 0) {
    fprintf(stderr, "faults_consul: get-tree %s: HTTP %d: %s\n", lk, st, answer ? answer : "");
  }
  free(answer);
  free(req);
  free(lk);
  return rc;
}

int conf_consul_destroy_session(const char *url, const char *id) {
  char path[160], *answer = NULL;
  snprintf(path, sizeof path, "/v1/session/destroy/%s", id);
  int st = conf_consul_request(url, "PUT", path, "", &answer);
  int ok = st == 200 && answer && strncmp(answer, "true", 4) == 0;
  if (!ok && st > 0)
    fprintf(stderr, "faults_consul: session destroy %s: HTTP %d: %s\n", id, st,
            answer ? answer : "");
  free(answer);
  return ok ? 0 : -1;
}

int conf_consul_session_alive(const char *url, const char *id) {
  char path[160], *answer = NULL;
  snprintf(path, sizeof path, "/v1/session/info/%s?consistent", id);
  int st = conf_consul_request(url, "GET", path, NULL, &answer);
  /* An unknown session is 200 with "[]" (older agents: null). */
  int rc = -1;
  if (st == 200)
    rc = answer && strstr(answer, id) ? 1 : 0;
  else if (st == 404)
    rc = 0;
  else if (st > 0)
    fprintf(stderr, "faults_consul: session info %s: HTTP %d: %s\n", id, st,
            answer ? answer : "");
  free(answer);
  return rc;
}

int conf_consul_break_lock(const char *url, const char *key) {
  dlock__consul_kv kv;
  int found = conf_consul_get(url, key, &kv);
  char sid[DLOCK_CONSUL_SESSION_MAX];
  snprintf(sid, sizeof sid, "%s", found == 1 ? kv.session : "");
  dlock__consul_kv_free(&kv);
  if (found < 0)
    return -1;
  if (!sid[0]) {
    fprintf(stderr, "faults_consul: nobody holds '%s'\n", key);
    return -1;
  }
  return conf_consul_destroy_session(url, sid);
}

/* Deleting a key does not take Raft indexes back: the next holder's
 * ModifyIndex, its token, is still above every earlier one. */
int conf_consul_forget_key(const char *url, const char *key) {
  char *lk = conf_consul_lock_key(url, key);
  /* A txn delete, for the same reason as conf_consul_get. */
  cJSON *root = lk ? cJSON_CreateArray() : NULL, *op = cJSON_CreateObject();
  cJSON *kv = op ? cJSON_AddObjectToObject(op, "KV") : NULL;
  char *req = NULL;
  if (root && kv && cJSON_AddStringToObject(kv, "Verb", "delete") &&
      cJSON_AddStringToObject(kv, "Key", lk) && cJSON_AddItemToArray(root, op)) {
    op = NULL;
    req = cJSON_PrintUnformatted(root);
  }
  cJSON_Delete(op);
  cJSON_Delete(root);
  char *answer = NULL;
  int st = req ? conf_consul_request(url, "PUT", "/v1/txn", req, &answer) : -1;
  int ok = st == 200;
  if (!ok && st > 0)
    fprintf(stderr, "faults_consul: delete %s: HTTP %d: %s\n", lk, st, answer ? answer : "");
  free(answer);
  free(req);
  free(lk);
  return ok ? 0 : -1;
}

int64_t conf_consul_lock_delay_ms(const char *url) {
  dlock_url *u;
  int64_t ms = 15000;
  if (dlock__url_parse(url, &u) < 0)
    return ms;
  if (dlock_url_param_duration(u, "lock_delay", 15000, &ms) < 0)
    ms = 15000;
  dlock__url_free(u);
  return ms;
}
