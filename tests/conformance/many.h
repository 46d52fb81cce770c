/* The shape of the cases in which a store checks many locks at once by one
 * bulk read (etcd's lease keys, Consul's tree): N locks of one
 * client, two of them lost from outside, one of those then taken by a
 * second client.  Both losses must be reported within a ttl, and only
 * those two; the store's counters show the bulk read did the checking. */
#ifndef DLOCK_CONF_MANY_H
#define DLOCK_CONF_MANY_H

#include <stddef.h>
#include <stdint.h>

#include "dlock/dlock.h"

struct conf_many {
  const char *url;
  int n; /* more than 230 */
  int64_t ttl_ms;
  /* The name of lock I (before conf_key). */
  void (*name)(int i, char *buf, size_t len);
  /* Delete lock I's key behind its holder's back (KEY: its conf_key'd name). */
  void (*lose)(const char *key);
  /* C's bulk reads and check txns so far, and what a bulk read is called. */
  void (*counts)(dlock_client *c, uint64_t *bulk, uint64_t *txns);
  const char *bulk_what;
  /* The txns allowed for the two lost locks, given the bulk reads made. */
  uint64_t (*max_txns)(uint64_t bulk);
};

void conf_many_two_lost(const struct conf_many *m);

#endif
