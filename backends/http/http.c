/* HTTP transport shared by the HTTP backends; see http.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/http/http.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

void dlock__http_body_reset(dlock__http_body *b) {
  b->len = 0;
  b->too_big = false;
  if (b->data)
    b->data[0] = '\0';
}

bool dlock__http_body_add(dlock__http_body *b, const char *p, size_t n) {
  if (b->len + n + 1 > DLOCK__HTTP_BODY_MAX) {
    b->too_big = true;
    return false;
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
      return false;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return true;
}

size_t dlock__http_on_body(char *p, size_t size, size_t n, void *arg) {
  return dlock__http_body_add(arg, p, size * n) ? size * n : 0;
}

static int copy_param(dlock__http *h, dlock_url *url, const char *name, char **out) {
  const char *v;
  if (!dlock_url_param(url, name, &v))
    return 0;
  if (!*v)
    return dlock_seterr(DLOCK_EINVAL, "%s: ?%s= needs a file name", h->who, name);
  *out = strdup(v);
  return *out ? 0 : dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", h->who);
}

int dlock__http_open(dlock__http *h, const char *who, dlock_url *url, const char *tls_scheme,
                     int default_port, int64_t connect_timeout_ms) {
  memset(h, 0, sizeof *h);
  h->who = who;
  h->connect_timeout_ms = connect_timeout_ms;
  pthread_mutex_init(&h->mu, NULL);
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK)
    return dlock_seterr(DLOCK_EBACKEND, "%s: libcurl failed to initialise", who);
  bool tls = strcmp(dlock_url_scheme(url), tls_scheme) == 0;
  int rc = copy_param(h, url, "cacert", &h->cacert);
  if (rc == 0)
    rc = copy_param(h, url, "cert", &h->cert);
  if (rc == 0)
    rc = copy_param(h, url, "key", &h->keyfile);
  if (rc == 0 && !tls && (h->cacert || h->cert || h->keyfile))
    rc = dlock_seterr(DLOCK_EINVAL, "%s: cacert, cert and key need %s://", who, tls_scheme);
  if (rc == 0 && (h->cert != NULL) != (h->keyfile != NULL))
    rc = dlock_seterr(DLOCK_EINVAL, "%s: ?cert= and ?key= go together", who);
  size_t n = dlock_url_host_count(url);
  if (rc == 0 && n == 0)
    rc = dlock_seterr(DLOCK_EINVAL, "%s: the URL names no endpoint", who);
  if (rc == 0 && !(h->endpoints = calloc(n, sizeof *h->endpoints)))
    rc = dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", who);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const char *host = dlock_url_host(url, i);
    int port = dlock_url_port(url, i);
    if (!host[0]) {
      rc = dlock_seterr(DLOCK_EINVAL, "%s: endpoint %zu has no host", who, i + 1);
      break;
    }
    char ep[300];
    bool v6 = strchr(host, ':') != NULL;
    snprintf(ep, sizeof ep, "%s://%s%s%s:%d", tls ? "https" : "http", v6 ? "[" : "", host,
             v6 ? "]" : "", port ? port : default_port);
    if (!(h->endpoints[i] = strdup(ep)))
      rc = dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", who);
    h->nendpoints = i + 1;
  }
  return rc;
}

void dlock__http_close(dlock__http *h) {
  for (size_t i = 0; i < h->nidle; i++)
    curl_easy_cleanup(h->idle[i]);
  free(h->idle);
  for (size_t i = 0; i < h->nendpoints; i++)
    free(h->endpoints[i]);
  free(h->endpoints);
  free(h->cacert);
  free(h->cert);
  free(h->keyfile);
  pthread_mutex_destroy(&h->mu);
}

CURL *dlock__http_handle_get(dlock__http *h) {
  CURL *c = NULL;
  pthread_mutex_lock(&h->mu);
  if (h->nidle)
    c = h->idle[--h->nidle];
  pthread_mutex_unlock(&h->mu);
  return c ? c : curl_easy_init();
}

void dlock__http_handle_put(dlock__http *h, CURL *c) {
  pthread_mutex_lock(&h->mu);
  if (h->nidle == h->capidle) {
    size_t cap = h->capidle ? h->capidle * 2 : 8;
    CURL **n = realloc(h->idle, cap * sizeof *n);
    if (n) {
      h->idle = n;
      h->capidle = cap;
    }
  }
  if (h->nidle < h->capidle) {
    h->idle[h->nidle++] = c;
    c = NULL;
  }
  pthread_mutex_unlock(&h->mu);
  if (c)
    curl_easy_cleanup(c);
}

size_t dlock__http_current(dlock__http *h) {
  pthread_mutex_lock(&h->mu);
  size_t ep = h->cur;
  pthread_mutex_unlock(&h->mu);
  return ep;
}

void dlock__http_failover(dlock__http *h, size_t from) {
  pthread_mutex_lock(&h->mu);
  if (h->cur == from && h->nendpoints > 1) {
    h->cur = (from + 1) % h->nendpoints;
    h->failovers++;
  }
  pthread_mutex_unlock(&h->mu);
}

void dlock__http_setup(dlock__http *h, CURL *c, size_t ep, const char *method, const char *path,
                       const char *body, struct curl_slist *hs, int64_t deadline) {
  /* Paths grow with the key (a 512-byte key percent-encodes to several
   * KB), and a cut one would name another key: sized to fit, and with no
   * memory for it the request goes to no URL at all and fails. */
  char *url = NULL;
  if (asprintf(&url, "%s%s", h->endpoints[ep], path) < 0)
    url = NULL;
  int64_t left_ms = (deadline - dlock_backend_now_ns()) / 1000000;
  if (left_ms < 1)
    left_ms = 1;
  int64_t conn_ms = h->connect_timeout_ms < left_ms ? h->connect_timeout_ms : left_ms;
  /* libcurl keeps its own copy. */
  curl_easy_setopt(c, CURLOPT_URL, url ? url : "");
  free(url);
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
  }
  /* NULL restores the method the options above imply (a reused handle may
   * carry another request's). */
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, strcmp(method, "PUT") == 0 ? "PUT" : NULL);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)conn_ms);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)left_ms);
  /* Only what the URL named: no proxy from the environment, no redirects,
   * no other protocol. */
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
  if (h->cacert)
    curl_easy_setopt(c, CURLOPT_CAINFO, h->cacert);
  if (h->cert)
    curl_easy_setopt(c, CURLOPT_SSLCERT, h->cert);
  if (h->keyfile)
    curl_easy_setopt(c, CURLOPT_SSLKEY, h->keyfile);
}

bool dlock__http_config_error(CURLcode c) {
  switch (c) {
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
  case CURLE_OUT_OF_MEMORY:
    return true;
  default:
    return false;
  }
}

static void sleep_until(int64_t until) {
  int64_t d = until - dlock_backend_now_ns();
  if (d <= 0)
    return;
  struct timespec ts = {d / 1000000000, d % 1000000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void dlock__http_pause(int64_t deadline) {
  int64_t until = dlock_backend_now_ns() + 50000000 + (int64_t)dlock__random_below(50000000);
  sleep_until(deadline >= 0 && until > deadline ? deadline : until);
}

static struct curl_slist *json_headers(void) {
  struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
  struct curl_slist *t = hs ? curl_slist_append(hs, "Expect:") : NULL;
  if (!t)
    curl_slist_free_all(hs);
  return t;
}

void dlock__http_move_on(dlock__http *h, size_t ep) {
  if (h->bc && h->nendpoints > 1)
    dlock_backend_log(h->bc, DLOCK_LOG_WARN,
                      "%s: %s did not answer, or cannot serve now: trying the next endpoint",
                      h->who, h->endpoints[ep]);
  dlock__http_failover(h, ep);
}

int dlock__http_send(dlock__http *h, const dlock__http_req *r, dlock__http_body *b,
                     long *status) {
  CURL *c = dlock__http_handle_get(h);
  if (!c)
    return dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", h->who);
  int rc = 0, reauths = 0;
  size_t tried = 0;
  int64_t backoff = 20000000;
  bool answered = false;
  char msg[256] = "";
  for (;;) {
    size_t ep = dlock__http_current(h);
    struct curl_slist *hs = r->headers ? r->headers(r->ctx) : json_headers();
    if (!hs) {
      rc = dlock_seterr(DLOCK_ENOMEM, "%s: out of memory", h->who);
      break;
    }
    int64_t attempt_end = r->deadline;
    size_t untried = h->nendpoints - tried % h->nendpoints;
    if (untried > 1)
      attempt_end = dlock_backend_now_ns() +
                    (r->deadline - dlock_backend_now_ns()) / (int64_t)untried;
    dlock__http_body_reset(b);
    *status = 0;
    dlock__http_setup(h, c, ep, r->method, r->path, r->body, hs, attempt_end);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dlock__http_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, r->on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r->on_header ? r->ctx : NULL);
    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(hs);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    answered = cc == CURLE_OK;
    int verdict = DLOCK__HTTP_NEXT;
    if (answered) {
      snprintf(msg, sizeof msg, "HTTP %ld: %.200s", *status, b->data ? b->data : "");
      verdict = r->judge ? r->judge(r->ctx, *status, b, msg, sizeof msg) : DLOCK__HTTP_DONE;
      if (verdict == DLOCK__HTTP_REAUTH) {
        if (!r->reauth || reauths++ >= 2) {
          rc = DLOCK_EAUTH; /* the judge's message */
          break;
        }
        if ((rc = r->reauth(r->ctx, r->deadline)) < 0)
          break;
        continue;
      }
      if (verdict <= 0) {
        rc = verdict;
        break;
      }
    } else if (b->too_big) {
      rc = dlock_seterr(DLOCK_EBACKEND, "%s: answer to %s larger than %u bytes", h->who,
                        r->path, DLOCK__HTTP_BODY_MAX);
      break;
    } else {
      snprintf(msg, sizeof msg, "%s", curl_easy_strerror(cc));
      if (dlock__http_config_error(cc)) {
        rc = dlock_seterr(DLOCK_ECONN, "%s: %s: %s", h->who, h->endpoints[ep], msg);
        break;
      }
    }
    /* Down, partitioned or between leaders: the next endpoint, and once
     * all have been tried, the same again after a pause. */
    if (verdict == DLOCK__HTTP_NEXT)
      dlock__http_move_on(h, ep);
    pthread_mutex_lock(&h->mu);
    h->retries++;
    pthread_mutex_unlock(&h->mu);
    int64_t now = dlock_backend_now_ns();
    if (h->steady_pause) {
      if (now < r->deadline) {
        if (++tried % h->nendpoints == 0)
          dlock__http_pause(r->deadline);
        continue;
      }
    } else if (++tried % h->nendpoints == 0) {
      int64_t until = now + backoff + (int64_t)dlock__random_below((uint64_t)backoff);
      backoff = backoff * 2 > 500000000 ? 500000000 : backoff * 2;
      if (until < r->deadline) {
        sleep_until(until);
        continue;
      }
    } else if (now < r->deadline) {
      continue;
    }
    rc = dlock_seterr(DLOCK_ECONN, "%s: no endpoint answered %s %s: %s", h->who, r->method,
                      r->path, msg);
    break;
  }
  if (answered)
    dlock__http_handle_put(h, c);
  else
    curl_easy_cleanup(c); /* a broken connection must not be reused */
  return rc;
}
