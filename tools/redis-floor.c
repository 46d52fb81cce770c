/* redis-floor HOST:PORT [SECONDS [THREADS]]: the raw floor dlock's Redis
 * lock is measured against: SET key value NX PX ttl + DEL key, with the same
 * C client, one request at a time on one connection per thread, each thread
 * on its own key.  Prints p50/p99/p99.9 of the pair in microseconds over all
 * threads and their summed rate, as one JSON object. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "floor.h"

/* Latencies kept per thread; past that a uniform sample of them is. */
#define SAMPLES_MAX (1 << 18)

struct worker {
  redisContext *c;
  long idx;
  int64_t end_ns;
  double *lat;
  size_t n;       /* samples kept */
  uint64_t ops;   /* pairs done */
  uint64_t rng;
  char err[192]; /* set when the thread stopped on a failure */
};

static uint64_t next_rand(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Sends the command of ARGC arguments and reads its reply, formatted per
 * request as any caller whose keys vary must; 0 when the reply is of type
 * WANT. */
static int roundtrip(redisContext *c, int argc, const char **argv, const size_t *lens, int want) {
  void *v = NULL;
  if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK || redisGetReply(c, &v) != REDIS_OK ||
      !v)
    return -1;
  int ok = ((redisReply *)v)->type == want;
  freeReplyObject(v);
  return ok ? 0 : -1;
}

static void fail(struct worker *w, const char *what) {
  snprintf(w->err, sizeof w->err, "%.40s%s%.128s", what, w->c->err ? ": " : "",
           w->c->err ? w->c->errstr : "");
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  redisContext *c = w->c;
  char key[64];
  snprintf(key, sizeof key, "redis-floor:%ld", w->idx);
  /* The value is as long as the owner token dlock writes. */
  const char *set[] = {"SET", key, "0123456789abcdef0123456789abcdef", "NX", "PX", "15000"};
  size_t setlens[] = {3, strlen(key), 32, 2, 2, 5};
  const char *del[] = {"DEL", key};
  size_t dellens[] = {3, strlen(key)};
  /* One left by an interrupted run would make every SET NX fail. */
  if (roundtrip(c, 2, del, dellens, REDIS_REPLY_INTEGER) < 0) {
    fail(w, "DEL");
    return NULL;
  }
  while (now_ns() < w->end_ns) {
    int64_t a = now_ns();
    if (roundtrip(c, 6, set, setlens, REDIS_REPLY_STATUS) < 0 ||
        roundtrip(c, 2, del, dellens, REDIS_REPLY_INTEGER) < 0) {
      fail(w, c->err ? "SET NX PX + DEL" : "SET NX PX + DEL: unexpected reply");
      break;
    }
    double us = (double)(now_ns() - a) / 1000.0;
    w->ops++;
    if (w->n < SAMPLES_MAX) {
      w->lat[w->n++] = us;
    } else {
      uint64_t j = next_rand(&w->rng) % w->ops;
      if (j < SAMPLES_MAX)
        w->lat[j] = us;
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc == 2 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("dlock %s\n", DLOCK_TOOLS_VERSION);
    return 0;
  }
  if (argc < 2 || argc > 4) {
    fprintf(stderr, "usage: redis-floor HOST:PORT [SECONDS [THREADS]]\n");
    return 2;
  }
  double secs = argc > 2 ? atof(argv[2]) : 5;
  long threads = argc > 3 ? atol(argv[3]) : 1;
  if (secs <= 0 || threads < 1 || threads > 1024) {
    fprintf(stderr, "redis-floor: SECONDS must be above 0, THREADS in 1..1024\n");
    return 2;
  }
  /* HOST:PORT, the host in brackets when it is an IPv6 literal. */
  char host[256];
  const char *colon = strrchr(argv[1], ':');
  const char *h = argv[1];
  size_t hl = colon ? (size_t)(colon - h) : 0;
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  int port = colon ? atoi(colon + 1) : 0;
  if (hl == 0 || hl >= sizeof host || port < 1 || port > 65535) {
    fprintf(stderr, "redis-floor: expected HOST:PORT, not %s\n", argv[1]);
    return 2;
  }
  memcpy(host, h, hl);
  host[hl] = '\0';
  /* A server that goes away mid-run must end the run with a message. */
  signal(SIGPIPE, SIG_IGN);

  struct worker *w = calloc((size_t)threads, sizeof *w);
  pthread_t *th = calloc((size_t)threads, sizeof *th);
  if (!w || !th)
    return 1;
  /* Connections are opened before the clock starts: connecting is not what
   * is measured. */
  struct timeval tv = {2, 0};
  for (long i = 0; i < threads; i++) {
    w[i].c = redisConnectWithTimeout(host, port, tv);
    if (!w[i].c || w[i].c->err) {
      fprintf(stderr, "redis-floor: cannot connect to %s: %s\n", argv[1],
              w[i].c ? w[i].c->errstr : "out of memory");
      return 1;
    }
    w[i].lat = malloc(SAMPLES_MAX * sizeof *w[i].lat);
    if (!w[i].lat)
      return 1;
  }
  int64_t t0 = now_ns(), end = t0 + (int64_t)(secs * 1e9);
  long started = 0;
  for (; started < threads; started++) {
    struct worker *x = &w[started];
    x->idx = started;
    x->end_ns = end;
    x->rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(started + 1);
    if (pthread_create(&th[started], NULL, worker_main, x) != 0) {
      fprintf(stderr, "redis-floor: cannot start thread %ld\n", started);
      break;
    }
  }
  int failed = started < threads;
  uint64_t ops = 0;
  size_t n = 0;
  for (long i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    if (w[i].err[0]) {
      fprintf(stderr, "redis-floor: thread %ld: %s\n", i, w[i].err);
      failed = 1;
    }
    ops += w[i].ops;
    n += w[i].n;
  }
  double el = (double)(now_ns() - t0) / 1e9;
  double *all = failed || n == 0 ? NULL : malloc(n * sizeof *all);
  if (all) {
    size_t o = 0;
    for (long i = 0; i < started; i++) {
      memcpy(all + o, w[i].lat, w[i].n * sizeof *all);
      o += w[i].n;
    }
    qsort(all, n, sizeof *all, cmp);
    printf("{\"ops\":%llu,\"ops_per_sec\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f}\n",
           (unsigned long long)ops, (double)ops / el, pct(all, n, 0.5), pct(all, n, 0.99),
           pct(all, n, 0.999));
  }
  for (long i = 0; i < threads; i++) {
    free(w[i].lat);
    redisFree(w[i].c);
  }
  free(all);
  free(w);
  free(th);
  return all ? 0 : 1;
}
