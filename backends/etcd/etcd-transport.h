/* etcd backend: the seam between the lock logic (etcd.c) and the wire.
 *
 * A transport carries the same logical operations of etcd's v3 API, each
 * bounded by a deadline on dlock_backend_now_ns()'s clock: a txn
 * (described once, dlock__etcd_txreq), the lease calls, logging in, a
 * status read, and a watch for deletions.  Two of them:
 *
 *   etcd://, etcd+https://   the v3 HTTP/JSON gateway through libcurl
 *                            (etcd-gateway.c)
 *   etcd+grpc://             etcd's gRPC API over HTTP/2 with libnghttp2
 *                            (etcd-grpc.c)
 *
 * What answers mean (lock keys, tokens, leases, give-backs, waiting) is
 * the backend's, in etcd.c, whichever transport carried them.  Both move
 * on to the next endpoint of a multi-endpoint URL when one cannot serve,
 * and log in again through the client's hook when a token is refused. */
#ifndef DLOCK_ETCD_TRANSPORT_H
#define DLOCK_ETCD_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/etcd/etcd-codec.h"

/* What a transport asks of the client it serves. */
typedef struct dlock__etcd_host {
  dlock_backend_client *bc;
  void *ctx;
  /* The client logs in (the URL has a user): a refused token asks for
   * relogin rather than failing at once. */
  bool auth;
  /* A malloc'd copy of the token to send now, and its generation in
   * *GEN.  NULL: none yet, or no memory for the copy; the request goes
   * without, and the store refuses it as it would an expired token. */
  char *(*token)(void *ctx, uint64_t *gen);
  /* The token of generation GEN was refused: log in again, before
   * DEADLINE.  0 or a negative code with a message. */
  int (*relogin)(void *ctx, uint64_t gen, int64_t deadline);
} dlock__etcd_host;

/* How a watch ended, when it was not by its event callback. */
enum {
  DLOCK__ETCD_WATCH_STOPPED = 0, /* the callback said so */
  DLOCK__ETCD_WATCH_UNTIL = 1,   /* its time ran out */
  DLOCK__ETCD_WATCH_BROKE = 2,   /* the stream ended or broke: look again */
};

/* One event of a watch: true ends the watch. */
typedef bool (*dlock__etcd_watch_fn)(void *ud, const dlock__etcd_watch_ev *ev);

typedef struct dlock__etcd_transport {
  const char *name; /* "gateway", "grpc" */
  /* Read the endpoints and the transport's own URL parameters, set *TP.
   * Reaching the store is the backend's (a status read or a login, right
   * after).  On failure close is still called with *TP (may be NULL). */
  int (*open)(void **tp, const dlock__etcd_host *host, dlock_url *url);
  void (*close)(void *tp);
  size_t (*endpoints)(void *tp);
  /* "host:port" of the endpoint in use (DLOCK_ETCD_ENDPOINT_MAX bytes). */
  void (*endpoint)(void *tp, char *out);
  uint64_t (*failovers)(void *tp);

  /* The txn T.  0 with *OUT decoded, or a negative code with a message;
   * *FAULT (may be NULL) says what an error answer asked for. */
  int (*txn)(void *tp, const dlock__etcd_txreq *t, int64_t deadline, dlock__etcd_txn *out,
             enum dlock__etcd_fault *fault);
  /* A lease of TTL_S seconds: *ID and the TTL granted. */
  int (*grant)(void *tp, int64_t ttl_s, int64_t deadline, int64_t *id, int64_t *granted_s);
  /* Keep lease ID alive: *TTL_S what it has now, 0 when it is gone. */
  int (*keepalive)(void *tp, int64_t id, int64_t deadline, int64_t *ttl_s);
  int (*revoke)(void *tp, int64_t id, int64_t deadline);
  /* *TTL_MS what lease ID has left, -1 when the store no longer has it;
   * with KEYS (an empty set), the keys attached to it, sorted. */
  int (*timetolive)(void *tp, int64_t id, int64_t deadline, int64_t *ttl_ms,
                    dlock__etcd_keys *keys);
  /* Log in: a malloc'd token.  Sent without a token and never relogging. */
  int (*authenticate)(void *tp, const char *user, const char *password, int64_t deadline,
                      char **token);
  /* The cheapest read: reaches the store, or says why not. */
  int (*status)(void *tp, int64_t deadline);
  /* Watch deletions of KEY from revision START on, until UNTIL, handing
   * each answer to FN.  A DLOCK__ETCD_WATCH_* or a negative code with a
   * message (the store refused the watch for good, out of memory).  *GEN
   * is the token generation the watch was sent with; *EP the endpoint it
   * used, for failover. */
  int (*watch)(void *tp, const char *key, int64_t start, int64_t until, dlock__etcd_watch_fn fn,
               void *ud, uint64_t *gen, size_t *ep);
  /* Endpoint EP cannot serve: move on to the next one (once, however
   * many threads saw it), saying so in the log. */
  void (*move_on)(void *tp, size_t ep);
} dlock__etcd_transport;

DLOCK__HIDDEN extern const dlock__etcd_transport dlock__etcd_gateway;
#ifdef DLOCK_HAVE_ETCD_GRPC
DLOCK__HIDDEN extern const dlock__etcd_transport dlock__etcd_grpc;
#endif

#endif
