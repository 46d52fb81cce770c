/* The consul:// backend: its dlock_control() operations.  L is NULL for
 * client-level operations; every operation needs a non-NULL ARG. */
#ifndef DLOCK_CONSUL_H
#define DLOCK_CONSUL_H

#include <stdint.h>

/* char[DLOCK_CONSUL_SESSION_MAX]: the ID of the session under the held
 * lock L (DLOCK_EINVAL if L holds none), or with L NULL of the client's
 * session for its default ttl, created first if it has none yet. */
#define DLOCK_CONSUL_CTL_SESSION 0x6301
/* struct dlock_consul_stats *: the client's counters so far. */
#define DLOCK_CONSUL_CTL_STATS 0x6302
/* int64_t *: the lock-delay (ms) the client's sessions ask for. */
#define DLOCK_CONSUL_CTL_LOCK_DELAY 0x6303
/* struct dlock_consul_checks *: how the client's renewals checked its
 * keys so far. */
#define DLOCK_CONSUL_CTL_CHECKS 0x6304

#define DLOCK_CONSUL_SESSION_MAX 64

struct dlock_consul_stats {
  uint64_t renewals;     /* session renew requests sent */
  uint64_t locks;        /* lock txns sent */
  uint64_t sessions;     /* sessions created */
  uint64_t blocking;     /* blocking queries sent */
  uint64_t lock_delays;  /* acquisitions that found a lock-delay in force */
  uint64_t retries;      /* requests retried after a 5xx or a transport error */
};

struct dlock_consul_checks {
  uint64_t txns;  /* check txns sent, one per at most 64 keys */
  uint64_t trees; /* reads of the prefix's tree, one for all the keys of a pass */
};

#endif
