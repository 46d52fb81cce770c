/* The zk:// backend: its dlock_control() operations.  L is ignored;
 * every operation needs a non-NULL ARG. */
#ifndef DLOCK_ZK_H
#define DLOCK_ZK_H

/* uint64_t *: predecessor-watch notifications this client received. */
#define DLOCK_ZK_CTL_WATCH_EVENTS 0x7a01
/* clientid_t * (from <zookeeper/zookeeper.h>, which this header leaves to
 * the caller): id and password of the client's session for its default
 * ttl, connecting it first if needed. */
#define DLOCK_ZK_CTL_CLIENT_ID 0x7a02
/* int64_t *: negotiated timeout (ms) of that session. */
#define DLOCK_ZK_CTL_SESSION_TIMEOUT 0x7a03
/* struct dlock_zk_queue *: how many acquisitions are queued on a key
 * (holder included). */
#define DLOCK_ZK_CTL_QUEUE_LEN 0x7a04
/* uint64_t *: sync requests this client sent (renewals, and acquisitions
 * that waited and had to confirm their session). */
#define DLOCK_ZK_CTL_SYNCS 0x7a05

struct dlock_zk_queue {
  const char *key; /* in */
  int count;       /* out */
};

#endif
