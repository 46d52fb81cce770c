/* Per-client counters and histograms, kept by the core for every backend. */
#ifndef DLOCK_METRICS_H
#define DLOCK_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "dlock/export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct dlock_client;

/* Bucket i counts samples <= 2^i microseconds (1us .. ~4.7h); the last
 * bucket also takes everything larger. */
#define DLOCK_HIST_BUCKETS 34

typedef struct dlock_histogram {
  uint64_t count;
  uint64_t sum_us;
  uint64_t buckets[DLOCK_HIST_BUCKETS];
} dlock_histogram;

typedef struct dlock_metrics {
  uint64_t acquire_ok;
  uint64_t acquire_busy;
  uint64_t acquire_timeout;
  uint64_t acquire_error;
  uint64_t release;
  uint64_t renew_ok;
  uint64_t renew_failed;
  uint64_t lost;
  uint64_t held_now;            /* locks currently held by the client */
  dlock_histogram acquire_wait; /* time inside dlock_acquire that succeeded */
  dlock_histogram hold_time;    /* from acquisition to final release */
  /* Transient failures (unreachable store, request timeout, failover) that
   * a blocking acquire retried before its deadline. */
  uint64_t acquire_retries;
  /* Give-backs in the background, started and still being retried now:
   * of attempts and releases whose answer never came (the store may have
   * granted or kept them), and on stores whose sessions keep a lock past
   * its ttl, of locks whose validity ran out unrenewed. */
  uint64_t giveback;
  uint64_t giveback_pending;
} dlock_metrics;

/* Snapshot of the client's metrics. */
DLOCK_EXTERN int dlock_metrics_get(const struct dlock_client *c, dlock_metrics *out);

/* Upper bound of bucket i in microseconds. */
DLOCK_EXTERN uint64_t dlock_histogram_bound_us(int i);

/* Estimate of the q-quantile (0..1) in microseconds from the buckets. */
DLOCK_EXTERN uint64_t dlock_histogram_quantile_us(const dlock_histogram *h, double q);

/* Prometheus text exposition of the client's metrics.  Writes at most len
 * bytes including the NUL; returns the length needed (like snprintf) or a
 * negative code. */
DLOCK_EXTERN int dlock_metrics_prometheus(const struct dlock_client *c, char *buf,
                                          size_t len);

#ifdef __cplusplus
}
#endif
#endif
