/* Redis wire encoding for dlock: Lua scripts, key and value layout, and
 * decoding of hiredis reply trees.  Nothing here touches a socket, so all of
 * it can be tested by feeding raw RESP bytes to a redisReader.
 *
 * Layout in the store, for prefix P (default "dlock:") and key K:
 *   P "lock:{" K "}"    the lock; value "<owner>:<token>:<label>", PX ttl
 *   P "fence:{" K "}"   fencing counter, INCR'd by every acquisition
 *   P "lockch:{" K "}"  channel the release script publishes on
 * The hash tag keeps the three in one cluster slot, so one script can touch
 * them all.  The fixed parts differ in their first bytes, so no two keys of
 * any kinds collide.
 */
#ifndef DLOCK_REDIS_CODEC_H
#define DLOCK_REDIS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "core/backend-util.h"

#define DLOCK__REDIS_DEFAULT_PREFIX "dlock:"
/* How long a fence counter outlives its key's last acquisition (URL
 * fence_ttl=): long beside any clock step the server's host may take,
 * short beside "forever" for stores that see millions of names. */
#define DLOCK__REDIS_FENCE_TTL_MS (3600 * 1000)

/* Scripts.  Their KEYS and ARGV:
 *   ACQUIRE  KEYS lock, fence   ARGV owner, ttl_ms, label, fence_ttl_ms (0: keep)
 *            -> {1, token} or {0, pttl of the holder}
 *   RELEASE  KEYS lock, chan    ARGV owner ":"        -> 1, or 0 if not ours
 *   RENEW    KEYS lock...       ARGV owner ":", ttl_ms, ... (a pair per key)
 *            -> {1 renewed | 0 not ours, ...}, one per key
 *   INSPECT  KEYS lock, fence                         -> {value|nil, pttl, fence|nil}
 *   BREAK    KEYS lock, chan    ARGV owner|"", token|"0"
 *            -> {0} (nobody holds it), {1, value, pttl} (released),
 *               {2, value, pttl} (held by another than the one named)
 *   LIST     KEYS lock...                              -> {value|nil, pttl, ...}
 */
typedef enum dlock__redis_script_id {
  DLOCK__REDIS_ACQUIRE = 0,
  DLOCK__REDIS_RELEASE,
  DLOCK__REDIS_RENEW,
  DLOCK__REDIS_INSPECT,
  DLOCK__REDIS_BREAK,
  DLOCK__REDIS_LIST,
  DLOCK__REDIS_NSCRIPTS
} dlock__redis_script_id;

/* Lua text of script ID (NULL for an out-of-range id). */
DLOCK__HIDDEN const char *dlock__redis_script(dlock__redis_script_id id);
/* Short name of script ID, for messages. */
DLOCK__HIDDEN const char *dlock__redis_script_name(dlock__redis_script_id id);

typedef enum dlock__redis_keykind {
  DLOCK__REDIS_KEY_LOCK = 0,
  DLOCK__REDIS_KEY_FENCE,
  DLOCK__REDIS_KEY_CHAN
} dlock__redis_keykind;

/* PREFIX (NULL = the default) + kind + "{" KEY "}", KEY being KEYLEN
 * arbitrary bytes.  Returns a malloc'd, NUL-terminated buffer with its
 * length in *LEN, or NULL when out of memory. */
DLOCK__HIDDEN char *dlock__redis_key(const char *prefix, dlock__redis_keykind kind,
                                     const char *key, size_t keylen, size_t *len);

/* SCAN MATCH pattern for the lock keys whose key begins with the KEYLEN
 * bytes of KEY: PREFIX + "lock:{" + KEY, glob specials escaped, then "*".
 * malloc'd with its length in *LEN, or NULL when out of memory. */
DLOCK__HIDDEN char *dlock__redis_scan_pattern(const char *prefix, const char *key,
                                              size_t keylen, size_t *len);
/* The key of the lock key NAME (LEN bytes) made with PREFIX: 0 with *KEY
 * pointing into NAME, or -1 when NAME is no lock key of that prefix. */
DLOCK__HIDDEN int dlock__redis_lock_key_of(const char *prefix, const char *name, size_t len,
                                           const char **key, size_t *keylen);

/* A lock value split into its parts; the pointers point into the input. */
typedef struct dlock__redis_value_parts {
  const char *owner;
  size_t owner_len;
  uint64_t token;
  const char *label;
  size_t label_len;
} dlock__redis_value_parts;

/* Split V (LEN bytes).  The owner is everything before the first ':' and
 * must not be empty, the token is the decimal digits up to the next ':', and
 * the label is the rest (it may hold ':' or be empty).  0, or DLOCK_EINVAL
 * (no message: a foreign value is not an error for every caller). */
DLOCK__HIDDEN int dlock__redis_value_parse(const char *v, size_t len,
                                           dlock__redis_value_parts *out);

/* Strict unsigned decimal: digits only, no sign, no overflow.  0 or -1. */
DLOCK__HIDDEN int dlock__redis_parse_u64(const char *s, size_t len, uint64_t *out);

/* 1 if R is a NOSCRIPT error reply (the server's script cache lacks it). */
DLOCK__HIDDEN int dlock__redis_is_noscript(const redisReply *r);

/* For an error reply R: the dlock code it maps to, with the server's text in
 * the message ("redis: WHAT: <text>").  NOAUTH, WRONGPASS and NOPERM give
 * DLOCK_EAUTH, everything else DLOCK_EBACKEND. */
DLOCK__HIDDEN int dlock__redis_reply_error(const redisReply *r, const char *what);

/* Acquire script result. */
typedef struct dlock__redis_acquire_result {
  int acquired;   /* 1 = ours, 0 = busy */
  uint64_t token; /* when acquired: the new fencing token (>= 1) */
  int64_t pttl;   /* when busy: the holder's PTTL in ms, -1 if it has none */
} dlock__redis_acquire_result;

/* Every decoder returns 0 and fills *OUT, or a negative code with a message
 * (error replies as dlock__redis_reply_error, anything of the wrong shape as
 * DLOCK_EBACKEND "unexpected reply"); *OUT is untouched on failure. */
DLOCK__HIDDEN int dlock__redis_decode_acquire(const redisReply *r,
                                              dlock__redis_acquire_result *out);
/* Release: the integer 1 or 0. */
DLOCK__HIDDEN int dlock__redis_decode_flag(const redisReply *r, const char *what, int *out);
/* RENEW script result for N keys: FLAGS[i] 1 (renewed) or 0 (not ours). */
DLOCK__HIDDEN int dlock__redis_decode_renew(const redisReply *r, size_t n, unsigned char *flags);
/* Inspect script result into INFO (held, token, ttl_ms, owner, label).  The
 * token comes from the value when it parses, else from the fence counter
 * (the last holder's token); values written by something else show as held
 * with an empty owner and label. */
DLOCK__HIDDEN int dlock__redis_decode_inspect(const redisReply *r, dlock_info *info);
/* Entry I of a LIST script result into INFO (held 0: the key went before
 * the script read it). */
DLOCK__HIDDEN int dlock__redis_decode_list(const redisReply *r, size_t i, dlock_info *info);
/* BREAK script result: *STATUS 0, 1 or 2 as the script returns, and INFO
 * what the value said (held 0 with status 0). */
DLOCK__HIDDEN int dlock__redis_decode_break(const redisReply *r, int *status, dlock_info *info);
/* A "+OK" status (SELECT). */
DLOCK__HIDDEN int dlock__redis_decode_ok(const redisReply *r, const char *what);
/* Reply to AUTH: "+OK", else DLOCK_EAUTH whatever the error (the server's
 * text is kept unless it contains SECRET, which it should never do). */
DLOCK__HIDDEN int dlock__redis_decode_auth(const redisReply *r, const char *secret);
/* SCRIPT LOAD reply: 40 hex digits copied into SHA (with the NUL). */
DLOCK__HIDDEN int dlock__redis_decode_sha(const redisReply *r, char sha[41]);

/* The request of ARGC arguments (ARGV[i] being LENS[i] bytes) as RESP, the
 * form the server reads, into BUF when it fits in CAP bytes.  Returns its
 * length either way (no NUL is added), as snprintf does, so a caller may
 * try a buffer on its stack first.  hiredis formats the same bytes, but
 * growing its string argument by argument costs more than the request's
 * own round trip to a server next door. */
DLOCK__HIDDEN size_t dlock__redis_format(char *buf, size_t cap, int argc,
                                         const char *const *argv, const size_t *lens);

/* Pub/sub replies on a subscribed connection. */
typedef enum dlock__redis_push {
  DLOCK__REDIS_PUSH_MESSAGE = 1, /* ["message", channel, payload] */
  DLOCK__REDIS_PUSH_SUBSCRIBE,   /* ["subscribe", channel, count] */
  DLOCK__REDIS_PUSH_UNSUBSCRIBE  /* ["unsubscribe", channel|nil, count] */
} dlock__redis_push;

/* Classify R; *COUNT gets the subscription count of (un)subscribe replies.
 * A negative code for anything else (error replies mapped as above). */
DLOCK__HIDDEN int dlock__redis_decode_push(const redisReply *r, long long *count);

#endif
