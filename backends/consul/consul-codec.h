/* Consul backend: everything that does not touch a socket.  Key layout,
 * URL paths, the JSON bodies sent to the agent's HTTP API and the decoding
 * of its answers, so that unit tests reach them without an agent.
 *
 * Consul writes its indexes and flags as JSON numbers.  cJSON keeps
 * numbers as doubles: indexes (Raft indexes) stay far below 2^53 and read
 * exactly, and one at or above it, which a double may have rounded, is
 * read as absent; the lock flag of `consul lock` does not fit, so it is
 * written from its decimal text (cJSON_CreateRaw) and recognised by
 * comparing doubles, which round the same way on both sides.
 *
 * Keys and paths.  The agent takes any key in a /v1/txn body, but refuses
 * (400) a /v1/kv/ path whose decoded form holds a rune Go's
 * unicode.IsPrint rejects (go-cleanhttp's PrintablePathCheckHandler):
 * control bytes, C1 controls, every space but U+0020, format characters
 * (U+00AD, U+200B, U+200E/F, U+202E, U+FEFF...), line and paragraph
 * separators, private use, noncharacters and whatever is unassigned in
 * the Unicode version of the Go that built it, so the set moves from
 * release to release and can be switched off by the agent's config.
 * dlock therefore keeps the layout `consul lock` uses (the key itself,
 * unescaped but for '%' and '/') and never depends on a path for the
 * outcome of an operation: lock, unlock, reads and checks all go through
 * /v1/txn.  Only waiting needs a path (txn has no blocking queries): the
 * key's own path when the agent takes it, else the longest prefix of the
 * key made of printable ASCII, which every agent takes; a blocking query
 * there wakes on any change under that prefix, which costs a look at the
 * key and nothing else.  Escaping keys into a safe alphabet instead would
 * have moved every existing key with such a character (and, with a table
 * of our own, some that `consul lock` can reach) to a new name. */
#ifndef DLOCK_CONSUL_CODEC_H
#define DLOCK_CONSUL_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "dlock/consul.h"
#include "backend-util.h"

#define DLOCK__CONSUL_DEFAULT_PREFIX "dlock/"
/* The Flags value `consul lock` (api.LockFlagValue) gives its lock key;
 * it refuses to take a key that carries other flags. */
#define DLOCK__CONSUL_LOCK_FLAG 0x2ddccbc058a50c18ULL
/* Most operations Consul accepts in one /v1/txn. */
#define DLOCK__CONSUL_TXN_MAX 64

/* ---- keys and paths ---- */

/* The lock key of KEY: PREFIX, KEY with '%' and '/' written %25 and %2F,
 * then "/.lock", the key `consul lock PREFIX+KEY` uses.  Malloc'd, NULL
 * when out of memory.  A NULL PREFIX is the default. */
DLOCK__HIDDEN char *dlock__consul_lock_key(const char *prefix, const char *key, size_t keylen);
/* The caller's key whose lock key (see above) under PREFIX is LOCKKEY
 * (LEN bytes), into OUT (DLOCK_KEY_MAX + 1 bytes, NUL-terminated): its
 * length, or 0 when no key maps there (another name under the prefix:
 * another layout, someone else's data, a '%' escape dlock never writes),
 * so that what a listing reports is what an inspect or a break of it
 * reaches again. */
DLOCK__HIDDEN size_t dlock__consul_key_of(const char *prefix, const char *lockkey, size_t len,
                                          char *out);
/* "/v1/kv/" followed by KEY percent-encoded for a URL path (every byte
 * outside [A-Za-z0-9-_~] as %XX, '/' and '.' included, so that no path
 * cleaning can see segments), then QUERY ("" or "?a=b&c").  Malloc'd. */
DLOCK__HIDDEN char *dlock__consul_kv_path(const char *key, const char *query);
/* The length of KEY's longest prefix of printable ASCII (0x20-0x7e): a
 * path every agent takes. */
DLOCK__HIDDEN size_t dlock__consul_printable_prefix(const char *key);
/* A blocking query on KEY with PARAMS ("index=7&wait=100ms", or
 * "consistent"): with WHOLE its own /v1/kv/ path, else a key listing
 * (?keys&separator=/) of its printable prefix, whose index moves with any
 * change under that prefix.  Malloc'd. */
DLOCK__HIDDEN char *dlock__consul_watch_path(const char *key, int whole, const char *params);
/* The value stored in a lock key: "<owner>\n<label>".  Malloc'd. */
DLOCK__HIDDEN char *dlock__consul_value(const char *owner, const char *label);
/* Split a stored (already base64-decoded) value back; any other form
 * (`consul lock` writes an empty value) gives "" for both. */
DLOCK__HIDDEN void dlock__consul_value_split(const char *v, size_t n, char *owner,
                                             size_t ownerlen, char *label, size_t labellen);

/* ---- request bodies (malloc'd JSON text, NULL when out of memory) ---- */

/* PUT /v1/session/create: {"Name":NAME,"TTL":"<ttl_s>s","LockDelay":"<ms>ms",
 * "Behavior":"release", and the checks field set to an empty list so the
 * session depends on its TTL alone}. */
DLOCK__HIDDEN char *dlock__consul_req_session(const char *name, int64_t ttl_s,
                                              int64_t lock_delay_ms);
/* PUT /v1/txn: [lock KEY with SESSION, VALUE (base64) and the lock flag;
 * get KEY]. */
DLOCK__HIDDEN char *dlock__consul_req_lock(const char *key, const char *session,
                                           const char *value);
/* PUT /v1/txn: [unlock KEY held by SESSION, keeping the lock flag (an
 * unlock without it sets Flags to 0, and `consul lock` then refuses the
 * key as "not a lock")]. */
DLOCK__HIDDEN char *dlock__consul_req_unlock(const char *key, const char *session);
/* PUT /v1/txn: [check-session KEY SESSION, delete-cas KEY at INDEX (its
 * ModifyIndex, written from its decimal text)]: a release that fails for a
 * key that is gone or no longer SESSION's, and that removes the key, so that a store
 * that sees millions of names keeps none of those released, and that
 * happens only if nothing wrote KEY since INDEX was read: a release carried
 * out late (an agent without a leader holds a request for seconds, also
 * one its client gave up on) cannot undo a later lock of the same session.
 * NULL for INDEX 0. */
DLOCK__HIDDEN char *dlock__consul_req_release_at(const char *key, const char *session,
                                                uint64_t index);
/* PUT /v1/txn (read-only): [get-tree KEY].  "get" would fail the txn for
 * a missing key; the tree of KEY holds it and whatever starts with it,
 * and dlock__consul_txn_find picks KEY out.  A listing reads the tree of
 * a prefix with it. */
DLOCK__HIDDEN char *dlock__consul_req_get(const char *key);
/* PUT /v1/txn: [check-session of each KEY against SESSIONS[i]] (at most
 * DLOCK__CONSUL_TXN_MAX). */
DLOCK__HIDDEN char *dlock__consul_req_check(const char *const *keys,
                                            const char *const *sessions, size_t n);

/* ---- answers ---- */

typedef struct dlock__consul_kv {
  char *key;            /* malloc'd, NUL-terminated, NULL when absent */
  size_t keylen;
  char *value;          /* decoded, NUL-terminated, "" when null or absent */
  size_t valuelen;
  char session[DLOCK_CONSUL_SESSION_MAX]; /* "" when nobody holds it */
  uint64_t create_index, modify_index, lock_index;
  int lock_flag;        /* Flags is DLOCK__CONSUL_LOCK_FLAG */
  int has_flags;        /* Flags is not 0 */
} dlock__consul_kv;

DLOCK__HIDDEN void dlock__consul_kv_free(dlock__consul_kv *kv);

/* A /v1/txn answer.  On 200: RESULTS[i] is the KV of operation i (found=0
 * when that result carried none).  On 409: the failed operation indexes
 * (ERR_OP) and the server's text of the first one (MSG). */
typedef struct dlock__consul_txn {
  dlock__consul_kv *results;
  int *found;
  size_t nresults;
  int *err_op;
  size_t nerr;
  char msg[256];
} dlock__consul_txn;

/* Decode a txn answer with HTTP STATUS 200 or 409.  0, or DLOCK_EBACKEND
 * (DLOCK_ENOMEM) with a message.  Free with dlock__consul_txn_free, also
 * after a failed parse. */
DLOCK__HIDDEN int dlock__consul_parse_txn(int status, const char *body, size_t len,
                                          dlock__consul_txn *t);
DLOCK__HIDDEN void dlock__consul_txn_free(dlock__consul_txn *t);
/* The result of T whose key is exactly KEY, or NULL. */
DLOCK__HIDDEN const dlock__consul_kv *dlock__consul_txn_find(const dlock__consul_txn *t,
                                                             const char *key);

/* Which of M locks a tree read T (a txn of one get-tree) shows held:
 * OK[i] becomes 1 when T holds KEYS[i] locked by SESSIONS[i], else 0.
 * An entry T does not show is not proof of loss (an ACL policy hides
 * what the token may not read), only a reason to check it by key.  0, or
 * DLOCK_ENOMEM. */
DLOCK__HIDDEN int dlock__consul_tree_holds(const dlock__consul_txn *t, const char *const *keys,
                                           const char *const *sessions, size_t m, int *ok);

/* GET /v1/kv/<key>: the array of one entry.  0 with *kv filled, or
 * DLOCK_EBACKEND. */
DLOCK__HIDDEN int dlock__consul_parse_kv(const char *body, size_t len, dlock__consul_kv *kv);
/* Session create: {"ID":"..."} into ID (DLOCK_CONSUL_SESSION_MAX bytes). */
DLOCK__HIDDEN int dlock__consul_parse_session(const char *body, size_t len, char *id);
/* Session renew, 200: the array of one session; *ttl_ms its TTL (which may
 * be longer than asked), or -1 when absent.  0 or DLOCK_EBACKEND. */
DLOCK__HIDDEN int dlock__consul_parse_renew(const char *body, size_t len, int64_t *ttl_ms);
/* GET /v1/session/info/<id>, 200: 1 when it lists the session ID (an
 * array of one session with that ID), 0 when it lists none ([] or null),
 * DLOCK_EBACKEND for anything else. */
DLOCK__HIDDEN int dlock__consul_parse_session_info(const char *body, size_t len, const char *id);
/* GET /v1/session/list or /v1/session/info/<id>, 200: an array of
 * sessions (or null).  TTL_MS[i] becomes the TTL of the session listed
 * with ID IDS[i] (-1 when it shows none that reads), and stays as it was
 * for an ID the answer does not list.  IDS are N distinct strings in
 * strcmp order.  0, or DLOCK_EBACKEND for anything but such an array. */
DLOCK__HIDDEN int dlock__consul_parse_session_ttls(const char *body, size_t len,
                                                   const char *const *ids, size_t n,
                                                   int64_t *ttl_ms);
/* A Consul duration ("15s", "1m0s", "500ms", "1h2m3.5s") in ms, or -1. */
DLOCK__HIDDEN int64_t dlock__consul_duration_ms(const char *s);
/* One header line of an answer as libcurl hands it over (N bytes, not
 * NUL-terminated, with its CRLF).  0 when it is not X-Consul-Index; 1
 * with *index when it is and holds what Consul writes there (a decimal
 * uint64 from strconv.FormatUint, at least 1: the agent never sends 0);
 * DLOCK_EBACKEND when it is but holds anything else (a sign, junk, no
 * digits, 0, more than 2^64-1): the caller then has no index, which it
 * treats as an answer without one. */
DLOCK__HIDDEN int dlock__consul_header_index(const char *line, size_t n, uint64_t *index);
/* "true" / "false" answers: 1, 0, or -1 for anything else. */
DLOCK__HIDDEN int dlock__consul_parse_bool(const char *body, size_t len);

/* ---- waiting ---- */

/* Whether a waiter pauses before looking at a held key again, after a
 * blocking query on index SEEN answered GOT (0: no answer) in TOOK_NS.
 * The index decides, not the time taken: one that moved is a change to
 * look at now, however soon it came (a release 1 ms after the waiter
 * parked is the common case under contention).  Only an error, or the
 * same index back sooner than any real block, means the agent did not
 * block, and looking again at once would spin. */
DLOCK__HIDDEN int dlock__consul_pause_after_block(uint64_t seen, uint64_t got, int64_t took_ns);
/* Whether a waiter pauses after its lock was refused and the look that
 * followed found the key free, for the RUN-th time in a row (1, 2, ...).
 * The first time it is most likely a release that came between the two
 * requests, so the lock is tried again at once; found free again, the
 * key is inside a lock-delay, which no write will announce the end of. */
DLOCK__HIDDEN int dlock__consul_pause_when_free(unsigned run);
/* Whether a waiter woken at once by a moved index, whose lock was then
 * refused again, pauses before it blocks: when the key is as it was
 * before that query (held by WAS_HOLDER at WAS_AT then, HOLDER at AT
 * now), the index moved for something else (another key under a watched
 * prefix, a server whose index is not the key's own), and following
 * every such write at once would be a loop of requests. */
DLOCK__HIDDEN int dlock__consul_pause_unchanged(const char *was_holder, uint64_t was_at,
                                               const char *holder, uint64_t at);

#endif
