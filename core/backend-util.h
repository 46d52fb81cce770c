/* What the core lends the backends of this tree beyond dlock/backend.h:
 * the clock as the core keeps it, randomness, key checks and escaping, and
 * scrubbing a store library's messages of the URL's secrets.  Backends
 * include this, never core/internal.h, so they cannot reach the core's
 * client and lock state.  Not installed: a backend outside the tree has
 * dlock/backend.h alone. */
#ifndef DLOCK_BACKEND_UTIL_H
#define DLOCK_BACKEND_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "dlock/backend.h"

#define DLOCK__HIDDEN __attribute__((visibility("hidden")))

/* ---- util.c ---- */

DLOCK__HIDDEN int64_t dlock__now_ns(void);
/* NBYTES random bytes from getrandom(2) as 2*NBYTES hex digits + NUL. */
DLOCK__HIDDEN int dlock__random_hex(char *out, size_t nbytes);
/* Uniform in [0, n). */
DLOCK__HIDDEN uint64_t dlock__random_below(uint64_t n);
/* 0, or DLOCK_EINVAL with a message for an empty, oversized or non-UTF-8 key. */
DLOCK__HIDDEN int dlock__key_check(const char *key, size_t *len);
/* PREFIX, KEY with '%' and '/' written %25 and %2F, then SUFFIX: a name in
 * a store whose keys are paths, where no key's name may be a prefix of
 * another's ("a" must not own "a/b").  Keys without either byte map to
 * themselves.  Malloc'd, NULL when out of memory. */
DLOCK__HIDDEN char *dlock__escape_slash(const char *prefix, const char *key, size_t keylen,
                                        const char *suffix);
/* Absolute CLOCK_MONOTONIC timespec for a dlock__now_ns() value (which is
 * on CLOCK_BOOTTIME): the same distance from now. */
struct timespec;
DLOCK__HIDDEN void dlock__ns_to_timespec(int64_t ns, struct timespec *ts);
/* pthread_cond_t that waits on CLOCK_MONOTONIC. */
DLOCK__HIDDEN int dlock__cond_init(pthread_cond_t *cv);

/* ---- errors.c, url.c ---- */

DLOCK__HIDDEN void dlock__clear_err(void);
/* Replace every secret of U (dlock__url_secret) in the calling thread's
 * message by "***", and a secret's beginning where the message was cut
 * short.  For messages that quote what a store library said.  Costs one
 * test when U has no secrets. */
DLOCK__HIDDEN void dlock__err_scrub(const dlock_url *u);
/* The I-th string a message about U must not show (the password and the
 * values of secret parameters, as written, decoded and re-encoded),
 * longest first; NULL past the last. */
DLOCK__HIDDEN const char *dlock__url_secret(const dlock_url *u, size_t i);

#endif
