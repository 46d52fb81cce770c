/* Counters and log2 histograms, updated lock-free from any thread. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static int bucket_of(uint64_t us) {
  int b = 0;
  while (b < DLOCK_HIST_BUCKETS - 1 && us > (1ull << b))
    b++;
  return b;
}

uint64_t dlock_histogram_bound_us(int i) {
  if (i < 0)
    return 0;
  if (i >= DLOCK_HIST_BUCKETS - 1)
    return UINT64_MAX;
  return 1ull << i;
}

void dlock__hist_add(dlock__hist *h, int64_t ns) {
  uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->buckets[bucket_of(us)], 1, memory_order_relaxed);
}

void dlock__metrics_acquire_result(dlock__metrics *m, int rc) {
  _Atomic uint64_t *ctr = rc == 0                   ? &m->acquire_ok
                          : rc == DLOCK_EBUSY      ? &m->acquire_busy
                          : rc == DLOCK_ETIMEDOUT ? &m->acquire_timeout
                                                   : &m->acquire_error;
  atomic_fetch_add_explicit(ctr, 1, memory_order_relaxed);
}

static void hist_copy(const dlock__hist *src, dlock_histogram *dst) {
  dst->count = atomic_load(&src->count);
  dst->sum_us = atomic_load(&src->sum_us);
  for (int i = 0; i < DLOCK_HIST_BUCKETS; i++)
    dst->buckets[i] = atomic_load(&src->buckets[i]);
}

int dlock_metrics_get(const dlock_client *c, dlock_metrics *out) {
  if (!c || !out)
    return dlock_seterr(DLOCK_EINVAL, "dlock_metrics_get: NULL argument");
  const dlock__metrics *m = &c->metrics;
  out->acquire_ok = atomic_load(&m->acquire_ok);
  out->acquire_busy = atomic_load(&m->acquire_busy);
  out->acquire_timeout = atomic_load(&m->acquire_timeout);
  out->acquire_error = atomic_load(&m->acquire_error);
  out->release = atomic_load(&m->release);
  out->renew_ok = atomic_load(&m->renew_ok);
  out->renew_failed = atomic_load(&m->renew_failed);
  out->lost = atomic_load(&m->lost);
  out->held_now = atomic_load(&m->held_now);
  out->acquire_retries = atomic_load(&m->acquire_retries);
  out->giveback = atomic_load(&m->giveback);
  out->giveback_pending = atomic_load(&m->giveback_pending);
  hist_copy(&m->acquire_wait, &out->acquire_wait);
  hist_copy(&m->hold_time, &out->hold_time);
  return 0;
}

uint64_t dlock_histogram_quantile_us(const dlock_histogram *h, double q) {
  if (!h || h->count == 0)
    return 0;
  if (q < 0)
    q = 0;
  if (q > 1)
    q = 1;
  uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (int i = 0; i < DLOCK_HIST_BUCKETS; i++) {
    seen += h->buckets[i];
    if (seen >= rank)
      return dlock_histogram_bound_us(i);
  }
  return dlock_histogram_bound_us(DLOCK_HIST_BUCKETS - 1);
}

struct sbuf {
  char *buf;
  size_t len, used;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt,
                                                             ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = b->used < b->len ? b->len - b->used : 0;
  int n = vsnprintf(room ? b->buf + b->used : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0)
    b->used += (size_t)n;
}

static void prom_hist(struct sbuf *b, const char *name, const char *help,
                      const dlock_histogram *h) {
  sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  uint64_t cum = 0;
  for (int i = 0; i < DLOCK_HIST_BUCKETS - 1; i++) {
    cum += h->buckets[i];
    sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name,
              (double)dlock_histogram_bound_us(i) / 1e6, (unsigned long long)cum);
  }
  sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
  sb_printf(b, "%s_sum %g\n%s_count %llu\n", name, (double)h->sum_us / 1e6, name,
            (unsigned long long)h->count);
}

int dlock_metrics_prometheus(const dlock_client *c, char *buf, size_t len) {
  dlock_metrics m;
  if (!c || (!buf && len))
    return dlock_seterr(DLOCK_EINVAL, "dlock_metrics_prometheus: NULL argument");
  dlock_metrics_get(c, &m);
  struct sbuf b = {buf, len, 0};
  if (len)
    buf[0] = '\0';
  sb_printf(&b, "# HELP dlock_acquire_total Acquisition attempts by result.\n"
                "# TYPE dlock_acquire_total counter\n");
  sb_printf(&b, "dlock_acquire_total{result=\"ok\"} %llu\n", (unsigned long long)m.acquire_ok);
  sb_printf(&b, "dlock_acquire_total{result=\"busy\"} %llu\n",
            (unsigned long long)m.acquire_busy);
  sb_printf(&b, "dlock_acquire_total{result=\"timeout\"} %llu\n",
            (unsigned long long)m.acquire_timeout);
  sb_printf(&b, "dlock_acquire_total{result=\"error\"} %llu\n",
            (unsigned long long)m.acquire_error);
  sb_printf(&b, "# HELP dlock_acquire_retries_total Transient failures a blocking acquire "
                "retried.\n# TYPE dlock_acquire_retries_total counter\n"
                "dlock_acquire_retries_total %llu\n",
            (unsigned long long)m.acquire_retries);
  sb_printf(&b, "# HELP dlock_giveback_total Locks given back in the background: "
                "unanswered attempts and releases, and expired locks a session kept.\n"
                "# TYPE dlock_giveback_total counter\ndlock_giveback_total %llu\n",
            (unsigned long long)m.giveback);
  sb_printf(&b, "# HELP dlock_giveback_pending Give-backs not yet done.\n"
                "# TYPE dlock_giveback_pending gauge\ndlock_giveback_pending %llu\n",
            (unsigned long long)m.giveback_pending);
  sb_printf(&b, "# TYPE dlock_release_total counter\ndlock_release_total %llu\n",
            (unsigned long long)m.release);
  sb_printf(&b, "# TYPE dlock_renew_total counter\n");
  sb_printf(&b, "dlock_renew_total{result=\"ok\"} %llu\n", (unsigned long long)m.renew_ok);
  sb_printf(&b, "dlock_renew_total{result=\"failed\"} %llu\n",
            (unsigned long long)m.renew_failed);
  sb_printf(&b, "# TYPE dlock_lost_total counter\ndlock_lost_total %llu\n",
            (unsigned long long)m.lost);
  sb_printf(&b, "# TYPE dlock_held gauge\ndlock_held %llu\n", (unsigned long long)m.held_now);
  prom_hist(&b, "dlock_acquire_wait_seconds", "Time spent in successful acquisitions.",
            &m.acquire_wait);
  prom_hist(&b, "dlock_hold_seconds", "Time from acquisition to final release.",
            &m.hold_time);
  return b.used > 0x7fffffff ? 0x7fffffff : (int)b.used;
}
