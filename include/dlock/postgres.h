/* The postgres:// backend: its dlock_control() operations.  L is NULL for
 * client-level operations; every operation needs a non-NULL ARG. */
#ifndef DLOCK_POSTGRES_H
#define DLOCK_POSTGRES_H

#include <stdint.h>

/* struct dlock_pg_stats *: the client's counters so far. */
#define DLOCK_PG_CTL_STATS 0x7001

struct dlock_pg_stats {
  uint64_t statements; /* statements sent (a prepare not counted) */
  uint64_t prepares;   /* statements prepared: once per session and statement */
  uint64_t renewals;   /* renewal statements: advisory sessions' pings, lease UPDATEs */
  uint64_t unprepared; /* statements the server no longer had prepared (SQLSTATE 26000) */
  int named;           /* 1 while the client sends named prepared statements */
};

#endif
