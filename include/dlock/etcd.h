/* The etcd:// backend: its dlock_control() operations.  L is NULL for
 * client-level operations; every operation needs a non-NULL ARG. */
#ifndef DLOCK_ETCD_H
#define DLOCK_ETCD_H

#include <stdint.h>

/* struct dlock_etcd_stats *: the client's counters so far. */
#define DLOCK_ETCD_CTL_STATS 0x6501
/* char[DLOCK_ETCD_ENDPOINT_MAX]: the "host:port" the client talks to now
 * (it moves to the URL's next host when one fails). */
#define DLOCK_ETCD_CTL_ENDPOINT 0x6502
/* int64_t *: the lease under the held lock L; DLOCK_EINVAL without one. */
#define DLOCK_ETCD_CTL_LEASE 0x6503
/* int *: the client's next N watches start at revision 1, which a
 * compaction has removed, so that tests see how a compacted watch is
 * handled. */
#define DLOCK_ETCD_CTL_STALE_WATCH 0x6504
/* int *: keys per range request of dlock_list, 0 for the default (500),
 * so that tests reach a listing of several pages; DLOCK_EINVAL below 0. */
#define DLOCK_ETCD_CTL_LIST_PAGE 0x6505
/* struct dlock_etcd_checks *: how the client's renewals checked its keys
 * so far. */
#define DLOCK_ETCD_CTL_CHECKS 0x6506

#define DLOCK_ETCD_ENDPOINT_MAX 300

struct dlock_etcd_stats {
  uint64_t keepalives;      /* lease keepalive requests sent */
  uint64_t grants;          /* leases granted */
  uint64_t watches;         /* watch streams opened */
  uint64_t watch_compacted; /* of which canceled because their revision was compacted */
  uint64_t failovers;       /* moves to the next endpoint */
  uint64_t logins;          /* authentications, the first included */
};

struct dlock_etcd_checks {
  uint64_t txns;        /* check txns sent, one per at most 100 keys */
  uint64_t lease_reads; /* reads of a lease's keys, one for all its locks in a pass */
};

#endif
