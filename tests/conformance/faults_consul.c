/* Consul fault injection for the conformance suite: requests of our own to
 * the agent's HTTP API, destroying the session that holds a lock the way an
 * operator would (PUT /v1/session/destroy/<id>), or deleting a lock key
 * behind its holders' backs.  Key layout and answers
 * come from the backend's codec, so the injector and the client agree on
 * them by construction; the transport is separate, so a bug in the
 * backend's cannot hide here. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "backends/consul/consul-codec.h"
#include "backends/http/http.h"
#include "dlock/dlock.h"
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
int conf_consul_txn_one(const char *url, const char *verb, const char *key, char **answer) {
  *answer = NULL;
  cJSON *root = cJSON_CreateArray(), *op = cJSON_CreateObject();
  cJSON *kv = op ? cJSON_AddObjectToObject(op, "KV") : NULL;
  char *req = NULL;
  if (root && kv && cJSON_AddStringToObject(kv, "Verb", verb) &&
      cJSON_AddStringToObject(kv, "Key", key) && cJSON_AddItemToArray(root, op)) {
    op = NULL;
    req = cJSON_PrintUnformatted(root);
  }
  cJSON_Delete(op);
  cJSON_Delete(root);
  int st = req ? conf_consul_request(url, "PUT", "/v1/txn", req, answer) : -1;
  free(req);
  return st;
}

int conf_consul_forget_key(const char *url, const char *key) {
  char *lk = conf_consul_lock_key(url, key);
  if (!lk)
    return -1;
  /* A txn delete, for the same reason as conf_consul_get. */
  char *answer;
  int st = conf_consul_txn_one(url, "delete", lk, &answer);
  if (st != 200 && st > 0)
    fprintf(stderr, "faults_consul: delete %s: HTTP %d: %s\n", lk, st, answer ? answer : "");
  free(answer);
  free(lk);
  return st == 200 ? 0 : -1;
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

/* ---- a give-back the agent applies after its client gave up on it ----
 *
 * An agent that has no leader yet (a server restarting, an election)
 * holds a request (up to its rpc_hold_timeout, 7 s by default) and carries
 * it out once it has one, also when the client stopped waiting long
 * before, and the requests it held go in no particular order.  So an unlock a client
 * sent during a restart and gave up on can reach the KV store after a
 * later lock of the same key by the same client, and the client's
 * sessions are shared by all its locks.  That unlock must not free the
 * later lock, or a second client takes the key while the first still
 * says HELD (what tests/faults found on consul-persist).
 *
 * A small HTTP proxy between the client and the agent plays that agent:
 * it forwards every request, one per connection (Connection: close, so
 * that an answer is whatever the agent sends until it closes), except the
 * next unlock (or lock) txn, which it keeps without a word until the case
 * hands it to the agent; or it forwards the next lock txn and throws its answer
 * away, a grant whose answer was lost; or it answers the next session
 * renewal 404 itself, as a new leader does that has not applied its log
 * yet (below). */

#define HP_REQ_MAX (1 << 20)
#define HP_CONNS 64

struct hproxy {
  int lfd, port;
  struct sockaddr_in up;
  pthread_t acceptor;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop;
  int live;                 /* connection threads running */
  int fds[HP_CONNS];        /* their client sockets, -1 when free */
  int hold_unlocks;         /* unlock txns still to keep */
  int hold_locks;           /* lock txns still to keep (the same way) */
  int drop_locks;           /* while set, a lock txn beyond the kept one is never
                               carried out (the client may send it again) */
  int swallow_lock_answers; /* lock txns still to forward unanswered */
  char *held;               /* the txn kept, as it goes to the agent */
  size_t held_len;
  int swallowed;            /* lock txns forwarded whose answer was dropped */
  int fake_renew_404;       /* session renewals still to answer 404 without the agent */
  int faked;                /* renewals answered so */
};

struct hp_conn {
  struct hproxy *p;
  int fd, slot;
};

static bool send_all(int fd, const char *b, size_t n) {
  while (n) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    b += w;
    n -= (size_t)w;
  }
  return true;
}

/* One whole request from FD (headers and Content-Length bytes of body)
 * into *buf: its length, or -1 at EOF, error or stop. */
static ssize_t hp_read_request(struct hproxy *p, int fd, char **buf) {
  size_t cap = 8192, len = 0;
  char *b = malloc(cap);
  size_t want = 0; /* whole length once the headers are in */
  while (b) {
    if (want && len >= want)
      break;
    if (len + 1 >= cap) {
      if (cap >= HP_REQ_MAX)
        break;
      char *nb = realloc(b, cap *= 2);
      if (!nb)
        break;
      b = nb;
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int pr = poll(&pf, 1, 100);
    pthread_mutex_lock(&p->mu);
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    if (stop)
      break;
    if (pr <= 0)
      continue;
    ssize_t n = recv(fd, b + len, cap - len - 1, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    len += (size_t)n;
    b[len] = '\0';
    char *end = want ? NULL : strstr(b, "\r\n\r\n");
    if (end) {
      size_t body = 0;
      for (char *h = strchr(b, '\n'); h && h < end; h = strchr(h + 1, '\n'))
        if (strncasecmp(h + 1, "Content-Length:", 15) == 0)
          body = strtoul(h + 16, NULL, 10);
      want = (size_t)(end + 4 - b) + body;
    }
  }
  if (b && want && len >= want) {
    *buf = b;
    return (ssize_t)want;
  }
  free(b);
  return -1;
}

/* REQ (N bytes) with "Connection: close" after its request line. */
static char *hp_rewrite(const char *req, size_t n, size_t *out_len) {
  static const char hdr[] = "Connection: close\r\n";
  const char *eol = memchr(req, '\n', n);
  if (!eol)
    return NULL;
  size_t head = (size_t)(eol + 1 - req);
  char *o = malloc(n + sizeof hdr);
  if (!o)
    return NULL;
  memcpy(o, req, head);
  memcpy(o + head, hdr, sizeof hdr - 1);
  memcpy(o + head + sizeof hdr - 1, req + head, n - head);
  *out_len = n + sizeof hdr - 1;
  return o;
}

/* Send REQ to the agent on a connection of its own and read its answer to
 * the end: the HTTP status, or -1. The answer is copied to FD unless FD is
 * -1. */
static int hp_forward(struct hproxy *p, const char *req, size_t n, int fd) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0)
    return -1;
  int status = -1;
  if (connect(s, (const struct sockaddr *)&p->up, sizeof p->up) == 0 && send_all(s, req, n)) {
    char b[16384], first[16] = "";
    size_t got = 0;
    for (;;) {
      /* A blocking query lasts as long as its wait; a stop ends it. */
      struct pollfd pf = {.fd = s, .events = POLLIN};
      int pr = poll(&pf, 1, 100);
      pthread_mutex_lock(&p->mu);
      bool stop = p->stop;
      pthread_mutex_unlock(&p->mu);
      if (stop)
        break;
      if (pr == 0 || (pr < 0 && errno == EINTR))
        continue;
      ssize_t r = recv(s, b, sizeof b, 0);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        break;
      if (got < sizeof first - 1) {
        size_t c = (size_t)r < sizeof first - 1 - got ? (size_t)r : sizeof first - 1 - got;
        memcpy(first + got, b, c);
        got += c;
      }
      if (fd >= 0 && !send_all(fd, b, (size_t)r))
        fd = -1; /* the client left: the agent's answer is read all the same */
    }
    if (strncmp(first, "HTTP/1.", 7) == 0)
      status = atoi(first + 9);
  }
  close(s);
  return status;
}

/* Keep FD open, answering nothing, until its client gives up or the proxy
 * stops. */
static void hp_stall(struct hproxy *p, int fd) {
  char b[4096];
  for (;;) {
    pthread_mutex_lock(&p->mu);
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    if (stop)
      return;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 100) > 0 && recv(fd, b, sizeof b, 0) <= 0)
      return;
  }
}

static void *hp_conn_main(void *arg) {
  struct hp_conn *c = arg;
  struct hproxy *p = c->p;
  char *req = NULL;
  ssize_t n = hp_read_request(p, c->fd, &req);
  size_t fl = 0;
  char *fwd = n > 0 ? hp_rewrite(req, (size_t)n, &fl) : NULL;
  if (fwd) {
    const char *body = strstr(req, "\r\n\r\n") + 4;
    bool txn = strncmp(req, "PUT /v1/txn ", 12) == 0;
    /* A release: an unlock, or a delete-cas of the held key. */
    bool unlock = txn && (strstr(body, "\"Verb\":\"unlock\"") ||
                          strstr(body, "\"Verb\":\"delete-cas\""));
    bool lock = txn && strstr(body, "\"Verb\":\"lock\"");
    bool renew = strncmp(req, "PUT /v1/session/renew/", 22) == 0;
    pthread_mutex_lock(&p->mu);
    int what = 0;
    if (renew && p->fake_renew_404 > 0) {
      p->fake_renew_404--;
      what = 3;
    } else if (((unlock && p->hold_unlocks > 0) || (lock && p->hold_locks > 0)) && !p->held) {
      if (unlock)
        p->hold_unlocks--;
      else
        p->hold_locks--;
      p->held = fwd;
      p->held_len = fl;
      fwd = NULL;
      what = 1;
    } else if (lock && p->drop_locks) {
      what = 4; /* stalled below, never forwarded */
    } else if (lock && p->swallow_lock_answers > 0) {
      p->swallow_lock_answers--;
      what = 2;
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (what == 0) {
      hp_forward(p, fwd, fl, c->fd);
    } else if (what == 3) {
      /* What a leader that has not applied its log yet answers. */
      static const char msg[] = "Session id 'x' not found";
      char a[256];
      int al = snprintf(a, sizeof a,
                        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                        sizeof msg - 1, msg);
      send_all(c->fd, a, (size_t)al);
      pthread_mutex_lock(&p->mu);
      p->faked++;
      pthread_cond_broadcast(&p->cv);
      pthread_mutex_unlock(&p->mu);
    } else {
      if (what == 2) {
        hp_forward(p, fwd, fl, -1);
        pthread_mutex_lock(&p->mu);
        p->swallowed++;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
      }
      hp_stall(p, c->fd);
    }
  }
  free(fwd);
  free(req);
  pthread_mutex_lock(&p->mu);
  close(c->fd);
  p->fds[c->slot] = -1;
  p->live--;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  free(c);
  return NULL;
}

static void *hp_accept_main(void *arg) {
  struct hproxy *p = arg;
  for (;;) {
    struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
    int pr = poll(&pf, 1, 100);
    pthread_mutex_lock(&p->mu);
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    if (stop)
      return NULL;
    if (pr <= 0)
      continue;
    int fd = accept(p->lfd, NULL, NULL);
    if (fd < 0)
      continue;
    struct hp_conn *c = calloc(1, sizeof *c);
    pthread_mutex_lock(&p->mu);
    int slot = -1;
    for (int i = 0; i < HP_CONNS && slot < 0; i++)
      if (p->fds[i] < 0)
        slot = i;
    pthread_t th;
    bool ok = c && slot >= 0;
    if (ok) {
      c->p = p;
      c->fd = fd;
      c->slot = slot;
      p->fds[slot] = fd;
      p->live++;
      if (pthread_create(&th, NULL, hp_conn_main, c) == 0) {
        pthread_detach(th);
      } else {
        p->fds[slot] = -1;
        p->live--;
        ok = false;
      }
    }
    pthread_mutex_unlock(&p->mu);
    if (!ok) {
      close(fd);
      free(c);
    }
  }
}

static void hp_stop(struct hproxy *p) {
  pthread_mutex_lock(&p->mu);
  p->stop = true;
  pthread_mutex_unlock(&p->mu);
  pthread_join(p->acceptor, NULL);
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < HP_CONNS; i++)
    if (p->fds[i] >= 0)
      shutdown(p->fds[i], SHUT_RDWR);
  while (p->live > 0)
    pthread_cond_wait(&p->cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
  close(p->lfd);
  free(p->held);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}

/* A proxy to the first agent of URL, and in *purl URL with that agent
 * replaced by the proxy (malloc'd).  NULL when URL is not one it can
 * stand in for (TLS, an IPv6 agent, several agents). */
static struct hproxy *hp_start(const char *url, char **purl) {
  struct target t;
  if (target_open(url, &t) < 0)
    return NULL;
  bool fits = !t.tls && dlock_url_host_count(t.u) == 1 &&
              !strchr(dlock_url_host(t.u, 0), ':');
  struct sockaddr_in up = {.sin_family = AF_INET};
  int port = fits ? dlock_url_port(t.u, 0) : 0;
  up.sin_port = htons((uint16_t)(port ? port : 8500));
  fits = fits && inet_pton(AF_INET, strcmp(dlock_url_host(t.u, 0), "localhost") == 0
                                        ? "127.0.0.1" : dlock_url_host(t.u, 0),
                           &up.sin_addr) == 1;
  dlock__url_free(t.u);
  if (!fits)
    return NULL;
  struct hproxy *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->up = up;
  for (int i = 0; i < HP_CONNS; i++)
    p->fds[i] = -1;
  pthread_mutex_init(&p->mu, NULL);
  dlock__cond_init(&p->cv);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  p->lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(p->lfd, 64) != 0 || getsockname(p->lfd, (struct sockaddr *)&sa, &sl) != 0 ||
      pthread_create(&p->acceptor, NULL, hp_accept_main, p) != 0) {
    if (p->lfd >= 0)
      close(p->lfd);
    free(p);
    return NULL;
  }
  p->port = ntohs(sa.sin_port);
  /* scheme://host:port[/...][?...] with the proxy's address instead. */
  const char *auth = strstr(url, "://") + 3;
  const char *rest = auth + strcspn(auth, "/?");
  if (asprintf(purl, "%.*s127.0.0.1:%d%s", (int)(auth - url), url, p->port, rest) < 0) {
    *purl = NULL;
    hp_stop(p);
    return NULL;
  }
  return p;
}

/* Whether, within MS, the proxy keeps an unlock (WHAT 0), has dropped
 * the answer to a lock (WHAT 1) or has answered a renewal 404 (WHAT 2). */
static bool hp_wait(struct hproxy *p, int64_t ms, int what) {
  int64_t until = dlock__now_ns() + ms * 1000000;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    bool ok = what == 0 ? p->held != NULL : what == 1 ? p->swallowed > 0 : p->faked > 0;
    if (ok || dlock__now_ns() >= until) {
      pthread_mutex_unlock(&p->mu);
      return ok;
    }
    struct timespec ts;
    dlock__ns_to_timespec(dlock__now_ns() + 50000000, &ts);
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
  }
}

/* The session holding KEY's lock key at the store ("" for none) into SID;
 * false when the store could not be read. */
static bool holder_session(const char *url, const char *key, char sid[DLOCK_CONSUL_SESSION_MAX]) {
  dlock__consul_kv kv;
  int f = conf_consul_get(url, key, &kv);
  snprintf(sid, DLOCK_CONSUL_SESSION_MAX, "%s", f == 1 ? kv.session : "");
  dlock__consul_kv_free(&kv);
  return f >= 0;
}

/* Until KEY's lock key is free at the store, for up to MS. */
static bool wait_free(const char *url, const char *key, int64_t ms) {
  int64_t until = dlock__now_ns() + ms * 1000000;
  char sid[DLOCK_CONSUL_SESSION_MAX];
  while (holder_session(url, key, sid) && sid[0] && dlock__now_ns() < until) {
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL);
  }
  return holder_session(url, key, sid) && !sid[0];
}

/* One round of the case.  LOST_GRANT: the unlock kept is the one that gives
 * back a grant whose answer was lost (the client does not know the key's
 * index); else the one of a release that got no answer. */
static void stale_give_back_round(const char *url, bool lost_grant) {
  char *purl = NULL;
  struct hproxy *p = hp_start(url, &purl);
  if (!p) {
    free(purl);
    skip(); /* TLS or several agents: the proxy speaks plain HTTP to one */
  }
  const char *key = conf_key(lost_grant ? "stale-give-back-grant" : "stale-give-back-release");
  /* Requests give up after a second, as one sent to a restarting server
   * would after the client's timeout. */
  const char *curl_ = conf_url_with(purl, "timeout=1s");
  char cu[4096];
  snprintf(cu, sizeof cu, "%s", curl_);
  free(purl);
  dlock_client *c = NULL, *d = NULL;
  int rc = dlock_open(cu, &c);
  if (rc != 0)
    fail_msg("dlock_open through the proxy: %s: %s", dlock_err_name(rc),
             dlock_client_errmsg(NULL));
  rc = dlock_open(url, &d);
  if (rc != 0)
    fail_msg("dlock_open: %s: %s", dlock_err_name(rc), dlock_client_errmsg(NULL));
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 10000;
  o.wait_ms = 10000;
  char s1[DLOCK_CONSUL_SESSION_MAX] = "", s2[DLOCK_CONSUL_SESSION_MAX] = "",
       at[DLOCK_CONSUL_SESSION_MAX] = "";
  dlock_lock *l = NULL;
  uint64_t t1 = 0;
  pthread_mutex_lock(&p->mu);
  p->hold_unlocks = 1;
  /* Every answer while it tries: the client may send the txn again
   * within its timeout. */
  p->swallow_lock_answers = lost_grant ? 1000 : 0;
  pthread_mutex_unlock(&p->mu);
  if (lost_grant) {
    /* Granted, but the answer never comes: the client gives the key back
     * by itself, and that unlock is the one kept. */
    dlock_options t = o;
    t.wait_ms = 0;
    rc = dlock_try_acquire(c, key, &t, &l);
    pthread_mutex_lock(&p->mu);
    p->swallow_lock_answers = 0;
    pthread_mutex_unlock(&p->mu);
    if (rc == 0)
      fail_msg("try_acquire whose answer was dropped returned the lock");
    assert_true(hp_wait(p, 5000, 1));
    assert_true(holder_session(url, key, s1) && s1[0]);
  } else {
    rc = dlock_acquire(c, key, &o, &l);
    if (rc != 0)
      fail_msg("acquire: %s: %s", dlock_err_name(rc), dlock_client_errmsg(NULL));
    t1 = dlock_lock_token(l);
    assert_int_equal(dlock_control(c, l, DLOCK_CONSUL_CTL_SESSION, s1), 0);
    /* Its unlock is kept: no answer within the client's timeout. */
    dlock_release(l);
    l = NULL;
  }
  assert_true(hp_wait(p, 5000, 0));
  /* The client gives the key back again (its give-back, retried in the
   * background), and that one goes through. */
  if (!wait_free(url, key, 15000))
    fail_msg("'%s' was never given back", key);
  rc = dlock_acquire(c, key, &o, &l);
  if (rc != 0)
    fail_msg("second acquire: %s: %s", dlock_err_name(rc), dlock_client_errmsg(NULL));
  uint64_t t2 = dlock_lock_token(l);
  assert_true(t2 > t1);
  assert_int_equal(dlock_control(c, l, DLOCK_CONSUL_CTL_SESSION, s2), 0);
  /* The case is about one session: the client's shared one. */
  assert_string_equal(s1, s2);
  /* Now the agent carries out the unlock it held back. */
  pthread_mutex_lock(&p->mu);
  char *held = p->held;
  size_t hl = p->held_len;
  p->held = NULL;
  pthread_mutex_unlock(&p->mu);
  int st = hp_forward(p, held, hl, -1);
  free(held);
  bool kept = holder_session(url, key, at) && strcmp(at, s2) == 0;
  dlock_lock *m = NULL;
  dlock_options t = o;
  t.wait_ms = 0;
  int other = dlock_try_acquire(d, key, &t, &m);
  if (other == 0)
    dlock_release(m);
  int state = dlock_lock_state(l);
  dlock_release(l);
  dlock_close(c);
  dlock_close(d);
  hp_stop(p);
  if (!kept || other == 0)
    fail_msg("an unlock of the %s, carried out late (HTTP %d), freed the later lock of '%s' "
             "(token %" PRIu64 ", state %d): the store shows session '%s' instead of '%s', "
             "and another client's try_acquire got %s",
             lost_grant ? "unanswered grant" : "unanswered release", st, key,
             t2, state, at, s2,
             other == 0 ? "the lock" : dlock_err_name(other));
  assert_int_equal(other, DLOCK_EBUSY);
  assert_int_equal(state, DLOCK_HELD);
  /* With the key held, the late unlock can only have been refused. */
  assert_int_equal(st, 409);
}

/* Set by consul_cases.c to the URL its cases run on. */
const char *conf_consul_url;

void conf_consul_stale_give_back(void **state);

/* Both rounds: the unlock of a grant whose answer was lost, and that of a
 * release whose answer was lost. */
void conf_consul_stale_give_back(void **state) {
  (void)state;
  stale_give_back_round(conf_consul_url, true);
  stale_give_back_round(conf_consul_url, false);
}

void conf_consul_renew_404_catching_up(void **state);

/* A server that has just become leader (a restart with a data dir) answers
 * renewals from its own state before it has applied the log it found, so
 * for a second or more it says 404 "Session id ... not found" for sessions
 * created since its last snapshot.  Taken at its word, that reports every
 * lock of the session LOST and, since a dead session's locks are not
 * given back, leaves their keys held by a session nobody renews for
 * 2 x TTL (the fault suite's restarts showed 20 s stalls).  The session is
 * there: the lock must stay HELD, renewed at the next try. */
void conf_consul_renew_404_catching_up(void **state) {
  (void)state;
  const char *url = conf_consul_url;
  char *purl = NULL;
  struct hproxy *p = hp_start(url, &purl);
  if (!p) {
    free(purl);
    skip(); /* TLS or several agents: the proxy speaks plain HTTP to one */
  }
  const char *key = conf_key("renew-404");
  dlock_client *c = NULL;
  int rc = dlock_open(purl, &c);
  free(purl);
  if (rc != 0)
    fail_msg("dlock_open through the proxy: %s: %s", dlock_err_name(rc),
             dlock_client_errmsg(NULL));
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 10000;
  o.wait_ms = 10000;
  dlock_lock *l = NULL;
  rc = dlock_acquire(c, key, &o, &l);
  if (rc != 0)
    fail_msg("acquire: %s: %s", dlock_err_name(rc), dlock_client_errmsg(NULL));
  char sid[DLOCK_CONSUL_SESSION_MAX] = "", at[DLOCK_CONSUL_SESSION_MAX] = "";
  assert_int_equal(dlock_control(c, l, DLOCK_CONSUL_CTL_SESSION, sid), 0);
  pthread_mutex_lock(&p->mu);
  p->fake_renew_404 = 1;
  pthread_mutex_unlock(&p->mu);
  /* The renewal comes a third of the ttl after the acquire. */
  bool faked = hp_wait(p, 8000, 2);
  /* The retry after it, a fraction of a second later, and its check. */
  struct timespec ts = {1, 500000000};
  nanosleep(&ts, NULL);
  int st = dlock_lock_state(l);
  bool held = holder_session(url, key, at) && strcmp(at, sid) == 0;
  int rel = dlock_release(l);
  dlock_close(c);
  hp_stop(p);
  assert_true(faked);
  if (st != DLOCK_HELD)
    fail_msg("a renewal answered 404 for session %s, which the agent has (the store shows "
             "'%s' holding '%s'), turned the lock %s",
             sid, at, key, st == DLOCK_LOST ? "LOST" : "RELEASED");
  assert_true(held);
  assert_int_equal(rel, 0);
}

void conf_consul_late_grant_given_back(void **state);

/* The same agent can carry out a lock txn its client gave up on after the
 * client found the key free and stopped caring: the key is then held by
 * the client's session, which its other locks keep alive, for nobody.
 * The client must look again for a while and give it back. */
void conf_consul_late_grant_given_back(void **state) {
  (void)state;
  const char *url = conf_consul_url;
  char *purl = NULL;
  struct hproxy *p = hp_start(url, &purl);
  if (!p) {
    free(purl);
    skip(); /* TLS or several agents: the proxy speaks plain HTTP to one */
  }
  char key[256], other[256];
  snprintf(key, sizeof key, "%s", conf_key("late-grant"));
  snprintf(other, sizeof other, "%s", conf_key("late-grant-other"));
  char cu[4096];
  snprintf(cu, sizeof cu, "%s", conf_url_with(purl, "timeout=1s"));
  free(purl);
  dlock_client *c = NULL;
  int rc = dlock_open(cu, &c);
  if (rc != 0)
    fail_msg("dlock_open through the proxy: %s: %s", dlock_err_name(rc),
             dlock_client_errmsg(NULL));
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 10000;
  o.wait_ms = 10000;
  /* Another lock keeps the session renewed throughout. */
  dlock_lock *keep = NULL, *l = NULL;
  rc = dlock_acquire(c, other, &o, &keep);
  if (rc != 0)
    fail_msg("acquire: %s: %s", dlock_err_name(rc), dlock_client_errmsg(NULL));
  char sid[DLOCK_CONSUL_SESSION_MAX] = "", at[DLOCK_CONSUL_SESSION_MAX] = "";
  assert_int_equal(dlock_control(c, keep, DLOCK_CONSUL_CTL_SESSION, sid), 0);
  pthread_mutex_lock(&p->mu);
  p->hold_locks = 1;
  p->drop_locks = 1; /* a copy sent again within the try's time is not seen either */
  pthread_mutex_unlock(&p->mu);
  dlock_options t = o;
  t.wait_ms = 0;
  rc = dlock_try_acquire(c, key, &t, &l);
  pthread_mutex_lock(&p->mu);
  p->drop_locks = 0;
  pthread_mutex_unlock(&p->mu);
  if (rc == 0)
    fail_msg("try_acquire whose lock txn the agent never saw returned the lock");
  assert_true(hp_wait(p, 5000, 0));
  /* The client looks at the key (free) and gives its attempt up. */
  struct timespec ts = {2, 0};
  nanosleep(&ts, NULL);
  /* Now the agent carries the lock out. */
  pthread_mutex_lock(&p->mu);
  char *held = p->held;
  size_t hl = p->held_len;
  p->held = NULL;
  pthread_mutex_unlock(&p->mu);
  int st = hp_forward(p, held, hl, -1);
  /* The agent answers a txn 200 only when every operation in it, the lock
   * included, was carried out (409 otherwise): the lock was granted, even
   * if the client has given it back before the key is read here. */
  bool granted = st == 200 || (holder_session(url, key, at) && strcmp(at, sid) == 0);
  bool freed = wait_free(url, key, 8000);
  /* And a second copy of it (a transport sends a request again after a
   * cut), carried out after the client gave the first back. */
  int st2 = freed ? hp_forward(p, held, hl, -1) : 200;
  bool freed2 = freed && wait_free(url, key, 8000);
  free(held);
  holder_session(url, key, at);
  dlock_release(keep);
  dlock_close(c);
  hp_stop(p);
  assert_int_equal(st, 200);
  assert_true(granted); /* or the case tested nothing */
  if (!freed || !freed2)
    fail_msg("a lock txn the agent carried out after its client gave up left '%s' held by "
             "the client's session '%s' (the store shows '%s'; %s copy)", key, sid, at,
             freed ? "second" : "first");
  assert_int_equal(st2, 200);
}

void conf_consul_release_after_key_gone(void **state);

/* A release whose key is already gone (the session ended and the next
 * holder released it, which deletes it) says the lock was lost: a
 * delete-cas of a missing key succeeds, so the release checks the session
 * in the same txn. */
void conf_consul_release_after_key_gone(void **state) {
  (void)state;
  const char *url = conf_consul_url;
  char key[256];
  snprintf(key, sizeof key, "%s", conf_key("gone-before-release"));
  dlock_client *a = NULL, *b = NULL;
  assert_int_equal(dlock_open(url, &a), 0);
  assert_int_equal(dlock_open(url, &b), 0);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 30000;
  o.auto_renew = 0;
  dlock_lock *la, *lb;
  assert_int_equal(dlock_try_acquire(a, key, &o, &la), 0);
  char sid[DLOCK_CONSUL_SESSION_MAX] = "";
  assert_int_equal(dlock_control(a, la, DLOCK_CONSUL_CTL_SESSION, sid), 0);
  assert_int_equal(conf_consul_destroy_session(url, sid), 0);
  /* The session's lock-delay (the URL's) passes before B may lock. */
  o.wait_ms = conf_lock_delay_ms(url) + 10000;
  assert_int_equal(dlock_acquire(b, key, &o, &lb), 0);
  assert_int_equal(dlock_release(lb), 0);
  assert_int_equal(dlock_release(la), DLOCK_ELOST);
  dlock_close(a);
  dlock_close(b);
}
