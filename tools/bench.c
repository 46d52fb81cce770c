/* dlock bench: latency and throughput of a lock store through the library.
 *
 * Three phases, each run for --seconds:
 *   uncontended  T threads, each on its own keys, try_acquire + release pairs
 *   handoff      two clients on one key, taking strict turns; time from the
 *                holder starting its release to the waiter's acquire
 *                returning
 *   renew        one client holding H locks, dlock_renew on each in turn
 * and one that runs only when --only names it:
 *   hold         one client acquires H locks one after another, auto-renew
 *                on, and holds them for --seconds: the time the acquires
 *                took and the client's resident memory per held lock.  It
 *                says on stderr when the hold starts and ends, so that a
 *                script can count what the store receives meanwhile.
 * Percentiles are exact (nearest rank over every sample) unless a phase
 * produces more than SAMPLE_LIMIT samples; then a uniform reservoir sample is
 * kept and the output says so.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "dlock/dlock.h"
#include "rss.h"

enum { PH_UNCONTENDED = 1, PH_HANDOFF = 2, PH_RENEW = 4, PH_HOLD = 8, PH_ALL = 7 };
#define N_PHASES 4

/* Bounds memory (4 bytes a sample, twice while sorting). */
#ifndef SAMPLE_LIMIT
#define SAMPLE_LIMIT ((size_t)16 << 20)
#endif
/* How long a holder keeps the lock once the other thread announced it is
 * about to wait: long enough for the waiter to be parked at the store, so
 * the figure is a real handoff and not an uncontended acquire. */
#define HANDOFF_HOLD_NS 1000000
#define HANDOFF_KEY "bench/handoff"

struct samples {
  uint32_t *v; /* nanoseconds, clamped to ~4.29 s; max_ns keeps the true max */
  size_t n, cap, limit;
  uint64_t seen;
  uint64_t rng;
  int64_t max_ns;
  int sampled; /* reservoir in use: percentiles are estimates */
};

struct result {
  int ran;
  uint64_t ops, busy;
  double secs;
  size_t samples;
  int exact;
  double p50, p99, p999, max; /* microseconds */
  /* hold */
  double acquire_s;
  long rss_before_kb, rss_after_kb;
};

struct bench {
  const char *url;
  long threads, keys, locks;
  int64_t dur_ns;
  int json, shared;
  unsigned phases;

  atomic_int abort;
  pthread_mutex_t err_mu;
  int err_rc;
  char err_msg[768];

  /* start gate */
  pthread_mutex_t gate_mu;
  pthread_cond_t gate_cv;
  int go;
  int64_t start_ns;
};

/* Record the first failure and stop every worker.  Called on the failing
 * thread because the library keeps its message per thread. */
static void bench_error(struct bench *b, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bench_error(struct bench *b, int rc, const char *fmt, ...) {
  pthread_mutex_lock(&b->err_mu);
  if (b->err_rc == 0) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *m = dlock_client_errmsg(NULL);
    snprintf(b->err_msg, sizeof b->err_msg, "%s: %s", what, *m ? m : dlock_strerror(rc));
    b->err_rc = rc;
  }
  pthread_mutex_unlock(&b->err_mu);
  atomic_store(&b->abort, 1);
}

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static void samples_init(struct samples *s, size_t limit, uint64_t seed) {
  memset(s, 0, sizeof *s);
  s->limit = limit ? limit : 1;
  s->rng = seed * 0x9e3779b97f4a7c15ull + 1;
}

/* Called between timed operations, never inside one. */
static void samples_add(struct samples *s, int64_t ns) {
  s->seen++;
  if (ns > s->max_ns)
    s->max_ns = ns;
  uint32_t x = ns <= 0 ? 0 : ns >= (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
  if (s->n == s->cap && s->cap < s->limit) {
    size_t nc = s->cap ? s->cap * 2 : 4096;
    if (nc > s->limit)
      nc = s->limit;
    uint32_t *nv = realloc(s->v, nc * sizeof *nv);
    if (nv) {
      s->v = nv;
      s->cap = nc;
    } else {
      s->limit = s->cap; /* out of memory: keep what we have, sample the rest */
    }
  }
  if (s->n < s->cap) {
    s->v[s->n++] = x;
    return;
  }
  s->sampled = 1;
  if (s->n == 0)
    return;
  uint64_t j = xorshift(&s->rng) % s->seen;
  if (j < s->n)
    s->v[j] = x;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

/* LSD radix sort: tens of millions of samples sort in well under a second,
 * where qsort takes several.  Falls back to qsort without scratch memory. */
static void sort_u32(uint32_t *v, size_t n) {
  uint32_t *tmp = n ? malloc(n * sizeof *tmp) : NULL;
  if (!tmp) {
    qsort(v, n, sizeof *v, cmp_u32);
    return;
  }
  uint32_t *src = v, *dst = tmp;
  for (int shift = 0; shift < 32; shift += 8) {
    size_t cnt[257] = {0};
    for (size_t i = 0; i < n; i++)
      cnt[((src[i] >> shift) & 0xff) + 1]++;
    int skip = 0;
    for (int k = 1; k <= 256; k++)
      if (cnt[k] == n)
        skip = 1; /* every sample has the same digit here */
    if (skip)
      continue;
    for (int k = 0; k < 256; k++)
      cnt[k + 1] += cnt[k];
    for (size_t i = 0; i < n; i++)
      dst[cnt[(src[i] >> shift) & 0xff]++] = src[i];
    uint32_t *t = src;
    src = dst;
    dst = t;
  }
  if (src != v)
    memcpy(v, src, n * sizeof *v);
  free(tmp);
}

/* Nearest rank: the smallest sample with at least q of all samples <= it. */
static double quantile_us(const uint32_t *sorted, size_t n, double q) {
  if (n == 0)
    return 0;
  double rank = q * (double)n;
  size_t r = (size_t)rank;
  if ((double)r < rank)
    r++;
  if (r == 0)
    r = 1;
  if (r > n)
    r = n;
  return sorted[r - 1] / 1000.0;
}

/* Fill R's figures from the samples of K collectors, freeing them. */
static void finish_result(struct result *r, struct samples *parts, size_t k) {
  size_t total = 0;
  int64_t max_ns = 0;
  int sampled = 0;
  for (size_t i = 0; i < k; i++) {
    total += parts[i].n;
    if (parts[i].max_ns > max_ns)
      max_ns = parts[i].max_ns;
    sampled |= parts[i].sampled;
  }
  uint32_t *all = total ? malloc(total * sizeof *all) : NULL;
  size_t n = 0;
  if (all)
    for (size_t i = 0; i < k; i++) {
      memcpy(all + n, parts[i].v, parts[i].n * sizeof *all);
      n += parts[i].n;
    }
  for (size_t i = 0; i < k; i++) {
    free(parts[i].v);
    parts[i].v = NULL;
  }
  if (!all && total) {
    fprintf(stderr, "dlock: out of memory sorting %zu samples\n", total);
    n = 0;
    sampled = 1;
  }
  sort_u32(all, n);
  r->ran = 1;
  r->samples = n;
  r->exact = !sampled;
  r->p50 = quantile_us(all, n, 0.50);
  r->p99 = quantile_us(all, n, 0.99);
  r->p999 = quantile_us(all, n, 0.999);
  r->max = (double)max_ns / 1000.0;
  free(all);
}

static int open_one(struct bench *b, dlock_client **c) {
  int rc = dlock_open(b->url, c);
  if (rc < 0) {
    return cli_fail(rc, NULL, dlock_client_errmsg(NULL));
  }
  return 0;
}

static void gate_wait(struct bench *b) {
  pthread_mutex_lock(&b->gate_mu);
  while (!b->go)
    pthread_cond_wait(&b->gate_cv, &b->gate_mu);
  pthread_mutex_unlock(&b->gate_mu);
}

static void gate_open(struct bench *b) {
  pthread_mutex_lock(&b->gate_mu);
  b->start_ns = cli_now_ns();
  b->go = 1;
  pthread_cond_broadcast(&b->gate_cv);
  pthread_mutex_unlock(&b->gate_mu);
}

/* ---- uncontended ---- */

struct uworker {
  struct bench *b;
  long idx;
  dlock_client *c;
  struct samples s;
  uint64_t ops, busy;
  int64_t end_ns;
};

static void *uncontended_main(void *arg) {
  struct uworker *w = arg;
  struct bench *b = w->b;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.wait_ms = 0;
  o.auto_renew = 0;
  char key[64];
  gate_wait(b);
  int64_t end = b->start_ns + b->dur_ns;
  for (long i = 0; !atomic_load_explicit(&b->abort, memory_order_relaxed); i++) {
    snprintf(key, sizeof key, "bench/%ld/%ld", w->idx, i % b->keys);
    dlock_lock *l;
    int64_t t0 = cli_now_ns();
    int rc = dlock_try_acquire(w->c, key, &o, &l);
    if (rc == 0)
      rc = dlock_release(l);
    int64_t t1 = cli_now_ns();
    if (rc == DLOCK_EBUSY) {
      w->busy++; /* a leftover from an earlier run, still within its ttl */
    } else if (rc < 0) {
      bench_error(b, rc, "uncontended: '%s'", key);
      break;
    } else {
      w->ops++;
      samples_add(&w->s, t1 - t0);
    }
    if (t1 >= end)
      break;
  }
  w->end_ns = cli_now_ns();
  return NULL;
}

static int phase_uncontended(struct bench *b, struct result *r) {
  long n = b->threads;
  int code = 0;
  struct uworker *w = calloc((size_t)n, sizeof *w);
  pthread_t *th = calloc((size_t)n, sizeof *th);
  struct samples *parts = calloc((size_t)n, sizeof *parts);
  long started = 0;
  if (!w || !th || !parts) {
    fprintf(stderr, "dlock: out of memory\n");
    code = CLI_EXIT_INTERNAL;
    goto out;
  }
  /* Clients are opened before the clock starts: connecting is not what
   * is measured. */
  for (long i = 0; i < n; i++) {
    w[i].b = b;
    w[i].idx = i;
    samples_init(&w[i].s, SAMPLE_LIMIT / (size_t)n, (uint64_t)i + 1);
    if (b->shared && i > 0)
      w[i].c = w[0].c;
    else if ((code = open_one(b, &w[i].c)) != 0)
      goto out;
  }
  b->go = 0;
  for (; started < n; started++) {
    int err = pthread_create(&th[started], NULL, uncontended_main, &w[started]);
    if (err != 0) {
      fprintf(stderr, "dlock: cannot start thread %ld: %s\n", started, strerror(err));
      atomic_store(&b->abort, 1);
      code = CLI_EXIT_INTERNAL;
      break;
    }
  }
  gate_open(b);
  int64_t last = b->start_ns;
  for (long i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    if (w[i].end_ns > last)
      last = w[i].end_ns;
    r->ops += w[i].ops;
    r->busy += w[i].busy;
    parts[i] = w[i].s;
    w[i].s.v = NULL;
  }
  r->secs = (double)(last - b->start_ns) / 1e9;
  finish_result(r, parts, (size_t)started);
out:
  if (w)
    for (long i = 0; i < n; i++) {
      if (!(b->shared && i > 0))
        dlock_close(w[i].c);
      free(w[i].s.v);
    }
  free(w);
  free(th);
  free(parts);
  return code;
}

/* ---- handoff ---- */

struct handoff {
  struct bench *b;
  dlock_client *c[2];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int waiting[2];  /* about to call, or inside, dlock_acquire */
  int finished[2];
  int stop;
  int last;        /* who held the key last: -1 before anyone has */
  int64_t rel_ns;  /* when the last holder started its release */
  atomic_int inside;
  struct samples s;
  uint64_t ops;
};

struct hworker {
  struct handoff *h;
  int idx;
};

static void handoff_stop(struct handoff *h) {
  pthread_mutex_lock(&h->mu);
  h->stop = 1;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

static void *handoff_main(void *arg) {
  struct hworker *w = arg;
  struct handoff *h = w->h;
  struct bench *b = h->b;
  int me = w->idx, other = 1 - w->idx;
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.auto_renew = 0;
  /* Bounded so that a store that never wakes waiters is reported instead
   * of hanging the benchmark. */
  o.wait_ms = 30000;
  gate_wait(b);
  int64_t end = b->start_ns + b->dur_ns;
  for (;;) {
    pthread_mutex_lock(&h->mu);
    /* Strict turns: a releaser that asked again at once could take the
     * key straight back while the waiter is still waking, and a handoff
     * would be timed that never happened. */
    while (h->last == me && !h->stop && !h->finished[other])
      pthread_cond_wait(&h->cv, &h->mu);
    if (h->stop || h->finished[other]) {
      pthread_mutex_unlock(&h->mu);
      break;
    }
    h->waiting[me] = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);

    dlock_lock *l;
    int rc = dlock_acquire(h->c[me], HANDOFF_KEY, &o, &l);
    int64_t t = cli_now_ns();
    if (rc < 0) {
      bench_error(b, rc, "handoff: client %d acquiring '%s'", me, HANDOFF_KEY);
      handoff_stop(h);
      break;
    }
    if (atomic_fetch_add(&h->inside, 1) != 0) {
      pthread_mutex_lock(&b->err_mu);
      if (b->err_rc == 0) {
        b->err_rc = DLOCK_EBACKEND;
        snprintf(b->err_msg, sizeof b->err_msg,
                 "handoff: two clients held '%s' at once; this store does not exclude "
                 "one client from another",
                 HANDOFF_KEY);
      }
      pthread_mutex_unlock(&b->err_mu);
      atomic_store(&b->abort, 1);
      atomic_fetch_sub(&h->inside, 1);
      dlock_release(l);
      handoff_stop(h);
      break;
    }
    pthread_mutex_lock(&h->mu);
    h->waiting[me] = 0;
    if (h->last == other) { /* -1: the first acquisition, nobody handed it over */
      samples_add(&h->s, t - h->rel_ns);
      h->ops++;
    }
    h->last = me;
    pthread_cond_broadcast(&h->cv);
    while (!h->waiting[other] && !h->stop && !h->finished[other])
      pthread_cond_wait(&h->cv, &h->mu);
    int last = h->stop || h->finished[other] || cli_now_ns() >= end;
    pthread_mutex_unlock(&h->mu);

    if (!last) {
      struct timespec ts = {0, HANDOFF_HOLD_NS};
      while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
      }
    }
    atomic_fetch_sub(&h->inside, 1);
    pthread_mutex_lock(&h->mu);
    h->rel_ns = cli_now_ns();
    if (last)
      h->stop = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    rc = dlock_release(l);
    if (rc < 0) {
      bench_error(b, rc, "handoff: client %d releasing '%s'", me, HANDOFF_KEY);
      handoff_stop(h);
      break;
    }
    if (last)
      break;
  }
  pthread_mutex_lock(&h->mu);
  h->finished[me] = 1;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static int phase_handoff(struct bench *b, struct result *r) {
  struct handoff h;
  memset(&h, 0, sizeof h);
  h.b = b;
  h.last = -1;
  samples_init(&h.s, SAMPLE_LIMIT, 7);
  int code = open_one(b, &h.c[0]);
  if (code == 0)
    code = open_one(b, &h.c[1]);
  if (code != 0) {
    dlock_close(h.c[0]);
    return code;
  }
  pthread_mutex_init(&h.mu, NULL);
  pthread_cond_init(&h.cv, NULL);
  atomic_init(&h.inside, 0);
  struct hworker w[2] = {{&h, 0}, {&h, 1}};
  pthread_t th[2];
  int started = 0;
  b->go = 0;
  for (; started < 2; started++) {
    int err = pthread_create(&th[started], NULL, handoff_main, &w[started]);
    if (err != 0) {
      fprintf(stderr, "dlock: cannot start a thread: %s\n", strerror(err));
      code = CLI_EXIT_INTERNAL;
      /* The lone thread must not wait for a partner that never comes. */
      h.finished[1] = 1;
      handoff_stop(&h);
      break;
    }
  }
  gate_open(b);
  for (int i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  r->secs = (double)(cli_now_ns() - b->start_ns) / 1e9;
  r->ops = h.ops;
  finish_result(r, &h.s, 1);
  pthread_cond_destroy(&h.cv);
  pthread_mutex_destroy(&h.mu);
  dlock_close(h.c[0]);
  dlock_close(h.c[1]);
  return code;
}

/* ---- renew and hold: one client holding H locks ---- */

struct many {
  dlock_client *c;
  dlock_lock **locks;
  long held;
  dlock_options o; /* try-acquires, auto-renew as the phase sets it */
  struct samples s;
};

static int many_open(struct bench *b, struct many *m, int auto_renew, uint64_t seed) {
  memset(m, 0, sizeof *m);
  m->o = (dlock_options)DLOCK_OPTIONS_INIT;
  m->o.wait_ms = 0;
  m->o.auto_renew = auto_renew;
  samples_init(&m->s, SAMPLE_LIMIT, seed);
  int code = open_one(b, &m->c);
  if (code != 0)
    return code;
  m->locks = calloc((size_t)b->locks, sizeof *m->locks);
  if (!m->locks) {
    fprintf(stderr, "dlock: out of memory\n");
    dlock_close(m->c);
    return CLI_EXIT_INTERNAL;
  }
  return 0;
}

/* Acquire bench/PHASE/0 .. H-1 one after another, timing each into the
 * samples if TIMED.  1 when all H are held. */
static int many_acquire(struct bench *b, struct many *m, const char *phase, int timed) {
  char key[64];
  for (; m->held < b->locks; m->held++) {
    snprintf(key, sizeof key, "bench/%s/%ld", phase, m->held);
    int64_t t0 = cli_now_ns();
    int rc = dlock_try_acquire(m->c, key, &m->o, &m->locks[m->held]);
    if (rc < 0) {
      bench_error(b, rc, "%s: acquiring '%s'", phase, key);
      return 0;
    }
    if (timed)
      samples_add(&m->s, cli_now_ns() - t0);
  }
  return 1;
}

static void many_close(struct many *m) {
  for (long i = 0; i < m->held; i++)
    dlock_release(m->locks[i]); /* a failure here changes no figure */
  free(m->locks);
  dlock_close(m->c);
}

static int phase_renew(struct bench *b, struct result *r) {
  struct many m;
  /* Auto-renew off: the library's renewals would compete with ours. */
  int code = many_open(b, &m, 0, 11);
  if (code != 0)
    return code;
  if (many_acquire(b, &m, "renew", 0)) {
    int64_t start = cli_now_ns(), end = start + b->dur_ns, t1 = start;
    for (int done = 0; !done;) {
      for (long i = 0; i < m.held; i++) {
        int64_t t0 = cli_now_ns();
        int rc = dlock_renew(m.locks[i], 0);
        t1 = cli_now_ns();
        if (rc < 0) {
          bench_error(b, rc, "renew: renewing '%s'", dlock_lock_key(m.locks[i]));
          done = 1;
          break;
        }
        samples_add(&m.s, t1 - t0);
        r->ops++;
        if (t1 >= end) {
          done = 1;
          break;
        }
      }
    }
    r->secs = (double)(t1 - start) / 1e9;
  }
  many_close(&m);
  finish_result(r, &m.s, 1);
  return 0;
}

static int phase_hold(struct bench *b, struct result *r) {
  struct many m;
  int code = many_open(b, &m, 1, 13);
  if (code != 0)
    return code;
  /* Measured after the handle array exists, so that only what the library
   * keeps per lock counts. */
  r->rss_before_kb = rss_kb();
  int64_t start = cli_now_ns();
  int all = many_acquire(b, &m, "hold", 1);
  r->acquire_s = (double)(cli_now_ns() - start) / 1e9;
  if (all) {
    r->rss_after_kb = rss_kb();
    /* The markers bracket the hold alone, not the acquires or releases. */
    fprintf(stderr, "dlock bench: holding %ld locks for %.3g s\n", m.held,
            (double)b->dur_ns / 1e9);
    fflush(stderr);
    int64_t t0 = cli_now_ns();
    struct timespec ts = {(time_t)(b->dur_ns / 1000000000), (long)(b->dur_ns % 1000000000)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    r->secs = (double)(cli_now_ns() - t0) / 1e9;
    fprintf(stderr, "dlock bench: releasing %ld locks\n", m.held);
    fflush(stderr);
    /* A lock lost while held means the renewals did not keep up: the
     * figure would be for less than H locks. */
    for (long i = 0; i < m.held; i++)
      if (dlock_lock_state(m.locks[i]) != DLOCK_HELD) {
        bench_error(b, DLOCK_ELOST, "hold: '%s' was lost while held",
                    dlock_lock_key(m.locks[i]));
        break;
      }
    r->ops = (uint64_t)m.held;
  }
  many_close(&m);
  finish_result(r, &m.s, 1);
  return 0;
}

/* ---- output ---- */

static const char *const phase_names[N_PHASES] = {"uncontended", "handoff", "renew", "hold"};

/* Resident memory the held locks added, per lock. */
static double hold_rss_per_lock(const struct result *r, long locks) {
  if (r->rss_before_kb < 0 || r->rss_after_kb < 0 || locks <= 0)
    return -1;
  return (double)(r->rss_after_kb - r->rss_before_kb) * 1024.0 / (double)locks;
}

static double per_sec(const struct result *r) { return r->secs > 0 ? (double)r->ops / r->secs : 0; }

static void print_text(const struct bench *b, const struct result res[N_PHASES], const char *url,
                       const char *backend) {
  printf("dlock bench: ");
  cli_print_safe(stdout, url);
  printf(" (%s), %.3g s per phase\n", backend, (double)b->dur_ns / 1e9);
  printf("%-12s %10s %12s %10s %10s %10s %10s\n", "phase", "ops", "ops/s", "p50 us",
         "p99 us", "p99.9 us", "max us");
  for (int i = 0; i < N_PHASES; i++) {
    const struct result *r = &res[i];
    if (!r->ran)
      continue;
    printf("%-12s %10" PRIu64 " %12.1f %10.1f %10.1f %10.1f %10.1f", phase_names[i], r->ops,
           per_sec(r), r->p50, r->p99, r->p999, r->max);
    if (i == 0)
      printf("  %ld thread%s, %ld key%s each%s", b->threads, b->threads == 1 ? "" : "s",
             b->keys, b->keys == 1 ? "" : "s", b->shared ? ", one client" : "");
    else if (i == 1)
      printf("  2 clients, holder waits %d ms", HANDOFF_HOLD_NS / 1000000);
    else if (i == 2)
      printf("  %ld locks held", b->locks);
    else
      printf("  %ld locks acquired in %.3f s, %.0f bytes each", b->locks, r->acquire_s,
             hold_rss_per_lock(r, b->locks));
    printf("\n");
  }
  for (int i = 0; i < N_PHASES; i++) {
    if (res[i].ran && !res[i].exact)
      printf("note: %s percentiles come from a uniform sample of %zu operations\n",
             phase_names[i], res[i].samples);
    if (i == 0 && res[i].ran && res[i].busy)
      printf("note: %" PRIu64 " uncontended attempts found their key busy\n", res[i].busy);
  }
}

static void print_json(const struct bench *b, const struct result res[N_PHASES], const char *url,
                       const char *backend) {
  printf("{\"url\":");
  cli_json_string(stdout, url);
  printf(",\"backend\":");
  cli_json_string(stdout, backend);
  printf(",\"threads\":%ld,\"keys\":%ld,\"locks\":%ld,\"seconds\":%.3f", b->threads, b->keys,
         b->locks, (double)b->dur_ns / 1e9);
  for (int i = 0; i < N_PHASES; i++) {
    const struct result *r = &res[i];
    if (!r->ran)
      continue;
    printf(",\"%s\":{\"ops\":%" PRIu64 ",\"elapsed_s\":%.6f,\"ops_per_sec\":%.3f,"
           "\"samples\":%zu,\"exact\":%s,\"p50_us\":%.3f,\"p99_us\":%.3f,\"p999_us\":%.3f,"
           "\"max_us\":%.3f",
           phase_names[i], r->ops, r->secs, per_sec(r), r->samples, r->exact ? "true" : "false",
           r->p50, r->p99, r->p999, r->max);
    if (i == 0)
      printf(",\"busy\":%" PRIu64 ",\"shared_client\":%s", r->busy,
             b->shared ? "true" : "false");
    else if (i == 1)
      printf(",\"hold_us\":%d", HANDOFF_HOLD_NS / 1000);
    else if (i == 3)
      printf(",\"locks\":%ld,\"acquire_s\":%.6f,\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,"
             "\"rss_per_lock_bytes\":%.1f",
             b->locks, r->acquire_s, r->rss_before_kb, r->rss_after_kb,
             hold_rss_per_lock(r, b->locks));
    printf("}");
  }
  printf("}\n");
}

static int parse_phases(const char *s, unsigned *out) {
  unsigned m = 0;
  while (*s) {
    size_t len = strcspn(s, ",");
    int found = 0;
    for (int i = 0; i < N_PHASES; i++)
      if (strlen(phase_names[i]) == len && strncmp(s, phase_names[i], len) == 0) {
        m |= 1u << i;
        found = 1;
      }
    if (!found)
      return -1;
    s += len;
    if (*s == ',')
      s++;
  }
  if (!m)
    return -1;
  *out = m;
  return 0;
}

static int bench_main(struct bench *bp);

int cli_bench(int argc, char **argv) {
  struct bench b;
  memset(&b, 0, sizeof b);
  b.threads = 1;
  b.keys = 1;
  b.locks = 100;
  b.dur_ns = 5000000000;
  b.phases = PH_ALL;
  struct cli_url src = {NULL, NULL, NULL};
  const char *operand = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    int m;
    int64_t ms;
    if (!cli_is_option(a)) {
      if (operand)
        return cli_usage_error("bench", "unexpected argument '%s'", a);
      operand = a;
      continue;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      cli_help(stdout, "bench");
      return CLI_EXIT_OK;
    }
    if ((m = cli_match(argc, argv, &i, "bench", "-t", "--threads", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_long(v, 1, 1024, &b.threads) < 0)
        return cli_usage_error("bench", "invalid thread count '%s' (1..1024)", v);
    } else if ((m = cli_match(argc, argv, &i, "bench", "-k", "--keys", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_long(v, 1, 1000000, &b.keys) < 0)
        return cli_usage_error("bench", "invalid key count '%s' (1..1000000)", v);
    } else if ((m = cli_match(argc, argv, &i, "bench", "-s", "--seconds", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_duration_ms(v, &ms) < 0 || ms <= 0 || ms > 86400000)
        return cli_usage_error("bench", "invalid duration '%s'", v);
      b.dur_ns = ms * 1000000;
    } else if ((m = cli_match(argc, argv, &i, "bench", NULL, "--locks", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (cli_parse_long(v, 1, 1000000, &b.locks) < 0)
        return cli_usage_error("bench", "invalid lock count '%s' (1..1000000)", v);
    } else if ((m = cli_match(argc, argv, &i, "bench", NULL, "--only", &v)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
      if (parse_phases(v, &b.phases) < 0)
        return cli_usage_error("bench",
                               "invalid phase list '%s' (uncontended,handoff,renew,hold)", v);
    } else if (strcmp(a, "--json") == 0) {
      b.json = 1;
    } else if (strcmp(a, "--shared-client") == 0) {
      b.shared = 1;
    } else if ((m = cli_url_match(argc, argv, &i, "bench", &src)) != 0) {
      if (m < 0)
        return CLI_EXIT_USAGE;
    } else {
      return cli_usage_error("bench", "unknown option '%s'", a);
    }
  }
  int code = cli_url_get("bench", &src, operand, &b.url);
  if (code == 0)
    code = bench_main(&b);
  cli_url_free(&src);
  return code;
}

static int bench_main(struct bench *bp) {
  struct bench b = *bp;

  /* One client up front: checks the URL before any thread starts and
   * gives the redacted URL and backend name for the report. */
  dlock_client *probe = NULL;
  int code = open_one(&b, &probe);
  if (code != 0)
    return code;
  char url[1024], backend[64];
  snprintf(url, sizeof url, "%s", dlock_client_url(probe));
  snprintf(backend, sizeof backend, "%s", dlock_client_backend(probe));
  dlock_close(probe);

  pthread_mutex_init(&b.err_mu, NULL);
  pthread_mutex_init(&b.gate_mu, NULL);
  pthread_cond_init(&b.gate_cv, NULL);
  atomic_init(&b.abort, 0);
  struct result res[N_PHASES];
  memset(res, 0, sizeof res);
  for (int i = 0; i < N_PHASES && code == 0 && b.err_rc == 0; i++) {
    if (!(b.phases & (1u << i)))
      continue;
    if (i == 0)
      code = phase_uncontended(&b, &res[0]);
    else if (i == 1)
      code = phase_handoff(&b, &res[1]);
    else if (i == 2)
      code = phase_renew(&b, &res[2]);
    else
      code = phase_hold(&b, &res[3]);
  }
  if (b.err_rc != 0) {
    /* Half a report would read as a result; the error is the result. */
    code = cli_fail(b.err_rc, NULL, b.err_msg);
  } else if (code == 0) {
    if (b.json)
      print_json(&b, res, url, backend);
    else
      print_text(&b, res, url, backend);
  }
  pthread_cond_destroy(&b.gate_cv);
  pthread_mutex_destroy(&b.gate_mu);
  pthread_mutex_destroy(&b.err_mu);
  return code;
}
