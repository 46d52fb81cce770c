/* HTTP transport shared by the backends that speak to a store over HTTP
 * (etcd's gateway, Consul's agent): the endpoints named by the URL, a pool
 * of libcurl handles that keep their connections open, the options every
 * request gets (timeouts, TLS files, no proxy, no redirects) and moving on
 * to the next endpoint.  What a store's answers mean stays in its backend. */
#ifndef DLOCK_HTTP_H
#define DLOCK_HTTP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "backend-util.h"

/* A response body, NUL-terminated, refused past a size limit. */
typedef struct dlock__http_body {
  char *data;
  size_t len, cap;
  bool too_big;
} dlock__http_body;

DLOCK__HIDDEN void dlock__http_body_reset(dlock__http_body *b);
DLOCK__HIDDEN bool dlock__http_body_add(dlock__http_body *b, const char *p, size_t n);
/* CURLOPT_WRITEFUNCTION appending to the dlock__http_body in WRITEDATA. */
DLOCK__HIDDEN size_t dlock__http_on_body(char *p, size_t size, size_t n, void *arg);
#define DLOCK__HTTP_BODY_MAX (64u << 20)

typedef struct dlock__http {
  const char *who;             /* "etcd": starts every message */
  pthread_mutex_t mu;
  char **endpoints;            /* "https://[::1]:2379" */
  size_t nendpoints;
  size_t cur;                  /* the endpoint that answered last */
  char *cacert, *cert, *keyfile;
  int64_t connect_timeout_ms;
  CURL **idle;                 /* handles with an open connection */
  size_t nidle, capidle;
  uint64_t failovers;          /* moves to the next endpoint */
  uint64_t retries;            /* attempts sent again */
  /* Between rounds over every endpoint: false, pauses growing from 20 ms
   * to 0.5 s, and no round that the next pause would carry past the
   * deadline (etcd: a cluster between leaders answers at once); true, a
   * steady 50-100 ms and rounds until the deadline itself (Consul: one
   * local agent, which answers 5xx through an election). */
  bool steady_pause;
  dlock_backend_client *bc;    /* for the log: moving on to the next endpoint */
} dlock__http;

/* Read the endpoints (every host of URL, DEFAULT_PORT when it has none;
 * https when the scheme is TLS_SCHEME) and the ?cacert=, ?cert=, ?key=
 * parameters.  0, or DLOCK_EINVAL/DLOCK_ENOMEM with a message; on failure
 * dlock__http_close is still to be called. */
DLOCK__HIDDEN int dlock__http_open(dlock__http *h, const char *who, dlock_url *url,
                                   const char *tls_scheme, int default_port,
                                   int64_t connect_timeout_ms);
DLOCK__HIDDEN void dlock__http_close(dlock__http *h);

/* A handle from the pool (a new one when it is empty), NULL when out of
 * memory.  Give back with put (keeps its connection) or curl_easy_cleanup
 * (after a transport error, so a broken connection is not reused). */
DLOCK__HIDDEN CURL *dlock__http_handle_get(dlock__http *h);
DLOCK__HIDDEN void dlock__http_handle_put(dlock__http *h, CURL *c);

/* The endpoint to use now. */
DLOCK__HIDDEN size_t dlock__http_current(dlock__http *h);
/* FROM failed: move on to the next endpoint (once, however many threads
 * saw it fail). */
DLOCK__HIDDEN void dlock__http_failover(dlock__http *h, size_t from);
/* The same, saying so in the client's log (h->bc) when there is another
 * endpoint to go to. */
DLOCK__HIDDEN void dlock__http_move_on(dlock__http *h, size_t from);

/* Set every option of one request on C: METHOD ("GET", "PUT", "POST") to
 * endpoint EP's PATH (which includes any query), with BODY (may be NULL for
 * GET), headers HS, the whole transfer ending by DEADLINE and the connect
 * within the connect timeout.  The write callback is left to the caller. */
DLOCK__HIDDEN void dlock__http_setup(dlock__http *h, CURL *c, size_t ep, const char *method,
                                     const char *path, const char *body,
                                     struct curl_slist *hs, int64_t deadline);

/* Errors that say nothing about the endpoint but about our configuration:
 * no other endpoint will do better. */
DLOCK__HIDDEN bool dlock__http_config_error(CURLcode c);

/* Sleep 50-100 ms, less if DEADLINE (>= 0) comes first: between attempts
 * that failed at once, so nobody spins. */
DLOCK__HIDDEN void dlock__http_pause(int64_t deadline);

/* What a store makes of an HTTP answer to one attempt. */
enum {
  DLOCK__HTTP_DONE = 0,   /* the caller's to read */
  DLOCK__HTTP_NEXT = 1,   /* this endpoint cannot serve it now (no leader): the next one */
  DLOCK__HTTP_AGAIN = 2,  /* try again later, on the same endpoint (a 5xx of an agent) */
  DLOCK__HTTP_REAUTH = 3, /* log in again and send it again; the message (DLOCK_EAUTH)
                             is already set for when that is not possible */
};

/* One request and the store's part in it. */
typedef struct dlock__http_req {
  const char *method; /* "GET", "PUT", "POST" */
  const char *path;   /* with any query */
  const char *body;   /* NULL for none */
  int64_t deadline;   /* dlock_backend_now_ns() clock */
  void *ctx;          /* handed to the hooks */
  /* The headers of the next attempt (it frees them); NULL when out of
   * memory.  NULL hook: JSON, and no "Expect: 100-continue" (curl would
   * wait up to a second for it on bodies over 1 KiB). */
  struct curl_slist *(*headers)(void *ctx);
  /* What an HTTP answer STATUS with body B means: a DLOCK__HTTP_* verdict,
   * or a negative code with a message set.  MSG (MSGLEN bytes) holds
   * "HTTP <status>: <body>", which the message of a request that runs out
   * of time quotes; the judge may put what the store said there instead.
   * NULL hook: every answer is DONE. */
  int (*judge)(void *ctx, long status, const dlock__http_body *b, char *msg, size_t msglen);
  /* Optional: log in again before DEADLINE.  0 or a negative code. */
  int (*reauth)(void *ctx, int64_t deadline);
  /* Optional: CURLOPT_HEADERFUNCTION for the answer's headers, with CTX. */
  size_t (*on_header)(char *p, size_t size, size_t n, void *ctx);
} dlock__http_req;

/* Send R until an endpoint gives an answer the store takes, moving on to
 * the next endpoint when one cannot be reached (or the store says so),
 * with growing pauses once all have been tried, until R->deadline.  Each
 * endpoint not yet tried in a round gets an equal share of the time left,
 * so that one that takes the request and never answers (partitioned,
 * overloaded) cannot use up the whole budget.  0 with *STATUS and B
 * holding the answer the store judged DONE, or a negative code with a
 * message. */
DLOCK__HIDDEN int dlock__http_send(dlock__http *h, const dlock__http_req *r,
                                   dlock__http_body *b, long *status);

#endif
