/* etcd backend: everything that does not touch a socket.  Key layout,
 * base64, range ends, the JSON bodies sent to the v3 HTTP gateway and the
 * decoding of its answers, so that unit tests reach them without a server.
 *
 * The gateway speaks protobuf's JSON mapping: bytes are base64, 64-bit
 * integers are JSON strings, enums are names, and fields holding their
 * default value (0, false, empty) are left out of answers.  cJSON keeps
 * numbers as doubles, which cannot hold a lease ID, so every 64-bit value
 * is written as a string and read with strtoll from either form. */
#ifndef DLOCK_ETCD_CODEC_H
#define DLOCK_ETCD_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dlock/etcd.h"
#include "backend-util.h"
#include "backends/http/base64.h"

#define DLOCK__ETCD_DEFAULT_PREFIX "dlock/"
/* Bounds on numbers in answers.  Revisions count up from 1; one below
 * INT64_MAX leaves room for the revision after it (where a watch starts).
 * MaxLeaseTTL of etcd's lessor: no lease lives longer, and its TTL in ms
 * fits an int64 with room to spare. */
#define DLOCK__ETCD_REV_MAX (INT64_MAX - 1)
#define DLOCK__ETCD_TTL_MAX_S INT64_C(9000000000)

/* Keys per range request of a listing, unless DLOCK_ETCD_CTL_LIST_PAGE
 * says otherwise.  A holder key and its value take at most about 2.5 KiB
 * of JSON (a 512-byte key escaped and in base64), so a page stays far
 * below the 4 MiB a gRPC answer may take by default. */
#define DLOCK__ETCD_LIST_PAGE 500

/* ---- keys ---- */

/* The lock's name: PREFIX followed by KEY with '%' and '/' written as %25
 * and %2F.  Keys holding neither map to themselves, so dlock key "build"
 * under the default prefix is `etcdctl lock dlock/build`.  Escaping '/'
 * keeps every name from being a prefix of another one (without it the
 * waiters of "a" would queue behind holders of "a/b").  Malloc'd, NULL
 * when out of memory. */
DLOCK__HIDDEN char *dlock__etcd_lock_name(const char *prefix, const char *key, size_t keylen);
/* The holder key of one lease under NAME: NAME "/" lease in lower-case
 * hex, the layout of etcd's own concurrency.Mutex.  Malloc'd. */
DLOCK__HIDDEN char *dlock__etcd_lock_key(const char *name, int64_t lease);
/* The end of the range holding every key that starts with P (N bytes): P
 * with its last byte below 0xff incremented and what follows cut off.  A
 * P of only 0xff bytes (or empty) gives "\0", etcd's "to the end of the
 * keyspace".  Writes at most N bytes to OUT; returns the length. */
DLOCK__HIDDEN size_t dlock__etcd_prefix_end(const char *p, size_t n, char *out);

/* The dlock key whose queue STORE_KEY (N bytes) is in, for a client whose
 * names begin with PREFIX: 1 when STORE_KEY is PREFIX, a name and "/"
 * followed by anything (etcd's Mutex counts every key under NAME "/", so
 * dlock's queue ranges do too), with the name decoded into OUT
 * (DLOCK_KEY_MAX + 1 bytes, NUL-terminated) and its length in *OUTLEN; 0
 * when it is under no name of ours: not under PREFIX, no "/", an empty
 * name, a '%' that is not one of the two escapes dlock writes, a key
 * longer than DLOCK_KEY_MAX.  Decoding and dlock__etcd_lock_name are
 * inverses, so two store keys are in one queue exactly when they give the
 * same key. */
DLOCK__HIDDEN int dlock__etcd_key_of(const char *prefix, const char *store_key, size_t n,
                                     char *out, size_t *outlen);

/* The value stored in a holder key: "<owner>\n<label>".  Malloc'd. */
DLOCK__HIDDEN char *dlock__etcd_value(const char *owner, const char *label);
/* Split a stored value back; a value not in that form (an etcdctl holder
 * writes "") gives "" for both.  Writes NUL-terminated, truncated strings. */
DLOCK__HIDDEN void dlock__etcd_value_split(const char *v, size_t n, char *owner,
                                           size_t ownerlen, char *label, size_t labellen);

/* ---- the keys of a lease ---- */

/* The keys etcd lists for a lease (a timetolive answer asked with keys),
 * in one buffer.  Once sorted, dlock__etcd_keys_has finds one by bsearch.
 * A key with a NUL byte is left out: no key of dlock's has one.  A zeroed
 * struct is an empty set. */
typedef struct dlock__etcd_keys {
  char *buf; /* the keys one after another, each NUL-terminated */
  size_t len, cap;
  char **k; /* after dlock__etcd_keys_sort: into BUF, in strcmp order */
  size_t n;
} dlock__etcd_keys;

/* Add the N bytes at P: 0, or DLOCK_ENOMEM. */
DLOCK__HIDDEN int dlock__etcd_keys_add(dlock__etcd_keys *ks, const char *p, size_t n);
/* 0, or DLOCK_ENOMEM (the set is then empty). */
DLOCK__HIDDEN int dlock__etcd_keys_sort(dlock__etcd_keys *ks);
DLOCK__HIDDEN bool dlock__etcd_keys_has(const dlock__etcd_keys *ks, const char *key);
DLOCK__HIDDEN void dlock__etcd_keys_free(dlock__etcd_keys *ks);

/* ---- request bodies (malloc'd JSON text, NULL when out of memory) ---- */

/* POST /v3/lease/grant: {"TTL":"<ttl_s>"} */
DLOCK__HIDDEN char *dlock__etcd_req_grant(int64_t ttl_s);
/* POST /v3/lease/keepalive and /v3/lease/revoke: {"ID":"<lease>"} */
DLOCK__HIDDEN char *dlock__etcd_req_lease(int64_t lease);
/* POST /v3/lease/timetolive: {"ID":"<lease>"}, with "keys":true for
 * the keys attached to the lease as well. */
DLOCK__HIDDEN char *dlock__etcd_req_timetolive(int64_t lease, bool keys);
/* POST /v3/auth/authenticate: {"name":..,"password":..} */
DLOCK__HIDDEN char *dlock__etcd_req_auth(const char *user, const char *password);

enum dlock__etcd_op { DLOCK__ETCD_OP_RANGE = 1, DLOCK__ETCD_OP_PUT, DLOCK__ETCD_OP_DELETE };

/* ---- txns, as the store is asked them ----
 *
 * Every txn dlock sends is first described (dlock__etcd_tx_*), then
 * written for a transport: JSON for the gateway (dlock__etcd_tx_json,
 * which the dlock__etcd_req_* bodies below are), protobuf for gRPC
 * (etcd-grpc-codec.h).  One description, so that both transports ask the
 * store exactly the same thing. */

enum dlock__etcd_target {
  DLOCK__ETCD_CMP_CREATE = 1, /* create_revision == rev */
  DLOCK__ETCD_CMP_MOD,        /* mod_revision == rev */
  DLOCK__ETCD_CMP_VALUE       /* value == value */
};

/* One compare, always EQUAL: of KEY, or with END of every key in [KEY,
 * END). */
typedef struct dlock__etcd_cmp {
  enum dlock__etcd_target target;
  const char *key, *end, *value;
  size_t keylen, endlen, valuelen;
  int64_t rev;
} dlock__etcd_cmp;

enum dlock__etcd_sort {
  DLOCK__ETCD_SORT_NONE = 0,
  DLOCK__ETCD_SORT_CREATE_ASCEND,
  DLOCK__ETCD_SORT_CREATE_DESCEND
};

/* One request of a txn: a range (KEY, or [KEY, END)), a put of VALUE
 * under LEASE (0: none), a delete.  Range fields are 0/false when unset. */
typedef struct dlock__etcd_reqop {
  enum dlock__etcd_op op;
  const char *key, *end, *value;
  size_t keylen, endlen, valuelen;
  int64_t lease;
  int64_t limit, revision, max_create_revision;
  enum dlock__etcd_sort sort;
  int keys_only;
} dlock__etcd_reqop;

/* A txn: compares, then the requests on success and on failure.  One
 * allocation, its pointers into the strings the builder was given (which
 * must outlive it) and into its own copy of a queue range. */
typedef struct dlock__etcd_txreq {
  dlock__etcd_cmp *cmp;
  dlock__etcd_reqop *ok, *ko;
  size_t ncmp, nok, nko;
} dlock__etcd_txreq;

/* The builders: what the dlock__etcd_req_* of the same name below send,
 * malloc'd (free()), NULL when out of memory. */
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_try(const char *name, const char *key,
                                                    int64_t lease, const char *value);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_enqueue(const char *name, const char *key,
                                                        int64_t lease, const char *value);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_queue(const char *name, const char *key,
                                                      int64_t rev);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_release(const char *key, int64_t rev);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_release_value(const char *key,
                                                              const char *value);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_move(const char *key, int64_t rev,
                                                     int64_t lease, const char *value);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_check(const char *const *keys,
                                                      const int64_t *revs, size_t n);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_first(const char *name);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_delete_all(const char *name);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_page(const char *from, size_t fromlen,
                                                     const char *end, size_t endlen,
                                                     int64_t rev, int64_t limit);
DLOCK__HIDDEN dlock__etcd_txreq *dlock__etcd_tx_break(const char *name, const char *key,
                                                      int64_t create, int64_t mod);
/* The gateway's JSON body of T (NULL: out of memory, passed on). */
DLOCK__HIDDEN char *dlock__etcd_tx_json(const dlock__etcd_txreq *t);

/* The txns below all go to POST /v3/kv/txn.  NAME is a lock name, KEY a
 * holder key under it; "first" is the key under NAME "/" with the lowest
 * create_revision (range NAME/..end, sort CREATE ASCEND, limit 1). */

/* Take NAME only if nobody is queued: compare that every key in the range
 * NAME/ has create_revision 0 (true for an empty range);
 * success: put KEY=VALUE with LEASE;  failure: range first.
 * One round trip whether it is granted or not. */
DLOCK__HIDDEN char *dlock__etcd_req_try(const char *name, const char *key, int64_t lease,
                                        const char *value);
/* Join the queue of NAME: compare KEY's create_revision == 0;
 * success: put KEY=VALUE with LEASE, range first;
 * failure: range KEY, range first.
 * (etcd's concurrency.Mutex sends the same txn.) */
DLOCK__HIDDEN char *dlock__etcd_req_enqueue(const char *name, const char *key, int64_t lease,
                                            const char *value);
/* Where KEY (created at REV) stands in NAME's queue: compare KEY's
 * create_revision == REV; success: range first, range the predecessor
 * (range NAME/, max_create_revision REV-1, sort CREATE DESCEND, limit 1,
 * keys_only); failure: nothing (our key is gone). */
DLOCK__HIDDEN char *dlock__etcd_req_queue(const char *name, const char *key, int64_t rev);
/* Delete KEY only if its create_revision is still REV. */
DLOCK__HIDDEN char *dlock__etcd_req_release(const char *key, int64_t rev);
/* Put KEY=VALUE under LEASE only if its create_revision is still REV (a
 * put keeps create_revision, so the token and the queue place survive):
 * moves a held lock to another lease. */
DLOCK__HIDDEN char *dlock__etcd_req_move(const char *key, int64_t rev, int64_t lease,
                                         const char *value);
/* Are all N keys still there with these create_revisions: compare each;
 * success: nothing; failure: range each key (keys_only), in order. */
DLOCK__HIDDEN char *dlock__etcd_req_check(const char *const *keys, const int64_t *revs,
                                          size_t n);
/* Range first under NAME, with values (for inspect). */
DLOCK__HIDDEN char *dlock__etcd_req_first(const char *name);
/* Delete KEY only if its value is still VALUE (a key of our own lease
 * whose create answer was lost: the revision is unknown, the owner in the
 * value is the attempt's own). */
DLOCK__HIDDEN char *dlock__etcd_req_release_value(const char *key, const char *value);
/* Delete every key under NAME "/" (tests and tools). */
DLOCK__HIDDEN char *dlock__etcd_req_delete_all(const char *name);

/* One page of a listing: the keys in [FROM, END) (FROMLEN and ENDLEN
 * bytes) as they were at revision REV (0: now), at most LIMIT of them, in
 * key order, with values.  A txn holding only that range, so that the
 * answer decodes as every other txn's; the range's count says how many
 * keys the whole of [FROM, END) holds at REV. */
DLOCK__HIDDEN char *dlock__etcd_req_page(const char *from, size_t fromlen, const char *end,
                                         size_t endlen, int64_t rev, int64_t limit);
/* Break the holder KEY of NAME as it was read: compare KEY's
 * create_revision == CREATE and mod_revision == MOD; success: delete
 * KEY; failure: range first under NAME, with values (who holds it now). */
DLOCK__HIDDEN char *dlock__etcd_req_break(const char *name, const char *key, int64_t create,
                                          int64_t mod);

/* POST /v3/watch: {"create_request":{"key":KEY,"start_revision":"REV",
 * "filters":["NOPUT"]}}: only deletions of KEY, from REV on. */
DLOCK__HIDDEN char *dlock__etcd_req_watch(const char *key, int64_t start_rev);

/* ---- answers ---- */

typedef struct dlock__etcd_kv {
  char *key;    /* decoded, NUL-terminated; NULL when absent */
  size_t keylen;
  char *value;  /* decoded, NUL-terminated, "" when absent */
  size_t valuelen;
  int64_t create_revision, mod_revision, version, lease;
} dlock__etcd_kv;

typedef struct dlock__etcd_opres {
  enum dlock__etcd_op op;
  dlock__etcd_kv *kvs; /* range: up to nkvs entries */
  size_t nkvs;
  int64_t count;       /* range: keys matching (before limit) */
  int64_t deleted;     /* delete: keys deleted */
} dlock__etcd_opres;

typedef struct dlock__etcd_txn {
  int64_t revision;    /* header.revision: the store's revision after the txn */
  int succeeded;       /* 0 when absent */
  dlock__etcd_opres *res;
  size_t nres;
} dlock__etcd_txn;

/* Decode a txn answer (the 200 body).  0, or DLOCK_EBACKEND with a message
 * when it is not a txn answer.  Free with dlock__etcd_txn_free (also safe
 * after a failed parse). */
DLOCK__HIDDEN int dlock__etcd_parse_txn(const char *body, size_t len, dlock__etcd_txn *t);
DLOCK__HIDDEN void dlock__etcd_txn_free(dlock__etcd_txn *t);

/* Lease grant: *id and *ttl_s (the TTL the server chose, which may be
 * longer than asked).  0 or DLOCK_EBACKEND. */
DLOCK__HIDDEN int dlock__etcd_parse_grant(const char *body, size_t len, int64_t *id,
                                          int64_t *ttl_s);
/* Keepalive: the body is one line {"result":{...}} (or the object
 * itself).  *ttl_s = the remaining TTL, 0 when the lease is gone (TTL
 * absent, "0" or negative).  0, or DLOCK_EBACKEND; a line {"error":{...}}
 * gives the code dlock__etcd_error would. */
DLOCK__HIDDEN int dlock__etcd_parse_keepalive(const char *body, size_t len, int64_t *ttl_s,
                                              char *msg, size_t msglen);
/* Lease timetolive: *ttl_ms the time the lease has left, -1 when etcd no
 * longer has it (it answers TTL -1).  0, or DLOCK_EBACKEND when it is not
 * an answer or its TTL is malformed or past DLOCK__ETCD_TTL_MAX_S (*ttl_ms
 * then stays -1), or DLOCK_ENOMEM.  With KEYS (an empty set), the keys
 * the answer lists go into it, sorted; on failure it is left empty. */
DLOCK__HIDDEN int dlock__etcd_parse_timetolive(const char *body, size_t len, int64_t *ttl_ms,
                                               struct dlock__etcd_keys *keys);
/* Authenticate: a malloc'd copy of "token" into *token.  0 or DLOCK_EBACKEND. */
DLOCK__HIDDEN int dlock__etcd_parse_auth(const char *body, size_t len, char **token);

/* What an error answer asks of the client. */
enum dlock__etcd_fault {
  DLOCK__ETCD_F_NONE = 0,
  DLOCK__ETCD_F_REAUTH,      /* the auth token is invalid or expired: log in again, retry */
  DLOCK__ETCD_F_AUTH,        /* bad user/password, permission denied, auth not enabled */
  DLOCK__ETCD_F_LEASE_GONE,  /* "requested lease not found" */
  DLOCK__ETCD_F_RETRY,       /* leader changed, no leader, timeout, unavailable: another
                                endpoint or a later try may succeed */
  DLOCK__ETCD_F_INVALID,     /* the request itself was refused (too many ops, too large) */
  DLOCK__ETCD_F_OTHER
};
/* Classify a non-200 answer (HTTP status and body, which may be empty or
 * not JSON) or a stream's {"error":{...}} line.  Copies the server's
 * message (or a description of the status) into MSG. */
DLOCK__HIDDEN enum dlock__etcd_fault dlock__etcd_error(int http_status, const char *body,
                                                       size_t len, char *msg, size_t msglen);
/* Classify a gRPC status: CODE (grpc-status) and MSG (grpc-message), as
 * the gateway's answers carrying the same are. */
DLOCK__HIDDEN enum dlock__etcd_fault dlock__etcd_grpc_fault(int code, const char *msg);
/* Classify a watch's cancel_reason, Go's status text "rpc error: code =
 * NAME desc = ...". */
DLOCK__HIDDEN enum dlock__etcd_fault dlock__etcd_reason_fault(const char *reason);
/* Whether MSG, the text of an error answer, says that a read asked for a
 * revision compaction has removed ("mvcc: required revision has been
 * compacted"): the read can be made again at the current revision.  The
 * fault alone cannot say it: etcd answers OutOfRange, as for other
 * reasons. */
DLOCK__HIDDEN int dlock__etcd_compacted(const char *msg);
/* The DLOCK_E* code for a fault: REAUTH/AUTH -> EAUTH, LEASE_GONE -> ELOST,
 * RETRY -> ECONN, INVALID -> EINVAL, OTHER -> EBACKEND. */
DLOCK__HIDDEN int dlock__etcd_fault_code(enum dlock__etcd_fault f);

/* One line of a watch stream. */
typedef struct dlock__etcd_watch_ev {
  int created;              /* the watch is set up */
  int canceled;             /* the server ended the watch */
  int64_t compact_revision; /* canceled because START was compacted: the oldest
                               revision still there, else 0 */
  int64_t revision;         /* header.revision */
  int64_t watch_id;
  size_t deletes;           /* DELETE events in this line */
  int error;                /* the line was {"error":{...}}: see fault */
  enum dlock__etcd_fault fault;
  char msg[256];            /* cancel_reason or the error's message */
} dlock__etcd_watch_ev;

/* Decode one line (no trailing newline needed).  0 or DLOCK_EBACKEND. */
DLOCK__HIDDEN int dlock__etcd_parse_watch(const char *line, size_t len,
                                          dlock__etcd_watch_ev *ev);

/* A 64-bit integer from a JSON string ("123", "-5": digits and an
 * optional '-', nothing else, no overflow) or an exact JSON number (whole,
 * |n| < 2^53); absent or anything else gives DEF.  The parsers bound each
 * field further: a malformed or out-of-range revision, count or TTL makes
 * the whole answer DLOCK_EBACKEND. */
struct cJSON;
DLOCK__HIDDEN int64_t dlock__etcd_json_i64(const struct cJSON *obj, const char *name,
                                           int64_t def);

#endif
