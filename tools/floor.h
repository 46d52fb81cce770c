/* What the raw floor tools (zk-floor, redis-floor, etcd-floor,
 * consul-floor) share: the clock they time pairs with, and the
 * percentiles they report, by nearest rank as dlock bench does. */
#ifndef DLOCK_TOOLS_FLOOR_H
#define DLOCK_TOOLS_FLOOR_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* For qsort over doubles. */
static inline int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The Q-quantile of the N sorted values V. */
static inline double pct(const double *v, size_t n, double q) {
  size_t r = (size_t)(q * (double)n + 0.999999);
  if (r == 0)
    r = 1;
  return v[r > n ? n - 1 : r - 1];
}

#endif
