/* dlock-bench-lease-cost URL H SECONDS: what holding H locks costs the
 * client and the store.  One client acquires H distinct keys with
 * auto-renew on and a ttl of 3 s, holds them for SECONDS, and prints one
 * JSON line:
 *   rss_per_lock_bytes   growth of the process's resident set per held lock
 *   periods              renewal periods (a third of the ttl) held
 *   renew_requests       keepalives (etcd), session renewals (Consul),
 *                        syncs (ZooKeeper) or renewal statements
 *                        (PostgreSQL) the client sent while holding,
 *                        from the backend's own counters; -1 where the
 *                        store has none (count at the store instead)
 * The renewal requests per period are what the lease layer promises: one
 * per lease (per session), however many locks ride on it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tools/rss.h"
#include "dlock/dlock.h"

#if __has_include("dlock/etcd.h")
#include "dlock/consul.h"
#include "dlock/etcd.h"
#include "dlock/zk.h"
#define HAVE_STORE_STATS 1
#elif defined(DLOCK_BENCH_OLD_TREE)
/* Built by bench/before-after.sh against a tree from before the stores'
 * public headers, whose opcodes lived in the codec headers. */
#include "backends/consul/consul-codec.h"
#include "backends/etcd/etcd-codec.h"
#include "backends/zookeeper/zk-codec.h"
#define HAVE_STORE_STATS 1
#endif
#if __has_include("dlock/postgres.h")
#include "dlock/postgres.h"
#define HAVE_PG_STATS 1
#endif

/* Renewal requests the client has sent so far, or -1. */
static long long renew_requests(dlock_client *c, const char *url) {
#ifdef HAVE_STORE_STATS
  if (strncmp(url, "etcd", 4) == 0) {
    struct dlock_etcd_stats s;
    return dlock_control(c, NULL, DLOCK_ETCD_CTL_STATS, &s) == 0 ? (long long)s.keepalives : -1;
  }
  if (strncmp(url, "consul", 6) == 0) {
    struct dlock_consul_stats s;
    return dlock_control(c, NULL, DLOCK_CONSUL_CTL_STATS, &s) == 0 ? (long long)s.renewals : -1;
  }
  if (strncmp(url, "zk", 2) == 0) {
    uint64_t n;
    return dlock_control(c, NULL, DLOCK_ZK_CTL_SYNCS, &n) == 0 ? (long long)n : -1;
  }
#endif
#ifdef HAVE_PG_STATS
  if (strncmp(url, "postgres", 8) == 0) {
    struct dlock_pg_stats s;
    return dlock_control(c, NULL, DLOCK_PG_CTL_STATS, &s) == 0 ? (long long)s.renewals : -1;
  }
#endif
  (void)c;
  (void)url;
  return -1;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: dlock-bench-lease-cost URL H SECONDS\n");
    return 2;
  }
  long h = strtol(argv[2], NULL, 10);
  double secs = strtod(argv[3], NULL);
  if (h < 1 || secs <= 0) {
    fprintf(stderr, "dlock-bench-lease-cost: H and SECONDS must be positive\n");
    return 2;
  }
  dlock_client *c;
  if (dlock_open(argv[1], &c) != 0) {
    fprintf(stderr, "dlock-bench-lease-cost: %s\n", dlock_client_errmsg(NULL));
    return 1;
  }
  dlock_lock **locks = calloc((size_t)h, sizeof *locks);
  dlock_options o = DLOCK_OPTIONS_INIT;
  o.ttl_ms = 3000; /* a renewal a second */
  /* Take and drop one first, so that the session, connections and the
   * library's own tables exist before the resident set is read. */
  dlock_lock *l;
  if (!locks || dlock_try_acquire(c, "bench/lease-cost/warm", &o, &l) != 0 ||
      dlock_release(l) != 0) {
    fprintf(stderr, "dlock-bench-lease-cost: %s\n", dlock_client_errmsg(NULL));
    return 1;
  }
  long before = rss_kb();
  for (long i = 0; i < h; i++) {
    char key[64];
    snprintf(key, sizeof key, "bench/lease-cost/%ld", i);
    if (dlock_try_acquire(c, key, &o, &locks[i]) != 0) {
      fprintf(stderr, "dlock-bench-lease-cost: %s: %s\n", key, dlock_client_errmsg(NULL));
      return 1;
    }
  }
  long after = rss_kb();
  int64_t ttl = o.ttl_ms;
  long long r0 = renew_requests(c, argv[1]);
  sleep_s(secs);
  long long r1 = renew_requests(c, argv[1]);
  int held = 0;
  for (long i = 0; i < h; i++) {
    held += dlock_lock_state(locks[i]) == DLOCK_HELD;
    dlock_release(locks[i]);
  }
  double periods = secs * 1000.0 / ((double)ttl / 3.0);
  printf("{\"locks\": %ld, \"held_at_end\": %d, \"ttl_ms\": %" PRId64
         ", \"rss_per_lock_bytes\": %.0f, \"periods\": %.1f, \"renew_requests\": %lld}\n",
         h, held, ttl, (double)(after - before) * 1024.0 / (double)h, periods,
         r0 < 0 || r1 < 0 ? -1 : r1 - r0);
  free(locks);
  dlock_close(c);
  return held == h ? 0 : 1;
}
