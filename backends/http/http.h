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

#include "internal.h"

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
  uint64_t failovers;
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

#endif
